"""The report's tables and its plain reading, for one run or the mean +- sd over seeds.

Every cell takes a number (one run) or a seed summary ``{"mean", "sd", "n"}`` (several seeds,
:func:`rapids_geovq.aggregate.aggregate_seeds`) and prints it accordingly, so one set of tables
serves both.
"""
from __future__ import annotations

import math

from ..aggregate import format_mean_sd, is_summary

#: The paper's Table 1 (sums over the 10,000 MNIST test images).
PAPER_SUMS = {"vae": {"total": 1_055_250, "bce": 801_877, "kl": 253_374},
              "vqvae": {"total": 2_424_601, "bce": 1_959_661, "commitment": 464_940},
              "geovq": {"total": 1_126_945, "bce": 1_126_945, "kl": 0}}
PAPER_N_TEST = 10_000

#: Table 1's rows, in order: key, label, the paper row it is set beside.
ROWS = [
    ("vae_neg_elbo", "VAE: -ELBO (BCE of a sampled z + KL; the paper's VAE row)", "vae"),
    ("vae_iwae", "VAE: IWAE bound on -log p(x)", None),
    ("vae_posterior_mean", "VAE: posterior-mean reconstruction + KL (not a bound)", None),
    ("vqvae", "VQ-VAE, paper-faithful (end to end)", "vqvae"),
    ("vqvae_strong", "VQ-VAE, strong (k-means init, dead-code restart, EMA)", None),
    ("geovq", "Geo-VQ: VAE + geodesic codebook, medoid decoding", "geovq"),
    ("geovq_cluster_mean", "Geo-VQ, cluster-mean decoding", None),
    ("euclidean_vq", "Euclidean-VQ (k-means centroids, ablation)", None),
]


def value(x):
    """A number, or the mean of a seed summary (None stays None)."""
    if is_summary(x):
        return x["mean"]
    return x


def cell(x, digits: int = 2) -> str:
    if x is None:
        return ""
    if is_summary(x):
        return format_mean_sd(x, digits=digits)
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def _with_se(row: dict, key: str, se_key: str, digits: int = 2) -> str:
    """One run: "m ± se" (standard error over test images); several seeds: "m ± sd" over seeds."""
    x = row.get(key)
    if x is None:
        return ""
    if is_summary(x):
        return format_mean_sd(x, digits=digits)
    se = row.get(se_key)
    return f"{x:,.{digits}f} ± {se:.2f}" if se is not None and not math.isnan(se) else f"{x:,.{digits}f}"


