"""The continuous VAE: training, the latents of every image, and its test-set ELBO terms."""
from __future__ import annotations

import numpy as np

from ..context import Latents
from ..records import save_npz


def train_vae(ctx):
    """Stage ``vae``: train the FC VAE (784-400-20) and checkpoint it; ``ctx.vae`` is the model."""
    from ...models import training as T

    lay = ctx.layout

    def run():
        model, history = T.train_vae(ctx.data.x_train, ctx.cfg.vae, device=ctx.device, progress=ctx.progress)
        T.save_checkpoint(lay.vae, model, ctx.cfg.vae, history)
        return {"history": history}

    result = ctx.cache.stage("vae", ctx.cfg.section("vae"), ["data"], [lay.vae], run)
    ctx.vae, _, _ = T.load_checkpoint(lay.vae)
    return result


def encode_latents(ctx):
    """Stage ``latents``: encoder means of the train and test images. On a GPU backend the train
    latents also stay on the device for the kNN search, which reads them in place."""
    from ...models import training as T

    lay = ctx.layout
    on_device = {}

    def run():
        z_train = T.encode_means(ctx.vae, ctx.data.x_train, device=ctx.device, as_tensor=ctx.backend.gpu)
        if ctx.backend.gpu:
            on_device["train"] = z_train  # the GPU kNN reads it in place (DLPack), no host round trip
            z_train = z_train.cpu().numpy()  # the artifact, for resuming and for the later stages
        z_test = T.encode_means(ctx.vae, ctx.data.x_test, device=ctx.device)
        save_npz(lay.latents, train=z_train, test=z_test)
        return {"train_shape": list(z_train.shape), "test_shape": list(z_test.shape)}

    result = ctx.cache.stage("latents", {}, ["vae"], [lay.latents], run)
    with np.load(lay.latents) as f:
        ctx.latents = Latents(f["train"], f["test"], on_device.get("train"))
    return result


def evaluate_vae(ctx):
    """Stage ``vae_eval``: the VAE's test-set loss terms (sums)."""
    from ...models import training as T

    def run():
        return {"sums": T.evaluate_vae(ctx.vae, ctx.data.x_test, device=ctx.device)}

    return ctx.cache.stage("vae_eval", {}, ["vae"], [], run)


def vae_bounds(ctx):
    """Stage ``vae_bounds``: the VAE's test-set rows on one scale with the paper: the negative ELBO
    of sampled latents (``eval.elbo_samples`` per image), the posterior-mean reconstruction (not a
    bound), and the IWAE bound on -log p(x) with ``eval.iwae_k`` importance samples."""
    from ...models import bounds as B

    ev = ctx.cfg.eval

    def run():
        x = ctx.data.x_test
        rows = [B.negative_elbo(ctx.vae, x, n_samples=ev.elbo_samples, seed=ev.seed, device=ctx.device),
                B.posterior_mean_loss(ctx.vae, x, device=ctx.device),
                B.iwae_bound(ctx.vae, x, k=ev.iwae_k, seed=ev.seed, device=ctx.device)]
        return {r.label: r.summary() for r in rows}

    return ctx.cache.stage("vae_bounds", {"elbo_samples": ev.elbo_samples, "iwae_k": ev.iwae_k, "seed": ev.seed},
                           ["vae"], [], run)
