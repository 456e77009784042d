"""Training loops, batched inference and checkpoints shared by the VAE, VQ-VAE and prior.

Image losses are sums over pixels and the batch (pytorch/examples convention);
histories and log lines report them per image (per token for the prior).
"""
from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .prior import GRUPrior, PriorConfig
from .vae import VAE, VAEConfig, vae_loss
from .vqvae import VQVAE, VQVAEConfig, kmeans_centroids, vqvae_loss

logger = logging.getLogger(__name__)

Device = str | torch.device

# Checkpoint "kind" tag -> (model class, config class).
_KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "vae": (VAE, VAEConfig),
    "vqvae": (VQVAE, VQVAEConfig),
    "prior": (GRUPrior, PriorConfig),
}

# step(model, batch) -> (loss to backprop, summed metric tensors incl. "loss", units in batch)
StepFn = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor], int]]


def select_device(device: Device = "auto") -> torch.device:
    """Resolve a device name; ``"auto"`` picks CUDA when present, else CPU.

    Raises
    ------
    ValueError
        If CUDA is requested but ``torch.cuda.is_available()`` is false.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} requested but CUDA is not available "
            f"(torch {torch.__version__}); use device='cpu' or 'auto'"
        )
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a fresh seeded CPU generator.

    The generator drives minibatch shuffling, so the batch order does not depend
    on how many random numbers model initialisation consumed.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _as_images(x: np.ndarray, input_dim: int) -> torch.Tensor:
    """(N, input_dim) array in [0, 1] -> CPU float32 tensor (no copy when already float32)."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != input_dim:
        raise ValueError(f"expected images of shape (N, {input_dim}), got {arr.shape}")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError("image pixels must lie in [0, 1] (divide raw MNIST by 255)")
    return torch.from_numpy(arr)


