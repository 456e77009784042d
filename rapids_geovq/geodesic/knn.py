"""The exact kNN graph on latents, symmetrised, with explicit zero-length edges and a repair for
a graph that falls apart.

The graph is what the geodesic distances run on, so two details matter more than speed:

* duplicate latents give zero-length edges, kept as explicit zeros
  (:func:`rapids_geovq.common.graphs.symmetric_graph`);
* a kNN graph can fall apart into several components. Geodesic distances across components are
  infinite, so the graph is either repaired as scikit-learn's Isomap does (one edge between the
  closest pair of points of every pair of components) or refused with an error that says so.

The neighbour search itself is the backend's (:mod:`rapids_geovq.backends`); every backend returns
the same exact neighbour lists.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..common.arrays import squared_norms, to_host
from ..common.exact_knn import check_latents
from ..common.graphs import symmetric_graph

log = logging.getLogger(__name__)


class DisconnectedGraphError(ValueError):
    """The kNN graph has more than one connected component and repair was not asked for."""


@dataclass(frozen=True)
class Connectivity:
    """What :func:`knn_graph` found and did about connectivity."""

    n_components: int
    component_sizes: tuple[int, ...]
    added_edges: int


def exact_knn(Z, k: int, *, query=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest neighbours on the CPU, ordered by (distance, index).

    Parameters
    ----------
    Z : array of shape (n, d)
        Reference points.
    k : int
        Number of neighbours.
    query : array of shape (m, d), optional
        Query points. When omitted the queries are ``Z`` itself and each point is excluded from
        its own neighbours (but exact duplicates of it are not).

    Returns
    -------
    distances : float64 array of shape (m, k), ascending per row
    indices : int64 array of shape (m, k)
        Among points at equal distance the lower index comes first, also at the k-th place.
    """
    from ..cpu.knn import sklearn_knn

    return sklearn_knn(Z, k, query=query)


def knn_graph(Z, k: int = 10, *, disconnected: str = "repair", return_info: bool = False,
              backend="numpy") -> sp.csr_matrix | tuple[sp.csr_matrix, Connectivity]:
    """Symmetric exact kNN graph with Euclidean edge weights.

    Parameters
    ----------
    Z : array of shape (n, d)
        Latents, finite. On a GPU backend it may be a CuPy array or a CUDA torch tensor (read in
        place).
    k : int, default=10
        Neighbours per point. An edge i-j exists if j is among i's k nearest or i among j's.
    disconnected : {"repair", "error"}, default="repair"
        What to do when the graph has several connected components: add one edge between the
        closest pair of points of every pair of components (as scikit-learn's Isomap does, with
        a warning in the log), or raise :class:`DisconnectedGraphError`.
    return_info : bool, default=False
        Also return a :class:`Connectivity` record.
    backend : {"numpy", "cupy", "rapids", "auto"} or Backend, default="numpy"
        Whose exact neighbour search runs (scikit-learn; CuPy distance products; cuML). All give
        the same neighbours.

    Returns
    -------
    graph : scipy.sparse.csr_matrix of shape (n, n), float64
        Symmetric; zero-length edges between duplicate points are stored as explicit zeros.
    info : Connectivity
        Only when ``return_info``.
    """
    from ..backends import resolve_backend

    if disconnected not in ("repair", "error"):
        raise ValueError(f"disconnected must be 'repair' or 'error', got {disconnected!r}")
    backend = resolve_backend(backend)
    dist, ind = backend.knn(backend.latents(Z), k)
    Z = check_latents(to_host(Z))  # on the host, for repairs
    n = Z.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    graph = symmetric_graph(n, rows, ind.ravel(), dist.ravel())

    n_comp, labels = connected_components(graph, directed=False)
    sizes = tuple(int(s) for s in np.bincount(labels))
    added = 0
    if n_comp > 1:
        shown = ", ".join(str(s) for s in sorted(sizes, reverse=True)[:10])
        msg = (
            f"the k={k} nearest-neighbour graph of {n} points has {n_comp} connected components "
            f"(sizes {shown}{', ...' if n_comp > 10 else ''})"
        )
        if disconnected == "error":
            raise DisconnectedGraphError(
                msg + "; geodesic distances between components are infinite. Increase k, or repair it: "
                "graph.disconnected=repair in a job, --disconnected repair for the codebook command, "
                "disconnected='repair' in Python. That joins every pair of components by its closest "
                "pair of points, as Isomap does."
            )
        log.warning("%s; joining each pair of components by its closest pair of points", msg)
        er, ec, ew = _component_bridges(Z, labels, n_comp)
        added = len(er)
        graph = symmetric_graph(
            n,
            np.concatenate([rows, er]),
            np.concatenate([ind.ravel(), ec]),
            np.concatenate([dist.ravel(), ew]),
        )
    info = Connectivity(n_comp, sizes, added)
    return (graph, info) if return_info else graph


def _component_bridges(Z: np.ndarray, labels: np.ndarray, n_comp: int):
    """Closest pair of points for every pair of components (Isomap's repair), memory-bounded."""
    from sklearn.metrics import pairwise_distances_argmin_min

    members = [np.flatnonzero(labels == c) for c in range(n_comp)]
    er, ec, ew = [], [], []
    for i in range(n_comp):
        for j in range(i):
            a, b = members[i], members[j]
            arg, d = pairwise_distances_argmin_min(Z[a], Z[b])
            best = int(np.argmin(d))
            p, q = int(a[best]), int(b[arg[best]])
            er.append(p)
            ec.append(q)
            ew.append(float(np.sqrt(squared_norms(Z[p] - Z[q]))))
    return np.array(er, np.int64), np.array(ec, np.int64), np.array(ew, np.float64)
