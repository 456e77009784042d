"""GPU kernels against their CPU twins.

Without a GPU these run on Numba's CUDA simulator (see conftest.py): the kernel source is the
one that runs on the device, its arithmetic is Python's float64. On a GPU they run there.
"""
import numpy as np
import pytest
from scipy.sparse.csgraph import dijkstra

from rapids_geovq.common.arrays import to_host
from rapids_geovq.common.graphs import symmetric_graph
from rapids_geovq.geodesic.execution import Execution
from rapids_geovq.geodesic.knn import knn_graph
from rapids_geovq.gpu.cuda_paths import DeviceGraph, batched_rows, device_module, geodesic_rows, simulated

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")


def _points(n, seed, d=3, dups=3):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d))
    Z[1 : 1 + dups] = Z[0]  # duplicates: zero-length edges
    return Z


def _ref(G, sources):
    return dijkstra(G, directed=True, indices=np.asarray(sources)).astype(np.float32)


@pytest.mark.parametrize("delta", [None, np.inf, 0.25])
def test_batched_rows_equal_scipy(delta):
    G = knn_graph(_points(48, 0), 4)
    sources = np.array([0, 1, 7, 7, 30, 47, 12])  # duplicates of a point, a repeated source
    got = to_host(geodesic_rows(G, sources, lanes=4, delta=delta))
    assert np.array_equal(got, _ref(G, sources))


def test_batched_rows_unreachable_and_integer_weights():
    rng = np.random.default_rng(1)
    # two components; integer weights make many equal-length paths (ties in every round)
    r = rng.integers(0, 20, 60)
    c = rng.integers(0, 20, 60)
    r2, c2 = r + 20, c + 20
    w = rng.integers(0, 4, 120).astype(np.float64)
    G = symmetric_graph(41, np.concatenate([r, r2]), np.concatenate([c, c2]), w)
    sources = np.array([0, 5, 25, 40])
    got = to_host(geodesic_rows(G, sources, lanes=3))
    ref = _ref(G, sources)
    assert np.isinf(ref).any() and np.array_equal(got, ref)


def test_batched_rows_fewer_threads_than_lanes_and_column_map():
    G = knn_graph(_points(30, 2), 3)
    G.sort_indices()
    xp = device_module()
    perm = np.random.default_rng(0).permutation(30)
    out = batched_rows(xp.asarray(G.indptr.astype(np.int64)), xp.asarray(G.indices), xp.asarray(G.data),
                       np.arange(5), xp.asarray(perm), threads=2)
    ref = _ref(G, np.arange(5))
    got = to_host(out)
    assert np.array_equal(got[:, perm], ref)


def test_device_graph_checks_inputs():
    G = knn_graph(_points(20, 3), 3)
    with pytest.raises(ValueError, match="non-negative"):
        DeviceGraph(G.indptr, G.indices, -G.data)
    dg = DeviceGraph(G.indptr, G.indices, G.data)
    with pytest.raises(ValueError, match=r"node ids in \[0, 20\)"):
        dg.rows([0, 20])
    with pytest.raises(ValueError, match="delta must be positive"):
        batched_rows(dg.indptr, dg.indices, dg.weights, [0], delta=0.0)


