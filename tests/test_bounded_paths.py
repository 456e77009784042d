"""Bounded searches (CPU kernels and their GPU twin) against SciPy's Dijkstra and the dense
k-medoids kernels.

The GPU twin runs on Numba's CUDA simulator where no GPU is present (see conftest.py).
"""
import threading

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from rapids_geovq.common.arrays import to_host
from rapids_geovq.common.graphs import symmetric_graph
from rapids_geovq.cpu import kernels
from rapids_geovq.cpu.bounded_paths import UNTOUCHED, BoundedGraph, BoundedSearch, as_bounded_graph
from rapids_geovq.geodesic.knn import knn_graph
from rapids_geovq.geodesic.plan import make_plan

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")


# --- graphs and references -------------------------------------------------------------------

def _knn(n=120, seed=0, k=4):
    """A kNN graph with duplicate points (zero-length edges)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    X[1:4] = X[0]
    X[n // 2 : n // 2 + 2] = X[n // 2 - 1]
    return knn_graph(X, k)


def _two_components(seed=0, n=60):
    """Two random weighted components; integer weights (many ties) including zeros."""
    rng = np.random.default_rng(seed)
    h = n // 2
    r = rng.integers(0, h, 3 * h)
    c = rng.integers(0, h, 3 * h)
    w = rng.integers(0, 5, 6 * h).astype(np.float64)
    G = symmetric_graph(n, np.concatenate([r, r + h]), np.concatenate([c, c + h]), w)
    # a few real-valued weights too
    G.data[::3] *= 0.37
    return G


def _restricted_reference(G, source, node_bound, radius):
    """The restricted relaxation's fixpoint, by plain Bellman-Ford rounds (float64)."""
    G = sp.csr_matrix(G)
    n = G.shape[0]
    d = np.full(n, np.inf)
    d[source] = 0.0
    limit = np.minimum(node_bound, radius)
    changed = True
    while changed:
        changed = False
        for u in range(n):
            if not d[u] < limit[u]:
                continue
            for e in range(G.indptr[u], G.indptr[u + 1]):
                v, nd = G.indices[e], d[u] + G.data[e]
                if nd < d[v]:
                    d[v] = nd
                    changed = True
    return d


def _admissible_exact(G, source, D, node_bound, radius):
    """Nodes with a shortest path (in Dijkstra's float64 values) whose inner nodes all expand."""
    G = sp.csr_matrix(G)
    limit = np.minimum(node_bound, radius)
    ok = np.zeros(G.shape[0], bool)
    ok[source] = True
    stack = [source]
    while stack:
        u = stack.pop()
        if not D[u] < limit[u]:
            continue
        for e in range(G.indptr[u], G.indptr[u + 1]):
            v = G.indices[e]
            if not ok[v] and D[u] + G.data[e] == D[v]:
                ok[v] = True
                stack.append(v)
    return ok


def _random_bounds(rng, D, n):
    bound = rng.uniform(0, 1.2, n) * np.nanmax(np.where(np.isfinite(D), D, np.nan))
    bound[rng.random(n) < 0.3] = np.inf
    bound[rng.random(n) < 0.05] = 0.0
    return bound


def _swap_state(rows64, medoids):
    """The driver's swap state from float64 medoid rows (K, n), squares of the float32 values."""
    sq = rows64.astype(np.float32).astype(np.float64) ** 2
    k, n = sq.shape
    n1, n2 = np.empty(n, np.int64), np.empty(n, np.int64)
    d1, d2 = np.empty(n), np.empty(n)
    kernels.nearest_two(sq, -1, n1, n2, d1, d2)
    if k == 1:
        d2 = np.full(n, np.inf)
    removal = np.bincount(n1, weights=d2 - d1, minlength=k)
    is_medoid = np.zeros(n, np.bool_)
    is_medoid[medoids] = True
    return is_medoid, n1, d1, d2, removal


# --- the search --------------------------------------------------------------------------------

