"""The paper's pipeline as a sequence of cached, resumable stages.

:func:`run_job` reads as the paper: the VAE, its latents and its test-set bounds, the kNN graph,
the geodesic rows, geodesic k-medoids, the Euclidean ablation, Geo-VQ on the test set, the
autoregressive priors, the end-to-end VQ-VAE baselines, then (on the first seed) the sweep over
codebook sizes and the subsample study, and the metrics, figures and report. Each stage is a
function of a :class:`~rapids_geovq.pipeline.context.RunContext` (:mod:`.stages`); a stage whose
record proves its artifacts current is skipped (:mod:`.records`), so a killed job resumes where it
stopped. Paths come from one place, :class:`~rapids_geovq.pipeline.layout.RunLayout`.

A job with ``seeds: [0, 1, 2]`` runs once per seed, each in its own run directory
(``run_dir/seed_<s>``, every stage's seed set to s), and reports mean +- sd over them.
"""
from __future__ import annotations

import copy

from ..config import JobConfig
from . import stages
from .context import RunContext, RunLock
from .disk import full_disk_names
from .layout import RunLayout
from .metrics import collect_metrics, write_metrics
from .records import STAGE_VERSIONS, save_npz

#: The config sections whose ``seed`` a multi-seed job sets to each seed in turn.
SEEDED_SECTIONS = ("vae", "vqvae", "vqvae_strong", "prior", "kmeans", "sequences", "eval")


def run_job(cfg: JobConfig) -> dict:
    """Run (or resume) the job: once, or once per seed of ``cfg.seeds``; returns the metrics also
    saved as JSON (for several seeds: the aggregate, with every seed's metrics inside)."""
    if cfg.seeds is None:
        return run_one(cfg)
    return run_seeds(cfg)


def run_one(cfg: JobConfig) -> dict:
    """The whole pipeline in ``cfg.run_dir``."""
    from .. import report

    with RunContext(cfg) as ctx:
        stages.load_data(ctx)  # also checks the settings against the data, and the disk for the run
        stages.train_vae(ctx)
        stages.encode_latents(ctx)
        stages.evaluate_vae(ctx)
        stages.vae_bounds(ctx)
        stages.build_graph(ctx)
        with ctx.engine_session():
            stages.geodesic(ctx)
            stages.kmedoids(ctx)
        stages.euclidean(ctx)
        stages.quantize(ctx)
        stages.priors(ctx)
        stages.vqvae(ctx, "vqvae")
        stages.vqvae(ctx, "vqvae_strong")
        sweep = stages.sweep(ctx) if cfg.sweep.n_codes else None
        sub = stages.subsample(ctx) if cfg.subsample.sizes else None
        metrics = collect_metrics(ctx, sweep=sweep, subsample=sub)
        with full_disk_names(ctx.layout.root, "metrics, figures and report"):
            write_metrics(ctx.layout, metrics)
            report.write_figures(ctx, metrics)
            report.write_report(ctx.layout, cfg, metrics)
    return metrics


def seed_config(cfg: JobConfig, seed: int, *, studies: bool) -> JobConfig:
    """The job of one seed: its own run directory, every stage's seed set to ``seed``, and the
    sweep and subsample study only where ``studies`` (the first seed)."""
    one = copy.deepcopy(cfg)
    one.seeds = None
    one.run_dir = str(RunLayout(cfg.run_dir).seed_run(seed))
    for section in SEEDED_SECTIONS:
        getattr(one, section).seed = seed
    if not studies:
        one.sweep.n_codes = []
        one.subsample.sizes = []
    return one


def run_seeds(cfg: JobConfig) -> dict:
    """One run per seed, then their aggregate (mean +- sd of every number) with the first seed's
    sweep and subsample study, written to ``run_dir``."""
    import logging

    from .. import report
    from ..aggregate import aggregate_seeds

    log = logging.getLogger(__name__)
    layout = RunLayout(cfg.run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    lock = RunLock(layout.lock)
    lock.acquire()
    try:
        from ..config import save_job

        save_job(cfg, layout.config)
        per_seed = {}
        for i, seed in enumerate(cfg.seeds):
            log.info("seed %d (%d of %d) -> %s", seed, i + 1, len(cfg.seeds), layout.seed_run(seed))
            per_seed[seed] = run_one(seed_config(cfg, seed, studies=i == 0))
        first = per_seed[cfg.seeds[0]]
        comparable = [{k: m[k] for k in ("table1", "table1_sums", "table1_per_image", "codebooks", "ar_nll_per_token",
                                         "vae_bounds")} | {"inertia": m["geodesic_kmeans"]["inertia"]}
                      for m in per_seed.values()]
        metrics = {"version": first["version"], "run_dir": str(layout.root), "seeds": list(cfg.seeds),
                   "n_train": first["n_train"], "n_test": first["n_test"],
                   "aggregate": aggregate_seeds(comparable), "sweep": first["sweep"], "subsample": first["subsample"],
                   "first_seed_run": str(layout.seed_run(cfg.seeds[0])), "machine": first["machine"],
                   "seconds": {str(s): sum(st["seconds"] for st in m["stages"].values())
                               for s, m in per_seed.items()},
                   "per_seed": {str(s): m for s, m in per_seed.items()}}
        with full_disk_names(layout.root, "metrics, figures and report"):
            write_metrics(layout, metrics)
            report.write_seed_figures(layout, RunLayout(metrics["first_seed_run"]), metrics)
            report.write_report(layout, cfg, metrics)
        return metrics
    finally:
        lock.release()


__all__ = ["RunContext", "RunLayout", "STAGE_VERSIONS", "collect_metrics", "run_job", "run_one", "run_seeds",
           "save_npz", "seed_config", "write_metrics"]
