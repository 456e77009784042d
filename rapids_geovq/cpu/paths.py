"""Shortest-path rows on the CPU: the compiled multi-source kernel, and SciPy's Dijkstra.

Both are *path solvers*: objects that fill the rows at positions ``start:stop`` of a
:class:`~rapids_geovq.geodesic.plan.PathPlan`'s row order into a float32 array. They give
bit-identical rows (float64 path sums rounded once to float32), so a solver is an execution
choice, never a change of result.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import dijkstra

#: Sources per SciPy Dijkstra call: bounds its float64 temporary.
SOURCE_BATCH = 64
#: Sources per call of the compiled kernel (a multiple of its lane count).
KERNEL_BATCH = 64


class NumbaPaths:
    """The compiled bucket-queue search from 8 sources at once
    (:func:`rapids_geovq.cpu.kernels.multi_source_rows`); releases the GIL, one thread per core."""

    name = "numba"
    max_threads = None  # one per CPU
    keeps_rows_on_device = False

    @staticmethod
    def work_bytes(n: int) -> int:
        """One worker's search state: the 8-lane distance rows, queue links, buckets and a batch."""
        from .kernels import LANES, MAX_BUCKETS

        return n * (LANES * 8 + 16) + MAX_BUCKETS * 4 + KERNEL_BATCH * n * 4

    def fill(self, plan, start: int, stop: int, out: np.ndarray):
        from .kernels import LANES, multi_source_rows

        for s in range(start, stop, KERNEL_BATCH):
            e = min(s + KERNEL_BATCH, stop)
            src = np.arange(s, s + -(-(e - s) // LANES) * LANES, dtype=np.int64)
            src = np.minimum(src, e - 1).reshape(-1, LANES)  # pad the last lanes with a repeat
            multi_source_rows(plan.indptr, plan.indices, plan.weights, plan.delta, plan.n_buckets, src,
                              out[s - start : e - start], plan.order)
        return None


class ScipyPaths:
    """SciPy's Dijkstra (the reference), ``SOURCE_BATCH`` sources per call."""

    name = "scipy"
    max_threads = None
    keeps_rows_on_device = False

    @staticmethod
    def work_bytes(n: int) -> int:
        return SOURCE_BATCH * n * 8 * 2  # float64 result and predecessor-free work per batch

    def fill(self, plan, start: int, stop: int, out: np.ndarray):
        for s in range(start, stop, SOURCE_BATCH):
            e = min(s + SOURCE_BATCH, stop)
            out[s - start : e - start] = dijkstra(plan.graph, directed=True, indices=plan.order[s:e])
        return None
