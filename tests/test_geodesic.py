"""Geodesic stage against SciPy, scikit-learn's Isomap, brute force and FasterPAM."""
import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra, shortest_path
from sklearn.manifold import Isomap
from sklearn.neighbors import kneighbors_graph

from rapids_geovq import (
    DisconnectedGraphError,
    GeodesicKMeans,
    GeodesicQuantizer,
    exact_knn,
    geodesic_matrix,
    geodesic_row_shards,
    kmeans_objective,
    knn_graph,
    load_row_shards,
)
from rapids_geovq.geodesic.execution import Execution
from rapids_geovq.geodesic.shards import ShardError


def ex(**kw):
    """Execution settings on the NumPy backend (results never depend on them)."""
    return Execution(backend="numpy", **kw)


@pytest.fixture(scope="module")
def dask_engine():
    """A Dask LocalCluster with two single-threaded worker processes."""
    from rapids_geovq.geodesic.engine import connect

    engine = connect("local", 2)
    yield engine
    engine.close()


def points_with_duplicates(seed=0, n=300, d=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[11] = X[10]
    X[12] = X[10]
    X[n - 1] = X[n - 2]
    return X


def two_far_clusters(seed=1):
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(size=(120, 3)), rng.normal(size=(80, 3)) + 40.0])


