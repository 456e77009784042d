"""The stages of the paper's pipeline, one module per part of the paper.

Each stage is a function ``stage(ctx)`` of a :class:`~rapids_geovq.pipeline.context.RunContext`:
it runs (or skips, when its record is current) through ``ctx.cache.stage``, writes its artifacts
to the paths of ``ctx.layout``, sets what later stages read on ``ctx`` and returns its result.
"""
from .codebook import build_graph, euclidean, geodesic, kmedoids
from .data import load_data
from .priors import priors
from .quantize import quantize
from .subsample import subsample
from .sweep import sweep
from .vae import encode_latents, evaluate_vae, train_vae, vae_bounds
from .vqvae import vqvae

__all__ = ["build_graph", "encode_latents", "euclidean", "evaluate_vae", "geodesic", "kmedoids", "load_data",
           "priors", "quantize", "subsample", "sweep", "train_vae", "vae_bounds", "vqvae"]
