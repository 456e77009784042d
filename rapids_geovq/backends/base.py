"""What a backend is: one object that carries a kNN search, shortest-path solvers, k-medoids
kernels and their tuning, so the math never asks which hardware it runs on."""
from __future__ import annotations

import numpy as np


class BackendError(RuntimeError):
    """The requested backend cannot run here (a package or a GPU is missing)."""


class Backend:
    """Base class of the backends (see :mod:`rapids_geovq.backends`).

    A subclass sets the class attributes and implements :meth:`knn`; the rest has defaults that
    suit a CPU backend.

    Attributes
    ----------
    name : str
        The registry name (``numpy``, ``cupy``, ``rapids``).
    gpu : bool
        Models and arrays live on a CUDA device.
    path_methods : tuple of str
        The shortest-path solvers it offers, preferred first (``auto`` picks the first).
    local_cluster : str
        What ``geodesic.cluster=local`` starts for it: a CPU ``LocalCluster`` or dask-cuda's
        one worker per GPU (``local-cuda``).
    swap_block_rows : int
        Swap candidates per k-medoids task: small on a CPU (a look-ahead wasted by a swap costs
        little), a whole shard on a GPU (fewer rows leave most of its cores idle). Results do
        not depend on it.
    """

    name = "base"
    gpu = False
    path_methods: tuple[str, ...] = ()
    local_cluster = "local"
    swap_block_rows = 64

    # -- can it run here? ------------------------------------------------------------------

    @classmethod
    def problem(cls) -> str | None:
        """None if this backend can run here, else what is missing and how to get it."""
        return None

    # -- the stages' operations --------------------------------------------------------------

    def latents(self, z):
        """The array the kNN search reads for encoder output ``z`` (a torch tensor or an array):
        a host NumPy array here; GPU backends read a CUDA tensor in place (DLPack)."""
        from ..common.arrays import to_host

        return np.asarray(to_host(z))

    def knn(self, Z, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest neighbours of every point among the others, ordered by (distance,
        index): host float64 distances and int64 indices of shape (n, k)."""
        raise NotImplementedError

    def path_solver(self, method: str = "auto"):
        """The shortest-path solver for ``method`` (``auto``: the backend's preferred one).

        Raises
        ------
        ValueError
            For a method this backend does not offer; the message lists those it does.
        """
        if method == "auto":
            method = self.path_methods[0]
        if method not in self.path_methods:
            raise ValueError(
                f"geodesic.method={method} is not offered by backend {self.name} (it offers "
                f"{', '.join(self.path_methods)}); set geodesic.method=auto or choose a backend that has it")
        problem = self.solver_problem(method)
        if problem:
            raise BackendError(problem)
        return self._make_solver(method)

    def solver_problem(self, method: str) -> str | None:
        """None if the solver ``method`` can run here, else what is missing (checked before any
        work, so a job never fails in its geodesic stage for a missing package)."""
        return None

    def _make_solver(self, method: str):
        from ..cpu.paths import NumbaPaths, ScipyPaths

        return {"numba": NumbaPaths, "scipy": ScipyPaths}[method]()

    def bounded_graph(self, plan):
        """A graph prepared once for bounded searches (on-demand k-medoids), shared by threads."""
        from ..cpu.bounded_paths import BoundedGraph

        return BoundedGraph.from_plan(plan)

    def bounded_search(self, graph):
        """One thread's bounded-search state on ``graph`` (``rows``, ``swap_gains``,
        ``member_costs``, all bit-equal to the dense kernels)."""
        from ..cpu.bounded_paths import BoundedSearch

        return BoundedSearch(graph)

    def engine_spec(self, cluster: str, n_workers: int | None) -> tuple[str, int | None]:
        """The engine to start for a ``geodesic.cluster`` setting (see
        :func:`rapids_geovq.geodesic.engine.connect`)."""
        if cluster == "local":
            return self.local_cluster, n_workers
        return cluster, n_workers

    def prepare(self) -> dict:
        """Set up shared resources before the first model touches the device (GPU backends: one
        memory pool for PyTorch and CuPy). Returns what it did."""
        return {}

    def release(self) -> None:
        """Give cached device memory back (after the geodesic stages, before PyTorch trains)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))