@pytest.mark.parametrize("together", [True, False])
@pytest.mark.parametrize("make", [_knn, _two_components])
def test_unbounded_rows_equal_dijkstra(make, together):
    G = make()
    n = G.shape[0]
    bs = BoundedSearch(G)
    sources = np.array([0, 1, 2, 5, 5, n - 1, 17, 31, 40, 3, 12])  # repeats, duplicates, 2 batches
    ref = dijkstra(G, directed=True, indices=sources)
    np.testing.assert_array_equal(bs.rows(sources, dtype=np.float64, together=together), ref)
    np.testing.assert_array_equal(bs.rows(sources, together=together), ref.astype(np.float32))
    assert bs.is_clean()
    if make is _two_components:
        assert np.isinf(ref).any()


def test_plan_graph_equals_multi_source_rows():
    G = _knn(200, seed=3)
    plan = make_plan(G)
    bs = BoundedSearch(plan)
    pos = np.arange(24)
    ref = np.empty((24, plan.n), np.float32)
    kernels.multi_source_rows(plan.indptr, plan.indices, plan.weights, plan.delta, plan.n_buckets,
                              pos.reshape(-1, 8), ref, plan.order)
    np.testing.assert_array_equal(bs.rows(plan.order[pos]), ref)
    np.testing.assert_array_equal(ref, dijkstra(G, indices=plan.order[pos]).astype(np.float32))


@pytest.mark.parametrize("make,seed", [(_knn, 1), (_two_components, 2), (_two_components, 3)])
def test_bounded_rows_are_the_restricted_fixpoint(make, seed):
    G = make(seed=seed)
    n = G.shape[0]
    rng = np.random.default_rng(seed)
    graph = as_bounded_graph(G)
    bs = BoundedSearch(graph)
    sources = rng.choice(n, 13)
    D = dijkstra(G, directed=True, indices=sources)
    for trial in range(3):
        bound = _random_bounds(rng, D, n)
        radius = rng.uniform(0, 1.0, sources.size) * np.nanmax(np.where(np.isfinite(D), D, np.nan))
        radius[::4] = np.inf
        got = bs.rows(sources, node_bound=graph.to_nodes(bound), radius=radius, dtype=np.float64)
        assert bs.is_clean()
        alone = bs.rows(sources, node_bound=graph.to_nodes(bound), radius=radius, dtype=np.float64, together=False)
        np.testing.assert_array_equal(alone, got)
        for j, s in enumerate(sources):
            ref = _restricted_reference(G, s, bound, radius[j])
            np.testing.assert_array_equal(got[j], ref)
            exact = _admissible_exact(G, s, D[j], bound, radius[j])
            np.testing.assert_array_equal(got[j][exact], D[j][exact])
            assert (got[j] >= D[j]).all()
        # the same batch through touched(): the finite entries, ascending by point
        pts, vals = bs.touched(sources[:8], node_bound=graph.to_nodes(bound), radius=radius[:8])
        reached = np.flatnonzero(np.isfinite(got[:8]).any(axis=0))
        np.testing.assert_array_equal(pts, reached)
        np.testing.assert_array_equal(vals, got[:8, reached].T)
        assert bs.is_clean()


def test_bounded_search_cost_follows_touched_nodes():
    G = _knn(400, seed=5, k=5)
    bs = BoundedSearch(G)
    src = np.arange(8)
    D = dijkstra(G, indices=src)
    bs.rows(src)
    full = bs.last_touched
    r = np.median(D[np.isfinite(D)]) / 4
    out = bs.rows(src, radius=r)
    assert bs.last_touched < full / 2
    # nodes within the radius are exact (their shortest paths stay inside it)
    inside = D < r
    np.testing.assert_array_equal(out[inside], D[inside].astype(np.float32))


def test_low_level_search_leaves_touched_list_and_reset_cleans():
    from rapids_geovq.cpu.bounded_paths import bounded_search, reset_work

    G = _two_components(seed=4)
    g = BoundedGraph.from_csr(G)
    bs = BoundedSearch(g)
    src = np.array([0, 0, 3, 7, 31, 31, 40, 59], np.int64)
    nt = bounded_search(g.indptr, g.indices, g.weights, g.delta, g.n_buckets, src, g.no_bound,
                        np.full(8, np.inf), bs._dist, bs._where, bs._nxt, bs._prv, bs._head, bs._touched)
    D = dijkstra(G, indices=src)
    touched = np.sort(bs._touched[:nt])
    np.testing.assert_array_equal(touched, np.flatnonzero(np.isfinite(D).any(axis=0)))
    np.testing.assert_array_equal(bs._dist[touched].T, D[:, touched])
    assert (bs._where[touched] == -1).all() and (bs._head == -1).all()
    reset_work(bs._dist, bs._where, bs._touched, nt)
    assert bs.is_clean() and (bs._where == UNTOUCHED).all()


