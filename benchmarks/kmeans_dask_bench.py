"""Geodesic k-medoids on a Dask cluster against the same fit on threads, interleaved.

Multi-GPU and multi-node runs go through the Dask engine, where k-medoids pays for every task's
round trip. This builds the geodesic shards of the first ``--n`` latents once, then fits K medoids
(the quick job's settings: K = 64, 2 restarts) on this process's threads and on a Dask
``LocalCluster`` with the same number of single-threaded worker processes, alternating
(threads, Dask, threads, Dask, ...) so both see the same machine, and checks the results are
identical. ``--shards`` uses a run's shard directory as it is instead (all its rows). Writes
``--out``.json and .md::

    python benchmarks/kmeans_dask_bench.py --latents runs/paper/seed_0/artifacts/latents.npz
    python benchmarks/kmeans_dask_bench.py --shards runs/paper/seed_0/geodesic --n-init 3 --repeats 2 \
        --out docs/benchmarks/kmeans_dask_60k
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--latents", help="latents (.npz or .npy): the geodesic shards of the first --n are built")
    src.add_argument("--shards", help="an existing geodesic shard directory (a run's geodesic/), used as it is")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--n-init", type=int, default=2)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shard-rows", type=int, default=None,
                    help="rows per geodesic shard (a swap task's block never crosses one); default the package's")
    ap.add_argument("--scratch", default="bench-scratch/kmeans_dask")
    ap.add_argument("--out", default="docs/benchmarks/kmeans_dask")
    args = ap.parse_args(argv)

    from rapids_geovq import GeodesicKMeans, knn_graph, load_row_shards
    from rapids_geovq.geodesic.engine import connect
    from rapids_geovq.geodesic.execution import Execution
    from rapids_geovq.geodesic.shortest_paths import geodesic_row_shards

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kmedoids_scale import load, machine

    scratch = Path(args.scratch)
    if args.shards:
        D = load_row_shards(args.shards)
        args.n = D.shape[0]
    else:
        Z = load(args.latents, args.n)
        shutil.rmtree(scratch, ignore_errors=True)
        extra = {} if args.shard_rows is None else {"shard_rows": args.shard_rows}
        geodesic_row_shards(knn_graph(Z, 10), scratch / "geo", backend="numpy", n_workers=args.workers,
                            progress=False, **extra)
        D = load_row_shards(scratch / "geo")
    shard_rows = int(D.shards[0].stop - D.shards[0].start)
    engines = {"threads": connect("threads", args.workers), "dask": connect("local", args.workers)}
    times = {k: [] for k in engines}
    fits = {}
    try:
        for name, eng in engines.items():  # warm-up: kernels compiled, workers' imports done
            GeodesicKMeans(4, n_init=1, random_state=0, execution=Execution(backend="numpy", engine=eng)).fit(D)
        for r in range(args.repeats):
            for name, eng in engines.items():
                t = time.perf_counter()
                km = GeodesicKMeans(args.clusters, n_init=args.n_init, random_state=0,
                                    execution=Execution(backend="numpy", engine=eng)).fit(D)
                times[name].append(time.perf_counter() - t)
                fits[name] = km
                print(f"repeat {r}: {name} {times[name][-1]:.2f} s (inertia {km.inertia_:.9g}, {km.n_swaps_} swaps)",
                      flush=True)
        # what one Dask task costs here, whatever it computes
        rtt = []
        for _ in range(50):
            t = time.perf_counter()
            engines["dask"].submit(_noop, 0).result()
            rtt.append(time.perf_counter() - t)
        round_trip_ms = float(np.median(rtt) * 1e3)
    finally:
        for eng in engines.values():
            eng.close()
        shutil.rmtree(scratch, ignore_errors=True)
    a, b = fits["threads"], fits["dask"]
    same = bool(np.array_equal(a.medoid_indices_, b.medoid_indices_) and np.array_equal(a.labels_, b.labels_)
                and a.inertia_ == b.inertia_)
    ratios = [d / t for d, t in zip(times["dask"], times["threads"])]
    m = machine()
    res = {"machine": m, "n": args.n, "K": args.clusters, "n_init": args.n_init, "workers": args.workers,
           "shard_rows": shard_rows,
           "threads_seconds": times["threads"], "dask_seconds": times["dask"], "ratio_dask_over_threads": ratios,
           "ratio_median": float(np.median(ratios)), "identical": same, "n_swaps": int(a.n_swaps_),
           "dask_round_trip_ms": round_trip_ms,
           "phase_seconds_last_repeat": {k: {p: round(v, 3) for p, v in f.timings_.items()} for k, f in fits.items()},
           "command": " ".join(["python", *sys.argv])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = ["# Geodesic k-medoids: Dask LocalCluster against threads", "",
          f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB. n = {args.n:,} latents, K = {args.clusters}, "
          f"{args.n_init} restarts, {args.workers} threads against {args.workers} single-threaded Dask worker "
          f"processes, interleaved, shards of {shard_rows:,} rows. Command: `{res['command']}`.", "",
          "| repeat | threads | Dask | Dask / threads |", "|---:|---:|---:|---:|"]
    for i, (t, d) in enumerate(zip(times["threads"], times["dask"])):
        md.append(f"| {i} | {t:.2f} s | {d:.2f} s | {d / t:.2f} |")
    md += ["", f"Median ratio {res['ratio_median']:.2f}; identical medoids, labels and inertia: {'yes' if same else 'NO'} "
           f"({res['n_swaps']} swaps in the best restart).", "",
           "Seconds per phase in the last repeat (all restarts):", "",
           "| engine | seeding | assignment | medoid update | swaps |", "|---|---:|---:|---:|---:|"]
    for k, ph in res["phase_seconds_last_repeat"].items():
        md.append(f"| {k} | {ph['seeding']:.2f} | {ph['assignment']:.2f} | {ph['update']:.2f} | {ph['swaps']:.2f} |")
    md += ["",
           f"A Dask task's round trip on this machine (median of 50 empty tasks, same cluster): "
           f"{round_trip_ms:.1f} ms. On Dask a swap task applies the swaps it finds itself, on a copy of "
           f"the swap state kept in the worker's process, and scans on to the end of its block of 2,048 "
           f"candidates (across shard ends), so a round trip is paid per block scanned rather than per swap."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if same else 1


def _noop(x):
    return x


if __name__ == "__main__":
    sys.exit(main())
