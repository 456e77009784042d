"""How much disk a whole run needs, checked before its first stage.

The geodesic shards dominate (n^2 float32), but a run also writes checkpoints, artifacts, figures
and a report; a check that counted only the shards let a run that followed its advice fill the
disk while writing figures. Everything a run writes is counted here, less what a resumed run has
already written.
"""
from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..common.resources import ResourceError, fmt_bytes, free_disk_bytes
from .layout import RunLayout

#: Figures, report, logs, records and configuration: a generous bound, well above what is written.
SMALL_FILES = 64 << 20


def _params(*layers) -> int:
    """Parameters of fully connected layers given as (in, out) pairs (weights and biases)."""
    return sum(i * o + o for i, o in layers)


def run_disk_bytes(cfg, n_train: int, n_test: int) -> dict:
    """Bytes each part of a run writes, for ``n_train`` / ``n_test`` images."""
    v, q, p = cfg.vae, cfg.vqvae, cfg.prior
    K, d, k = cfg.kmeans.n_clusters, v.latent_dim, cfg.graph.k
    vae = _params((v.input_dim, v.hidden_dim), (v.hidden_dim, d), (v.hidden_dim, d), (d, v.hidden_dim),
                  (v.hidden_dim, v.input_dim))
    vq = _params((q.input_dim, q.hidden_dim), (q.hidden_dim, q.code_dim), (q.code_dim, q.hidden_dim),
                 (q.hidden_dim, q.input_dim)) + q.n_codes * q.code_dim * 3  # codebook and its EMA state
    gru = 3 * p.hidden_dim * (p.embed_dim + p.hidden_dim + 2) + (p.n_codes + 1) * p.embed_dim + _params((p.hidden_dim, p.n_codes))
    kinds = len(cfg.sequences.kinds)
    checkpoints = 4 * (vae + vq + kinds * gru) + (1 << 20) * (2 + kinds)  # plus histories and headers
    edges = 2 * k * n_train  # a symmetrised kNN graph has at most 2k edges per point
    artifacts = (4 * d * (n_train + n_test)                      # latents
                 + 12 * edges + 8 * (n_train + 1)                # kNN graph (CSR)
                 + n_train * (4 * K + 8 * d + 8 * 2)             # codebook: distances to codes, latents, labels
                 + n_train * 8 + 4 * K * d                       # Euclidean codebook
                 + n_test * 8 * 6 + 4 * K * d                    # test codes and their losses
                 + kinds * 8 * (cfg.eval.n_samples * p.seq_len + n_test + n_train)  # prior samples
                 + 8 * n_test)                                   # VQ-VAE test codes
    return {"geodesic": 4 * n_train * n_train, "checkpoints": checkpoints, "artifacts": artifacts,
            "figures_and_records": SMALL_FILES}


def _written(layout: RunLayout) -> int:
    return sum(f.stat().st_size for f in layout.root.rglob("*") if f.is_file()) if layout.root.exists() else 0


def resolve_storage(layout: RunLayout, cfg, n_train: int, n_test: int) -> str:
    """``geodesic.storage`` for this run: as set, or for ``auto`` dense when the whole run with the
    dense matrix fits the disk of the run directory, else on demand (no matrix)."""
    from ..config import ConfigError
    from ..geodesic.engine import cluster_name

    storage = cfg.geodesic.storage
    if storage == "auto":
        need = sum(run_disk_bytes(cfg, n_train, n_test).values())
        storage = "dense" if need - _written(layout) <= free_disk_bytes(layout.root) else "on_demand"
        if storage == "on_demand":
            layout_note = f"the {n_train}x{n_train} geodesic matrix ({fmt_bytes(4 * n_train ** 2)}) does not fit"
            if cluster_name(cfg.geodesic.cluster) != "threads":
                raise ConfigError(f"{layout_note} on the disk of {layout.root}, and on-demand k-medoids (no matrix) "
                                  "runs on this process's threads: set geodesic.cluster=threads, or give run_dir "
                                  "a larger disk")
    return storage


def check_run_disk(layout: RunLayout, cfg, n_train: int, n_test: int, *, dense: bool = True) -> dict:
    """Refuse a run whose files cannot fit on the disk of its run directory (what a resumed run
    already wrote counts as written; ``dense=False``: no geodesic matrix is written). Raises
    :class:`ResourceError` naming the directory, what is needed and the most points that fit."""
    need = run_disk_bytes(cfg, n_train, n_test)
    if not dense:
        need["geodesic"] = 0
    done = _written(layout)
    total = sum(need.values())
    free = free_disk_bytes(layout.root)
    if total - done > free:
        fixed = total - need["geodesic"]
        budget = free + done - fixed
        most = int(np.sqrt(max(budget, 0) / 4 / 1.02))  # the linear terms grow too: a margin
        parts = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in need.items())
        fix = (f", or use at most {most:,} training images (data.n_train={most}), or geodesic.storage=on_demand "
               "(no matrix)" if dense else "")
        raise ResourceError(
            f"the run needs {fmt_bytes(total - done)} more on the disk of {layout.root} ({parts}) and "
            f"{fmt_bytes(free)} is free: free disk space or give run_dir a directory on a larger disk{fix}")
    return need


@contextmanager
def full_disk_names(path: Path, what: str):
    """Turn "no space left on device" while writing ``what`` into an error naming the directory
    and the free space (some writers, zip files and figures among them, name no file)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ResourceError(
            f"the disk holding {path} filled up while writing {what} ({fmt_bytes(free_disk_bytes(path))} free): "
            "free disk space or move run_dir to a larger disk, then run the same command again; finished "
            "stages are kept") from exc
