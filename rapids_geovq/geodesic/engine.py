"""Where the geodesic matrix lives and is computed: in this process, or on Dask workers.

The (n, n) geodesic matrix is held as row shards. An *engine* runs small tasks next to the
shards: a shard is computed by a task on one worker and stays there (a memory map of its file in
that worker's process); later tasks (k-means partial sums, gathering a few rows) are sent to the
worker that holds it and return small results. Three set-ups, one code path:

``"none"``
    No cluster: tasks run on a thread pool in this process (the compiled kernels release the
    GIL, so the threads use all cores). For tests, small runs and one machine.
``"local"``
    A :class:`dask.distributed.LocalCluster` with one single-threaded worker process per core.
``"tcp://host:port"`` or a scheduler file (``*.json``)
    An existing Dask scheduler, for example one started on a SLURM allocation by
    ``jobs/slurm_dask.sh``. Workers must see the run directory (a shared file system).

Tasks are sent to the worker that holds their shard, so no shard is moved or gathered whole. The
one exception is the look-ahead of the k-means swap phase: its blocks are spread over all workers,
and a worker without the shard memory-maps the shard's file itself (the run directory is on a file
system every worker sees). Restrictions are loose (``allow_other_workers=True``): if a worker is
lost, its tasks run elsewhere from the shard files instead of waiting for it forever.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import as_completed as _cf_as_completed
from pathlib import Path

import numpy as np

log = logging.getLogger("rapids_geovq")


class EngineError(RuntimeError):
    """The requested cluster cannot be started or reached."""


_OPEN: dict = {}  # shard files memory-mapped in this process, by path: (crc32, array)


class ShardHandle:
    """One row shard as seen by the process that holds it.

    ``rows`` are the matrix rows it holds (in file order); ``data`` is the (len(rows), n) array,
    memory-mapped from ``path`` on first use (or given directly for in-memory shards). Pickling
    keeps only the path and rows, so a handle sent back to the driver is a few kilobytes.
    """

    def __init__(self, rows: np.ndarray, path: str | None = None, data: np.ndarray | None = None,
                 crc32: int | None = None, start: int = 0, device=None):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.path = path  # None: an in-memory shard, which cannot be re-opened elsewhere
        self.crc32 = crc32
        self.start = start  # position of the first row in the matrix's row order
        self._data = data
        self.device = device  # a copy on this process's GPU (CuPy), used by k-means when present

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            hit = _OPEN.get(self.path)
            if hit is None or hit[0] != self.crc32:  # a rewritten file replaces its old mapping
                hit = _OPEN[self.path] = (self.crc32, np.load(self.path, mmap_mode="r"))
            self._data = hit[1]
        return self._data

    def __getstate__(self):
        state = self.__dict__.copy()
        state["device"] = None  # a GPU copy stays on its GPU; elsewhere the host copy is used
        if self.path is not None:
            state["_data"] = None  # re-opened from the file where it is unpickled
        return state


# --- task bodies (run where the shard is) ---------------------------------------------------

def take_local(handle: ShardHandle, local_index: np.ndarray) -> np.ndarray:
    """Rows ``local_index`` (positions within the shard) as a float32 array."""
    return np.array(handle.data[np.asarray(local_index, dtype=np.int64)])


# --- engines --------------------------------------------------------------------------------

class LocalEngine:
    """Tasks on a thread pool in this process.

    Parameters
    ----------
    n_workers : int, optional
        Threads; defaults to the number of CPUs.
    """

    kind = "none"

    def __init__(self, n_workers: int | None = None):
        self.n_workers = int(n_workers or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.n_workers, thread_name_prefix="geovq")

    def workers(self) -> list:
        return list(range(self.n_workers))

    def scatter(self, obj, broadcast: bool = True):
        return obj

    def submit(self, fn, *args, worker=None):
        return self._pool.submit(fn, *args)

    @staticmethod
    def as_completed(futures):
        return _cf_as_completed(futures)

    @staticmethod
    def cancel(futures) -> None:
        for f in futures:
            f.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"LocalEngine({self.n_workers} threads)"


class DaskEngine:
    """Tasks on the workers of a Dask distributed cluster.

    Parameters
    ----------
    client : dask.distributed.Client
    cluster : optional
        A cluster this engine started and closes with it.
    """

    kind = "dask"

    def __init__(self, client, cluster=None):
        self.client = client
        self.cluster = cluster
        try:
            info = client.scheduler_info(n_workers=-1)  # some versions list only 5 workers by default
        except TypeError:
            info = client.scheduler_info()
        self._workers = sorted(info["workers"])
        if not self._workers:
            self.close()
            raise EngineError(f"the Dask scheduler at {client.scheduler.address} has no workers; start "
                              "some (dask worker --scheduler-file ...) or use geodesic.cluster=local")
        self.n_workers = len(self._workers)

    def workers(self) -> list:
        return list(self._workers)

    def scatter(self, obj, broadcast: bool = True):
        """One future of ``obj`` (a tuple stays one object, not one per item); on every worker when
        ``broadcast``, else moved to the workers that need it."""
        return self.client.scatter([obj], broadcast=broadcast, hash=False)[0]

    def submit(self, fn, *args, worker=None):
        kw = {"pure": False}
        if worker is not None:
            kw.update(workers=[worker], allow_other_workers=True)
        return self.client.submit(fn, *args, **kw)

    @staticmethod
    def as_completed(futures):
        from distributed import as_completed

        return as_completed(futures)

    def holders(self, futures) -> list:
        """The worker holding each finished future's result (it may not be the one asked for)."""
        who = self.client.who_has(futures)
        return [sorted(who[f.key])[0] if who.get(f.key) else None for f in futures]

    def cancel(self, futures) -> None:
        futures = [f for f in futures if not f.done()]
        if futures:
            self.client.cancel(futures)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __repr__(self) -> str:
        return f"DaskEngine({self.client.scheduler.address}, {self.n_workers} workers)"


