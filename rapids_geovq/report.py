"""report.md and the figures of a run, from its metrics and artifacts (paths from its layout)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, 784) -> one (rows*28, cols*28) image."""
    return images.reshape(rows, cols, 28, 28).transpose(0, 2, 1, 3).reshape(rows * 28, cols * 28)


def write_figures(ctx) -> list[Path]:
    """reconstructions.png, codebook.png and one AR-samples figure per prior kind, for a run whose
    stages are done (``ctx`` holds its VAE, data and codebook)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .models import training as T

    lay, cfg, device, vae = ctx.layout, ctx.cfg, ctx.device, ctx.vae
    vqvae, _, _ = T.load_checkpoint(lay.vqvae)
    x_test = ctx.data.x_test
    codebook = ctx.codebook.codebook_
    figs = []
    m = min(cfg.eval.n_reconstructions, x_test.shape[0])
    x = x_test[:m]
    with np.load(lay.test_codes) as f:
        geo_codes = f["geo"][:m]
    z = T.encode_means(vae, x, device=device)
    with np.load(lay.vqvae_test_codes) as f:
        vq_codes = f["codes"][:m]
    vq_codebook = vqvae.codebook.detach().cpu().numpy()
    rows = [("input", x), ("VAE", T.decode_latents(vae, z, device=device)),
            ("VQ-VAE", T.decode_latents(vqvae, vq_codebook[vq_codes], device=device)),
            ("Geo-VQ", T.decode_latents(vae, codebook[geo_codes], device=device))]
    fig, axes = plt.subplots(len(rows), 1, figsize=(m * 0.9, len(rows) * 1.1))
    for ax, (label, imgs) in zip(axes, rows):
        ax.imshow(_tile(imgs, 1, m), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Test-set reconstructions")
    fig.savefig(lay.reconstructions_figure, dpi=100, bbox_inches="tight")
    plt.close(fig)
    figs.append(lay.reconstructions_figure)

    K = codebook.shape[0]
    cols = 16 if K >= 16 else K
    rows_n = int(np.ceil(K / cols))
    imgs = np.zeros((rows_n * cols, 784), np.float32)
    imgs[:K] = T.decode_latents(vae, codebook, device=device)
    fig, ax = plt.subplots(figsize=(cols * 0.6, rows_n * 0.6))
    ax.imshow(_tile(imgs, rows_n, cols), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"Geodesic codebook: the {K} medoid latents decoded")
    fig.savefig(lay.codebook_figure, dpi=100, bbox_inches="tight")
    plt.close(fig)
    figs.append(lay.codebook_figure)

    for kind in cfg.sequences.kinds:
        with np.load(lay.prior_samples(kind)) as f:
            samples = f["samples"]
        n_s, L = samples.shape
        imgs = T.decode_latents(vae, codebook[samples.ravel()], device=device)
        fig, ax = plt.subplots(figsize=(L * 0.35, n_s * 0.35))
        ax.imshow(_tile(imgs, n_s, L), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"{n_s} sequences sampled from the GRU prior ({kind.replace('_', ' ')} codes), decoded")
        fig.savefig(lay.samples_figure(kind), dpi=100, bbox_inches="tight")
        plt.close(fig)
        figs.append(lay.samples_figure(kind))
    return figs


def _f(x, digits=1):
    return f"{x:,.{digits}f}"


def table1_markdown(metrics: dict) -> str:
    s, p = metrics["table1_sums"], metrics["table1_per_image"]
    lines = [
        "| Model | Total (sum) | BCE (sum) | KL / commitment (sum) | Total / image | BCE / image | KL / commit. / image |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| VAE | {_f(s['vae']['total'])} | {_f(s['vae']['bce'])} | KL {_f(s['vae']['kl'])} | "
        f"{_f(p['vae']['total'], 2)} | {_f(p['vae']['bce'], 2)} | {_f(p['vae']['kl'], 2)} |",
        f"| VQ-VAE (end to end) | {_f(s['vqvae']['total'])} | {_f(s['vqvae']['bce'])} | "
        f"commit. {_f(s['vqvae']['commitment'])} | {_f(p['vqvae']['total'], 2)} | {_f(p['vqvae']['bce'], 2)} | "
        f"{_f(p['vqvae']['commitment'], 2)} |",
        f"| Geo-VQ (VAE + geodesic codebook) | | {_f(s['geovq']['bce'])} | | | {_f(p['geovq']['bce'], 2)} | |",
        f"| Geo-VQ, cluster-mean decoding (extension) | | {_f(s['geovq_cluster_mean']['bce'])} | | | "
        f"{_f(p['geovq_cluster_mean']['bce'], 2)} | |",
        f"| Euclidean-VQ (ablation) | | {_f(s['euclidean_vq']['bce'])} | | | "
        f"{_f(p['euclidean_vq']['bce'], 2)} | |",
    ]
    return "\n".join(lines)


def prior_markdown(metrics: dict) -> str:
    lines = ["| Sequences | AR NLL / token (nats) | unigram NLL | unigram entropy | uniform log K |",
             "|---|---:|---:|---:|---:|"]
    for kind, m in metrics["ar_nll_per_token"].items():
        lines.append(f"| {kind.replace('_', ' ')} | {m['nll_per_token']:.3f} | {m['unigram_nll']:.3f} | "
                     f"{m['unigram_entropy']:.3f} | {m['uniform_nll']:.3f} |")
    return "\n".join(lines)


def codebook_markdown(metrics: dict) -> str:
    lines = ["| Codebook | perplexity (test) | dead codes (test) | label purity (test) |", "|---|---:|---:|---:|"]
    for name, m in metrics["codebooks"].items():
        lines.append(f"| {name} | {m['perplexity']:.1f} | {m['dead_codes']} | {m['label_purity']:.3f} |")
    return "\n".join(lines)


def stages_markdown(metrics: dict) -> str:
    lines = ["| Stage | wall time (s) | peak RSS (GiB) | of it allocated (GiB) | peak RSS per worker process (GiB) |",
             "|---|---:|---:|---:|---:|"]
    for name, m in metrics["stages"].items():
        note = " (cached)" if m["skipped"] else ""
        anon = f"{m['peak_anon_gib']:.2f}" if m.get("peak_anon_gib") is not None else "n/a"
        workers = f"{m['children_peak_rss_gib']:.2f}" if m.get("children_peak_rss_gib") is not None else ""
        lines.append(f"| {name}{note} | {m['seconds']:.1f} | {m['peak_rss_gib']:.2f} | {anon} | {workers} |")
    lines.append("")
    lines.append("Peak RSS includes the pages of the memory-mapped geodesic shards being read (file cache the "
                 "kernel can reclaim); 'allocated' is the process's own anonymous memory. Times of cached "
                 "stages are those of the run that computed them.")
    return "\n".join(lines)


def _graph_line(metrics: dict) -> str:
    g = metrics.get("graph")
    if not g:
        return ""
    repaired = (f"{g['n_components']} components, joined by {g['added_edges']} added edges"
                if g["n_components"] > 1 else "one connected component")
    return f"kNN graph: {g['nnz'] // 2:,} undirected edges, {repaired}."


def write_report(layout, cfg, metrics: dict) -> Path:
    """``report.md`` of a run: Table 1, priors, codebooks, figures, stages."""
    mach = metrics["machine"]
    kinds = cfg.sequences.kinds
    fig = lambda p: layout.relative(p)  # noqa: E731 - links relative to the report
    samples = "\n".join(f"![AR samples, {k}]({fig(layout.samples_figure(k))})\n" for k in kinds)
    text = f"""# rapids_geovq run: {cfg.name}

