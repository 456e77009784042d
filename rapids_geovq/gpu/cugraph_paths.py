"""Geodesic rows with cuGraph's single-source shortest paths (SSSP), one source or a batch per call.

Why this exists
---------------
cuGraph (``cugraph.sssp`` / ``pylibcugraph.sssp``) computes shortest paths from *one* source per
call; its Python API has no all-pairs or batched SSSP. The usual way to get many geodesic rows
out of it is a Python loop over sources, one SSSP call (and one device-to-host copy) each. That
loop is the comparison baseline of the benchmarks (``mode="per_source"``).

``mode="batched"`` gets ``B`` rows from a single SSSP call instead. The graph is replicated ``B``
times (replica ``i`` has its nodes renumbered ``i * n ... i * n + n - 1``) and one extra node, the
super-source, is joined to ``i * n + sources[i]`` by a zero-weight edge. The replicas share no
edges, so the distance from the super-source to ``i * n + v`` is ``d(sources[i], v)``; since
``0.0 + w == w`` exactly, it is even the same float64 number. See :func:`super_source_graph`.

Memory cost of ``mode="batched"``
---------------------------------
The batched graph holds ``B`` copies of the edge list: about ``B * nnz * 12`` bytes with int32
node ids and float64 weights (``B * nnz * 16`` once ids need int64), plus ``(B * n + 2)`` offsets.
cuGraph copies it once more into its own graph structure, and the SSSP result holds ``B * n``
float64 distances and ``B * n`` predecessors. ``batch`` therefore trades device memory for fewer,
larger SSSP calls; a kNN graph with ``n = 60,000`` and ``nnz = 1.2e6`` takes about 1 GB per
copy at ``batch = 64``.

Exactness
---------
cuGraph relaxes ``d(v) = d(u) + w(u, v)`` in float64 (with float64 weights) until no distance
improves. With non-negative weights that fixpoint is the minimum, over paths, of the float64 sums
taken in path order, which is what SciPy's Dijkstra returns; the rows, rounded once to float32,
are therefore equal to ``scipy.sparse.csgraph.dijkstra`` rounded to float32. Explicit zero
weights (duplicate points) are edges throughout: no sparse arithmetic touches the graph.
"""
from __future__ import annotations

import math

import numpy as np

from ..common.arrays import array_module
from ..common.graphs import check_graph

MODES = ("batched", "per_source")

_INT32_MAX = int(np.iinfo(np.int32).max)

_INSTALL_HINT = (
    "cugraph_rows needs RAPIDS cuGraph (pylibcugraph) and CuPy with a CUDA GPU, and they could "
    "not be imported. Install them for your CUDA version (pip install pylibcugraph-cu12 "
    "cupy-cuda12x, or pylibcugraph-cu13 cupy-cuda13x; or conda install -c rapidsai -c conda-forge "
    "pylibcugraph), or compute the geodesic rows without cuGraph: geodesic.method=cuda "
    "(CuPy / Numba-CUDA) or geodesic.method=numba (CPU)."
)


def _namespace(*arrays):
    """CuPy if any of ``arrays`` lives on a CUDA device, else NumPy."""
    return next((array_module(a) for a in arrays if hasattr(a, "__cuda_array_interface__")), np)


def _check_sources(sources, n: int, xp):
    """Sources as a 1-D int64 array of ``xp``, each a node id in ``[0, n)``."""
    sources = xp.asarray(sources)
    if sources.ndim != 1:
        raise ValueError(f"sources must be a 1-D array of node ids, got shape {tuple(sources.shape)}")
    if sources.shape[0] == 0:
        raise ValueError("sources is empty: need at least one source node")
    if sources.dtype.kind not in "iu":
        raise ValueError(f"sources must be integer node ids, got dtype {sources.dtype}")
    lo, hi = int(sources.min()), int(sources.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"sources must be node ids in [0, {n}), got values from {lo} to {hi}")
    return sources.astype(xp.int64)


