"""A million deformed MNIST latents and their exact kNN graph, on one machine.

Steps (each timed, with its peak resident memory read from ``VmHWM`` in ``/proc/self/status``,
reset before the step through ``/proc/self/clear_refs``):

a. **latents**: N deformations of MNIST's training digits (:mod:`rapids_geovq.deform`, image i from
   digit ``i % 60000``) encoded with a VAE checkpoint's posterior means into ``OUT/latents.npy``
   (float32, N x latent_dim) and ``OUT/labels.npy`` (uint8). ``OUT/latents.json`` records the
   settings (deformation ranges, seed, N, the checkpoint's SHA-256) and the rows written so far;
   a run with the same settings skips a finished set and resumes an unfinished one.
b. **knn**: the exact k nearest neighbours (:func:`rapids_geovq.cpu.partition_knn.partition_knn`)
   saved as ``OUT/knn_dist.npy`` (float64, N x k) and ``OUT/knn_ind.npy`` (int64), skipped when
   ``OUT/knn.json`` shows the same latents and settings. ``--verify R`` then recomputes R random
   rows by brute force with the reference's arithmetic and requires them equal.

Optional measurements beside them:

* ``--sizes 250000 ...``: the kNN of the first n latents (the first n of a deformed set are the
  set of n, so these are the smaller sets), and ``--reference-max`` up to which
  :func:`rapids_geovq.geodesic.knn.exact_knn` is timed beside it and compared (same indices,
  bit-equal distances);
* ``--paper-latents runs/paper/artifacts/latents.npz``: the same on the real 60,000 training
  latents.
* ``--preview``: ``OUT/preview.png``, 100 deformations beside their source digits.

All results go to ``OUT/benchmark.json`` (merged with earlier runs' entries) and are printed.

Usage::

    python benchmarks/million_latents.py --checkpoint runs/paper/checkpoints/vae.pt \\
        --out runs/million --n 1000000 --verify 200 \\
        --sizes 250000 --paper-latents runs/paper/artifacts/latents.npz
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

GIB = 1024.0 ** 3


# --------------------------------------------------------------------------- measuring
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}; this script measures memory on Linux only")


def _reset_peak() -> None:
    # "5" resets the peak resident set size (VmHWM) to the current one (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


class Step:
    """Times a block and records its peak resident memory (VmHWM, reset on entry)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.record: dict = {}

    def __enter__(self) -> "Step":
        _reset_peak()
        self.rss0 = _status_kib("VmRSS")
        self.load0 = os.getloadavg()
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        print(f"[{self.name}] start (RSS {self.rss0 / 2**20:.2f} GiB, load {self.load0[0]:.1f})",
              flush=True)
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            return
        self.record.update({
            "seconds": round(time.perf_counter() - self.t0, 2),
            "cpu_seconds": round(time.process_time() - self.c0, 2),
            "peak_rss_gib": round(_status_kib("VmHWM") / 2**20, 3),
            "rss_at_start_gib": round(self.rss0 / 2**20, 3),
            "load_average_start": [round(x, 2) for x in self.load0],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        })
        print(f"[{self.name}] {self.record['seconds']:.1f} s (CPU {self.record['cpu_seconds']:.1f} s), "
              f"peak RSS {self.record['peak_rss_gib']:.2f} GiB", flush=True)


def _machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpus": len(os.sched_getaffinity(0)),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
            "python": platform.python_version(), "numpy": np.__version__}