def _fit(
    model: nn.Module,
    data: torch.Tensor,
    step: StepFn,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    device: torch.device,
    name: str,
    progress: bool,
    epoch_end: Callable[[], dict[str, Any]] | None = None,
    after_step: Callable[[], None] | None = None,
) -> list[dict]:
    """Adam over shuffled minibatches of ``data`` (kept on CPU, moved per batch).

    ``epoch_end``, if given, returns extra fields for each epoch's history record.
    ``after_step``, if given, runs after each optimiser step, for updates that must
    not be seen by autograd (EMA codebooks, code restarts).
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_batches = math.ceil(len(data) / batch_size)
    history: list[dict] = []
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        units = 0
        perm = torch.randperm(len(data), generator=generator)
        desc = f"{name} epoch {epoch}/{epochs}"
        with tqdm(total=n_batches, desc=desc, disable=not progress, leave=False) as bar:
            for start in range(0, len(data), batch_size):
                batch = data[perm[start : start + batch_size]].to(device, non_blocking=True)
                loss, metrics, n = step(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if after_step is not None:
                    after_step()
                # One host transfer per batch: a single GPU sync instead of one per metric.
                values = torch.stack([v.detach() for v in metrics.values()]).tolist()
                for k, v in zip(metrics, values):
                    sums[k] = sums.get(k, 0.0) + v
                units += n
                bar.set_postfix(loss=f"{sums['loss'] / units:.3f}", refresh=False)
                bar.update(1)
        record = {"epoch": epoch, **{k: v / units for k, v in sums.items()}}
        if epoch_end is not None:
            record.update(epoch_end())
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        metrics_txt = "  ".join(f"{k} {v:.4g}" for k, v in record.items()
                                if k not in ("epoch", "seconds"))
        logger.info("%s  %s  (%.1fs)", desc, metrics_txt, record["seconds"])
    model.eval()
    return history


def train_vae(
    x_train: np.ndarray, config: VAEConfig, *, device: Device = "auto", progress: bool = True
) -> tuple[VAE, list[dict]]:
    """Train a :class:`VAE` on images ``x_train`` (N, input_dim), float32 in [0, 1].

    Returns
    -------
    model : VAE
        On the training device, in eval mode.
    history : list of dict
        Per epoch: ``epoch``, ``loss``, ``bce``, ``kl`` (per-image means of the
        summed losses) and ``seconds``.
    """
    dev = select_device(device)
    gen = seed_everything(config.seed)
    data = _as_images(x_train, config.input_dim)
    model = VAE(config).to(dev)

    def step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, int]:
        recon, mu, logvar = m(x)
        total, bce, kl = vae_loss(recon, x, mu, logvar)
        return total, {"loss": total, "bce": bce, "kl": kl}, len(x)

    history = _fit(model, data, step, epochs=config.epochs, batch_size=config.batch_size,
                   lr=config.lr, generator=gen, device=dev, name="vae", progress=progress)
    return model, history


def _derived_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for an auxiliary random stream, independent of the shuffling one."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _first_epoch_indices(n: int, n_samples: int, seed: int) -> torch.Tensor:
    """Indices of the first ``n_samples`` images that epoch 1 of training visits.

    Replays the first shuffle of the generator :func:`seed_everything` returns,
    without touching the training run's own generator.

    Returns
    -------
    torch.Tensor, int64, shape (min(n, n_samples),)
    """
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_samples]


@torch.no_grad()
def init_codebook_kmeans(
    model: VQVAE,
    x: np.ndarray | torch.Tensor,
    *,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 4096,
) -> torch.Tensor:
    """Set the codebook to k-means centroids of the encoder's outputs on ``x``.

    As ``kmeans_init`` in SoundStream / vector-quantize-pytorch: encode images with
    the current encoder, run k-means (k-means++ seeding, Lloyd to convergence; see
    :func:`~rapids_geovq.models.vqvae.kmeans_centroids`) with ``n_codes`` clusters,
    and copy the centroids into the codebook (and the EMA statistics, in EMA mode).

    Parameters
    ----------
    model : VQVAE
    x : np.ndarray or torch.Tensor, float32, shape (N, input_dim), values in [0, 1]
        Images to encode, in order; :func:`train_vqvae` passes the first
        ``kmeans_init_samples`` images of its first epoch.
    n_samples : int, optional
        Use only the first ``n_samples`` rows of ``x`` (default: all).
    generator : torch.Generator, optional
        CPU generator for the k-means++ draws; default seeded from ``config.seed``.
    batch_size : int
        Images per encoder pass.

    Returns
    -------
    torch.Tensor, int64, shape (M,)
        The k-means cluster of each encoded image (M = rows used).
    """
    cfg = model.config
    data = x if isinstance(x, torch.Tensor) else _as_images(x, cfg.input_dim)
    if n_samples is not None:
        data = data[:n_samples]
    if generator is None:
        generator = _derived_generator(cfg.seed, 1)
    parts = _batched(model.encode, model, data, batch_size, None)
    z = torch.cat(parts) if parts else data.new_zeros((0, cfg.code_dim))
    centroids, labels = kmeans_centroids(z, cfg.n_codes, generator=generator)
    model.set_codebook(centroids)
    return labels


class DeadCodeRestarter:
    """Dead-code restart (Dhariwal et al., 2020): revive codes no encoding has chosen lately.

    Call it once per training step with the batch's encoder outputs and codes. A code
    unassigned for ``window`` consecutive steps is moved onto an encoder output of that
    batch, drawn uniformly (distinct outputs while the batch has enough), and its
    clock restarts, so it gets a fresh window to win encodings.

    Parameters
    ----------
    model : VQVAE
        Its codebook (and EMA statistics) are overwritten through
        :meth:`~rapids_geovq.models.vqvae.VQVAE.set_codebook`.
    window : int
        Steps without an assignment before a restart; at least 1.
    generator : torch.Generator
        CPU generator for the draws.

    Attributes
    ----------
    step : int
        Steps seen so far.
    restarts : int
        Codes restarted so far (a code restarted twice counts twice).
    """

    def __init__(self, model: VQVAE, window: int, generator: torch.Generator) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 step, got {window}")
        self.model = model
        self.window = window
        self.generator = generator
        self.step = 0
        self.restarts = 0
        self.last_used = torch.zeros(model.config.n_codes, dtype=torch.long,
                                     device=_model_device(model))

    @torch.no_grad()
    def __call__(self, z_e: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Record one step's assignments and restart the codes that have gone dead.

        Parameters
        ----------
        z_e : torch.Tensor, float32, shape (N, code_dim)
            The batch's encoder outputs.
        codes : torch.Tensor, int64, shape (N,)
            Their codes (as assigned before any update this step).

        Returns
        -------
        torch.Tensor, int64, shape (M,)
            Indices of the codes restarted now (empty when none).
        """
        self.step += 1
        self.last_used[codes] = self.step
        dead = ((self.step - self.last_used) >= self.window).nonzero().flatten()
        if len(dead) == 0 or len(z_e) == 0:
            return dead[:0]
        n = len(z_e)
        if len(dead) <= n:
            pick = torch.randperm(n, generator=self.generator)[: len(dead)]
        else:
            pick = torch.randint(n, (len(dead),), generator=self.generator)
        self.model.set_codebook(z_e.detach()[pick.to(z_e.device)], index=dead)
        self.last_used[dead] = self.step
        self.restarts += len(dead)
        return dead