{metrics['n_train']} training latents, {metrics['n_test']} test images. Machine: {mach['platform']},
{mach['cpus']} CPUs, torch {mach['torch']}{', GPU ' + mach['gpu'] if mach['gpu'] else ', no GPU'}.

## Table 1: test set (sums over the test set, and per image)

{table1_markdown(metrics)}

BCE is summed over the 784 pixels of each image. VAE terms use the encoder mean for the
reconstruction; Geo-VQ decodes the code's medoid latent and Euclidean-VQ its centroid with the same
VAE decoder; the cluster-mean row keeps the geodesic codes but decodes the mean latent of each
geodesic cluster.

## Autoregressive prior (GRU over {cfg.prior.seq_len}-code sequences), held-out NLL

{prior_markdown(metrics)}

## Codebooks

{codebook_markdown(metrics)}

{_graph_line(metrics)}

Geodesic k-means: inertia (sum of squared geodesic distances) {metrics['geodesic_kmeans']['inertia']:.6g},
{metrics['geodesic_kmeans']['n_iter']} alternating iterations, {metrics['geodesic_kmeans']['n_swaps']} swaps.

## Figures

![reconstructions]({fig(layout.reconstructions_figure)})

![codebook]({fig(layout.codebook_figure)})

{samples}
## Stages

{stages_markdown(metrics)}
"""
    layout.report.write_text(text)
    return layout.report