def test_kmeans_kernels_bit_equal_to_cpu():
    from rapids_geovq.cpu import kernels as cpu
    from rapids_geovq.gpu.cuda_kmeans import CUDA_KERNELS as gpu

    rng = np.random.default_rng(4)
    n, k = 40, 5
    block = (rng.random((12, n)) * 3).astype(np.float32)
    rows = rng.choice(n, 12, replace=False).astype(np.int64)
    labels = rng.integers(0, k, n).astype(np.int64)
    members = np.argsort(labels, kind="stable").astype(np.int64)
    seg = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))]).astype(np.int64)
    want = np.empty(12)
    cpu.medoid_costs(block, rows, labels, members, seg, want)
    block_t = gpu.hold(block)  # the device layout: transposed, (n, rows)
    assert block_t.shape == (n, 12)
    got = gpu.medoid_costs(block_t, rows, (labels, members, seg))
    assert np.array_equal(got, want)

    medoids = rng.choice(n, k, replace=False)
    sq = (rng.random((k, n)) * 3) ** 2
    near = np.argsort(sq, axis=0)
    n1, n2 = near[0].astype(np.int64), near[1].astype(np.int64)
    d1, d2 = sq[n1, np.arange(n)], sq[n2, np.arange(n)]
    removal = np.bincount(n1, weights=d2 - d1, minlength=k)
    is_medoid = np.zeros(n, np.bool_)
    is_medoid[medoids] = True
    is_medoid[rows[0]] = True
    state = (is_medoid, n1, d1, d2, removal)
    dw, bw = np.empty(12), np.empty(12, np.int64)
    cpu.swap_gains(block, rows, *state, dw, bw)
    dg, bg = gpu.swap_gains(block_t, rows, 0, 12, state)
    assert np.array_equal(dg, dw) and np.array_equal(bg, bw) and np.isinf(dg[0])
    # a task on part of the shard reads the same rows
    dp, bp = gpu.swap_gains(block_t, rows, 3, 9, state)
    assert np.array_equal(dp, dw[3:9]) and np.array_equal(bp, bw[3:9])


def test_cuda_shards_and_kmeans_equal_cpu(tmp_path):
    """The geodesic stage's GPU method writes the same shard files, keeps the shards on the device,
    and geodesic k-means over them picks the same medoids as over the CPU shards."""
    from rapids_geovq.backends.cupy_backend import CupyBackend
    from rapids_geovq.geodesic.engine import ThreadEngine, hold_matrix
    from rapids_geovq.geodesic.kmeans import GeodesicKMeans
    from rapids_geovq.geodesic.shortest_paths import geodesic_row_shards
    from rapids_geovq.gpu.cuda_kmeans import CUDA_KERNELS
    from rapids_geovq.gpu.cuda_paths import CudaPaths

    # the CuPy backend's objects, without its check for a real GPU (the simulator stands in)
    gpu_backend = CupyBackend()
    G = knn_graph(_points(36, 5, d=2), 4)
    kw = dict(n_init=2, random_state=3)
    with ThreadEngine(1) as eng:
        gpu_D = geodesic_row_shards(G, tmp_path / "gpu", shard_rows=16, engine=eng, method=CudaPaths(), progress=False)
        cpu_D = geodesic_row_shards(G, tmp_path / "cpu", shard_rows=16, method="numba", backend="numpy", progress=False)
        for a, b in zip(gpu_D.arrays, cpu_D.arrays):
            assert np.array_equal(a, b)
        assert gpu_D.held.count_on_device() == len(gpu_D.shards)
        km_gpu = GeodesicKMeans(4, execution=Execution(backend=gpu_backend, engine=eng, block_rows=5), **kw).fit(gpu_D)
    km_cpu = GeodesicKMeans(4, execution=Execution(backend="numpy", n_workers=2, block_rows=5), **kw).fit(cpu_D)
    # a resumed run: the shard directory opened again and copied back to the device
    from rapids_geovq.geodesic.shortest_paths import load_row_shards

    with ThreadEngine(1) as eng:
        R = hold_matrix(eng, load_row_shards(tmp_path / "gpu"), kernels=CUDA_KERNELS)
        assert R.count_on_device() == len(R.rows) and not R.file_backed
        km_resumed = GeodesicKMeans(4, execution=Execution(backend=gpu_backend, engine=eng, block_rows=5), **kw).fit(R)
        # and the k-medoids fit itself puts reopened shards on the device for a GPU backend
        km_reopened = GeodesicKMeans(4, execution=Execution(backend=gpu_backend, engine=eng, block_rows=5), **kw).fit(
            load_row_shards(tmp_path / "gpu"))
    assert np.array_equal(km_reopened.medoid_indices_, km_cpu.medoid_indices_)
    assert np.array_equal(km_resumed.medoid_indices_, km_cpu.medoid_indices_)
    assert np.array_equal(km_gpu.medoid_indices_, km_cpu.medoid_indices_)
    assert np.array_equal(km_gpu.labels_, km_cpu.labels_)
    assert km_gpu.inertia_ == km_cpu.inertia_ and km_gpu.n_swaps_ == km_cpu.n_swaps_