def train_vqvae(
    x_train: np.ndarray, config: VQVAEConfig, *, device: Device = "auto", progress: bool = True
) -> tuple[VQVAE, list[dict]]:
    """Train a :class:`VQVAE` end to end on images (N, input_dim), float32 in [0, 1].

    With the codebook-training settings off (the default) this is the paper's
    training, bit for bit. ``kmeans_init`` first sets the codebook from the first
    ``kmeans_init_samples`` images of epoch 1 (:func:`init_codebook_kmeans`);
    ``dead_code_window`` restarts codes after each optimiser step; EMA mode updates
    the codebook by moving averages after each step and drops the codebook term from
    the objective. Their random draws come from a generator derived from
    ``config.seed``, separate from the shuffling, so the batch order is the same in
    every mode.

    Returns
    -------
    model : VQVAE
        On the training device, in eval mode.
    history : list of dict
        Per epoch: ``epoch``, ``loss``, ``bce``, ``codebook``, ``commitment``
        (per-image means; commitment unscaled by beta), ``codes_used`` (distinct
        codes assigned during the epoch, a codebook-collapse diagnostic) and
        ``seconds``; with restarts on, also ``restarts`` (codes restarted during the
        epoch). In EMA mode ``loss`` is ``bce + beta * commitment`` and ``codebook``
        is the quantisation error ``||z_e - z_q||^2`` before the step's update,
        reported but not optimised.

    Raises
    ------
    ValueError
        If a codebook-training setting is out of range (see :meth:`VQVAEConfig.validate`).
    """
    config.validate()
    dev = select_device(device)
    gen = seed_everything(config.seed)
    data = _as_images(x_train, config.input_dim)
    model = VQVAE(config).to(dev)
    used = torch.zeros(config.n_codes, dtype=torch.bool, device=dev)
    aids = config.kmeans_init or config.dead_code_window > 0 or config.uses_ema

    if not aids:
        # The paper-faithful step, kept separate so its arithmetic never changes.
        def step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, int]:
            recon, codes, cb, commit = m(x)
            total, bce, commit = vqvae_loss(recon, x, cb, commit, config.beta)
            used[codes] = True
            return total, {"loss": total, "bce": bce, "codebook": cb, "commitment": commit}, len(x)

        def epoch_end() -> dict[str, Any]:
            n_used = int(used.sum())
            used.zero_()
            return {"codes_used": n_used}

        history = _fit(model, data, step, epochs=config.epochs, batch_size=config.batch_size,
                       lr=config.lr, generator=gen, device=dev, name="vqvae", progress=progress,
                       epoch_end=epoch_end)
        return model, history

    aux = _derived_generator(config.seed, 1)
    if config.kmeans_init:
        first = _first_epoch_indices(len(data), config.kmeans_init_samples, config.seed)
        init_codebook_kmeans(model, data[first], generator=aux)
    restarter = (DeadCodeRestarter(model, config.dead_code_window, aux)
                 if config.dead_code_window > 0 else None)
    last: dict[str, torch.Tensor] = {}

    def aided_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, int]:
        z_e = m.encode(x)
        z_q_st, codes, cb, commit = m.quantize(z_e)
        recon = m.decode(z_q_st)
        # EMA codes take no gradient: the objective keeps only reconstruction and commitment.
        cb_term = torch.zeros_like(cb) if config.uses_ema else cb
        total, bce, commit = vqvae_loss(recon, x, cb_term, commit, config.beta)
        used[codes] = True
        last["z_e"], last["codes"] = z_e.detach(), codes
        return total, {"loss": total, "bce": bce, "codebook": cb.detach(), "commitment": commit}, len(x)

    def after_step() -> None:
        if config.uses_ema:
            model.ema_update(last["z_e"], last["codes"])
        if restarter is not None:
            restarter(last["z_e"], last["codes"])

    restarts_before = [0]

    def aided_epoch_end() -> dict[str, Any]:
        record: dict[str, Any] = {"codes_used": int(used.sum())}
        used.zero_()
        if restarter is not None:
            record["restarts"] = restarter.restarts - restarts_before[0]
            restarts_before[0] = restarter.restarts
        return record

    history = _fit(model, data, aided_step, epochs=config.epochs, batch_size=config.batch_size,
                   lr=config.lr, generator=gen, device=dev, name="vqvae", progress=progress,
                   epoch_end=aided_epoch_end, after_step=after_step)
    return model, history


