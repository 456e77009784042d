"""All-pairs geodesic (shortest-path) distances on a kNN graph, on CPU.

The output for n points is a dense (n, n) float32 matrix: 14.4 GB for n = 60,000, so it is
produced as row shards, computed and held by the workers of an engine (threads in this process, or
Dask workers: see :mod:`rapids_geovq.geodesic.engine`). Rows go straight from the compiled
multi-source kernel (:func:`rapids_geovq.geodesic.kernels.multi_source_rows`) into a float32 memory
map of the shard file; no float64 row block exists. Shard files are written atomically with a
CRC-32 and are checked when a killed job is started again.

Rows are stored in groups of 8 nearby points seeded in reverse Cuthill-McKee order (the manifest
holds the order), so the sources of one kernel call are near each other and share most of their
search; columns are in point order. The same layout is filled, with bit-equal rows, by
``method="scipy"`` (SciPy's Dijkstra, the reference), ``"cuda"`` (batched search on the GPU,
:mod:`rapids_geovq.gpu.cuda_paths`; the shard also stays on the GPU for k-means) and
``"cugraph"`` (cuGraph's SSSP on a super-source graph, :mod:`rapids_geovq.gpu.cugraph_paths`).
"""
from __future__ import annotations

import json
import logging
import uuid
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra, reverse_cuthill_mckee

from .engine import ShardHandle, connect
from .shards import ShardedRows, ShardError, ShardInfo, array_crc32, write_manifest

log = logging.getLogger("rapids_geovq")

#: Sources per SciPy Dijkstra call (``method="scipy"``): bounds its float64 temporary.
SOURCE_BATCH = 64
#: Sources per call of the compiled kernel (a multiple of its lane count).
KERNEL_BATCH = 64
#: Cap on the bucket array of the kernel; beyond it the bucket width grows (still exact).
MAX_BUCKETS = 1 << 16
METHODS = ("numba", "scipy", "cuda", "cugraph")
LAYOUT = "lanes8-rcm-v1"


class ResourceError(MemoryError):
    """The machine cannot hold what a stage needs; the message names settings that would fit."""


def check_graph(graph, *, allow_disconnected: bool = False) -> sp.csr_matrix:
    """Validate a graph for shortest paths and return it as CSR float64 (explicit zeros kept)."""
    if not sp.issparse(graph):
        graph = np.asarray(graph)
        if graph.ndim != 2:
            raise ValueError(f"graph must be a square sparse matrix, got array of shape {graph.shape}")
        # A dense input follows SciPy's convention: 0 means no edge.
        graph = sp.csr_matrix(graph)
    graph = sp.csr_matrix(graph, dtype=np.float64)
    n, m = graph.shape
    if n != m:
        raise ValueError(f"graph must be square, got shape {graph.shape}")
    if not np.isfinite(graph.data).all():
        raise ValueError("graph has NaN or infinite edge weights; rebuild it from finite latents")
    if (graph.data < 0).any():
        raise ValueError("graph has negative edge weights; geodesic distances need non-negative weights")
    if not allow_disconnected:
        n_comp, labels = connected_components(graph, directed=False)
        if n_comp > 1:
            sizes = sorted(np.bincount(labels).tolist(), reverse=True)[:10]
            raise ValueError(
                f"graph has {n_comp} connected components (largest sizes {sizes}); distances between "
                "them are infinite. Build it with knn_graph(..., disconnected='repair') or a larger k."
            )
    return graph


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); a large number where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62




@dataclass
class PathPlan:
    """Everything a worker needs to compute rows: the graph renumbered in row order.

    ``order[p]`` is the point stored at row position p (see :func:`row_order`); the CSR arrays are
    the graph with node p = point ``order[p]``, so the sources of one shard are consecutive nodes.
    """

    n: int
    order: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    delta: float
    n_buckets: int
    graph: sp.csr_matrix  # in point order, for method="scipy"


def row_order(graph) -> np.ndarray:
    """The order in which row shards store the rows of ``graph``'s geodesic matrix, and in which
    geodesic k-means scans swap candidates: groups of 8 nearby points (the sources of one kernel
    call), seeded in reverse Cuthill-McKee order."""
    from .kernels import LANES, lane_groups

    graph = sp.csr_matrix(graph)
    rcm = reverse_cuthill_mckee(graph, symmetric_mode=True).astype(np.int64)
    w = np.abs(graph.data.astype(np.float64))
    return lane_groups(graph.indptr.astype(np.int64), graph.indices.astype(np.int64), w, rcm, LANES, 128)


