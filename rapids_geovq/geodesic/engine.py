"""Where the geodesic matrix lives and is computed: threads of this process, or Dask workers.

The (n, n) geodesic matrix is held as row shards. An *engine* runs small tasks next to the
shards: a shard is computed by a task on one worker and stays there (a memory map of its file in
that worker's process, or a copy on its GPU); later tasks (k-means partial sums, gathering a few
rows) are sent to the worker that holds it and return small results. Set-ups, one code path:

``"threads"`` (alias ``"none"``: no cluster)
    Tasks run on a thread pool in this process (the compiled kernels release the GIL, so the
    threads use all cores). For tests, small runs and one machine.
``"local"``
    A :class:`dask.distributed.LocalCluster` with one single-threaded worker process per core
    (dask-cuda's ``LocalCUDACluster``, one worker per GPU, on a GPU backend).
``"local-cuda"``
    That dask-cuda cluster explicitly.
``"tcp://host:port"`` or a scheduler file (``*.json``)
    An existing Dask scheduler, for example one started on a SLURM allocation by
    ``jobs/slurm_dask.sh``. Workers must see the run directory (a shared file system).

Both engines have the same methods; what differs between them (whether workers share this
process's memory, whether files must be flushed for other nodes, who ended up holding a result)
is a method or property of the engine, never a type check in the code that uses it.

Tasks are sent to the worker that holds their shard, so no shard is moved or gathered whole. The
one exception is the look-ahead of the k-means swap phase: its blocks are spread over all workers,
and a worker without the shard memory-maps the shard's file itself (the run directory is on a file
system every worker sees). Restrictions are loose (``allow_other_workers=True``): if a worker is
lost, its tasks run elsewhere from the shard files instead of waiting for it forever, and data the
driver scattered that was lost with it is sent again (:meth:`DaskEngine.lost_data`).
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import as_completed as _cf_as_completed
from concurrent.futures import wait as _cf_wait
from pathlib import Path

import numpy as np

from ..cpu.kmedoids import CPU_KERNELS
from .shards import open_shard

log = logging.getLogger(__name__)

#: Names of the cluster settings (besides scheduler addresses and files); ``none`` is accepted as
#: an alias of ``threads``.
CLUSTERS = ("threads", "local", "local-cuda")
CLUSTER_ALIASES = {"none": "threads"}


#: Times data lost with a Dask worker is sent again before the error is raised.
MAX_RESENDS = 3


def cluster_name(cluster) -> str:
    """``cluster`` with aliases resolved (``none`` -> ``threads``; None means threads too)."""
    if cluster is None:
        return "threads"
    return CLUSTER_ALIASES.get(cluster, cluster)


class EngineError(RuntimeError):
    """The requested cluster cannot be started or reached."""


class ShardHandle:
    """One row shard as seen by the process that holds it.

    ``rows`` are the matrix rows it holds (in file order); ``data`` is the host (len(rows), n)
    array, memory-mapped from ``path`` on first use (or given directly for in-memory shards).
    ``block`` is what the k-medoids kernels read and ``kernels`` the kernels that read it: the host
    data and the CPU kernels, unless the shard was put on this worker's GPU (:meth:`keep`).
    Pickling keeps only the path and rows (a GPU copy stays on its GPU), so a handle sent back to
    the driver is a few kilobytes.
    """

    def __init__(self, rows: np.ndarray, path: str | None = None, data: np.ndarray | None = None,
                 crc32: int | None = None, start: int = 0):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.path = path  # None: an in-memory shard, which cannot be re-opened elsewhere
        self.crc32 = crc32
        self.start = start  # position of the first row in the matrix's row order
        self._data = data
        self._block = None
        self.kernels = CPU_KERNELS

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = open_shard(self.path, self.crc32)
        return self._data

    @property
    def block(self):
        return self.data if self._block is None else self._block

    @property
    def on_device(self) -> bool:
        return self._block is not None

    def keep(self, kernels, rows=None) -> bool:
        """Let ``kernels`` hold this shard in their own form (a GPU copy) if they have room;
        ``rows`` is the shard already in that memory (a device array), else the host data is used.
        Returns whether they took it."""
        block = kernels.hold(self.data if rows is None else rows)
        if block is None:
            return False
        self._block, self.kernels = block, kernels
        return True

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_block"] = None  # a GPU copy stays on its GPU; elsewhere the host copy is used
        state["kernels"] = CPU_KERNELS
        if self.path is not None:
            state["_data"] = None  # re-opened from the file where it is unpickled
        return state


# --- task bodies (run where the shard is) ---------------------------------------------------

def take_local(handle: ShardHandle, local_index: np.ndarray) -> np.ndarray:
    """Rows ``local_index`` (positions within the shard) as a float32 array."""
    return np.array(handle.data[np.asarray(local_index, dtype=np.int64)])


def open_handle(rows, path, crc32, start, kernels=None, data=None) -> ShardHandle:
    """A handle on a shard file, opened (memory-mapped) where the task runs unless ``data`` is its
    mapping already open in this process, and given to ``kernels`` (a GPU's) to hold when they
    have room."""
    h = ShardHandle(rows, path=path, crc32=crc32, start=start, data=data)
    h.data  # open the memory map where the handle will live
    if kernels is not None:
        h.keep(kernels)
    return h


def _resolve(a):
    return a.result() if isinstance(a, Future) else a


# --- engines --------------------------------------------------------------------------------

class ThreadEngine:
    """Tasks on a thread pool in this process.

    Parameters
    ----------
    n_workers : int, optional
        Threads; defaults to the number of CPUs.
    """

    #: Workers share this process's memory (what a memory check must count per process).
    shares_memory = True
    #: Shard files need no flushing before others read them (one machine, one page cache).
    syncs_files = False
    #: Fewest swap candidates per k-medoids task: a thread task costs microseconds to start.
    min_task_rows = 1
    #: k-medoids swap tasks kept in flight per worker: evaluating ahead keeps every thread busy.
    swap_tasks_per_worker = 2
    #: k-medoids swap tasks stop at their first improving candidate and the driver applies it: a
    #: round trip to a thread costs microseconds.
    applies_swaps_on_workers = False

    def __init__(self, n_workers: int | None = None):
        self.n_workers = int(n_workers or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.n_workers, thread_name_prefix="geovq")

    def workers(self, refresh: bool = False) -> list:
        return list(range(self.n_workers))

    @staticmethod
    def run_on_workers(fn, *args) -> None:
        """``fn(*args)`` once in every worker process: here, this one."""
        fn(*args)

    def scatter(self, obj, broadcast: bool = True):
        return obj

    def share(self, obj):
        """``obj`` for the next few tasks (threads share it as it is)."""
        return obj

    @staticmethod
    def in_process(obj):
        """``obj`` itself: tasks run in this process and may use it as it is."""
        return obj

    def put(self, obj, worker=None) -> Future:
        """``obj`` as a finished future (a Dask engine moves it to ``worker``)."""
        f: Future = Future()
        f.set_result(obj)
        return f

    def submit(self, fn, *args, worker=None) -> Future:
        """``fn(*args)`` on the pool; futures among ``args`` are replaced by their results, as Dask
        does for its futures (waited for here, so a task never blocks a pool thread on another)."""
        args = tuple(_resolve(a) for a in args)
        return self._pool.submit(fn, *args)

    @staticmethod
    def as_completed(futures):
        return _cf_as_completed(futures)

    @staticmethod
    def gather(futures) -> list:
        """The results of ``futures``, in order."""
        return [f.result() for f in futures]

    @staticmethod
    def wait(futures) -> None:
        _cf_wait(futures)

    def holders(self, futures, asked: list) -> list:
        """The worker holding each future's result: the one it was asked of, in this process."""
        return list(asked)

    @staticmethod
    def cancel(futures) -> None:
        for f in futures:
            f.cancel()

    @staticmethod
    def lost_data(exc: BaseException) -> bool:
        """Threads lose nothing a task needs: no error is a loss to recover from by sending again."""
        return False

    def memory_workers(self) -> int:
        """Workers whose memory this process (and the checks made here) must count."""
        return self.n_workers

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"ThreadEngine({self.n_workers} threads)"


#: The former name of :class:`ThreadEngine`.
LocalEngine = ThreadEngine


class DaskEngine:
    """Tasks on the workers of a Dask distributed cluster.

    Parameters
    ----------
    client : dask.distributed.Client
    cluster : optional
        A cluster this engine started and closes with it.
    """

    shares_memory = False
    #: Fewest swap candidates per k-medoids task: a Dask task costs milliseconds of round trip
    #: (10.5 ms on a 2-core machine), so it carries a whole shard (blocks of 512 or 1,024 were
    #: slower at 20,000 latents: 8.6 and 7.6 s per fit against 7.3 s).
    min_task_rows = 2048
    #: k-medoids swap tasks in flight per worker: one. Dropped tasks cannot be stopped once
    #: running, and a second one queued behind each would delay the first task after a swap
    #: (measured at 20,000 latents: 7.3 s per fit against 8.9 s with two).
    swap_tasks_per_worker = 1
    #: A k-medoids swap task applies the swaps it finds, on a copy of the swap state kept in the
    #: worker's process, and scans on to the end of its block: one round trip per block instead of
    #: one per swap (see :mod:`rapids_geovq.geodesic.kmeans`).
    applies_swaps_on_workers = True

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

    @property
    def syncs_files(self) -> bool:
        """An external cluster may span nodes on a shared file system: flush shards before use."""
        return self.cluster is None

    def workers(self, refresh: bool = False) -> list:
        """The workers' addresses; with ``refresh``, as the scheduler knows them now (after a loss)."""
        if refresh:
            live = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
            if live:
                self._workers, self.n_workers = live, len(live)
        return list(self._workers)

    def run_on_workers(self, fn, *args) -> None:
        """``fn(*args)`` once in every worker process (housekeeping: a failure is logged, not raised)."""
        try:
            self.client.run(fn, *args)
        except Exception as exc:  # a worker lost meanwhile: nothing of its is left to clean up
            log.debug("run_on_workers(%s) failed: %s", getattr(fn, "__name__", fn), exc)

    def scatter(self, obj, broadcast: bool = True):
        """One future of ``obj`` (a tuple stays one object, not one per item); on every worker when
        ``broadcast``, else moved to the workers that need it."""
        return self.client.scatter([obj], broadcast=broadcast, hash=False)[0]

    def share(self, obj):
        """``obj`` for the next few tasks, sent with them: a state that changes after every k-medoids
        swap costs one blocking round trip per change when scattered, none when sent inline."""
        return obj

    @staticmethod
    def in_process(obj):
        """None: tasks run in other processes, where ``obj`` is not (it would have to be sent)."""
        return None

    def put(self, obj, worker=None):
        """A future of ``obj`` held by ``worker``."""
        return self.client.scatter(obj, workers=None if worker is None else [worker], hash=False)

    def submit(self, fn, *args, worker=None):
        kw = {"pure": False}
        if worker is not None:
            kw.update(workers=[worker], allow_other_workers=True)
        return self.client.submit(fn, *args, **kw)

    @staticmethod
    def as_completed(futures):
        from distributed import as_completed

        return as_completed(futures)

    def gather(self, futures) -> list:
        """The results of ``futures``, in order, in one round trip."""
        return self.client.gather(list(futures))

    @staticmethod
    def wait(futures) -> None:
        from distributed import wait

        wait(futures)

    def holders(self, futures, asked: list) -> list:
        """The worker holding each finished future's result (it may not be the one asked of)."""
        who = self.client.who_has(futures)
        return [sorted(who[f.key])[0] if who.get(f.key) else w for f, w in zip(futures, asked)]

    def cancel(self, futures) -> None:
        """Let go of ``futures``: once the caller drops them, the scheduler forgets their tasks (queued
        ones never run). No blocking round trip, unlike ``Client.cancel``."""

    @staticmethod
    def lost_data(exc: BaseException) -> bool:
        """Whether ``exc`` says a task was cancelled because data it needed was lost with a worker:
        data scattered from here cannot be recomputed (Dask keeps a broadcast object on one worker
        once no task elsewhere needs it), so the caller sends it again. The driver never cancels a
        task whose result it asks for, so no other cancellation reaches it."""
        from distributed.client import FutureCancelledError

        return isinstance(exc, FutureCancelledError)

    def memory_workers(self) -> int:
        """Dask workers hold their memory in their own processes: this one counts one."""
        return 1

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"DaskEngine({self.client.scheduler.address}, {self.n_workers} workers)"


def connect(cluster: str = "threads", n_workers: int | None = None, *, timeout: float = 30.0):
    """An engine for a cluster setting.

    Parameters
    ----------
    cluster : str
        ``"threads"`` (or ``"none"``: threads in this process), ``"local"`` (a Dask
        LocalCluster), ``"local-cuda"`` (a dask-cuda LocalCUDACluster, one worker per GPU), a
        scheduler address (``"tcp://host:8786"``) or the path of a Dask scheduler file (``*.json``).
    n_workers : int, optional
        Threads (``"threads"``) or worker processes (``"local"``; GPUs for ``"local-cuda"``);
        default one per CPU (GPU). Ignored for an existing scheduler, whose workers are used as
        they are.
    timeout : float
        Seconds to wait for an existing scheduler.
    """
    cluster = cluster_name(cluster)
    if cluster == "threads":
        return ThreadEngine(n_workers)
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
                    "without it: geodesic.cluster=threads or local (--cluster for the codebook command)"
                )
            client = Client(scheduler_file=cluster, timeout=timeout)
        else:
            client = Client(cluster, timeout=timeout)
    except EngineError:
        raise
    except (OSError, TimeoutError, ValueError) as exc:
        raise EngineError(
            f"cannot reach the Dask scheduler {cluster!r} ({exc}); check that it is running, or run "
            "without it: geodesic.cluster=threads (this process) or local (--cluster for the codebook command)"
        ) from exc
    return DaskEngine(client)