def _as_sequences(sequences: np.ndarray | torch.Tensor, config: PriorConfig) -> torch.Tensor:
    seqs = torch.as_tensor(np.asarray(sequences))
    if seqs.ndim != 2 or seqs.shape[1] != config.seq_len:
        raise ValueError(f"expected sequences of shape (M, {config.seq_len}), got "
                         f"{tuple(seqs.shape)}; set PriorConfig.seq_len to match")
    if seqs.dtype.is_floating_point or seqs.dtype == torch.bool:
        raise ValueError(f"sequences must hold integer code indices, got {seqs.dtype}")
    seqs = seqs.long()
    if seqs.numel() and (seqs.min() < 0 or seqs.max() >= config.n_codes):
        raise ValueError(f"code indices must lie in [0, {config.n_codes})")
    return seqs


def train_prior(
    sequences: np.ndarray, config: PriorConfig, *, device: Device = "auto", progress: bool = True
) -> tuple[GRUPrior, list[dict]]:
    """Train a :class:`GRUPrior` by teacher forcing on code sequences.

    Parameters
    ----------
    sequences : np.ndarray, int64, shape (M, config.seq_len), values in [0, n_codes)

    Returns
    -------
    model : GRUPrior
        On the training device, in eval mode.
    history : list of dict
        Per epoch: ``epoch``, ``loss`` (mean NLL per token, nats) and ``seconds``.
    """
    dev = select_device(device)
    gen = seed_everything(config.seed)
    data = _as_sequences(sequences, config)
    model = GRUPrior(config).to(dev)

    def step(m: nn.Module, codes: torch.Tensor) -> tuple[torch.Tensor, dict, int]:
        logits = m(codes)
        # Token-mean cross-entropy as in nanoGPT; Adam is insensitive to the scale.
        loss = F.cross_entropy(logits.flatten(0, 1), codes.flatten())
        return loss, {"loss": loss * codes.numel()}, codes.numel()

    history = _fit(model, data, step, epochs=config.epochs, batch_size=config.batch_size,
                   lr=config.lr, generator=gen, device=dev, name="prior", progress=progress)
    return model, history


