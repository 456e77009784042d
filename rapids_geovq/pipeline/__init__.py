"""The paper's pipeline as a sequence of cached, resumable stages.

:func:`run_job` reads as the paper: the VAE, its latents, the kNN graph, the geodesic rows,
geodesic k-medoids, the Euclidean ablation, Geo-VQ on the test set, the autoregressive priors, the
end-to-end VQ-VAE baseline, then the metrics, figures and report. Each stage is a function of a
:class:`~rapids_geovq.pipeline.context.RunContext` (:mod:`.stages`); a stage whose record proves
its artifacts current is skipped (:mod:`.records`), so a killed job resumes where it stopped.
Paths come from one place, :class:`~rapids_geovq.pipeline.layout.RunLayout`.
"""
from __future__ import annotations

from ..config import JobConfig
from . import stages
from .context import RunContext
from .disk import full_disk_names
from .layout import RunLayout
from .metrics import collect_metrics, write_metrics
from .records import STAGE_VERSIONS, save_npz


def run_job(cfg: JobConfig) -> dict:
    """Run (or resume) the whole pipeline for ``cfg``; returns the metrics also saved as JSON."""
    from .. import report

    with RunContext(cfg) as ctx:
        stages.load_data(ctx)  # also checks the settings against the data, and the disk for the run
        stages.train_vae(ctx)
        stages.encode_latents(ctx)
        stages.evaluate_vae(ctx)
        stages.build_graph(ctx)
        with ctx.engine_session():
            stages.geodesic(ctx)
            stages.kmedoids(ctx)
        stages.euclidean(ctx)
        stages.quantize(ctx)
        stages.priors(ctx)
        stages.vqvae(ctx)
        metrics = collect_metrics(ctx)
        with full_disk_names(ctx.layout.root, "metrics, figures and report"):
            write_metrics(ctx.layout, metrics)
            report.write_figures(ctx)
            report.write_report(ctx.layout, cfg, metrics)
    return metrics


__all__ = ["RunContext", "RunLayout", "STAGE_VERSIONS", "collect_metrics", "run_job", "save_npz", "write_metrics"]
