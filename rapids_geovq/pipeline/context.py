"""What the stages of one run share, and how long each shared thing lives.

A :class:`RunContext` is opened once per job (``with RunContext(cfg) as ctx``). Opening it checks
everything that can be checked before any work (backend, path solver, torch device, dataset size
against the settings, free disk for the whole run), takes the run directory's lock and writes the
resolved configuration. The stages then read and set its fields in the paper's order:

=================  ==================================================  =======================
field              what                                                set by
=================  ==================================================  =======================
``data``           train / test images and labels                      :func:`stages.data.load_data`
``vae``            the trained continuous VAE                          :func:`stages.vae.train_vae`
``latents``        encoder means (and the device tensor, GPU only)     :func:`stages.vae.encode_latents`
``graph``          the symmetric kNN graph                             :func:`stages.codebook.build_graph`
``geodesic``       the geodesic rows (shards, held by the engine)      :func:`stages.codebook.geodesic`
``codebook``       the fitted :class:`~rapids_geovq.GeodesicCodebook`  :func:`stages.codebook.kmedoids`
=================  ==================================================  =======================

The geodesic engine (threads or Dask workers) lives only inside :meth:`RunContext.engine_session`,
which the job wraps around the two stages that need it; leaving it closes the engine, drops the
shards it held and gives device memory back before the models train again.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import ConfigError, JobConfig, save_job
from .layout import RunLayout
from .records import StageCache

log = logging.getLogger(__name__)


@dataclass
class Data:
    """Images as float32 (N, 784) in [0, 1] and labels as int64, already cut to the job's sizes."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.x_test.shape[0]


@dataclass
class Latents:
    """Encoder means of the train and test images (float32 host arrays)."""

    train: np.ndarray
    test: np.ndarray
    train_on_device: object = None  # the encoder's CUDA tensor, read in place by a GPU kNN


class RunDirectoryInUse(RuntimeError):
    """Another process holds the run directory's lock."""


class RunLock:
    """One writer per run directory: an exclusive ``flock`` on ``<run_dir>/.lock``.

    The kernel releases the lock when its process dies (even by ``kill -9``), so a lock left by a
    dead process is simply taken over; the file's text (pid, host, start time) only serves the
    message of a refused second run.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = None

    def acquire(self) -> None:
        import fcntl

        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RunDirectoryInUse(
                f"run directory {self.path.parent} is in use by {holder}; wait for that run to finish "
                "(or stop it), or give this one another run_dir=...") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file releases the flock
            self._fh = None


class RunContext:
    """The shared state of one run (see the module docstring).

    Parameters
    ----------
    cfg : JobConfig
        A validated job configuration.
    """

    def __init__(self, cfg: JobConfig):
        from ..backends import resolve_backend
        from ..geodesic.execution import Execution
        from ..models.training import select_device

        self.cfg = cfg
        self.layout = RunLayout(Path(cfg.run_dir))
        # Everything that can fail without computing anything fails here, before the first stage.
        self.backend = resolve_backend(cfg.backend)
        self.solver = self.backend.path_solver(cfg.geodesic.method)
        try:
            self.device = str(select_device(cfg.device))
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"device={cfg.device!r}: {exc}") from exc
        self.execution = Execution(backend=self.backend, method=self.solver.name, engine=None,
                                   n_workers=cfg.geodesic.n_workers, block_rows=cfg.kmeans.block_rows,
                                   work_dir=str(self.layout.geodesic), in_memory=False, progress=cfg.progress)
        self.cache = StageCache(self.layout)
        self._lock = RunLock(self.layout.lock)
        self.data: Data | None = None
        self.storage: str | None = None  # "dense" or "on_demand", resolved once the data's size is known
        self.vae = None
        self.latents: Latents | None = None
        self.graph = None
        self.geodesic = None
        self.codebook = None
        self.engine = None

    # -- lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> "RunContext":
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            for folder in self.layout.folders():
                folder.mkdir(parents=True, exist_ok=True)
            save_job(self.cfg, self.layout.config)
            self.backend.prepare()  # before PyTorch's first CUDA allocation
            log.info("backend %s (shortest paths: %s), torch device %s", self.backend.name, self.solver.name,
                     self.device)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.geodesic = None
        self._lock.release()

    @contextmanager
    def engine_session(self):
        """The geodesic engine for the stages inside the ``with`` block, closed when it ends."""
        from ..geodesic.engine import cluster_name, connect

        spec, n_workers = self.backend.engine_spec(cluster_name(self.cfg.geodesic.cluster), self.cfg.geodesic.n_workers)
        self.engine = connect(spec, n_workers)
        log.info("geodesic engine: %r", self.engine)
        try:
            yield self.engine
        finally:
            self.engine.close()
            self.engine = None
            self.geodesic = None  # shards held by the engine are gone with it
            self.backend.release()  # the shards' device copies go back to PyTorch for the priors

    def execution_here(self):
        """The execution settings with the open engine (inside :meth:`engine_session`)."""
        if self.engine is None:
            raise RuntimeError("the geodesic stages run inside RunContext.engine_session()")
        return replace(self.execution, engine=self.engine)

    @property
    def progress(self) -> bool:
        return self.cfg.progress
