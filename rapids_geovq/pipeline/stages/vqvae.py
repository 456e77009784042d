"""The end-to-end VQ-VAE baseline: same FC encoder/decoder, K codes, trained from the images."""
from __future__ import annotations

from ..records import save_npz


def vqvae(ctx) -> dict:
    """Stage ``vqvae``: train, checkpoint, and evaluate on the test set (sums, code statistics)."""
    from ... import sequences as S
    from ...models import training as T

    cfg, lay = ctx.cfg, ctx.layout

    def run():
        model, history = T.train_vqvae(ctx.data.x_train, cfg.vqvae, device=ctx.device, progress=ctx.progress)
        T.save_checkpoint(lay.vqvae, model, cfg.vqvae, history)
        ev = T.evaluate_vqvae(model, ctx.data.x_test, device=ctx.device)
        codes = ev.pop("codes")
        save_npz(lay.vqvae_test_codes, codes=codes)
        Kv = cfg.vqvae.n_codes
        return {"sums": ev, "perplexity": S.perplexity(codes, Kv), "dead_codes": S.dead_codes(codes, Kv),
                "label_purity": S.label_purity(codes, ctx.data.y_test, Kv)}

    return ctx.cache.stage("vqvae", cfg.section("vqvae"), ["data"], [lay.vqvae, lay.vqvae_test_codes], run)
