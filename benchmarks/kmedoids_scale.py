"""Geodesic k-medoids without the n x n matrix, at 60,000, 250,000 and 1,000,000 latents.

For each n (the first n rows of a latents file; each n in a fresh process, so its peak memory is
its own), this measures:

* the exact kNN graph (k = 10): wall time and its own peak memory;
* on-demand geodesic k-medoids (:class:`rapids_geovq.geodesic.ondemand.OnDemandKMedoids`, K = 64):
  wall time per phase (seeding, assignment, medoid update, swaps), the searches it ran (distance
  rows computed, by kind), the objective (sum of squared geodesic distances);
* Euclidean k-means (scikit-learn, same K, one restart) on the same latents: time and its own
  objective (sum of squared Euclidean distances);
* where the dense matrix fits (``--dense-max``, default 60,000): the dense fit on the same graph
  with the same seed and restarts, as the pipeline runs it (row shards on disk under
  ``--scratch``, removed afterwards), and the ratio of the objectives;
* the process's peak resident memory (VmHWM) and the bytes the dense matrix would need.

Writes ``--out``.json and .md (the machine stated) and prints them. Example, on the paper job's
60,000 latents and a million deformed-MNIST latents made by ``benchmarks/million_latents.py``::

    python benchmarks/kmedoids_scale.py --latents runs/million/latents.npy --sizes 250000 1000000 \\
        --extra-latents runs/paper/seed_0/artifacts/latents.npz:60000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def load(spec: str, n: int):
    import numpy as np

    path = Path(spec)
    if path.suffix == ".npz":
        with np.load(path) as f:
            Z = f["train"]
    else:
        Z = np.load(path, mmap_mode="r")
    if n > Z.shape[0]:
        raise SystemExit(f"{path} has {Z.shape[0]} latents, fewer than {n}")
    return np.ascontiguousarray(Z[:n], dtype=np.float32)


def one(args) -> dict:
    """One size, in this process."""
    from rapids_geovq import knn_graph
    from rapids_geovq.common.resources import peak_rss_bytes
    from rapids_geovq.geodesic.execution import Execution
    from rapids_geovq.geodesic.ondemand import OnDemandKMedoids

    n = args.n
    Z = load(args.latents, n)
    out = {"n": n, "k": args.k, "K": args.clusters, "n_init": args.n_init, "seed": args.seed,
           "dense_matrix_bytes": 4 * n * n}
    t = time.perf_counter()
    graph, info = knn_graph(Z, args.k, return_info=True)
    out["graph"] = {"seconds": round(time.perf_counter() - t, 2), "nnz": int(graph.nnz),
                    "components": info.n_components, "added_edges": info.added_edges,
                    "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3)}
    print(f"n={n}: graph {out['graph']}", flush=True)
    ex = Execution(backend="numpy", n_workers=args.workers, progress=False)
    t = time.perf_counter()
    km = OnDemandKMedoids(args.clusters, n_init=args.n_init, random_state=args.seed, execution=ex).fit(graph, latents=Z)
    total = time.perf_counter() - t
    out["on_demand"] = {"seconds": round(total, 2), "phases": {k: round(v, 2) for k, v in km.timings_.items()},
                        "searches": km.searches_, "objective": km.inertia_, "n_iter": km.n_iter_,
                        "n_swaps": km.n_swaps_, "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3)}
    out["on_demand"]["phases"]["other"] = round(total - sum(km.timings_.values()), 2)
    print(f"n={n}: on-demand {out['on_demand']}", flush=True)
    if n <= args.dense_max:
        # the dense fit as the pipeline runs it: float32 row shards on disk (14.4 GB at 60,000),
        # read through memory maps; an in-memory matrix of that size would not fit beside the rest
        import shutil
        import tempfile

        from rapids_geovq import GeodesicKMeans, geodesic_row_shards

        Path(args.scratch).mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f"dense_{n}_", dir=args.scratch)
        try:
            t = time.perf_counter()
            shards = geodesic_row_shards(graph, tmp, backend="numpy", n_workers=args.workers, progress=False)
            apsp = time.perf_counter() - t
            t = time.perf_counter()
            dense = GeodesicKMeans(args.clusters, n_init=args.n_init, random_state=args.seed, execution=ex).fit(shards)
            out["dense"] = {"all_pairs_seconds": round(apsp, 2), "kmedoids_seconds": round(time.perf_counter() - t, 2),
                            "objective": dense.inertia_, "n_swaps": dense.n_swaps_,
                            "storage": "float32 row shards on disk, memory-mapped",
                            "peak_rss_gib_incl_mapped_shards": round(peak_rss_bytes() / 2**30, 3)}
            out["objective_ratio_on_demand_over_dense"] = km.inertia_ / dense.inertia_
            del shards, dense
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"n={n}: dense {out['dense']}", flush=True)
    from sklearn.cluster import KMeans

    t = time.perf_counter()
    eu = KMeans(args.clusters, n_init=1, random_state=args.seed).fit(Z)
    out["euclidean_kmeans"] = {"seconds": round(time.perf_counter() - t, 2), "objective_euclidean": float(eu.inertia_)}
    out["peak_rss_gib"] = out["on_demand"]["peak_rss_gib"]  # the dense fit's mapped shards are not the method's
    out["graph_plus_kmedoids_seconds"] = round(out["graph"]["seconds"] + out["on_demand"]["seconds"], 2)
    return out


def machine() -> dict:
    import numpy as np

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1]) / 2**20
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1) if mem else None,
            "python": platform.python_version(), "numpy": np.__version__, "gpu": None}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# Geodesic k-medoids without the n x n matrix: scale", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU. k = {res['k']}, "
             f"K = {res['K']}, {res['n_init']} restart(s), seed {res['seed']}, {res['workers']} threads. "
             f"Command: `{res['command']}`.", "",
             "| n | kNN graph | seeding | assignment | medoid update | swaps | k-medoids total | graph + k-medoids | "
             "peak memory | dense matrix would need | Euclidean k-means | objective |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        p = r["on_demand"]["phases"]
        lines.append(
            f"| {r['n']:,} | {r['graph']['seconds']:.0f} s | {p['seeding']:.0f} s | {p['assignment']:.0f} s | "
            f"{p['update']:.0f} s | {p['swaps']:.0f} s | {r['on_demand']['seconds']:.0f} s | "
            f"**{r['graph_plus_kmedoids_seconds'] / 60:.1f} min** | {r['peak_rss_gib']:.2f} GiB | "
            f"{r['dense_matrix_bytes'] / 2**30:,.0f} GiB | {r['euclidean_kmeans']['seconds']:.0f} s | "
            f"{r['on_demand']['objective']:.6g} |")
    lines += ["", "Searches (distance rows computed, each bounded to where it can matter):", "",
              "| n | full rows | k-means++ trials | member costs | swap candidates | swaps made |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        s = r["on_demand"]["searches"]
        lines.append(f"| {r['n']:,} | {s['full_rows']:,} | {s['seed_trials']:,} | {s['member_costs']:,} | "
                     f"{s['swap_candidates']:,} | {r['on_demand']['n_swaps']} |")
    dense = [r for r in res["runs"] if "dense" in r]
    if dense:
        lines += ["", "Beside the dense fit (all-pairs matrix as float32 row shards on disk, as the pipeline runs it; same graph, seed and restarts):", "",
                  "| n | all pairs | dense k-medoids | dense objective | on-demand objective | ratio |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in dense:
            d = r["dense"]
            lines.append(f"| {r['n']:,} | {d['all_pairs_seconds']:.0f} s | {d['kmedoids_seconds']:.0f} s | "
                         f"{d['objective']:.6g} | {r['on_demand']['objective']:.6g} | "
                         f"{r['objective_ratio_on_demand_over_dense']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", help=".npy (n, d) latents, or .npz with 'train' (a run's latents.npz)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[])
    ap.add_argument("--extra-latents", nargs="*", default=[],
                    help="more runs as PATH:N (e.g. the paper job's latents.npz:60000)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--n-init", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--dense-max", type=int, default=60000, help="largest n also fitted densely")
    ap.add_argument("--out", default="docs/benchmarks/kmedoids_scale")
    ap.add_argument("--scratch", default="bench-scratch", help="where the dense fit's shards are written (and removed)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # one size, in this process
    args = ap.parse_args(argv)
    if args.one is not None:
        args.n = args.one
        print("RESULT " + json.dumps(one(args)), flush=True)
        return 0
    jobs = [(args.latents, n) for n in args.sizes] + [tuple(x.rsplit(":", 1)) for x in args.extra_latents]
    jobs = sorted(((p, int(n)) for p, n in jobs), key=lambda j: j[1])
    res = {"machine": machine(), "k": args.k, "K": args.clusters, "n_init": args.n_init, "seed": args.seed,
           "workers": args.workers, "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "runs": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, n in jobs:
        cmd = [sys.executable, __file__, "--latents", path, "--one", str(n), "--k", str(args.k), "--clusters",
               str(args.clusters), "--n-init", str(args.n_init), "--seed", str(args.seed), "--workers",
               str(args.workers), "--dense-max", str(args.dense_max), "--scratch", args.scratch]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"n={n} failed (exit {proc.returncode})")
        r = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
        r["latents"] = path
        res["runs"].append(r)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1))
        out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
