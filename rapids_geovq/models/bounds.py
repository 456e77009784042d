"""Per-image likelihood bounds of a trained :class:`~rapids_geovq.models.vae.VAE`, in nats.

Three rows for the VAE, each a sum over pixels per image:

* :func:`negative_elbo` -- the negative evidence lower bound as the VAE is trained:
  binary cross-entropy of the decoder output for reparameterised samples
  ``z ~ q(z|x)`` plus the analytic KL to the standard normal prior, averaged over
  ``n_samples`` draws per image. In expectation an upper bound on ``-log p(x)``.
* :func:`posterior_mean_loss` -- BCE of decoding the posterior mean plus the KL: what
  :func:`~rapids_geovq.models.training.evaluate_vae` sums. Deterministic, but *not* a
  bound: decoding the mean usually reconstructs better than a typical sample.
* :func:`iwae_bound` -- the importance-weighted bound of Burda et al. (2016) with ``k``
  samples, ``-log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)``; tighter than the ELBO in
  expectation and approaching ``-log p(x)`` as ``k`` grows.

``log p(x|z)`` is the Bernoulli log-likelihood of the decoder's probabilities on
targets in [0, 1], i.e. minus ``F.binary_cross_entropy`` with its logs clamped at -100,
so these numbers share a scale with the BCE of the other Table 1 rows.

Monte-Carlo draws come from a CPU ``torch.Generator`` seeded per call, so a result
depends only on the model, the images, ``seed`` and the chunking arguments -- not on
the global RNG state or the device.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .training import Device, _as_images, select_device
from .vae import VAE

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class BoundResult:
    """Per-image values of one VAE evaluation row.

    Attributes
    ----------
    label : str
        ``"neg_elbo"``, ``"posterior_mean"`` or ``"iwae"``.
    per_image : np.ndarray, float64, shape (N,)
        The row's value for each image, nats (summed over pixels).
    n_samples : int
        Monte-Carlo samples per image (0 for the deterministic posterior-mean row).
    seconds : float
        Wall time of the computation.
    terms : dict of str -> np.ndarray, float64, shape (N,)
        Components and diagnostics: ``bce`` and ``kl`` for the ELBO and posterior-mean
        rows (``per_image = bce + kl``); ``mc_sd`` for the ELBO (sample standard
        deviation of the per-draw value across the ``n_samples`` draws, NaN when
        ``n_samples == 1``); ``ess`` for IWAE (effective sample size of the
        importance weights, ``(sum w)^2 / sum w^2``, between 1 and ``k``).
    """

    label: str
    per_image: np.ndarray
    n_samples: int
    seconds: float
    terms: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of images."""
        return int(self.per_image.size)

    @property
    def mean(self) -> float:
        """Mean over images."""
        return mean_and_se(self.per_image)[0]

    @property
    def se(self) -> float:
        """Standard error of :attr:`mean` over images (includes the Monte-Carlo noise)."""
        return mean_and_se(self.per_image)[1]

    @property
    def total(self) -> float:
        """Sum over images."""
        return float(self.per_image.sum())

    def summary(self) -> dict[str, float | int | str]:
        """Numbers for a metrics file: ``label``, ``mean``, ``se``, ``sum``, ``n``,
        ``n_samples``, ``seconds`` and the mean of each entry of :attr:`terms` (as
        ``<name>_mean``). Terms that are NaN throughout (``mc_sd`` of a one-draw ELBO)
        are left out, so strict JSON writers accept the result; ``se`` is NaN for one image."""
        out: dict[str, float | int | str] = {
            "label": self.label, "mean": self.mean, "se": self.se, "sum": self.total,
            "n": self.n, "n_samples": self.n_samples, "seconds": self.seconds,
        }
        for name, values in self.terms.items():
            if values.size and not np.isnan(values).all():
                out[f"{name}_mean"] = float(np.mean(values))
        return out


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error ``sd(ddof=1) / sqrt(n)`` of a 1-D sample.

    Returns
    -------
    mean, se : float
        NaN mean for an empty sample; NaN standard error for fewer than two values.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se


def _check_chunk(chunk_rows: int) -> None:
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")


