"""Test session set-up.

Without a GPU, Numba's CUDA simulator runs the GPU kernels (rapids_geovq.gpu.cuda_*) from the
same source on the CPU, so their parity tests run in CI. It must be chosen before Numba is
imported. On a machine with an NVIDIA GPU the same tests run on the GPU.
"""
import os
from pathlib import Path

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not any(Path("/dev").glob("nvidia[0-9]*")):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


def _mnist_available() -> bool:
    from rapids_geovq.data import DataError, load_mnist

    try:
        load_mnist()
        return True
    except DataError:
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked ``mnist`` run on the real MNIST; where it is not fetched they are skipped,
    except in CI (CI=true), which always fetches it and must never skip them silently."""
    import pytest

    marked = [item for item in items if item.get_closest_marker("mnist")]
    if not marked or os.environ.get("CI") == "true" or _mnist_available():
        return
    skip = pytest.mark.skip(reason="MNIST not fetched: run `rapids-geovq fetch-data` (CI always runs this test)")
    for item in marked:
        item.add_marker(skip)
