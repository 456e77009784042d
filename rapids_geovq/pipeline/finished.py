"""Using a finished run: code new images with its VAE and geodesic codebook, decode codes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .layout import RunLayout


class RunNotReady(RuntimeError):
    """The run directory is missing, unfinished, or was written by another version."""


class FinishedRun:
    """The VAE and geodesic codebook of a finished run directory.

    Parameters
    ----------
    run_dir : path

    Raises
    ------
    RunNotReady
        With what is missing and the command that finishes or redoes the run.
    """

    def __init__(self, run_dir):
        from ..config import load_job
        from ..geodesic.codebook import GeodesicCodebook
        from ..models.training import load_checkpoint

        self.layout = lay = RunLayout(Path(run_dir))
        if not lay.root.is_dir():
            raise RunNotReady(f"run directory {lay.root} does not exist; give the run_dir of a job that ran "
                              "(rapids-geovq run JOB.yaml)")
        if not lay.config.exists():
            raise RunNotReady(f"{lay.root} is not a run directory (no config.yaml); give the run_dir of a job")
        again = f"rapids-geovq run {lay.config}"
        self.cfg = load_job(lay.config)
        for what, path in (("the VAE", lay.vae), ("the geodesic codebook", lay.codebook)):
            if not path.exists() or not lay.record({"the VAE": "vae", "the geodesic codebook": "kmeans"}[what]).exists():
                raise RunNotReady(f"the run in {lay.root} is unfinished: {what} ({path}) is not there yet; "
                                  f"finish it with: {again}")
        try:
            self.codebook = GeodesicCodebook.load(lay.codebook)
        except ValueError as exc:
            raise RunNotReady(f"the codebook of {lay.root} was written by another version of rapids_geovq or is "
                              f"damaged ({exc}); run the job again to update it: {again}") from exc
        try:
            self.vae, _, _ = load_checkpoint(lay.vae)
        except RuntimeError as exc:
            raise RunNotReady(f"{exc}; or run the job again: {again}") from exc
        if self.vae.config.latent_dim != self.codebook.codebook_.shape[1]:
            raise RunNotReady(f"the VAE of {lay.root} has {self.vae.config.latent_dim}-D latents but its codebook "
                              f"{self.codebook.codebook_.shape[1]}-D; run the job again: {again}")

    @property
    def n_codes(self) -> int:
        return self.codebook.codebook_.shape[0]

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Codes (int64, (N,)) of uint8 images (N, 28, 28): encoder mean, then the geodesically
        nearest code."""
        from ..data import images_to_float
        from ..models.training import encode_means

        z = encode_means(self.vae, images_to_float(images), device="cpu")
        return self.codebook.predict(z)

    def decode(self, codes) -> np.ndarray:
        """What codes decode to: pixel probabilities, float32 (N, 784)."""
        from ..models.training import decode_latents

        return decode_latents(self.vae, self.codebook.decode(codes), device="cpu")
