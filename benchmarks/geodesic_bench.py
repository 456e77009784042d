"""Geodesic engine benchmark: SciPy's Dijkstra against the compiled multi-source kernel, and
FasterPAM against geodesic k-means, side by side in one run, on a real latent set.

For each size n (the first n latents), it builds the exact kNN graph, then

* computes the all-pairs matrix as float32 row shards twice, with the same number of cores:
  SciPy's ``dijkstra`` (one process per core, a Dask LocalCluster, batches of 64 sources) and this
  package's engine (``geodesic.cluster=none``: threads running the compiled kernel). The two are
  interleaved round by round (each round, the next shards with SciPy, then the same shards with the
  engine) so that both see the same machine; it records seconds, milliseconds per source per core,
  peak RSS, and checks the two matrices are bit-identical shard by shard;
* clusters it with K medoids twice: :class:`rapids_geovq.GeodesicKMeans` over the shards as the
  pipeline runs it, and ``kmedoids.fasterpam`` on the squared matrix loaded whole into memory
  (float32, n^2 * 4 bytes); both objectives are recomputed the same way (float64 sum of squared
  geodesic distances to the nearest medoid).

Usage (latents from a finished job, e.g. ``rapids-geovq run jobs/paper.yaml``)::

    python benchmarks/geodesic_bench.py --latents runs/paper/artifacts/latents.npz \\
        --sizes 10000 20000 60000 --scratch /tmp/geovq-bench

Writes JSON and a Markdown table (default ``docs/benchmarks/geodesic_cpu.{json,md}``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np


class PeakRSS:
    """Peak resident set size, summed over this process and its children (sampled)."""

    def __init__(self, interval: float = 0.25):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self._proc] + self._proc.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self._sample()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._sample())

    @property
    def gib(self) -> float:
        return round(self.peak / 2**30, 3)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def load_latents(path: str) -> np.ndarray:
    if path.endswith(".npz"):
        with np.load(path) as f:
            return f["train"] if "train" in f.files else f[f.files[0]]
    return np.load(path)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "python": sys.version.split()[0],
            "platform": platform.platform()}


def warm_up() -> None:
    """Compile (or load from cache) the kernels before any clock starts."""
    import scipy.sparse as sp

    from rapids_geovq.geodesic.execution import Execution
    from rapids_geovq.geodesic.kmeans import GeodesicKMeans
    from rapids_geovq.geodesic.shortest_paths import geodesic_matrix

    path = sp.diags(np.ones(9), 1, shape=(10, 10))
    D = geodesic_matrix((path + path.T).tocsr(), n_workers=1, backend="numpy")
    GeodesicKMeans(2, n_init=1, execution=Execution(backend="numpy", n_workers=1)).fit(D)


def bench_paths(graph, scratch: Path, n_workers: int, shard_rows: int) -> tuple[dict, object]:
    """SciPy and the engine over the same shards, interleaved: each round computes the next
    ``n_workers`` shards with SciPy (one Dask worker process per shard) and then with the engine
    (one thread per shard), so both see the same machine conditions; per-round times are summed."""
    from rapids_geovq.cpu.paths import NumbaPaths, ScipyPaths
    from rapids_geovq.geodesic.engine import ThreadEngine, connect
    from rapids_geovq.geodesic.plan import make_plan
    from rapids_geovq.geodesic.shortest_paths import compute_shard, geodesic_row_shards

    n = graph.shape[0]
    t = time.perf_counter()
    plan = make_plan(graph)  # row order and renumbered graph: part of the engine's cost
    plan_seconds = time.perf_counter() - t
    ranges = [(s, min(s + shard_rows, n)) for s in range(0, n, shard_rows)]
    dirs = {"scipy": scratch / "scipy", "engine": scratch / "ours"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    cluster = connect("local", n_workers)  # started before any clock
    threads = ThreadEngine(n_workers)
    secs = {"scipy": 0.0, "engine": plan_seconds}
    peak = {"scipy": 0, "engine": 0}
    identical = True
    try:
        plan_ref = cluster.scatter(plan)
        workers = cluster.workers()
        for g in range(0, len(ranges), n_workers):
            group = ranges[g : g + n_workers]
            for name, eng, ref in (("scipy", cluster, plan_ref), ("engine", threads, plan)):
                with PeakRSS() as mem:
                    t = time.perf_counter()
                    solver = ScipyPaths() if name == "scipy" else NumbaPaths()
                    futs = [eng.submit(compute_shard, ref, str(dirs[name]), s, e, solver,
                                       worker=workers[i % len(workers)] if name == "scipy" else None)
                            for i, (s, e) in enumerate(group)]
                    [f.result() for f in futs]
                    secs[name] += time.perf_counter() - t
                peak[name] = max(peak[name], mem.peak)
            for s, e in group:
                a = np.load(dirs["scipy"] / f"rows_{s:07d}_{e:07d}.npy", mmap_mode="r")
                b = np.load(dirs["engine"] / f"rows_{s:07d}_{e:07d}.npy", mmap_mode="r")
                identical &= bool(np.array_equal(a, b))
                del a, b
                (dirs["scipy"] / f"rows_{s:07d}_{e:07d}.npy").unlink()
            print(f"  rows {group[-1][1]:>7,}/{n:,}: SciPy {secs['scipy']:.1f} s, engine {secs['engine']:.1f} s",
                  flush=True)
    finally:
        cluster.close()
        threads.close()
    shutil.rmtree(dirs["scipy"], ignore_errors=True)
    # the finished directory, as the pipeline sees it (CRC-verified reuse, manifest)
    ours = geodesic_row_shards(graph, dirs["engine"], shard_rows=shard_rows, n_workers=n_workers, backend="numpy",
                               progress=False)
    out = {}
    for name, label in (("scipy", f"SciPy dijkstra, Dask LocalCluster, {n_workers} processes"),
                        ("engine", f"compiled multi-source kernel, {n_workers} threads in one process")):
        out[name] = {"seconds": round(secs[name], 2),
                     "ms_per_source_per_core": round(secs[name] / n * n_workers * 1e3, 3),
                     "peak_rss_gib": round(peak[name] / 2**30, 3), "engine": label}
    out["engine"]["plan_seconds"] = round(plan_seconds, 2)
    out["speedup"] = round(secs["scipy"] / secs["engine"], 2)
    out["identical"] = identical
    return out, ours


def bench_kmeans(D, n_clusters: int, n_init: int, n_workers: int, seed: int) -> dict:
    import kmedoids

    from rapids_geovq.geodesic.execution import Execution
    from rapids_geovq.geodesic.kmeans import GeodesicKMeans, kmeans_objective

    n = D.shape[0]
    out = {}
    with PeakRSS() as mem:
        t = time.perf_counter()
        km = GeodesicKMeans(n_clusters, n_init=n_init, random_state=seed,
                            execution=Execution(backend="numpy", n_workers=n_workers, progress=True)).fit(D)
        secs = time.perf_counter() - t
    out["geodesic_kmeans"] = {"seconds": round(secs, 2), "objective": kmeans_objective(D, km.medoid_indices_),
                              "n_init": n_init, "n_swaps": int(km.n_swaps_), "n_iter": int(km.n_iter_),
                              "peak_rss_gib": mem.gib}
    gc.collect()
    t = time.perf_counter()
    D2 = np.empty((n, n), np.float32)
    for rows, arr in zip(D.shard_rows, D.arrays):
        D2[rows] = np.square(arr)
    load = time.perf_counter() - t
    with PeakRSS() as mem:
        t = time.perf_counter()
        fp = kmedoids.fasterpam(D2, n_clusters, random_state=seed, n_cpu=n_workers)
        secs = time.perf_counter() - t
    del D2
    gc.collect()
    out["fasterpam"] = {"seconds": round(secs, 2), "objective": kmeans_objective(D, np.asarray(fp.medoids)),
                        "load_squared_matrix_seconds": round(load, 2), "n_iter": int(fp.n_iter),
                        "n_swaps": int(fp.n_swap), "peak_rss_gib": mem.gib,
                        "settings": f"kmedoids {_version('kmedoids')} fasterpam, init=random, "
                                    f"n_cpu={n_workers}, float32 D^2 in memory"}
    out["time_ratio"] = round(out["fasterpam"]["seconds"] / out["geodesic_kmeans"]["seconds"], 2)
    out["objective_ratio"] = out["geodesic_kmeans"]["objective"] / out["fasterpam"]["objective"]
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, no GPU; "
        f"k = {result['k']}, K = {result['n_clusters']}, latents: `{result['latents']}`.",
        "",
        "All-pairs shortest paths (float32 row shards on disk, same cores for both):",
        "",
        "| n | SciPy dijkstra s | ms/source/core | peak RSS GiB | engine s | ms/source/core | peak RSS GiB | speed-up | identical |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in result["runs"]:
        p = r["paths"]
        lines.append(f"| {r['n']:,} | {p['scipy']['seconds']:.1f} | {p['scipy']['ms_per_source_per_core']:.2f} | "
                     f"{p['scipy']['peak_rss_gib']:.2f} | {p['engine']['seconds']:.1f} | "
                     f"{p['engine']['ms_per_source_per_core']:.2f} | {p['engine']['peak_rss_gib']:.2f} | "
                     f"{p['speedup']:.2f}x | {'yes' if p['identical'] else 'NO'} |")
    lines += ["", f"K-medoids on squared geodesic distances (K = {result['n_clusters']}):", "",
              "| n | FasterPAM s | FasterPAM objective | geodesic k-means s | objective | time ratio (FasterPAM / ours) | objective ratio (ours / FasterPAM) |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        k = r.get("kmeans")
        if not k:
            continue
        lines.append(f"| {r['n']:,} | {k['fasterpam']['seconds']:.1f} | {k['fasterpam']['objective']:.6g} | "
                     f"{k['geodesic_kmeans']['seconds']:.1f} | {k['geodesic_kmeans']['objective']:.6g} | "
                     f"{k['time_ratio']:.2f} | {k['objective_ratio']:.5f} |")
    lines += ["", "FasterPAM time excludes loading the squared matrix into memory "
              "(`load_squared_matrix_seconds` in the JSON); geodesic k-means reads the shards where they are.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", required=True, help=".npz with a 'train' array (a run's artifacts/latents.npz) or .npy")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000, 60000])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--n-init", type=int, default=None, help="k-means restarts (default: the package default)")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--shard-rows", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-kmeans", action="store_true")
    ap.add_argument("--scratch", default="bench-scratch", help="directory for the shards (deleted afterwards)")
    ap.add_argument("--out", default="docs/benchmarks/geodesic_cpu", help="path stem for .json and .md")
    args = ap.parse_args(argv)

    from rapids_geovq.geodesic.kmeans import GeodesicKMeans
    from rapids_geovq.geodesic.knn import knn_graph

    n_init = args.n_init or GeodesicKMeans().n_init
    warm_up()
    Z = load_latents(args.latents).astype(np.float32)
    result = {"machine": machine(), "latents": args.latents, "k": args.k, "n_clusters": args.clusters,
              "workers": args.workers, "shard_rows": args.shard_rows, "runs": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        if n > Z.shape[0]:
            raise SystemExit(f"--sizes {n} is more than the {Z.shape[0]} latents in {args.latents}")
        scratch = Path(args.scratch) / f"n{n}"
        shutil.rmtree(scratch, ignore_errors=True)
        t = time.perf_counter()
        graph = knn_graph(Z[:n], args.k)
        run = {"n": n, "nnz": int(graph.nnz), "graph_seconds": round(time.perf_counter() - t, 2)}
        print(f"n={n}: graph with {graph.nnz} edges", flush=True)
        run["paths"], D = bench_paths(graph, scratch, args.workers, args.shard_rows)
        print(json.dumps(run["paths"], indent=1), flush=True)
        if not args.no_kmeans:
            run["kmeans"] = bench_kmeans(D, args.clusters, n_init, args.workers, args.seed)
            print(json.dumps(run["kmeans"], indent=1), flush=True)
        del D
        shutil.rmtree(scratch, ignore_errors=True)
        result["runs"].append(run)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
