"""cuGraph SSSP adapter: the super-source batch graph against SciPy's Dijkstra, on CPU and GPU."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra

from rapids_geovq.common.graphs import symmetric_graph
from rapids_geovq.gpu.cugraph_paths import cugraph_rows, super_source_graph

gpu = pytest.mark.gpu


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def knn_edges(Z: np.ndarray, k: int, offset: int = 0):
    """(rows, cols, weights) of the brute-force k nearest neighbours of each row of ``Z``."""
    D = np.sqrt(((Z[:, None, :] - Z[None, :, :]) ** 2).sum(axis=2))
    np.fill_diagonal(D, np.inf)
    nbr = np.argsort(D, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(len(Z)), k)
    return rows + offset, nbr.ravel() + offset, D[rows, nbr.ravel()]


def points_with_duplicates(rng, n: int, d: int = 3) -> np.ndarray:
    Z = rng.normal(size=(n, d))
    Z[5] = Z[4]  # duplicate points: zero-length edges
    Z[6] = Z[4]
    Z[n - 1] = Z[n // 2]
    return Z


def connected_graph(seed: int = 0, n: int = 60, k: int = 4) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return symmetric_graph(n, *knn_edges(points_with_duplicates(rng, n), k))


def split_graph(seed: int = 1) -> sp.csr_matrix:
    """Two components of 30 and 25 nodes plus one isolated node (55): infinite distances."""
    rng = np.random.default_rng(seed)
    r1, c1, w1 = knn_edges(points_with_duplicates(rng, 30), 3)
    r2, c2, w2 = knn_edges(rng.normal(size=(25, 3)) + 100.0, 3, offset=30)
    return symmetric_graph(56, np.concatenate([r1, r2]), np.concatenate([c1, c2]), np.concatenate([w1, w2]))


def random_edge_graph(seed: int = 2, n: int = 40) -> sp.csr_matrix:
    """Random edges with integer weights (many equal-length paths) and some zero weights."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=3 * n)
    cols = rng.integers(0, n, size=3 * n)
    w = rng.integers(0, 4, size=3 * n).astype(np.float64)
    return symmetric_graph(n, rows, cols, w)


GRAPHS = {"connected": connected_graph, "split": split_graph, "random_edges": random_edge_graph}


def reference_rows(graph, sources) -> np.ndarray:
    return dijkstra(graph, directed=True, indices=np.asarray(sources)).astype(np.float32)


def super_source_rows(graph, sources) -> np.ndarray:
    """Rows from one Dijkstra search out of the super-source of the replicated graph."""
    p2, i2, w2, s = super_source_graph(graph.indptr, graph.indices, graph.data, sources)
    big = sp.csr_matrix((w2, i2, p2), shape=(s + 1, s + 1))
    d = dijkstra(big, directed=True, indices=s)
    return d[:s].reshape(len(sources), graph.shape[0]).astype(np.float32)


# --- the graphs are what the tests claim -----------------------------------------------------

def test_graphs_have_zero_edges_and_components():
    for make in GRAPHS.values():
        g = make()
        assert (g.data == 0).any(), "explicit zero-weight edges expected"
        assert (g != g.T).nnz == 0
    n_comp, _ = connected_components(split_graph(), directed=False)
    assert n_comp == 3
    assert np.isinf(reference_rows(split_graph(), [0])).any()


# --- super-source graph on CPU ---------------------------------------------------------------

def test_super_source_graph_layout():
    # Path 0 -1.5- 1 -0.0- 2, both directions stored.
    g = symmetric_graph(3, np.array([0, 1]), np.array([1, 2]), np.array([1.5, 0.0]))
    p2, i2, w2, s = super_source_graph(g.indptr, g.indices, g.data, np.array([2, 0]))
    assert s == 6
    np.testing.assert_array_equal(p2, [0, 1, 3, 4, 5, 7, 8, 10])
    np.testing.assert_array_equal(i2, [1, 0, 2, 1, 4, 3, 5, 4, 2, 3])
    np.testing.assert_array_equal(w2, [1.5, 1.5, 0.0, 0.0, 1.5, 1.5, 0.0, 0.0, 0.0, 0.0])
    assert p2.dtype == np.int32 and i2.dtype == np.int32 and w2.dtype == np.float64
    assert isinstance(p2, np.ndarray)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_super_source_rows_equal_scipy(name):
    g = GRAPHS[name]()
    n = g.shape[0]
    batches = [
        [0],  # batch of one
        [n - 1],
        [3, 4, 5, 6],  # duplicate points as sources
        [7, 2, 7, 7, 0],  # repeated source
        list(range(n)),  # every node at once
    ]
    for sources in batches:
        got = super_source_rows(g, sources)
        want = reference_rows(g, sources)
        assert got.dtype == np.float32 and got.shape == (len(sources), n)
        assert np.array_equal(got, want), f"{name}: rows differ for sources {sources}"


def test_super_source_graph_keeps_explicit_zeros():
    g = connected_graph()
    sources = np.array([1, 2, 3])
    _, _, w2, _ = super_source_graph(g.indptr, g.indices, g.data, sources)
    assert w2.size == len(sources) * (g.nnz + 1)
    assert int((w2 == 0).sum()) == len(sources) * (int((g.data == 0).sum()) + 1)