def _local_cuda(n_workers: int | None):
    """A ``dask_cuda.LocalCUDACluster``: one worker per GPU (or the first ``n_workers`` GPUs)."""
    try:
        from dask_cuda import LocalCUDACluster
        from distributed import Client
    except ImportError as exc:
        raise EngineError(f"geodesic.cluster=local-cuda needs dask-cuda ({exc}): install the GPU environment "
                          "(conda-env.yml or pip install -e .[cu12]), or use geodesic.cluster=threads or local")
    import importlib.util

    kw = {}
    if n_workers:
        kw["n_workers"] = int(n_workers)  # the first n of the GPUs this process may use
    if importlib.util.find_spec("rmm") is not None:
        # CuPy and PyTorch on each worker allocate from one stream-ordered RMM pool (CUDA's async
        # allocator), which gives freed memory back to the driver, so neither library holds what
        # the other needs and free-memory checks stay true.
        # (A release threshold of 1 byte: RMM's default keeps every freed byte in the pool, and
        # dask-cuda reads 0 as "no threshold".)
        kw.update(rmm_async=True, rmm_release_threshold=1, rmm_allocator_external_lib_list=["cupy", "torch"])
    # No spilling: the shards held on the GPUs are what k-means reads.
    lc = LocalCUDACluster(threads_per_worker=1, memory_limit=0, device_memory_limit=0,
                          dashboard_address=None, **kw)
    return DaskEngine(Client(lc), cluster=lc)


