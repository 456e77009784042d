"""End-to-end VQ-VAE baseline with the same fully connected encoder/decoder as the VAE.

Each image is encoded to one vector ``z_e`` in R^code_dim, snapped to the nearest
of ``n_codes`` codebook vectors, and decoded; gradients skip the quantiser with
the straight-through estimator (van den Oord et al., 2017).

Three codebook-training aids, all off by default so the paper-faithful model is
unchanged, make a stronger baseline (see :data:`VQVAE_PRESETS`):

* k-means initialisation of the codebook from encoder outputs (Zeghidour et al.,
  2021, SoundStream; ``kmeans_init`` in vector-quantize-pytorch);
* dead-code restart: a code unused for a window of training steps is moved onto an
  encoder output of the current batch (Dhariwal et al., 2020, Jukebox);
* exponential-moving-average codebook updates with Laplace-smoothed cluster sizes
  (van den Oord et al., 2017, appendix A.1; Razavi et al., 2019).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CODEBOOK_UPDATES = ("loss", "ema")

#: Named combinations of the codebook-training settings of :class:`VQVAEConfig`.
#: ``"paper"`` is the faithful baseline (all aids off); ``"strong"`` is the validated
#: combination (k-means initialisation, dead-code restart, EMA codebook).
VQVAE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "strong": {
        "kmeans_init": True,
        "kmeans_init_samples": 4096,
        "dead_code_window": 100,
        "codebook_update": "ema",
        "ema_decay": 0.99,
        "ema_epsilon": 1e-5,
    },
}


@dataclass
class VQVAEConfig:
    """Architecture and training hyper-parameters of :class:`VQVAE` (paper defaults).

    The codebook-training settings below default to "off" (the paper-faithful model);
    :meth:`preset` fills them in by name.

    Attributes
    ----------
    kmeans_init : bool
        Before training, set the codebook to k-means centroids of the freshly
        initialised encoder's outputs on the first ``kmeans_init_samples`` images of
        the first epoch's shuffled order.
    kmeans_init_samples : int
        Images encoded for the k-means initialisation (4096 = the first 32 batches of
        128); at least ``n_codes``, capped at the training-set size.
    dead_code_window : int
        Training steps (minibatches) a code may go unassigned before it is restarted
        at a random encoder output of the current batch; 0 disables restarts.
    codebook_update : {"loss", "ema"}
        ``"loss"``: codes learn by gradient of the codebook loss (paper). ``"ema"``:
        codes are exponential moving averages of their assigned encoder outputs and
        receive no gradient.
    ema_decay : float
        Decay of the cluster-size and embedding-sum averages, in (0, 1); EMA mode only.
    ema_epsilon : float
        Laplace smoothing added to each cluster size before normalising, > 0; EMA only.
    """

    input_dim: int = 784
    hidden_dim: int = 400
    code_dim: int = 20
    n_codes: int = 64
    beta: float = 0.25
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    kmeans_init: bool = False
    kmeans_init_samples: int = 4096
    dead_code_window: int = 0
    codebook_update: str = "loss"
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "VQVAEConfig":
        """A config with the named preset's settings, then ``overrides``, applied.

        Parameters
        ----------
        name : str
            A key of :data:`VQVAE_PRESETS` (``"paper"`` or ``"strong"``).
        **overrides
            Any :class:`VQVAEConfig` field, e.g. ``n_codes=128``.

        Raises
        ------
        ValueError
            If ``name`` is not a known preset.
        """
        if name not in VQVAE_PRESETS:
            raise ValueError(f"unknown VQ-VAE preset {name!r}; choose one of {sorted(VQVAE_PRESETS)}")
        return cls(**{**VQVAE_PRESETS[name], **overrides})

    @property
    def uses_ema(self) -> bool:
        """Whether the codebook follows moving averages instead of its loss gradient."""
        return self.codebook_update == "ema"

    def validate(self) -> "VQVAEConfig":
        """Check the codebook-training settings; return ``self``.

        Raises
        ------
        ValueError
            Naming the setting and its allowed range.
        """
        if self.codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(f"codebook_update must be one of {CODEBOOK_UPDATES}, "
                             f"got {self.codebook_update!r}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay}; 0.99 is usual")
        if not self.ema_epsilon > 0.0:
            raise ValueError(f"ema_epsilon must be positive, got {self.ema_epsilon}; 1e-5 is usual")
        if self.dead_code_window < 0:
            raise ValueError(f"dead_code_window must be >= 0 steps (0 disables restarts), "
                             f"got {self.dead_code_window}")
        if self.kmeans_init and self.kmeans_init_samples < self.n_codes:
            raise ValueError(f"kmeans_init_samples={self.kmeans_init_samples} is fewer than "
                             f"n_codes={self.n_codes}; raise kmeans_init_samples")
        return self


class VQVAE(nn.Module):
    """VQ-VAE with a single code per image.

    Parameters
    ----------
    config : VQVAEConfig

    Attributes
    ----------
    ema_cluster_size : torch.Tensor, float32, shape (n_codes,)
        EMA mode only (a buffer, saved in the state dict): moving average of the
        number of encodings assigned to each code per batch.
    ema_embed_sum : torch.Tensor, float32, shape (n_codes, code_dim)
        EMA mode only (a buffer): moving average of the sum of those encodings.

    Raises
    ------
    ValueError
        If a codebook-training setting of ``config`` is out of range.
    """

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.enc_hidden = nn.Linear(config.input_dim, config.hidden_dim)
        self.enc_out = nn.Linear(config.hidden_dim, config.code_dim)
        self.embedding = nn.Embedding(config.n_codes, config.code_dim)
        # Small uniform init as in the reference VQ-VAE code: codes start near the
        # origin, where the freshly initialised encoder outputs land.
        k = config.n_codes
        nn.init.uniform_(self.embedding.weight, -1.0 / k, 1.0 / k)
        self.dec_hidden = nn.Linear(config.code_dim, config.hidden_dim)
        self.dec_out = nn.Linear(config.hidden_dim, config.input_dim)
        if config.uses_ema:
            # Buffers exist only in EMA mode, so paper-mode state dicts (and old
            # checkpoints) keep exactly their keys. A cluster size of one with the
            # code itself as the sum makes the first normalised estimate equal the
            # current code, so the averages need no zero-debiasing.
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("ema_cluster_size", torch.ones(k))
            self.register_buffer("ema_embed_sum", self.embedding.weight.detach().clone())

    @property
    def codebook(self) -> torch.Tensor:
        """Codebook weight, float32, shape (n_codes, code_dim)."""
        return self.embedding.weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous encoding ``z_e``: (N, input_dim) -> (N, code_dim)."""
        return self.enc_out(F.relu(self.enc_hidden(x)))

    def quantize(
        self, z_e: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest-code assignment by squared Euclidean distance.

        Parameters
        ----------
        z_e : torch.Tensor, float32, shape (N, code_dim)

        Returns
        -------
        z_q_st : torch.Tensor, float32, shape (N, code_dim)
            Quantised vectors in the forward pass; identity gradient to ``z_e``.
        codes : torch.Tensor, int64, shape (N,)
        codebook_loss : torch.Tensor, scalar
            ``sum ||sg[z_e] - z_q||^2`` -- moves codes towards encodings. In EMA
            mode the codebook takes no gradient, so this is only the quantisation
            error (numerically equal to ``commitment``).
        commitment : torch.Tensor, scalar
            ``sum ||z_e - sg[z_q]||^2``, unscaled by beta -- keeps encodings near codes.
        """
        w = self.codebook
        # Expanded ||a-b||^2 avoids materialising an (N, K, D) difference tensor.
        d2 = z_e.pow(2).sum(1, keepdim=True) - 2.0 * z_e @ w.t() + w.pow(2).sum(1)
        codes = d2.argmin(dim=1)
        z_q = self.embedding(codes)
        codebook_loss = (z_e.detach() - z_q).pow(2).sum()
        commitment = (z_e - z_q.detach()).pow(2).sum()
        z_q_st = z_e + (z_q - z_e).detach()
        return z_q_st, codes, codebook_loss, commitment

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities for (N, code_dim) vectors -> (N, input_dim)."""
        return torch.sigmoid(self.dec_out(F.relu(self.dec_hidden(z))))

    @torch.no_grad()
    def set_codebook(self, codes: torch.Tensor, *, index: torch.Tensor | None = None) -> None:
        """Overwrite code vectors in place, keeping the EMA statistics consistent.

        In EMA mode each overwritten code gets a cluster size of one and an
        embedding sum equal to its new vector, so the next moving-average update
        starts from the new position rather than pulling the code back.

        Parameters
        ----------
        codes : torch.Tensor, float32, shape (n_codes, code_dim) or (len(index), code_dim)
        index : torch.Tensor, int64, shape (M,), optional
            Rows to overwrite; ``None`` overwrites the whole codebook.
        """
        rows = slice(None) if index is None else index
        self.embedding.weight[rows] = codes.to(self.embedding.weight)
        if self.config.uses_ema:
            self.ema_cluster_size[rows] = 1.0
            self.ema_embed_sum[rows] = self.embedding.weight[rows]

    @torch.no_grad()
    def ema_update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """One exponential-moving-average codebook step (Razavi et al., 2019, eqs. 5-7).

        With decay ``g``, counts ``n_i`` and sums ``s_i`` of the encodings assigned to
        code ``i`` in this batch::

            N_i <- g N_i + (1 - g) n_i          m_i <- g m_i + (1 - g) s_i
            N~_i = (N_i + eps) / (sum N + K eps) * sum N      e_i = m_i / N~_i

        The Laplace smoothing (``eps``) keeps unused codes from dividing by zero.

        Parameters
        ----------
        z_e : torch.Tensor, float32, shape (N, code_dim)
            Encoder outputs of the batch (detached here).
        codes : torch.Tensor, int64, shape (N,)
            Their assigned codes.

        Raises
        ------
        RuntimeError
            If the model was not built with ``codebook_update="ema"``.
        """
        if not self.config.uses_ema:
            raise RuntimeError("ema_update needs a VQVAE built with codebook_update='ema'")
        cfg = self.config
        z = z_e.detach().to(self.ema_embed_sum.dtype)
        counts = torch.bincount(codes, minlength=cfg.n_codes).to(z.dtype)
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, codes, z)
        self.ema_cluster_size.mul_(cfg.ema_decay).add_(counts, alpha=1.0 - cfg.ema_decay)
        self.ema_embed_sum.mul_(cfg.ema_decay).add_(sums, alpha=1.0 - cfg.ema_decay)
        total = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + cfg.ema_epsilon) / (total + cfg.n_codes * cfg.ema_epsilon) * total
        self.embedding.weight.copy_(self.ema_embed_sum / smoothed[:, None])

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, quantise, decode.

        Returns
        -------
        recon : torch.Tensor, float32, shape (N, input_dim)
        codes : torch.Tensor, int64, shape (N,)
        codebook_loss, commitment : torch.Tensor, scalar sums (see :meth:`quantize`)
        """
        z_q_st, codes, codebook_loss, commitment = self.quantize(self.encode(x))
        return self.decode(z_q_st), codes, codebook_loss, commitment


def kmeans_centroids(
    z: torch.Tensor, n_clusters: int, *, generator: torch.Generator, max_iter: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding then Lloyd iterations, in float64 on the CPU.

    Stops when no assignment changes (or after ``max_iter`` updates), so on
    convergence every centroid is the mean of the points nearest to it. A cluster
    that empties is moved to the point farthest from its current centroid.

    Parameters
    ----------
    z : torch.Tensor, float, shape (N, d), any device
        Points; N >= n_clusters.
    n_clusters : int
    generator : torch.Generator
        CPU generator driving the k-means++ draws.
    max_iter : int
        Most centroid updates.

    Returns
    -------
    centroids : torch.Tensor, same dtype and device as ``z``, shape (n_clusters, d)
    labels : torch.Tensor, int64, shape (N,), on ``z``'s device
        Nearest centroid of each point.

    Raises
    ------
    ValueError
        If there are fewer points than clusters.
    """
    if len(z) < n_clusters:
        raise ValueError(f"k-means needs at least n_clusters={n_clusters} points, got {len(z)}")
    x = z.detach().to("cpu", torch.float64)
    n = len(x)
    # k-means++ (Arthur & Vassilvitskii, 2007): later seeds favour points far from earlier ones.
    idx = [int(torch.randint(n, (1,), generator=generator))]
    d2 = (x - x[idx[0]]).pow(2).sum(1)
    for _ in range(1, n_clusters):
        total = d2.sum()
        # Fewer distinct points than clusters leaves d2 all zero; fall back to a uniform pick.
        weights = d2 / total if total > 0 else torch.full_like(d2, 1.0 / n)
        nxt = int(torch.multinomial(weights, 1, generator=generator))
        idx.append(nxt)
        d2 = torch.minimum(d2, (x - x[nxt]).pow(2).sum(1))
    centroids = x[idx].clone()
    labels = torch.cdist(x, centroids).argmin(1)
    for _ in range(max_iter):
        counts = torch.bincount(labels, minlength=n_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(x.dtype)
        if not filled.all():
            far = (x - centroids[labels]).pow(2).sum(1).argsort(descending=True)
            empty = (~filled).nonzero().flatten()
            centroids[empty] = x[far[: len(empty)]]
        new_labels = torch.cdist(x, centroids).argmin(1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return centroids.to(z.device, z.dtype), labels.to(z.device)


def vqvae_loss(
    recon: torch.Tensor,
    x: torch.Tensor,
    codebook_loss: torch.Tensor,
    commitment: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VQ-VAE objective, summed over pixels and the batch.

    Returns
    -------
    total, bce, commitment : torch.Tensor, scalar
        ``total = bce + codebook_loss + beta * commitment``; ``commitment`` is
        returned unscaled.
    """
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    return bce + codebook_loss + beta * commitment, bce, commitment