def _batched(
    fn: Callable[[torch.Tensor], Any],
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int,
    device: Device | None,
) -> list[Any]:
    """Apply ``fn`` to eval-mode batches of ``x`` without grad; restores train/eval mode.

    ``device=None`` keeps the model where it is; otherwise the model is moved there
    (and stays), so evaluating a CUDA model on CPU is explicit.
    """
    dev = _model_device(model) if device is None else select_device(device)
    was_training = model.training
    model.eval().to(dev)
    try:
        with torch.no_grad():
            return [fn(x[i : i + batch_size].to(dev)) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)


def evaluate_vae(
    model: VAE, x: np.ndarray, *, batch_size: int = 1000, device: Device | None = None
) -> dict[str, Any]:
    """Negative-ELBO terms summed over a dataset, with a deterministic decoder input.

    The reconstruction term decodes the posterior mean (``z = mu``) rather than a
    sample, so the number is reproducible; the KL uses the full ``(mu, logvar)``.
    Divide by ``n`` for per-image values.

    Parameters
    ----------
    model : VAE
    x : np.ndarray, float32, shape (N, input_dim), values in [0, 1]
    batch_size : int
    device : str, optional
        Defaults to the model's current device.

    Returns
    -------
    dict
        ``total`` (= bce + kl), ``bce``, ``kl`` as float sums and ``n`` (int).
    """
    def fn(xb: torch.Tensor) -> tuple[float, float]:
        mu, logvar = model.encode(xb)
        _, bce, kl = vae_loss(model.decode(mu), xb, mu, logvar)
        return bce.item(), kl.item()

    parts = _batched(fn, model, _as_images(x, model.config.input_dim), batch_size, device)
    bce = sum(p[0] for p in parts)
    kl = sum(p[1] for p in parts)
    return {"total": bce + kl, "bce": bce, "kl": kl, "n": len(x)}


def evaluate_vqvae(
    model: VQVAE, x: np.ndarray, *, batch_size: int = 1000, device: Device | None = None
) -> dict[str, Any]:
    """VQ-VAE loss terms summed over a dataset, plus each image's code.

    Returns
    -------
    dict
        ``total`` (the training objective: bce + codebook + beta * commitment, or
        bce + beta * commitment for an EMA codebook, which has no codebook loss),
        ``bce``, ``codebook`` (quantisation error ``||z_e - z_q||^2``), ``commitment``
        (unscaled; numerically equal to ``codebook``) as float sums, ``n`` (int) and
        ``codes`` (np.ndarray, int64, shape (N,)).
    """
    def fn(xb: torch.Tensor) -> tuple[float, float, float, torch.Tensor]:
        recon, codes, cb, commit = model(xb)
        bce = F.binary_cross_entropy(recon, xb, reduction="sum")
        return bce.item(), cb.item(), commit.item(), codes.cpu()

    parts = _batched(fn, model, _as_images(x, model.config.input_dim), batch_size, device)
    bce, cb, commit = (sum(p[i] for p in parts) for i in range(3))
    codes = torch.cat([p[3] for p in parts]).numpy() if parts else np.zeros(0, np.int64)
    cb_term = 0.0 if model.config.uses_ema else cb
    return {"total": bce + cb_term + model.config.beta * commit, "bce": bce, "codebook": cb,
            "commitment": commit, "n": len(x), "codes": codes}


def encode_means(
    model: VAE, x: np.ndarray, *, batch_size: int = 4096, device: Device | None = None, as_tensor: bool = False
):
    """Posterior means of images (N, input_dim) -> np.ndarray float32 (N, latent_dim), or, with
    ``as_tensor``, a torch tensor left on ``device`` (for a GPU kNN that reads it in place)."""
    parts = _batched(lambda xb: model.encode(xb)[0] if as_tensor else model.encode(xb)[0].cpu(), model,
                     _as_images(x, model.config.input_dim), batch_size, device)
    if not parts:
        z = torch.zeros((0, model.config.latent_dim))
        return z if as_tensor else z.numpy()
    z = torch.cat(parts)
    return z if as_tensor else z.numpy()


