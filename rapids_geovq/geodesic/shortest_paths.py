"""All-pairs geodesic (shortest-path) distances on a kNN graph: in memory, or as row shards.

The output for n points is a dense (n, n) float32 matrix: 14.4 GB for n = 60,000, so it is
produced as row shards, computed and held by the workers of an engine (threads in this process, or
Dask workers: see :mod:`rapids_geovq.geodesic.engine`). Rows go straight from the path solver into
a float32 memory map of the shard file (:func:`rapids_geovq.geodesic.shards.write_shard`); shard
files are written atomically with a CRC-32 and are checked when a killed job is started again.

The path solver comes from the backend (:mod:`rapids_geovq.backends`): the compiled multi-source
kernel (``numba``), SciPy's Dijkstra (``scipy``, the reference), the batched GPU search (``cuda``;
its shards also stay on the GPU for k-means) or cuGraph's SSSP (``cugraph``). All fill the same
layout (:mod:`rapids_geovq.geodesic.plan`) with bit-equal rows.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..common.arrays import array_crc32
from ..common.graphs import graph_fingerprint
from ..common.resources import check_resources
from .engine import MAX_RESENDS, HeldShards, ShardHandle, connect
from .plan import LAYOUT, PathPlan, make_plan
from .shards import ShardError, ShardFiles, ShardInfo, finished_shard, shard_name, write_manifest, write_shard

log = logging.getLogger(__name__)


def path_solver(method="auto", backend="auto"):
    """The solver for ``method`` on ``backend`` (names, or objects used as they are)."""
    if hasattr(method, "fill"):
        return method
    from ..backends import resolve_backend

    return resolve_backend(backend).path_solver(method)


def geodesic_matrix(graph, *, method="auto", backend="auto", n_workers: int | None = None,
                    progress: bool = False) -> np.ndarray:
    """All-pairs shortest-path lengths as one in-memory float32 array.

    Parameters
    ----------
    graph : sparse matrix of shape (n, n)
        Non-negative edge weights, one connected component (see :func:`rapids_geovq.knn_graph`).
        Explicit zeros are edges of length 0. A graph that is not symmetric is symmetrised with
        a warning (see :func:`rapids_geovq.common.graphs.check_graph`).
    method : {"auto", "numba", "scipy", "cuda", "cugraph"}
        The path solver; ``auto`` is the backend's preferred one. Results are equal.
    backend : {"auto", "numpy", "cupy", "rapids"} or Backend
    n_workers : int, optional
        Threads; default one per CPU (one for a GPU solver).
    progress : bool, default=False
        Show a progress bar over source rows.

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

    solver = path_solver(method, backend)
    plan = make_plan(graph)
    n = plan.n
    n_workers = int(n_workers or solver.max_threads or os.cpu_count() or 1)
    check_resources(n, plan.indices.size, None, n_workers=n_workers, in_memory=True,
                    work_bytes=solver.work_bytes(n))
    D = np.empty((n, n), dtype=np.float32)
    step = 512

    def block(s):
        e = min(s + step, n)
        rows = np.empty((e - s, n), np.float32)
        solver.fill(plan, s, e, rows)
        D[plan.order[s:e]] = rows
        return e - s

    with tqdm(total=n, desc="geodesic rows", unit="row", disable=not progress) as bar, \
            ThreadPoolExecutor(n_workers) as pool:
        for fut in as_completed([pool.submit(block, s) for s in range(0, n, step)]):
            bar.update(fut.result())
    return D


# --- row shards on disk ---------------------------------------------------------------------

def compute_shard(plan: PathPlan, directory: str, start: int, stop: int, solver, sync: bool = False) -> ShardHandle:
    """Task: the rows at positions start:stop, written atomically with a checksum sidecar unless a
    verified copy is already there. Returns the handle, which keeps the shard open where it ran
    (and, for a solver that keeps rows on its device, there while the device has room)."""
    directory = Path(directory)
    info = finished_shard(directory, start, stop, plan.n, log=log)
    device_rows = None
    if info is None:
        info, device_rows = write_shard(directory, start, stop, plan.n,
                                        lambda out: solver.fill(plan, start, stop, out), sync=sync)
    handle = ShardHandle(plan.order[start:stop], path=str(directory / info.path), crc32=info.crc32, start=start)
    handle.data  # keep it open (mapped) in the process that holds it
    if solver.keeps_rows_on_device:
        handle.keep(solver.device_kernels(), rows=device_rows)
    return handle


