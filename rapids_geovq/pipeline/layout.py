"""Where everything of a run lives: the one definition of the run directory's layout.

The pipeline writes these paths, the report and the command line read them; none of them spells a
path of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The files of a run directory.

    Parameters
    ----------
    root : Path
        The run directory (``run_dir`` of the job).
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # -- top level ----------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    # -- folders ------------------------------------------------------------------------------
    @property
    def stages(self) -> Path:
        return self.root / "stages"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def geodesic(self) -> Path:
        """The geodesic matrix's row shards, manifest and checksums."""
        return self.root / "geodesic"

    def folders(self) -> tuple[Path, ...]:
        return (self.checkpoints, self.artifacts, self.figures, self.stages, self.artifacts / "sweep",
                self.artifacts / "subsample")

    # -- stage records ------------------------------------------------------------------------
    def record(self, stage: str) -> Path:
        return self.stages / f"{stage}.json"

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def vae(self) -> Path:
        return self.checkpoints / "vae.pt"

    @property
    def vqvae(self) -> Path:
        return self.checkpoints / "vqvae.pt"

    def model(self, name: str) -> Path:
        """The checkpoint of a model stage (``vqvae``, ``vqvae_strong``, ``sweep_k16_vqvae``...)."""
        return self.checkpoints / f"{name}.pt"

    def prior(self, kind: str) -> Path:
        return self.checkpoints / f"prior_{kind}.pt"

    # -- artifacts ----------------------------------------------------------------------------
    @property
    def latents(self) -> Path:
        """Encoder means: ``train`` (n, d) and ``test`` (m, d), float32."""
        return self.artifacts / "latents.npz"

    @property
    def knn_graph(self) -> Path:
        return self.artifacts / "knn_graph.npz"

    @property
    def codebook(self) -> Path:
        """The fitted :class:`~rapids_geovq.GeodesicCodebook` (medoids, labels, distances to codes)."""
        return self.artifacts / "codebook.npz"

    @property
    def euclidean_codebook(self) -> Path:
        return self.artifacts / "euclidean_codebook.npz"

    @property
    def test_codes(self) -> Path:
        return self.artifacts / "test_codes.npz"

    def prior_samples(self, kind: str) -> Path:
        return self.artifacts / f"prior_{kind}.npz"

    @property
    def vqvae_test_codes(self) -> Path:
        return self.artifacts / "vqvae_test_codes.npz"

    def model_codes(self, name: str) -> Path:
        """Train and test codes of a VQ-VAE stage."""
        return self.artifacts / f"{name}_codes.npz"

    @property
    def kmedoids_state(self) -> Path:
        """On-demand k-medoids' saved state (a killed fit resumes from it)."""
        return self.artifacts / "kmedoids_state.npz"

    def sweep(self, K: int, what: str) -> Path:
        """An artifact of the codebook-size sweep at K codes (``codebook``, ``test_codes``...)."""
        return self.artifacts / "sweep" / f"k{K}_{what}.npz"

    def subsample(self, size: int, seed: int) -> Path:
        return self.artifacts / "subsample" / f"n{size}_s{seed}.npz"

    def seed_run(self, seed: int) -> Path:
        """The run directory of one seed of a multi-seed job."""
        return self.root / f"seed_{seed}"

    # -- figures ------------------------------------------------------------------------------
    @property
    def reconstructions_figure(self) -> Path:
        return self.figures / "reconstructions.png"

    @property
    def codebook_figure(self) -> Path:
        return self.figures / "codebook.png"

    def samples_figure(self, kind: str) -> Path:
        return self.figures / f"ar_samples_{kind}.png"

    @property
    def map_figure(self) -> Path:
        return self.figures / "geodesic_map.png"

    @property
    def rate_distortion_figure(self) -> Path:
        return self.figures / "rate_distortion.png"

    @property
    def purity_figure(self) -> Path:
        return self.figures / "purity_vs_k.png"

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory (how stage records name their outputs)."""
        return str(Path(path).relative_to(self.root))
