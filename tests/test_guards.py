"""Guards for claims that other tests take on trust: k-medoids reaches a swap-optimal solution (and
FasterPAM cannot improve it), the incremental nearest / second-nearest update equals a full
recompute, resumed shard directories never reuse a damaged, unchecked or foreign shard, decoding
returns the codes' own latents, the Euclidean ablation is scikit-learn's k-means, the ``codebook``
command and the quick job save what a direct computation gives, and the Numba config is restored
after the first compile of the multi-source kernel in a fresh process.

Every expected value is computed directly (brute force, SciPy's Dijkstra, scikit-learn, FasterPAM)
rather than taken from the code under test.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse.csgraph import dijkstra
from sklearn.datasets import make_blobs, make_moons

from rapids_geovq import (
    EuclideanQuantizer,
    GeodesicCodebook,
    GeodesicKMeans,
    GeodesicQuantizer,
    geodesic_matrix,
    geodesic_row_shards,
    kmeans_objective,
    knn_graph,
)
from rapids_geovq.common.arrays import array_crc32
from rapids_geovq.geodesic.execution import Execution

ROOT = Path(__file__).resolve().parents[1]


# -- data sets and brute-force references -----------------------------------------------------------

def data_set(name: str, n: int) -> np.ndarray:
    """Small point sets of different shapes: blobs, anisotropic blobs, noisy moons, many duplicates."""
    if name == "blobs":
        return make_blobs(n_samples=n, centers=6, n_features=3, cluster_std=1.5, random_state=0)[0]
    if name == "aniso":
        Z = make_blobs(n_samples=n, centers=5, n_features=2, cluster_std=1.0, random_state=1)[0]
        return Z @ np.array([[0.6, -0.64], [-0.41, 0.85]])
    if name == "moons":
        return make_moons(n_samples=n, noise=0.08, random_state=2)[0]
    if name == "duplicates":  # half the points are exact copies of others
        rng = np.random.default_rng(3)
        m = n // 4
        base = rng.normal(size=(n - 2 * m, 3))
        return np.vstack([base, base[:m], base[:m]])
    raise ValueError(name)


DATA_SETS = ["blobs", "aniso", "moons", "duplicates"]


def all_swap_costs(D, medoids) -> np.ndarray:
    """cost[j, x]: the k-medoids cost (sum of squared distances to the nearest medoid) after
    replacing medoid j by point x, for every pair (inf where x is already a medoid)."""
    D2 = np.asarray(D, dtype=np.float64) ** 2
    medoids = np.asarray(medoids)
    out = np.empty((medoids.size, D2.shape[0]))
    for j in range(medoids.size):
        rest = D2[np.delete(medoids, j)].min(axis=0)
        out[j] = np.minimum(rest[None, :], D2).sum(axis=1)
    out[:, medoids] = np.inf
    return out


def nearest_two_reference(rows: np.ndarray):
    """Nearest and second-nearest row of each column, ordered by (value, row index)."""
    K, n = rows.shape
    order = np.lexsort((np.broadcast_to(np.arange(K)[:, None], rows.shape), rows), axis=0)
    n1, n2 = order[0], order[1]
    cols = np.arange(n)
    return n1, n2, rows[n1, cols], rows[n2, cols]


def flip_bytes(path: Path, offsets) -> None:
    """Flip bytes of a file in place, keeping its size (the sidecar is not touched)."""
    data = bytearray(path.read_bytes())
    for off in offsets:
        data[off] ^= 0x5A
    path.write_bytes(bytes(data))


def ex(**kw) -> Execution:
    return Execution(backend="numpy", **kw)


# -- 1. the swap phase runs to a swap-optimal solution ---------------------------------------------

@pytest.mark.parametrize("name", DATA_SETS)
def test_kmeans_is_swap_optimal_by_brute_force(name):
    """No single (medoid, non-medoid) swap lowers the cost of a fit's medoids."""
    Z = data_set(name, 150)
    D = geodesic_matrix(knn_graph(Z, 8))
    rng = np.random.default_rng(0)
    for K in (5, 12):
        for seed in range(3):
            km = GeodesicKMeans(K, random_state=seed, execution=ex(n_workers=1)).fit(D)
            med = km.medoid_indices_
            cost = kmeans_objective(D, med)
            assert km.inertia_ == pytest.approx(cost, rel=1e-12)
            swaps = all_swap_costs(D, med)
            # the brute-force costs are the objective of the swapped medoid sets
            for j, x in zip(rng.integers(0, K, 4), rng.choice(np.setdiff1d(np.arange(150), med), 4)):
                swapped = med.copy()
                swapped[j] = x
                assert swaps[j, x] == pytest.approx(kmeans_objective(D, swapped), rel=1e-12)
            j, x = np.unravel_index(np.argmin(swaps), swaps.shape)
            assert swaps[j, x] >= cost * (1 - 1e-12), (
                f"{name}, K={K}, seed {seed}: swapping medoid {j} for point {x} lowers the cost from "
                f"{cost:.10g} to {swaps[j, x]:.10g}")


