"""The paper's pipeline as a sequence of cached stages.

Each stage writes its artifacts into the run directory and a record ``stages/<name>.json`` with a
key: a hash of the stage's settings and of the keys of the stages it reads. A stage whose record
holds the same key, and whose artifacts are all present, is skipped, so a killed job resumes at
the stage it was in (and the geodesic stage, the long one, resumes at its first missing shard).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .config import ConfigError, JobConfig, save_job
from .geodesic.shards import array_crc32

log = logging.getLogger("rapids_geovq")

#: Per-stage code versions: bump a stage's entry when its computation changes, so its old
#: artifacts (and those of the stages that read them) are not reused. Unlisted stages are at 1.
STAGE_VERSIONS = {"graph": 2, "quantize": 2, "geodesic": 2, "kmeans": 2}


def _reset_peak_rss() -> None:
    """Reset this process's peak-RSS counter (Linux), so each stage reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _proc_status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (Linux) in bytes, or None where it cannot be read."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss_gib() -> float:
    peak = _proc_status_bytes("VmHWM")
    if peak is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return peak / 2**30


class _AnonPeak:
    """Samples this process's anonymous resident memory (RssAnon) in a background thread.

    Peak RSS counts pages of memory-mapped files too (the geodesic shards being read); RssAnon is
    the memory the process itself allocated, which is what must fit in RAM.
    """

    def __init__(self, interval: float = 0.2):
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    @staticmethod
    def _read() -> int:
        return _proc_status_bytes("RssAnon") or 0

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            self._stop.wait(interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())


def _children_peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o)}")


