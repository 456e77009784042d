"""Which array backend a job runs on, and zero-copy hand-off between PyTorch and it.

``numpy``
    NumPy / SciPy / scikit-learn and the compiled CPU kernels. Always available; the reference.
``cupy``
    CuPy arrays and Numba-CUDA kernels on the GPU: exact brute-force kNN, batched shortest paths,
    geodesic k-means over device-resident shards.
``rapids``
    ``cupy`` plus cuML's brute-force kNN, and dask-cuda (one worker per GPU) for
    ``geodesic.cluster=local``.
``auto``
    The best one installed and usable: ``rapids`` if cuML and dask-cuda import and a GPU is
    visible, else ``cupy`` if CuPy and Numba-CUDA see a GPU, else ``numpy``.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("rapids_geovq")

BACKENDS = ("auto", "numpy", "cupy", "rapids")


class BackendError(RuntimeError):
    """The requested backend cannot run here (a package or a GPU is missing)."""


@dataclass(frozen=True)
class Backend:
    """A resolved backend.

    Attributes
    ----------
    name : {"numpy", "cupy", "rapids"}
    gpu : bool
        Arrays live on a CUDA device.
    knn : {"sklearn", "cupy", "cuml"}
        Which exact kNN search runs.
    paths : {"numba", "cuda"}
        Default shortest-path method.
    cluster : {"local", "local-cuda"}
        What ``geodesic.cluster=local`` starts: a CPU LocalCluster, or dask-cuda's one worker per GPU.
    """

    name: str
    gpu: bool
    knn: str
    paths: str
    cluster: str


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gpu_count() -> int:
    """CUDA devices visible to CuPy (0 without CuPy, a driver or a device)."""
    if not _installed("cupy"):
        return 0
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device, or a CUDA version mismatch: all mean "no GPU here"
        return 0


def _why_not(name: str) -> str | None:
    """None if ``name`` can run here, else what is missing and how to get it."""
    if name == "numpy":
        return None
    missing = [m for m in ("cupy", "numba") if not _installed(m)]
    if name == "rapids":
        missing += [m for m in ("cuml", "dask_cuda") if not _installed(m)]
    if missing:
        return (f"backend={name} needs {', '.join(missing)}, which are not installed: install the GPU "
                "environment (conda env create -f conda-env.yml, or pip install -e .[cu12] / .[cu13]), "
                "or use backend=numpy")
    if gpu_count() == 0:
        return (f"backend={name} needs a CUDA GPU, and none is visible (check nvidia-smi and "
                "CUDA_VISIBLE_DEVICES), or use backend=numpy")
    try:
        from numba import cuda

        ok = cuda.is_available()
    except Exception:  # a Numba without a CUDA target for this driver
        ok = False
    if not ok:
        return (f"backend={name} runs its kernels with Numba-CUDA, which finds no usable CUDA driver or "
                "toolkit here (python -c 'from numba import cuda; cuda.detect()' says why); install "
                "numba-cuda for this CUDA version (pip install numba-cuda[cu12] or [cu13]), or use backend=numpy")
    return None


def resolve_backend(name: str = "auto") -> Backend:
    """The backend to run on for a config value ``auto | numpy | cupy | rapids``.

    Raises
    ------
    ValueError
        For an unknown name.
    BackendError
        When a named GPU backend cannot run here; the message says what is missing.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        for cand in ("rapids", "cupy"):
            if _why_not(cand) is None:
                name = cand
                break
        else:
            name = "numpy"
        log.info("backend auto: %s", name)
    else:
        why = _why_not(name)
        if why:
            raise BackendError(why)
    if name == "numpy":
        return Backend("numpy", False, "sklearn", "numba", "local")
    if name == "cupy":  # several GPUs in one job still need dask-cuda (geodesic.cluster=local-cuda)
        return Backend("cupy", True, "cupy", "cuda", "local-cuda")
    return Backend("rapids", True, "cuml", "cuda", "local-cuda")


# --- zero-copy hand-off --------------------------------------------------------------------

def array_module(a):
    """``cupy`` for a CuPy array (or any object with ``__cuda_array_interface__``), else ``numpy``."""
    if hasattr(a, "__cuda_array_interface__"):
        import cupy

        return cupy
    return np


def from_torch(t):
    """A torch tensor as an array of the same device without a copy: a NumPy array for a CPU
    tensor, a CuPy array for a CUDA tensor. Both share the tensor's memory (DLPack)."""
    t = t.detach()
    if t.device.type == "cuda":
        import cupy

        return cupy.from_dlpack(t)
    return np.from_dlpack(t)


def data_pointer(a) -> int:
    """Address of the first element of a NumPy / CuPy array or a torch tensor."""
    if hasattr(a, "data_ptr"):
        return int(a.data_ptr())
    if hasattr(a, "__cuda_array_interface__"):
        return int(a.__cuda_array_interface__["data"][0])
    return int(a.__array_interface__["data"][0])


def to_host(a) -> np.ndarray:
    """A NumPy array of ``a`` (a copy from the device for a CuPy array, as is for NumPy)."""
    if hasattr(a, "get") and hasattr(a, "__cuda_array_interface__"):
        return a.get()
    if hasattr(a, "copy_to_host"):  # a Numba device array
        return a.copy_to_host()
    return np.asarray(a)


def engine_spec(backend: Backend, cluster: str, n_workers: int | None) -> tuple[str, int | None]:
    """The cluster to start for a config's ``geodesic.cluster`` on ``backend``: ``local`` means
    one dask-cuda worker per GPU on a GPU backend, and ``none`` one thread, for this process's GPU."""
    if backend.gpu and cluster == "local":
        return backend.cluster, n_workers
    if backend.gpu and cluster == "none" and n_workers is None:
        return cluster, 1  # this process's GPU; several GPUs: geodesic.cluster=local (dask-cuda)
    return cluster, n_workers


def share_gpu_memory_with_torch() -> bool:
    """Make CuPy and PyTorch allocate from one RMM memory resource, CUDA's stream-ordered pool
    (``cudaMallocAsync``), which returns freed memory to the driver, so neither library holds
    memory the other needs and the driver's free-memory figure stays true.

    Must run before PyTorch's first CUDA allocation. Returns False (and changes nothing) where
    RMM is not installed; each library then keeps its own caching allocator, which is safe but
    holds freed blocks (:func:`release_gpu_memory` gives them back between stages).
    """
    if not _installed("rmm"):
        return False
    import cupy
    import rmm
    import torch
    from rmm.allocators.cupy import rmm_cupy_allocator
    from rmm.allocators.torch import rmm_torch_allocator

    rmm.mr.set_current_device_resource(rmm.mr.CudaAsyncMemoryResource())
    cupy.cuda.set_allocator(rmm_cupy_allocator)
    if rmm_torch_allocator is None:  # this torch has no CUDA or no pluggable allocators
        return False
    try:
        torch.cuda.memory.change_current_allocator(rmm_torch_allocator)
    except RuntimeError as exc:  # torch has allocated already: it keeps its own allocator
        log.warning("PyTorch already allocated GPU memory, so it keeps its own allocator (%s)", exc)
    return True


def release_gpu_memory() -> None:
    """Hand cached, unused device memory back (CuPy's pool, PyTorch's cache), e.g. after the
    geodesic stages and before PyTorch trains again."""
    import gc

    gc.collect()
    if _installed("cupy"):
        try:
            import cupy

            cupy.get_default_memory_pool().free_all_blocks()
        except Exception:  # no device: nothing was cached
            pass
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