def make_plan(graph) -> PathPlan:
    """Check a graph and prepare it for the kernel (row order, renumbered CSR, bucket width)."""
    graph = check_graph(graph)
    n = graph.shape[0]
    order = row_order(graph)
    H = graph[order][:, order].tocsr()
    H.sort_indices()
    w = H.data
    positive = w[w > 0]
    w_max = float(w.max()) if w.size else 1.0
    delta = float(positive.min()) if positive.size else 1.0
    delta = max(delta, w_max / (MAX_BUCKETS - 2))  # a wider bucket stays exact (label-correcting)
    n_buckets = int(np.ceil(w_max / delta)) + 2
    idx_t = np.int32 if H.nnz < 2**31 else np.int64
    return PathPlan(n, order, H.indptr.astype(idx_t), H.indices.astype(np.int32), H.data.astype(np.float64),
                    delta, n_buckets, graph)


def _fill_rows(plan: PathPlan, start: int, stop: int, out: np.ndarray, method: str = "numba"):
    """Rows for the points at positions start:stop of the row order into ``out`` (float32).
    Returns the rows' device array for ``method="cuda"``, else None."""
    if method == "cuda":
        from ..gpu.backend import to_host
        from ..gpu.cuda_paths import plan_graph

        rows = plan_graph(plan).rows(np.arange(start, stop))
        out[...] = to_host(rows)
        return rows
    if method == "cugraph":
        from ..gpu.cugraph_paths import cugraph_rows

        out[...] = cugraph_rows(plan.graph, plan.order[start:stop], mode="batched")
        return None
    if method == "scipy":
        for s in range(start, stop, SOURCE_BATCH):
            e = min(s + SOURCE_BATCH, stop)
            out[s - start : e - start] = dijkstra(plan.graph, directed=True, indices=plan.order[s:e])
        return
    from .kernels import LANES, multi_source_rows

    for s in range(start, stop, KERNEL_BATCH):
        e = min(s + KERNEL_BATCH, stop)
        src = np.arange(s, s + -(-(e - s) // LANES) * LANES, dtype=np.int64)
        src = np.minimum(src, e - 1).reshape(-1, LANES)  # pad the last lanes with a repeat
        multi_source_rows(plan.indptr, plan.indices, plan.weights, plan.delta, plan.n_buckets, src,
                          out[s - start : e - start], plan.order)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def estimate_resources(n: int, nnz: int, *, n_workers: int = 1, n_clusters: int = 64) -> dict:
    """Bytes the geodesic and k-means stages need for n points and a graph of nnz edges.

    ``disk``: the float32 matrix; ``per_worker``: the renumbered graph plus one kernel's state per
    worker; ``driver``: the k-means state (medoid rows in float64 and per-point arrays).
    """
    from .kernels import LANES

    plan = (n + 1) * 8 + nnz * (4 + 8) + n * 8 + nnz * (8 + 4) + (n + 1) * 4
    kernel = n * (LANES * 8 + 16) + MAX_BUCKETS * 4 + KERNEL_BATCH * n * 4
    return {"disk": n * n * 4, "per_worker": plan + kernel, "n_workers": n_workers,
            "memory": plan + n_workers * kernel, "driver": 2 * n_clusters * n * 8 + 64 * n,
            "matrix": n * n * 4}


def _fmt(nbytes: float) -> str:
    """Bytes in the unit that reads best (MiB below 1 GiB)."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def _largest_n(budget_bytes: float) -> int:
    return int(np.sqrt(max(budget_bytes, 0) / 4))


def check_resources(n: int, nnz: int, out_dir: Path | None, *, todo_rows: int | None = None,
                    n_workers: int = 1, in_memory: bool = False) -> dict:
    """Refuse, before allocating, what this machine cannot hold; return the estimate.

    Raises :class:`ResourceError` naming what is short and the settings that would fit.
    """
    est = estimate_resources(n, nnz, n_workers=n_workers)
    have = available_memory_bytes()
    if in_memory:
        need = est["matrix"] + est["memory"]
        if need > 0.9 * have:
            raise ResourceError(
                f"a {n}x{n} float32 geodesic matrix needs {_fmt(need)} of memory and "
                f"{_fmt(have)} is available; write it as row shards on disk with "
                f"geodesic_row_shards(graph, out_dir), or use at most {_largest_n(0.8 * have):,} points"
            )
    if est["memory"] > 0.9 * have:
        fit = max(int((0.9 * have - est["per_worker"]) // max(est["per_worker"], 1)), 0)
        raise ResourceError(
            f"{n_workers} geodesic workers need {_fmt(est['memory'])} of memory and "
            f"{_fmt(have)} is available; set geodesic.n_workers={max(fit, 1)} or fewer"
            + ("" if fit >= 1 else f", or use at most {_largest_n(0.1 * have):,} points (data.n_train)")
        )
    if out_dir is not None:
        rows = n if todo_rows is None else todo_rows
        need = rows * n * 4
        free = shutil.disk_usage(out_dir).free
        if need > free:
            raise ResourceError(
                f"the geodesic shards still to write need {_fmt(need)} on {out_dir} and "
                f"{_fmt(free)} is free; free disk space, put the shards on a disk with {_fmt(need)} free "
                "(run_dir in a job, --work-dir for the codebook command), or use at most "
                f"{_largest_n(free + (n - rows) * n * 4):,} points (data.n_train in a job)"
            )
        if n * n * 4 > have:
            log.warning("the %.1f GiB geodesic matrix is larger than the %.1f GiB of free memory: k-means "
                        "will re-read its shards from disk on every pass (slow); more workers on more "
                        "nodes, or fewer points, keep it in memory", n * n * 4 / 2**30, have / 2**30)
    return est


def geodesic_matrix(graph, *, progress: bool = False, method: str = "numba", n_workers: int | None = None) -> np.ndarray:
    """All-pairs shortest-path lengths as one in-memory float32 array.

    Parameters
    ----------
    graph : sparse matrix of shape (n, n)
        Symmetric, non-negative edge weights, one connected component (see
        :func:`rapids_geovq.knn_graph`). Explicit zeros are edges of length 0.
    progress : bool, default=False
        Show a progress bar over source rows.
    method : {"numba", "scipy", "cuda", "cugraph"}
        The compiled multi-source kernel, SciPy's Dijkstra (reference), the batched GPU search or
        cuGraph's SSSP. Results are equal.
    n_workers : int, optional
        Threads; default one per CPU.

    Returns
    -------
    D : float32 ndarray of shape (n, n)
        ``D[i, j]`` is the length of the shortest path from i to j.

    Raises
    ------
    ResourceError
        When the (n, n) float32 result would not fit in available memory; use
        :func:`geodesic_row_shards` to write it to disk as row shards instead.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    _check_method(method)
    plan = make_plan(graph)
    n = plan.n
    n_workers = int(n_workers or os.cpu_count() or 1)
    if method in ("cuda", "cugraph"):
        n_workers = 1  # one GPU: a single caller keeps it busy
    check_resources(n, plan.indices.size, None, n_workers=n_workers, in_memory=True)
    D = np.empty((n, n), dtype=np.float32)
    step = 512

    def block(s):
        e = min(s + step, n)
        rows = np.empty((e - s, n), np.float32)
        _fill_rows(plan, s, e, rows, method)
        D[plan.order[s:e]] = rows
        return e - s

    with tqdm(total=n, desc="geodesic rows", unit="row", disable=not progress) as bar, \
            ThreadPoolExecutor(n_workers) as pool:
        for fut in as_completed([pool.submit(block, s) for s in range(0, n, step)]):
            bar.update(fut.result())
    return D


# --- row shards on disk ---------------------------------------------------------------------

def _shard_name(start: int, stop: int) -> str:
    return f"rows_{start:07d}_{stop:07d}.npy"


def _finished_shard(directory: Path, start: int, stop: int, n: int) -> ShardInfo | None:
    """A previously written shard if it is complete and its checksum matches, else None."""
    name = _shard_name(start, stop)
    side = directory / (name + ".json")
    if not (directory / name).exists() or not side.exists():
        return None
    try:
        info = ShardInfo(**json.loads(side.read_text()))
        arr = np.load(directory / name, mmap_mode="r")
        ok = (arr.shape == (stop - start, n) and arr.dtype == np.float32 and info.start == start
              and info.stop == stop and array_crc32(arr) == info.crc32)
    except (OSError, ValueError, TypeError, json.JSONDecodeError):
        ok = False
    if not ok:
        log.warning("shard %s is truncated or corrupt; recomputing it", directory / name)
        (directory / name).unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return None
    return info


def _compute_shard(plan: PathPlan, directory: str, start: int, stop: int, method: str = "numba",
                   sync: bool = False) -> ShardHandle:
    """Rows at positions start:stop, written atomically with a checksum sidecar, unless a verified
    copy is already there. Returns the handle, which keeps the shard open where it ran (and, for
    ``method="cuda"``, on this worker's GPU while it has room)."""
    directory = Path(directory)
    name = _shard_name(start, stop)
    info = _finished_shard(directory, start, stop, plan.n)
    device = None
    if info is None:
        tmp = directory / f"{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"  # one per writer
        # Rows go straight into a float32 memory map of the shard file.
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(stop - start, plan.n))
        device = _fill_rows(plan, start, stop, out, method)
        # Without sync: the rename makes the shard visible only once complete, the pages reach the
        # disk in the background, and a shard damaged by a crash of the machine fails its CRC-32
        # when reused, so it is recomputed. On a cluster of several nodes (a shared file system)
        # the pages are written out first, so other nodes read the finished data.
        if sync:
            out.flush()
        crc = array_crc32(out)
        del out
        os.replace(tmp, directory / name)
        info = ShardInfo(start, stop, name, crc)
        side_tmp = tmp.with_name(tmp.name.replace(".tmp", ".json.tmp"))
        side_tmp.write_text(json.dumps(info.__dict__))
        os.replace(side_tmp, directory / (name + ".json"))
    handle = ShardHandle(plan.order[start:stop], path=str(directory / name), crc32=info.crc32, start=start)
    handle.data  # keep it open (mapped) in the process that holds it
    if method == "cuda":
        from ..gpu.cuda_paths import keep_on_device

        handle.device = keep_on_device(handle.data if device is None else device)
    return handle


def graph_fingerprint(graph: sp.csr_matrix) -> str:
    """A short checksum of a CSR graph's structure and weights."""
    parts = [graph.indptr.astype(np.int64), graph.indices.astype(np.int64), graph.data.astype(np.float64)]
    crc = 0
    for p in parts:
        crc = array_crc32(p) ^ ((crc << 1) & 0xFFFFFFFF)
    return f"{graph.shape[0]}-{graph.nnz}-{crc:08x}"


def geodesic_row_shards(
    graph,
    out_dir: str | os.PathLike,
    *,
    shard_rows: int = 2048,
    engine=None,
    n_workers: int | None = None,
    method: str = "numba",
    progress: bool = True,
) -> ShardedRows:
    """All-pairs shortest-path lengths written to disk as float32 row shards.

    Parameters
    ----------
    graph : sparse matrix of shape (n, n)
        Symmetric, non-negative, connected (see :func:`rapids_geovq.knn_graph`).
    out_dir : path
        Directory for the shards and their manifest. Shards already there for the same graph,
        complete and matching their checksum, are kept (a killed run resumes); others are redone.
        With a Dask cluster it must be visible to every worker.
    shard_rows : int, default=2048
        Rows per shard (2048 rows of 60,000 float32 are 491 MB).
    engine : engine, cluster spec or None
        Where shards are computed and then held (see :func:`rapids_geovq.geodesic.engine.connect`):
        None or ``"none"`` for threads in this process. The returned matrix remembers the shards'
        places on this engine, and :class:`~rapids_geovq.GeodesicKMeans` given the same engine uses
        them there.
    n_workers : int, optional
        Threads when ``engine`` is None; default one per CPU.
    method : {"numba", "scipy", "cuda", "cugraph"}
        The compiled multi-source kernel, SciPy's Dijkstra (reference), the batched GPU search
        (shards also stay on the GPU of the worker that computed them, for k-means) or cuGraph's
        SSSP. All give the same rows.
    progress : bool, default=True
        Show a progress bar over rows.

    Returns
    -------
    ShardedRows
        Memory-mapped row access to the finished matrix.
    """
    from tqdm.auto import tqdm

    _check_method(method)
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    own_engine = engine is None or isinstance(engine, str)
    if method in ("cuda", "cugraph") and engine in (None, "none") and n_workers is None:
        n_workers = 1  # one GPU in this process: one caller keeps it busy
    plan = make_plan(graph)
    n = plan.n
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order_crc = array_crc32(plan.order)
    fingerprint = f"{graph_fingerprint(plan.graph)}-{LAYOUT}-{order_crc:08x}"
    fp_file = out / "graph.json"
    if fp_file.exists():
        try:
            old = json.loads(fp_file.read_text()).get("fingerprint")
        except (OSError, ValueError):
            old = None
        if old != fingerprint:
            log.warning("%s holds shards of a different graph or layout; removing them", out)
            for f in out.iterdir():
                if f.is_file():
                    f.unlink()
    tmp = out / "graph.json.tmp"
    tmp.write_text(json.dumps({"fingerprint": fingerprint}))
    os.replace(tmp, fp_file)
    order_tmp = out / "row_order.tmp.npy"
    np.save(order_tmp, plan.order)
    os.replace(order_tmp, out / "row_order.npy")

    ranges = [(s, min(s + shard_rows, n)) for s in range(0, n, shard_rows)]
    wanted = {_shard_name(s, e) for s, e in ranges}
    for f in out.glob("rows_*"):  # shards of another shard_rows, and half-written files
        if f.name.endswith(".tmp") or f.name.split(".npy")[0] + ".npy" not in wanted:
            f.unlink(missing_ok=True)
    present = [(s, e) for s, e in ranges if (out / _shard_name(s, e)).exists() and (out / (_shard_name(s, e) + ".json")).exists()]
    todo_rows = n - sum(e - s for s, e in present)
    if own_engine:
        workers_hint = (n_workers or os.cpu_count() or 1) if engine in (None, "none", "local") else 1
    else:
        workers_hint = engine.n_workers if engine.kind == "none" else 1  # Dask workers: their own memory
    check_resources(n, plan.indices.size, out, todo_rows=todo_rows, n_workers=workers_hint)
    if present:
        log.info("geodesic shards: %d of %d present (checked by CRC before reuse)", len(present), len(ranges))
    if own_engine:
        engine = connect(engine or "none", n_workers)
    sync = engine.kind == "dask" and getattr(engine, "cluster", None) is None  # an external cluster

    try:
        plan_ref = engine.scatter(plan)
        workers = engine.workers()
        futures = {}
        for k, (s, e) in enumerate(ranges):
            fut = engine.submit(_compute_shard, plan_ref, str(out), s, e, method, sync,
                                worker=workers[k % len(workers)])
            futures[fut] = k
        handles = [None] * len(ranges)
        with tqdm(total=n, desc="geodesic rows", unit="row", disable=not progress, smoothing=0.05) as bar:
            for fut in engine.as_completed(list(futures)):
                k = futures[fut]
                handles[k] = fut
                bar.update(ranges[k][1] - ranges[k][0])
        metas = [f.result() for f in handles]  # small: pickling drops the mapped data
    finally:
        if own_engine:
            engine.close()
    infos = [ShardInfo(s, e, _shard_name(s, e), m.crc32) for (s, e), m in zip(ranges, metas)]
    write_manifest(out, n, np.float32, infos, row_order={"path": "row_order.npy", "crc32": order_crc})
    result = ShardedRows(out)
    if not own_engine:
        from .engine import RowShards

        held = handles if engine.kind == "dask" else metas
        owners = [workers[k % len(workers)] for k in range(len(ranges))]
        if engine.kind == "dask":  # a task may have run elsewhere than asked: its result stays there
            owners = [h or w for h, w in zip(engine.holders(handles), owners)]
        # Shards kept on GPUs are used where they are; file-backed ones may be read by any worker.
        result.held = RowShards(engine, n, held, [m.rows for m in metas], owners, file_backed=method != "cuda")
    return result


def load_row_shards(out_dir: str | os.PathLike, *, verify: bool = False) -> ShardedRows:
    """Open a finished shard directory written by :func:`geodesic_row_shards`."""
    try:
        return ShardedRows(out_dir, verify=verify)
    except (ShardError, KeyError, TypeError, ValueError, OSError) as exc:
        raise ShardError(f"cannot open geodesic shards in {out_dir}: {exc}") from exc
