"""A graph prepared for many shortest-path searches: renumbered in row order, bucket width chosen.

Rows of the geodesic matrix are stored in groups of 8 nearby points seeded in reverse
Cuthill-McKee order (:func:`row_order`), so the sources of one kernel call are near each other
and share most of their search; columns stay in point order. Every path solver fills the same
layout with bit-equal rows, so a matrix computed by one solver resumes with any other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from ..common.graphs import check_graph

#: Name of the row layout, part of a shard directory's fingerprint.
LAYOUT = "lanes8-rcm-v1"


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
    graph: sp.csr_matrix  # in point order, for SciPy and cuGraph


def row_order(graph) -> np.ndarray:
    """The order in which row shards store the rows of ``graph``'s geodesic matrix, and in which
    geodesic k-means scans swap candidates: groups of 8 nearby points (the sources of one kernel
    call), seeded in reverse Cuthill-McKee order."""
    from ..cpu.kernels import LANES, lane_groups

    graph = sp.csr_matrix(graph)
    rcm = reverse_cuthill_mckee(graph, symmetric_mode=True).astype(np.int64)
    w = np.abs(graph.data.astype(np.float64))
    return lane_groups(graph.indptr.astype(np.int64), graph.indices.astype(np.int64), w, rcm, LANES, 128)


def make_plan(graph) -> PathPlan:
    """Check a graph (symmetrising a directed one, with a warning) and prepare it for the kernels:
    row order, renumbered CSR, bucket width."""
    from ..cpu.kernels import MAX_BUCKETS

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
