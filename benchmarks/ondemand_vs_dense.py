"""On-demand geodesic k-medoids against the dense fit, on the paper job's 60,000 latents, same seeds.

For each seed's run of a finished multi-seed paper job (``runs/paper/seed_<s>/``), this fits
on-demand k-medoids on that run's kNN graph with that run's k-medoids settings and seed, and sets it
beside the run's own dense fit (its ``kmeans`` stage): the objective (sum of squared geodesic
distances), and Geo-VQ on the test set with each codebook: BCE per image (the run's VAE decodes the
code's medoid latent) and label purity. The dense pipeline's spread over seeds is the run-to-run
noise the differences are compared with. Writes ``--out``.json and .md and prints them::

    python benchmarks/ondemand_vs_dense.py --run runs/paper
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def one_seed(run_dir: Path, workers: int | None) -> dict:
    import scipy.sparse as sp

    from rapids_geovq import sequences as S
    from rapids_geovq.config import KMeansConfig, load_job
    from rapids_geovq.data import images_to_float, load_mnist
    from rapids_geovq.geodesic.codebook import GeodesicCodebook
    from rapids_geovq.geodesic.execution import Execution
    from rapids_geovq.models import training as T
    from rapids_geovq.pipeline.layout import RunLayout

    lay = RunLayout(run_dir)
    cfg = load_job(lay.config)
    kc = cfg.kmeans
    with np.load(lay.latents) as f:
        z_train, z_test = f["train"], f["test"]
    graph = sp.load_npz(lay.knn_graph).tocsr()
    dense = GeodesicCodebook.load(lay.codebook)
    ex = Execution(backend="numpy", n_workers=workers)
    t = time.perf_counter()
    # the candidate sets are the package's current defaults: the dense run never used them, so the
    # values its saved config holds (those of the version that ran it) say nothing about it
    defaults = KMeansConfig()
    od = GeodesicCodebook(kc.n_clusters, k=cfg.graph.k, n_init=kc.n_init, max_iter=kc.max_iter, swap=kc.swap,
                          random_state=kc.seed, storage="on_demand", update_candidates=defaults.update_candidates,
                          swap_near=defaults.swap_near, swap_far=defaults.swap_far, execution=ex)
    od.fit_medoids_on_demand(z_train, graph, execution=ex)
    seconds = time.perf_counter() - t
    mnist = load_mnist(idx_dir=cfg.data.idx_dir, data_dir=cfg.data.data_dir)
    n_test = cfg.data.n_test or mnist.test_images.shape[0]
    x_test = images_to_float(mnist.test_images[:n_test])
    y_test = mnist.test_labels[:n_test].astype(np.int64)
    vae, _, _ = T.load_checkpoint(lay.vae)
    out = {"seed": kc.seed, "on_demand_seconds": round(seconds, 1), "searches": od.searches_,
           "candidates": {"update_candidates": defaults.update_candidates, "swap_near": defaults.swap_near,
                          "swap_far": defaults.swap_far}}
    for name, cb in (("dense", dense), ("on_demand", od)):
        codes = cb.predict(z_test)
        bce = T.bce_per_image(T.decode_latents(vae, cb.decode(codes)), x_test)
        out[name] = {"objective": cb.inertia_, "geovq_bce_per_image": float(bce.mean()),
                     "label_purity": S.label_purity(codes, y_test, kc.n_clusters),
                     "dead_codes": S.dead_codes(codes, kc.n_clusters), "n_swaps": cb.n_swaps_}
    out["objective_ratio"] = od.inertia_ / dense.inertia_
    out["same_medoids"] = int(np.intersect1d(od.medoid_indices_, dense.medoid_indices_).size)
    return out


def markdown(res: dict) -> str:
    rows = res["seeds"]
    lines = ["# On-demand geodesic k-medoids against the dense fit (60,000 latents)", "",
             f"Runs: `{res['run']}` (the paper job's seeds), K = 64, each seed's own graph, settings and k-medoids "
             f"seed; on-demand candidates per cluster: {rows[0]['candidates']['update_candidates']} for the medoid "
             f"update, {rows[0]['candidates']['swap_near']} nearest and {rows[0]['candidates']['swap_far']} farthest "
             f"for the swaps; machine: {res['machine']}. Command: `{res['command']}`.", "",
             "| seed | objective, dense | objective, on demand | ratio | Geo-VQ BCE / image, dense | on demand | "
             "label purity, dense | on demand | medoids in common | on-demand time |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d, o = r["dense"], r["on_demand"]
        lines.append(f"| {r['seed']} | {d['objective']:.6g} | {o['objective']:.6g} | {r['objective_ratio']:.4f} | "
                     f"{d['geovq_bce_per_image']:.2f} | {o['geovq_bce_per_image']:.2f} | {d['label_purity']:.4f} | "
                     f"{o['label_purity']:.4f} | {r['same_medoids']} / 64 | {r['on_demand_seconds']:.0f} s |")
    s = res["summary"]
    lines += ["", f"Objective ratio (on demand / dense): mean {s['ratio_mean']:.4f}, worst {s['ratio_max']:.4f}. "
              f"Geo-VQ BCE per image: on demand {s['bce_on_demand']:.2f} ± {s['bce_on_demand_sd']:.2f}, dense "
              f"{s['bce_dense']:.2f} ± {s['bce_dense_sd']:.2f} (mean ± sd over seeds: the run-to-run noise); label "
              f"purity on demand {s['purity_on_demand']:.4f} ± {s['purity_on_demand_sd']:.4f}, dense "
              f"{s['purity_dense']:.4f} ± {s['purity_dense_sd']:.4f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/paper", help="a finished multi-seed job's run_dir")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default="docs/benchmarks/ondemand_vs_dense")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kmedoids_scale import machine

    m = machine()
    runs = sorted(Path(args.run).glob("seed_*"), key=lambda p: int(p.name.split("_")[1]))
    if not runs:
        raise SystemExit(f"no seed_<s> runs in {args.run}: run the multi-seed paper job first")
    res = {"run": args.run, "machine": f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU",
           "command": " ".join(["python", *sys.argv]), "seeds": []}
    for run in runs:
        r = one_seed(run, args.workers)
        print(json.dumps(r), flush=True)
        res["seeds"].append(r)
    ratio = [r["objective_ratio"] for r in res["seeds"]]

    def ms(key, which):
        v = np.array([r[which][key] for r in res["seeds"]])
        return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")

    res["summary"] = {"ratio_mean": float(np.mean(ratio)), "ratio_max": float(np.max(ratio))}
    for key, name in (("geovq_bce_per_image", "bce"), ("label_purity", "purity")):
        for which in ("dense", "on_demand"):
            res["summary"][f"{name}_{which}"], res["summary"][f"{name}_{which}_sd"] = ms(key, which)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
