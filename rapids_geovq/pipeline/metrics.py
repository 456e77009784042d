"""The run's numbers in one dict (collected from the stage results), and writing it."""
from __future__ import annotations

import json
import os
import platform

from .layout import RunLayout


def machine() -> dict:
    """The machine the run is on (platform, CPUs, torch, GPU)."""
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def table1(vae_bounds: dict, vq: dict, vq_strong: dict, q: dict) -> dict:
    """Table 1 on one scale: per test image, in nats, every row's reconstruction and rate.

    ``total`` is BCE + rate on every row: for the VAE rows the rate is the KL (the -ELBO; the
    posterior-mean row is labelled as not a bound), for the IWAE row the bound itself; for every
    discrete row the rate is -log p(code) under a uniform prior (log K, ``total``) and under the
    training codes' unigram distribution (``total_unigram``). ``total_se`` is the standard error
    over test images.
    """
    elbo, pm, iwae = vae_bounds["neg_elbo"], vae_bounds["posterior_mean"], vae_bounds["iwae"]
    rows = {
        "vae_neg_elbo": {"bce": elbo["bce_mean"], "rate": elbo["kl_mean"], "total": elbo["mean"],
                         "total_se": elbo["se"], "samples_per_image": elbo["n_samples"]},
        "vae_posterior_mean": {"bce": pm["bce_mean"], "rate": pm["kl_mean"], "total": pm["mean"],
                               "total_se": pm["se"]},
        "vae_iwae": {"total": iwae["mean"], "total_se": iwae["se"], "samples_per_image": iwae["n_samples"]},
    }
    discrete = {"vqvae": (vq["bce_per_image"], vq["rates"]), "vqvae_strong": (vq_strong["bce_per_image"], vq_strong["rates"]),
                "geovq": (q["geo"]["bce_per_image"], q["geo"]["rates"]),
                "geovq_cluster_mean": (q["geo_mean"]["bce_per_image"], q["geo_mean"]["rates"]),
                "euclidean_vq": (q["euclidean"]["bce_per_image"], q["euclidean"]["rates"])}
    for name, (bce, rates) in discrete.items():
        rows[name] = {"bce": bce, "rate": rates["uniform"]["rate_per_image"], "total": rates["uniform"]["total_per_image"],
                      "total_se": rates["uniform"]["total_se"], "rate_unigram": rates["unigram"]["rate_per_image"],
                      "total_unigram": rates["unigram"]["total_per_image"],
                      "total_unigram_se": rates["unigram"]["total_se"]}
    for name, m in (("vqvae", vq), ("vqvae_strong", vq_strong)):
        n = m["sums"]["n"]
        rows[name]["commitment"] = m["sums"]["commitment"] / n
        rows[name]["training_loss"] = m["sums"]["total"] / n  # the VQ-VAE's own objective, as the paper sums it
    return rows


def collect_metrics(ctx, *, sweep: dict | None = None, subsample: dict | None = None) -> dict:
    """Every stage's results as one dict: Table 1 on one scale (``table1``: per image, every row
    BCE + rate), the paper's sums (``table1_sums``, ``table1_per_image``), the priors' NLL, codebook
    statistics, the sweep over K and the subsample study when run, and per-stage time and memory.
    Writes nothing."""
    from .. import __version__

    cache = ctx.cache
    vae_m, vq_m, q_m = cache.result("vae_eval"), cache.result("vqvae"), cache.result("quantize")
    n = int(vae_m["sums"]["n"])
    v, q = vae_m["sums"], vq_m["sums"]
    sums = {
        "vae": {"total": v["total"], "bce": v["bce"], "kl": v["kl"]},
        "vqvae": {"total": q["total"], "bce": q["bce"], "commitment": q["commitment"]},
        "geovq": {"bce": q_m["geo"]["bce_sum"]},
        "geovq_cluster_mean": {"bce": q_m["geo_mean"]["bce_sum"]},
        "euclidean_vq": {"bce": q_m["euclidean"]["bce_sum"]},
    }
    per_image = {m: {k: val / n for k, val in d.items()} for m, d in sums.items()}
    stats = ("perplexity", "dead_codes", "label_purity", "train_label_purity")
    vqs_m = cache.result("vqvae_strong")
    codebooks = {
        "geodesic": {k: q_m["geo"][k] for k in stats},
        "euclidean": {k: q_m["euclidean"][k] for k in stats},
        "vqvae": {k: vq_m[k] for k in ("perplexity", "dead_codes", "label_purity")},
        "vqvae_strong": {k: vqs_m[k] for k in ("perplexity", "dead_codes", "label_purity")},
    }
    stages = {name: {"seconds": r["seconds"], "peak_rss_gib": r["peak_rss_gib"],
                     "peak_anon_gib": r.get("peak_anon_gib"),
                     "children_peak_rss_gib": r.get("children_peak_rss_gib"), "skipped": bool(r.get("skipped"))}
              for name, r in cache.records.items()}
    return {
        "version": __version__, "run_dir": str(ctx.layout.root), "n_test": n, "n_train": int(ctx.data.n_train),
        "table1": table1(cache.result("vae_bounds"), vq_m, vqs_m, q_m),
        "table1_sums": sums, "table1_per_image": per_image, "vae_bounds": cache.result("vae_bounds"),
        "ar_nll_per_token": {kind: cache.result(f"prior_{kind}") for kind in ctx.cfg.sequences.kinds},
        "codebooks": codebooks,
        "geodesic_kmeans": cache.result("kmeans"), "graph": cache.result("graph"),
        "sweep": {str(K): v for K, v in (sweep or {}).items()},
        "subsample": {str(size): {str(s): r for s, r in by_seed.items()} for size, by_seed in (subsample or {}).items()},
        "stages": stages, "machine": machine(),
    }


def write_metrics(layout: RunLayout, metrics: dict) -> None:
    """``metrics.json`` of the run, written atomically."""
    tmp = layout.metrics.with_name(layout.metrics.name + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=1))
    os.replace(tmp, layout.metrics)
