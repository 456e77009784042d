"""The rate-distortion sweep: codebooks of several sizes K on one seed's latents, graph and
geodesic matrix. Per K: geodesic k-medoids, Geo-VQ (medoid and cluster-mean decoding),
Euclidean-VQ, and both end-to-end VQ-VAEs with K codes. The K of the main run is not fitted again:
its stages already hold it."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..records import save_npz


def sweep(ctx) -> dict:
    """Every K of ``sweep.n_codes``: its codebook stages inside one engine session (they read the
    geodesic matrix), then its model stages. Returns ``{K: {"kmeans", "quantize", "vqvae",
    "vqvae_strong"}}``."""
    cfg = ctx.cfg
    out: dict = {}
    todo = [K for K in cfg.sweep.n_codes if K != cfg.kmeans.n_clusters]
    if todo:
        with ctx.engine_session():
            if ctx.storage == "dense":
                from ...geodesic.shortest_paths import load_row_shards

                ctx.geodesic = load_row_shards(ctx.layout.geodesic)
            for K in todo:
                out[K] = {"kmeans": _kmedoids(ctx, K)}
    for K in cfg.sweep.n_codes:
        if K == cfg.kmeans.n_clusters:  # the main run's own stages
            out[K] = {"kmeans": ctx.cache.result("kmeans"), "quantize": ctx.cache.result("quantize"),
                      "vqvae": ctx.cache.result("vqvae"), "vqvae_strong": ctx.cache.result("vqvae_strong")}
            continue
        out[K]["quantize"] = _quantize(ctx, K)
        if cfg.sweep.vqvae:
            for name in ("vqvae", "vqvae_strong"):
                out[K][name] = _vqvae(ctx, K, name)
    return out


def _estimator(ctx, K: int):
    from .codebook import codebook_estimator

    return codebook_estimator(ctx).set_params(n_codes=K)


def _kmedoids(ctx, K: int) -> dict:
    lay, cfg = ctx.layout, ctx.cfg
    path = lay.sweep(K, "codebook")

    def run():
        cb = _estimator(ctx, K)
        if ctx.storage == "on_demand":
            cb.fit_medoids_on_demand(ctx.latents.train, ctx.graph, execution=ctx.execution_here())
        else:
            cb.fit_medoids(ctx.latents.train, ctx.geodesic, execution=ctx.execution_here())
        cb.save(path)
        return {"inertia": cb.inertia_, "n_iter": cb.n_iter_, "n_swaps": cb.n_swaps_, "storage": ctx.storage}

    settings = {k: v for k, v in cfg.section("kmeans").items() if k not in ("euclidean_n_init", "block_rows")}
    settings.update(n_clusters=K, storage=ctx.storage)
    inputs = ["graph"] if ctx.storage == "on_demand" else ["geodesic"]
    return ctx.cache.stage(f"sweep_k{K}_kmeans", settings, inputs, [path], run, uses_workers=True)


def _quantize(ctx, K: int) -> dict:
    from ...geodesic.codebook import GeodesicCodebook
    from ...geodesic.quantize import EuclideanQuantizer
    from ...models import training as T
    from .quantize import quantize_metrics

    lay, cfg = ctx.layout, ctx.cfg
    z_train, z_test = ctx.latents.train, ctx.latents.test
    x_test = ctx.data.x_test
    out_path = lay.sweep(K, "test_codes")

    def run():
        cb = GeodesicCodebook.load(lay.sweep(K, "codebook"))
        vae, device = ctx.vae, ctx.device
        eq = EuclideanQuantizer(K, n_init=cfg.kmeans.euclidean_n_init, random_state=cfg.kmeans.seed).fit(z_train)
        geo_codes, eu_codes = cb.predict(z_test), eq.encode(z_test)
        geo_bce = T.bce_per_image(T.decode_latents(vae, cb.decode(geo_codes), device=device), x_test)
        eu_bce = T.bce_per_image(T.decode_latents(vae, eq.decode(eu_codes), device=device), x_test)
        means = np.stack([z_train[cb.labels_ == c].mean(axis=0) for c in range(K)]).astype(np.float32)
        mean_bce = T.bce_per_image(T.decode_latents(vae, means[geo_codes], device=device), x_test)
        save_npz(out_path, geo=geo_codes, euclidean=eu_codes, euclidean_codebook=eq.codebook_)
        return quantize_metrics(K, ctx.data.y_train, ctx.data.y_test, cb.labels_, geo_codes, geo_bce, mean_bce,
                                eq.labels_, eu_codes, eu_bce)

    return ctx.cache.stage(f"sweep_k{K}_quantize", {"k": cfg.graph.k, "n_clusters": K,
                                                    "euclidean_n_init": cfg.kmeans.euclidean_n_init},
                           [f"sweep_k{K}_kmeans", "vae"], [out_path], run)


def _vqvae(ctx, K: int, name: str) -> dict:
    from ...models import training as T
    from .vqvae import vqvae_metrics

    lay, cfg = ctx.layout, ctx.cfg
    section = dataclasses.replace(getattr(cfg, name), n_codes=K)
    stage = f"sweep_k{K}_{name}"
    ckpt, codes = lay.model(stage), lay.model_codes(stage)

    def run():
        model, history = T.train_vqvae(ctx.data.x_train, section, device=ctx.device, progress=ctx.progress)
        T.save_checkpoint(ckpt, model, section, history)
        out, train_codes, test_codes = vqvae_metrics(model, section, ctx.data.x_train, ctx.data.x_test,
                                                     ctx.data.y_test, ctx.device)
        save_npz(codes, codes=test_codes, train=train_codes)
        return out

    return ctx.cache.stage(stage, dataclasses.asdict(section), ["data"], [ckpt, codes], run)