@pytest.mark.parametrize("name", DATA_SETS)
def test_kmeans_against_fasterpam_over_seeds(name):
    """FasterPAM (the reference implementation, on the squared float64 matrix) started from a fit's
    medoids cannot lower its cost, and no fit is worse than FasterPAM's worst of five seeds."""
    kmedoids = pytest.importorskip("kmedoids")
    Z = data_set(name, 240)
    D = geodesic_matrix(knn_graph(Z, 8))
    D2 = D.astype(np.float64) ** 2
    for K in (6, 10, 16):
        fp_losses = [kmedoids.fasterpam(D2, K, random_state=s, n_cpu=1).loss for s in range(5)]
        for seed in range(3):
            km = GeodesicKMeans(K, random_state=seed, execution=ex(n_workers=1)).fit(D)
            again = kmedoids.fasterpam(D2, km.medoid_indices_.copy(), n_cpu=1)
            assert again.loss >= km.inertia_ * (1 - 1e-12), (
                f"{name}, K={K}, seed {seed}: FasterPAM improves the fit from {km.inertia_:.10g} to {again.loss:.10g}")
            assert km.inertia_ <= max(fp_losses) * (1 + 1e-12), (
                f"{name}, K={K}, seed {seed}: inertia {km.inertia_:.10g} is worse than every FasterPAM seed "
                f"({fp_losses})")


# -- 2. nearest / second-nearest medoid: incremental update == full recompute ----------------------

def test_nearest_two_incremental_equals_full_recompute_with_ties():
    from rapids_geovq.cpu.kernels import nearest_two

    rng = np.random.default_rng(0)
    for K in (2, 3, 7):
        n = 400
        rows = rng.integers(0, 5, size=(K, n)).astype(np.float64)  # few values: many ties
        inc = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n), np.empty(n))
        nearest_two(rows, -1, *inc)
        for got, want in zip(inc, nearest_two_reference(rows)):
            np.testing.assert_array_equal(got, want)
        for step in range(25):
            m = int(rng.integers(K))
            if step % 3 == 0:  # a row that changes only some entries, by a tie or a small step
                rows[m] += rng.integers(-1, 2, size=n) * (rng.random(n) < 0.3)
            else:
                rows[m] = rng.integers(0, 5, size=n)
            nearest_two(rows, m, *inc)
            full = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n), np.empty(n))
            nearest_two(rows, -1, *full)
            for got, want, ref in zip(inc, full, nearest_two_reference(rows)):
                np.testing.assert_array_equal(got, want)
                np.testing.assert_array_equal(got, ref)


