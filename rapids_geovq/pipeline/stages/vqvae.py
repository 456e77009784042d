"""The end-to-end VQ-VAE baselines: the paper-faithful one and the strong one (same architecture,
K, beta and epochs, plus the practices that keep codebooks alive), trained from the images."""
from __future__ import annotations

import numpy as np

from ..records import save_npz


def vqvae_metrics(model, cfg, x_train, x_test, y_test, device) -> tuple[dict, np.ndarray, np.ndarray]:
    """Test-set sums, BCE + rate (uniform and unigram priors over the training codes), code
    statistics; and the train and test codes."""
    from ... import sequences as S
    from ...models import training as T

    ev = T.evaluate_vqvae(model, x_test, device=device)
    test_codes = ev.pop("codes")
    train_codes = T.evaluate_vqvae(model, x_train, device=device)["codes"]
    K = cfg.n_codes
    codebook = model.codebook.detach().cpu().numpy()
    bce = T.bce_per_image(T.decode_latents(model, codebook[test_codes], device=device), x_test)
    out = {"sums": ev, "bce_per_image": float(bce.mean()), "rates": S.rate_summary(bce, train_codes, test_codes, K),
           "perplexity": S.perplexity(test_codes, K), "dead_codes": S.dead_codes(test_codes, K),
           "label_purity": S.label_purity(test_codes, y_test, K), "n_codes": K}
    return out, train_codes, test_codes


def vqvae(ctx, name: str = "vqvae") -> dict:
    """Stage ``vqvae`` (paper-faithful, section ``vqvae``) or ``vqvae_strong`` (section
    ``vqvae_strong``): train, checkpoint, and evaluate on the test set."""
    from ...models import training as T

    cfg, lay = ctx.cfg, ctx.layout
    section = getattr(cfg, name)
    ckpt = lay.vqvae if name == "vqvae" else lay.model(name)
    codes_path = lay.vqvae_test_codes if name == "vqvae" else lay.model_codes(name)

    def run():
        model, history = T.train_vqvae(ctx.data.x_train, section, device=ctx.device, progress=ctx.progress)
        T.save_checkpoint(ckpt, model, section, history)
        out, train_codes, test_codes = vqvae_metrics(model, section, ctx.data.x_train, ctx.data.x_test,
                                                     ctx.data.y_test, ctx.device)
        save_npz(codes_path, codes=test_codes, train=train_codes)
        return out

    return ctx.cache.stage(name, cfg.section(name), ["data"], [ckpt, codes_path], run)