def decode_latents(
    model: VAE | VQVAE, z: np.ndarray, *, batch_size: int = 4096, device: Device | None = None
) -> np.ndarray:
    """Decode latent vectors (e.g. codebook entries) to pixel probabilities.

    Parameters
    ----------
    model : VAE or VQVAE
    z : np.ndarray, shape (N, d) with d the model's latent/code dimension

    Returns
    -------
    np.ndarray, float32, shape (N, input_dim), values in (0, 1)
    """
    zt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    parts = _batched(lambda zb: model.decode(zb).cpu(), model, zt, batch_size, device)
    if not parts:
        return np.zeros((0, model.config.input_dim), np.float32)
    return torch.cat(parts).numpy()


def bce_per_image(probs: np.ndarray, x: np.ndarray, *, chunk: int = 8192) -> np.ndarray:
    """Summed binary cross-entropy per image, matching ``F.binary_cross_entropy``.

    Logs are clamped at -100 exactly as torch does, so saturated probabilities give
    a large finite loss instead of inf.

    Parameters
    ----------
    probs, x : np.ndarray, shape (N, D)
        Decoder probabilities and target pixels in [0, 1].
    chunk : int
        Rows per float64 block, bounding the temporary memory.

    Returns
    -------
    np.ndarray, float64, shape (N,)
    """
    probs, x = np.asarray(probs), np.asarray(x)
    if probs.shape != x.shape or probs.ndim != 2:
        raise ValueError(f"probs {probs.shape} and x {x.shape} must be equal (N, D) shapes")
    out = np.empty(len(x), dtype=np.float64)
    with np.errstate(divide="ignore"):
        for i in range(0, len(x), chunk):
            p = probs[i : i + chunk].astype(np.float64)
            t = x[i : i + chunk].astype(np.float64)
            log_p = np.maximum(np.log(p), -100.0)
            log_1mp = np.maximum(np.log1p(-p), -100.0)
            out[i : i + chunk] = -(t * log_p + (1.0 - t) * log_1mp).sum(axis=1)
    return out


def _plain(obj: Any) -> Any:
    """NumPy scalars/arrays -> Python values so ``torch.load(weights_only=True)`` accepts them."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return obj


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, config: Any, history: list[dict] | None = None
) -> None:
    """Atomically write ``{"kind", "config", "state_dict", "history"}`` to ``path``.

    The file is written next to ``path`` and renamed into place, so an interrupted
    save never leaves a truncated checkpoint behind. Tensors are stored on CPU.
    """
    kind = next((k for k, (cls, _) in _KINDS.items() if type(model) is cls), None)
    if kind is None:
        raise TypeError(f"cannot checkpoint a {type(model).__name__}")
    if not isinstance(config, _KINDS[kind][1]):
        raise TypeError(f"{kind} checkpoint needs a {_KINDS[kind][1].__name__}, "
                        f"got {type(config).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "kind": kind,
        "config": asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": _plain(history),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(
    path: str | os.PathLike, map_location: Device = "cpu"
) -> tuple[nn.Module, Any, list[dict] | None]:
    """Rebuild a model saved by :func:`save_checkpoint`.

    ``map_location`` accepts anything :func:`select_device` does, ``"auto"`` included.

    Returns
    -------
    model : VAE, VQVAE or GRUPrior
        On ``map_location``, in eval mode.
    config : VAEConfig, VQVAEConfig or PriorConfig
    history : list of dict or None

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``map_location`` asks for CUDA where there is none.
    RuntimeError
        If the file cannot be read or does not describe a known model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    dev = select_device(map_location)  # before loading, so a bad device is not "corrupt"
    try:
        payload = torch.load(path, map_location=dev, weights_only=True)
        model_cls, config_cls = _KINDS[payload["kind"]]
        config = config_cls(**payload["config"])
        model = model_cls(config)
        model.load_state_dict(payload["state_dict"])
    except Exception as err:
        raise RuntimeError(
            f"checkpoint {path} is corrupt or incompatible ({type(err).__name__}: {err}); "
            f"delete it to retrain"
        ) from err
    return model.to(dev).eval(), config, payload.get("history")
