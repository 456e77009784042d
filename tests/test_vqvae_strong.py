"""Tests for the VQ-VAE codebook-training aids: k-means init, dead-code restart, EMA codebook.

Also pins the paper-faithful default: with the aids off, training is the plain Adam loop
of the paper, bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from rapids_geovq.models import (
    VQVAE,
    VQVAE_PRESETS,
    DeadCodeRestarter,
    VQVAEConfig,
    evaluate_vqvae,
    init_codebook_kmeans,
    kmeans_centroids,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    train_vqvae,
    vqvae_loss,
)
from rapids_geovq.sequences import dead_codes

D = 784
SMALL_VQ = dict(hidden_dim=64, code_dim=4, n_codes=8, batch_size=64, lr=3e-3)
OFF = dict(kmeans_init=False, dead_code_window=0, codebook_update="loss")


def make_images(n: int = 512, n_protos: int = 4, seed: int = 0) -> np.ndarray:
    """Binary-ish images: random binary prototypes with 5% pixel flips, blurred to [0, 1]."""
    rng = np.random.default_rng(seed)
    protos = (rng.random((n_protos, D)) < 0.3).astype(np.float32)
    x = protos[rng.integers(n_protos, size=n)]
    x = np.abs(x - (rng.random(x.shape) < 0.05))
    return np.clip(0.9 * x + 0.1 * rng.random(x.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_images()


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------- the paper default is unchanged


def test_default_is_the_paper_loop_bit_for_bit(images: np.ndarray) -> None:
    """Defaults, the aids explicitly off (with unused settings changed) and a plain
    re-implementation of the paper's training loop give identical weights."""
    cfg = VQVAEConfig(**SMALL_VQ, epochs=2)
    a, hist_a = train_vqvae(images[:256], cfg, device="cpu", progress=False)
    off = VQVAEConfig(**SMALL_VQ, epochs=2, **OFF, ema_decay=0.5, ema_epsilon=0.1,
                      kmeans_init_samples=100)
    b, hist_b = train_vqvae(images[:256], off, device="cpu", progress=False)
    _weights_equal(a, b)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(hist_a) == strip(hist_b)
    assert set(hist_a[0]) == {"epoch", "loss", "bce", "codebook", "commitment", "codes_used", "seconds"}
    assert not any(k.startswith("ema_") for k in a.state_dict())

    # The paper's loop: Adam on bce + codebook + beta * commitment over shuffled batches.
    gen = seed_everything(cfg.seed)
    ref = VQVAE(cfg)
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr)
    data = torch.from_numpy(images[:256])
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), cfg.batch_size):
            x = data[perm[start : start + cfg.batch_size]]
            recon, _, cb, commit = ref(x)
            loss = vqvae_loss(recon, x, cb, commit, cfg.beta)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _weights_equal(a, ref)


# ---------------------------------------------------------------- EMA codebook


def test_ema_update_by_hand() -> None:
    cfg = VQVAEConfig(hidden_dim=8, code_dim=2, n_codes=3, codebook_update="ema",
                      ema_decay=0.5, ema_epsilon=0.1)
    model = VQVAE(cfg)
    model.set_codebook(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    np.testing.assert_array_equal(model.ema_cluster_size.numpy(), [1.0, 1.0, 1.0])
    z_e = torch.tensor([[0.2, 0.0], [0.0, 0.2], [1.0, 1.4]])
    codes = torch.tensor([0, 0, 1])
    model.ema_update(z_e, codes)
    # N = 0.5*[1,1,1] + 0.5*[2,1,0] = [1.5, 1, 0.5]
    # m = 0.5*codebook + 0.5*[[0.2,0.2],[1,1.4],[0,0]] = [[0.1,0.1],[1,1.2],[2.5,2.5]]
    # Laplace: (N + 0.1) / (3 + 3*0.1) * 3 = [1.6, 1.1, 0.6] / 1.1
    np.testing.assert_allclose(model.ema_cluster_size.numpy(), [1.5, 1.0, 0.5])
    np.testing.assert_allclose(model.ema_embed_sum.numpy(), [[0.1, 0.1], [1.0, 1.2], [2.5, 2.5]])
    np.testing.assert_allclose(model.codebook.detach().numpy(),
                               [[0.1 * 1.1 / 1.6] * 2, [1.0, 1.2], [2.5 * 1.1 / 0.6] * 2], rtol=1e-6)


def test_ema_needs_ema_mode() -> None:
    with pytest.raises(RuntimeError, match="codebook_update='ema'"):
        VQVAE(VQVAEConfig(**SMALL_VQ)).ema_update(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))


