"""GPU benchmark: exact kNN, all-pairs shortest paths (APSP) and geodesic k-means on one GPU, each
beside its CPU reference, at n = 60,000 latents, in one command of a few minutes.

1. kNN (k = 10): ``exact_knn`` (CPU) against ``brute_knn`` (CuPy) and ``cuml_knn`` where cuML imports.
2. APSP on the kNN graph: all n rows into one (n, n) float32 device buffer (``DeviceGraph.rows``, after
   a sweep over ``--lanes``); the CPU engine (``NumbaPaths``, all cores) on a sample of rows;
   cuGraph's one-SSSP-per-source loop and its batched mode where pylibcugraph imports. The floor: the
   matrix's bytes at the device's memory bandwidth, and n * nnz edge relaxations of one float64 load
   each (``--relax-bytes``) at that bandwidth.
3. Geodesic k-means (K = 64, 3 restarts) on device-resident shards of ``geodesic_row_shards(method=
   "cuda")`` (timed apart), then the CPU reference on the same shard files.
4. Optionally the per-stage seconds of a finished paper job (``--paper-job-dir``).

GPU figures are warm and synchronised, and checked equal to the CPU reference. A step that would
overrun its budget is measured on a subset and extrapolated (``"extrapolated": true``). Issue
targets on one H100: APSP <= 10 s, kNN <= 0.2 s, k-means <= 2 s. On the GPU machine (~7 min)::

    python benchmarks/gpu_bench.py --latents runs/paper/artifacts/latents.npz

Plumbing check without a GPU (Numba's CUDA simulator, tiny n)::

    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_bench.py --synthetic 60 --allow-simulator --out /tmp/gb

Writes ``<out>/gpu_<tag>.json`` (all raw figures) and ``<out>/gpu_<tag>.md``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from geodesic_bench import _version, load_latents, machine  # noqa: E402

TARGETS = {"knn": 0.2, "apsp": 10.0, "kmeans": 2.0}  # seconds on one H100 (the targets)
BANDWIDTH = {"H100 PCIE": 2.0e12, "H100 NVL": 3.9e12, "H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}
SIM_MAX_N = 100
KMEANS_FIT_GUESS = 30.0  # seconds, both fits together at n = 60,000 (only to pick a k-means subset)
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


def left(args) -> float:
    return args.time_limit - (time.perf_counter() - T0)


def sim() -> bool:
    from rapids_geovq.gpu.device import simulated

    return simulated()


def sync() -> None:  # no-op under the simulator
    if not sim():
        __import__("cupy").cuda.runtime.deviceSynchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    r = fn()
    sync()
    return r, time.perf_counter() - t


def free_device_memory() -> None:
    __import__("gc").collect()
    if not sim():
        __import__("cupy").get_default_memory_pool().free_all_blocks()


def device_info() -> dict:
    import numba

    info = {"numba": numba.__version__}
    if sim():
        return {**info, "name": "Numba CUDA simulator (no GPU)", "simulator": True, "bandwidth_bytes_s": None}
    import cupy

    rt = cupy.cuda.runtime
    p = rt.getDeviceProperties(0)
    name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
    bw, src = None, None
    if p.get("memoryClockRate") and p.get("memoryBusWidth"):  # kHz, bits; HBM/GDDR move 2 words a clock
        bw, src = 2.0 * p["memoryClockRate"] * 1e3 * p["memoryBusWidth"] / 8, "device properties"
    else:
        for key, val in BANDWIDTH.items():  # most specific first
            if key in name.upper():
                bw, src = val, "datasheet table"
                break
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20).stdout.split()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        driver = str(rt.driverGetVersion())
    torch_v = _version("torch")
    return {**info, "name": name, "simulator": False, "memory_gib": round(p["totalGlobalMem"] / 2**30, 1),
            "cuda_runtime": rt.runtimeGetVersion(), "driver": driver, "cupy": cupy.__version__, "torch": torch_v,
            "bandwidth_bytes_s": bw, "bandwidth_source": src, "sm_count": p.get("multiProcessorCount")}


def gpu_tag(name: str) -> str:
    m = re.search(r"\b([A-Z]{1,2}\d{2,4})\b", name.upper().replace("NVIDIA", ""))
    return m.group(1).lower() if m else (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu")


def synthetic(n: int, d: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.normal(size=(10, d))
    return (centres[rng.integers(10, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


# --- steps -----------------------------------------------------------------------------------

def bench_knn(Z: np.ndarray, k: int, repeats: int) -> dict:
    from rapids_geovq.geodesic.knn import exact_knn
    from rapids_geovq.gpu.cuda_paths import device_module
    from rapids_geovq.gpu.knn import brute_knn

    xp = device_module()
    t = time.perf_counter()
    dc, ic = exact_knn(Z, k)
    out = {"cpu": {"seconds": time.perf_counter() - t, "method": "exact_knn (scikit-learn brute, exact re-rank)"}}
    Zd = xp.asarray(Z)  # latents already on the device, as the encoder leaves them
    runs = {"cupy": lambda: brute_knn(Zd, k, xp=xp)}
    if not sim() and importlib.util.find_spec("cuml") is not None:
        from rapids_geovq.gpu.knn import cuml_knn

        runs["cuml"] = lambda: cuml_knn(Zd, k)
    for name, fn in runs.items():
        try:
            fn()  # warm-up
            times = [timed(fn)[1] for _ in range(repeats)]
            dg, ig = fn()
            out[name] = {"seconds": min(times), "all_seconds": times, "identical": bool(
                np.array_equal(ig, ic) and np.array_equal(dg, dc)), "target_s": TARGETS["knn"],
                "met": min(times) <= TARGETS["knn"]}
        except Exception as exc:  # report, don't die: the other figures still count
            out[name] = {"error": repr(exc)}
        log(f"kNN {name}: {out[name]}")
    return out


def floor(n: int, nnz: int, seconds: float, bw: float, relax_bytes: float) -> dict:
    nbytes, relax, rate = n * n * 4, n * nnz, bw / relax_bytes
    f = max(nbytes / bw, relax / rate)
    return {"bytes": nbytes, "relaxations_lower_bound": relax, "bandwidth_bytes_s": bw, "relax_bytes": relax_bytes,
            "relaxation_rate_per_s": rate, "bytes_floor_s": nbytes / bw, "relax_floor_s": relax / rate,
            "floor_s": f, "distance_from_floor": seconds / f}


def bench_apsp(plan, args, dev: dict) -> tuple[dict, object]:
    from rapids_geovq.gpu.cuda_paths import DeviceGraph, device_module

    xp = device_module()
    n, nnz = plan.n, int(plan.indices.size)
    dg = DeviceGraph(plan.indptr, plan.indices, plan.weights, col_of=plan.order)
    lanes = list(dict.fromkeys(min(int(v), n) for v in args.lanes.split(",")))  # in the order given
    rows_fit = n
    if not sim():
        import cupy

        free = cupy.cuda.runtime.memGetInfo()[0] + cupy.get_default_memory_pool().free_bytes()
        rows_fit = int(min(n, (free - (2 << 30) - max(lanes) * n * 10) // (n * 4)))
    buf = xp.empty((rows_fit, n), xp.float32)
    _, fill_s = timed(lambda: buf.fill(0))  # the write floor, measured: every byte of the buffer once
    w = min(64, n)
    timed(lambda: dg.rows(np.arange(w), lanes=w, out=buf[:w]))  # compile the kernels
    sub = min(args.sweep_rows, rows_fit)
    sweep = {}
    for L in lanes:
        sweep[L] = timed(lambda: dg.rows(np.arange(sub), lanes=L, out=buf[:sub]))[1]
        log(f"APSP lanes={L}: {sub} sources in {sweep[L]:.2f} s ({sweep[L] / sub * 1e3:.3f} ms/source)")
        if sum(sweep.values()) > args.apsp_budget / 3:
            break  # the sweep may not eat the budget of the full pass
    best = min(sweep, key=sweep.get)
    per_row = sweep[best] / sub
    budget = max(5.0, min(args.apsp_budget, left(args) - 60))
    m = rows_fit if per_row * rows_fit <= budget else min(rows_fit, max(sub, int(budget / per_row) // best * best))
    chunk = max(best, (m // 10) // best * best)
    t = time.perf_counter()
    for s in range(0, m, chunk):
        e = min(s + chunk, m)
        dg.rows(np.arange(s, e), lanes=best, out=buf[s:e])
        sync()
        log(f"APSP rows {e:>7,}/{m:,} in {time.perf_counter() - t:.1f} s")
    secs = time.perf_counter() - t
    full = secs * n / m
    bw = dev.get("bandwidth_bytes_s") or n * rows_fit * 4 / fill_s
    out = {"n": n, "nnz": nnz, "lanes": best, "delta": dg.delta, "rows_computed": m, "seconds": secs,
           "full_seconds": full, "extrapolated": m < n, "ms_per_source": secs / m * 1e3,
           "bytes_written": m * n * 4, "achieved_gb_s": m * n * 4 / secs / 1e9,
           "relaxations_lower_bound": m * nnz, "relaxations_per_s": m * nnz / secs,
           "relaxations_note": "the kernels do not count relaxations; n*nnz (each edge once per source, as "
                               "Dijkstra) is a lower bound on those done",
           "fill_seconds": fill_s, "fill_gb_s": n * rows_fit * 4 / fill_s / 1e9,
           "lanes_sweep": {str(L): {"sources": sub, "seconds": s_} for L, s_ in sweep.items()},
           "floor": floor(n, nnz, full, bw, args.relax_bytes), "target_s": TARGETS["apsp"],
           "met": full <= TARGETS["apsp"]}
    out["floor"]["bandwidth_source"] = dev.get("bandwidth_source") or "measured fill of the row buffer"
    return out, buf


def bench_cpu_rows(plan, buf, m_gpu: int, args) -> dict:
    from rapids_geovq.common.arrays import to_host
    from rapids_geovq.cpu.paths import NumbaPaths

    solver = NumbaPaths()
    n, cores, step = plan.n, os.cpu_count() or 1, 64
    solver.fill(plan, 0, min(8, n), np.empty((min(8, n), n), np.float32))  # compile
    total = min(args.cpu_rows, n)
    rows = np.empty((total, n), np.float32)
    budget = max(2.0, min(args.cpu_budget, left(args) - 40))
    done, t = 0, time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:  # like the engine: one thread per core, 64 sources per task
        while done < total and (done == 0 or time.perf_counter() - t < budget):
            e = min(done + cores * step, total)
            list(pool.map(lambda s: solver.fill(plan, s, min(s + step, e), rows[s:min(s + step, e)]),
                          range(done, e, step)))
            done = e
    secs = time.perf_counter() - t
    cmp = min(done, m_gpu)
    return {"rows": done, "cores": cores, "seconds": secs, "ms_per_source_per_core": secs * cores / done * 1e3,
            "full_seconds": secs * n / done, "extrapolated": done < n, "compared_rows": cmp,
            "identical": bool(np.array_equal(to_host(buf[:cmp]), rows[:cmp])),
            "method": f"compiled multi-source kernel (NumbaPaths), {cores} threads"}


def bench_cugraph(plan, buf, m_gpu: int, args) -> dict:
    if sim():
        return {"skipped": "no GPU (simulator)"}
    if importlib.util.find_spec("pylibcugraph") is None and importlib.util.find_spec("cugraph") is None:
        return {"skipped": "pylibcugraph / cuGraph not installed"}
    from rapids_geovq.common.arrays import to_host
    from rapids_geovq.gpu.cugraph_paths import cugraph_rows

    n, out = plan.n, {}
    try:
        _, warm = timed(lambda: cugraph_rows(plan.graph, plan.order[:1], mode="per_source"))
        budget = max(2.0, min(args.cugraph_budget, left(args) - 30)) / 2
        for mode, want, batch in (("per_source", 64, 1), ("batched", 256, 64)):
            m = min(want, m_gpu, max(batch, int(budget / max(warm, 1e-3)) // batch * batch))
            timed(lambda: cugraph_rows(plan.graph, plan.order[:min(m, batch)], mode=mode, batch=batch))
            rows, secs = timed(lambda: cugraph_rows(plan.graph, plan.order[:m], mode=mode, batch=batch))
            out[mode] = {"sources": m, "batch": batch, "seconds": secs, "ms_per_source": secs / m * 1e3,
                         "full_seconds": secs * n / m, "extrapolated": True,
                         "identical": bool(np.array_equal(rows, to_host(buf[:m])))}
            log(f"cuGraph {mode}: {out[mode]}")
    except Exception as exc:
        out["error"] = repr(exc)
    return out


def bench_kmeans(Z, graph, apsp: dict, args) -> dict:
    from rapids_geovq.geodesic.engine import ThreadEngine
    from rapids_geovq.geodesic.execution import Execution
    from rapids_geovq.geodesic.kmeans import GeodesicKMeans as KM
    from rapids_geovq.geodesic.knn import knn_graph
    from rapids_geovq.geodesic.shortest_paths import geodesic_row_shards, load_row_shards

    n, seed, cores, notes = graph.shape[0], args.seed, os.cpu_count() or 1, []
    base = Path(args.scratch or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    budget = max(10.0, min(args.kmeans_budget, left(args) - 10))
    est = apsp["full_seconds"] * 1.1 + n * n * 4 / 1e9 + KMEANS_FIT_GUESS * (n / 60000) ** 2
    n_km = n if est <= 0.8 * budget else int(n * math.sqrt(0.8 * budget / est))
    if n_km < n:
        notes.append(f"estimated {est:.0f} s at n={n} exceeds the {budget:.0f} s budget")
    free = shutil.disk_usage(base).free
    if n_km * n_km * 4 * 1.1 > free:
        n_km = min(n_km, int(math.sqrt(free / 4 / 1.1)))
        notes.append(f"{free / 1e9:.1f} GB free on {base}; shards for n={n} need {n * n * 4 / 1e9:.1f} GB")
    if n_km < n and n_km < max(4 * args.clusters, 256):
        return {"skipped": "; ".join(notes) + f"; a subset of {n_km} points is too small", "extrapolated": True}
    K = args.clusters if args.clusters < n_km // 4 else max(2, n_km // 8)
    if K != args.clusters:
        notes.append(f"K={args.clusters} is too many for {n_km} points: K={K}")
    g = graph if n_km == n else knn_graph(Z[:n_km], args.k)
    scratch = Path(tempfile.mkdtemp(prefix="gpu-bench-", dir=base))  # removed at the end
    from rapids_geovq.backends.cupy_backend import CupyBackend

    # under the simulator the CuPy backend's objects run without its check for a real GPU
    gpu_backend = CupyBackend() if sim() else "cupy"
    d, eng = scratch / "shards", ThreadEngine(1)
    gpu_ex = Execution(backend=gpu_backend, engine=eng)
    cpu_ex = Execution(backend="numpy", n_workers=cores, block_rows=args.cpu_block_rows)
    try:
        try:  # warm-up: compile the path and k-means kernels (GPU and CPU), untimed
            wd = geodesic_row_shards(knn_graph(Z[:min(n_km, 200)], args.k), scratch / "warm", shard_rows=64,
                                     engine=eng, method="cuda", backend=gpu_backend, progress=False)
            KM(2, n_init=1, random_state=0, execution=Execution(backend=gpu_backend, engine=eng, block_rows=64)).fit(wd)
            KM(2, n_init=1, random_state=0, execution=Execution(backend="numpy", n_workers=1)).fit(
                load_row_shards(scratch / "warm"))
            del wd
            D, shards_s = timed(lambda: geodesic_row_shards(g, d, engine=eng, method="cuda", backend=gpu_backend,
                                                            progress=False))
            on_gpu = D.held.count_on_device()
            log(f"k-means: shards for n={n_km} written in {shards_s:.1f} s ({on_gpu}/{len(D.shards)} on the GPU)")
            gk, gpu_s = timed(lambda: KM(K, n_init=args.n_init, random_state=seed, execution=gpu_ex).fit(D))
            log(f"k-means GPU fit: {gpu_s:.2f} s, inertia {gk.inertia_:.6g}")
            D = None  # the device copies of the shards go back before the CPU fit
        finally:
            eng.close()
        free_device_memory()
        t = time.perf_counter()
        ck = KM(K, n_init=args.n_init, random_state=seed, execution=cpu_ex).fit(load_row_shards(d))
        cpu_s = time.perf_counter() - t
        log(f"k-means CPU fit: {cpu_s:.2f} s, inertia {ck.inertia_:.6g}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    scale = (n / n_km) ** 2  # rough: a restart costs ~n^2 (swap scan over n candidates of n-long rows)
    same = bool(np.array_equal(gk.medoid_indices_, ck.medoid_indices_) and np.array_equal(gk.labels_, ck.labels_)
                and gk.inertia_ == ck.inertia_)
    return {"n": n_km, "clusters": K, "n_init": args.n_init, "extrapolated": n_km < n, "scale": scale,
            "notes": notes, "shards_seconds": shards_s, "shards_on_gpu": on_gpu, "shards_full_seconds": shards_s * scale,
            "gpu": {"seconds": gpu_s, "full_seconds": gpu_s * scale, "inertia": gk.inertia_,
                    "block_rows": gpu_ex.swap_block_rows(),
                    "n_swaps": int(gk.n_swaps_), "n_iter": int(gk.n_iter_)},
            "cpu": {"seconds": cpu_s, "full_seconds": cpu_s * scale, "inertia": ck.inertia_,
                    "block_rows": args.cpu_block_rows, "n_workers": cores},
            "identical": same, "target_s": TARGETS["kmeans"], "met": gpu_s * scale <= TARGETS["kmeans"]}


def paper_job(directory: str) -> dict:
    d = Path(directory)
    stages = {p.stem: json.loads(p.read_text()) for p in
              sorted((d / "stages").glob("*.json")) or sorted(d.glob("*/stages/*.json"))}
    stages = {k: {"seconds": v.get("seconds"), "peak_rss_gib": v.get("peak_rss_gib")} for k, v in stages.items()}
    return {"dir": directory, "stages": stages, "total_seconds": round(sum(s["seconds"] or 0 for s in stages.values()), 2),
            "note": "each record holds the seconds of the run that last computed that stage"}


# --- report ----------------------------------------------------------------------------------

def _s(x, extra: bool = False) -> str:
    return "-" if x is None else f"{x:.3g} s" + (" (extrap.)" if extra else "")


def _yn(x) -> str:
    return "-" if x is None else ("yes" if x else "NO")


def markdown(r: dict) -> str:
    m, dev = r["machine"], r["device"]
    # a simulator run checks the plumbing; its times say nothing about a target
    met = (lambda x: "n/a (simulator)") if dev["simulator"] else _yn
    lines = [f"Device: {dev['name']}" + (f", {dev.get('memory_gib')} GiB, CUDA runtime {dev.get('cuda_runtime')}, "
                                         f"driver {dev.get('driver')}, CuPy {dev.get('cupy')}" if not dev["simulator"] else "")
             + f", Numba {dev['numba']}; host: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM.",
             f"n = {r['n']:,} latents (`{r['latents']}`), k = {r['k']}, K = {r['clusters']}. Targets are for one H100.",
             "", "| step | GPU | CPU reference | cuGraph loop | target | met | identical |",
             "|---|---:|---:|---:|---:|:---:|:---:|"]
    knn = r.get("knn", {})
    for name in ("cupy", "cuml"):
        g = knn.get(name)
        if g:
            lines.append(f"| kNN ({name}) | {_s(g.get('seconds')) if 'error' not in g else g['error']} | "
                         f"{_s(knn['cpu']['seconds'])} | - | <= {TARGETS['knn']} s | {met(g.get('met'))} | "
                         f"{_yn(g.get('identical'))} |")
    a, c, cgr = r.get("apsp"), r.get("apsp_cpu", {}), r.get("apsp_cugraph", {})
    cg = cgr.get("per_source", {})
    if a:
        ident = [v for v in (c.get("identical"), cg.get("identical"),
                             cgr.get("batched", {}).get("identical")) if v is not None]
        lines.append(f"| APSP, {a['n']:,} rows in device memory | {_s(a['full_seconds'], a['extrapolated'])} | "
                     f"{_s(c.get('full_seconds'), c.get('extrapolated'))} ({c.get('cores')} cores) | {_s(cg.get('full_seconds'), bool(cg))} | "
                     f"<= {TARGETS['apsp']} s | {met(a['met'])} | {_yn(all(ident)) if ident else '-'} |")
    km = r.get("kmeans", {})
    if "gpu" in km:
        lines.append(f"| APSP as shards on disk (`geodesic_row_shards`) | {_s(km['shards_full_seconds'], km['extrapolated'])}"
                     " | - | - | - | - | - |")
        lines.append(f"| k-means K={km['clusters']}, {km['n_init']} restarts | {_s(km['gpu']['full_seconds'], km['extrapolated'])}"
                     f" | {_s(km['cpu']['full_seconds'], km['extrapolated'])} ({km['cpu']['n_workers']} threads) | - | "
                     f"<= {TARGETS['kmeans']} s | {met(km['met'])} | {_yn(km['identical'])} |")
    elif km:
        lines.append(f"| k-means | skipped: {km.get('skipped') or km.get('error')} | | | | | |")
    if a:
        f = a["floor"]
        lines += ["", f"APSP floor: {f['bytes'] / 1e9:.1f} GB of float32 rows at {f['bandwidth_bytes_s'] / 1e12:.2f} TB/s "
                  f"({f['bandwidth_source']}) = {f['bytes_floor_s']:.3g} s; {f['relaxations_lower_bound']:.3g} edge "
                  f"relaxations (n * nnz) at one {f['relax_bytes']:g}-byte load each = {f['relax_floor_s']:.3g} s. "
                  f"Floor {f['floor_s']:.3g} s; measured {a['full_seconds']:.3g} s = **{f['distance_from_floor']:.1f}x the floor**.",
                  f"Achieved: {a['achieved_gb_s']:.2f} GB/s of rows written, >= {a['relaxations_per_s']:.3g} relaxations/s "
                  f"({a['rows_computed']:,} rows in {a['seconds']:.2f} s, {a['lanes']} lanes; filling the buffer once: "
                  f"{a['fill_gb_s']:.0f} GB/s).",
                  "Lanes sweep: " + ", ".join(f"{L}: {v['seconds']:.3g} s / {v['sources']} sources"
                                             for L, v in a["lanes_sweep"].items()) + "."]
    if r.get("paper_job", {}).get("stages"):
        p = r["paper_job"]
        lines += ["", f"Paper job (`{p['dir']}`), seconds per stage: " + ", ".join(
            f"{k} {v['seconds']}" for k, v in p["stages"].items()) + f"; total {p['total_seconds']} s."]
    lines += ["", "(extrap.): measured on a subset and scaled (linear in rows for APSP, quadratic in n for k-means); "
              "raw figures in the JSON.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--latents", help=".npz with a 'train' array (a run's artifacts/latents.npz) or .npy")
    src.add_argument("--synthetic", type=int, metavar="N", help="N fixed-seed Gaussian-mixture latents in 20-D")
    ap.add_argument("--n", type=int, default=None, help="use the first n latents")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--n-init", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lanes", default="1024,512,2048", help="lane counts to sweep, in this order")
    ap.add_argument("--sweep-rows", type=int, default=8192, help="sources per lanes trial")
    ap.add_argument("--cpu-rows", type=int, default=2048, help="rows of the CPU reference sample")
    ap.add_argument("--cpu-block-rows", type=int, default=64, help="block_rows of the CPU k-means")
    ap.add_argument("--knn-repeats", type=int, default=3)
    ap.add_argument("--relax-bytes", type=float, default=8.0, help="DRAM bytes per edge relaxation in the floor")
    ap.add_argument("--time-limit", type=float, default=400.0, help="seconds for the whole run")
    for step, secs in (("apsp", 100.0), ("cpu", 30.0), ("cugraph", 30.0), ("kmeans", 180.0)):
        ap.add_argument(f"--{step}-budget", type=float, default=secs, help=f"seconds for the {step} step")
    ap.add_argument("--no-kmeans", action="store_true")
    ap.add_argument("--scratch", default=None, help="where the k-means shards go (a temp dir inside it, removed; default: the system's)")
    ap.add_argument("--paper-job-dir", default=None, help="run_dir of a finished paper job (stages/*.json)")
    ap.add_argument("--out", default="docs/benchmarks", help="directory for gpu_<tag>.json and .md")
    ap.add_argument("--tag", default=None, help="file tag (default: from the GPU name, e.g. h100)")
    ap.add_argument("--allow-simulator", action="store_true",
                    help="without a GPU, run on Numba's CUDA simulator at tiny n (plumbing checks only)")
    args = ap.parse_args(argv)

    from rapids_geovq.gpu.device import gpu_count  # imports neither CuPy nor Numba

    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and gpu_count() == 0:
        if not args.allow_simulator:
            print("gpu_bench: no CUDA GPU visible (CuPy sees none, or is not installed); run it on a GPU "
                  "machine, or pass --allow-simulator for a plumbing check on Numba's simulator", file=sys.stderr)
            return 2
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before Numba is imported
    from rapids_geovq.geodesic.knn import knn_graph
    from rapids_geovq.geodesic.plan import make_plan

    dev = device_info()
    Z = synthetic(args.synthetic) if args.synthetic else load_latents(args.latents).astype(np.float32)
    Z = Z[: args.n] if args.n else Z
    if dev["simulator"] and Z.shape[0] > SIM_MAX_N:
        log(f"simulator: n capped at {SIM_MAX_N} (from {Z.shape[0]})")
        Z = Z[:SIM_MAX_N]
    Z = np.ascontiguousarray(Z)
    n = Z.shape[0]
    tag = args.tag or ("simulator" if dev["simulator"] else gpu_tag(dev["name"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r = {"machine": machine(), "device": dev, "latents": args.latents or f"synthetic({args.synthetic})", "n": n,
         "k": args.k, "clusters": args.clusters, "targets_s": TARGETS, "args": vars(args)}

    def save():
        r["elapsed_seconds"] = time.perf_counter() - T0
        (out / f"gpu_{tag}.json").write_text(json.dumps(r, indent=1, default=float))
        (out / f"gpu_{tag}.md").write_text(markdown(r))

    log(f"device: {dev['name']}; n={n}")
    r["knn"] = bench_knn(Z, args.k, args.knn_repeats)
    save()
    t = time.perf_counter()
    graph, info = knn_graph(Z, args.k, return_info=True)
    t2 = time.perf_counter()
    plan = make_plan(graph)
    r["graph"] = {"seconds": t2 - t, "nnz": int(graph.nnz), "components": info.n_components,
                  "added_edges": info.added_edges, "plan_seconds": time.perf_counter() - t2}
    log(f"graph: {r['graph']}")
    r["apsp"], buf = bench_apsp(plan, args, dev)
    log(f"APSP: {r['apsp']['full_seconds']:.2f} s for all {n} rows"
        + (" (extrapolated)" if r["apsp"]["extrapolated"] else "") + f", {r['apsp']['floor']['distance_from_floor']:.1f}x floor")
    save()
    r["apsp_cpu"] = bench_cpu_rows(plan, buf, r["apsp"]["rows_computed"], args)
    log(f"APSP CPU reference: {r['apsp_cpu']}")
    r["apsp_cugraph"] = bench_cugraph(plan, buf, r["apsp"]["rows_computed"], args)
    save()
    del buf
    free_device_memory()
    if not args.no_kmeans:
        try:
            r["kmeans"] = bench_kmeans(Z, graph, r["apsp"], args)
        except Exception as exc:
            r["kmeans"] = {"error": repr(exc)}
        log(f"k-means: {r['kmeans']}")
    if args.paper_job_dir:
        r["paper_job"] = paper_job(args.paper_job_dir)
    save()
    print(markdown(r))
    log(f"wrote {out / f'gpu_{tag}.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
