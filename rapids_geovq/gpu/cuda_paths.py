"""Batched exact shortest paths on the GPU: many sources per launch, sources as the fast axis.

cuGraph computes one source per SSSP call. Here a batch of ``B`` sources is searched at once:
each node holds a row of ``B`` float64 tentative distances (one per source, contiguous), so the
threads of a warp relax one edge for 32 sources with coalesced loads and stores, and the edge
list of a node is read once for the whole batch.

The search is a frontier-based, label-correcting relaxation with per-source thresholds (the
near/far variant of delta-stepping, Davidson et al., IPDPS 2014), written as three Numba-CUDA
kernels per round:

1. ``_compact``: the nodes with a pending (improved, not yet relaxed) distance in any lane
   become this round's frontier (an atomic counter).
2. ``_relax``: one thread block per frontier node, threads over lanes. A pending lane whose
   distance is below its lane's threshold relaxes the node's edges with ``atomic.min``; one
   above it stays pending ("far").
3. ``_advance``: a lane that had no near work this round raises its threshold by ``delta``.

Pending flags are double-buffered: a relaxation marks the *next* round's flags, and a kernel
launch boundary orders all memory, so a lane read with a stale distance during a round is
always read again, with its final value, in a later round. The search ends when no lane is
pending, which is the fixpoint ``d[v] = min_u fl(d[u] + w(u, v))``. With non-negative weights
that fixpoint is unique and equal to Dijkstra's float64 result (every value is a float64 sum
along a path, added in path order), so rows rounded to float32 are bit-equal to SciPy's Dijkstra
rounded to float32, as on the CPU engine.

Where no GPU is present the same kernels run on Numba's CUDA simulator (tests only): arrays are
then NumPy arrays.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..common.arrays import to_host
from .device import as_numba as _as_numba
from .device import device_module, simulated

#: Sources per batch (lanes). A batch holds n * lanes * 10 bytes on the device.
DEFAULT_LANES = 1024


# --- kernels ---------------------------------------------------------------------------------

@cuda.jit
def _init(sources, dist, flag, pending):  # pragma: no cover - runs on the device
    b = cuda.grid(1)
    if b < sources.size:
        s = sources[b]
        dist[s, b] = 0.0
        flag[s, b] = 1
        pending[s] = 1


@cuda.jit
def _compact(pending, frontier, count):  # pragma: no cover
    v = cuda.grid(1)
    if v < pending.size and pending[v] != 0:
        pending[v] = 0
        frontier[cuda.atomic.add(count, 0, 1)] = v


@cuda.jit
def _relax(indptr, indices, weights, frontier, n_front, dist, flag, flag_next, pending_next, thr,
           near_lane):  # pragma: no cover
    lanes = dist.shape[1]
    for f in range(cuda.blockIdx.x, n_front, cuda.gridDim.x):
        v = frontier[f]
        e0 = indptr[v]
        e1 = indptr[v + 1]
        for b in range(cuda.threadIdx.x, lanes, cuda.blockDim.x):
            if flag[v, b] != 0:
                flag[v, b] = 0  # only this thread reads (v, b) this round; next round uses flag_next
                dv = dist[v, b]
                if dv < thr[b]:
                    near_lane[b] = 1
                    for e in range(e0, e1):
                        u = indices[e]
                        nd = dv + weights[e]
                        if nd < dist[u, b]:
                            old = cuda.atomic.min(dist, (u, b), nd)
                            if nd < old:
                                flag_next[u, b] = 1
                                pending_next[u] = 1
                else:
                    flag_next[v, b] = 1
                    pending_next[v] = 1


@cuda.jit
def _advance(thr, near_lane, delta, count):  # pragma: no cover
    b = cuda.grid(1)
    if b == 0:
        count[0] = 0  # for the next round's frontier (read on the host before this launch)
    if b < thr.size:
        if near_lane[b] == 0:
            thr[b] += delta
        near_lane[b] = 0


@cuda.jit
def _to_rows(dist, col_of, out):  # pragma: no cover
    """out[b, col_of[v]] = float32(dist[v, b])."""
    v, b = cuda.grid(2)
    if v < dist.shape[0] and b < out.shape[0]:
        out[b, col_of[v]] = dist[v, b]


# --- driver ----------------------------------------------------------------------------------

def _blocks(n: int, threads: int) -> int:
    return max(1, -(-n // threads))


def default_delta(weights) -> float:
    """Threshold step: four mean edge weights (a few hops of the search front per step)."""
    w = np.asarray(weights, dtype=np.float64)
    mean = float(w.mean()) if w.size else 0.0
    return 4.0 * mean if mean > 0 else math.inf


def batched_rows(indptr, indices, weights, sources, col_of=None, *, delta: float | None = None,
                 out=None, threads: int | None = None):
    """Shortest-path rows from a batch of sources, computed together on the device.

    Parameters
    ----------
    indptr, indices, weights : device (or, under the simulator, NumPy) arrays
        CSR of a directed graph with non-negative float64 weights (an undirected graph stores
        both directions). Explicit zero weights are edges.
    sources : int array of shape (B,)
        Source nodes; repeats are allowed.
    col_of : int array of shape (n,), optional
        Output column of node v (a renumbered graph writes rows in the original point order);
        identity by default.
    delta : float, optional
        Threshold step of the near/far search; ``inf`` relaxes every pending lane each round
        (Bellman-Ford over a frontier). Any value gives the same (exact) result; it only moves
        work between rounds. Default :func:`default_delta`.
    out : device float32 array of shape (B, n), optional
        Where to write the rows.
    threads : int, optional
        Threads per block of the relaxation (over lanes); default ``min(B, 128)``.

    Returns
    -------
    float32 device array of shape (B, n)
        ``out[b, col_of[v]]`` = length of a shortest path from ``sources[b]`` to ``v`` (float64
        sums rounded once to float32), ``inf`` where ``v`` cannot be reached.
    """
    xp = device_module()
    n = int(indptr.shape[0]) - 1
    sources = xp.asarray(sources, dtype=xp.int64).reshape(-1)
    lanes = int(sources.shape[0])
    if lanes == 0:
        raise ValueError("need at least one source")
    if col_of is None:
        col_of = xp.arange(n, dtype=xp.int64)
    if delta is None:
        delta = default_delta(weights if xp is np else weights.get())
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    if out is None:
        out = xp.empty((lanes, n), dtype=xp.float32)
    if tuple(out.shape) != (lanes, n) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(lanes, n)}, got {out.dtype} {tuple(out.shape)}")
    threads = int(threads or min(lanes, 128))

    dist = xp.full((n, lanes), xp.inf, dtype=xp.float64)
    flag = xp.zeros((n, lanes), dtype=xp.uint8)
    flag_next = xp.zeros((n, lanes), dtype=xp.uint8)
    pending = xp.zeros(n, dtype=xp.int32)
    pending_next = xp.zeros(n, dtype=xp.int32)
    thr = xp.full(lanes, delta, dtype=xp.float64)
    near_lane = xp.zeros(lanes, dtype=xp.int32)
    frontier = xp.empty(n, dtype=xp.int32)
    count = xp.zeros(1, dtype=xp.int32)

    result = out
    if not simulated():  # wrap once: a launch given CuPy arrays would sync the stream per argument
        (indptr, indices, weights, sources, col_of, out, dist, flag, flag_next, pending, pending_next, thr,
         near_lane, frontier, count) = (_as_numba(a) for a in (
            indptr, indices, weights, sources, col_of, out, dist, flag, flag_next, pending, pending_next, thr,
            near_lane, frontier, count))
    _init[_blocks(lanes, 128), 128](sources, dist, flag, pending)
    while True:
        _compact[_blocks(n, 256), 256](pending, frontier, count)
        n_front = int(count[0])  # the one device-to-host read of a round
        if n_front == 0:
            break
        _relax[min(n_front, 65535), threads](indptr, indices, weights, frontier, n_front, dist, flag,
                                              flag_next, pending_next, thr, near_lane)
        _advance[_blocks(max(lanes, 1), 128), 128](thr, near_lane, delta, count)
        flag, flag_next = flag_next, flag  # the spent buffers are all zero again
        pending, pending_next = pending_next, pending
    _to_rows[(_blocks(n, 32), _blocks(lanes, 8)), (32, 8)](dist, col_of, out)
    return result


class DeviceGraph:
    """A CSR graph copied to the current device once, for many batches."""

    def __init__(self, indptr, indices, weights, col_of=None, delta: float | None = None):
        xp = device_module()
        self.n = int(len(indptr)) - 1
        self.indptr = xp.asarray(np.asarray(indptr, dtype=np.int64))
        self.indices = xp.asarray(np.asarray(indices, dtype=np.int32))
        self.weights = xp.asarray(np.asarray(weights, dtype=np.float64))
        if (np.asarray(weights) < 0).any():
            raise ValueError("shortest paths need non-negative edge weights")
        self.col_of = xp.asarray(np.arange(self.n) if col_of is None else np.asarray(col_of, dtype=np.int64))
        self.delta = default_delta(weights) if delta is None else float(delta)

    def rows(self, sources, *, lanes: int = DEFAULT_LANES, out=None):
        """float32 device rows for ``sources`` (any number, done ``lanes`` at a time)."""
        xp = device_module()
        sources = np.asarray(sources, dtype=np.int64).reshape(-1)
        if sources.size and (sources.min() < 0 or sources.max() >= self.n):
            raise ValueError(f"sources must be node ids in [0, {self.n}), got {sources.min()}..{sources.max()}")
        if out is None:
            out = xp.empty((sources.size, self.n), dtype=xp.float32)
        for s in range(0, sources.size, lanes):
            e = min(s + lanes, sources.size)
            batched_rows(self.indptr, self.indices, self.weights, sources[s:e], self.col_of, delta=self.delta,
                         out=out[s:e])
        return out


def geodesic_rows(graph, sources=None, *, lanes: int = DEFAULT_LANES, delta: float | None = None):
    """Rows of the geodesic matrix of a SciPy CSR graph from ``sources`` (all nodes by default),
    as a float32 device array: the GPU twin of ``scipy.sparse.csgraph.dijkstra(graph, indices=sources)``
    rounded to float32."""
    import scipy.sparse as sp

    g = sp.csr_matrix(graph)
    g.sort_indices()
    dg = DeviceGraph(g.indptr, g.indices, g.data, delta=delta)
    if sources is None:
        sources = np.arange(g.shape[0])
    return dg.rows(sources, lanes=lanes)


# --- shards of the geodesic engine -----------------------------------------------------------

_GRAPHS: dict = {}  # per process (worker): the device copy of each path plan's graph


def plan_graph(plan) -> DeviceGraph:
    """The device copy of a :class:`rapids_geovq.geodesic.plan.PathPlan`'s graph (made
    once per process; sources are row positions, columns come out in point order)."""
    hit = _GRAPHS.get(id(plan))
    if hit is None or hit[0] is not plan:
        _GRAPHS.clear()  # one plan at a time: a new graph replaces the old one
        hit = _GRAPHS[id(plan)] = (plan, DeviceGraph(plan.indptr, plan.indices, plan.weights, col_of=plan.order))
    return hit[1]


class CudaPaths:
    """The path solver of the GPU backends: batched exact search, ``DEFAULT_LANES`` sources per
    launch; the rows of a shard it computed can stay on the device for k-means
    (``keeps_rows_on_device``). One thread per process keeps a GPU busy."""

    name = "cuda"
    max_threads = 1
    keeps_rows_on_device = True

    @staticmethod
    def work_bytes(n: int) -> int:
        return 0  # the search state lives in device memory, not in the host's

    @staticmethod
    def device_kernels():
        """The k-medoids kernels that read the shards this solver keeps on the device."""
        from .cuda_kmeans import CUDA_KERNELS

        return CUDA_KERNELS

    def fill(self, plan, start: int, stop: int, out: np.ndarray):
        """Rows at positions start:stop into ``out`` (host float32); returns their device array."""
        rows = plan_graph(plan).rows(np.arange(start, stop))
        out[...] = to_host(rows)
        return rows
