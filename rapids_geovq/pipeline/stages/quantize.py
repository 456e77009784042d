"""Geo-VQ on the test set: code every test image geodesically, decode, score; and the same for
the Euclidean ablation."""
from __future__ import annotations

import numpy as np

from ..records import save_npz
from .codebook import euclidean_quantizer


def quantize(ctx):
    """Stage ``quantize``: test codes, reconstructions' BCE per image and codebook statistics for
    Geo-VQ (medoid decoding), Geo-VQ with cluster-mean decoding, and Euclidean-VQ."""
    from ...models import training as T

    lay = ctx.layout
    K = ctx.cfg.kmeans.n_clusters
    z_train, z_test = ctx.latents.train, ctx.latents.test
    x_test, y_train, y_test = ctx.data.x_test, ctx.data.y_train, ctx.data.y_test
    cb = ctx.codebook

    def run():
        vae, device = ctx.vae, ctx.device
        eq, eu_train_codes = euclidean_quantizer(ctx)
        geo_codes = cb.predict(z_test)
        eu_codes = eq.encode(z_test)
        geo_bce = T.bce_per_image(T.decode_latents(vae, cb.decode(geo_codes), device=device), x_test)
        eu_bce = T.bce_per_image(T.decode_latents(vae, eq.decode(eu_codes), device=device), x_test)
        # Extension: decode the mean latent of each geodesic cluster instead of its medoid, which
        # separates the cost of the partition from the cost of decoding a single real latent.
        means = np.stack([z_train[cb.labels_ == c].mean(axis=0) for c in range(K)]).astype(np.float32)
        mean_bce = T.bce_per_image(T.decode_latents(vae, means[geo_codes], device=device), x_test)
        save_npz(lay.test_codes, geo=geo_codes, euclidean=eu_codes, geo_bce=geo_bce, euclidean_bce=eu_bce,
                 geo_mean_bce=mean_bce, geo_cluster_means=means)
        return quantize_metrics(K, y_train, y_test, cb.labels_, geo_codes, geo_bce, mean_bce,
                                eu_train_codes, eu_codes, eu_bce)

    return ctx.cache.stage("quantize", {"k": ctx.cfg.graph.k}, ["kmeans", "euclidean", "vae"], [lay.test_codes], run)


def quantize_metrics(K, y_train, y_test, geo_train, geo_codes, geo_bce, mean_bce, eu_train, eu_codes, eu_bce) -> dict:
    """BCE (sum and per image), BCE + rate under the uniform and unigram priors, and code
    statistics, for Geo-VQ with medoid and with cluster-mean decoding and for Euclidean-VQ."""
    from ... import sequences as S

    out = {"geo_mean": {"bce_sum": float(mean_bce.sum()), "bce_per_image": float(mean_bce.mean()),
                        "rates": S.rate_summary(mean_bce, geo_train, geo_codes, K)}}
    for name, test_codes, tr_codes, bce in (("geo", geo_codes, geo_train, geo_bce),
                                             ("euclidean", eu_codes, eu_train, eu_bce)):
        out[name] = {"bce_sum": float(bce.sum()), "bce_per_image": float(bce.mean()),
                     "rates": S.rate_summary(bce, tr_codes, test_codes, K),
                     "perplexity": S.perplexity(test_codes, K), "dead_codes": S.dead_codes(test_codes, K),
                     "label_purity": S.label_purity(test_codes, y_test, K),
                     "train_label_purity": S.label_purity(tr_codes, y_train, K)}
    return out