def test_swap_state_after_swaps_equals_fresh_state():
    """The estimator's incremental swap state (after replacing one medoid) equals one built from
    scratch, on a geodesic matrix with duplicate points (tied distances)."""
    Z = data_set("duplicates", 120)
    D = geodesic_matrix(knn_graph(Z, 6))
    K = 6
    km = GeodesicKMeans(K, execution=ex())
    rng = np.random.default_rng(1)
    med = rng.choice(120, K, replace=False)
    rows = D[med].astype(np.float64) ** 2
    _, near = km._swap_state(rows, med)
    for _ in range(20):
        m = int(rng.integers(K))
        med[m] = rng.choice(np.setdiff1d(np.arange(120), med))
        rows[m] = D[med[m]].astype(np.float64) ** 2
        state, near = km._swap_state(rows, med, near, m)
        fresh, _ = km._swap_state(rows, med)
        for got, want in zip(state, fresh):
            np.testing.assert_array_equal(got, want)
        n1, n2, d1, d2 = nearest_two_reference(rows)
        np.testing.assert_array_equal(state[1], n1)
        np.testing.assert_array_equal(state[2], d1)
        np.testing.assert_array_equal(state[3], d2)


@pytest.mark.parametrize("name", ["moons", "duplicates"])
def test_fit_labels_and_inertia_equal_direct_recomputation(name):
    Z = data_set(name, 200)
    D = geodesic_matrix(knn_graph(Z, 8))
    D2 = D.astype(np.float64) ** 2
    km = GeodesicKMeans(9, random_state=4, execution=ex(block_rows=16)).fit(D)
    med = km.medoid_indices_
    labels = np.argmin(D2[med], axis=0)
    labels[med] = np.arange(med.size)  # a medoid is in its own cluster, even where it ties
    np.testing.assert_array_equal(km.labels_, labels)
    assert km.inertia_ == pytest.approx(D2[med][labels, np.arange(200)].sum(), rel=1e-12)
    assert km.inertia_ == pytest.approx(kmeans_objective(D, med), rel=1e-12)


# -- 3-5. resuming a shard directory ------------------------------------------------------------------

def _shards(G, directory):
    return geodesic_row_shards(G, directory, shard_rows=40, n_workers=1, progress=False)


def test_resume_recomputes_a_shard_whose_bytes_were_flipped(tmp_path):
    G = knn_graph(data_set("blobs", 100), 6)
    ref = dijkstra(G).astype(np.float32)
    S = _shards(G, tmp_path / "geo")
    np.testing.assert_array_equal(S.to_array(), ref)
    shard = tmp_path / "geo" / "rows_0000040_0000080.npy"
    side = tmp_path / "geo" / "rows_0000040_0000080.npy.json"
    size, side_text = shard.stat().st_size, side.read_text()
    flip_bytes(shard, [size - 5, size - 1001, size - 4003])
    assert shard.stat().st_size == size and side.read_text() == side_text
    assert array_crc32(np.load(shard)) != json.loads(side_text)["crc32"]
    S2 = _shards(G, tmp_path / "geo")
    np.testing.assert_array_equal(S2.to_array(), ref)
    np.testing.assert_array_equal(np.load(shard), ref[S2.order[40:80]])
    assert array_crc32(np.load(shard)) == json.loads(side.read_text())["crc32"]


def test_shards_of_another_graph_of_the_same_size_are_not_reused(tmp_path):
    A = knn_graph(data_set("blobs", 100), 6)
    B = knn_graph(data_set("moons", 100), 6)
    ref_a, ref_b = dijkstra(A).astype(np.float32), dijkstra(B).astype(np.float32)
    assert not np.array_equal(ref_a, ref_b)
    np.testing.assert_array_equal(_shards(A, tmp_path / "geo").to_array(), ref_a)
    np.testing.assert_array_equal(_shards(B, tmp_path / "geo").to_array(), ref_b)
    # and back again: each graph's shards replace the other's
    np.testing.assert_array_equal(_shards(A, tmp_path / "geo").to_array(), ref_a)


def test_shard_without_its_checksum_file_is_recomputed(tmp_path):
    G = knn_graph(data_set("aniso", 100), 6)
    ref = dijkstra(G).astype(np.float32)
    _shards(G, tmp_path / "geo")
    shard = tmp_path / "geo" / "rows_0000000_0000040.npy"
    side = tmp_path / "geo" / "rows_0000000_0000040.npy.json"
    side.unlink()
    size = shard.stat().st_size
    flip_bytes(shard, [size - 9, size - 2001])  # without its checksum, a damaged shard looks whole
    S = _shards(G, tmp_path / "geo")
    np.testing.assert_array_equal(S.to_array(), ref)
    assert side.exists()
    assert json.loads(side.read_text())["crc32"] == array_crc32(np.load(shard))