def _crc32(arr: np.ndarray) -> int:
    import zlib

    crc = 0
    flat = arr.reshape(-1)
    for s in range(0, flat.size, 1 << 24):
        crc = zlib.crc32(np.ascontiguousarray(flat[s:s + (1 << 24)]).tobytes(), crc)
    return crc & 0xFFFFFFFF


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- steps
def make_latents(args, out: Path) -> dict:
    import torch

    from rapids_geovq.data import file_sha256
    from rapids_geovq.deform import deformed_mnist, encode_deformed, preview_grid
    from rapids_geovq.models.training import load_checkpoint

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    data = deformed_mnist(args.n, seed=args.seed, keep_originals=args.keep_originals)
    if args.preview:
        # deformations of the first 100 digits' third copies (or the last 100 images of a small set)
        first = min(2 * data.source_images.shape[0], max(0, args.n - 100))
        preview_grid(data, out / "preview.png", count=100, start=first)
        print(f"preview: {out / 'preview.png'}", flush=True)
    settings = {"deformations": data.settings(), "checkpoint": str(args.checkpoint),
                "checkpoint_sha256": file_sha256(args.checkpoint)}
    rec_path, lat_path, lab_path = out / "latents.json", out / "latents.npy", out / "labels.npy"
    rec = _read_json(rec_path)
    start = 0
    if not args.force and rec.get("settings") == settings and lat_path.is_file() and lab_path.is_file():
        start = int(rec.get("rows_done", 0))
        if start >= args.n:
            print(f"[latents] {lat_path} is complete with these settings: not redone", flush=True)
            return {"skipped": True, **rec.get("measured", {})}
        print(f"[latents] resuming at row {start:,}", flush=True)
    elif rec:
        print("[latents] settings differ from the last run (or --force): computing anew", flush=True)

    def on_flush(done: int) -> None:
        _write_json(rec_path, {"settings": settings, "rows_done": done})

    vae, _, _ = load_checkpoint(args.checkpoint)
    with Step("latents") as step:
        _write_json(rec_path, {"settings": settings, "rows_done": start})
        encode_deformed(vae, data, lat_path, lab_path, start=start, batch_size=args.batch_size,
                        flush_every=args.flush_every, on_flush=on_flush, progress=True)
    measured = {**step.record, "images": args.n - start, "resumed_at": start,
                "images_per_second": round((args.n - start) / max(step.record["seconds"], 1e-9), 1),
                "torch_threads": torch.get_num_threads()}
    _write_json(rec_path, {"settings": settings, "rows_done": args.n, "measured": measured})
    return measured


def _knn_settings(args, n: int, crc: int) -> dict:
    return {"n": n, "k": args.k, "latents_crc32": crc, "n_clusters": args.n_clusters,
            "seed": args.knn_seed}


def build_knn(args, out: Path) -> dict:
    from rapids_geovq.cpu.partition_knn import partition_knn

    Z = np.load(out / "latents.npy", mmap_mode="r")
    settings = _knn_settings(args, Z.shape[0], _crc32(Z))
    rec_path = out / "knn.json"
    rec = _read_json(rec_path)
    if (not args.force and rec.get("settings") == settings and (out / "knn_dist.npy").is_file()
            and (out / "knn_ind.npy").is_file()):
        print("[knn] neighbours of these latents with these settings exist: not redone", flush=True)
        return {"skipped": True, **rec.get("measured", {})}
    rec_path.unlink(missing_ok=True)
    with Step("knn") as step:
        Z = np.ascontiguousarray(Z)  # read the memory map once (float32, N x d)
        dist, ind, stats = partition_knn(Z, args.k, n_clusters=args.n_clusters, n_jobs=args.jobs,
                                         seed=args.knn_seed, progress=True, return_stats=True)
        del Z
        for name, arr in (("knn_dist.npy", dist), ("knn_ind.npy", ind)):
            tmp = out / f".{name}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
            os.replace(tmp, out / name)
    measured = {**step.record, "n": settings["n"], "k": args.k, **_stats(stats)}
    _write_json(rec_path, {"settings": settings, "measured": measured})
    return measured


def _stats(stats) -> dict:
    return {"n_clusters": stats.n_clusters, "pair_fraction": round(stats.pair_fraction, 4),
            "exact_per_query": round(stats.exact_per_query, 1),
            "seconds_partition": round(stats.seconds_partition, 2),
            "seconds_search": round(stats.seconds_search, 2)}


def verify_rows(out: Path, rows: int, seed: int) -> dict:
    """Recompute random rows by brute force, exactly as the reference does, and compare."""
    from rapids_geovq.common.exact_knn import full_rows

    Z = np.load(out / "latents.npy").astype(np.float64)
    dist = np.load(out / "knn_dist.npy", mmap_mode="r")
    ind = np.load(out / "knn_ind.npy", mmap_mode="r")
    k = dist.shape[1]
    pick = np.sort(np.random.default_rng(seed).choice(Z.shape[0], rows, replace=False))
    t0 = time.perf_counter()
    bad = 0
    for s in range(0, rows, 20):
        r = pick[s:s + 20]
        fd, fi = full_rows(Z[r], Z, k, r)
        bad += int(np.sum(np.any((fi != ind[r]) | (fd.view(np.int64) != dist[r].view(np.int64)), axis=1)))
    rec = {"rows": rows, "rows_differing": bad, "seconds": round(time.perf_counter() - t0, 1)}
    print(f"[verify] {rows} random rows recomputed by brute force: {bad} differ", flush=True)
    if bad:
        raise SystemExit(f"{bad} of {rows} verified rows differ from the brute-force reference")
    return rec


