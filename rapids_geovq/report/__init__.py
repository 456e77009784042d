"""report.md and the figures of a run (or of a multi-seed job), from its metrics and artifacts;
paths from its :class:`~rapids_geovq.pipeline.layout.RunLayout`.

:mod:`.tables` writes the tables and the plain reading (for one run, or mean +- sd over seeds),
:mod:`.figures` draws the figures.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from . import figures as F
from .tables import (codebook_markdown, prior_markdown, reading, subsample_markdown, sums_markdown, sweep_markdown,
                     table1_markdown, value)


def write_figures(ctx, metrics: dict) -> list[Path]:
    """Every figure of a finished run: reconstructions, codebook, AR samples, the geodesic map and,
    with a sweep, the rate-distortion and purity curves."""
    out = [F.reconstructions(ctx), F.codebook(ctx)]
    out += [F.samples(ctx, kind) for kind in ctx.cfg.sequences.kinds]
    out.append(F.geodesic_map(ctx))
    if metrics.get("sweep"):
        out += F.sweep_figures(metrics["sweep"], metrics["table1"]["vae_neg_elbo"]["total"],
                               ctx.layout.rate_distortion_figure, ctx.layout.purity_figure)
    return out


def write_seed_figures(layout, first, metrics: dict) -> list[Path]:
    """A multi-seed job's figures: the first seed's run layout ``first``'s (copied), the sweep curves
    from its sweep. (Layouts come from the caller: the report does not build run paths itself.)"""
    layout.figures.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(first.figures.glob("*.png")):
        dst = layout.figures / src.name
        shutil.copyfile(src, dst)
        out.append(dst)
    if metrics.get("sweep"):
        elbo = metrics["aggregate"]["table1"]["vae_neg_elbo"]["total"]
        out += F.sweep_figures(metrics["sweep"], elbo, layout.rate_distortion_figure, layout.purity_figure)
    return out


def summary_markdown(metrics: dict) -> str:
    """Table 1, the priors and the codebooks (what the command line prints after a run)."""
    view = metrics.get("aggregate", metrics)
    return "\n\n".join([table1_markdown(view), prior_markdown(view), codebook_markdown(view)])


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


def _full_fit(view: dict, metrics: dict) -> dict:
    """The fit on every latent, as the subsample table compares with it."""
    per = metrics.get("per_seed")
    first = per[str(metrics["seeds"][0])] if per else metrics
    return {"objective": first["geodesic_kmeans"]["inertia"], "bce": first["table1"]["geovq"]["bce"],
            "purity": first["codebooks"]["geodesic"]["label_purity"],
            "dead": first["codebooks"]["geodesic"]["dead_codes"]}


def write_report(layout, cfg, metrics: dict) -> Path:
    """``report.md``: Table 1 per image on one scale, the paper's sums beneath, the plain reading,
    priors, codebooks, the sweep and subsample study when run, figures, stages."""
    seeds = "aggregate" in metrics
    view = metrics["aggregate"] if seeds else metrics
    fig = layout.relative
    mach = metrics["machine"]
    head = (f"{len(metrics['seeds'])} seeds ({', '.join(map(str, metrics['seeds']))}), mean ± sd over seeds; "
            f"each seed's run in `seed_<s>/`" if seeds else "one seed")
    sweep, sub = metrics.get("sweep") or None, metrics.get("subsample") or None
    full = _full_fit(view, metrics) if sub else None
    parts = [
        f"# rapids_geovq run: {cfg.name}",
        f"{metrics['n_train']:,} training latents, {metrics['n_test']:,} test images, {head}. Machine: "
        f"{mach['platform']}, {mach['cpus']} CPUs, torch {mach['torch']}"
        f"{', GPU ' + mach['gpu'] if mach['gpu'] else ', no GPU'}.",
        "## Table 1: test set, per image, on one scale", table1_markdown(view),
        "### As the paper sums it (over the test set)", sums_markdown(view, metrics["n_test"]),
        "### What the numbers say", reading(view, sweep, sub, full),
        f"## Autoregressive prior (GRU over {cfg.prior.seq_len}-code sequences), held-out NLL", prior_markdown(view),
        "## Codebooks", codebook_markdown(view),
    ]
    if not seeds:
        km = metrics["geodesic_kmeans"]
        parts.append(f"{_graph_line(metrics)} Geodesic k-medoids ({km.get('storage', 'dense')} storage): inertia (sum "
                     f"of squared geodesic distances) {km['inertia']:.6g}, {km['n_iter']} alternating iterations, "
                     f"{km['n_swaps']} swaps.")
    if sweep:
        parts += ["## Rate-distortion: codebook size K", sweep_markdown(sweep),
                  f"![rate-distortion]({fig(layout.rate_distortion_figure)})",
                  f"![purity]({fig(layout.purity_figure)})"]
    if sub:
        parts += ["## What fitting on every latent buys", subsample_markdown(sub, full),
                  "Each subsample gets its own kNN graph, geodesic matrix and k-medoids fit (as public "
                  "implementations of the paper do); its medoids are then evaluated on all latents through the full "
                  "graph's geodesic distances, and code the test set by the same out-of-sample rule."]
    kinds = cfg.sequences.kinds
    parts += ["## Figures", f"![geodesic map]({fig(layout.map_figure)})",
              f"![reconstructions]({fig(layout.reconstructions_figure)})", f"![codebook]({fig(layout.codebook_figure)})"]
    parts += [f"![AR samples, {k}]({fig(layout.samples_figure(k))})" for k in kinds]
    if not seeds:
        parts += ["## Stages", stages_markdown(metrics)]
    else:
        parts += ["## Time", "Wall time of each seed's stages (s; a stage resumed from an earlier invocation counts the time "
                  "of the invocation that computed it): "
                  + ", ".join(f"seed {s}: {t:.0f}" for s, t in metrics["seconds"].items()) + "."]
    layout.report.write_text("\n\n".join(parts) + "\n")
    return layout.report


__all__ = ["summary_markdown", "value", "write_figures", "write_report", "write_seed_figures"]
