"""Bounded batched shortest paths on the GPU: the twin of :mod:`rapids_geovq.cpu.bounded_paths`.

The batched search of :mod:`rapids_geovq.gpu.cuda_paths` (``B`` sources as the fast axis of an
(n, B) float64 distance array; rounds of compact / relax / advance, near/far thresholds per lane)
with the expansion rule of the CPU bounded search: lane ``b`` at node ``v`` relaxes ``v``'s edges
only while

    ``dist[v, b] < min(node_bound[v], lane_radius[b])``    (strict)

A lane that may not expand is simply dropped from the pending set; if its distance improves later
(by a concurrent relaxation, or in a later round) the improvement marks it pending again, so it is
checked again with its final value.

Result. The search ends at the fixpoint ``d[v] = min`` over admissible paths (paths whose every
node before the last is reached below its limit) of the path's float64 sum, added in path order.
That minimum does not depend on the order of relaxations, so it is the same value the CPU
bounded search computes, and the float32 rows are bit-equal to the CPU's: SciPy's Dijkstra where
an admissible shortest path exists, at least that (or ``inf``) elsewhere. With a node bound from
the second-nearest medoid distances, these rows give the dense k-medoids kernels
(:class:`rapids_geovq.gpu.cuda_kmeans.CudaKMedoidKernels`) exactly the dense matrix's result (see
the CPU module for the argument).

Where no GPU is present the kernels run on Numba's CUDA simulator (tests only): arrays are then
NumPy arrays.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from .cuda_paths import _advance, _as_numba, _blocks, _compact, _init, _to_rows, default_delta, device_module, simulated

#: Sources per batch (lanes) of :meth:`DeviceBoundedGraph.rows`. A batch holds about
#: ``n * lanes * 10`` bytes of search state on the device.
DEFAULT_LANES = 1024


# --- kernels ---------------------------------------------------------------------------------

@cuda.jit
def _relax_bounded(indptr, indices, weights, frontier, n_front, dist, flag, flag_next, pending_next, thr,
                   near_lane, node_bound, lane_radius):  # pragma: no cover
    """As ``cuda_paths._relax``, except that a pending lane at or beyond its limit is dropped."""
    lanes = dist.shape[1]
    for f in range(cuda.blockIdx.x, n_front, cuda.gridDim.x):
        v = frontier[f]
        e0 = indptr[v]
        e1 = indptr[v + 1]
        bv = node_bound[v]
        for b in range(cuda.threadIdx.x, lanes, cuda.blockDim.x):
            if flag[v, b] != 0:
                flag[v, b] = 0  # only this thread reads (v, b) this round; next round uses flag_next
                dv = dist[v, b]
                r = lane_radius[b]
                limit = r if r < bv else bv
                # A value read stale (a concurrent atomic.min lowered it) was also marked in
                # flag_next, so dropping it here loses nothing: the new value is checked next round.
                if not dv < limit:
                    continue
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


# --- driver ----------------------------------------------------------------------------------

def bounded_batched_rows(indptr, indices, weights, sources, col_of=None, *, node_bound=None, lane_radius=None,
                         delta: float | None = None, out=None, threads: int | None = None):
    """Bounded shortest-path rows from a batch of sources, computed together on the device.

    Parameters
    ----------
    indptr, indices, weights : device (or, under the simulator, NumPy) arrays
        CSR of a directed graph (int64 / int32 / float64), non-negative weights (an undirected
        graph stores both directions). Explicit zero weights are edges.
    sources : int array of shape (B,)
        Source nodes; repeats are allowed.
    col_of : int64 device array of shape (n,), optional
        Output column of node v; identity by default.
    node_bound : float64 device array of shape (n,), node order, optional
        Lane b expands node v only while ``dist[v, b] < node_bound[v]``; no bound by default.
    lane_radius : float64 array of shape (B,), optional
        ... and while ``dist[v, b] < lane_radius[b]``; no radius by default.
    delta : float, optional
        Threshold step of the near/far search (any value gives the same result); default
        :func:`rapids_geovq.gpu.cuda_paths.default_delta`.
    out : device float32 or float64 array of shape (B, n), optional
        Where to write the rows (float32 by default; float64 keeps the search's exact values).
    threads : int, optional
        Threads per block of the relaxation (over lanes); default ``min(B, 128)``.

    Returns
    -------
    float32 (or ``out``'s float64) device array of shape (B, n)
        ``out[b, col_of[v]]``: the bounded search's float64 value, rounded once to float32 for a
        float32 ``out`` (bit-equal to :class:`rapids_geovq.cpu.bounded_paths.BoundedSearch`
        rows), ``inf`` where ``v`` is not reached.
    """
    xp = device_module()
    n = int(indptr.shape[0]) - 1
    sources = xp.asarray(sources, dtype=xp.int64).reshape(-1)
    lanes = int(sources.shape[0])
    if lanes == 0:
        raise ValueError("need at least one source")
    if col_of is None:
        col_of = xp.arange(n, dtype=xp.int64)
    if node_bound is None:
        node_bound = xp.full(n, xp.inf, dtype=xp.float64)
    node_bound = xp.asarray(node_bound)  # a host array is copied to the device
    if tuple(node_bound.shape) != (n,) or node_bound.dtype != np.float64:
        raise ValueError(f"node_bound must be float64 of shape ({n},) in node order, got "
                         f"{node_bound.dtype} {tuple(node_bound.shape)}")
    radius = np.full(lanes, np.inf) if lane_radius is None else np.asarray(lane_radius, dtype=np.float64)
    radius = np.array(np.broadcast_to(radius, (lanes,)))  # a writable copy: the simulator copies back
    if np.isnan(radius).any():
        raise ValueError("lane_radius contains NaN; pass a distance or inf for no radius")
    radius = xp.asarray(radius)
    if delta is None:
        delta = default_delta(weights if xp is np else weights.get())
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    if out is None:
        out = xp.empty((lanes, n), dtype=xp.float32)
    if tuple(out.shape) != (lanes, n) or out.dtype not in (np.float32, np.float64):
        raise ValueError(f"out must be float32 or float64 of shape {(lanes, n)}, got {out.dtype} {tuple(out.shape)}")
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
         near_lane, frontier, count, node_bound, radius) = (_as_numba(a) for a in (
            indptr, indices, weights, sources, col_of, out, dist, flag, flag_next, pending, pending_next, thr,
            near_lane, frontier, count, node_bound, radius))
    _init[_blocks(lanes, 128), 128](sources, dist, flag, pending)
    while True:
        _compact[_blocks(n, 256), 256](pending, frontier, count)
        n_front = int(count[0])  # the one device-to-host read of a round
        if n_front == 0:
            break
        _relax_bounded[min(n_front, 65535), threads](indptr, indices, weights, frontier, n_front, dist, flag,
                                                     flag_next, pending_next, thr, near_lane, node_bound, radius)
        _advance[_blocks(max(lanes, 1), 128), 128](thr, near_lane, delta, count)
        flag, flag_next = flag_next, flag  # the spent buffers are all zero again
        pending, pending_next = pending_next, pending
    _to_rows[(_blocks(n, 32), _blocks(lanes, 8)), (32, 8)](dist, col_of, out)
    return result


class DeviceBoundedGraph:
    """A CSR graph copied to the current device once, for many bounded batches.

    Node ``i`` is point ``col_of[i]`` (identity by default); sources are point ids, node bounds are
    in node order, output columns are in point order, as in
    :class:`rapids_geovq.cpu.bounded_paths.BoundedSearch`. Holds only the graph: each call
    allocates its own search state, so one instance may serve several threads (each launching on
    its own stream is up to the caller).
    """

    def __init__(self, indptr, indices, weights, col_of=None, delta: float | None = None):
        xp = device_module()
        w = np.asarray(weights, dtype=np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("shortest paths need finite, non-negative edge weights")
        self.n = int(len(indptr)) - 1
        col = np.arange(self.n, dtype=np.int64) if col_of is None else np.asarray(col_of, dtype=np.int64)
        if col.shape != (self.n,):
            raise ValueError(f"col_of must have shape ({self.n},), got {col.shape}")
        node_of = np.empty(self.n, np.int64)
        node_of[col] = np.arange(self.n, dtype=np.int64)
        self.col_of_host = col
        self.node_of_host = node_of
        self.indptr = xp.asarray(np.asarray(indptr, dtype=np.int64))
        self.indices = xp.asarray(np.asarray(indices, dtype=np.int32))
        self.weights = xp.asarray(w)
        self.col_of = xp.asarray(col)
        self.delta = default_delta(w) if delta is None else float(delta)

    @classmethod
    def from_plan(cls, plan, delta: float | None = None) -> "DeviceBoundedGraph":
        """From a ``PathPlan`` or a ``BoundedGraph`` (nodes in their order; ``order`` / ``col_of``)."""
        col_of = plan.col_of if hasattr(plan, "col_of") else plan.order
        return cls(plan.indptr, plan.indices, plan.weights, col_of=col_of, delta=delta)

    def to_nodes(self, values):
        """A per-point array (n,) (host or device) as a float64 device array in node order."""
        xp = device_module()
        values = xp.asarray(values, dtype=xp.float64)
        if tuple(values.shape) != (self.n,):
            raise ValueError(f"expected one value per point, shape ({self.n},), got {tuple(values.shape)}")
        return values[self.col_of]

    def rows(self, points, *, node_bound=None, radius=None, lanes: int = DEFAULT_LANES, out=None, dtype=np.float32):
        """float32 device rows (m, n) for source ``points`` (any number, ``lanes`` per batch).

        ``node_bound``: float64 device array (n,) in node order (``to_nodes``), optional;
        ``radius``: a float or one per point, optional. Row ``j`` equals
        ``BoundedSearch.rows(points, node_bound=..., radius=...)[j]`` bit for bit.
        """
        xp = device_module()
        points = np.asarray(points).reshape(-1)
        if points.size == 0:
            raise ValueError("need at least one source point")
        if not np.issubdtype(points.dtype, np.integer):
            raise TypeError(f"source points must be integer ids, got dtype {points.dtype}")
        if points.min() < 0 or points.max() >= self.n:
            raise ValueError(f"source points must be ids in [0, {self.n}), got {points.min()}..{points.max()}")
        nodes = self.node_of_host[points]
        rad = np.broadcast_to(np.asarray(np.inf if radius is None else radius, dtype=np.float64), points.shape)
        if out is None:
            out = xp.empty((points.size, self.n), dtype=dtype)
        for s in range(0, points.size, lanes):
            e = min(s + lanes, points.size)
            bounded_batched_rows(self.indptr, self.indices, self.weights, nodes[s:e], self.col_of,
                                 node_bound=node_bound, lane_radius=rad[s:e], delta=self.delta, out=out[s:e])
        return out


class DeviceBoundedSearch:
    """Bounded searches on the GPU behind the interface of
    :class:`rapids_geovq.cpu.bounded_paths.BoundedSearch` (what on-demand k-medoids calls): rows are
    searched on the device, ``lanes`` sources per launch, and the dense k-medoids kernels
    (:class:`rapids_geovq.gpu.cuda_kmeans.CudaKMedoidKernels`) read them there, so every value is
    the CPU search's, bit for bit.

    Parameters
    ----------
    graph : DeviceBoundedGraph
    lanes : int
        Sources per launch.
    """

    def __init__(self, graph: "DeviceBoundedGraph", lanes: int = 256):
        self.graph = graph
        self.lanes = int(lanes)

    def rows(self, points, *, node_bound=None, radius=None, out=None, dtype=np.float32, together: bool = True):
        """Host rows (m, n) for source ``points`` (``together`` is moot here: every source of a
        launch has its own lane and front)."""
        from ..common.arrays import to_host

        if node_bound is not None:
            node_bound = device_module().asarray(node_bound)
        rows = to_host(self.graph.rows(points, node_bound=node_bound, radius=radius, lanes=self.lanes, dtype=dtype))
        if out is not None:
            out[...] = rows
            return out
        return rows

    def swap_gains(self, points, state, node_bound):
        """``swap_gains`` of candidate ``points`` from their bounded rows (see the CPU search)."""
        from .cuda_kmeans import CUDA_KERNELS

        points = np.asarray(points, dtype=np.int64).reshape(-1)
        xp = device_module()
        block = self.graph.rows(points, node_bound=xp.asarray(node_bound), lanes=self.lanes)
        block_t = xp.ascontiguousarray(block.T)
        return CUDA_KERNELS.swap_gains(block_t, points, 0, points.size, state)

    def member_costs(self, points, labels, members, seg_start, radius=None):
        """``medoid_costs`` of candidate ``points`` from their rows within ``radius``; every member
        must lie inside it (checked, as on the CPU)."""
        from .cuda_kmeans import CUDA_KERNELS

        points = np.asarray(points, dtype=np.int64).reshape(-1)
        xp = device_module()
        block = self.graph.rows(points, radius=radius, lanes=self.lanes, dtype=np.float64)
        rad = np.broadcast_to(np.asarray(np.inf if radius is None else radius, dtype=np.float64), points.shape)
        labels = np.asarray(labels, dtype=np.int64)
        from ..common.arrays import to_host

        seg = np.asarray(seg_start)
        members = np.asarray(members, dtype=np.int64)
        for j, p in enumerate(points):  # every member inside the radius: its distance is exact
            c = labels[p]
            d = to_host(block[j, xp.asarray(members[seg[c] : seg[c + 1]])])
            if np.isfinite(rad[j]) and not (d < rad[j]).all():
                raise ValueError(f"candidate {int(p)} has a cluster member at or beyond its search radius "
                                 f"{float(rad[j])}; pass a larger radius, or inf")
        block = block.astype(xp.float32)  # what the dense matrix stores
        block_t = xp.ascontiguousarray(block.T)
        return CUDA_KERNELS.medoid_costs(block_t, points, (labels, members, seg))