def test_super_source_graph_int64_sources_and_indices():
    g = connected_graph()
    got = super_source_graph(g.indptr.astype(np.int64), g.indices.astype(np.int64), g.data,
                             np.array([9, 1], dtype=np.uint16))
    want = super_source_graph(g.indptr, g.indices, g.data, [9, 1])
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "sources, match",
    [
        ([0, 60], r"sources must be node ids in \[0, 60\), got values from 0 to 60"),
        ([-1], r"sources must be node ids in \[0, 60\)"),
        ([], "sources is empty"),
        ([[0, 1]], "sources must be a 1-D array"),
        ([0.0, 1.0], "sources must be integer node ids"),
    ],
)
def test_super_source_graph_rejects_bad_sources(sources, match):
    g = connected_graph()
    with pytest.raises(ValueError, match=match):
        super_source_graph(g.indptr, g.indices, g.data, np.asarray(sources))


def test_super_source_graph_rejects_bad_csr():
    g = connected_graph()
    with pytest.raises(ValueError, match="indptr must be a 1-D array"):
        super_source_graph(np.array([0]), g.indices, g.data, [0])
    with pytest.raises(ValueError, match="indptr must start at 0"):
        super_source_graph(g.indptr + 1, g.indices, g.data, [0])
    with pytest.raises(ValueError, match="edges, but indices has"):
        super_source_graph(g.indptr, g.indices[:-1], g.data, [0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="all_pairs"), "mode must be one of 'batched', 'per_source', got 'all_pairs'"),
        (dict(batch=0), "batch must be a positive integer"),
        (dict(batch=-3), "batch must be a positive integer"),
        (dict(batch=2.5), "batch must be a positive integer"),
        (dict(batch=True), "batch must be a positive integer"),
    ],
)
def test_cugraph_rows_rejects_bad_mode_and_batch(kwargs, match):
    # Checked before any GPU library is imported, so this runs everywhere.
    with pytest.raises(ValueError, match=match):
        cugraph_rows(connected_graph(), [0, 1], **kwargs)


def test_cugraph_rows_rejects_bad_sources_and_graph():
    g = connected_graph()
    with pytest.raises(ValueError, match=r"sources must be node ids in \[0, 60\)"):
        cugraph_rows(g, [60])
    with pytest.raises(ValueError, match="sources is empty"):
        cugraph_rows(g, [])
    bad = g.copy()
    bad.data[0] = -1.0
    with pytest.raises(ValueError, match="negative edge weights"):
        cugraph_rows(bad, [0])


# --- without RAPIDS --------------------------------------------------------------------------

@pytest.mark.skipif(_installed("pylibcugraph") or _installed("cugraph"), reason="RAPIDS cuGraph is installed")
def test_cugraph_rows_without_rapids_says_how_to_fix():
    with pytest.raises(ImportError, match="pip install pylibcugraph-cu12") as info:
        cugraph_rows(connected_graph(), [0])
    assert "geodesic.method=cuda" in str(info.value) and "pylibcugraph-cu13" in str(info.value)


def test_cugraph_rows_import_error_when_modules_are_blocked(monkeypatch):
    # A None entry in sys.modules makes `import name` raise ImportError, installed or not.
    for name in ("pylibcugraph", "cugraph", "cudf", "cupy"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"RAPIDS cuGraph \(pylibcugraph\).*geodesic.method=numba"):
        cugraph_rows(connected_graph(), [0], mode="per_source")


# --- GPU -------------------------------------------------------------------------------------

def gpu_graph(seed: int = 3) -> sp.csr_matrix:
    """About 300 nodes: a kNN graph with duplicate points, a second component and an isolated node."""
    rng = np.random.default_rng(seed)
    r1, c1, w1 = knn_edges(points_with_duplicates(rng, 260, d=4), 6)
    r2, c2, w2 = knn_edges(rng.normal(size=(39, 4)) + 50.0, 5, offset=260)
    return symmetric_graph(300, np.concatenate([r1, r2]), np.concatenate([c1, c2]), np.concatenate([w1, w2]))


@gpu
@pytest.mark.parametrize("mode, batch", [("batched", 64), ("batched", 1), ("per_source", 64)])
def test_cugraph_rows_equal_scipy(mode, batch):
    pytest.importorskip("cupy")
    pytest.importorskip("pylibcugraph")
    g = gpu_graph()
    sources = np.concatenate([np.arange(300), [5, 5, 299]])
    if batch == 1:
        sources = sources[::15]  # one SSSP call per source either way: keep it short
    got = cugraph_rows(g, sources, mode=mode, batch=batch)
    want = reference_rows(g, sources)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert np.isinf(want).any() and (want == 0).sum() > len(sources)
    assert np.array_equal(got, want)


@gpu
def test_super_source_graph_on_cupy_equals_numpy():
    cp = pytest.importorskip("cupy")
    g = gpu_graph()
    sources = np.array([0, 17, 17, 299])
    want = super_source_graph(g.indptr, g.indices, g.data, sources)
    got = super_source_graph(
        cp.asarray(g.indptr), cp.asarray(g.indices), cp.asarray(g.data), cp.asarray(sources)
    )
    assert got[3] == want[3]
    for a, b in zip(got[:3], want[:3]):
        assert isinstance(a, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(a), b)
