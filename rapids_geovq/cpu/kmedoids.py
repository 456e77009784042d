"""The k-medoids kernels of the CPU, behind the interface every backend's kernels share.

A shard handle carries the kernels that can read its block (these for a NumPy array or memory
map, :class:`rapids_geovq.gpu.cuda_kmeans.CudaKMedoidKernels` for a block on a GPU), so the
k-medoids driver never asks where a block lives.
"""
from __future__ import annotations

import numpy as np


class CpuKMedoidKernels:
    """:func:`~rapids_geovq.cpu.kernels.medoid_costs` and :func:`~rapids_geovq.cpu.kernels.swap_gains`
    on host blocks (float32 rows of the distance matrix, possibly memory-mapped)."""

    name = "cpu"

    @staticmethod
    def hold(rows_block):
        """Host blocks are read where they are (memory maps of the shard files): nothing to keep."""
        return None

    @staticmethod
    def medoid_costs(block, rows, args) -> np.ndarray:
        """Per row: the sum of squared distances to the members of its cluster (float64);
        ``args = (labels, members, seg_start)`` as the driver sent it."""
        from .kernels import medoid_costs

        labels, members, seg_start = args
        out = np.empty(rows.size, np.float64)
        medoid_costs(block, rows, labels, members, seg_start, out)
        return out

    @staticmethod
    def swap_gains(block, rows, lo: int, hi: int, state, stop_below: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate row ``lo:hi`` of the block: the change of cost of its best swap and the
        medoid to remove. ``state`` is the driver's ``(is_medoid, nearest, d1, d2, removal)``.
        Rows after the first whose change is below ``stop_below`` are not evaluated (the arrays
        returned end there)."""
        from .kernels import swap_gains

        is_medoid, nearest, d1, d2, removal = state
        delta = np.empty(hi - lo, np.float64)
        best = np.empty(hi - lo, np.int64)
        m = swap_gains(block[lo:hi], rows[lo:hi], is_medoid, nearest, d1, d2, removal, delta, best, stop_below)
        return delta[:m], best[:m]

    @staticmethod
    def first_invalid(block, rows):
        """``(point, column, value)`` of the first NaN, infinite or negative entry (lowest point
        id), or None."""
        from .kernels import first_invalid

        pt, col, val = first_invalid(block, rows)
        return None if pt < 0 else (int(pt), int(col), float(val))

    @staticmethod
    def columns(block, cols) -> np.ndarray:
        """The block's entries in columns ``cols``: float32 (rows, len(cols))."""
        return np.array(block[:, np.asarray(cols, dtype=np.int64)], dtype=np.float32)

    def __reduce__(self):  # one shared instance per process
        return (_cpu_kernels, ())


CPU_KERNELS = CpuKMedoidKernels()


def _cpu_kernels():
    return CPU_KERNELS
