"""Geodesic k-means kernels for device-resident row shards (Numba-CUDA).

GPU twins of :func:`rapids_geovq.cpu.kernels.medoid_costs` and
:func:`~rapids_geovq.cpu.kernels.swap_gains`: one thread per row of the shard, the same float64
operations in the same column order, so the sums are bit-equal to the CPU kernels' and geodesic
k-means makes the same choices on either. Squares use ``dmul_rn`` (an explicitly rounded
multiply) because the CUDA compiler would otherwise fuse ``s += d * d`` into one fused
multiply-add, which rounds once instead of twice and so differs from the CPU.

A shard kept on the device is stored *transposed*, (n, rows) in C order: the threads of a warp
handle 32 consecutive rows and read the same column of each, which are then 32 consecutive floats
(one coalesced 128-byte load) instead of 32 loads a whole row apart. The summation order per row
is unchanged, so the layout does not touch the bits.

The driver (:class:`rapids_geovq.GeodesicKMeans`) is the same for both: it sends labels or the
swap state (a few arrays of n values, copied to the device once per state and reused by every
task that gets the same state object) and gets back one number per row.
"""
from __future__ import annotations

import math
import threading

import numpy as np
from numba import cuda

from ..common.arrays import to_host
from .device import as_numba as _as_numba
from .device import device_module, keep_on_device, simulated

if simulated():
    def _mul(a, b):
        return a * b  # Python floats: one rounding per operation, never fused
else:  # pragma: no cover - needs a GPU
    from numba.cuda.libdevice import dmul_rn as _mul


@cuda.jit
def _medoid_costs(block_t, rows, labels, members, seg_start, out):  # pragma: no cover - device code
    i = cuda.grid(1)
    if i < rows.shape[0]:
        c = labels[rows[i]]
        s = 0.0
        for j in range(seg_start[c], seg_start[c + 1]):
            d = float(block_t[members[j], i])
            s += _mul(d, d)
        out[i] = s


@cuda.jit
def _swap_gains(block_t, lo, rows, is_medoid, nearest, d1, d2, removal, loss, delta_out, best_out):  # pragma: no cover
    # candidate i is column lo + i of the transposed block (the rows lo:hi of the shard)
    i = cuda.grid(1)
    if i >= rows.shape[0]:
        return
    if is_medoid[rows[i]]:
        delta_out[i] = math.inf
        best_out[i] = -1
        return
    k = removal.size
    for m in range(k):
        loss[m, i] = removal[m]  # (k, rows) layout: a warp's threads touch consecutive addresses
    acc = 0.0
    for o in range(block_t.shape[0]):
        d = float(block_t[o, lo + i])
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


#: Threads per block: one warp, so a task of m rows is spread over m / 32 blocks (more blocks
#: for the SMs than 128-thread blocks would give).
_THREADS = 32


class _StateCache:
    """The device copy of the last driver state seen by this process, keyed by the state's
    identity (the driver sends one tuple object per state; tasks of one iteration share it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._hit = None

    def get(self, state: tuple):
        xp = device_module()
        with self._lock:
            if self._hit is not None and self._hit[0] is state:
                return self._hit[1]
            dev = tuple(xp.asarray(a) for a in state)
            if not simulated():
                dev = tuple(_as_numba(a) for a in dev)
            self._hit = (state, dev)  # holding the tuple keeps its id from being reused
            return dev


_STATE = _StateCache()


def _blocks(m: int) -> int:
    return max(1, -(-m // _THREADS))


class CudaKMedoidKernels:
    """The k-medoids kernels for transposed device blocks (see the module docstring); the same
    interface as :class:`rapids_geovq.cpu.kmedoids.CpuKMedoidKernels`."""

    name = "cuda"

    @staticmethod
    def hold(rows_block):
        """``rows_block`` (rows, n), on the host or the device, as a transposed device block if the
        GPU has room to keep it, else None."""
        dev = keep_on_device(rows_block)
        if dev is None:
            return None
        xp = device_module()
        return xp.ascontiguousarray(dev.T)

    @staticmethod
    def medoid_costs(block_t, rows, args) -> np.ndarray:
        """Per row: sum of squared distances to the members of its cluster (float64, on the host);
        ``args = (labels, members, seg_start)`` as the driver sent it."""
        xp = device_module()
        labels, members, seg_start = _STATE.get(args)
        m = int(rows.shape[0])
        rows_d = xp.asarray(rows)
        out = xp.empty(m, dtype=xp.float64)
        launch = (block_t, rows_d, labels, members, seg_start, out)
        if not simulated():  # pragma: no cover - needs a GPU
            launch = tuple(a if not hasattr(a, "__cuda_array_interface__") or hasattr(a, "copy_to_host")
                           else _as_numba(a) for a in launch)
        _medoid_costs[_blocks(m), _THREADS](*launch)
        return to_host(out)

    @staticmethod
    def swap_gains(block_t, rows, lo: int, hi: int, state, stop_below: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Best swap per candidate row ``lo:hi`` of a transposed device block: (change of cost,
        medoid to remove), on the host. ``state`` is the driver's ``(is_medoid, nearest, d1, d2,
        removal)``. All rows are evaluated at once (``stop_below`` serves the CPU kernels' early
        stop; the driver takes the first improving row either way)."""
        xp = device_module()
        is_medoid, nearest, d1, d2, removal = _STATE.get(state)
        m = hi - lo
        rows_d = xp.asarray(rows[lo:hi])
        loss = xp.empty((int(removal.shape[0]), m), dtype=xp.float64)
        delta = xp.empty(m, dtype=xp.float64)
        best = xp.empty(m, dtype=xp.int64)
        launch = (block_t, np.int64(lo), rows_d, is_medoid, nearest, d1, d2, removal, loss, delta, best)
        if not simulated():  # pragma: no cover - needs a GPU
            launch = tuple(a if not hasattr(a, "__cuda_array_interface__") or hasattr(a, "copy_to_host")
                           else _as_numba(a) for a in launch)
        _swap_gains[_blocks(m), _THREADS](*launch)
        return to_host(delta), to_host(best)

    @staticmethod
    def first_invalid(block_t, rows):
        """``(point, column, value)`` of the first NaN, infinite or negative entry (lowest point
        id) of a transposed device block, or None."""
        xp = device_module()
        bad = ~((block_t >= 0) & (block_t < np.inf))  # (n, rows); NaN fails both
        hit = to_host(bad.any(axis=0))
        if not hit.any():
            return None
        r = np.flatnonzero(hit)
        i = int(r[np.argmin(np.asarray(rows)[r])])
        col = int(to_host(xp.argmax(bad[:, i])))
        return int(rows[i]), col, float(to_host(block_t[col, i]))

    @staticmethod
    def columns(block_t, cols) -> np.ndarray:
        """The block's entries in columns ``cols``: float32 (rows, len(cols)), on the host."""
        xp = device_module()
        return np.ascontiguousarray(to_host(block_t[xp.asarray(np.asarray(cols, dtype=np.int64))]).T,
                                    dtype=np.float32)

    def __reduce__(self):
        return (_cuda_kernels, ())


CUDA_KERNELS = CudaKMedoidKernels()


def _cuda_kernels():
    return CUDA_KERNELS
