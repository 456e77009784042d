"""PyTorch models: continuous VAE, end-to-end VQ-VAE baseline and GRU code prior."""
from .bounds import BoundResult, iwae_bound, mean_and_se, negative_elbo, posterior_mean_loss
from .prior import GRUPrior, PriorConfig, prior_nll
from .training import (
    DeadCodeRestarter,
    bce_per_image,
    decode_latents,
    encode_means,
    evaluate_vae,
    evaluate_vqvae,
    init_codebook_kmeans,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    select_device,
    train_prior,
    train_vae,
    train_vqvae,
)
from .vae import VAE, VAEConfig, vae_loss
from .vqvae import VQVAE, VQVAE_PRESETS, VQVAEConfig, kmeans_centroids, vqvae_loss

__all__ = [
    "VAE", "VAEConfig", "vae_loss",
    "VQVAE", "VQVAEConfig", "VQVAE_PRESETS", "vqvae_loss", "kmeans_centroids",
    "GRUPrior", "PriorConfig", "prior_nll",
    "select_device", "seed_everything",
    "train_vae", "train_vqvae", "train_prior", "init_codebook_kmeans", "DeadCodeRestarter",
    "evaluate_vae", "evaluate_vqvae", "encode_means", "decode_latents", "bce_per_image",
    "BoundResult", "negative_elbo", "posterior_mean_loss", "iwae_bound", "mean_and_se",
    "save_checkpoint", "load_checkpoint",
]