def test_worker_side_swaps_on_device_shards_equal_cpu(tmp_path):
    """The Dask path's worker-side scan (a task swaps in what it finds on its process's copy of the
    swap state and scans on) over shards held on the device, with the GPU swap kernels: the same
    medoids as the CPU's driver-applied scan. (An engine of threads that scans as Dask workers do.)"""
    from rapids_geovq.backends.cupy_backend import CupyBackend
    from rapids_geovq.geodesic.engine import ThreadEngine
    from rapids_geovq.geodesic.kmeans import GeodesicKMeans
    from rapids_geovq.geodesic.shortest_paths import geodesic_row_shards
    from rapids_geovq.gpu.cuda_paths import CudaPaths

    class WorkerSwapsThreads(ThreadEngine):
        applies_swaps_on_workers = True

    G = knn_graph(_points(40, 6, d=2), 4)
    kw = dict(n_init=2, random_state=1)
    cpu_D = geodesic_row_shards(G, tmp_path / "cpu", shard_rows=16, method="numba", backend="numpy", progress=False)
    km_cpu = GeodesicKMeans(5, execution=Execution(backend="numpy", n_workers=1, block_rows=3), **kw).fit(cpu_D)
    with WorkerSwapsThreads(1) as eng:  # the simulator runs one kernel at a time
        gpu_D = geodesic_row_shards(G, tmp_path / "gpu", shard_rows=16, engine=eng, method=CudaPaths(), progress=False)
        assert gpu_D.held.count_on_device() == len(gpu_D.shards) and not gpu_D.held.file_backed
        ex = Execution(backend=CupyBackend(), engine=eng, block_rows=16)
        km_gpu = GeodesicKMeans(5, execution=ex, **kw).fit(gpu_D)
    assert km_cpu.n_swaps_ > 0
    assert np.array_equal(km_gpu.medoid_indices_, km_cpu.medoid_indices_)
    assert np.array_equal(km_gpu.labels_, km_cpu.labels_)
    assert km_gpu.inertia_ == km_cpu.inertia_ and km_gpu.n_swaps_ == km_cpu.n_swaps_


def test_simulator_or_gpu():
    """Where no GPU is visible the kernels ran on the simulator, never silently skipped."""
    from pathlib import Path

    assert simulated() == (not any(Path("/dev").glob("nvidia[0-9]*")))


@pytest.mark.gpu
def test_dask_cuda_workers_hold_shards_on_their_gpus(tmp_path):
    """dask-cuda: one worker per GPU computes and keeps its shards there; k-means reduces over them
    and matches the CPU engine."""
    pytest.importorskip("dask_cuda")
    if simulated():
        pytest.skip("needs a GPU")
    from rapids_geovq.geodesic.engine import connect
    from rapids_geovq.geodesic.kmeans import GeodesicKMeans
    from rapids_geovq.geodesic.shortest_paths import geodesic_row_shards

    G = knn_graph(_points(400, 6, d=4), 6)
    with connect("local-cuda") as eng:
        D = geodesic_row_shards(G, tmp_path / "gpu", shard_rows=64, engine=eng, method="cuda", backend="cupy",
                                progress=False)
        assert D.held.count_on_device() == len(D.shards)
        km = GeodesicKMeans(8, n_init=2, random_state=0,
                            execution=Execution(backend="cupy", engine=eng, block_rows=256)).fit(D)
    cpu_D = geodesic_row_shards(G, tmp_path / "cpu", shard_rows=64, backend="numpy", progress=False)
    km_cpu = GeodesicKMeans(8, n_init=2, random_state=0, execution=Execution(backend="numpy", n_workers=2)).fit(cpu_D)
    assert np.array_equal(km.medoid_indices_, km_cpu.medoid_indices_) and km.inertia_ == km_cpu.inertia_
