"""The GPU as a resource: is one usable here, where device arrays live, and whose memory is whose.

Nothing here imports CuPy, Numba-CUDA, RMM or torch at module level; each function imports what
it needs. The backends (:mod:`rapids_geovq.backends`) ask these questions before any work, so a
GPU backend that cannot run stops with a message that names what is missing.
"""
from __future__ import annotations

import functools
import importlib.util
import logging

import numpy as np

log = logging.getLogger(__name__)

#: Device memory kept free when deciding whether a shard stays on the GPU (for the next batch's
#: search state and for PyTorch).
DEVICE_RESERVE_BYTES = 4 << 30


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gpu_count() -> int:
    """CUDA devices visible to CuPy (0 without CuPy, a driver or a device)."""
    if not installed("cupy"):
        return 0
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device, or a CUDA version mismatch: all mean "no GPU here"
        return 0


def simulated() -> bool:
    """True when Numba's CUDA simulator stands in for a GPU (tests).

    The switch is read from the configuration of the CUDA target in use: numba-cuda's own
    (``numba.cuda.core.config``) where numba-cuda is installed, else numba's built-in one.
    """
    import importlib

    for name in ("numba.cuda.core.config", "numba.core.config"):
        try:
            config = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(config, "ENABLE_CUDASIM"):
            return bool(config.ENABLE_CUDASIM)
    return False


def device_module():
    """The array module for device arrays: CuPy on a GPU, NumPy under the simulator."""
    if simulated():
        return np
    import cupy

    return cupy


def as_numba(a):  # pragma: no cover - needs a GPU
    """A Numba view of a CuPy array, made once: a kernel launch given CuPy arrays would
    synchronise the stream once per argument."""
    from numba import cuda

    try:
        return cuda.as_cuda_array(a, sync=False)
    except TypeError:  # older Numba: no sync argument
        return cuda.as_cuda_array(a)


def numba_cuda_problem() -> str | None:
    """None if Numba-CUDA can launch kernels here, else what is wrong and how to fix it."""
    try:
        from numba import cuda

        available = cuda.is_available()
    except Exception:  # a Numba without a CUDA target for this driver
        available = False
    if available:
        return None if simulated() else _kernel_compile_problem()
    return ("Numba-CUDA finds no usable CUDA driver or toolkit here (python -c 'from numba import cuda; "
            "cuda.detect()' says why); install numba-cuda for this CUDA version "
            "(pip install 'numba-cuda[cu12]' or 'numba-cuda[cu13]')")


def _noop_kernel(x):  # pragma: no cover - compiled, never run
    pass


@functools.lru_cache(maxsize=None)  # once per process: every backend resolution asks
def _kernel_compile_problem() -> str | None:
    """None if Numba-CUDA compiles a kernel here, else what is wrong and how to fix it.

    The first compilation loads Numba-CUDA's whole typing machinery, which is where a NumPy newer
    than the numba-cuda release breaks (numba-cuda 0.30.4 registers ``np.row_stack``, which NumPy
    2.5 removed): checked here, before any stage runs, rather than in the geodesic stage after the
    VAE. Compiling to PTX needs no launch and takes about a second, once per process.
    """
    try:
        from numba import cuda, types

        cuda.compile_ptx(_noop_kernel, (types.float64[:],))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure here would fail the first kernel the same way
        from importlib.metadata import PackageNotFoundError, version

        try:
            nc = f"numba-cuda {version('numba-cuda')}"
        except PackageNotFoundError:
            nc = "Numba's CUDA target"
        fix = ("install a NumPy that it supports (pip install 'numpy<2.5') or a numba-cuda release that "
               "supports this NumPy" if "row_stack" in str(exc) else
               "python -c 'from numba import cuda; cuda.detect()' says more")
        return f"{nc} cannot compile a kernel with NumPy {np.__version__} ({type(exc).__name__}: {exc}); {fix}"


def keep_on_device(rows):
    """``rows`` as a device array if the GPU has room to keep it (a host array is copied there),
    else None: k-means then reads that shard from its file on the CPU."""
    if simulated():  # "device" memory is host memory: a writable copy, as a device copy would be
        return rows if isinstance(rows, np.ndarray) and rows.flags.writeable else np.array(rows)
    import cupy

    nbytes = 0 if isinstance(rows, cupy.ndarray) else rows.nbytes
    free, _ = cupy.cuda.runtime.memGetInfo()
    free += cupy.get_default_memory_pool().free_bytes()
    if free - nbytes < DEVICE_RESERVE_BYTES:
        return None
    return cupy.asarray(rows)


def share_gpu_memory_with_torch() -> dict:
    """Make CuPy and PyTorch allocate from one RMM memory resource, CUDA's stream-ordered pool
    (``cudaMallocAsync``), which returns freed memory to the driver, so neither library holds
    memory the other needs and the driver's free-memory figure stays true.

    Must run before PyTorch's first CUDA allocation. Returns which libraries now allocate through
    RMM, ``{"cupy": bool, "torch": bool}``: both False where RMM is not installed (each library
    then keeps its own caching allocator, which is safe but holds freed blocks;
    :func:`release_gpu_memory` gives them back between stages), ``torch`` False where this torch
    cannot switch allocators or has allocated already.
    """
    switched = {"cupy": False, "torch": False}
    if not installed("rmm"):
        return switched
    import cupy
    import rmm
    from rmm.allocators.cupy import rmm_cupy_allocator

    # release_threshold=0: unused pool memory goes back to the driver at each synchronisation (RMM's
    # default keeps it all), so memGetInfo stays true for the free-memory checks and for PyTorch.
    rmm.mr.set_current_device_resource(rmm.mr.CudaAsyncMemoryResource(release_threshold=0))
    cupy.cuda.set_allocator(rmm_cupy_allocator)
    switched["cupy"] = True
    try:
        import torch
        from rmm.allocators.torch import rmm_torch_allocator
    except ImportError:
        return switched
    if rmm_torch_allocator is None:  # this torch has no CUDA or no pluggable allocators
        return switched
    try:
        torch.cuda.memory.change_current_allocator(rmm_torch_allocator)
        switched["torch"] = True
    except RuntimeError as exc:  # torch has allocated already: it keeps its own allocator
        log.warning("PyTorch already allocated GPU memory, so it keeps its own allocator (%s)", exc)
    return switched


def release_gpu_memory() -> None:
    """Hand cached, unused device memory back (CuPy's pool, PyTorch's cache), e.g. after the
    geodesic stages and before PyTorch trains again."""
    import gc

    gc.collect()
    if installed("cupy"):
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