def table1_markdown(view: dict) -> str:
    """Table 1 per test image, every row on one scale: total = BCE + rate (nats)."""
    t = view["table1"]
    seeds = is_summary(t["vae_neg_elbo"]["total"])
    spread = "mean ± sd over seeds" if seeds else "± standard error over test images"
    lines = [
        "| Model | BCE | rate | **total = BCE + rate** (uniform prior over codes) | total, unigram prior | "
        "paper: total / image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label, paper in ROWS:
        row = t[key]
        ptotal = f"{PAPER_SUMS[paper]['total'] / PAPER_N_TEST:.2f}" if paper else ""
        unigram = _with_se(row, "total_unigram", "total_unigram_se") if "total_unigram" in row else ""
        lines.append(f"| {label} | {cell(row.get('bce'))} | {cell(row.get('rate'))} | "
                     f"{_with_se(row, 'total', 'total_se')} | {unigram} | {ptotal} |")
    lines += ["", f"Nats per test image ({spread}). Rate: the KL for the VAE rows; -log p(code) for the discrete "
              "rows, log K under a uniform prior, and under the training codes' unigram distribution (add-one "
              "smoothed) in the next column. The IWAE row is the bound itself (no split)."]
    return "\n".join(lines)


def sums_markdown(view: dict, n_test) -> str:
    """The paper's own sums over the test set, beside ours (the paper's definitions of total)."""
    s = view["table1_sums"]
    t = view["table1"]
    n = value(n_test)

    lines = ["| Model | total (sum) | BCE (sum) | KL / commitment (sum) | paper: total | paper: BCE | "
             "paper: KL / commitment |", "|---|---:|---:|---:|---:|---:|---:|"]
    elbo = t["vae_neg_elbo"]
    lines.append(f"| VAE, -ELBO (sampled z) | {cell(_scaled(elbo['total'], n), 0)} | "
                 f"{cell(_scaled(elbo['bce'], n), 0)} | {cell(_scaled(elbo['rate'], n), 0)} | "
                 f"{PAPER_SUMS['vae']['total']:,} | {PAPER_SUMS['vae']['bce']:,} | {PAPER_SUMS['vae']['kl']:,} |")
    lines.append(f"| VAE, posterior mean (not a bound) | {cell(s['vae']['total'], 0)} | {cell(s['vae']['bce'], 0)} | "
                 f"{cell(s['vae']['kl'], 0)} | | | |")
    lines.append(f"| VQ-VAE, paper-faithful (its training loss) | {cell(s['vqvae']['total'], 0)} | "
                 f"{cell(s['vqvae']['bce'], 0)} | {cell(s['vqvae']['commitment'], 0)} | "
                 f"{PAPER_SUMS['vqvae']['total']:,} | {PAPER_SUMS['vqvae']['bce']:,} | "
                 f"{PAPER_SUMS['vqvae']['commitment']:,} |")
    lines.append(f"| Geo-VQ, medoid decoding (BCE only) | {cell(s['geovq']['bce'], 0)} | {cell(s['geovq']['bce'], 0)} | "
                 f"0 | {PAPER_SUMS['geovq']['total']:,} | {PAPER_SUMS['geovq']['bce']:,} | 0 |")
    lines.append(f"| Geo-VQ, cluster-mean decoding (BCE only) | | {cell(s['geovq_cluster_mean']['bce'], 0)} | | | | |")
    lines.append(f"| Euclidean-VQ (BCE only) | | {cell(s['euclidean_vq']['bce'], 0)} | | | | |")
    lines += ["", "Sums over the test set, as the paper reports them; its 'total' for the VQ-VAE is the training "
              "loss (BCE + codebook + β·commitment) and for Geo-VQ the BCE alone, which is why the table above "
              "puts every row on BCE + rate instead."]
    return "\n".join(lines)


def _scaled(x, n):
    if is_summary(x):
        return {"mean": x["mean"] * n, "sd": x["sd"] * n, "n": x["n"]}
    return None if x is None else x * n


def prior_markdown(view: dict) -> str:
    lines = ["| Sequences | AR NLL / token (nats) | unigram NLL | unigram entropy | uniform log K |",
             "|---|---:|---:|---:|---:|"]
    for kind, m in view["ar_nll_per_token"].items():
        lines.append(f"| {kind.replace('_', ' ')} | {cell(m['nll_per_token'], 3)} | {cell(m['unigram_nll'], 3)} | "
                     f"{cell(m['unigram_entropy'], 3)} | {cell(m['uniform_nll'], 3)} |")
    return "\n".join(lines)


def codebook_markdown(view: dict) -> str:
    lines = ["| Codebook | perplexity (test) | dead codes (test) | label purity (test) |", "|---|---:|---:|---:|"]
    for name, m in view["codebooks"].items():
        lines.append(f"| {name.replace('_', ' ')} | {cell(m['perplexity'], 1)} | {cell(m['dead_codes'], 1)} | "
                     f"{cell(m['label_purity'], 3)} |")
    return "\n".join(lines)


def sweep_points(sweep: dict) -> dict:
    """``{K: {codebook: {"bce", "total", "purity"}}}`` from the sweep's stage results."""
    pts = {}
    for K, r in sweep.items():
        K = int(K)
        q = r.get("quantize", {})
        p = {}
        for name, key in (("geovq", "geo"), ("geovq_cluster_mean", "geo_mean"), ("euclidean_vq", "euclidean")):
            if key in q:
                p[name] = {"bce": q[key]["bce_per_image"], "total": q[key]["rates"]["uniform"]["total_per_image"]}
                if "label_purity" in q[key]:
                    p[name]["purity"] = q[key]["label_purity"]
        for name in ("vqvae", "vqvae_strong"):
            if name in r:
                m = r[name]
                p[name] = {"bce": m["bce_per_image"], "total": m["rates"]["uniform"]["total_per_image"],
                           "purity": m["label_purity"], "dead": m["dead_codes"]}
        pts[K] = p
    return pts


def sweep_markdown(sweep: dict) -> str:
    pts = sweep_points(sweep)
    names = [("geovq", "Geo-VQ (medoid)"), ("geovq_cluster_mean", "Geo-VQ (cluster mean)"),
             ("euclidean_vq", "Euclidean-VQ"), ("vqvae", "VQ-VAE (paper)"), ("vqvae_strong", "VQ-VAE (strong)")]
    lines = ["| K | log2 K | " + " | ".join(label for _, label in names) + " |",
             "|---:|---:|" + "---:|" * len(names)]
    for K in sorted(pts):
        cells = [f"{pts[K][n]['bce']:.2f}" if n in pts[K] else "" for n, _ in names]
        lines.append(f"| {K} | {math.log2(K):.0f} | " + " | ".join(cells) + " |")
    vq_names = [(n, label) for n, label in names if n.startswith("vqvae")]
    lines += ["", "Test BCE per image (nats). Label purity against K, and the VQ-VAEs' dead test codes:", "",
              "| K | " + " | ".join(label for n, label in names if n != "geovq_cluster_mean") + " | "
              + " | ".join(f"{label}: dead codes" for _, label in vq_names) + " |",
              "|---:|" + "---:|" * (len(names) - 1 + len(vq_names))]
    for K in sorted(pts):
        cells = [f"{pts[K][n]['purity']:.3f}" if "purity" in pts[K].get(n, {}) else ""
                 for n, _ in names if n != "geovq_cluster_mean"]
        cells += [f"{pts[K][n]['dead']} of {K}" if "dead" in pts[K].get(n, {}) else "" for n, _ in vq_names]
        lines.append(f"| {K} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def subsample_markdown(sub: dict, full: dict) -> str:
    """Codebooks fitted on subsamples, evaluated on every latent, beside the fit on all of them
    (``full``: objective, Geo-VQ BCE per image, label purity)."""
    lines = ["| fitted on | seeds | objective on all latents (vs the full fit) | Geo-VQ test BCE / image | "
             "test label purity | dead codes |", "|---|---:|---:|---:|---:|---:|"]
    for size in sorted(sub, key=int):
        runs = list(sub[size].values())
        obj = [r["objective_all"] / value(full["objective"]) for r in runs]
        lines.append(f"| {int(size):,} random latents | {len(runs)} | {_ms([o for o in obj], 4)} | "
                     f"{_ms([r['geovq_bce_per_image'] for r in runs])} | {_ms([r['label_purity'] for r in runs], 3)} | "
                     f"{_ms([r['dead_codes'] for r in runs], 1)} |")
    lines.append(f"| all latents | | 1 ({cell(full['objective'], 0)}) | {cell(full['bce'])} | "
                 f"{cell(full['purity'], 3)} | {cell(full['dead'], 1)} |")
    return "\n".join(lines)


def _ms(xs, digits: int = 2) -> str:
    import numpy as np

    xs = np.asarray(xs, dtype=float)
    if xs.size < 2:
        return f"{xs.mean():.{digits}f}"
    return f"{xs.mean():.{digits}f} ± {xs.std(ddof=1):.{digits}f}"


def reading(view: dict, sweep: dict | None, sub: dict | None, full: dict | None) -> str:
    """A short plain reading of what the numbers say about the paper's claim, written from them."""
    t = view["table1"]
    v = {k: value(t[k]["total"]) for k in t}
    bce = {k: value(t[k].get("bce")) for k in t}
    out = []
    gap = v["geovq"] - v["vae_neg_elbo"]
    out.append(f"On one scale (BCE + rate, nats per image) the VAE's -ELBO is {v['vae_neg_elbo']:.2f} and its IWAE "
               f"bound {v['vae_iwae']:.2f}; Geo-VQ with medoid decoding costs {v['geovq']:.2f} "
               f"({gap:+.2f} against the -ELBO), and {v['geovq_cluster_mean']:.2f} decoding each cluster's mean.")
    paper_geovq = PAPER_SUMS["geovq"]["total"] / PAPER_N_TEST
    paper_vae = PAPER_SUMS["vae"]["total"] / PAPER_N_TEST
    holds = v["geovq"] <= v["vae_neg_elbo"] * 1.1
    out.append(f"The paper reports Geo-VQ at {paper_geovq:.2f} per image against the VAE's {paper_vae:.2f}, close to "
               f"it; here that {'holds' if holds else 'does not hold'}: Geo-VQ's BCE alone ({bce['geovq']:.2f}) is "
               f"{bce['geovq'] / bce['vae_neg_elbo']:.2f}x the VAE's sampled-z BCE ({bce['vae_neg_elbo']:.2f}). "
               "The paper's Geo-VQ row comes from a different geodesic step (10 clusters on 1,000 sampled latents), "
               "not comparable one to one.")
    best_vq = min(("vqvae", "vqvae_strong"), key=lambda k: v[k])
    cmp = "below" if v["geovq"] < v[best_vq] else "above"
    out.append(f"Against the end-to-end baselines on the same scale, Geo-VQ is {cmp} the better VQ-VAE "
               f"({'strong' if best_vq == 'vqvae_strong' else 'paper-faithful'}, {v[best_vq]:.2f}); the "
               f"paper-faithful VQ-VAE costs {v['vqvae']:.2f} and the strong one {v['vqvae_strong']:.2f}. "
               f"Euclidean-VQ on the same latents costs {v['euclidean_vq']:.2f}: "
               f"{'below' if v['euclidean_vq'] < v['geovq'] else 'above'} Geo-VQ's medoid decoding.")
    purity = {k: value(view["codebooks"][k]["label_purity"]) for k in view["codebooks"]}
    out.append(f"Where geodesic codes do win is meaning: test label purity {purity['geodesic']:.3f} against "
               f"{purity['euclidean']:.3f} (Euclidean), {purity['vqvae']:.3f} and {purity['vqvae_strong']:.3f} "
               "(VQ-VAEs)." if purity["geodesic"] >= max(purity.values()) - 1e-12 else
               f"Test label purity: geodesic {purity['geodesic']:.3f}, Euclidean {purity['euclidean']:.3f}, VQ-VAEs "
               f"{purity['vqvae']:.3f} and {purity['vqvae_strong']:.3f}.")
    if sweep:
        out.append(_sweep_reading(sweep_points(sweep)))
    if sub and full:
        out.append(_subsample_reading(sub, full))
    return " ".join(out)


def _sweep_reading(pts: dict) -> str:
    """Where geodesic codes win and lose across K, with the numbers (one seed's sweep)."""
    Ks = sorted(pts)
    both = [K for K in Ks if "geovq" in pts[K] and "euclidean_vq" in pts[K]]
    parts = []
    if both:
        gaps = ", ".join(f"{pts[K]['geovq']['bce'] - pts[K]['euclidean_vq']['bce']:+.1f} at K = {K}" for K in both)
        wins = [K for K in both if pts[K]["geovq"]["bce"] < pts[K]["euclidean_vq"]["bce"]]
        parts.append("Across codebook sizes " + ", ".join(map(str, Ks)) + ", geodesic medoid decoding "
                     + (f"has the lower BCE than Euclidean-VQ at K = {', '.join(map(str, wins))}" if wins else
                        "never reaches Euclidean-VQ's BCE")
                     + f" (BCE per image, Geo-VQ minus Euclidean-VQ: {gaps})")
        mean = [K for K in both if "geovq_cluster_mean" in pts[K]]
        if mean:
            mgaps = ", ".join(f"{pts[K]['geovq_cluster_mean']['bce'] - pts[K]['euclidean_vq']['bce']:+.1f}"
                              for K in mean)
            parts[-1] += f"; decoding the geodesic clusters' means narrows that to {mgaps}."
        else:
            parts[-1] += "."
        pur = [K for K in both if "purity" in pts[K]["geovq"] and "purity" in pts[K]["euclidean_vq"]]
        if pur:
            diffs = {K: pts[K]["geovq"]["purity"] - pts[K]["euclidean_vq"]["purity"] for K in pur}
            higher = [K for K in pur if diffs[K] > 0]
            parts.append("The geodesic partition's test label purity is "
                         + (f"higher than Euclidean-VQ's at K = {', '.join(map(str, higher))}" if higher else
                            "never higher than Euclidean-VQ's")
                         + " (differences " + ", ".join(f"{diffs[K]:+.3f}" for K in pur) + ")"
                         + (", the margin shrinking as K grows." if len(pur) > 1 and abs(diffs[pur[-1]]) < abs(diffs[pur[0]])
                            else "."))
    strong = [K for K in Ks if "vqvae_strong" in pts[K]]
    if strong:
        best = [K for K in strong if all(pts[K]["vqvae_strong"]["bce"] <= pts[K][n]["bce"] for n in pts[K])]
        if best:
            parts.append(f"The strong VQ-VAE has the lowest BCE of all codebooks at K = {', '.join(map(str, best))}.")
    paper = [K for K in Ks if "vqvae" in pts[K] and "dead" in pts[K]["vqvae"]]
    if paper:
        used = ", ".join(f"{K - pts[K]['vqvae']['dead']} of {K}" for K in paper)
        parts.append(f"The paper-faithful VQ-VAE uses {used} test codes, so its BCE "
                     + ", ".join(f"{pts[K]['vqvae']['bce']:.2f}" for K in paper) + " stops following K.")
    return " ".join(parts)


def _subsample_reading(sub: dict, full: dict) -> str:
    """What fitting on every latent changes and what it does not, per subsample size (mean over seeds)."""
    import numpy as np

    f_obj, f_bce, f_pur = value(full["objective"]), value(full["bce"]), value(full["purity"])
    rows = []
    for size in sorted(sub, key=int):
        runs = list(sub[size].values())
        rows.append((int(size), 100 * (np.mean([r["objective_all"] for r in runs]) / f_obj - 1),
                     np.mean([r["geovq_bce_per_image"] for r in runs]), np.mean([r["label_purity"] for r in runs])))
    obj = ", ".join(f"{e:+.1f} % ({n:,})" for n, e, _, _ in rows)
    bce = ", ".join(f"{b:.2f}" for _, _, b, _ in rows)
    pur = ", ".join(f"{p:.3f}" for _, _, _, p in rows)
    return (f"Codebooks fitted on random subsamples, evaluated on all latents, have a higher objective than the "
            f"fit on every latent: {obj}, mean over seeds; their Geo-VQ test BCE is {bce} against {f_bce:.2f}, "
            f"and their test label purity {pur} against {f_pur:.3f}.")