# --- k-medoids consumers ------------------------------------------------------------------------

@pytest.mark.parametrize("seed,k", [(0, 1), (1, 2), (2, 5), (3, 9)])
def test_swap_gains_equal_dense_kernel(seed, k):
    G = _knn(150, seed=seed, k=4)
    n = G.shape[0]
    rng = np.random.default_rng(seed)
    D64 = dijkstra(G)
    D32 = D64.astype(np.float32)
    plan = make_plan(G)  # nodes in row order: the consumer must sort back to point order
    graph = BoundedGraph.from_plan(plan)
    bs = BoundedSearch(graph)
    total_full = 0
    for trial in range(3):
        medoids = rng.choice(n, k, replace=False)
        state = _swap_state(D64[medoids], medoids)
        cand = np.concatenate([rng.choice(n, 19), medoids[:1]])  # a medoid among the candidates
        ref_delta = np.empty(cand.size)
        ref_best = np.empty(cand.size, np.int64)
        kernels.swap_gains(D32[cand], cand, *state, ref_delta, ref_best)
        delta, best = bs.swap_gains(cand, state, graph.swap_bound(D64[medoids]))
        np.testing.assert_array_equal(delta, ref_delta)
        np.testing.assert_array_equal(best, ref_best)
        assert bs.is_clean()
        pruned = bs.last_touched
        # without pruning: the same numbers, more work
        delta2, best2 = bs.swap_gains(cand, state, graph.no_bound)
        np.testing.assert_array_equal(delta2, ref_delta)
        np.testing.assert_array_equal(best2, ref_best)
        total_full = bs.last_touched
        if k > 2:
            assert pruned < total_full


def test_member_costs_equal_dense_kernel():
    G = _knn(300, seed=7, k=4)
    n = G.shape[0]
    rng = np.random.default_rng(7)
    D64 = dijkstra(G)
    D32 = D64.astype(np.float32)
    k = 15
    medoids = rng.choice(n, k, replace=False)
    labels = np.argmin(D64[medoids], axis=0).astype(np.int64)
    labels[medoids] = np.arange(k)
    members = np.argsort(labels, kind="stable")
    seg_start = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))]).astype(np.int64)
    cand = rng.choice(n, 21)
    ref = np.empty(cand.size)
    kernels.medoid_costs(D32[cand], cand, labels, members, seg_start, ref)
    graph = BoundedGraph.from_plan(make_plan(G))
    bs = BoundedSearch(graph)
    np.testing.assert_array_equal(bs.member_costs(cand, labels, members, seg_start), ref)
    full = bs.last_touched
    # a radius just above each candidate's farthest member: local and still exact
    far = np.array([D64[c, members[seg_start[labels[c]]:seg_start[labels[c] + 1]]].max() for c in cand])
    radius = np.nextafter(far, np.inf)
    np.testing.assert_array_equal(bs.member_costs(cand, labels, members, seg_start, radius=radius), ref)
    assert bs.last_touched < full
    assert bs.is_clean()
    with pytest.raises(ValueError, match="beyond their search radius"):
        bs.member_costs(cand, labels, members, seg_start, radius=far)  # not strictly above
    assert bs.is_clean()


def test_reuse_and_threads_give_the_same_results():
    G = _knn(150, seed=11, k=4)
    n = G.shape[0]
    rng = np.random.default_rng(11)
    D64 = dijkstra(G)
    graph = BoundedGraph.from_csr(G)
    medoids = rng.choice(n, 4, replace=False)
    state = _swap_state(D64[medoids], medoids)
    bound = graph.swap_bound(D64[medoids])
    cand = np.arange(n)
    bs = BoundedSearch(graph)
    first = bs.swap_gains(cand, state, bound)
    for _ in range(3):
        bs.rows(rng.choice(n, 5), radius=rng.uniform(0, 2))
        again = bs.swap_gains(cand, state, bound)
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])
    results = [None, None]

    def work(i):
        results[i] = BoundedSearch(graph).swap_gains(cand, state, bound)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r[0], first[0])
        np.testing.assert_array_equal(r[1], first[1])


