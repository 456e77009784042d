"""What fitting on every latent buys: geodesic k-medoids fitted, as public implementations of the
paper do, on a random subsample of the latents (its own kNN graph and geodesic matrix), then
evaluated on all of them: the objective through the full graph's geodesic distances to its
medoids, Geo-VQ BCE and label purity on the test set, beside the fit on every latent."""
from __future__ import annotations

import numpy as np

from ..records import save_npz


def subsample(ctx) -> dict:
    """Stages ``subsample_n<size>_s<seed>`` for each of ``subsample.sizes`` x ``subsample.seeds``.
    Returns ``{size: {seed: result}}``."""
    cfg = ctx.cfg
    return {size: {seed: _one(ctx, size, seed) for seed in cfg.subsample.seeds} for size in cfg.subsample.sizes}


def full_graph_rows(ctx, points) -> np.ndarray:
    """Geodesic rows (float32) of the full kNN graph from ``points``: read from the run's shards
    when it has them, else searched (exact, the same values)."""
    if ctx.storage == "dense":
        from ...geodesic.shortest_paths import load_row_shards

        return load_row_shards(ctx.layout.geodesic).take_rows(points)
    search = ctx.backend.bounded_search(ctx.backend.bounded_graph(_plan(ctx)))
    return np.asarray(search.rows(np.asarray(points), together=False), dtype=np.float32)


def _plan(ctx):
    from ...geodesic.plan import make_plan

    if getattr(ctx, "_plan", None) is None:
        ctx._plan = make_plan(ctx.graph)
    return ctx._plan


def _one(ctx, size: int, seed: int) -> dict:
    from ... import sequences as S
    from ...geodesic.codebook import GeodesicCodebook
    from ...geodesic.execution import Execution
    from ...geodesic.quantize import GeodesicQuantizer
    from ...models import training as T

    cfg, lay = ctx.cfg, ctx.layout
    K, k = cfg.kmeans.n_clusters, cfg.graph.k
    z_train, z_test = ctx.latents.train, ctx.latents.test
    path = lay.subsample(size, seed)

    def run():
        n = z_train.shape[0]
        idx = np.sort(np.random.default_rng([seed, size]).choice(n, size, replace=False))
        cb = GeodesicCodebook(K, k=k, disconnected=cfg.graph.disconnected, n_init=cfg.kmeans.n_init,
                              max_iter=cfg.kmeans.max_iter, swap=cfg.kmeans.swap, random_state=seed, storage="dense",
                              execution=Execution(backend=ctx.backend, n_workers=cfg.geodesic.n_workers,
                                                  in_memory=True)).fit(z_train[idx])
        medoids = idx[cb.medoid_indices_]  # as points of the full set
        rows = full_graph_rows(ctx, medoids)  # (K, n): the full graph's geodesic distances
        sq = rows.astype(np.float64) ** 2
        labels = np.argmin(sq, axis=0)
        objective = float(sq.min(axis=0).sum())
        q = GeodesicQuantizer(z_train, medoids, np.ascontiguousarray(rows.T), k=k)
        codes = q.encode(z_test)
        bce = T.bce_per_image(T.decode_latents(ctx.vae, q.decode(codes), device=ctx.device), ctx.data.x_test)
        save_npz(path, points=idx, medoids=medoids, test_codes=codes)
        return {"size": size, "seed": seed, "subsample_inertia": cb.inertia_, "objective_all": objective,
                "geovq_bce_per_image": float(bce.mean()), "label_purity": S.label_purity(codes, ctx.data.y_test, K),
                "train_label_purity": S.label_purity(labels, ctx.data.y_train, K),
                "perplexity": S.perplexity(codes, K), "dead_codes": S.dead_codes(codes, K),
                "graph_components": int(cb.connectivity_.n_components)}

    settings = {"size": size, "seed": seed, "k": k, "n_clusters": K, "n_init": cfg.kmeans.n_init,
                "max_iter": cfg.kmeans.max_iter, "swap": cfg.kmeans.swap}
    return ctx.cache.stage(f"subsample_n{size}_s{seed}", settings, ["graph", "vae"], [path], run)
