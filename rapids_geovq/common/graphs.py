"""Checks and construction of the graphs shortest paths run on (backend-neutral, SciPy CSR).

Two details matter more than speed:

* duplicate latents give zero-length edges. SciPy's sparse arithmetic (``A + A.T``,
  ``A.maximum(A.T)``) silently drops explicit zeros, after which ``scipy.sparse.csgraph`` treats the
  pair as unconnected. Graphs are therefore assembled from COO triplets directly
  (:func:`symmetric_graph`), which keeps explicit zeros.
* geodesic distances are defined on the *undirected* graph, but a kNN relation is not symmetric
  (j among i's neighbours does not make i one of j's), and scikit-learn's ``kneighbors_graph``
  returns it directed. :func:`check_graph` symmetrises such a graph with a warning, as Isomap's
  ``shortest_path(..., directed=False)`` treats it, instead of computing directed distances that
  k-medoids would then use as if they were symmetric.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .arrays import array_crc32

log = logging.getLogger(__name__)


def symmetric_graph(n: int, rows, cols, weights) -> sp.csr_matrix:
    """CSR matrix with an edge both ways for every (row, col, weight) triplet, keeping zero weights.

    Where the same pair appears twice (i in j's list and j in i's), the smaller weight is kept, so
    the result is exactly symmetric. Self-loops are dropped (they never shorten a path).
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
    idx_t = np.int32 if max(n, r.size) < 2**31 else np.int64
    return sp.csr_matrix((w, c.astype(idx_t), indptr.astype(idx_t)), shape=(n, n))


def is_symmetric(graph: sp.csr_matrix) -> bool:
    """Whether a CSR graph holds every edge both ways with the same weight (explicit zeros count).

    One transpose and one comparison of the edge arrays: O(nnz log nnz), small next to the
    O(n * nnz) of the shortest paths it guards.
    """
    g = graph.tocsr(copy=True)
    g.sum_duplicates()
    g.sort_indices()
    t = g.transpose().tocsr()
    t.sum_duplicates()
    t.sort_indices()
    return (np.array_equal(g.indptr, t.indptr) and np.array_equal(g.indices, t.indices)
            and np.array_equal(g.data, t.data))


def check_graph(graph, *, allow_disconnected: bool = False, directed: bool = False) -> sp.csr_matrix:
    """Validate a graph for shortest paths and return it as CSR float64 (explicit zeros kept).

    Parameters
    ----------
    graph : sparse matrix or dense array of shape (n, n)
        Non-negative finite edge weights; a dense input follows SciPy's convention (0: no edge).
    allow_disconnected : bool, default=False
        Accept several connected components (distances between them are infinite).
    directed : bool, default=False
        Keep edges as stored (row to column). By default the graph is the undirected one that
        geodesic distances are defined on: an input that is not symmetric (such as scikit-learn's
        ``kneighbors_graph``) is symmetrised with a warning, each pair joined by the shorter of
        its two directions, as Isomap treats it; a symmetric graph is returned as it is.

    Raises
    ------
    ValueError
        For a non-square shape, NaN, infinite or negative weights, or (unless allowed) several
        connected components; the message says what to change.
    """
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
    if not directed and not is_symmetric(graph):
        coo = graph.tocoo()
        log.warning(
            "the graph is not symmetric (a kNN relation is directed, e.g. scikit-learn's "
            "kneighbors_graph); using its undirected version, each pair joined by the shorter of its "
            "two directions, as Isomap does. Build it with rapids_geovq.knn_graph to get it symmetric.")
        graph = symmetric_graph(n, coo.row, coo.col, coo.data)
    if not allow_disconnected:
        n_comp, labels = connected_components(graph, directed=False)
        if n_comp > 1:
            sizes = sorted(np.bincount(labels).tolist(), reverse=True)[:10]
            raise ValueError(
                f"graph has {n_comp} connected components (largest sizes {sizes}); distances between "
                "them are infinite. Build it with knn_graph(..., disconnected='repair') or a larger k."
            )
    return graph


def graph_fingerprint(graph: sp.csr_matrix) -> str:
    """A short checksum of a CSR graph's structure and weights."""
    parts = [graph.indptr.astype(np.int64), graph.indices.astype(np.int64), graph.data.astype(np.float64)]
    crc = 0
    for p in parts:
        crc = array_crc32(p) ^ ((crc << 1) & 0xFFFFFFFF)
    return f"{graph.shape[0]}-{graph.nnz}-{crc:08x}"