class HeldShards:
    """A square matrix as row shards held by the workers of an engine; the driver holds only their
    row lists. (Shard *files* on disk are :class:`rapids_geovq.geodesic.shards.ShardFiles`.)

    Parameters
    ----------
    engine : ThreadEngine or DaskEngine
    n : int
        Matrix size.
    handles : list of futures
        Per shard, a future of its :class:`ShardHandle` on the engine, in row order.
    rows : list of int64 arrays
        Per shard, the matrix rows it holds.
    owners : list
        Per shard, the worker that holds it (tasks on it are sent there).
    file_backed : bool
        Any worker can open a shard from its file (host shards); False for shards kept on GPUs,
        which only their owner can read.
    """

    def __init__(self, engine, n: int, handles: list, rows: list, owners: list, file_backed: bool = False):
        self.engine = engine
        self.file_backed = file_backed
        self.n = int(n)
        self.shape = (self.n, self.n)
        self.handles = handles
        self.rows = [np.asarray(r, dtype=np.int64) for r in rows]
        self.owners = owners
        self._files = None
        self._files_here = None
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

    def map_shards(self, fn, *args) -> list:
        """``fn(handle, *args)`` on every shard where it is held; the results in shard order.

        On threads, a task per shard. Where a task costs a round trip (Dask), one task per worker
        runs ``fn`` over all the shards that worker holds, in turn: the same work, a round trip per
        worker instead of per shard (20 shards of 1,024 rows at n = 20,000)."""
        if self.engine.shares_memory:
            futures = {self.submit(k, _each_shard, fn, *args): [k] for k in range(len(self.rows))}
        else:
            by_owner: dict = {}
            for k, w in enumerate(self.owners):
                by_owner.setdefault(w, []).append(k)
            futures = {self.engine.submit(_each_shard, [self.handles[k] for k in ks], fn, *args, worker=w): ks
                       for w, ks in by_owner.items()}
        out = [None] * len(self.rows)
        for fut in self.engine.as_completed(list(futures)):
            for k, r in zip(futures[fut], fut.result()):
                out[k] = r
        return out

    def shard_files(self) -> list | None:
        """Per shard, its file's (path, checksum) where every shard is a file (a shard directory's,
        also for shards kept on GPUs), else None (in-memory shards). Fetched once: a few KB per
        shard. Reading a row there is reading the shard; running tasks there is for
        ``file_backed`` shards only (a GPU's shard is read where it is)."""
        if self._files is None:
            # ask for the file names only: a handle of an in-memory shard would bring its rows along
            files = self.map_shards(_file_of)
            self._files = files if all(path is not None for path, _ in files) else []
        return self._files or None

    def recover_lost(self) -> int:
        """After a worker is lost: shards whose handles Dask can no longer give (lost with the worker,
        and the data they were computed from lost too) are re-opened from their files on the workers
        left, in host memory. Returns how many; a lost in-memory shard is an :class:`EngineError`."""
        if self.engine.shares_memory:
            return 0
        gone = ("cancelled", "lost", "error")
        lost = [k for k, h in enumerate(self.handles) if getattr(h, "status", "finished") in gone]
        if not lost:
            return 0
        files = self._files or None
        if files is None:
            raise EngineError(f"{len(lost)} geodesic shards held in a lost Dask worker's memory have no file to "
                              "re-open them from; run again (a run resumes from the shard files it wrote)")
        live = self.engine.workers(refresh=True)
        for i, k in enumerate(lost):
            w = live[i % len(live)]
            self.handles[k] = self.engine.submit(open_handle, self.rows[k], files[k][0], files[k][1],
                                                 int(self.bounds[k]), worker=w)
            self.owners[k] = w
        self.engine.wait([self.handles[k] for k in lost])
        self.file_backed = True  # host copies now, readable by any worker
        return len(lost)

    def _readable_files(self) -> list | None:
        """:meth:`shard_files` where this process can read every shard file itself and the workers
        are other processes, else None."""
        if self._files_here is None:
            files = None if self.engine.shares_memory else self.shard_files()
            self._files_here = bool(files) and all(os.path.isfile(p) for p, _ in files)
        return self.shard_files() if self._files_here else None

    @property
    def files_readable_here(self) -> bool:
        """Whether this process reads rows from the shard files itself (see :meth:`take_rows`)."""
        return self._readable_files() is not None

    def place(self, point: int) -> tuple[int, int]:
        """(shard, position in it) of matrix row ``point``."""
        return int(self._shard_of[point]), int(self._local[point])

    def take_rows(self, indices) -> np.ndarray:
        """Rows ``indices`` (in the order given) as float32, gathered from the shards holding them.

        Where the workers are other processes and the shard files are readable here (a
        ``LocalCluster``, or a shared file system), the rows are read from the files: the same
        bytes without a round trip per shard (k-means++ seeding and every medoid row need them one
        step at a time, at milliseconds per Dask round trip)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((indices.size, self.n), np.float32)
        which = self._shard_of[indices]
        files = self._readable_files()
        if files is not None:
            from .shards import open_shard

            for k in np.unique(which):
                sel = np.flatnonzero(which == k)
                out[sel] = open_shard(*files[int(k)])[self._local[indices[sel]]]
            return out
        futures = {}
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            futures[self.submit(int(k), take_local, self._local[indices[sel]])] = sel
        for fut in self.engine.as_completed(list(futures)):
            out[futures[fut]] = fut.result()
        return out

    def count_on_device(self) -> int:
        """How many shards are held on a GPU."""
        return sum(self.map_shards(_on_device))


#: The former name of :class:`HeldShards`.
RowShards = HeldShards


def _each_shard(handles, fn, *args) -> list:
    """``fn(handle, *args)`` for one handle or a list of them (Dask resolves the futures in a list)."""
    if not isinstance(handles, list):
        handles = [handles]
    return [fn(h, *args) for h in handles]


def _file_of(handle: ShardHandle) -> tuple:
    return handle.path, handle.crc32


def _on_device(handle: ShardHandle) -> bool:
    return handle.on_device


def hold_matrix(engine, D, *, kernels=None, block_rows: int = 2048) -> HeldShards:
    """Row shards of ``D`` held on ``engine``.

    An ndarray / :class:`~rapids_geovq.geodesic.shards.DenseRows` is split into row blocks; a
    :class:`~rapids_geovq.geodesic.shards.ShardFiles` directory is opened shard by shard on the
    workers (each worker memory-maps its own files, and ``kernels`` of a GPU backend copy them to
    its GPU where there is room); :class:`HeldShards` already on this engine are used as they are.
    """
    from .shards import DenseRows, ShardFiles

    if isinstance(D, HeldShards):
        return D
    held = getattr(D, "held", None)
    if held is not None and held.engine is engine:
        return held  # the shards are still where geodesic_row_shards computed them
    workers = engine.workers()
    handles, rows, owners = [], [], []
    if isinstance(D, ShardFiles):
        for k, (info, r) in enumerate(zip(D.shards, D.shard_rows)):
            w = workers[k % len(workers)]
            handles.append(engine.submit(open_handle, r, str(D.directory / info.path), info.crc32, info.start,
                                         kernels, engine.in_process(D.arrays[k]), worker=w))
            rows.append(r)
            owners.append(w)
        engine.wait(handles)
        owners = engine.holders(handles, owners)
        on_gpu = kernels is not None and kernels is not CPU_KERNELS
        return HeldShards(engine, D.shape[0], handles, rows, owners, file_backed=not on_gpu)
    if isinstance(D, DenseRows):
        array, order = D.array, D.order
    else:
        array = np.asarray(D)
        order = np.arange(array.shape[0], dtype=np.int64)
    n = array.shape[0]
    for k, start in enumerate(range(0, n, block_rows)):
        r = order[start : start + block_rows]
        w = workers[k % len(workers)]
        contiguous = np.array_equal(r, np.arange(start, start + r.size))
        block = array[start : start + r.size] if contiguous else np.ascontiguousarray(array[r])
        handles.append(engine.put(ShardHandle(r, data=block, start=start), w))
        rows.append(r)
        owners.append(w)
    return HeldShards(engine, n, handles, rows, owners)
