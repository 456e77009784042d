"""Autoregressive GRU priors over sequences of geodesic codes: codes of consecutive images, and
codes along random walks on the kNN graph."""
from __future__ import annotations

import numpy as np

from ..records import save_npz


def priors(ctx) -> dict:
    """Stages ``prior_<kind>`` for each of ``sequences.kinds``: train a GRU prior, sample from it,
    and score held-out sequences against the unigram and uniform baselines."""
    return {kind: _prior(ctx, kind) for kind in ctx.cfg.sequences.kinds}


def _prior(ctx, kind: str) -> dict:
    import torch

    from ... import sequences as S
    from ...models import training as T
    from ...models.prior import prior_nll

    cfg, lay = ctx.cfg, ctx.layout
    L, K = cfg.prior.seq_len, cfg.kmeans.n_clusters
    train_codes = ctx.codebook.labels_

    def run():
        with np.load(lay.test_codes) as f:
            test_codes = f["geo"]
        if kind == "dataset":
            train_seq = S.dataset_sequences(train_codes, L)
            held_seq = S.dataset_sequences(test_codes, L)
        else:
            n_walks = cfg.sequences.n_walks or max(1, len(train_codes) // L)
            n_held = cfg.sequences.n_heldout_walks or max(1, len(test_codes) // L)
            train_seq = S.random_walk_sequences(ctx.graph, train_codes, n_walks, L, seed=cfg.sequences.seed)
            held_seq = S.random_walk_sequences(ctx.graph, train_codes, n_held, L, seed=cfg.sequences.seed + 1)
        model, history = T.train_prior(train_seq, cfg.prior, device=ctx.device, progress=ctx.progress)
        T.save_checkpoint(lay.prior(kind), model, cfg.prior, history)
        gen = torch.Generator().manual_seed(cfg.eval.seed)
        samples = model.cpu().sample(cfg.eval.n_samples, L, generator=gen).numpy()
        save_npz(lay.prior_samples(kind), samples=samples, heldout=held_seq)
        return {"nll_per_token": prior_nll(model, held_seq, device=ctx.device),
                "train_nll_per_token": history[-1]["loss"] if history else None,
                "unigram_entropy": S.unigram_entropy(train_seq, K),
                "unigram_nll": S.unigram_nll(train_seq, held_seq, K),
                "uniform_nll": float(np.log(K)),
                "n_train_sequences": int(train_seq.shape[0]), "n_heldout_sequences": int(held_seq.shape[0])}

    settings = {"prior": cfg.section("prior"), "sequences": cfg.section("sequences"), "eval_seed": cfg.eval.seed,
                "n_samples": cfg.eval.n_samples}
    return ctx.cache.stage(f"prior_{kind}", settings, ["kmeans", "quantize"],
                           [lay.prior(kind), lay.prior_samples(kind)], run)