def test_ema_codebook_takes_no_gradient(images: np.ndarray) -> None:
    cfg = VQVAEConfig(**SMALL_VQ, epochs=2, codebook_update="ema")
    model = VQVAE(cfg)
    recon, _, cb, commit = model(torch.from_numpy(images[:32]))
    assert not model.codebook.requires_grad and not cb.requires_grad
    vqvae_loss(recon, torch.from_numpy(images[:32]), torch.zeros(()), commit, cfg.beta)[0].backward()
    assert model.codebook.grad is None and model.enc_hidden.weight.grad.abs().sum() > 0

    trained, hist = train_vqvae(images, cfg, device="cpu", progress=False)
    before = VQVAE(cfg).codebook.detach()
    assert not torch.allclose(trained.codebook, before)  # moved by the averages alone
    for h in hist:
        assert h["codebook"] == pytest.approx(h["commitment"])
        assert h["loss"] == pytest.approx(h["bce"] + cfg.beta * h["commitment"], rel=1e-5)
    ev = evaluate_vqvae(trained, images[:100])
    assert ev["total"] == pytest.approx(ev["bce"] + cfg.beta * ev["commitment"])
    assert ev["codebook"] == pytest.approx(ev["commitment"], rel=1e-5)


# ---------------------------------------------------------------- k-means initialisation


def test_kmeans_centroids_fixed_point() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    z = torch.from_numpy(centres[rng.integers(4, size=400)] + rng.normal(0, 0.5, (400, 2)).astype(np.float32))
    cent, labels = kmeans_centroids(z, 4, generator=torch.Generator().manual_seed(0))
    assert cent.dtype == z.dtype and cent.shape == (4, 2) and labels.shape == (400,)
    for c in range(4):
        torch.testing.assert_close(cent[c], z[labels == c].mean(0), rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, torch.cdist(z, cent).argmin(1))
    # each true centre recovered
    assert np.abs(np.sort(cent.numpy(), axis=0) - np.sort(centres, axis=0)).max() < 0.3
    with pytest.raises(ValueError, match="at least n_clusters"):
        kmeans_centroids(z[:3], 4, generator=torch.Generator())