def super_source_graph(indptr, indices, weights, sources, xp=None):
    """CSR of ``len(sources)`` disjoint copies of a graph plus a super-source joined to each copy.

    Replica ``i`` holds the nodes ``i * n ... i * n + n - 1`` and the edges of the input graph
    shifted by ``i * n``. The super-source is the last node, ``B * n``; its out-edges go to
    ``i * n + sources[i]`` with weight 0 and it has no in-edges. A single-source shortest-path
    search from it therefore finds ``dist[i * n + v] == d(sources[i], v)`` for every ``i``.

    Parameters
    ----------
    indptr, indices, weights : 1-D arrays
        CSR of a directed graph on ``n = len(indptr) - 1`` nodes (an undirected graph stores both
        directions). Explicit zero weights are edges and are kept.
    sources : 1-D int array of length ``B``
        Source nodes, one per replica; repeats are allowed.
    xp : module, optional
        Array namespace, ``numpy`` or ``cupy``. Default: ``cupy`` if any input is a CUDA array,
        else ``numpy``. Only operations both provide are used.

    Returns
    -------
    indptr2 : int array of shape (B * n + 2,)
    indices2 : int array of shape (B * nnz + B,)
        int32 where every node id and edge offset fits, else int64 (both arrays alike).
    weights2 : float64 array of shape (B * nnz + B,)
    super_node : int
        ``B * n``, the id of the super-source.

    Raises
    ------
    ValueError
        For a malformed CSR, or sources that are empty, not 1-D, not integers or out of range.
    """
    if xp is None:
        xp = _namespace(indptr, indices, weights, sources)
    indptr = xp.asarray(indptr)
    indices = xp.asarray(indices)
    weights = xp.asarray(weights)
    if indptr.ndim != 1 or indptr.shape[0] < 2:
        raise ValueError(f"indptr must be a 1-D array of length n + 1 >= 2, got shape {tuple(indptr.shape)}")
    if indices.ndim != 1 or weights.ndim != 1:
        raise ValueError("indices and weights must be 1-D arrays")
    n = int(indptr.shape[0]) - 1
    if int(indptr[0]) != 0:
        raise ValueError(f"indptr must start at 0, got {int(indptr[0])}")
    nnz = int(indptr[-1])
    if indices.shape[0] < nnz or weights.shape[0] < nnz:
        raise ValueError(
            f"indptr[-1] = {nnz} edges, but indices has {indices.shape[0]} and weights {weights.shape[0]}"
        )
    sources = _check_sources(sources, n, xp)
    b = int(sources.shape[0])

    n_nodes, n_edges = b * n + 1, b * nnz + b
    it = xp.int32 if max(n_nodes, n_edges) <= _INT32_MAX else xp.int64
    replica = xp.arange(b, dtype=it)
    # Row pointers of replica i are the original ones shifted by i * nnz; the super-source's row
    # follows the last replica and holds its B edges.
    body_ptr = (indptr[:-1].astype(it)[None, :] + (replica * nnz)[:, None]).reshape(-1)
    indptr2 = xp.concatenate([body_ptr, xp.asarray([b * nnz, b * nnz + b], dtype=it)])
    body_idx = (indices[:nnz].astype(it)[None, :] + (replica * n)[:, None]).reshape(-1)
    indices2 = xp.concatenate([body_idx, replica * n + sources.astype(it)])
    weights2 = xp.concatenate([
        xp.tile(weights[:nnz].astype(xp.float64), b),
        xp.zeros(b, dtype=xp.float64),
    ])
    return indptr2, indices2, weights2, b * n


def _check_mode_batch(mode, batch) -> int:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)):
        raise ValueError(f"batch must be a positive integer (sources per SSSP call), got {batch!r}")
    if batch < 1:
        raise ValueError(f"batch must be a positive integer (sources per SSSP call), got {batch}")
    return int(batch)


def _load_backend():
    """``(solver, cupy)``: pylibcugraph if it imports (preferred), else cuGraph's Python API."""
    try:
        import cupy
        import pylibcugraph

        if hasattr(pylibcugraph, "SGGraph") and hasattr(pylibcugraph, "sssp"):
            return _PlcSolver(pylibcugraph), cupy
    except ImportError as exc:
        first = exc
    else:
        first = None
    try:
        import cudf
        import cugraph
        import cupy
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from (first or exc)
    return _CugraphSolver(cugraph, cudf), cupy


class _PlcSolver:
    """SSSP through pylibcugraph (graphs built straight from device CSR arrays)."""

    def __init__(self, plc):
        self.plc = plc
        self.handle = plc.ResourceHandle()
        # Not declared symmetric: the batched graph is directed (super-source edges go one way),
        # and a directed search on a symmetric CSR gives the same distances.
        self.props = plc.GraphProperties(is_symmetric=False, is_multigraph=False)

    def graph(self, indptr, indices, weights):
        return self.plc.SGGraph(
            resource_handle=self.handle,
            graph_properties=self.props,
            src_or_offset_array=indptr,
            dst_or_index_array=indices,
            weight_array=weights,
            store_transposed=False,
            renumber=False,
            do_expensive_check=False,
            input_array_format="CSR",
        )

    def sssp(self, graph, source: int):
        vertices, distances, _ = self.plc.sssp(
            resource_handle=self.handle,
            graph=graph,
            source=int(source),
            cutoff=math.inf,
            compute_predecessors=True,  # required to be True by pylibcugraph
            do_expensive_check=False,
        )
        return vertices, distances


class _CugraphSolver:
    """SSSP through cuGraph's Python API (``cugraph.Graph`` + ``cugraph.sssp``)."""

    def __init__(self, cugraph, cudf):
        self.cugraph = cugraph
        self.cudf = cudf

    def graph(self, indptr, indices, weights):
        g = self.cugraph.Graph(directed=True)
        g.from_cudf_adjlist(
            self.cudf.Series(indptr), self.cudf.Series(indices), self.cudf.Series(weights), renumber=False
        )
        return g

    def sssp(self, graph, source: int):
        df = self.cugraph.sssp(graph, source=int(source))
        return df["vertex"].values, df["distance"].values