def _blocks(n_images: int, n_samples: int, chunk_rows: int) -> Iterator[tuple[int, int, int, int]]:
    """(image start, image stop, sample start, sample stop) covering all pairs.

    Each block decodes at most ``max(chunk_rows, 1)`` latent rows: whole images with all
    their samples while they fit, otherwise one image at a time in sample slices.
    """
    if n_samples <= chunk_rows:
        per = max(1, chunk_rows // n_samples)
        for i in range(0, n_images, per):
            yield i, min(i + per, n_images), 0, n_samples
    else:
        for i in range(n_images):
            for s in range(0, n_samples, chunk_rows):
                yield i, i + 1, s, min(s + chunk_rows, n_samples)


class _Eval:
    """Model in eval mode on a device, no grad; restores the mode on exit."""

    def __init__(self, model: VAE, device: Device | None) -> None:
        self.model = model
        self.dev = next(model.parameters()).device if device is None else select_device(device)

    def __enter__(self) -> torch.device:
        self.was_training = self.model.training
        self.model.eval().to(self.dev)
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        return self.dev

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def _bce_rows(model: VAE, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """BCE per latent row: z (b, s, d), x (b, D) -> float64 (b, s)."""
    b, s, d = z.shape
    probs = model.decode(z.reshape(b * s, d)).reshape(b, s, -1)
    bce = F.binary_cross_entropy(probs, x[:, None, :].expand_as(probs), reduction="none")
    return bce.sum(-1).double()


def _kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Analytic KL(q(z|x) || N(0, I)) per image, float64 (b,)."""
    mu, logvar = mu.double(), logvar.double()
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(-1)


def negative_elbo(
    model: VAE,
    x: np.ndarray,
    *,
    n_samples: int = 1,
    seed: int = 0,
    chunk_rows: int = 32768,
    device: Device | None = None,
) -> BoundResult:
    """Monte-Carlo negative ELBO per image, as the VAE's training loss computes it.

    For each image, ``BCE(x, decode(z_s))`` with ``z_s = mu + sigma * eps_s``,
    ``eps_s ~ N(0, I)``, averaged over ``s = 1..n_samples``, plus the analytic KL.
    Cost: ``n_samples`` decoder passes per image.

    Parameters
    ----------
    model : VAE
    x : np.ndarray, float32, shape (N, input_dim), values in [0, 1]
    n_samples : int
        Draws per image (S); at least 1.
    seed : int
        Seeds the CPU generator of the draws.
    chunk_rows : int
        Most latent rows decoded at once (bounds memory: about
        ``chunk_rows * input_dim * 4`` bytes per temporary).
    device : str or torch.device, optional
        Defaults to the model's current device; the model is moved there and stays.

    Returns
    -------
    BoundResult
        ``label="neg_elbo"``; ``terms``: ``bce`` (mean over draws), ``kl``, ``mc_sd``.

    Raises
    ------
    ValueError
        If ``n_samples`` or ``chunk_rows`` is below 1, or ``x`` is not (N, input_dim) in [0, 1].
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    _check_chunk(chunk_rows)
    t0 = time.perf_counter()
    data = _as_images(x, model.config.input_dim)
    n, d = len(data), model.config.latent_dim
    bce_sum = np.zeros(n)
    bce_sq = np.zeros(n)
    kl = np.zeros(n)
    gen = torch.Generator().manual_seed(seed)
    with _Eval(model, device) as dev:
        cached: tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        for i0, i1, s0, s1 in _blocks(n, n_samples, chunk_rows):
            if cached is None or cached[:2] != (i0, i1):
                xb = data[i0:i1].to(dev)
                mu, logvar = model.encode(xb)
                kl[i0:i1] = _kl(mu, logvar).cpu().numpy()
                cached = (i0, i1, xb, mu, logvar)
            _, _, xb, mu, logvar = cached
            eps = torch.randn((i1 - i0, s1 - s0, d), generator=gen).to(dev)
            z = mu[:, None, :] + torch.exp(0.5 * logvar)[:, None, :] * eps
            bce = _bce_rows(model, z, xb)
            bce_sum[i0:i1] += bce.sum(1).cpu().numpy()
            bce_sq[i0:i1] += bce.pow(2).sum(1).cpu().numpy()
    bce_mean = bce_sum / n_samples
    if n_samples > 1:
        var = np.maximum(bce_sq - n_samples * bce_mean**2, 0.0) / (n_samples - 1)
        mc_sd = np.sqrt(var)
    else:
        mc_sd = np.full(n, math.nan)
    return BoundResult("neg_elbo", bce_mean + kl, n_samples, time.perf_counter() - t0,
                       {"bce": bce_mean, "kl": kl, "mc_sd": mc_sd})


def posterior_mean_loss(
    model: VAE, x: np.ndarray, *, batch_size: int = 1000, device: Device | None = None
) -> BoundResult:
    """BCE of decoding the posterior mean plus the analytic KL, per image.

    The per-image version of :func:`~rapids_geovq.models.training.evaluate_vae`
    (whose sums it reproduces). Not a bound on ``-log p(x)``: the reconstruction uses
    ``z = mu`` instead of samples from ``q(z|x)``.

    Parameters
    ----------
    model : VAE
    x : np.ndarray, float32, shape (N, input_dim), values in [0, 1]
    batch_size : int
    device : str or torch.device, optional
        Defaults to the model's current device.

    Returns
    -------
    BoundResult
        ``label="posterior_mean"``, ``n_samples=0``; ``terms``: ``bce``, ``kl``.
    """
    _check_chunk(batch_size)
    t0 = time.perf_counter()
    data = _as_images(x, model.config.input_dim)
    bce = np.zeros(len(data))
    kl = np.zeros(len(data))
    with _Eval(model, device) as dev:
        for i in range(0, len(data), batch_size):
            xb = data[i : i + batch_size].to(dev)
            mu, logvar = model.encode(xb)
            bce[i : i + len(xb)] = _bce_rows(model, mu[:, None, :], xb)[:, 0].cpu().numpy()
            kl[i : i + len(xb)] = _kl(mu, logvar).cpu().numpy()
    return BoundResult("posterior_mean", bce + kl, 0, time.perf_counter() - t0, {"bce": bce, "kl": kl})


def iwae_bound(
    model: VAE,
    x: np.ndarray,
    *,
    k: int = 1000,
    seed: int = 0,
    chunk_rows: int = 32768,
    device: Device | None = None,
) -> BoundResult:
    """Importance-weighted bound on ``-log p(x)`` per image (Burda et al., 2016).

    ``-log (1/k) sum_i w_i`` with ``w_i = p(x|z_i) p(z_i) / q(z_i|x)``, ``z_i ~ q(z|x)``:
    Bernoulli ``log p(x|z)`` (minus the clamped BCE), standard-normal ``log p(z)``,
    diagonal-Gaussian ``log q(z|x)``. The log-weights are combined with a float64
    log-sum-exp. In expectation it decreases with ``k``, equals the negative ELBO at
    ``k = 1`` and tends to ``-log p(x)``.

    Cost: ``k`` decoder passes per image (``k = 1000`` on the 10,000 MNIST test images
    is 10^7 decoder passes); memory is bounded by ``chunk_rows`` latent rows at once.

    Parameters
    ----------
    model : VAE
    x : np.ndarray, float32, shape (N, input_dim), values in [0, 1]
    k : int
        Importance samples per image; at least 1.
    seed : int
        Seeds the CPU generator of the draws.
    chunk_rows : int
        Most latent rows decoded at once: ``chunk_rows // k`` images with all their
        samples, or slices of one image's samples when ``k > chunk_rows``.
    device : str or torch.device, optional
        Defaults to the model's current device.

    Returns
    -------
    BoundResult
        ``label="iwae"``, ``n_samples=k``; ``terms``: ``ess`` (effective sample size).

    Raises
    ------
    ValueError
        If ``k`` or ``chunk_rows`` is below 1, or ``x`` is not (N, input_dim) in [0, 1].
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    _check_chunk(chunk_rows)
    t0 = time.perf_counter()
    data = _as_images(x, model.config.input_dim)
    n, d = len(data), model.config.latent_dim
    lse = np.full(n, -np.inf)  # log sum_i w_i
    lse2 = np.full(n, -np.inf)  # log sum_i w_i^2, for the effective sample size
    gen = torch.Generator().manual_seed(seed)
    with _Eval(model, device) as dev:
        cached: tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        for i0, i1, s0, s1 in _blocks(n, k, chunk_rows):
            if cached is None or cached[:2] != (i0, i1):
                xb = data[i0:i1].to(dev)
                mu, logvar = model.encode(xb)
                cached = (i0, i1, xb, mu, logvar)
            _, _, xb, mu, logvar = cached
            eps = torch.randn((i1 - i0, s1 - s0, d), generator=gen).to(dev)
            z = mu[:, None, :] + torch.exp(0.5 * logvar)[:, None, :] * eps
            log_px_z = -_bce_rows(model, z, xb)
            z64, eps64 = z.double(), eps.double()
            log_pz = -0.5 * (z64.pow(2) + _LOG_2PI).sum(-1)
            log_qz = -0.5 * (eps64.pow(2) + _LOG_2PI + logvar.double()[:, None, :]).sum(-1)
            log_w = log_px_z + log_pz - log_qz
            block = torch.logsumexp(log_w, dim=1).cpu().numpy()
            block2 = torch.logsumexp(2.0 * log_w, dim=1).cpu().numpy()
            lse[i0:i1] = np.logaddexp(lse[i0:i1], block)
            lse2[i0:i1] = np.logaddexp(lse2[i0:i1], block2)
    nll = -(lse - math.log(k))
    ess = np.exp(2.0 * lse - lse2)
    return BoundResult("iwae", nll, k, time.perf_counter() - t0, {"ess": ess})
