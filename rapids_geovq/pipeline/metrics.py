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


def collect_metrics(ctx) -> dict:
    """Every stage's results as one dict: the paper's Table 1 (sums and per image), the priors'
    NLL, codebook statistics, and per-stage time and memory. Writes nothing."""
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
    codebooks = {
        "geodesic": {k: q_m["geo"][k] for k in stats},
        "euclidean": {k: q_m["euclidean"][k] for k in stats},
        "vqvae": {k: vq_m[k] for k in ("perplexity", "dead_codes", "label_purity")},
    }
    stages = {name: {"seconds": r["seconds"], "peak_rss_gib": r["peak_rss_gib"],
                     "peak_anon_gib": r.get("peak_anon_gib"),
                     "children_peak_rss_gib": r.get("children_peak_rss_gib"), "skipped": bool(r.get("skipped"))}
              for name, r in cache.records.items()}
    return {
        "version": __version__, "run_dir": str(ctx.layout.root), "n_test": n, "n_train": int(ctx.data.n_train),
        "table1_sums": sums, "table1_per_image": per_image,
        "ar_nll_per_token": {kind: cache.result(f"prior_{kind}") for kind in ctx.cfg.sequences.kinds},
        "codebooks": codebooks,
        "geodesic_kmeans": cache.result("kmeans"), "graph": cache.result("graph"),
        "stages": stages, "machine": machine(),
    }


def write_metrics(layout: RunLayout, metrics: dict) -> None:
    """``metrics.json`` of the run, written atomically."""
    tmp = layout.metrics.with_name(layout.metrics.name + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=1))
    os.replace(tmp, layout.metrics)
