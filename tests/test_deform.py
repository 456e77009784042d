"""Tests for rapids_geovq.deform: seeded, batch-independent deformations of MNIST-like digits."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rapids_geovq.deform import (  # noqa: E402
    CHUNK,
    DeformationRanges,
    DeformedMNIST,
    encode_deformed,
    gaussian_matrices,
)


def _digits(m: int = 37, seed: int = 3):
    """Synthetic 28 x 28 uint8 'digits': a few thick strokes and rings per image, and labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    images = np.zeros((m, 28, 28), np.float64)
    for i in range(m):
        for _ in range(3):
            cy, cx = rng.uniform(8, 20, 2)
            r = rng.uniform(3, 8)
            ring = np.abs(np.hypot(yy - cy, xx - cx) - r)
            images[i] = np.maximum(images[i], np.clip(2.0 - ring, 0, 1))
        x0, x1 = rng.uniform(6, 22, 2)
        line = np.abs(xx - (x0 + (x1 - x0) * (yy - 4) / 20.0))
        images[i] = np.maximum(images[i], np.clip(1.5 - line, 0, 1) * ((yy > 4) & (yy < 24)))
    labels = rng.integers(0, 10, m).astype(np.uint8)
    return (images * 255).round().astype(np.uint8), labels


@pytest.fixture(scope="module")
def digits():
    return _digits()


def test_batches_do_not_change_the_images(digits):
    images, labels = digits
    n = 2 * CHUNK + 345  # spans three chunks, the last one partial
    data = DeformedMNIST(images, labels, n, seed=11)
    whole = data.images()
    assert whole.shape == (n, 28, 28) and whole.dtype == np.uint8
    for batch_size in (1000, 333, 2 * CHUNK + 345):
        got = np.concatenate([b for _, b, _ in data.batches(batch_size)])
        np.testing.assert_array_equal(got, whole)
    # single images and ranges that start and end inside chunks
    for lo, hi in ((0, 1), (999, 1001), (CHUNK - 3, 2 * CHUNK + 7), (n - 5, n)):
        np.testing.assert_array_equal(data.images(lo, hi), whole[lo:hi])
    offsets = [off for off, _, _ in data.batches(700, start=100, stop=2000)]
    assert offsets == [100, 800, 1500]


def test_image_i_does_not_depend_on_n_or_on_torch_threads(digits):
    images, labels = digits
    big = DeformedMNIST(images, labels, 3 * CHUNK, seed=5).images()
    small = DeformedMNIST(images, labels, 1200, seed=5).images()
    np.testing.assert_array_equal(small, big[:1200])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = DeformedMNIST(images, labels, 1200, seed=5).images()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, small)


def test_seed_changes_the_images_and_they_are_deformed(digits):
    images, labels = digits
    a = DeformedMNIST(images, labels, 500, seed=0).images()
    b = DeformedMNIST(images, labels, 500, seed=1).images()
    src = images[np.arange(500) % len(images)]
    assert np.mean(a != b) > 0.05
    assert np.mean(a != src) > 0.05
    # deformations move ink around but keep most of it in the frame
    ink_src = src.reshape(500, -1).sum(axis=1).astype(float)
    ink = a.reshape(500, -1).sum(axis=1).astype(float)
    assert np.median(ink / ink_src) == pytest.approx(1.0, abs=0.25)


def test_dtypes_shapes_and_ranges(digits):
    images, labels = digits
    data = DeformedMNIST(images, labels, 300, seed=2)
    u8 = data.images(10, 60)
    f32 = data.images(10, 60, dtype=np.float32)
    assert u8.dtype == np.uint8 and u8.shape == (50, 28, 28)
    assert f32.dtype == np.float32 and f32.shape == (50, 28, 28)
    assert f32.min() >= 0.0 and f32.max() <= 1.0
    np.testing.assert_array_equal(f32, u8.astype(np.float32) / np.float32(255))
    off, img, lab = next(data.batches(64, dtype=np.float32))
    assert off == 0 and img.dtype == np.float32 and img.shape == (64, 28, 28)
    assert lab.dtype == np.uint8 and lab.shape == (64,)
    with pytest.raises(ValueError, match="dtype"):
        data.images(0, 2, dtype=np.float64)
    with pytest.raises(IndexError, match="n=300"):
        data.images(0, 301)


