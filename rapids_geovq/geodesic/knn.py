"""Exact k-nearest-neighbour graph on latents (NumPy / scikit-learn reference).

The graph is what the geodesic distances run on, so two details matter more than speed:

* duplicate latents give zero-length edges. SciPy's sparse arithmetic (``A + A.T``,
  ``A.maximum(A.T)``) silently drops explicit zeros, after which ``scipy.sparse.csgraph`` treats the
  pair as unconnected. The graph is therefore assembled from COO triplets directly, which keeps
  explicit zeros, and symmetrised by hand.
* a kNN graph can fall apart into several components. Geodesic distances across components are
  infinite, so the graph is either repaired as scikit-learn's Isomap does (one edge between the
  closest pair of points of every pair of components) or refused with an error that says so.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

log = logging.getLogger("rapids_geovq")

class DisconnectedGraphError(ValueError):
    """The kNN graph has more than one connected component and repair was not asked for."""


@dataclass(frozen=True)
class Connectivity:
    """What :func:`knn_graph` found and did about connectivity."""

    n_components: int
    component_sizes: tuple[int, ...]
    added_edges: int


def check_latents(Z):
    """Validate latents: a finite 2-D real array with at least two rows; returns it as float64 in
    the same array module (NumPy, or CuPy for device arrays)."""
    from ..gpu.backend import array_module, to_host

    xp = array_module(Z)
    Z = xp.asarray(Z)
    if Z.ndim != 2:
        raise ValueError(f"latents must be a 2-D array (n_points, n_dims), got shape {Z.shape}")
    if Z.shape[0] < 2:
        raise ValueError(f"need at least 2 latents to build a graph, got {Z.shape[0]}")
    if not (np.issubdtype(Z.dtype, np.floating) or np.issubdtype(Z.dtype, np.integer)):
        raise ValueError(f"latents must be real numbers, got dtype {Z.dtype}")
    bad = ~xp.isfinite(Z).all(axis=1)
    if bool(bad.any()):
        rows = np.flatnonzero(to_host(bad))
        raise ValueError(
            f"latents contain NaN or inf in {rows.size} row(s) (first: {rows[:5].tolist()}); "
            "the encoder diverged or the file is corrupt: retrain the VAE (delete its checkpoint) "
            "or drop those rows before building the graph"
        )
    return Z.astype(xp.float64, copy=False)


def check_k(k: int, n: int, *, self_query: bool = True) -> None:
    """``k`` neighbours must exist among ``n`` points (one fewer when a point is not its own)."""
    limit = n - 1 if self_query else n
    if not 1 <= k <= limit:
        raise ValueError(f"k={k} neighbours requested but only {limit} candidate points exist; use k <= {limit}")


def exact_knn(Z, k: int, *, query=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest neighbours, ordered by (distance, index).

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
    from sklearn.neighbors import NearestNeighbors

    Z = check_latents(Z)
    n = Z.shape[0]
    self_query = query is None
    check_k(k, n, self_query=self_query)
    limit = n - 1 if self_query else n
    # The GEMM-based search (|x|^2 + |y|^2 - 2xy) loses precision for near points; fetch a few
    # spare candidates and re-rank them with exact differences so ties and tiny distances are right.
    fetch = min(k + RERANK_EXTRA, limit)
    nn = NearestNeighbors(n_neighbors=fetch, algorithm="brute").fit(Z)
    if self_query:
        approx, cand = nn.kneighbors()
        Q = Z
    else:
        Q = check_latents(query)
        approx, cand = nn.kneighbors(Q)
    return finish_knn(Q, Z, cand, approx**2, k, rel_err=GEMM_REL_ERR, self_query=self_query)


#: Spare candidates fetched from an approximate (GEMM) search, re-ranked with exact differences.
RERANK_EXTRA = 4
#: Bound on the relative error of a float64 GEMM squared distance (|x|^2 + |y|^2 - 2xy), with margin.
GEMM_REL_ERR = 1e-12


def finish_knn(Q, Z, cand, approx_sq, k: int, *, rel_err: float, self_query: bool = False, start: int = 0):
    """Exact neighbours from approximate candidates: re-rank by exact distance (ties to the lower
    index) and prove each row complete, recomputing in full the rare rows it cannot prove.

    Works on NumPy or CuPy arrays alike (the kNN search of either backend ends here).

    Parameters
    ----------
    Q : (m, d) float64 queries; Z : (n, d) float64 reference points
    cand : (m, c) int candidate indices (distinct per row; c > k unless c == all points)
    approx_sq : (m, c) approximate squared distances of the candidates; every point left out of a
        row's candidates has an approximate squared distance >= that row's largest.
    rel_err : bound on |approximate - exact| squared distance, relative to |q|^2 + max |z|^2
    self_query : Q is Z[start:start + m] and each point is excluded from its own neighbours
    """
    from ..gpu.backend import array_module, to_host

    xp = array_module(cand)
    m, c = cand.shape
    cand = cand.astype(xp.int64)
    diff = Q[:, None, :] - Z[cand]
    exact = xp.sqrt(squared_norms(diff))
    # rank of each candidate under (distance, index): a permutation, so any sort orders it
    before = (exact[:, None, :] < exact[:, :, None]) | (
        (exact[:, None, :] == exact[:, :, None]) & (cand[:, None, :] < cand[:, :, None]))
    order = xp.argsort(before.sum(axis=2), axis=1)[:, :k]
    dist = xp.take_along_axis(exact, order, axis=1)
    ind = xp.take_along_axis(cand, order, axis=1)
    n = Z.shape[0]
    if c < n - (1 if self_query else 0):
        # Points outside the candidates are at least this far (squared) in exact arithmetic:
        scale = (Q * Q).sum(axis=1) + float((Z * Z).sum(axis=1).max())
        floor = approx_sq.max(axis=1) - rel_err * scale
        unproven = xp.flatnonzero(dist[:, k - 1] ** 2 >= floor)
        if unproven.size:
            rows = to_host(unproven)
            fd, fi = _full_rows(to_host(Q[unproven]), to_host(Z), k, rows + start if self_query else None)
            dist[unproven] = xp.asarray(fd)
            ind[unproven] = xp.asarray(fi)
    return to_host(dist), to_host(ind)


def squared_norms(diff):
    """Sum of squares over the last axis, adding the coordinates one at a time in order.

    Every step is one rounded multiply or add over whole arrays, so NumPy and CuPy give the same
    bits (a ``sum`` would use NumPy's pairwise order on the CPU and a tree reduction on the GPU).
    """
    s = diff[..., 0] * diff[..., 0]
    for j in range(1, diff.shape[-1]):
        s = s + diff[..., j] * diff[..., j]
    return s


def _full_rows(Q: np.ndarray, Z: np.ndarray, k: int, self_index):
    """Exact (distance, index)-ordered neighbours against all points (rows a search could not prove)."""
    dist = np.empty((Q.shape[0], k))
    ind = np.empty((Q.shape[0], k), np.int64)
    for r in range(Q.shape[0]):
        d = np.sqrt(squared_norms(Z - Q[r]))
        if self_index is not None:
            d[self_index[r]] = np.inf
        o = np.lexsort((np.arange(d.size), d))[:k]
        dist[r], ind[r] = d[o], o
    return dist, ind


KNN_METHODS = ("sklearn", "cupy", "cuml")


def knn_graph(
    Z, k: int = 10, *, disconnected: str = "repair", return_info: bool = False, knn: str = "sklearn"
) -> sp.csr_matrix | tuple[sp.csr_matrix, Connectivity]:
    """Symmetric exact kNN graph with Euclidean edge weights.

    Parameters
    ----------
    Z : array of shape (n, d)
        Latents, finite.
    k : int, default=10
        Neighbours per point. An edge i-j exists if j is among i's k nearest or i among j's.
    disconnected : {"repair", "error"}, default="repair"
        What to do when the graph has several connected components: add one edge between the
        closest pair of points of every pair of components (as scikit-learn's Isomap does, with
        a warning in the log), or raise :class:`DisconnectedGraphError`.
    return_info : bool, default=False
        Also return a :class:`Connectivity` record.
    knn : {"sklearn", "cupy", "cuml"}, default="sklearn"
        The exact neighbour search: on the CPU (:func:`exact_knn`), by CuPy distance products on
        the GPU, or by cuML's brute-force search (:mod:`rapids_geovq.gpu.knn`). All three give the
        same neighbours. ``Z`` may then be a CuPy array or a CUDA torch tensor (read in place).

    Returns
    -------
    graph : scipy.sparse.csr_matrix of shape (n, n), float64
        Symmetric; zero-length edges between duplicate points are stored as explicit zeros.
    info : Connectivity
        Only when ``return_info``.
    """
    if disconnected not in ("repair", "error"):
        raise ValueError(f"disconnected must be 'repair' or 'error', got {disconnected!r}")
    if knn not in KNN_METHODS:
        raise ValueError(f"knn must be one of {KNN_METHODS}, got {knn!r}")
    if knn == "sklearn":
        Z = check_latents(Z)
        dist, ind = exact_knn(Z, k)
    else:
        from ..gpu.knn import gpu_knn

        dist, ind = gpu_knn(Z, k, method=knn)
        from ..gpu.backend import to_host

        Z = to_host(Z.detach().cpu() if hasattr(Z, "detach") else Z).astype(np.float64)  # for repairs
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
                msg + "; geodesic distances between components are infinite. Increase k, or set "
                "disconnected='repair' (config key geodesic.disconnected=repair) to join every pair "
                "of components by its closest pair of points, as Isomap does."
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


def symmetric_graph(n: int, rows, cols, weights) -> sp.csr_matrix:
    """CSR matrix with an edge both ways for every (row, col, weight) triplet, keeping zero weights.

    Where the same pair appears twice (i in j's list and j in i's), the smaller weight is kept, so
    the result is exactly symmetric.
    """
    r = np.concatenate([rows, cols]).astype(np.int64)
    c = np.concatenate([cols, rows]).astype(np.int64)
    w = np.concatenate([weights, weights]).astype(np.float64)
    keep = r != c
    r, c, w = r[keep], c[keep], w[keep]
    order = np.lexsort((w, c, r))
    r, c, w = r[order], c[order], w[order]
    first = np.ones(r.size, dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    r, c, w = r[first], c[first], w[first]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
    # Built from (data, indices, indptr) so no arithmetic touches it and explicit zeros survive.
    return sp.csr_matrix((w, c.astype(np.int32), indptr.astype(np.int32)), shape=(n, n))


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