def connect(cluster: str = "none", n_workers: int | None = None, *, timeout: float = 30.0):
    """An engine for a cluster spec.

    Parameters
    ----------
    cluster : str
        ``"none"`` (threads in this process), ``"local"`` (a Dask LocalCluster), ``"local-cuda"``
        (a dask-cuda LocalCUDACluster, one worker per GPU), a scheduler
        address (``"tcp://host:8786"``) or the path of a Dask scheduler file (``*.json``).
    n_workers : int, optional
        Threads (``"none"``) or worker processes (``"local"``; GPUs for ``"local-cuda"``); default
        one per CPU (GPU). Ignored for
        an existing scheduler, whose workers are used as they are.
    timeout : float
        Seconds to wait for an existing scheduler.
    """
    if cluster in (None, "", "none"):
        return LocalEngine(n_workers)
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask is a base dependency
        raise EngineError(f"geodesic.cluster={cluster!r} needs dask.distributed: pip install distributed ({exc})")
    if cluster == "local-cuda":
        return _local_cuda(n_workers)
    if cluster == "local":
        import dask

        n = int(n_workers or os.cpu_count() or 1)
        # Shards are memory maps: their pages are file cache, which a worker's memory monitor
        # would count as its own and answer by pausing or killing it. Our tasks allocate little.
        with dask.config.set({"distributed.worker.memory.target": False,
                              "distributed.worker.memory.spill": False,
                              "distributed.worker.memory.pause": False,
                              "distributed.worker.memory.terminate": False}):
            lc = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=0,
                              dashboard_address=None)
        return DaskEngine(Client(lc), cluster=lc)
    try:
        if cluster.endswith(".json") or Path(cluster).is_file():
            if not Path(cluster).is_file():
                raise EngineError(
                    f"Dask scheduler file {cluster} does not exist; start a scheduler with "
                    f"'dask scheduler --scheduler-file {cluster}' (see jobs/slurm_dask.sh), or run "
                    "without it: geodesic.cluster=none or local (--cluster for the codebook command)"
                )
            client = Client(scheduler_file=cluster, timeout=timeout)
        else:
            client = Client(cluster, timeout=timeout)
    except EngineError:
        raise
    except (OSError, TimeoutError, ValueError) as exc:
        raise EngineError(
            f"cannot reach the Dask scheduler {cluster!r} ({exc}); check that it is running, or run "
            "without it: geodesic.cluster=none (this process) or local (--cluster for the codebook command)"
        ) from exc
    return DaskEngine(client)


def _local_cuda(n_workers: int | None):
    """A ``dask_cuda.LocalCUDACluster``: one worker per GPU (or the first ``n_workers`` GPUs)."""
    try:
        from dask_cuda import LocalCUDACluster
        from distributed import Client
    except ImportError as exc:
        raise EngineError(f"geodesic.cluster=local-cuda needs dask-cuda ({exc}): install the GPU environment "
                          "(conda-env.yml or pip install -e .[cu12]), or use geodesic.cluster=none or local")
    import importlib.util

    kw = {}
    if n_workers:
        kw["n_workers"] = int(n_workers)  # the first n of the GPUs this process may use
    if importlib.util.find_spec("rmm") is not None:
        # CuPy and PyTorch on each worker allocate from one stream-ordered RMM pool (CUDA's async
        # allocator), which gives freed memory back to the driver, so neither library holds what
        # the other needs and free-memory checks stay true.
        kw.update(rmm_async=True, rmm_allocator_external_lib_list=["cupy", "torch"])
    # No spilling: the shards held on the GPUs are what k-means reads.
    lc = LocalCUDACluster(threads_per_worker=1, memory_limit=0, device_memory_limit=0,
                          dashboard_address=None, **kw)
    return DaskEngine(Client(lc), cluster=lc)


