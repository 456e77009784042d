"""Geodesic k-medoids without the n x n matrix: the same results as the dense fit where both score
the same candidates, exact distances everywhere, a fit that resumes where it was killed."""
import numpy as np
import pytest
from scipy.sparse.csgraph import dijkstra

from rapids_geovq import GeodesicKMeans, geodesic_matrix, kmeans_objective, knn_graph
from rapids_geovq.geodesic.execution import Execution
from rapids_geovq.geodesic.ondemand import OnDemandKMedoids
from rapids_geovq.geodesic.plan import make_plan
from rapids_geovq.geodesic.shards import DenseRows


def _data(kind, seed, n=400):
    rng = np.random.default_rng(seed)
    if kind == "blobs":
        centres = rng.normal(size=(6, 3)) * 6
        X = centres[rng.integers(0, 6, n)] + rng.normal(size=(n, 3))
    elif kind == "curve":
        t = rng.uniform(0, 4 * np.pi, n)
        X = np.c_[t * np.cos(t), t * np.sin(t), rng.normal(size=n) * 0.3]
    else:  # duplicates: zero-length edges and ties
        X = np.round(rng.normal(size=(n, 2)) * 4)
    return X


def _dense(G, K, **kw):
    D = geodesic_matrix(G, backend="numpy")
    return GeodesicKMeans(K, execution=Execution(backend="numpy", n_workers=2), **kw).fit(
        DenseRows(D, order=make_plan(G).order)), D


ALL = dict(update_candidates=None, swap_near=None, swap_far=None)


@pytest.mark.parametrize("kind, seed, K", [("blobs", 0, 7), ("curve", 1, 12), ("dups", 2, 9), ("blobs", 3, 1)])
def test_equal_to_the_dense_fit_when_scoring_every_candidate(kind, seed, K):
    G = knn_graph(_data(kind, seed), 6)
    dense, D = _dense(G, K, n_init=2, random_state=seed)
    od = OnDemandKMedoids(K, n_init=2, random_state=seed, execution=Execution(backend="numpy", n_workers=2),
                          **ALL).fit(G)
    np.testing.assert_array_equal(od.medoid_indices_, dense.medoid_indices_)
    np.testing.assert_array_equal(od.labels_, dense.labels_)
    assert od.inertia_ == dense.inertia_
    assert (od.n_iter_, od.n_swaps_) == (dense.n_iter_, dense.n_swaps_)
    # the medoid rows it keeps are the matrix's rows, exactly
    np.testing.assert_array_equal(od.medoid_rows_, D[od.medoid_indices_])


def test_restricted_candidates_stay_exact_and_close_to_the_dense_objective():
    G = knn_graph(_data("blobs", 4, n=1200), 8)
    dense, D = _dense(G, 16, n_init=1, random_state=0)
    od = OnDemandKMedoids(16, n_init=1, random_state=0, update_candidates=16, swap_near=16, swap_far=4,
                          execution=Execution(backend="numpy", n_workers=2)).fit(G)
    # its inertia is the true objective of its medoids (every distance it used is exact)
    assert od.inertia_ == pytest.approx(kmeans_objective(D, od.medoid_indices_), rel=1e-12)
    np.testing.assert_array_equal(od.medoid_rows_, D[od.medoid_indices_])
    # a sanity bound only: what the restriction costs at scale is measured in docs/ondemand.md
    assert od.inertia_ <= dense.inertia_ * 1.02
    # and it searched far fewer candidates than the dense scan has points
    assert od.searches_["swap_candidates"] < 1200 * max(dense.n_swaps_, 1)


def test_killed_fit_resumes_to_the_same_result(tmp_path, monkeypatch):
    from rapids_geovq.geodesic import ondemand

    G = knn_graph(_data("curve", 5, n=600), 6)
    kw = dict(n_init=2, random_state=3, update_candidates=12, swap_near=10, swap_far=3,
              execution=Execution(backend="numpy", n_workers=2))
    whole = OnDemandKMedoids(10, **kw).fit(G)
    real = ondemand._save_state
    for kill_after in (1, 3, 5):  # killed after seeding, inside the swaps, in the second restart
        calls = {"n": 0}

        def dying(path, key, state):
            real(path, key, state)
            calls["n"] += 1
            if calls["n"] == kill_after:
                raise KeyboardInterrupt  # the state is on disk, as when a job is killed right after

        monkeypatch.setattr(ondemand, "_save_state", dying)
        ck = tmp_path / f"state{kill_after}.npz"
        fit = OnDemandKMedoids(10, **kw)
        fit.checkpoint_seconds = 0.0  # save inside the swap phase as often as it can
        with pytest.raises(KeyboardInterrupt):
            fit.fit(G, checkpoint=ck)
        monkeypatch.setattr(ondemand, "_save_state", real)
        resumed = OnDemandKMedoids(10, **kw)
        resumed.checkpoint_seconds = 0.0
        resumed.fit(G, checkpoint=ck)
        np.testing.assert_array_equal(resumed.medoid_indices_, whole.medoid_indices_)
        np.testing.assert_array_equal(resumed.labels_, whole.labels_)
        assert resumed.inertia_ == whole.inertia_


def test_a_state_of_another_fit_is_not_used(tmp_path, caplog):
    G = knn_graph(_data("blobs", 6, n=300), 6)
    ck = tmp_path / "state.npz"
    ex = Execution(backend="numpy", n_workers=1)
    OnDemandKMedoids(5, n_init=1, random_state=0, execution=ex).fit(G, checkpoint=ck)
    other = OnDemandKMedoids(6, n_init=1, random_state=0, execution=ex).fit(G, checkpoint=ck)
    assert "another fit" in caplog.text
    assert other.medoid_indices_.size == 6
    ck.write_bytes(b"damaged")
    OnDemandKMedoids(5, n_init=1, random_state=0, execution=ex).fit(G, checkpoint=ck)
    assert "cannot read the saved k-medoids state" in caplog.text


def test_gpu_twin_on_the_simulator_equals_the_cpu_fit():
    from rapids_geovq.backends.cupy_backend import CupyBackend
    from rapids_geovq.gpu.device import simulated

    if not simulated():
        pytest.skip("runs on the simulator here; on a GPU the gpu-marked tests cover it")
    G = knn_graph(_data("blobs", 7, n=48), 4)
    kw = dict(n_init=1, random_state=1, update_candidates=5, swap_near=4, swap_far=1)
    cpu = OnDemandKMedoids(3, execution=Execution(backend="numpy", n_workers=1), **kw).fit(G)
    gpu = OnDemandKMedoids(3, execution=Execution(backend=CupyBackend(), n_workers=1), **kw).fit(G)
    np.testing.assert_array_equal(gpu.medoid_indices_, cpu.medoid_indices_)
    assert gpu.inertia_ == cpu.inertia_


def test_distances_are_exact_not_truncated():
    G = knn_graph(_data("curve", 8, n=500), 5)
    od = OnDemandKMedoids(6, n_init=1, random_state=2, execution=Execution(backend="numpy", n_workers=1)).fit(G)
    ref = dijkstra(G, indices=od.medoid_indices_).astype(np.float32)
    np.testing.assert_array_equal(od.medoid_rows_, ref)