def isomap_dist(X, k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Isomap(n_neighbors=k, n_components=2).fit(X).dist_matrix_


# -- kNN graph ------------------------------------------------------------------------------------

def test_knn_graph_is_symmetric_and_keeps_zero_edges():
    X = points_with_duplicates()
    G = knn_graph(X, 6)
    assert sp.issparse(G) and G.shape == (300, 300)
    assert abs(G - G.T).max() == 0
    # the duplicate pair is joined by an explicit zero-length edge, not dropped
    row = G.getrow(10)
    assert 11 in row.indices and row[0, 11] == 0.0
    # every point has at least its k neighbours
    assert (np.diff(G.indptr) >= 6).all()


def test_exact_knn_matches_brute_force_and_excludes_self_but_not_duplicates():
    X = points_with_duplicates(n=80)
    dist, ind = exact_knn(X, 5)
    full = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    np.fill_diagonal(full, np.inf)
    ref = np.sort(full, axis=1)[:, :5]
    np.testing.assert_allclose(dist, ref, rtol=0, atol=1e-12)
    assert not (ind == np.arange(80)[:, None]).any()
    assert 11 in ind[10] and 12 in ind[10] and dist[10, 0] == 0.0


def test_knn_graph_rejects_nan_latents():
    X = points_with_duplicates(n=50)
    X[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn_graph(X, 5)


def test_knn_graph_disconnected_error_and_repair():
    X = two_far_clusters()
    with pytest.raises(DisconnectedGraphError, match="2 connected components"):
        knn_graph(X, 5, disconnected="error")
    G, info = knn_graph(X, 5, return_info=True)
    assert info.n_components == 2 and info.added_edges == 1
    assert info.component_sizes == (120, 80)


# -- shortest paths -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [points_with_duplicates, two_far_clusters])
def test_geodesic_matrix_equals_scipy_and_isomap(make):
    X = make()
    k = 6
    D = geodesic_matrix(knn_graph(X, k))
    assert D.dtype == np.float32 and D.shape == (len(X), len(X))
    iso = isomap_dist(X, k)
    np.testing.assert_allclose(D, iso.astype(np.float32), rtol=1e-6, atol=1e-5)
    if make is points_with_duplicates:
        ref = shortest_path(kneighbors_graph(X, k, mode="distance"), directed=False)
        np.testing.assert_allclose(D, ref.astype(np.float32), rtol=1e-6, atol=1e-5)
        assert D[10, 11] == 0 and D[10, 12] == 0 and D[298, 299] == 0
    assert np.isfinite(D).all()


def test_geodesic_matrix_refuses_disconnected_graph():
    X = two_far_clusters()
    from sklearn.neighbors import kneighbors_graph as kg

    G = kg(X, 5, mode="distance")
    G = G.maximum(G.T)
    with pytest.raises(ValueError, match="connected components"):
        geodesic_matrix(G)


def test_row_shards_equal_in_memory_and_resume(tmp_path):
    X = points_with_duplicates(n=200)
    G = knn_graph(X, 5)
    D = geodesic_matrix(G)
    S = geodesic_row_shards(G, tmp_path / "geo", shard_rows=64, n_workers=1, progress=False)
    assert len(S.shards) == 4
    np.testing.assert_array_equal(S.to_array(), D)
    np.testing.assert_array_equal(S.take_rows([199, 0, 64, 63]), D[[199, 0, 64, 63]])
    blocks = list(S.row_blocks(50))
    assert all(b.shape[0] <= 50 for _, b in blocks)
    for ids, b in blocks:
        np.testing.assert_array_equal(b, D[ids])
    np.testing.assert_array_equal(np.sort(np.concatenate([ids for ids, _ in blocks])), np.arange(200))

    # a truncated shard is detected and recomputed, the others are kept
    shard = tmp_path / "geo" / S.shards[1].path
    untouched = tmp_path / "geo" / S.shards[2].path
    mtime = untouched.stat().st_mtime_ns
    shard.write_bytes(shard.read_bytes()[:1000])
    S2 = geodesic_row_shards(G, tmp_path / "geo", shard_rows=64, n_workers=1, progress=False)
    np.testing.assert_array_equal(S2.to_array(), D)
    assert untouched.stat().st_mtime_ns == mtime


def test_row_shards_with_two_threads_and_two_dask_workers(tmp_path, dask_engine):
    X = points_with_duplicates(n=150)
    G = knn_graph(X, 5)
    ref = dijkstra(G).astype(np.float32)
    S = geodesic_row_shards(G, tmp_path / "geo", shard_rows=40, n_workers=2, progress=False)
    np.testing.assert_array_equal(S.to_array(), ref)
    S2 = geodesic_row_shards(G, tmp_path / "geo2", shard_rows=40, engine=dask_engine, progress=False)
    np.testing.assert_array_equal(S2.to_array(), ref)
    # the shards stay on the workers that computed them; rows come back on request
    assert len(set(S2.held.owners)) == 2
    np.testing.assert_array_equal(S2.held.take_rows([149, 0, 77]), ref[[149, 0, 77]])
    for a, b in zip(S.shards, S2.shards):
        assert a.crc32 == b.crc32


def _graph_with_zero_and_tiny_weights(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, 3))
    X[20:25] = X[19]  # duplicates: zero-length edges
    X[30] = X[29] + 1e-9  # a tiny positive edge widens the bucket array to its cap
    return knn_graph(X, 5)


@pytest.mark.parametrize("seed", range(3))
def test_kernel_equals_scipy_dijkstra_exactly(seed):
    G = _graph_with_zero_and_tiny_weights(seed)
    ref = dijkstra(G).astype(np.float32)
    for method in ("numba", "scipy"):
        D = geodesic_matrix(G, method=method)
        np.testing.assert_array_equal(D, ref)  # bit-identical float32
    # a weighted random graph with heterogeneous weights, too
    rng = np.random.default_rng(100 + seed)
    A = sp.random(300, 300, density=0.03, random_state=seed, data_rvs=lambda k: rng.exponential(size=k)).tocsr()
    A = A.maximum(A.T) + sp.diags(np.ones(299), 1, shape=(300, 300))  # a path keeps it connected
    A = A.maximum(A.T).tocsr()
    np.testing.assert_array_equal(geodesic_matrix(A), dijkstra(A).astype(np.float32))


def test_resource_estimates_refuse_with_settings_that_fit(tmp_path, monkeypatch):
    from rapids_geovq.common import resources as res
    from rapids_geovq.cpu.paths import NumbaPaths

    G = knn_graph(points_with_duplicates(n=120), 5)
    monkeypatch.setattr(res, "available_memory_bytes", lambda: 120 * 120 * 4 // 2)
    with pytest.raises(res.ResourceError, match="row shards on disk"):
        geodesic_matrix(G)
    monkeypatch.undo()
    Usage = type("Usage", (), {})
    usage = Usage()
    usage.free = 100 * 120 * 4  # room for 100 of 120 rows
    monkeypatch.setattr(res.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(res.ResourceError, match=r"at most 109 points \(data.n_train"):
        geodesic_row_shards(G, tmp_path / "geo", shard_rows=40, n_workers=1, progress=False)
    assert not list((tmp_path / "geo").glob("rows_*.npy"))  # refused before writing any shard
    est = res.estimate_resources(60000, 845114, n_workers=2, work_bytes=NumbaPaths.work_bytes(60000))
    assert est["disk"] == 60000**2 * 4 and est["per_worker"] < 2**30


def test_unreachable_cluster_gives_clear_error(tmp_path):
    from rapids_geovq.geodesic.engine import EngineError, connect

    with pytest.raises(EngineError, match="scheduler file .* does not exist"):
        connect(str(tmp_path / "scheduler.json"))


def test_corrupt_shard_or_manifest_gives_clear_error(tmp_path):
    G = knn_graph(points_with_duplicates(n=60), 5)
    geodesic_row_shards(G, tmp_path / "geo", shard_rows=32, n_workers=1, progress=False)
    # a flipped byte keeps the shape: only the checksum catches it
    shard = tmp_path / "geo" / "rows_0000032_0000060.npy"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    load_row_shards(tmp_path / "geo")  # without verification it opens
    with pytest.raises(ShardError, match="checksum"):
        load_row_shards(tmp_path / "geo", verify=True)
    (tmp_path / "geo" / "rows_0000000_0000032.npy").write_bytes(b"garbage")
    with pytest.raises(ShardError, match="rows_0000000_0000032.npy"):
        load_row_shards(tmp_path / "geo")
    manifest = tmp_path / "geo" / "manifest.json"
    manifest.write_text('{"n": 60, "dtype": "<f4", "shards": [{"begin": 0}]}')
    with pytest.raises(ShardError, match="cannot open geodesic shards"):
        load_row_shards(tmp_path / "geo")


# -- geodesic k-means -----------------------------------------------------------------------------

def test_swap_gains_equal_brute_force_swap_deltas():
    from rapids_geovq.cpu.kernels import swap_gains

    rng = np.random.default_rng(0)
    for _ in range(8):
        X = rng.normal(size=(60, 3))
        X[5] = X[4]
        D = geodesic_matrix(knn_graph(X, 4))
        K = 5
        km = GeodesicKMeans(K, execution=ex(block_rows=16))
        med = rng.choice(60, K, replace=False)
        rows = D[med].astype(np.float64) ** 2
        (is_medoid, n1, d1, d2, removal), _ = km._swap_state(rows, med)
        cand = np.arange(60)
        delta, best = np.empty(60), np.empty(60, np.int64)
        swap_gains(D, cand, is_medoid, n1, d1, d2, removal, delta, best)
        assert np.isinf(delta[med]).all()
        base = kmeans_objective(D, med)
        for i, x in enumerate(cand):
            if x in med:
                continue
            brute = [kmeans_objective(D, np.where(np.arange(K) == j, x, med)) - base for j in range(K)]
            assert delta[i] == pytest.approx(min(brute), abs=1e-9)
            assert brute[best[i]] == pytest.approx(min(brute), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_equals_brute_force_on_tiny_sets(seed):
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(11, 2))
    D = geodesic_matrix(knn_graph(Y, 3))
    K = 3
    best = min(kmeans_objective(D, c) for c in itertools.combinations(range(11), K))
    km = GeodesicKMeans(K, n_init=10, random_state=seed).fit(D)
    assert km.inertia_ == pytest.approx(best, rel=1e-12)
    assert km.inertia_ == pytest.approx(kmeans_objective(D, km.medoid_indices_), rel=1e-12)
    # labels are the nearest medoid
    np.testing.assert_array_equal(km.labels_, np.argmin(D[km.medoid_indices_], axis=0))


def test_kmeans_no_worse_than_fasterpam():
    kmedoids = pytest.importorskip("kmedoids")
    from sklearn.datasets import make_blobs

    Z, _ = make_blobs(n_samples=2000, centers=10, n_features=5, cluster_std=1.5, random_state=0)
    D = geodesic_matrix(knn_graph(Z, 10))
    fp = kmedoids.fasterpam(D.astype(np.float64) ** 2, 16, random_state=0)
    km = GeodesicKMeans(16, random_state=0).fit(D)
    assert km.inertia_ <= fp.loss * (1 + 1e-12)
    # and the swap phase matters: alternating iterations alone end higher
    alt = GeodesicKMeans(16, swap=False, random_state=0).fit(D)
    assert km.inertia_ < alt.inertia_


def test_kmeans_same_result_in_memory_and_sharded(tmp_path):
    from rapids_geovq.geodesic.shards import DenseRows

    X = points_with_duplicates(n=300)
    G = knn_graph(X, 6)
    D = geodesic_matrix(G)
    S = geodesic_row_shards(G, tmp_path / "geo", shard_rows=70, n_workers=1, progress=False)
    # the swap scan follows the matrix's row order; the same order gives the same result
    a = GeodesicKMeans(8, random_state=3, execution=ex(block_rows=32, n_workers=1)).fit(DenseRows(D, order=S.order))
    b = GeodesicKMeans(8, random_state=3, execution=ex(block_rows=64, n_workers=2)).fit(S)
    np.testing.assert_array_equal(a.medoid_indices_, b.medoid_indices_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_


def test_kmeans_identical_with_dask_workers_and_without_cluster(tmp_path, dask_engine):
    from sklearn.datasets import make_blobs

    Z, _ = make_blobs(n_samples=900, centers=8, n_features=4, cluster_std=1.5, random_state=1)
    G = knn_graph(Z, 8)
    S = geodesic_row_shards(G, tmp_path / "geo", shard_rows=100, engine=dask_engine, progress=False)
    kw = dict(random_state=5, n_init=2)
    on_dask = GeodesicKMeans(12, execution=ex(engine=dask_engine, block_rows=32), **kw).fit(S)  # shards where computed
    reopened = GeodesicKMeans(12, execution=ex(engine=dask_engine, block_rows=32), **kw).fit(
        load_row_shards(tmp_path / "geo"))
    no_cluster = GeodesicKMeans(12, execution=ex(n_workers=1, block_rows=32), **kw).fit(load_row_shards(tmp_path / "geo"))
    threads = GeodesicKMeans(12, execution=ex(n_workers=3, block_rows=32), **kw).fit(load_row_shards(tmp_path / "geo"))
    assert on_dask.n_swaps_ > 0
    for other in (reopened, no_cluster, threads):
        np.testing.assert_array_equal(other.medoid_indices_, on_dask.medoid_indices_)
        np.testing.assert_array_equal(other.labels_, on_dask.labels_)
        assert other.inertia_ == on_dask.inertia_


def _count_block_swaps(monkeypatch):
    """Record, per swap task the driver used, how many swaps it reported."""
    from rapids_geovq.geodesic import kmeans as K

    seen = []
    real = K.DenseSource.swap_result

    def counting(self, fut):
        hits, scanned = real(self, fut)
        seen.append(len(hits))
        return hits, scanned

    monkeypatch.setattr(K.DenseSource, "swap_result", counting)
    return seen


def test_dask_workers_apply_swaps_themselves_with_identical_results(tmp_path, dask_engine, monkeypatch):
    """On a Dask engine a swap task applies the swaps it finds and scans on to the end of its
    block (several swaps per round trip, across shard ends where the shards are files any worker
    can open); the swaps are still those of a one-at-a-time scan. Shard files: the workers read new
    medoid rows from them. In-memory shards: the rows travel with the tasks."""
    from sklearn.datasets import make_blobs

    Z, _ = make_blobs(n_samples=1200, centers=10, n_features=4, cluster_std=2.0, random_state=3)
    G = knn_graph(Z, 8)
    S = geodesic_row_shards(G, tmp_path / "geo", shard_rows=400, n_workers=1, progress=False)
    kw = dict(random_state=2, n_init=2)
    ref = GeodesicKMeans(16, execution=ex(n_workers=2, block_rows=16), **kw).fit(load_row_shards(tmp_path / "geo"))
    assert dask_engine.applies_swaps_on_workers
    seen = _count_block_swaps(monkeypatch)
    # blocks of 300 candidates over shards of 400 rows: a task scans on into the next shard's file
    files = GeodesicKMeans(16, execution=ex(engine=dask_engine, block_rows=300), **kw).fit(S)
    assert max(seen) > 1  # some block swapped several medoids in one round trip
    assert ref.n_swaps_ > 0
    from rapids_geovq.geodesic.shards import DenseRows

    memory = GeodesicKMeans(16, execution=ex(engine=dask_engine, block_rows=400), **kw).fit(
        DenseRows(geodesic_matrix(G), order=S.order))
    for other in (files, memory):
        np.testing.assert_array_equal(other.medoid_indices_, ref.medoid_indices_)
        np.testing.assert_array_equal(other.labels_, ref.labels_)
        assert other.inertia_ == ref.inertia_
        assert other.n_swaps_ == ref.n_swaps_


def test_swaps_applied_by_threads_sharing_one_process_equal_the_driver_s(tmp_path, monkeypatch):
    """The worker-side scan on threads of one process: tasks running at once each take their own
    copy of the swap state, and a task whose process holds no copy as far along as its log starts
    is answered 'behind' and sent more; results equal the driver-applied scan's."""
    from rapids_geovq.geodesic import swaps as K
    from rapids_geovq.geodesic.engine import ThreadEngine

    class WorkerSwapsThreads(ThreadEngine):
        applies_swaps_on_workers = True

    Z = points_with_duplicates(n=500)
    S = geodesic_row_shards(knn_graph(Z, 6), tmp_path / "geo", shard_rows=100, n_workers=1, progress=False)
    kw = dict(random_state=1, n_init=2)
    ref = GeodesicKMeans(10, execution=ex(n_workers=1, block_rows=16), **kw).fit(S)
    behind = []
    real = K.SwapStates.take

    def take(self, token, init, log_from):
        try:
            return real(self, token, init, log_from)
        except K.Behind:
            behind.append(log_from)
            raise

    monkeypatch.setattr(K.SwapStates, "take", take)
    with WorkerSwapsThreads(3) as eng:
        got = GeodesicKMeans(10, execution=ex(engine=eng, block_rows=50), **kw).fit(load_row_shards(tmp_path / "geo"))
    np.testing.assert_array_equal(got.medoid_indices_, ref.medoid_indices_)
    np.testing.assert_array_equal(got.labels_, ref.labels_)
    assert got.inertia_ == ref.inertia_
    assert behind  # three threads, one process: some task found no copy far enough along


def test_worker_swap_state_catches_up_and_undoes_its_own_swaps(tmp_path):
    """A worker's swap state after log entries (rows sent, or read from the shard files) equals
    the driver's; a scan's own swaps are undone exactly; states of old phases are let go."""
    from rapids_geovq.geodesic import swaps as K

    Z = points_with_duplicates(n=240)
    S = geodesic_row_shards(knn_graph(Z, 6), tmp_path / "geo", shard_rows=80, n_workers=1, progress=False)
    D = geodesic_matrix(knn_graph(Z, 6))
    files = [(str(tmp_path / "geo" / info.path), info.crc32) for info in S.shards]
    rng = np.random.default_rng(0)
    k = 7
    med = rng.choice(240, k, replace=False)
    rows = D[med].astype(np.float64) ** 2
    st = K.WorkerSwapState(med, rows, k, files)
    before = (st.medoids.copy(), st.rows.copy(), [a.copy() for a in st.state])
    # a scan's own swaps, then undone
    snap, changed = st.snapshot(), {}
    for _ in range(5):
        m, x = int(rng.integers(k)), int(rng.choice(np.setdiff1d(np.arange(240), st.medoids)))
        changed.setdefault(m, st.rows[m].copy())
        st.apply(m, x, D[x].astype(np.float32))
    st.restore(snap, changed)
    np.testing.assert_array_equal(st.medoids, before[0])
    np.testing.assert_array_equal(st.rows, before[1])
    for got, want in zip(st.state, before[2]):
        np.testing.assert_array_equal(got, want)
    # the driver's log: one entry with its row, one naming the row's place in the shard files
    x1, x2 = [int(v) for v in np.setdiff1d(np.arange(240), med)[:2]]
    shard_of = {int(r): (i, j) for i, rs in enumerate(S.shard_rows) for j, r in enumerate(rs)}
    log = [(0, x1, D[x1].astype(np.float32)), (3, x2, shard_of[x2])]
    st.catch_up(0, log)
    st.catch_up(1, log[1:])  # entries it already holds are skipped
    assert st.n_applied == 2
    want_med = med.copy()
    want_med[0], want_med[3] = x1, x2
    want_rows = D[want_med].astype(np.float64) ** 2
    fresh, _ = K.swap_state(want_rows, want_med, k)
    np.testing.assert_array_equal(st.rows, want_rows)
    for got, want in zip(st.state, fresh):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(K.Behind):
        st.catch_up(3, [])
    pool = K.SwapStates()
    init = (med, rows, k, None)
    with pytest.raises(K.Behind):
        pool.take("a", init, 1)  # no state of phase "a" here yet, and the log does not start at 0
    a = pool.take("a", init, 0)
    a.n_applied = 4
    pool.give_back("a", a)
    assert pool.take("a", init, 3) is a
    pool.give_back("a", a)
    pool.take("b", init, 0)
    pool.take("c", init, 0)  # two phases kept: "a" is let go
    with pytest.raises(K.Behind):
        pool.take("a", init, 3)


def test_dask_rows_read_from_the_shard_files_equal_the_workers_rows(tmp_path, dask_engine):
    """The driver reads medoid rows from the shard files where it can (no round trip per shard):
    the same rows the workers hold."""
    from rapids_geovq.geodesic.engine import take_local

    Z = points_with_duplicates(n=250)
    S = geodesic_row_shards(knn_graph(Z, 6), tmp_path / "geo", shard_rows=60, engine=dask_engine, progress=False)
    R = S.held
    want = geodesic_matrix(knn_graph(Z, 6))
    idx = np.array([0, 249, 61, 11, 10, 130])
    assert R._readable_files() is not None  # a LocalCluster on this machine: the files are here
    np.testing.assert_array_equal(R.take_rows(idx), want[idx])
    by_task = np.stack([dask_engine.gather([R.submit(int(R._shard_of[i]), take_local, R._local[[i]])])[0][0]
                        for i in idx])
    np.testing.assert_array_equal(R.take_rows(idx), by_task)


def test_kmeans_errors():
    D = geodesic_matrix(knn_graph(points_with_duplicates(n=30), 4))
    with pytest.raises(ValueError, match="more than the 30 points"):
        GeodesicKMeans(31).fit(D)
    bad = D.copy()
    bad[3, 5] = np.nan
    bad[0, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        GeodesicKMeans(3).fit(bad)
    with pytest.raises(ValueError, match="square"):
        GeodesicKMeans(3).fit(D[:10])


def test_kmeans_with_many_duplicates_has_no_empty_cluster():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 2))
    X = np.repeat(base, 5, axis=0)  # 30 points, 6 distinct locations
    D = geodesic_matrix(knn_graph(X, 6))
    km = GeodesicKMeans(6, n_init=2, random_state=0).fit(D)
    assert np.bincount(km.labels_, minlength=6).min() > 0
    assert km.inertia_ == pytest.approx(0.0, abs=1e-12)
    # more clusters than distinct points still fills every cluster
    km = GeodesicKMeans(8, random_state=0).fit(D)
    assert np.bincount(km.labels_, minlength=8).min() > 0


# -- Geo-VQ ---------------------------------------------------------------------------------------

def test_geodesic_quantizer_matches_definition():
    X = points_with_duplicates(n=200)
    G = knn_graph(X, 5)
    D = geodesic_matrix(G)
    km = GeodesicKMeans(6, random_state=0).fit(D)
    gq = GeodesicQuantizer(X, km.medoid_indices_, D[:, km.medoid_indices_], k=5)
    rng = np.random.default_rng(9)
    Q = rng.normal(size=(40, 5))
    dist = gq.distances(Q)
    for i in range(0, 40, 7):
        e = np.sqrt(((X - Q[i]) ** 2).sum(1))
        nb = np.argsort(e, kind="stable")[:5]
        ref = (e[nb][:, None] + D[nb][:, km.medoid_indices_]).min(0)
        np.testing.assert_allclose(dist[i], ref, rtol=1e-6)
    codes = gq.encode(Q)
    assert codes.shape == (40,) and codes.max() < 6
    assert gq.decode(codes).shape == (40, 5)
    # a training point's geodesic code agrees with its k-means label for most points
    assert (gq.encode(X[:100]) == km.labels_[:100]).mean() > 0.9


def test_kernel_compilation_leaves_numba_config_alone():
    from numba.core import config

    before = config.SLP_VECTORIZE
    G = knn_graph(points_with_duplicates(n=40), 4)
    np.testing.assert_array_equal(geodesic_matrix(G, n_workers=1), dijkstra(G).astype(np.float32))
    assert config.SLP_VECTORIZE == before


def test_shards_of_another_shard_size_and_half_written_files_are_removed(tmp_path):
    G = knn_graph(points_with_duplicates(n=100), 5)
    geodesic_row_shards(G, tmp_path / "geo", shard_rows=40, n_workers=1, progress=False)
    (tmp_path / "geo" / "rows_0000000_0000030.npy.123-abcd.tmp").write_bytes(b"partial")
    S = geodesic_row_shards(G, tmp_path / "geo", shard_rows=30, n_workers=1, progress=False)
    names = sorted(p.name for p in (tmp_path / "geo").glob("rows_*.npy"))
    assert names == [s.path for s in S.shards] and len(names) == 4
    assert not list((tmp_path / "geo").glob("*.tmp"))
    np.testing.assert_array_equal(S.to_array(), dijkstra(G).astype(np.float32))