# -- 6. decoding gives the codes' own latents -------------------------------------------------------

CODES = np.array([3, 0, 0, 5, 1, 4, 2, 5, 3, 1, 0, 2])


def test_geodesic_quantizer_decode_is_the_medoid_latents():
    Z = data_set("blobs", 150)
    D = geodesic_matrix(knn_graph(Z, 6))
    med = np.array([7, 100, 42, 3, 149, 61])
    gq = GeodesicQuantizer(Z, med, D[:, med], k=6)
    want = Z[med[CODES]].astype(np.float32)
    got = gq.decode(CODES)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(gq.decode(CODES.astype(np.float64)), want)  # whole-number floats
    np.testing.assert_array_equal(gq.decode(np.array([], np.int64)), np.empty((0, Z.shape[1]), np.float32))


def test_geodesic_codebook_decode_is_the_medoid_latents(tmp_path):
    Z = data_set("aniso", 150).astype(np.float32)
    cb = GeodesicCodebook(6, k=6, n_init=1, execution=ex()).fit(Z)
    want = Z[cb.medoid_indices_[CODES]]
    np.testing.assert_array_equal(cb.decode(CODES), want)
    np.testing.assert_array_equal(cb.codebook_, Z[cb.medoid_indices_])
    cb.save(tmp_path / "cb.npz")
    loaded = GeodesicCodebook.load(tmp_path / "cb.npz")
    np.testing.assert_array_equal(loaded.decode(CODES), want)
    # decoding a latent's own code gives its medoid
    np.testing.assert_array_equal(loaded.decode(loaded.predict(Z[:20])), Z[cb.medoid_indices_[cb.predict(Z[:20])]])


# -- 7. the Euclidean ablation ------------------------------------------------------------------------

