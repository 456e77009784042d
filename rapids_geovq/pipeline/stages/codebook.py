"""The geodesic codebook of the VAE's latents (graph, geodesic rows, k-medoids) and the Euclidean
ablation. The three geodesic stages are the steps of one :class:`~rapids_geovq.GeodesicCodebook`,
cached one by one so a killed job resumes inside them."""
from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from ..records import save_npz


def codebook_estimator(ctx):
    """The job's :class:`~rapids_geovq.GeodesicCodebook` (its settings; fitted by the stages)."""
    from ...geodesic.codebook import GeodesicCodebook

    cfg = ctx.cfg
    kc = cfg.kmeans
    return GeodesicCodebook(kc.n_clusters, k=cfg.graph.k, disconnected=cfg.graph.disconnected, n_init=kc.n_init,
                            max_iter=kc.max_iter, swap=kc.swap, random_state=kc.seed, storage=ctx.storage,
                            update_candidates=kc.update_candidates, swap_near=kc.swap_near, swap_far=kc.swap_far,
                            execution=ctx.execution)


def build_graph(ctx):
    """Stage ``graph``: the symmetric exact kNN graph of the train latents (the backend's search;
    on a GPU it reads the encoder's device tensor in place)."""
    lay = ctx.layout
    z = ctx.latents.train if ctx.latents.train_on_device is None else ctx.latents.train_on_device
    ctx.latents.train_on_device = None  # read once; the device memory goes back

    def run():
        graph, info = codebook_estimator(ctx).build_graph(z)
        tmp = lay.knn_graph.with_name(lay.knn_graph.name + ".tmp.npz")
        sp.save_npz(tmp, graph, compressed=False)
        os.replace(tmp, lay.knn_graph)
        return {"n_components": info.n_components, "component_sizes": list(info.component_sizes)[:20],
                "added_edges": info.added_edges, "nnz": int(graph.nnz)}

    result = ctx.cache.stage("graph", ctx.cfg.section("graph"), ["latents"], [lay.knn_graph], run)
    ctx.graph = sp.load_npz(lay.knn_graph).tocsr()
    return result


def geodesic(ctx):
    """Stage ``geodesic``: all-pairs geodesic rows as float32 shards, computed and held by the
    engine's workers (resumes at the first missing or damaged shard). Not run with on-demand
    storage, which never forms the matrix."""
    from ...geodesic.shortest_paths import load_row_shards

    if ctx.storage == "on_demand":
        return None
    lay = ctx.layout
    ex = ctx.execution_here()
    held = {}

    def run():
        shards = codebook_estimator(ctx).geodesic_rows(ctx.graph, execution=ex, shard_rows=ctx.cfg.geodesic.shard_rows)
        held["D"] = shards  # its shards stay open where they were computed, for k-medoids
        n = shards.shape[0]
        return {"n": n, "n_shards": len(shards.shards), "dtype": str(shards.dtype), "bytes": int(n) ** 2 * 4,
                "cluster": ctx.cfg.geodesic.cluster, "n_workers": ctx.engine.n_workers, "method": ctx.solver.name,
                "backend": ctx.backend.name, "on_device": shards.held.count_on_device()}

    result = ctx.cache.stage("geodesic", {"shard_rows": ctx.cfg.geodesic.shard_rows, "backend": "numpy"}, ["graph"],
                             [lay.geodesic / "manifest.json"], run, uses_workers=True,
                             check=lambda: load_row_shards(lay.geodesic, verify=True))
    ctx.geodesic = held.get("D") or load_row_shards(lay.geodesic)
    return result


def kmedoids(ctx):
    """Stage ``kmeans``: geodesic k-medoids (K codes) where the shards are, or on demand from the
    graph (resuming a killed fit from its saved state); writes the codebook."""
    from ...geodesic.codebook import GeodesicCodebook

    lay = ctx.layout
    cfg = ctx.cfg
    on_demand = ctx.storage == "on_demand"

    def run():
        cb = codebook_estimator(ctx)
        if on_demand:
            cb.fit_medoids_on_demand(ctx.latents.train, ctx.graph, execution=ctx.execution_here(),
                                     checkpoint=lay.kmedoids_state)
        else:
            cb.fit_medoids(ctx.latents.train, ctx.geodesic, execution=ctx.execution_here())
        cb.save(lay.codebook)
        out = {"inertia": cb.inertia_, "n_iter": cb.n_iter_, "n_swaps": cb.n_swaps_, "storage": ctx.storage,
               "cluster": cfg.geodesic.cluster, "n_workers": ctx.engine.n_workers}
        if on_demand:
            out["searches"] = cb.searches_
            lay.kmedoids_state.unlink(missing_ok=True)  # finished: the codebook is the state now
        return out

    drop = ("euclidean_n_init", "block_rows") + (() if on_demand else ("update_candidates", "swap_near", "swap_far"))
    settings = {k: v for k, v in cfg.section("kmeans").items() if k not in drop}
    settings["storage"] = ctx.storage
    result = ctx.cache.stage("kmeans", settings, ["graph" if on_demand else "geodesic"], [lay.codebook], run,
                             uses_workers=True)
    ctx.codebook = GeodesicCodebook.load(lay.codebook)
    return result


def euclidean(ctx):
    """Stage ``euclidean``: the ablation, Euclidean k-means centroids on the same latents."""
    from ...geodesic.quantize import EuclideanQuantizer

    lay = ctx.layout
    kc = ctx.cfg.kmeans

    def run():
        eq = EuclideanQuantizer(kc.n_clusters, n_init=kc.euclidean_n_init, random_state=kc.seed).fit(ctx.latents.train)
        save_npz(lay.euclidean_codebook, codebook=eq.codebook_, labels=eq.labels_)
        return {"inertia": eq.inertia_}

    return ctx.cache.stage("euclidean", {"n_clusters": kc.n_clusters, "n_init": kc.euclidean_n_init, "seed": kc.seed},
                           ["latents"], [lay.euclidean_codebook], run)


def euclidean_quantizer(ctx):
    """The fitted ablation (from its artifact) and the train codes it assigned."""
    from ...geodesic.quantize import EuclideanQuantizer

    with np.load(ctx.layout.euclidean_codebook) as f:
        return EuclideanQuantizer.from_codebook(f["codebook"]), f["labels"]
