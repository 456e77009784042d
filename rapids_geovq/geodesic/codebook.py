"""The geodesic codebook as one estimator: latents in, K codes out, new latents coded.

In the manner of scikit-learn's ``Isomap``, which builds its neighbour graph and shortest paths in
``fit`` and places new points in ``transform``: :meth:`GeodesicCodebook.fit` builds the exact kNN
graph, the geodesic rows and the geodesic k-medoids; :meth:`~GeodesicCodebook.predict` codes new
latents by the geodesic out-of-sample rule (a new point enters the graph through its k nearest
training latents); :meth:`~GeodesicCodebook.transform` gives their geodesic distances to the codes.

The three steps of ``fit`` are also methods of their own (:meth:`~GeodesicCodebook.build_graph`,
:meth:`~GeodesicCodebook.geodesic_rows`, :meth:`~GeodesicCodebook.fit_medoids`), so a job can cache
each one as a resumable stage and the ``codebook`` command can run them in one go, with the same
rules either way.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from ..common.exact_knn import check_latents
from ..common.resources import available_memory_bytes
from .execution import Execution
from .kmeans import GeodesicKMeans
from .quantize import GeodesicQuantizer

#: Version of the saved format (:meth:`GeodesicCodebook.save`).
FORMAT_VERSION = 1


class GeodesicCodebook(BaseEstimator):
    """A K-code codebook of latents by geodesic k-medoids on their exact kNN graph.

    Parameters
    ----------
    n_codes : int, default=64
        Codebook size K.
    k : int, default=10
        Neighbours per point in the kNN graph, and training neighbours through which a new point
        enters the graph in :meth:`predict`.
    disconnected : {"repair", "error"}, default="repair"
        A kNN graph with several components is joined as Isomap does, or refused.
    n_init, max_iter, swap : int, int, bool
        Restarts, alternating iterations and swap refinement of geodesic k-medoids
        (:class:`~rapids_geovq.GeodesicKMeans`).
    random_state : int or None, default=0
        Seed of the k-means++ draws.
    storage : {"auto", "dense", "on_demand"}, default="auto"
        ``dense``: the whole geodesic matrix (in memory, or row shards in ``execution.work_dir``);
        ``on_demand``: no matrix, distances searched from the graph when k-medoids needs them
        (:class:`~rapids_geovq.geodesic.ondemand.OnDemandKMedoids`, same objective, every distance
        exact, swap and update candidates restricted per cluster); ``auto``: dense when the matrix
        fits in memory or on the work directory's disk, else on demand.
    update_candidates, swap_near, swap_far : int or None, default=64, 192, 64
        On-demand only: candidates per cluster (see
        :class:`~rapids_geovq.geodesic.ondemand.OnDemandKMedoids`); None: every point.
    execution : Execution, optional
        Where and how to run (backend, engine, workers, where shards go, progress); results do not
        depend on it. Default: the best backend installed, threads in this process, the matrix in
        memory when it fits.

    Attributes
    ----------
    graph_ : scipy.sparse.csr_matrix (n, n)
        The symmetric kNN graph.
    connectivity_ : Connectivity
    medoid_indices_ : int64 ndarray (K,)
        Training latents that are the codes.
    labels_ : int64 ndarray (n,)
        Code of each training latent.
    inertia_ : float
        Sum of squared geodesic distances to the codes.
    n_iter_, n_swaps_ : int
    dist_to_codes_ : float32 ndarray (n, K)
        Geodesic distance from every training latent to every code.
    train_latents_ : float64 ndarray (n, d)
    codebook_ : float32 ndarray (K, d)
        The codes' latents.
    """

    def __init__(self, n_codes: int = 64, *, k: int = 10, disconnected: str = "repair", n_init: int = 3,
                 max_iter: int = 100, swap: bool = True, random_state=0, storage: str = "auto",
                 update_candidates=64, swap_near=192, swap_far=64, execution: Execution | None = None):
        self.n_codes = n_codes
        self.k = k
        self.disconnected = disconnected
        self.n_init = n_init
        self.max_iter = max_iter
        self.swap = swap
        self.random_state = random_state
        self.storage = storage
        self.update_candidates = update_candidates
        self.swap_near = swap_near
        self.swap_far = swap_far
        self.execution = execution

    # -- fit, and its three steps -----------------------------------------------------------

    def fit(self, Z, y=None) -> "GeodesicCodebook":
        """Build the kNN graph of ``Z`` (n, d), its geodesic rows, and the codebook."""
        Z = self._check_params(Z)
        ex = self._execution()
        with ex.open_engine() as engine:
            here = replace(ex, engine=engine)
            graph, _ = self.build_graph(Z, execution=here)
            if self.resolve_storage(Z.shape[0], here) == "on_demand":
                self.fit_medoids_on_demand(Z, graph, execution=here)
            else:
                D = self.geodesic_rows(graph, execution=here)
                self.fit_medoids(Z, D, execution=here)
        return self

    def resolve_storage(self, n: int, execution: Execution | None = None) -> str:
        """``dense`` or ``on_demand`` for ``n`` points: ``storage`` as set, or for ``auto`` dense
        where the n x n float32 matrix fits in memory (as :meth:`geodesic_rows` would keep it) or
        in the work directory's free disk, on demand otherwise."""
        from ..common.resources import free_disk_bytes

        if self.storage not in ("auto", "dense", "on_demand"):
            raise ValueError(f"storage must be 'auto', 'dense' or 'on_demand', got {self.storage!r}")
        if self.storage != "auto":
            return self.storage
        ex = execution or self._execution()
        if self._in_memory(ex, n):
            return "dense"
        if ex.work_dir is not None and 1.05 * 4 * n * n < free_disk_bytes(ex.work_dir):
            return "dense"
        return "on_demand"

    def build_graph(self, Z, *, execution: Execution | None = None):
        """Step 1: the symmetric exact kNN graph of ``Z`` (a host array, or the encoder's device
        tensor on a GPU backend). Sets ``graph_`` and ``connectivity_``; returns both."""
        from .knn import knn_graph

        self._check_hyper()
        ex = execution or self._execution()
        self.graph_, self.connectivity_ = knn_graph(Z, self.k, disconnected=self.disconnected, return_info=True,
                                                    backend=ex.resolve_backend())
        return self.graph_, self.connectivity_

    def geodesic_rows(self, graph, *, execution: Execution | None = None, shard_rows: int = 2048):
        """Step 2: the geodesic matrix of ``graph``, in memory (:class:`DenseRows`, rows visited in
        the same order as shards store them, so both give the same codebook) when the execution
        allows it and it fits, else as row shards in ``execution.work_dir``."""
        from .plan import row_order
        from .shards import DenseRows
        from .shortest_paths import geodesic_matrix, geodesic_row_shards

        ex = execution or self._execution()
        n = graph.shape[0]
        if self._in_memory(ex, n):
            D = geodesic_matrix(graph, method=ex.method, backend=ex.resolve_backend(), n_workers=ex.n_workers,
                                progress=ex.progress)
            return DenseRows(D, order=row_order(graph))
        if ex.work_dir is None:
            raise ValueError(f"the {n}x{n} geodesic matrix ({n * n * 4 / 2**30:.1f} GiB) is not kept in memory "
                             "here; give a directory for its row shards (Execution(work_dir=...), "
                             "--work-dir for the codebook command)")
        return geodesic_row_shards(graph, ex.work_dir, shard_rows=shard_rows, engine=ex.engine,
                                   n_workers=ex.n_workers, method=ex.method, backend=ex.resolve_backend(),
                                   progress=ex.progress)

    def fit_medoids(self, Z, D, *, execution: Execution | None = None) -> "GeodesicCodebook":
        """Step 3: geodesic k-medoids on ``D`` (the geodesic matrix of ``Z``'s graph, in any form
        :class:`~rapids_geovq.GeodesicKMeans` takes); sets the fitted attributes."""
        from .shards import as_rows

        Z = check_latents(Z)
        self._check_hyper()
        if D.shape[0] != Z.shape[0]:
            raise ValueError(f"the geodesic matrix has {D.shape[0]} rows but there are {Z.shape[0]} latents")
        ex = execution or self._execution()
        km = GeodesicKMeans(self.n_codes, n_init=self.n_init, max_iter=self.max_iter, swap=self.swap,
                            random_state=self.random_state, execution=ex).fit(D)
        rows = getattr(D, "held", None) or as_rows(D)
        self.medoid_indices_ = km.medoid_indices_
        self.labels_ = km.labels_
        self.inertia_ = km.inertia_
        self.n_iter_ = km.n_iter_
        self.n_swaps_ = km.n_swaps_
        # symmetric: the codes' rows are their columns
        self.dist_to_codes_ = np.ascontiguousarray(rows.take_rows(km.medoid_indices_).T, dtype=np.float32)
        self.train_latents_ = Z
        self.codebook_ = Z[km.medoid_indices_].astype(np.float32)
        return self

    def fit_medoids_on_demand(self, Z, graph, *, execution: Execution | None = None,
                              checkpoint=None) -> "GeodesicCodebook":
        """Step 3 without the matrix: geodesic k-medoids on ``graph`` (the kNN graph of ``Z``) by
        bounded searches (:class:`~rapids_geovq.geodesic.ondemand.OnDemandKMedoids`); a killed
        fit resumes from ``checkpoint`` (a ``.npz`` path) when given. Sets the fitted attributes."""
        from .ondemand import OnDemandKMedoids

        Z = check_latents(Z)
        self._check_hyper()
        if graph.shape[0] != Z.shape[0]:
            raise ValueError(f"the graph has {graph.shape[0]} nodes but there are {Z.shape[0]} latents")
        ex = execution or self._execution()
        km = OnDemandKMedoids(self.n_codes, n_init=self.n_init, max_iter=self.max_iter, swap=self.swap,
                              random_state=self.random_state, update_candidates=self.update_candidates,
                              swap_near=self.swap_near, swap_far=self.swap_far, execution=ex).fit(
                                  graph, latents=Z, checkpoint=checkpoint)
        self.medoid_indices_ = km.medoid_indices_
        self.labels_ = km.labels_
        self.inertia_ = km.inertia_
        self.n_iter_ = km.n_iter_
        self.n_swaps_ = km.n_swaps_
        self.searches_ = km.searches_
        self.dist_to_codes_ = np.ascontiguousarray(km.medoid_rows_.T, dtype=np.float32)
        self.train_latents_ = Z
        self.codebook_ = Z[km.medoid_indices_].astype(np.float32)
        return self

    # -- new latents ------------------------------------------------------------------------

    def _quantizer(self) -> GeodesicQuantizer:
        if not hasattr(self, "medoid_indices_"):
            raise ValueError("this GeodesicCodebook is not fitted yet: call fit(Z) or load a saved one")
        return GeodesicQuantizer(self.train_latents_, self.medoid_indices_, self.dist_to_codes_, k=self.k)

    def predict(self, Z_new) -> np.ndarray:
        """The geodesically nearest code of each latent, int64 (m,): d(x, c) = min over x's k
        nearest training latents n of ||x - z_n|| + D[n, c]."""
        return self._quantizer().encode(Z_new)

    def transform(self, Z_new) -> np.ndarray:
        """Geodesic distance from each latent to each code, float64 (m, K)."""
        return self._quantizer().distances(Z_new)

    def decode(self, codes) -> np.ndarray:
        """The codes' latents for code indices, float32 (m, d)."""
        return self._quantizer().decode(codes)

    # -- save / load ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted codebook to one ``.npz`` file, atomically."""
        q = self._quantizer()
        params = {k: v for k, v in self.get_params().items() if k != "execution"}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        try:
            np.savez(tmp, format_version=np.int64(FORMAT_VERSION), params=np.array(json.dumps(params)),
                     medoid_indices=q.medoid_indices, labels=self.labels_, codebook=self.codebook_,
                     dist_to_codes=self.dist_to_codes_, train_latents=self.train_latents_,
                     inertia=np.float64(self.inertia_), n_iter=np.int64(self.n_iter_),
                     n_swaps=np.int64(self.n_swaps_))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, *, execution: Execution | None = None) -> "GeodesicCodebook":
        """A codebook written by :meth:`save`."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                version = int(f["format_version"])
                if version != FORMAT_VERSION:
                    raise ValueError(f"format version {version}, this rapids_geovq reads {FORMAT_VERSION}")
                cb = cls(**json.loads(str(f["params"])), execution=execution)
                cb.medoid_indices_ = f["medoid_indices"].astype(np.int64)
                cb.labels_ = f["labels"].astype(np.int64)
                cb.codebook_ = f["codebook"]
                cb.dist_to_codes_ = f["dist_to_codes"]
                cb.train_latents_ = f["train_latents"]
                cb.inertia_ = float(f["inertia"])
                cb.n_iter_ = int(f["n_iter"])
                cb.n_swaps_ = int(f["n_swaps"])
        except FileNotFoundError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path} is not a saved GeodesicCodebook ({exc}); fit and save it again") from exc
        cb._quantizer()  # checks the arrays agree
        return cb

    # -- helpers ----------------------------------------------------------------------------

    def _execution(self) -> Execution:
        return self.execution or Execution()

    def _check_hyper(self) -> None:
        for name in ("n_codes", "k", "n_init", "max_iter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.disconnected not in ("repair", "error"):
            raise ValueError(f"disconnected must be 'repair' or 'error', got {self.disconnected!r}")

    def _check_params(self, Z) -> np.ndarray:
        self._check_hyper()
        Z = check_latents(Z)
        if self.n_codes > Z.shape[0]:
            raise ValueError(f"n_codes={self.n_codes} is more than the {Z.shape[0]} latents; use n_codes <= {Z.shape[0]}")
        if self.k >= Z.shape[0]:
            raise ValueError(f"k={self.k} neighbours need more than {Z.shape[0]} latents; use k <= {Z.shape[0] - 1}")
        return Z

    @staticmethod
    def _in_memory(ex: Execution, n: int) -> bool:
        """Dense in memory: asked for, or by default when no shard directory is given, the work
        runs on this process's threads on the CPU, and the matrix fits with room to spare."""
        if ex.in_memory != "auto":
            return bool(ex.in_memory)
        from .engine import cluster_name

        threads = (cluster_name(ex.engine) == "threads") if ex.owns_engine else ex.engine.shares_memory
        return (ex.work_dir is None and threads and not ex.resolve_backend().gpu
                and n * n * 4 * 1.5 < available_memory_bytes())