def _prepare_directory(out: Path, plan: PathPlan, ranges: list) -> int:
    """Make ``out`` hold only shards of this graph, layout and shard size; returns the number of
    row positions still to compute (present shards are verified by CRC when their task runs)."""
    order_crc = array_crc32(plan.order)
    fingerprint = f"{graph_fingerprint(plan.graph)}-{LAYOUT}-{order_crc:08x}"
    fp_file = out / "graph.json"
    if fp_file.exists():
        try:
            old = json.loads(fp_file.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
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
    wanted = {shard_name(s, e) for s, e in ranges}
    for f in out.glob("rows_*"):  # shards of another shard_rows, and half-written files
        if f.name.endswith(".tmp") or f.name.split(".npy")[0] + ".npy" not in wanted:
            f.unlink(missing_ok=True)
    present = [(s, e) for s, e in ranges
               if (out / shard_name(s, e)).exists() and (out / (shard_name(s, e) + ".json")).exists()]
    if present:
        log.info("geodesic shards: %d of %d present (checked by CRC before reuse)", len(present), len(ranges))
    return plan.n - sum(e - s for s, e in present)


def geodesic_row_shards(graph, out_dir: str | os.PathLike, *, shard_rows: int = 2048, engine=None,
                        n_workers: int | None = None, method="auto", backend="auto",
                        progress: bool = True) -> ShardFiles:
    """All-pairs shortest-path lengths written to disk as float32 row shards.

    Parameters
    ----------
    graph : sparse matrix of shape (n, n)
        Non-negative, connected (see :func:`rapids_geovq.knn_graph`); a graph that is not
        symmetric is symmetrised with a warning.
    out_dir : path
        Directory for the shards and their manifest. Shards already there for the same graph,
        complete and matching their checksum, are kept (a killed run resumes); others are redone.
        With a Dask cluster it must be visible to every worker.
    shard_rows : int, default=2048
        Rows per shard (2048 rows of 60,000 float32 are 491 MB).
    engine : engine, cluster setting or None
        Where shards are computed and then held (see :func:`rapids_geovq.geodesic.engine.connect`):
        None or ``"threads"`` for threads in this process. Given an engine, the returned matrix
        remembers the shards' places on it (``held``), and
        :class:`~rapids_geovq.GeodesicKMeans` run on the same engine uses them there.
    n_workers : int, optional
        Threads when ``engine`` is a setting; default one per CPU (one for a GPU solver).
    method, backend :
        The path solver (see :func:`geodesic_matrix`). All give the same rows.
    progress : bool, default=True
        Show a progress bar over rows.

    Returns
    -------
    ShardFiles
        Memory-mapped row access to the finished matrix.
    """
    from tqdm.auto import tqdm

    solver = path_solver(method, backend)
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, (int, np.integer)) or shard_rows < 1:
        raise ValueError(f"shard_rows must be a positive integer, got {shard_rows!r}")
    own_engine = engine is None or isinstance(engine, str)
    if own_engine and n_workers is None and solver.max_threads is not None:
        n_workers = solver.max_threads  # one GPU in this process: one caller keeps it busy
    plan = make_plan(graph)
    n = plan.n
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranges = [(s, min(s + shard_rows, n)) for s in range(0, n, shard_rows)]
    todo_rows = _prepare_directory(out, plan, ranges)
    if own_engine:
        engine = connect(engine or "threads", n_workers)
    try:
        check_resources(n, plan.indices.size, out, todo_rows=todo_rows, n_workers=engine.memory_workers(),
                        work_bytes=solver.work_bytes(n))
        plan_ref = engine.scatter(plan)
        workers = engine.workers()
        asked = [workers[k % len(workers)] for k in range(len(ranges))]

        def submit(k):
            s, e = ranges[k]
            return engine.submit(compute_shard, plan_ref, str(out), s, e, solver, engine.syncs_files, worker=asked[k])

        handles = [submit(k) for k in range(len(ranges))]
        metas = [None] * len(ranges)  # small: pickling drops the mapped data
        with tqdm(total=n, desc="geodesic rows", unit="row", disable=not progress, smoothing=0.05) as bar:
            waiting = {f: k for k, f in enumerate(handles)}
            losses = 0
            while waiting:
                again = []
                for fut in engine.as_completed(list(waiting)):
                    k = waiting.pop(fut)
                    try:
                        metas[k] = fut.result()
                    except Exception as exc:
                        if not engine.lost_data(exc) or losses == MAX_RESENDS:
                            raise
                        again.append(k)  # a worker died with the only copy of the plan
                        continue
                    bar.update(ranges[k][1] - ranges[k][0])
                if again:
                    losses += 1
                    log.warning("a Dask worker was lost with the search plan; sending it again for %d shards",
                                len(again))
                    plan_ref = engine.scatter(plan)
                    for k in again:
                        handles[k] = submit(k)
                        waiting[handles[k]] = k
        owners = engine.holders(handles, asked)  # a task may have run elsewhere: its result stays there
    finally:
        if own_engine:
            engine.close()
    infos = [ShardInfo(s, e, shard_name(s, e), m.crc32) for (s, e), m in zip(ranges, metas)]
    write_manifest(out, n, np.float32, infos, row_order={"path": "row_order.npy", "crc32": array_crc32(plan.order)})
    result = ShardFiles(out)
    if not own_engine:
        # Shards kept on GPUs are used where they are; file-backed ones may be read by any worker.
        result.held = HeldShards(engine, n, handles, [m.rows for m in metas], owners,
                                 file_backed=not solver.keeps_rows_on_device)
    return result


def load_row_shards(out_dir: str | os.PathLike, *, verify: bool = False) -> ShardFiles:
    """Open a finished shard directory written by :func:`geodesic_row_shards`."""
    try:
        return ShardFiles(out_dir, verify=verify)
    except (ShardError, KeyError, TypeError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise ShardError(f"cannot open geodesic shards in {out_dir}: {exc}") from exc