class RowShards:
    """A square matrix as row shards held by an engine; the driver holds only their row lists.

    Parameters
    ----------
    engine : LocalEngine or DaskEngine
    n : int
        Matrix size.
    handles : list
        Per shard, a :class:`ShardHandle` (local) or a future of one (Dask), in row order.
    rows : list of int64 arrays
        Per shard, the matrix rows it holds.
    owners : list
        Per shard, the worker that holds it (tasks on it are sent there).
    """

    def __init__(self, engine, n: int, handles: list, rows: list, owners: list, file_backed: bool = False):
        self.engine = engine
        self.file_backed = file_backed  # shards can be memory-mapped by any worker from their files
        self.n = int(n)
        self.shape = (self.n, self.n)
        self.handles = handles
        self.rows = [np.asarray(r, dtype=np.int64) for r in rows]
        self.owners = owners
        self.order = np.concatenate(self.rows) if self.rows else np.zeros(0, np.int64)
        if self.order.size != self.n or not np.array_equal(np.sort(self.order), np.arange(self.n)):
            raise ValueError("shards do not hold every row of the matrix exactly once")
        self.bounds = np.concatenate([[0], np.cumsum([r.size for r in self.rows])]).astype(np.int64)
        self._shard_of = np.empty(self.n, np.int64)
        self._local = np.empty(self.n, np.int64)
        for k, r in enumerate(self.rows):
            self._shard_of[r] = k
            self._local[r] = np.arange(r.size)

    def submit(self, k: int, fn, *args, worker=None):
        """Run ``fn(handle_k, *args)`` where shard k is held (or on ``worker``, for file-backed shards)."""
        if worker is None or not self.file_backed:
            worker = self.owners[k]
        return self.engine.submit(fn, self.handles[k], *args, worker=worker)

    def take_rows(self, indices) -> np.ndarray:
        """Rows ``indices`` (in the order given) as float32, gathered from the shards holding them."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((indices.size, self.n), np.float32)
        which = self._shard_of[indices]
        futures = {}
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            futures[self.submit(int(k), take_local, self._local[indices[sel]])] = sel
        for fut in self.engine.as_completed(list(futures)):
            out[futures[fut]] = fut.result()
        return out


def local_row_shards(engine, D, block_rows: int = 2048, order=None) -> RowShards:
    """An in-memory matrix split into row blocks on an engine (scattered to Dask workers)."""
    D = np.asarray(D)
    n = D.shape[0]
    order = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    workers = engine.workers()
    handles, rows, owners = [], [], []
    for k, start in enumerate(range(0, n, block_rows)):
        r = order[start : start + block_rows]
        w = workers[k % len(workers)]
        block = np.ascontiguousarray(D[r]) if not np.array_equal(r, np.arange(start, start + r.size)) else D[start : start + r.size]
        h = ShardHandle(r, data=block, start=start)
        if isinstance(engine, DaskEngine):
            h = engine.client.scatter(h, workers=[w], hash=False)
        handles.append(h)
        rows.append(r)
        owners.append(w)
    return RowShards(engine, n, handles, rows, owners)


def _open_handle(rows, path, crc32, start, device: bool = False, data=None) -> ShardHandle:
    h = ShardHandle(rows, path=path, crc32=crc32, start=start, data=data)
    h.data  # open the memory map where the handle will live
    if device:  # and copy it to this worker's GPU while there is room
        from ..gpu.cuda_paths import keep_on_device

        h.device = keep_on_device(h.data)
    return h


def on_engine(engine, D, *, block_rows: int = 2048, device: bool = False) -> RowShards:
    """Row shards of ``D`` on ``engine``: an ndarray / :class:`DenseRows` is split into row blocks;
    a :class:`ShardedRows` directory is opened shard by shard on the workers (each worker memory-maps
    its own files, and with ``device`` copies them to its GPU); :class:`RowShards` already on an
    engine are used as they are."""
    from .shards import DenseRows, ShardedRows

    if isinstance(D, RowShards):
        return D
    held = getattr(D, "held", None)
    if held is not None and held.engine is engine:
        return held  # the shards are still where geodesic_row_shards computed them
    if isinstance(D, ShardedRows):
        workers = engine.workers()
        handles, rows, owners = [], [], []
        for k, (info, r) in enumerate(zip(D.shards, D.shard_rows)):
            w = workers[k % len(workers)]
            path = str(D.directory / info.path)
            if isinstance(engine, DaskEngine):
                h = engine.submit(_open_handle, r, path, info.crc32, info.start, device, worker=w)
            else:
                h = _open_handle(r, path, info.crc32, info.start, device, data=D.arrays[k])
            handles.append(h)
            rows.append(r)
            owners.append(w)
        if isinstance(engine, DaskEngine):
            from distributed import wait

            wait(handles)
            owners = [h or w for h, w in zip(engine.holders(handles), owners)]
        # shards on GPUs are used where they are; file-backed ones may be read by any worker
        return RowShards(engine, D.shape[0], handles, rows, owners, file_backed=not device)
    if isinstance(D, DenseRows):
        return local_row_shards(engine, D.array, block_rows, order=D.order)
    return local_row_shards(engine, D, block_rows)