def test_kmeans_init_puts_codes_at_encoder_centroids() -> None:
    x = make_images(300, n_protos=4, seed=3)
    cfg = VQVAEConfig(**{**SMALL_VQ, "n_codes": 4}, kmeans_init=True, kmeans_init_samples=300, epochs=0)
    model = VQVAE(cfg)
    labels = init_codebook_kmeans(model, x, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = model.encode(torch.from_numpy(x))
    for c in range(4):
        torch.testing.assert_close(model.codebook[c], z[labels == c].mean(0), rtol=1e-4, atol=1e-5)
    # the codebook now splits the data by prototype: every code is used
    assert len(torch.unique(model.quantize(z)[1])) == 4

    # train_vqvae does the same before its first step (zero epochs: initialisation only)
    trained, hist = train_vqvae(x, cfg, device="cpu", progress=False)
    assert hist == []
    with torch.no_grad():
        z = trained.encode(torch.from_numpy(x))
        codes = trained.quantize(z)[1]
    assert len(torch.unique(codes)) == 4
    for c in range(4):
        torch.testing.assert_close(trained.codebook[c], z[codes == c].mean(0), rtol=1e-4, atol=1e-5)


def test_kmeans_init_in_ema_mode_sets_statistics() -> None:
    x = make_images(200, seed=4)
    model = VQVAE(VQVAEConfig(**SMALL_VQ, codebook_update="ema"))
    init_codebook_kmeans(model, x, n_samples=150)
    torch.testing.assert_close(model.ema_embed_sum, model.codebook.detach())
    torch.testing.assert_close(model.ema_cluster_size, torch.ones(SMALL_VQ["n_codes"]))


# ---------------------------------------------------------------- dead-code restart


def test_restart_revives_far_codes() -> None:
    """Codes parked far away never win; after the window they move onto batch encodings
    and win them."""
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**SMALL_VQ))
    far = torch.full((7, 4), 1e3) + torch.arange(7.0)[:, None]
    model.set_codebook(far, index=torch.arange(1, 8))
    x = torch.from_numpy(make_images(64, seed=5))
    restart = DeadCodeRestarter(model, window=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = model.encode(x)
        for step in (1, 2):
            codes = model.quantize(z)[1]
            assert set(codes.tolist()) == {0}
            assert len(restart(z, codes)) == 0
        codes = model.quantize(z)[1]
        revived = restart(z, codes)
        assert sorted(revived.tolist()) == list(range(1, 8)) and restart.restarts == 7
        # each revived code sits on a distinct encoding of the batch
        same = (model.codebook[1:, None, :] == z[None, :, :]).all(-1)  # (7 codes, 64 encodings)
        assert (same.sum(1) == 1).all() and len(set(same.int().argmax(1).tolist())) == 7
        assert set(range(1, 8)) <= set(model.quantize(z)[1].tolist())
        # a code used in a step keeps its clock fresh: no restart right after
        assert len(restart(z, model.quantize(z)[1])) == 0
    with pytest.raises(ValueError, match="window"):
        DeadCodeRestarter(model, window=0, generator=torch.Generator())


def test_restart_during_training_uses_more_codes() -> None:
    x = make_images(512, n_protos=8, seed=1)
    paper, _ = train_vqvae(x, VQVAEConfig(**SMALL_VQ, epochs=4), device="cpu", progress=False)
    cfg = VQVAEConfig(**SMALL_VQ, epochs=4, dead_code_window=10)
    model, hist = train_vqvae(x, cfg, device="cpu", progress=False)
    assert sum(h["restarts"] for h in hist) > 0
    dead_paper = dead_codes(evaluate_vqvae(paper, x)["codes"], cfg.n_codes)
    dead_restart = dead_codes(evaluate_vqvae(model, x)["codes"], cfg.n_codes)
    assert dead_paper >= 3 and dead_restart < dead_paper


# ---------------------------------------------------------------- preset, config and checkpoints


def test_strong_preset_trains_and_round_trips(images: np.ndarray, tmp_path) -> None:
    cfg = VQVAEConfig.preset("strong", **SMALL_VQ, epochs=2, kmeans_init_samples=256)
    assert cfg.kmeans_init and cfg.dead_code_window > 0 and cfg.codebook_update == "ema"
    for key, value in VQVAE_PRESETS["strong"].items():
        if key != "kmeans_init_samples":
            assert getattr(cfg, key) == value
    assert VQVAEConfig.preset("paper") == VQVAEConfig()
    model, hist = train_vqvae(images, cfg, device="cpu", progress=False)
    assert all(math.isfinite(h["loss"]) for h in hist) and "restarts" in hist[0]
    again, _ = train_vqvae(images, cfg, device="cpu", progress=False)
    _weights_equal(model, again)  # seeded: the aids' random draws repeat too

    path = tmp_path / "vq.pt"
    save_checkpoint(path, model, cfg, hist)
    loaded, cfg2, _ = load_checkpoint(path)
    assert cfg2 == cfg and asdict(cfg2) == asdict(cfg)
    assert {"ema_cluster_size", "ema_embed_sum"} <= set(loaded.state_dict())
    _weights_equal(model, loaded)
    x = torch.from_numpy(images[:16])
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])


def test_bad_settings_are_rejected(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown VQ-VAE preset"):
        VQVAEConfig.preset("fast")
    with pytest.raises(ValueError, match="codebook_update"):
        VQVAE(VQVAEConfig(codebook_update="adam"))
    with pytest.raises(ValueError, match="ema_decay"):
        VQVAEConfig(codebook_update="ema", ema_decay=1.0).validate()
    with pytest.raises(ValueError, match="dead_code_window"):
        train_vqvae(images, VQVAEConfig(**SMALL_VQ, dead_code_window=-1), device="cpu", progress=False)
    with pytest.raises(ValueError, match="kmeans_init_samples"):
        VQVAEConfig(kmeans_init=True, kmeans_init_samples=10).validate()
