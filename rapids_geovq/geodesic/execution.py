"""Execution settings: where and how the geodesic work runs, kept apart from what it computes.

Results never depend on these (every backend, path solver, engine and worker count gives the same
graph, distances and medoids), so estimators take them as one :class:`Execution` object instead of
mixing them into their hyperparameters.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Execution:
    """Where and how to run.

    Parameters
    ----------
    backend : {"auto", "numpy", "cupy", "rapids"} or Backend, default="auto"
        Array stack and kernels (:mod:`rapids_geovq.backends`).
    method : {"auto", "numba", "scipy", "cuda", "cugraph"}, default="auto"
        Shortest-path solver; ``auto`` is the backend's preferred one.
    engine : str, engine or None, default=None
        A cluster setting (``"threads"``, ``"local"``, ``"local-cuda"``, a scheduler address or
        file; None means threads) or an engine already open (:func:`rapids_geovq.geodesic.engine.connect`),
        which is then used and left open.
    n_workers : int, optional
        Threads or worker processes for an engine started here.
    block_rows : int, optional
        Swap candidates per k-medoids task; default the backend's ``swap_block_rows``.
    work_dir : path, optional
        Where geodesic row shards are written when the matrix is not kept in memory.
    in_memory : {"auto", True, False}, default="auto"
        Keep a dense geodesic matrix in memory instead of writing row shards: ``auto`` when no
        ``work_dir`` is given, the work runs on this process's threads on the CPU and it fits.
    progress : bool, default=False
        Show progress bars.

    Notes
    -----
    Copying an estimator (``sklearn.base.clone``) shares its ``Execution`` instead of copying it:
    an open engine is a handle on running workers, not a value.
    """

    backend: object = "auto"
    method: str = "auto"
    engine: object = None
    n_workers: int | None = None
    block_rows: int | None = None
    work_dir: str | None = None
    in_memory: object = "auto"
    progress: bool = False

    def __deepcopy__(self, memo):
        return self

    def resolve_backend(self):
        """The backend object (a GPU backend that cannot run here raises ``BackendError``)."""
        from ..backends import resolve_backend

        self.backend = resolve_backend(self.backend)
        return self.backend

    def path_solver(self):
        return self.resolve_backend().path_solver(self.method)

    def shard_kernels(self):
        """The k-medoids kernels that hold shard files opened for this execution on a device (a GPU
        solver's), or None to read them where they are (memory maps on the host)."""
        solver = self.path_solver()
        return solver.device_kernels() if solver.keeps_rows_on_device else None

    def swap_block_rows(self, engine=None) -> int:
        """Swap candidates per k-medoids task: as given, else the backend's, raised to what a task
        of ``engine`` must carry to be worth its start-up."""
        if self.block_rows:
            return int(self.block_rows)
        return int(max(self.resolve_backend().swap_block_rows, getattr(engine, "min_task_rows", 1)))

    @property
    def owns_engine(self) -> bool:
        return self.engine is None or isinstance(self.engine, str)

    @contextmanager
    def open_engine(self):
        """The engine to run on: the one given, or one started here and closed on exit."""
        if not self.owns_engine:
            yield self.engine
            return
        from .engine import cluster_name, connect

        spec, n_workers = self.resolve_backend().engine_spec(cluster_name(self.engine), self.n_workers)
        engine = connect(spec, n_workers)
        try:
            yield engine
        finally:
            engine.close()