def test_input_errors():
    G = _knn(40, seed=2)
    bs = BoundedSearch(G)
    with pytest.raises(ValueError, match=r"ids in \[0, 40\)"):
        bs.rows([0, 40])
    with pytest.raises(ValueError, match="node_bound must be float64"):
        bs.rows([0], node_bound=np.ones(39))
    with pytest.raises(ValueError, match="one batch"):
        bs.touched(np.arange(9))
    with pytest.raises(ValueError, match="NaN"):
        bs.rows([0], radius=np.nan)
    with pytest.raises(ValueError, match="non-negative"):
        BoundedGraph.from_csr(-G)
    assert bs.is_clean()


# --- GPU twin -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make,seed", [(_knn, 0), (_two_components, 1)])
def test_gpu_bounded_rows_equal_cpu(make, seed):
    from rapids_geovq.gpu.cuda_bounded import DeviceBoundedGraph

    G = make(n=40, seed=seed) if make is _two_components else make(n=40, seed=seed, k=3)
    n = G.shape[0]
    rng = np.random.default_rng(seed)
    plan_like = BoundedGraph.from_csr(G)
    perm = rng.permutation(n)  # a renumbered graph: node i is point perm[i]
    H = sp.csr_matrix(G)[perm][:, perm].tocsr()
    H.sort_indices()
    graph = BoundedGraph._make(H.indptr, H.indices, H.data, plan_like.delta, plan_like.n_buckets,
                               perm.astype(np.int64))
    bs = BoundedSearch(graph)
    dg = DeviceBoundedGraph.from_plan(graph)
    sources = np.array([0, 3, 3, n - 1, 7, 21])
    D = dijkstra(G, indices=sources)
    np.testing.assert_array_equal(to_host(dg.rows(sources)), D.astype(np.float32))
    bound = _random_bounds(rng, D, n)
    radius = rng.uniform(0.2, 1.0, sources.size) * np.nanmax(np.where(np.isfinite(D), D, np.nan))
    radius[0] = np.inf
    cpu = bs.rows(sources, node_bound=graph.to_nodes(bound), radius=radius)
    assert (cpu != D.astype(np.float32)).any()  # the bounds cut some shortest paths
    for delta, lanes in ((None, 4), (0.3, 6)):  # two batches, then one, each with its own thresholds
        dgd = DeviceBoundedGraph.from_plan(graph, delta=delta)
        gpu = to_host(dgd.rows(sources, node_bound=dgd.to_nodes(bound), radius=radius, lanes=lanes))
        np.testing.assert_array_equal(gpu, cpu)


def test_gpu_bounded_rows_feed_dense_swap_kernel():
    from rapids_geovq.gpu.cuda_bounded import DeviceBoundedGraph
    from rapids_geovq.gpu.cuda_kmeans import CUDA_KERNELS
    from rapids_geovq.gpu.cuda_paths import device_module

    G = _knn(40, seed=5, k=3)
    n = G.shape[0]
    rng = np.random.default_rng(5)
    D64 = dijkstra(G)
    medoids = rng.choice(n, 4, replace=False)
    state = _swap_state(D64[medoids], medoids)
    cand = rng.choice(n, 6, replace=False)
    ref_delta, ref_best = np.empty(cand.size), np.empty(cand.size, np.int64)
    kernels.swap_gains(D64[cand].astype(np.float32), cand, *state, ref_delta, ref_best)
    dg = DeviceBoundedGraph(sp.csr_matrix(G).indptr, G.indices, G.data)
    bound = BoundedGraph.from_csr(G).swap_bound(D64[medoids])
    rows = dg.rows(cand, node_bound=device_module().asarray(bound))  # identity numbering: node = point
    delta, best = CUDA_KERNELS.swap_gains(CUDA_KERNELS.hold(rows), cand, 0, cand.size, state)
    np.testing.assert_array_equal(delta, ref_delta)
    np.testing.assert_array_equal(best, ref_best)
