"""Array helpers that work the same on NumPy and CuPy arrays (and torch tensors at the edges).

Nothing here imports CuPy or torch at module level: a CuPy array is recognised by its
``__cuda_array_interface__``, and CuPy is imported only when such an array is in hand.
"""
from __future__ import annotations

import zlib

import numpy as np


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
    """A NumPy array of ``a`` (a copy from the device for a CuPy or Numba device array, a torch
    tensor moved to the CPU, a NumPy array as it is)."""
    if hasattr(a, "get") and hasattr(a, "__cuda_array_interface__"):
        return a.get()
    if hasattr(a, "copy_to_host"):  # a Numba device array
        return a.copy_to_host()
    if hasattr(a, "detach"):  # a torch tensor
        return a.detach().cpu().numpy()
    return np.asarray(a)


def squared_norms(diff):
    """Sum of squares over the last axis, adding the coordinates one at a time in order.

    Every step is one rounded multiply or add over whole arrays, so NumPy and CuPy give the same
    bits (a ``sum`` would use NumPy's pairwise order on the CPU and a tree reduction on the GPU).
    """
    s = diff[..., 0] * diff[..., 0]
    for j in range(1, diff.shape[-1]):
        s = s + diff[..., j] * diff[..., j]
    return s


def array_crc32(arr: np.ndarray, crc: int = 0, chunk_bytes: int = 1 << 26) -> int:
    """CRC-32 of an array's bytes in C order, continuing from ``crc``, read in chunks so a memory
    map is not loaded whole."""
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, chunk_bytes):
        crc = zlib.crc32(flat[start : start + chunk_bytes], crc)
    return crc


def data_fingerprint(*arrays: np.ndarray) -> str:
    """A short key for the contents of some arrays: total size and a running CRC-32."""
    crc = 0
    for a in arrays:
        crc = array_crc32(a, crc)
    return f"{sum(a.size for a in arrays)}-{crc:08x}"