def test_euclidean_quantizer_fit_is_sklearn_kmeans():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(5)
    Z = rng.uniform(size=(400, 3)).astype(np.float32)  # no clear clusters: the seed decides
    eq = EuclideanQuantizer(8, n_init=2, random_state=11).fit(Z)
    km = KMeans(8, n_init=2, random_state=11).fit(Z.astype(np.float64))
    assert eq.codebook_.dtype == np.float32 and eq.codebook_.shape == (8, 3)
    np.testing.assert_allclose(eq.codebook_, km.cluster_centers_.astype(np.float32), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(eq.labels_, km.labels_)
    assert eq.inertia_ == pytest.approx(km.inertia_, rel=1e-9)
    # the seed matters on these points: another seed gives other centroids
    other = KMeans(8, n_init=2, random_state=12).fit(Z.astype(np.float64))
    assert not np.allclose(np.sort(other.cluster_centers_, axis=0), np.sort(eq.codebook_, axis=0), atol=1e-3)


def test_euclidean_quantizer_encode_decode_and_from_codebook():
    rng = np.random.default_rng(6)
    Z = rng.normal(size=(300, 4))
    eq = EuclideanQuantizer(7, n_init=1, random_state=0).fit(Z)
    Q = rng.normal(size=(120, 4)) * 1.5
    brute = np.argmin(((Q[:, None, :] - eq.codebook_.astype(np.float64)[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(eq.encode(Q), brute)
    np.testing.assert_array_equal(eq.encode(Z), eq.labels_)
    assert eq.decode(CODES).dtype == np.float32
    np.testing.assert_array_equal(eq.decode(CODES), eq.codebook_[CODES])

    C = rng.normal(size=(5, 4))
    fq = EuclideanQuantizer.from_codebook(C)
    assert fq.n_clusters == 5 and fq.codebook_.dtype == np.float32
    np.testing.assert_array_equal(fq.codebook_, C.astype(np.float32))
    brute = np.argmin(((Q[:, None, :] - C.astype(np.float32).astype(np.float64)[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(fq.encode(Q), brute)
    codes = np.array([4, 0, 2, 2, 1, 3])
    np.testing.assert_array_equal(fq.decode(codes), C.astype(np.float32)[codes])
    # a quantizer rebuilt from a fitted codebook codes and decodes as the fitted one
    again = EuclideanQuantizer.from_codebook(eq.codebook_)
    np.testing.assert_array_equal(again.encode(Q), eq.encode(Q))
    np.testing.assert_array_equal(again.decode(CODES), eq.decode(CODES))


def test_euclidean_quantizer_bad_input_errors():
    rng = np.random.default_rng(7)
    Z = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="more than the 20 latents"):
        EuclideanQuantizer(21).fit(Z)
    bad = Z.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        EuclideanQuantizer(3).fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        EuclideanQuantizer(3).fit(Z[:, 0])
    eq = EuclideanQuantizer(4, n_init=1, random_state=0).fit(Z)
    with pytest.raises(ValueError, match="3 dimensions|2 dimensions"):
        eq.encode(Z[:, :2])
    with pytest.raises(ValueError, match="NaN or inf"):
        eq.encode(bad)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        eq.decode([0, 4])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        eq.decode([-1])
    with pytest.raises(ValueError, match="whole numbers"):
        eq.decode([0.5])
    with pytest.raises(ValueError, match=r"shape \(K, d\)"):
        EuclideanQuantizer.from_codebook(np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(K, d\)"):
        EuclideanQuantizer.from_codebook(np.zeros((0, 3)))


# -- 8. the codebook command saves what a direct computation gives ----------------------------------

def test_codebook_command_labels_distances_and_inertia_are_direct(tmp_path):
    from rapids_geovq.cli import main

    rng = np.random.default_rng(0)
    Z = np.vstack([rng.normal(size=(120, 4)), rng.normal(size=(130, 4)) + 5]).astype(np.float32)
    np.save(tmp_path / "Z.npy", Z)
    out = tmp_path / "cb.npz"
    assert main(["codebook", "--latents", str(tmp_path / "Z.npy"), "--k", "7", "--clusters", "6", "--n-init", "2",
                 "--out", str(out), "--backend", "numpy"]) == 0
    D = geodesic_matrix(knn_graph(Z, 7))
    with np.load(out) as f:
        med, labels, dist, inertia = f["medoid_indices"], f["labels"], f["dist_to_codes"], float(f["inertia"])
        np.testing.assert_array_equal(f["codebook"], Z[med])
        np.testing.assert_array_equal(f["train_latents"], Z.astype(np.float64))
    assert med.shape == (6,) and np.unique(med).size == 6
    Dm = D[:, med]
    # no ties on these points: the argmin is the only nearest code
    srt = np.sort(Dm, axis=1)
    assert (srt[:, 1] > srt[:, 0]).all()
    np.testing.assert_array_equal(labels, np.argmin(Dm, axis=1))
    np.testing.assert_array_equal(dist, Dm)
    direct = float(np.sum(Dm.astype(np.float64)[np.arange(Z.shape[0]), labels] ** 2))
    assert inertia == pytest.approx(direct, rel=1e-12)
    assert inertia == pytest.approx(kmeans_objective(D, med), rel=1e-12)


# -- 9. the quick job codes its test images geodesically ---------------------------------------------

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):  # used by tests marked mnist
    from rapids_geovq.cli import main

    run = tmp_path_factory.mktemp("quick") / "run"
    assert main(["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={run}", "progress=false", "data.n_train=600",
                 "data.n_test=200", "kmeans.n_clusters=8", "vae.epochs=1", "vqvae.epochs=1", "prior.epochs=1",
                 "geodesic.shard_rows=300", "sequences.kinds=[dataset]"]) == 0
    return run


@pytest.mark.mnist
def test_quick_job_test_codes_are_the_geodesic_codes(quick_run):
    run = quick_run
    cb = GeodesicCodebook.load(run / "artifacts/codebook.npz")
    with np.load(run / "artifacts/latents.npz") as f:
        z_train, z_test = f["train"], f["test"]
    with np.load(run / "artifacts/test_codes.npz") as f:
        saved = f["geo"]
    assert saved.shape == (200,) and cb.n_codes == 8
    np.testing.assert_array_equal(cb.train_latents_, z_train.astype(np.float64))
    np.testing.assert_array_equal(saved, cb.predict(z_test))
    assert np.unique(saved).size > 1

    # brute force: x enters the graph through its k nearest training latents
    T = z_train.astype(np.float64)
    dist_codes = cb.dist_to_codes_.astype(np.float64)
    brute = np.empty((z_test.shape[0], cb.n_codes))
    for i, x in enumerate(z_test.astype(np.float64)):
        e = np.sqrt(((T - x) ** 2).sum(axis=1))
        nb = np.argsort(e, kind="stable")[: cb.k]
        brute[i] = (e[nb][:, None] + dist_codes[nb]).min(axis=0)
    np.testing.assert_allclose(cb.transform(z_test), brute, rtol=1e-12)
    chosen = brute[np.arange(brute.shape[0]), saved]
    np.testing.assert_allclose(chosen, brute.min(axis=1), rtol=1e-12)
    srt = np.sort(brute, axis=1)
    clear = srt[:, 1] > srt[:, 0] * (1 + 1e-9)  # where no two codes are (nearly) tied
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(saved[clear], np.argmin(brute, axis=1)[clear])


@pytest.mark.mnist
def test_quick_job_codebook_columns_are_the_geodesic_shards(quick_run):
    from rapids_geovq import load_row_shards

    cb = GeodesicCodebook.load(quick_run / "artifacts/codebook.npz")
    S = load_row_shards(quick_run / "geodesic", verify=True)
    med = cb.medoid_indices_
    np.testing.assert_array_equal(cb.dist_to_codes_, S.take_rows(med).T)
    D = S.to_array()
    assert cb.inertia_ == pytest.approx(kmeans_objective(D, med), rel=1e-12)
    labels = np.argmin(D[med].astype(np.float64) ** 2, axis=0)
    labels[med] = np.arange(med.size)
    np.testing.assert_array_equal(cb.labels_, labels)


# -- 10. the Numba config is restored after the first compile, in a fresh process -------------------

_FRESH_COMPILE = textwrap.dedent("""
    import json
    import numpy as np
    from numba.core import config
    from scipy.sparse.csgraph import dijkstra
    from rapids_geovq import geodesic_matrix, knn_graph
    from rapids_geovq.cpu import kernels

    before = config.SLP_VECTORIZE
    compiled_before = len(kernels.multi_source_rows.dispatcher.overloads)
    G = knn_graph(np.random.default_rng(0).normal(size=(40, 3)), 4)
    D = geodesic_matrix(G, method="numba", backend="numpy", n_workers=1)
    stats = kernels.multi_source_rows.dispatcher.stats
    print(json.dumps({
        "before": before, "after": config.SLP_VECTORIZE, "compiled_before": compiled_before,
        "compiled_after": len(kernels.multi_source_rows.dispatcher.overloads),
        "cache_misses": sum(stats.cache_misses.values()), "cache_hits": sum(stats.cache_hits.values()),
        "equal_to_scipy": bool(np.array_equal(D, dijkstra(G).astype(np.float32))),
    }))
""")


def test_numba_config_restored_after_first_compile_in_a_fresh_process(tmp_path):
    env = dict(os.environ)
    env.pop("NUMBA_SLP_VECTORIZE", None)
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba_cache")  # empty: the kernel is compiled, not loaded
    proc = subprocess.run([sys.executable, "-c", _FRESH_COMPILE], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["compiled_before"] == 0 and r["compiled_after"] == 1
    assert r["cache_misses"] == 1 and r["cache_hits"] == 0  # it really compiled in this process
    assert r["equal_to_scipy"]
    assert r["before"] == 0  # Numba's default
    assert r["after"] == r["before"]