def save_npz(path: Path, **arrays) -> None:
    """np.savez written atomically (a killed job never leaves a half-written artifact)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


class Run:
    """A run directory and its stage records.

    Parameters
    ----------
    cfg : JobConfig
    """

    def __init__(self, cfg: JobConfig):
        self.cfg = cfg
        self.dir = Path(cfg.run_dir)
        for sub in ("checkpoints", "artifacts", "figures", "stages"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        save_job(cfg, self.dir / "config.yaml")
        self.keys: dict[str, str] = {}
        self.records: dict[str, dict] = {}

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def stage(self, name: str, settings: dict, inputs: list[str], outputs: list[str],
              fn: Callable[[], dict], *, uses_workers: bool = False,
              check: Callable[[], None] | None = None) -> dict:
        """Run ``fn`` unless a record with the same key and all ``outputs`` exist; return its result.

        ``settings`` are the stage's own parameters, ``inputs`` the names of the stages it reads.
        ``fn`` writes ``outputs`` (paths relative to the run directory) and returns a JSON-able dict.
        ``uses_workers`` records the peak RSS of worker processes (the kernel keeps one running
        maximum over all children, so it is only meaningful for the stage that starts them).
        ``check`` runs before a stage is skipped; if it raises, the stage is run again.
        """
        blob = json.dumps({"stage": name, "version": STAGE_VERSIONS.get(name, 1), "settings": settings,
                           "inputs": {i: self.keys[i] for i in inputs}}, sort_keys=True, default=_jsonable)
        key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self.keys[name] = key
        record_path = self.path("stages", f"{name}.json")
        if record_path.exists():
            try:
                record = json.loads(record_path.read_text())
            except json.JSONDecodeError:
                record = {}
            if record.get("key") == key and all(self.path(o).exists() for o in outputs):
                try:
                    if check is not None:
                        check()
                except Exception as exc:  # a damaged artifact: recompute rather than trust it
                    log.warning("stage %s: its artifacts fail their check (%s); running it again", name, exc)
                else:
                    log.info("stage %-14s up to date (key %s), skipped", name, key)
                    record["skipped"] = True
                    self.records[name] = record
                    return record["result"]
        # The old record must not vouch for outputs this run is about to overwrite.
        record_path.unlink(missing_ok=True)
        log.info("stage %-14s running", name)
        _reset_peak_rss()
        t0 = time.perf_counter()
        with _AnonPeak() as anon:
            result = fn()
        record = {"key": key, "stage": name, "seconds": round(time.perf_counter() - t0, 2),
                  "peak_rss_gib": round(_peak_rss_gib(), 3), "peak_anon_gib": round(anon.peak / 2**30, 3),
                  "children_peak_rss_gib": round(_children_peak_rss_gib(), 3) if uses_workers else None,
                  "outputs": outputs, "result": result}
        _atomic_json(record_path, record)
        log.info("stage %-14s done in %.1f s (peak RSS %.2f GiB, of it allocated %.2f GiB)", name,
                 record["seconds"], record["peak_rss_gib"], record["peak_anon_gib"])
        self.records[name] = record
        return result


def data_fingerprint(*arrays: np.ndarray) -> str:
    crc = 0
    for a in arrays:
        crc = array_crc32(a, crc)
    return f"{sum(a.size for a in arrays)}-{crc:08x}"


def run_job(cfg: JobConfig) -> dict:
    """Run (or resume) the whole pipeline for ``cfg``; returns the metrics dict also saved as JSON."""
    import torch

    from . import report
    from .data import images_to_float, load_mnist
    from .geodesic.kmeans import GeodesicKMeans
    from .geodesic.knn import knn_graph
    from .geodesic.quantize import EuclideanQuantizer, GeodesicQuantizer
    from .geodesic.engine import connect, on_engine
    from .geodesic.shortest_paths import geodesic_row_shards, load_row_shards
    from .models import training as T
    from .models.prior import prior_nll
    from . import sequences as S

    from .gpu.backend import engine_spec, release_gpu_memory, resolve_backend, share_gpu_memory_with_torch

    backend = resolve_backend(cfg.backend)  # a GPU backend that cannot run here fails before any work
    method = backend.paths if cfg.geodesic.method == "auto" else cfg.geodesic.method
    if method in ("cuda", "cugraph") and not backend.gpu:
        raise ConfigError(f"geodesic.method={method} needs a GPU backend, but backend {cfg.backend} "
                          f"resolved to {backend.name}; set geodesic.method=auto or numba")
    if backend.name == "rapids":
        share_gpu_memory_with_torch()  # before PyTorch's first CUDA allocation
    run = Run(cfg)
    progress = cfg.progress
    device = str(T.select_device(cfg.device))
    log.info("backend %s (kNN: %s, shortest paths: %s), torch device %s", backend.name, backend.knn, method, device)

    mnist = load_mnist(idx_dir=cfg.data.idx_dir, data_dir=cfg.data.data_dir, download=cfg.data.download)
    for split, want, have in (("n_train", cfg.data.n_train, mnist.train_images.shape[0]),
                              ("n_test", cfg.data.n_test, mnist.test_images.shape[0])):
        if want is not None and want > have:
            raise ConfigError(f"data.{split}={want} but the dataset has only {have} images; "
                              f"lower data.{split} or leave it out to use all")
    n_train = cfg.data.n_train or mnist.train_images.shape[0]
    n_test = cfg.data.n_test or mnist.test_images.shape[0]
    x_train = images_to_float(mnist.train_images[:n_train])
    x_test = images_to_float(mnist.test_images[:n_test])
    y_train = mnist.train_labels[:n_train].astype(np.int64)
    y_test = mnist.test_labels[:n_test].astype(np.int64)
    run.keys["data"] = data_fingerprint(mnist.train_images[:n_train], mnist.test_images[:n_test])
    log.info("data: %d train / %d test images from %s", n_train, n_test, mnist.source)

    # -- continuous VAE ------------------------------------------------------------------------
    def train_vae():
        model, history = T.train_vae(x_train, cfg.vae, device=device, progress=progress)
        T.save_checkpoint(run.path("checkpoints", "vae.pt"), model, cfg.vae, history)
        return {"history": history}

    run.stage("vae", cfg.section("vae"), ["data"], ["checkpoints/vae.pt"], train_vae)
    vae, _, _ = T.load_checkpoint(run.path("checkpoints", "vae.pt"))

    on_gpu: dict = {}

    def encode():
        z_train = T.encode_means(vae, x_train, device=device, as_tensor=backend.gpu)
        if backend.gpu:
            on_gpu["z_train"] = z_train  # the GPU kNN reads it in place (DLPack), no host round trip
            z_train = z_train.cpu().numpy()  # the artifact, for resuming and for the later stages
        z_test = T.encode_means(vae, x_test, device=device)
        save_npz(run.path("artifacts", "latents.npz"), train=z_train, test=z_test)
        return {"train_shape": list(z_train.shape), "test_shape": list(z_test.shape)}

    run.stage("latents", {}, ["vae"], ["artifacts/latents.npz"], encode)
    with np.load(run.path("artifacts", "latents.npz")) as f:
        z_train, z_test = f["train"], f["test"]

    def vae_eval():
        sums = T.evaluate_vae(vae, x_test, device=device)
        return {"sums": sums}

    vae_metrics = run.stage("vae_eval", {}, ["vae"], [], vae_eval)

    # -- geodesic codebook ---------------------------------------------------------------------
    def build_graph():
        z = on_gpu.pop("z_train", z_train)
        graph, info = knn_graph(z, cfg.graph.k, disconnected=cfg.graph.disconnected, return_info=True,
                                knn=backend.knn)
        tmp = run.path("artifacts", "knn_graph.tmp.npz")
        sp.save_npz(tmp, graph, compressed=False)
        os.replace(tmp, run.path("artifacts", "knn_graph.npz"))
        return {"n_components": info.n_components, "component_sizes": list(info.component_sizes)[:20],
                "added_edges": info.added_edges, "nnz": int(graph.nnz)}

    run.stage("graph", cfg.section("graph"), ["latents"], ["artifacts/knn_graph.npz"], build_graph)
    graph = sp.load_npz(run.path("artifacts", "knn_graph.npz")).tocsr()

    engines: dict = {}

    def engine():
        """The geodesic engine (threads or a Dask cluster), started when a stage first needs it."""
        if "e" not in engines:
            engines["e"] = connect(*engine_spec(backend, cfg.geodesic.cluster, cfg.geodesic.n_workers))
            log.info("geodesic engine: %r", engines["e"])
        return engines["e"]

    held: dict = {}
    try:
        def geodesic():
            shards = geodesic_row_shards(graph, run.path("geodesic"), shard_rows=cfg.geodesic.shard_rows,
                                         engine=engine(), method=method, progress=progress)
            held["D"] = shards  # its shards stay open where they were computed, for k-means
            return {"n": shards.shape[0], "n_shards": len(shards.shards), "dtype": str(shards.dtype),
                    "bytes": int(shards.shape[0]) ** 2 * 4, "cluster": cfg.geodesic.cluster,
                    "n_workers": engine().n_workers, "method": method, "backend": backend.name,
                    "on_device": sum(h.device is not None for h in shards.held.handles)
                    if engine().kind == "none" else None}

        run.stage("geodesic", {"shard_rows": cfg.geodesic.shard_rows, "backend": "numpy"}, ["graph"],
                  ["geodesic/manifest.json"], geodesic, uses_workers=True,
                  check=lambda: load_row_shards(run.path("geodesic"), verify=True))
        D = held.get("D") or load_row_shards(run.path("geodesic"))

        def kmeans():
            kc = cfg.kmeans
            # A GPU evaluates swap candidates a thousand at a time; the result does not depend on it.
            block_rows = max(kc.block_rows, 1024) if method == "cuda" else kc.block_rows
            src = D
            if method == "cuda" and getattr(D, "held", None) is None:
                src = on_engine(engine(), D, device=True)  # a resumed run: shards back onto the GPUs
            km = GeodesicKMeans(kc.n_clusters, n_init=kc.n_init, max_iter=kc.max_iter, swap=kc.swap,
                                block_rows=block_rows, random_state=kc.seed, progress=progress,
                                engine=engine()).fit(src)
            dist_to_codes = D.take_rows(km.medoid_indices_).T.copy()  # symmetric: D[:, m] = D[m, :]
            save_npz(run.path("artifacts", "codebook.npz"), medoid_indices=km.medoid_indices_, labels=km.labels_,
                     codebook=z_train[km.medoid_indices_], dist_to_codes=dist_to_codes)
            return {"inertia": km.inertia_, "n_iter": km.n_iter_, "n_swaps": km.n_swaps_,
                    "cluster": cfg.geodesic.cluster, "n_workers": engine().n_workers}

        ksettings = {k: v for k, v in cfg.section("kmeans").items() if k not in ("euclidean_n_init", "block_rows")}
        km_result = run.stage("kmeans", ksettings, ["geodesic"], ["artifacts/codebook.npz"], kmeans, uses_workers=True)
    finally:
        if "e" in engines:
            engines["e"].close()
        held.clear()
        D = None
        if backend.gpu:
            release_gpu_memory()  # the shards' device copies go back to PyTorch for the priors
    with np.load(run.path("artifacts", "codebook.npz")) as f:
        medoids, train_codes, dist_to_codes = f["medoid_indices"], f["labels"], f["dist_to_codes"]
    K = cfg.kmeans.n_clusters

    def euclidean():
        eq = EuclideanQuantizer(K, n_init=cfg.kmeans.euclidean_n_init, random_state=cfg.kmeans.seed).fit(z_train)
        save_npz(run.path("artifacts", "euclidean_codebook.npz"), codebook=eq.codebook_, labels=eq.labels_)
        return {"inertia": eq.inertia_}

    run.stage("euclidean", {"n_clusters": K, "n_init": cfg.kmeans.euclidean_n_init, "seed": cfg.kmeans.seed},
              ["latents"], ["artifacts/euclidean_codebook.npz"], euclidean)
    with np.load(run.path("artifacts", "euclidean_codebook.npz")) as f:
        eu_codebook, eu_train_codes = f["codebook"], f["labels"]

    def quantize():
        gq = GeodesicQuantizer(z_train, medoids, dist_to_codes, k=cfg.graph.k)
        geo_codes = gq.encode(z_test)
        eq = EuclideanQuantizer(K)
        eq.codebook_ = eu_codebook
        eu_codes = eq.encode(z_test)
        geo_recon = T.decode_latents(vae, gq.decode(geo_codes), device=device)
        eu_recon = T.decode_latents(vae, eq.decode(eu_codes), device=device)
        geo_bce = T.bce_per_image(geo_recon, x_test)
        eu_bce = T.bce_per_image(eu_recon, x_test)
        # Extension: decode the mean latent of each geodesic cluster instead of its medoid, which
        # separates the cost of the partition from the cost of decoding a single real latent.
        means = np.stack([z_train[train_codes == c].mean(axis=0) for c in range(K)]).astype(np.float32)
        mean_bce = T.bce_per_image(T.decode_latents(vae, means[geo_codes], device=device), x_test)
        save_npz(run.path("artifacts", "test_codes.npz"), geo=geo_codes, euclidean=eu_codes,
                 geo_bce=geo_bce, euclidean_bce=eu_bce, geo_mean_bce=mean_bce, geo_cluster_means=means)
        out = {"geo_mean": {"bce_sum": float(mean_bce.sum()), "bce_per_image": float(mean_bce.mean())}}
        for name, test_codes, tr_codes, bce in (("geo", geo_codes, train_codes, geo_bce),
                                                 ("euclidean", eu_codes, eu_train_codes, eu_bce)):
            out[name] = {"bce_sum": float(bce.sum()), "bce_per_image": float(bce.mean()),
                         "perplexity": S.perplexity(test_codes, K), "dead_codes": S.dead_codes(test_codes, K),
                         "label_purity": S.label_purity(test_codes, y_test, K),
                         "train_label_purity": S.label_purity(tr_codes, y_train, K)}
        return out

    q_metrics = run.stage("quantize", {"k": cfg.graph.k}, ["kmeans", "euclidean", "vae"],
                          ["artifacts/test_codes.npz"], quantize)
    with np.load(run.path("artifacts", "test_codes.npz")) as f:
        geo_test_codes = f["geo"]

    # -- autoregressive priors over the geodesic codes ------------------------------------------
    L = cfg.prior.seq_len
    prior_metrics = {}
    for kind in cfg.sequences.kinds:
        def prior(kind=kind):
            if kind == "dataset":
                train_seq = S.dataset_sequences(train_codes, L)
                held_seq = S.dataset_sequences(geo_test_codes, L)
            else:
                n_walks = cfg.sequences.n_walks or max(1, len(train_codes) // L)
                n_held = cfg.sequences.n_heldout_walks or max(1, len(geo_test_codes) // L)
                train_seq = S.random_walk_sequences(graph, train_codes, n_walks, L, seed=cfg.sequences.seed)
                held_seq = S.random_walk_sequences(graph, train_codes, n_held, L, seed=cfg.sequences.seed + 1)
            model, history = T.train_prior(train_seq, cfg.prior, device=device, progress=progress)
            T.save_checkpoint(run.path("checkpoints", f"prior_{kind}.pt"), model, cfg.prior, history)
            gen = torch.Generator().manual_seed(cfg.eval.seed)
            samples = model.cpu().sample(cfg.eval.n_samples, L, generator=gen).numpy()
            save_npz(run.path("artifacts", f"prior_{kind}.npz"), samples=samples, heldout=held_seq)
            return {"nll_per_token": prior_nll(model, held_seq, device=device),
                    "train_nll_per_token": history[-1]["loss"] if history else None,
                    "unigram_entropy": S.unigram_entropy(train_seq, K),
                    "unigram_nll": S.unigram_nll(train_seq, held_seq, K),
                    "uniform_nll": float(np.log(K)),
                    "n_train_sequences": int(train_seq.shape[0]), "n_heldout_sequences": int(held_seq.shape[0])}

        prior_metrics[kind] = run.stage(
            f"prior_{kind}", {"prior": cfg.section("prior"), "sequences": cfg.section("sequences"),
                              "eval_seed": cfg.eval.seed, "n_samples": cfg.eval.n_samples},
            ["kmeans", "quantize"], [f"checkpoints/prior_{kind}.pt", f"artifacts/prior_{kind}.npz"], prior)

    # -- end-to-end VQ-VAE baseline -------------------------------------------------------------
    def vqvae():
        model, history = T.train_vqvae(x_train, cfg.vqvae, device=device, progress=progress)
        T.save_checkpoint(run.path("checkpoints", "vqvae.pt"), model, cfg.vqvae, history)
        ev = T.evaluate_vqvae(model, x_test, device=device)
        codes = ev.pop("codes")
        save_npz(run.path("artifacts", "vqvae_test_codes.npz"), codes=codes)
        Kv = cfg.vqvae.n_codes
        return {"sums": ev, "perplexity": S.perplexity(codes, Kv), "dead_codes": S.dead_codes(codes, Kv),
                "label_purity": S.label_purity(codes, y_test, Kv)}

    vq_metrics = run.stage("vqvae", cfg.section("vqvae"), ["data"],
                           ["checkpoints/vqvae.pt", "artifacts/vqvae_test_codes.npz"], vqvae)
    vqvae_model, _, _ = T.load_checkpoint(run.path("checkpoints", "vqvae.pt"))

    # -- report ---------------------------------------------------------------------------------
    metrics = report.collect_metrics(run, vae_metrics, vq_metrics, q_metrics, prior_metrics, km_result,
                                     n_train=n_train)
    report.write_figures(run, vae=vae, vqvae=vqvae_model, x_test=x_test, device=device)
    report.write_report(run, metrics)
    return metrics
