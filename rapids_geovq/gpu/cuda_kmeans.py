"""Geodesic k-means kernels for device-resident row shards (Numba-CUDA).

GPU twins of :func:`rapids_geovq.geodesic.kernels.medoid_costs` and
:func:`~rapids_geovq.geodesic.kernels.swap_gains`: one thread per row of the shard, the same
float64 operations in the same column order, so the sums are bit-equal to the CPU kernels' and
geodesic k-means makes the same choices on either. Squares use ``dmul_rn`` (an explicitly
rounded multiply) because the CUDA compiler would otherwise fuse ``s += d * d`` into one
fused multiply-add, which rounds once instead of twice and so differs from the CPU.

The driver (:class:`rapids_geovq.GeodesicKMeans`) is the same for both: it sends labels or the
swap state (a few arrays of n values, copied to the device once per state) and gets back one
number per row.
"""
from __future__ import annotations

import math
import threading

import numpy as np
from numba import cuda

from .backend import to_host
from .cuda_paths import device_module, simulated

if simulated():
    def _mul(a, b):
        return a * b  # Python floats: one rounding per operation, never fused
else:  # pragma: no cover - needs a GPU
    from numba.cuda.libdevice import dmul_rn as _mul


@cuda.jit
def _medoid_costs(block, rows, labels, members, seg_start, out):  # pragma: no cover - device code
    i = cuda.grid(1)
    if i < block.shape[0]:
        c = labels[rows[i]]
        s = 0.0
        for j in range(seg_start[c], seg_start[c + 1]):
            d = float(block[i, members[j]])
            s += _mul(d, d)
        out[i] = s


@cuda.jit
def _swap_gains(block, rows, is_medoid, nearest, d1, d2, removal, loss, delta_out, best_out):  # pragma: no cover
    i = cuda.grid(1)
    if i >= block.shape[0]:
        return
    if is_medoid[rows[i]]:
        delta_out[i] = math.inf
        best_out[i] = -1
        return
    k = removal.size
    for m in range(k):
        loss[m, i] = removal[m]  # (k, rows) layout: a warp's threads touch consecutive addresses
    acc = 0.0
    for o in range(block.shape[1]):
        d = float(block[i, o])
        d = _mul(d, d)
        a = d1[o]
        if d < a:
            acc += d - a
            loss[nearest[o], i] += a - d2[o]
        elif d < d2[o]:
            loss[nearest[o], i] += d - d2[o]
    best = 0
    for m in range(1, k):
        if loss[m, i] < loss[best, i]:
            best = m
    delta_out[i] = loss[best, i] + acc
    best_out[i] = best


_THREADS = 128
_cache_lock = threading.Lock()
_cache: dict = {}  # the last host state copied to this device, by identity


def _on_device(arrays: tuple):
    """Device copies of a tuple of host arrays, reused while the same tuple is passed again."""
    xp = device_module()
    with _cache_lock:
        hit = _cache.get("state")
        if hit is not None and hit[0] is arrays:
            return hit[1]
        dev = tuple(xp.asarray(a) for a in arrays)
        _cache["state"] = (arrays, dev)  # holding the tuple keeps its id from being reused
        return dev


def medoid_costs(block, rows, labels, members, seg_start) -> np.ndarray:
    """Per row of a device block: sum of squared distances to the members of its cluster (float64,
    on the host); see :func:`rapids_geovq.geodesic.kernels.medoid_costs`."""
    xp = device_module()
    labels, members, seg_start = _on_device((labels, members, seg_start))
    rows = xp.asarray(rows)
    out = xp.empty(block.shape[0], dtype=xp.float64)
    _medoid_costs[max(1, -(-block.shape[0] // _THREADS)), _THREADS](block, rows, labels, members, seg_start, out)
    return to_host(out)


def swap_gains(block, rows, state) -> tuple[np.ndarray, np.ndarray]:
    """Best swap per candidate row of a device block: (change of cost, medoid to remove), on the
    host; see :func:`rapids_geovq.geodesic.kernels.swap_gains`. ``state`` is the driver's
    ``(is_medoid, nearest, d1, d2, removal)``."""
    xp = device_module()
    is_medoid, nearest, d1, d2, removal = _on_device(state)
    m = block.shape[0]
    rows = xp.asarray(rows)
    loss = xp.empty((removal.shape[0], m), dtype=xp.float64)
    delta = xp.empty(m, dtype=xp.float64)
    best = xp.empty(m, dtype=xp.int64)
    _swap_gains[max(1, -(-m // _THREADS)), _THREADS](block, rows, is_medoid, nearest, d1, d2, removal, loss,
                                                      delta, best)
    return to_host(delta), to_host(best)