def measure_knn(Z: np.ndarray, args, label: str, reference: bool) -> dict:
    """Time partition_knn on Z (and exact_knn beside it when ``reference``), compare the two."""
    from rapids_geovq.cpu.partition_knn import partition_knn
    from rapids_geovq.geodesic.knn import exact_knn

    Z = np.ascontiguousarray(Z)
    result = {"n": int(Z.shape[0]), "k": args.k}
    with Step(f"{label}: partition_knn") as step:
        d1, i1, stats = partition_knn(Z, args.k, n_clusters=None if args.n_clusters is None else
                                      min(args.n_clusters, Z.shape[0]), n_jobs=args.jobs,
                                      seed=args.knn_seed, return_stats=True)
    result["partition_knn"] = {**step.record, **_stats(stats)}
    if reference:
        with Step(f"{label}: exact_knn") as step:
            d0, i0 = exact_knn(Z, args.k)
        same_ind = bool(np.array_equal(i0, i1))
        same_dist = bool(np.array_equal(d0.view(np.int64), d1.view(np.int64)))
        result["exact_knn"] = step.record
        result["equal_indices"], result["bit_equal_distances"] = same_ind, same_dist
        print(f"[{label}] same indices: {same_ind}, bit-equal distances: {same_dist}", flush=True)
        if not (same_ind and same_dist):
            raise SystemExit(f"{label}: partition_knn differs from exact_knn")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/paper/checkpoints/vae.pt"),
                    help="VAE checkpoint (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("runs/million"), help="output directory")
    ap.add_argument("--n", type=int, default=1_000_000, help="deformed digits (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="deformation seed")
    ap.add_argument("--keep-originals", action="store_true",
                    help="images 0..59999 are the undeformed digits (infiMNIST's convention)")
    ap.add_argument("--batch-size", type=int, default=10_000, help="images per encoder call")
    ap.add_argument("--flush-every", type=int, default=100_000, help="rows between progress records")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--k", type=int, default=10, help="neighbours per point (default: %(default)s)")
    ap.add_argument("--n-clusters", type=int, default=None, help="partition_knn clusters (default: its own)")
    ap.add_argument("--knn-seed", type=int, default=0, help="seed of partition_knn's k-means")
    ap.add_argument("--jobs", type=int, default=None, help="kNN threads (default: all CPUs)")
    ap.add_argument("--verify", type=int, default=0, metavar="R",
                    help="recompute R random rows of the N-point kNN by brute force and compare")
    ap.add_argument("--sizes", type=int, nargs="*", default=[],
                    help="also time the kNN of the first n latents for these n")
    ap.add_argument("--paper-latents", type=Path, default=None,
                    help="latents.npz of a finished run: also time the kNN of its 'train' latents")
    ap.add_argument("--reference-max", type=int, default=60_000,
                    help="run exact_knn beside partition_knn for sizes up to this (default: %(default)s)")
    ap.add_argument("--skip-million", action="store_true",
                    help="only the extra measurements (--sizes, --paper-latents) on existing latents")
    ap.add_argument("--preview", action="store_true", help="write OUT/preview.png")
    ap.add_argument("--force", action="store_true", help="recompute steps even if their outputs exist")
    args = ap.parse_args(argv)
    if not args.checkpoint.is_file() and not args.skip_million:
        ap.error(f"checkpoint {args.checkpoint} not found: train a VAE first "
                 "(`rapids-geovq run jobs/paper.yaml`) or pass --checkpoint")
    args.out.mkdir(parents=True, exist_ok=True)
    bench_path = args.out / "benchmark.json"
    bench = _read_json(bench_path)
    bench["machine"] = _machine()
    bench.setdefault("knn_sizes", {})

    def save() -> None:
        _write_json(bench_path, bench)

    if not args.skip_million:
        bench["latents"] = make_latents(args, args.out)
        save()
        bench["knn"] = build_knn(args, args.out)
        save()
        if args.verify:
            bench["knn"]["verify"] = verify_rows(args.out, args.verify, seed=1)
            save()
    if args.paper_latents is not None:
        with np.load(args.paper_latents) as npz:
            Z = npz["train"]
        bench["knn_sizes"]["paper_train"] = measure_knn(
            Z, args, f"paper latents n={Z.shape[0]:,}", reference=Z.shape[0] <= args.reference_max)
        save()
    for n in args.sizes:
        Z = np.load(args.out / "latents.npy", mmap_mode="r")
        if n > Z.shape[0]:
            raise SystemExit(f"--sizes {n} exceeds the {Z.shape[0]:,} latents in {args.out}")
        bench["knn_sizes"][f"deformed_{n}"] = measure_knn(
            Z[:n], args, f"deformed n={n:,}", reference=n <= args.reference_max)
        save()
    print(json.dumps(bench, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