def test_zero_deformation_returns_the_source_digits(digits):
    images, labels = digits
    data = DeformedMNIST(images, labels, 100, seed=4, ranges=DeformationRanges.identity())
    idx = np.arange(100) % len(images)
    np.testing.assert_array_equal(data.images(), images[idx])
    np.testing.assert_array_equal(data.images(dtype=np.float32),
                                  images[idx].astype(np.float32) / np.float32(255))


def test_labels_follow_the_source_mapping(digits):
    images, labels = digits
    m = len(images)
    data = DeformedMNIST(images, labels, 5 * m + 3, seed=0)
    np.testing.assert_array_equal(data.sources(), np.arange(5 * m + 3) % m)
    np.testing.assert_array_equal(data.labels(), labels[np.arange(5 * m + 3) % m])
    np.testing.assert_array_equal(data.labels(m - 1, m + 2), labels[[m - 1, 0, 1]])
    got = np.concatenate([lab for _, _, lab in data.batches(17)])
    np.testing.assert_array_equal(got, data.labels())


def test_keep_originals_puts_the_sources_first(digits):
    images, labels = digits
    m = len(images)
    kept = DeformedMNIST(images, labels, 3 * m, seed=9, keep_originals=True)
    plain = DeformedMNIST(images, labels, 3 * m, seed=9)
    np.testing.assert_array_equal(kept.images(0, m), images)
    np.testing.assert_array_equal(kept.images(m, 3 * m), plain.images(m, 3 * m))


def test_gaussian_matrices_match_scipy():
    from scipy.ndimage import gaussian_filter1d

    sigma = np.array([4.0, 4.7, 6.0, 1.0])
    G = gaussian_matrices(sigma, max_sigma=7.0)
    v = np.random.default_rng(0).standard_normal(28)
    for b, s in enumerate(sigma):
        np.testing.assert_allclose(G[b] @ v, gaussian_filter1d(v, s, mode="reflect", truncate=4.0),
                                   rtol=0, atol=1e-12)
    np.testing.assert_allclose(G.sum(axis=2), 1.0, atol=1e-12)


def test_ranges_are_validated():
    with pytest.raises(ValueError, match="rotation"):
        DeformationRanges(rotation=-1.0)
    with pytest.raises(ValueError, match="scale"):
        DeformationRanges(scale=(1.1, 0.9))
    with pytest.raises(ValueError, match="sigma"):
        DeformationRanges(sigma=(0.0, 4.0))
    assert DeformationRanges().to_dict()["alpha"] == [30.0, 36.0]


def test_bad_sources_are_refused(digits):
    images, labels = digits
    with pytest.raises(ValueError, match="uint8"):
        DeformedMNIST(images.astype(np.float32), labels, 10)
    with pytest.raises(ValueError, match="one integer label"):
        DeformedMNIST(images, labels[:-1], 10)
    with pytest.raises(ValueError, match="seed"):
        DeformedMNIST(images, labels, 10, seed=-1)


def _tiny_vae():
    from rapids_geovq.models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    return VAE(VAEConfig(hidden_dim=32, latent_dim=6)).eval()


def test_encode_deformed_writes_latents_and_labels(tmp_path, digits):
    images, labels = digits
    data = DeformedMNIST(images, labels, 1500, seed=1)
    vae = _tiny_vae()
    flushed = []
    z = encode_deformed(vae, data, tmp_path / "z.npy", tmp_path / "y.npy", batch_size=400,
                        flush_every=500, on_flush=flushed.append)
    assert z.shape == (1500, 6) and z.dtype == np.float32
    assert flushed[-1] == 1500 and flushed == sorted(flushed)
    with torch.no_grad():
        x = torch.from_numpy(data.images(dtype=np.float32).reshape(1500, -1))
        want = vae.encode(x)[0].numpy()
    np.testing.assert_allclose(np.asarray(z), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), data.labels())


def test_encode_deformed_resumes(tmp_path, digits):
    images, labels = digits
    data = DeformedMNIST(images, labels, 1200, seed=1)
    vae = _tiny_vae()
    full = np.array(encode_deformed(vae, data, tmp_path / "a.npy", batch_size=500))
    part = np.lib.format.open_memmap(tmp_path / "b.npy", mode="w+", dtype=np.float32, shape=(1200, 6))
    part[:700] = full[:700]
    part.flush()
    del part
    resumed = encode_deformed(vae, data, tmp_path / "b.npy", start=700, batch_size=500)
    np.testing.assert_allclose(np.asarray(resumed), full, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="belongs to another run"):
        encode_deformed(vae, DeformedMNIST(images, labels, 1000), tmp_path / "b.npy", start=10)
