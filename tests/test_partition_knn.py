"""Tests for rapids_geovq.cpu.partition_knn: the same neighbours, bit for bit, as exact_knn."""
from __future__ import annotations

import numpy as np
import pytest

from rapids_geovq.cpu.partition_knn import KnnStats, default_n_clusters, partition_knn
from rapids_geovq.geodesic.knn import exact_knn


def _same(Z, k, **kw):
    """partition_knn equals the reference: same indices, bit-equal distances."""
    d0, i0 = exact_knn(Z, k)
    d1, i1 = partition_knn(Z, k, **kw)
    assert d1.dtype == np.float64 and i1.dtype == np.int64
    assert d1.shape == i1.shape == (len(Z), k)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1.view(np.int64), d0.view(np.int64))
    return d1, i1


@pytest.mark.parametrize("d", [2, 5, 20])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_points(d, dtype):
    Z = np.random.default_rng(d).standard_normal((1500, d)).astype(dtype)
    _same(Z, 10)
    _same(Z, 3, n_clusters=40)


def test_clustered_points_of_different_spreads():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((12, 20)) * 6
    spread = rng.uniform(0.05, 2.0, 12)
    lab = rng.integers(0, 12, 3000)
    Z = (centres[lab] + rng.standard_normal((3000, 20)) * spread[lab, None]).astype(np.float32)
    _same(Z, 10, n_clusters=60)
    _same(Z, 25)


def test_exact_duplicates_are_neighbours_but_a_point_is_not_its_own():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((300, 8))
    Z = np.concatenate([base, base[:100], base[:50], base[:10]])  # up to four copies
    Z = Z[rng.permutation(len(Z))]
    d, i = _same(Z, 5, n_clusters=20)
    assert not np.any(i == np.arange(len(Z))[:, None])
    _, inverse, counts = np.unique(Z, axis=0, return_inverse=True, return_counts=True)
    has_copy = counts[inverse.ravel()] > 1
    np.testing.assert_array_equal(d[:, 0] == 0.0, has_copy)  # 260 rows: the copies of base[:100]
    assert has_copy.sum() == 260


def test_ties_on_an_integer_lattice():
    rng = np.random.default_rng(3)
    Z = rng.integers(0, 5, size=(2000, 3)).astype(np.float64)  # many equal distances, duplicates
    d, i = _same(Z, 12, n_clusters=17)
    # among equal distances the lower index comes first, also at the k-th place
    same = d[:, 1:] == d[:, :-1]
    assert np.all(i[:, 1:][same] > i[:, :-1][same])
    _same(np.indices((6, 6, 6)).reshape(3, -1).T.astype(np.float32), 26)


def test_k_at_the_limit_and_tiny_n():
    Z = np.random.default_rng(4).standard_normal((40, 6))
    _same(Z, 39)
    _same(Z, 39, n_clusters=7)
    _same(Z[:2], 1)
    _same(Z[:3], 2)
    _same(np.zeros((5, 2)), 4)  # all points equal: order by index


def test_offset_and_scale_of_the_data_do_not_matter():
    rng = np.random.default_rng(5)
    Z = rng.standard_normal((800, 10))
    _same(Z + 1e6, 7, n_clusters=20)  # far from the origin
    _same(Z * 1e-30, 7, n_clusters=20)  # tiny coordinates (float32 would underflow unscaled)
    _same(Z * 1e30, 7, n_clusters=20)  # huge coordinates (float32 would overflow unscaled)
    _same(Z * 1e-160, 7, n_clusters=20)  # the reference's squares underflow (subnormal sums)
    W = Z.copy()
    W[:, 0] *= 1e4  # very unequal coordinate scales
    _same(W, 7, n_clusters=20)


def test_threads_and_partition_settings_do_not_change_the_result():
    Z = np.random.default_rng(6).standard_normal((2500, 12)).astype(np.float32)
    d0, i0 = partition_knn(Z, 9, n_jobs=1)
    for kw in ({"n_jobs": 2}, {"n_jobs": 3, "n_clusters": 1}, {"n_clusters": 2500 // 16, "seed": 7},
               {"kmeans_iter": 0}, {"kmeans_sample": 100}):
        d1, i1 = partition_knn(Z, 9, **kw)
        np.testing.assert_array_equal(i1, i0)
        np.testing.assert_array_equal(d1, d0)


def test_stats_and_default_clusters():
    Z = np.random.default_rng(7).standard_normal((3000, 4))
    d, i, stats = partition_knn(Z, 5, return_stats=True)
    assert isinstance(stats, KnnStats)
    assert stats.n_clusters <= default_n_clusters(3000)
    assert 0 < stats.pair_fraction < 1  # 4-D points: most pairs are never compared
    assert stats.exact_per_query >= 5
    assert default_n_clusters(1_000_000) == 2000 and default_n_clusters(10) == 1


def test_errors_name_the_problem():
    Z = np.random.default_rng(8).standard_normal((20, 3))
    with pytest.raises(ValueError, match="k <= 19"):
        partition_knn(Z, 20)
    with pytest.raises(ValueError, match="k="):
        partition_knn(Z, 0)
    bad = Z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        partition_knn(bad, 2)
    with pytest.raises(ValueError, match="2-D"):
        partition_knn(Z[:, 0], 2)
    with pytest.raises(ValueError, match="n_clusters"):
        partition_knn(Z, 2, n_clusters=21)
    with pytest.raises(ValueError, match="n_jobs"):
        partition_knn(Z, 2, n_jobs=0)
    with pytest.raises(ValueError, match="rescale"):
        partition_knn(Z * 1e200, 2)
    with pytest.raises(ValueError, match="at least one coordinate"):
        partition_knn(np.zeros((5, 0)), 2)
