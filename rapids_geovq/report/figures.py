"""The figures of a run: reconstructions, the codebook, AR samples, the geodesic map (landmark
MDS), and for the sweep over K the rate-distortion curve and label purity against K."""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: How each codebook is drawn in the sweep figures.
STYLES = {"geovq": ("Geo-VQ (medoid)", "C0", "o-"), "geovq_cluster_mean": ("Geo-VQ (cluster mean)", "C0", "o--"),
          "euclidean_vq": ("Euclidean-VQ", "C1", "s-"), "vqvae": ("VQ-VAE (paper-faithful)", "C3", "^-"),
          "vqvae_strong": ("VQ-VAE (strong)", "C2", "v-")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, 784) -> one (rows*28, cols*28) image."""
    return images.reshape(rows, cols, 28, 28).transpose(0, 2, 1, 3).reshape(rows * 28, cols * 28)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return path


def reconstructions(ctx) -> Path:
    """Test images and what each model reconstructs them as."""
    from ..models import training as T

    plt = _plt()
    lay, cfg, device, vae = ctx.layout, ctx.cfg, ctx.device, ctx.vae
    m = min(cfg.eval.n_reconstructions, ctx.data.n_test)
    x = ctx.data.x_test[:m]
    with np.load(lay.test_codes) as f:
        geo_codes = f["geo"][:m]
    rows = [("input", x), ("VAE", T.decode_latents(vae, T.encode_means(vae, x, device=device), device=device))]
    for name, ckpt, codes in (("VQ-VAE", lay.vqvae, lay.vqvae_test_codes),
                              ("VQ-VAE strong", lay.model("vqvae_strong"), lay.model_codes("vqvae_strong"))):
        model, _, _ = T.load_checkpoint(ckpt)
        with np.load(codes) as f:
            c = f["codes"][:m]
        rows.append((name, T.decode_latents(model, model.codebook.detach().cpu().numpy()[c], device=device)))
    rows.append(("Geo-VQ", T.decode_latents(vae, ctx.codebook.codebook_[geo_codes], device=device)))
    fig, axes = plt.subplots(len(rows), 1, figsize=(m * 0.9, len(rows) * 1.1))
    for ax, (label, imgs) in zip(axes, rows):
        ax.imshow(_tile(imgs, 1, m), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Test-set reconstructions")
    return _save(fig, lay.reconstructions_figure)


def codebook(ctx) -> Path:
    from ..models import training as T

    plt = _plt()
    cb = ctx.codebook.codebook_
    K = cb.shape[0]
    cols = 16 if K >= 16 else K
    rows_n = int(np.ceil(K / cols))
    imgs = np.zeros((rows_n * cols, 784), np.float32)
    imgs[:K] = T.decode_latents(ctx.vae, cb, device=ctx.device)
    fig, ax = plt.subplots(figsize=(cols * 0.6, rows_n * 0.6))
    ax.imshow(_tile(imgs, rows_n, cols), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"Geodesic codebook: the {K} medoid latents decoded")
    return _save(fig, ctx.layout.codebook_figure)


def samples(ctx, kind: str) -> Path:
    from ..models import training as T

    plt = _plt()
    with np.load(ctx.layout.prior_samples(kind)) as f:
        s = f["samples"]
    n_s, L = s.shape
    imgs = T.decode_latents(ctx.vae, ctx.codebook.codebook_[s.ravel()], device=ctx.device)
    fig, ax = plt.subplots(figsize=(L * 0.35, n_s * 0.35))
    ax.imshow(_tile(imgs, n_s, L), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"{n_s} sequences sampled from the GRU prior ({kind.replace('_', ' ')} codes), decoded")
    return _save(fig, ctx.layout.samples_figure(kind))


def geodesic_map(ctx) -> Path:
    """Every training latent placed in 2-D by landmark MDS on its squared geodesic distances to the
    K medoids (the landmarks), coloured by label, medoids marked."""
    from ..geodesic.embedding import landmark_mds

    plt = _plt()
    cb = ctx.codebook
    xy = landmark_mds(cb.dist_to_codes_, cb.medoid_indices_)
    y = ctx.data.y_train
    fig, ax = plt.subplots(figsize=(8, 7))
    order = np.random.default_rng(0).permutation(len(xy))  # no label drawn entirely on top
    sc = ax.scatter(xy[order, 0], xy[order, 1], c=y[order], cmap="tab10", s=1.5, alpha=0.5, linewidths=0,
                    vmin=-0.5, vmax=9.5, rasterized=True)
    m = xy[cb.medoid_indices_]
    ax.scatter(m[:, 0], m[:, 1], c=y[cb.medoid_indices_], cmap="tab10", vmin=-0.5, vmax=9.5, s=60, marker="*",
               edgecolors="black", linewidths=0.8, label=f"the {len(m)} medoids (codes)")
    cbar = fig.colorbar(sc, ax=ax, ticks=range(10))
    cbar.set_label("digit label")
    cbar.solids.set_alpha(1)
    ax.legend(loc="upper right")
    ax.set_title(f"Geodesic map of all {len(xy):,} training latents\n(landmark MDS on squared geodesic "
                 "distances to the medoids)")
    ax.set_xlabel("coordinate 1")
    ax.set_ylabel("coordinate 2")
    return _save(fig, ctx.layout.map_figure)


def _value(x):
    """A number, or the mean of a seed summary."""
    return x["mean"] if isinstance(x, dict) and "mean" in x else x


def sweep_figures(sweep: dict, vae_elbo, rd_path: Path, purity_path: Path) -> list[Path]:
    """BCE per image against log2 K (the rate of a uniform prior over K codes) for each codebook,
    with the VAE's -ELBO as a reference line; and test label purity against K."""
    from .tables import sweep_points

    plt = _plt()
    pts = sweep_points(sweep)
    Ks = sorted(pts)
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, (label, color, style) in STYLES.items():
        xs = [np.log2(K) for K in Ks if name in pts[K]]
        ys = [pts[K][name]["bce"] for K in Ks if name in pts[K]]
        if xs:
            ax.plot(xs, ys, style, color=color, label=label)
    if vae_elbo is not None:
        ax.axhline(_value(vae_elbo), color="gray", ls=":", label="VAE -ELBO (BCE + KL)")
    ax.set_xlabel("rate: log2 K (bits per image, uniform prior over the K codes)")
    ax.set_ylabel("test BCE per image (nats)")
    ax.set_xticks([np.log2(K) for K in Ks], [f"{np.log2(K):.0f}\n(K={K})" for K in Ks])
    ax.set_title("Rate-distortion: test reconstruction against codebook size")
    ax.legend()
    ax.grid(alpha=0.3)
    out = [_save(fig, rd_path)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ("geovq", "euclidean_vq", "vqvae", "vqvae_strong"):
        label, color, style = STYLES[name]
        xs = [np.log2(K) for K in Ks if "purity" in pts[K].get(name, {})]
        ys = [pts[K][name]["purity"] for K in Ks if "purity" in pts[K].get(name, {})]
        if xs:
            ax.plot(xs, ys, style, color=color, label=label)
    ax.set_xticks([np.log2(K) for K in Ks], [str(K) for K in Ks])
    ax.set_xlabel("codebook size K")
    ax.set_ylabel("test label purity")
    ax.set_title("How well codes separate digits, against codebook size")
    ax.legend()
    ax.grid(alpha=0.3)
    out.append(_save(fig, purity_path))
    return out