def _distance_row(cp, vertices, distances, size: int):
    """Distances scattered by vertex id into a float64 row of ``size``; unreachable -> inf.

    cuGraph lists (vertex, distance) pairs in no promised order and marks unreachable vertices
    with the largest finite value of the weight type.
    """
    d = cp.asarray(distances, dtype=cp.float64)
    d = cp.where(d >= np.finfo(np.dtype(distances.dtype)).max, cp.inf, d)
    row = cp.full(size, cp.inf, dtype=cp.float64)
    row[cp.asarray(vertices, dtype=cp.int64)] = d
    return row


def cugraph_rows(graph, sources, *, mode: str = "batched", batch: int = 64) -> np.ndarray:
    """Geodesic rows of a graph from ``sources``, computed with cuGraph's SSSP on the GPU.

    Parameters
    ----------
    graph : scipy.sparse matrix of shape (n, n)
        Non-negative, finite edge weights (converted to float64); explicit zeros are edges. A
        symmetric graph stores both directions; otherwise edges are followed as stored (row to
        column), as ``scipy.sparse.csgraph.dijkstra(graph)`` does.
    sources : 1-D int array
        Source nodes, repeats allowed.
    mode : {"batched", "per_source"}, default="batched"
        ``"batched"``: one SSSP call per ``batch`` sources on the super-source graph of
        :func:`super_source_graph` (built on the device). ``"per_source"``: one SSSP call per
        source on the graph itself (the usual cuGraph loop).
    batch : int, default=64
        Sources per SSSP call in ``"batched"`` mode; device memory grows linearly with it (see
        the module docstring). Ignored by ``"per_source"``.

    Returns
    -------
    numpy.ndarray of float32, shape (len(sources), n)
        Row ``i`` holds the shortest-path lengths from ``sources[i]`` (float64 sums rounded once
        to float32), ``inf`` where a node cannot be reached: equal to
        ``scipy.sparse.csgraph.dijkstra(graph, indices=sources).astype(np.float32)``.

    Raises
    ------
    ValueError
        For a bad ``mode``, ``batch``, graph or ``sources`` (checked before any GPU work).
    ImportError
        Where neither pylibcugraph nor cuGraph (with CuPy) can be imported.
    """
    batch = _check_mode_batch(mode, batch)
    graph = check_graph(graph, allow_disconnected=True, directed=True)
    n = graph.shape[0]
    src = _check_sources(sources, n, np)
    solver, cp = _load_backend()

    m = int(src.shape[0])
    out = np.empty((m, n), dtype=np.float32)
    nnz = int(graph.indptr[-1])
    it = np.int32 if max(n, nnz) <= _INT32_MAX else np.int64
    indptr = cp.asarray(np.asarray(graph.indptr, dtype=it))
    indices = cp.asarray(np.asarray(graph.indices[:nnz], dtype=it))
    weights = cp.asarray(np.asarray(graph.data[:nnz], dtype=np.float64))

    if mode == "per_source":
        g = solver.graph(indptr, indices, weights)
        for i, s in enumerate(src.tolist()):
            row = _distance_row(cp, *solver.sssp(g, s), n)
            out[i] = cp.asnumpy(row.astype(cp.float32))
        return out

    src_dev = cp.asarray(src)
    for start in range(0, m, batch):
        stop = min(start + batch, m)
        p2, i2, w2, super_node = super_source_graph(indptr, indices, weights, src_dev[start:stop], xp=cp)
        g = solver.graph(p2, i2, w2)
        row = _distance_row(cp, *solver.sssp(g, super_node), super_node + 1)
        out[start:stop] = cp.asnumpy(row[:super_node].reshape(stop - start, n).astype(cp.float32))
        del g, p2, i2, w2, row  # frees this batch's replicas before the next one is built
    return out


def cugraph_problem() -> str | None:
    """None if pylibcugraph (or cuGraph with cuDF) and CuPy import here, else the install hint."""
    from .device import installed

    if installed("cupy") and (installed("pylibcugraph") or (installed("cugraph") and installed("cudf"))):
        return None
    return _INSTALL_HINT


class CugraphPaths:
    """The path solver that asks cuGraph: one SSSP call per 64 sources on a super-source graph
    (:func:`cugraph_rows`, ``mode="batched"``)."""

    name = "cugraph"
    max_threads = 1
    keeps_rows_on_device = False

    @staticmethod
    def work_bytes(n: int) -> int:
        return 0  # device memory

    def fill(self, plan, start: int, stop: int, out: np.ndarray):
        out[...] = cugraph_rows(plan.graph, plan.order[start:stop], mode="batched")
        return None
