"""The images a job uses (not a cached stage: loading is fast and checked by the loaders)."""
from __future__ import annotations

import logging

import numpy as np

from ...common.arrays import data_fingerprint
from ...config import ConfigError
from ..context import Data

log = logging.getLogger(__name__)


def load_data(ctx) -> Data:
    """MNIST (or the job's IDX files) cut to ``data.n_train`` / ``data.n_test``; checks the sizes
    every later stage depends on before any of them runs."""
    from ...data import images_to_float, load_mnist

    cfg = ctx.cfg
    mnist = load_mnist(idx_dir=cfg.data.idx_dir, data_dir=cfg.data.data_dir, download=cfg.data.download)
    have_train, have_test = mnist.train_images.shape[0], mnist.test_images.shape[0]
    for split, want, have in (("n_train", cfg.data.n_train, have_train), ("n_test", cfg.data.n_test, have_test)):
        if want is not None and want > have:
            raise ConfigError(f"data.{split}={want} but the dataset has only {have} images; "
                              f"lower data.{split} or leave it out to use all")
    n_train = cfg.data.n_train or have_train
    n_test = cfg.data.n_test or have_test
    from ...config import check_against_data
    from ..disk import check_run_disk, resolve_storage

    check_against_data(cfg, n_train, n_test)
    ctx.storage = resolve_storage(ctx.layout, cfg, n_train, n_test)
    check_run_disk(ctx.layout, cfg, n_train, n_test, dense=ctx.storage == "dense")
    if cfg.geodesic.storage == "auto":
        log.info("geodesic storage: %s", ctx.storage)
    ctx.data = Data(images_to_float(mnist.train_images[:n_train]), images_to_float(mnist.test_images[:n_test]),
                    mnist.train_labels[:n_train].astype(np.int64), mnist.test_labels[:n_test].astype(np.int64),
                    mnist.source)
    ctx.cache.keys["data"] = data_fingerprint(mnist.train_images[:n_train], mnist.test_images[:n_test])
    log.info("data: %d train / %d test images from %s", n_train, n_test, mnist.source)
    return ctx.data
