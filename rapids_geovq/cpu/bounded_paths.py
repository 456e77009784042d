"""Bounded multi-source shortest paths, and k-medoids quantities computed from them (CPU).

Geodesic k-medoids on n up to 10^6 points cannot store the (n, n) matrix. The driver keeps the K
medoid rows and computes every other distance it needs on demand, from a search that stops early
where the result provably cannot depend on what lies beyond. This module holds that search and
the consumers of its result.

The search
----------
:func:`bounded_search` is :func:`~rapids_geovq.cpu.kernels.multi_source_rows` (a bucket-queue,
label-correcting search from ``LANES`` = 8 sources at once, one float64 row of 8 lanes per node)
with one change: lane ``l`` at node ``u`` expands (relaxes ``u``'s out-edges) only while

    ``dist[u, l] < min(node_bound[u], lane_radius[l])``    (strict)

A lane that may not expand enters the edge loop as ``+inf``, and ``inf + w`` improves nothing, so
the 8 lanes stay one vector add / compare / select per edge. A node none of whose lanes may expand
is not scanned at all.

What it computes. Call a path from the source *admissible* when every node on it before its last
has, at the point the path reaches it, a float64 prefix sum below its limit. The result is
``d[v] = min`` over admissible paths to ``v`` of the path's float64 sum (left-to-right, as Dijkstra
adds), whatever order the queue processes nodes in: every value ever written is such a sum, and
every admissible path is relaxed along because a node is re-queued whenever it improves. Hence

* if some shortest path to ``v`` (in SciPy's float64 Dijkstra sense) is admissible, ``d[v]`` is
  bit-equal to SciPy's float64 distance; otherwise ``d[v]`` is at least that distance, or ``inf``;
* with ``node_bound`` and ``lane_radius`` all ``inf`` it is exactly ``multi_source_rows``;
* a member ``o`` found with ``d[o] < lane_radius`` and no node bound is exact (its true distance
  is at most ``d[o]``, so every node on a shortest path to it is within the radius);
* the GPU twin (:mod:`rapids_geovq.gpu.cuda_bounded`) reaches the same minimum, bit for bit.

Cost. The kernel records the nodes it reaches in a ``touched`` list (the first improvement of a
node, seen from its queue position ``where[v] == UNTOUCHED``, appends it; no extra memory access).
Consumers read only the touched nodes and a reset restores exactly the entries the search wrote,
so one batch costs O(edges scanned + touched log touched), not O(n). The state lives in caller-
owned buffers (:class:`BoundedSearch`, one per thread); every public function leaves it clean.

The 8 sources of a batch should be close together, as consecutive positions of the plan's row
order are (groups of 8 nearby points): their fronts then coincide and a node is scanned about twice
for all 8. Sources far apart relax each other's unfinished values: 8 random sources in one batch
cost about 17 single-source searches at n = 200,000 and 40 at n = 1,000,000 (random 3-D kNN
graphs). Unrelated points (a new medoid's row, k-means++ trials) are therefore searched one per
batch, its lanes filled with copies (``BoundedSearch.rows(..., together=False)``), which costs
about what one 8-source batch of nearby points costs.

Consumers (bit-equal to the dense kernels on the float32 matrix)
----------------------------------------------------------------
* :func:`bounded_swap_gains`: ``kernels.swap_gains`` for 8 candidates per batch. With
  ``node_bound[u]`` = the float64 distance from ``u`` to its second-nearest medoid
  (:func:`second_nearest_bound`), a node reached only through a pruned node ``u`` is at least as
  far from the candidate as from both of ``u``'s nearest medoids (float addition is monotone), so
  at least as far as its own second-nearest medoid: it contributes nothing, exactly as in the
  dense kernel, and the overestimate it may get here contributes nothing either. Contributions are
  added in increasing point id, the dense kernel's order, so sums are bit-equal.
* :func:`bounded_member_costs`: ``kernels.medoid_costs`` for 8 candidates per batch, each over
  its cluster's members (a lane radius above the farthest member's distance keeps the search
  local; a member not found within the radius is reported, never silently summed).
* :func:`bounded_rows` and :func:`bounded_touched`: the distances themselves, as full rows or as
  the touched points' values.

All kernels release the GIL. They are compiled on first use (with LLVM's SLP vectorizer, as
``multi_source_rows``) and cached on disk next to this file.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from .kernels import LANES, MAX_BUCKETS, _prefetch_row, _vectorized

#: ``where[v]`` of a node that no lane has reached since the last reset (a clean buffer). Queued
#: nodes hold their absolute bucket (>= 0); reached, unqueued nodes hold -1.
UNTOUCHED = -2


# --- the search ------------------------------------------------------------------------------

@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def _search(indptr, indices, weights, delta, n_buckets, sources, node_bound, lane_radius,
            dist, where, nxt, prv, head, touched):  # pragma: no cover - compiled
    """Bounded 8-lane search into a clean work state; returns the number of touched nodes.

    On return ``touched[:nt]`` lists every node with a finite lane (sources first), ``dist`` holds
    their lanes, ``where`` is -1 at those nodes, and ``head`` is all -1 again (the queue is empty).
    """
    inv_delta = 1.0 / delta
    nt = 0
    queued = 0
    for lane in range(LANES):
        s = sources[lane]
        dist[s, lane] = 0.0
        if where[s] == UNTOUCHED:  # a repeated source is queued once
            touched[nt] = s
            nt += 1
            q = head[0]
            nxt[s] = q
            prv[s] = -1
            if q != -1:
                prv[q] = s
            head[0] = s
            where[s] = 0
            queued += 1
    r0, r1, r2, r3 = lane_radius[0], lane_radius[1], lane_radius[2], lane_radius[3]
    r4, r5, r6, r7 = lane_radius[4], lane_radius[5], lane_radius[6], lane_radius[7]
    cur = 0
    slot = 0
    while queued > 0:
        u = head[slot]
        if u == -1:
            cur += 1
            slot += 1
            if slot == n_buckets:
                slot = 0
            continue
        h = nxt[u]
        head[slot] = h
        if h != -1:
            prv[h] = -1
        where[u] = -1
        queued -= 1
        # Limits of the lanes at u; a lane at or beyond its limit enters the edge loop as +inf.
        bu = node_bound[u]
        t0 = r0 if r0 < bu else bu
        t1 = r1 if r1 < bu else bu
        t2 = r2 if r2 < bu else bu
        t3 = r3 if r3 < bu else bu
        t4 = r4 if r4 < bu else bu
        t5 = r5 if r5 < bu else bu
        t6 = r6 if r6 < bu else bu
        t7 = r7 if r7 < bu else bu
        u0, u1, u2, u3 = dist[u, 0], dist[u, 1], dist[u, 2], dist[u, 3]
        u4, u5, u6, u7 = dist[u, 4], dist[u, 5], dist[u, 6], dist[u, 7]
        u0 = u0 if u0 < t0 else np.inf
        u1 = u1 if u1 < t1 else np.inf
        u2 = u2 if u2 < t2 else np.inf
        u3 = u3 if u3 < t3 else np.inf
        u4 = u4 if u4 < t4 else np.inf
        u5 = u5 if u5 < t5 else np.inf
        u6 = u6 if u6 < t6 else np.inf
        u7 = u7 if u7 < t7 else np.inf
        a0 = u0 if u0 < u4 else u4
        a1 = u1 if u1 < u5 else u5
        a2 = u2 if u2 < u6 else u6
        a3 = u3 if u3 < u7 else u7
        a0 = a0 if a0 < a2 else a2
        a1 = a1 if a1 < a3 else a3
        if not (a0 < np.inf or a1 < np.inf):  # no lane expands: the edge list is not read
            continue
        e0 = indptr[u]
        e1 = indptr[u + 1]
        for e in range(e0, e1):  # the neighbours' rows are random accesses: start them all
            _prefetch_row(dist, np.int64(indices[e]))
        for e in range(e0, e1):
            v = indices[e]
            w = weights[e]
            o0, o1, o2, o3 = dist[v, 0], dist[v, 1], dist[v, 2], dist[v, 3]
            o4, o5, o6, o7 = dist[v, 4], dist[v, 5], dist[v, 6], dist[v, 7]
            n0, n1, n2, n3 = u0 + w, u1 + w, u2 + w, u3 + w
            n4, n5, n6, n7 = u4 + w, u5 + w, u6 + w, u7 + w
            b0, b1, b2, b3 = n0 < o0, n1 < o1, n2 < o2, n3 < o3
            b4, b5, b6, b7 = n4 < o4, n5 < o5, n6 < o6, n7 < o7
            dist[v, 0] = n0 if b0 else o0
            dist[v, 1] = n1 if b1 else o1
            dist[v, 2] = n2 if b2 else o2
            dist[v, 3] = n3 if b3 else o3
            dist[v, 4] = n4 if b4 else o4
            dist[v, 5] = n5 if b5 else o5
            dist[v, 6] = n6 if b6 else o6
            dist[v, 7] = n7 if b7 else o7
            # smallest improved lane (inf when none improved)
            c0 = n0 if b0 else np.inf
            c1 = n1 if b1 else np.inf
            c2 = n2 if b2 else np.inf
            c3 = n3 if b3 else np.inf
            c4 = n4 if b4 else np.inf
            c5 = n5 if b5 else np.inf
            c6 = n6 if b6 else np.inf
            c7 = n7 if b7 else np.inf
            c0 = c0 if c0 < c4 else c4
            c1 = c1 if c1 < c5 else c5
            c2 = c2 if c2 < c6 else c6
            c3 = c3 if c3 < c7 else c7
            c0 = c0 if c0 < c2 else c2
            c1 = c1 if c1 < c3 else c3
            low = c0 if c0 < c1 else c1
            if low < np.inf:
                b = np.int64(low * inv_delta)
                if b < cur:
                    b = cur
                wb = where[v]
                if wb >= 0 and wb <= b:
                    continue
                if wb >= 0:  # move it to an earlier bucket
                    p = prv[v]
                    q = nxt[v]
                    if p != -1:
                        nxt[p] = q
                    else:
                        head[wb % n_buckets] = q
                    if q != -1:
                        prv[q] = p
                else:
                    if wb == UNTOUCHED:
                        touched[nt] = v
                        nt += 1
                    queued += 1
                bs = b % n_buckets
                q = head[bs]
                nxt[v] = q
                prv[v] = -1
                if q != -1:
                    prv[q] = v
                head[bs] = v
                where[v] = b
    return nt


@njit(nogil=True, cache=True, boundscheck=False)
def reset_work(dist, where, touched, nt):  # pragma: no cover - compiled
    """Restore a work state after a search: ``dist`` rows to +inf and ``where`` to ``UNTOUCHED``
    at the ``nt`` touched nodes (the only entries the search changed; ``head`` is already clean)."""
    for j in range(nt):
        v = touched[j]
        for lane in range(LANES):
            dist[v, lane] = np.inf
        where[v] = UNTOUCHED


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def bounded_search(indptr, indices, weights, delta, n_buckets, sources, node_bound, lane_radius,
                   dist, where, nxt, prv, head, touched):  # pragma: no cover - compiled
    """Bounded search from 8 sources into a clean work state, which it leaves *dirty*.

    Parameters
    ----------
    indptr, indices, weights : CSR of the graph (int32/int64, int32, float64), non-negative weights
    delta : float
        Bucket width (any positive value is exact; the smallest positive weight is fastest).
    n_buckets : int
        Size of the circular bucket array, more than ``max weight / delta + 1``.
    sources : int64 array of shape (8,)
        Source node of each lane (repeats allowed).
    node_bound : float64 array of shape (n,)
        A lane expands node ``u`` only while its distance is ``< node_bound[u]`` (``inf``: no bound).
    lane_radius : float64 array of shape (8,)
        ... and ``< lane_radius[lane]`` (``inf``: no radius).
    dist : float64 array of shape (n, 8), all +inf
    where : int64 array of shape (n,), all ``UNTOUCHED``
    nxt, prv : int32 arrays of shape (n,), any content
    head : int32 array of shape (n_buckets,), all -1
    touched : int32 array of shape (n,), any content

    Returns
    -------
    nt : int
        ``touched[:nt]`` are the nodes with a finite lane; ``dist`` holds the result there. Call
        :func:`reset_work` with them before the next search.
    """
    return _search(indptr, indices, weights, delta, n_buckets, sources, node_bound, lane_radius,
                   dist, where, nxt, prv, head, touched)


# --- consumers of one batch ------------------------------------------------------------------

@njit(nogil=True, cache=True, boundscheck=False)
def _sorted_keys(touched, nt, col_of, keys):  # pragma: no cover - compiled
    """``keys[:nt]`` = the touched nodes as ``point << 32 | node``, ascending by point."""
    for j in range(nt):
        v = touched[j]
        keys[j] = (np.int64(col_of[v]) << 32) | np.int64(v)
    keys[:nt].sort()


@njit(nogil=True, cache=True, boundscheck=False)
def _swap_consume(dist, touched, nt, col_of, keys, points, is_medoid, nearest, d1, d2, removal,
                  loss, delta_out, best_out):  # pragma: no cover - compiled
    """``kernels.swap_gains`` for the 8 lanes of a finished search (candidate points ``points``),
    from the touched nodes; an untouched point contributes nothing (its distance is +inf)."""
    # A point contributes only where its squared float32 distance is below d2; those squares are
    # monotone in the distance, so the nearest lane decides whether any lane does.
    m = 0
    for j in range(nt):
        v = touched[j]
        o = col_of[v]
        low = dist[v, 0]
        for lane in range(1, LANES):
            x = dist[v, lane]
            low = x if x < low else low
        d = np.float64(np.float32(low))
        d = d * d
        if d < d2[o]:
            keys[m] = (np.int64(o) << 32) | np.int64(v)
            m += 1
    # Ascending point id: the order in which swap_gains adds, so the sums are bit-equal.
    keys[:m].sort()
    k = removal.size
    for c in range(k):
        for lane in range(LANES):
            loss[c, lane] = removal[c]
    acc = np.zeros(LANES, np.float64)
    for j in range(m):
        key = keys[j]
        o = key >> 32
        v = key & 0xFFFFFFFF
        a = d1[o]
        b = d2[o]
        c = nearest[o]
        for lane in range(LANES):
            d = np.float64(np.float32(dist[v, lane]))
            d = d * d
            if d < a:
                acc[lane] += d - a
                loss[c, lane] += a - b
            elif d < b:
                loss[c, lane] += d - b
    for lane in range(LANES):
        if is_medoid[points[lane]]:
            delta_out[lane] = np.inf
            best_out[lane] = -1
            continue
        best = 0
        for c in range(1, k):
            if loss[c, lane] < loss[best, lane]:
                best = c
        delta_out[lane] = loss[best, lane] + acc[lane]
        best_out[lane] = best


@njit(nogil=True, cache=True, boundscheck=False)
def _member_consume(dist, node_of, clusters, members, seg_start, lane_radius, out, ok):  # pragma: no cover
    """``kernels.medoid_costs`` for the 8 lanes of a finished search: lane ``l`` sums the squared
    float32 distances to the members of cluster ``clusters[l]``, in the order of ``members``.
    ``ok[l]`` is False where a member was not found below a finite radius (maybe an overestimate)."""
    for lane in range(LANES):
        c = clusters[lane]
        r = lane_radius[lane]
        s = 0.0
        good = True
        for j in range(seg_start[c], seg_start[c + 1]):
            x = dist[node_of[members[j]], lane]
            if (not x < r) and r < np.inf:
                good = False
            d = np.float64(np.float32(x))
            s += d * d
        out[lane] = s
        ok[lane] = good


@njit(nogil=True, cache=True, boundscheck=False)
def _write_rows(dist, touched, nt, col_of, out, base):  # pragma: no cover - compiled
    """Rows ``base .. base + 8`` of ``out`` (fewer at its end): lane values at column
    ``col_of[node]``, +inf for untouched nodes."""
    n = dist.shape[0]
    lanes = min(LANES, out.shape[0] - base)
    if 4 * nt > n:  # most nodes reached: one pass over all of them, as multi_source_rows
        for i in range(n):
            c = col_of[i]
            for lane in range(lanes):
                out[base + lane, c] = dist[i, lane]
    else:
        for lane in range(lanes):
            out[base + lane, :] = np.inf
        for j in range(nt):
            v = touched[j]
            c = col_of[v]
            for lane in range(lanes):
                out[base + lane, c] = dist[v, lane]


# --- whole calls: search, consume and reset for each batch of 8 ------------------------------

@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def bounded_rows(indptr, indices, weights, delta, n_buckets, sources, node_bound, lane_radius,
                 dist, where, nxt, prv, head, touched, col_of, out):  # pragma: no cover - compiled
    """Bounded rows from ``sources`` (b, 8) into ``out``, leaving the work state clean.

    ``lane_radius`` has shape (b, 8); ``out`` (float32 or float64) has shape (m, n_out) with
    ``m <= 8 b``: lane ``l`` of batch ``r`` goes to row ``8 r + l`` (rows past ``m`` are padding and
    dropped), node ``i`` to column ``col_of[i]``; unreached nodes get +inf. Returns the total
    number of touched nodes over the batches.
    """
    total = 0
    for r in range(sources.shape[0]):
        nt = _search(indptr, indices, weights, delta, n_buckets, sources[r], node_bound, lane_radius[r],
                     dist, where, nxt, prv, head, touched)
        if r * LANES < out.shape[0]:
            _write_rows(dist, touched, nt, col_of, out, r * LANES)
        reset_work(dist, where, touched, nt)
        total += nt
    return total


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def bounded_touched(indptr, indices, weights, delta, n_buckets, sources, node_bound, lane_radius,
                    dist, where, nxt, prv, head, touched, col_of, keys):  # pragma: no cover - compiled
    """One bounded batch (``sources`` and ``lane_radius`` of shape (8,)); returns the touched
    points ascending (int64, (t,)) and their 8 lanes (float64, (t, 8)), leaving the state clean."""
    nt = _search(indptr, indices, weights, delta, n_buckets, sources, node_bound, lane_radius,
                 dist, where, nxt, prv, head, touched)
    _sorted_keys(touched, nt, col_of, keys)
    points = np.empty(nt, np.int64)
    values = np.empty((nt, LANES), np.float64)
    for j in range(nt):
        key = keys[j]
        v = key & 0xFFFFFFFF
        points[j] = key >> 32
        for lane in range(LANES):
            values[j, lane] = dist[v, lane]
    reset_work(dist, where, touched, nt)
    return points, values


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def bounded_swap_gains(indptr, indices, weights, delta, n_buckets, sources, node_bound,
                       dist, where, nxt, prv, head, touched, col_of, keys,
                       is_medoid, nearest, d1, d2, removal, loss, delta_out, best_out):  # pragma: no cover
    """``kernels.swap_gains`` for the candidates ``sources`` (b, 8) (graph nodes), bit for bit.

    ``node_bound`` (node order) must be at least the float64 distance from each node to its
    second-nearest medoid (see :func:`second_nearest_bound`; a smaller bound gives wrong results); ``is_medoid``, ``nearest``, ``d1``,
    ``d2`` (point order) and ``removal`` are the swap state of ``kernels.swap_gains``; ``loss`` is
    float64 scratch of shape (K, 8); ``delta_out`` / ``best_out`` have shape (8 b,). Returns the
    total number of touched nodes. Leaves the work state clean.
    """
    radius = np.full(LANES, np.inf)
    points = np.empty(LANES, np.int64)
    total = 0
    for r in range(sources.shape[0]):
        nt = _search(indptr, indices, weights, delta, n_buckets, sources[r], node_bound, radius,
                     dist, where, nxt, prv, head, touched)
        for lane in range(LANES):
            points[lane] = col_of[sources[r, lane]]
        s = r * LANES
        _swap_consume(dist, touched, nt, col_of, keys, points, is_medoid, nearest, d1, d2, removal, loss,
                      delta_out[s : s + LANES], best_out[s : s + LANES])
        reset_work(dist, where, touched, nt)
        total += nt
    return total


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def bounded_member_costs(indptr, indices, weights, delta, n_buckets, sources, lane_radius, no_bound,
                         dist, where, nxt, prv, head, touched, node_of, clusters, members, seg_start,
                         out, ok):  # pragma: no cover - compiled
    """``kernels.medoid_costs`` for the candidates ``sources`` (b, 8) (graph nodes), bit for bit.

    Lane ``l`` of batch ``r`` sums over the members of cluster ``clusters[r, l]``
    (``members[seg_start[c]:seg_start[c + 1]]``, point ids, ascending within a cluster) the squared
    float32 distance from its source, searching only within ``lane_radius[r, l]``; ``no_bound`` is
    an all-inf float64 array of shape (n,). ``out`` and ``ok`` have shape (8 b,); ``ok`` is False
    where a member lay at or beyond a finite radius, whose cost may then be too large. Returns the
    total number of touched nodes. Leaves the work state clean.
    """
    total = 0
    for r in range(sources.shape[0]):
        nt = _search(indptr, indices, weights, delta, n_buckets, sources[r], no_bound, lane_radius[r],
                     dist, where, nxt, prv, head, touched)
        s = r * LANES
        _member_consume(dist, node_of, clusters[r], members, seg_start, lane_radius[r], out[s : s + LANES],
                        ok[s : s + LANES])
        reset_work(dist, where, touched, nt)
        total += nt
    return total


@njit(nogil=True, cache=True, boundscheck=False)
def second_nearest_bound(rows, col_of, out):  # pragma: no cover - compiled
    """Node bound for :func:`bounded_swap_gains`: ``out[i]`` = the second smallest of
    ``rows[:, col_of[i]]`` (float64 medoid rows (K, n) in point order; +inf when K = 1).

    This is the smallest valid bound (pruning a node earlier than this could drop a contribution):
    it equals the larger of the float64 distances to the two
    medoids nearest in float64, and the d2 of the swap state is its rounded square whichever
    order ties are broken in. O(K n) time, no temporary.
    """
    k = rows.shape[0]
    for i in range(col_of.size):
        o = col_of[i]
        a = np.inf
        b = np.inf
        for m in range(k):
            x = rows[m, o]
            if x < a:
                b = a
                a = x
            elif x < b:
                b = x
        out[i] = b


bounded_search = _vectorized(bounded_search)
bounded_rows = _vectorized(bounded_rows)
bounded_touched = _vectorized(bounded_touched)
bounded_swap_gains = _vectorized(bounded_swap_gains)
bounded_member_costs = _vectorized(bounded_member_costs)


# --- Python API --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class BoundedGraph:
    """A graph prepared for bounded searches; read-only, shared by all threads.

    Node ``i`` of the CSR arrays is point ``col_of[i]``; ``node_of`` is the inverse. Built from a
    :class:`~rapids_geovq.geodesic.plan.PathPlan` (nodes in its row order) by
    :meth:`from_plan`, or from a SciPy sparse matrix (nodes = points) by :meth:`from_csr`.

    Attributes
    ----------
    indptr : int32 or int64 ndarray of shape (n + 1,)
    indices : int32 ndarray of shape (nnz,)
    weights : float64 ndarray of shape (nnz,), non-negative
    delta : float
        Bucket width.
    n_buckets : int
        Circular bucket array size (more than ``max weight / delta + 1``).
    col_of : int64 ndarray of shape (n,)
        Point of each node.
    node_of : int64 ndarray of shape (n,)
        Node of each point.
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    delta: float
    n_buckets: int
    col_of: np.ndarray
    node_of: np.ndarray
    no_bound: np.ndarray = field(repr=False)  # all +inf (n,): "no node bound"

    @property
    def n(self) -> int:
        return self.col_of.size

    @classmethod
    def from_plan(cls, plan) -> "BoundedGraph":
        """From a ``PathPlan`` (``indptr``, ``indices``, ``weights``, ``delta``, ``n_buckets``,
        ``order``); the arrays are shared, not copied."""
        col_of = np.ascontiguousarray(plan.order, dtype=np.int64)
        return cls._make(plan.indptr, plan.indices, plan.weights, float(plan.delta), int(plan.n_buckets), col_of)

    @classmethod
    def from_csr(cls, graph) -> "BoundedGraph":
        """From a square sparse matrix of non-negative edge weights (explicit zeros are edges of
        length 0, as in SciPy's csgraph); nodes keep the points' numbering. Several components
        are allowed: distances between them are +inf."""
        import scipy.sparse as sp

        if not sp.issparse(graph):
            raise TypeError(f"graph must be a SciPy sparse matrix, got {type(graph).__name__}; "
                            "build one with rapids_geovq.knn_graph or scipy.sparse.csr_matrix")
        g = sp.csr_matrix(graph, dtype=np.float64, copy=True)
        if g.shape[0] != g.shape[1]:
            raise ValueError(f"graph must be square, got shape {g.shape}")
        g.sort_indices()
        w = g.data
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("graph weights must be finite and non-negative; rebuild the graph from "
                             "finite latents")
        positive = w[w > 0]
        w_max = float(w.max()) if w.size else 1.0
        delta = float(positive.min()) if positive.size else 1.0
        delta = max(delta, w_max / (MAX_BUCKETS - 2))
        n_buckets = int(np.ceil(w_max / delta)) + 2
        idx_t = np.int32 if g.nnz < 2**31 else np.int64
        return cls._make(g.indptr.astype(idx_t), g.indices.astype(np.int32), w, delta, n_buckets,
                         np.arange(g.shape[0], dtype=np.int64))

    @classmethod
    def _make(cls, indptr, indices, weights, delta, n_buckets, col_of):
        n = col_of.size
        if n >= 2**31:
            raise ValueError(f"bounded searches support fewer than 2**31 nodes, got {n}")
        if not delta > 0 or n_buckets < 2:
            raise ValueError(f"need a positive bucket width and at least 2 buckets, got delta={delta}, "
                             f"n_buckets={n_buckets}")
        node_of = np.empty(n, np.int64)
        node_of[col_of] = np.arange(n, dtype=np.int64)
        return cls(np.ascontiguousarray(indptr), np.ascontiguousarray(indices, dtype=np.int32),
                   np.ascontiguousarray(weights, dtype=np.float64), delta, n_buckets, col_of, node_of,
                   np.full(n, np.inf))

    def to_nodes(self, values) -> np.ndarray:
        """A per-point array (n,) in node order (e.g. a node bound): ``values[col_of]``, float64."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.n,):
            raise ValueError(f"expected one value per point, shape ({self.n},), got {values.shape}")
        return values[self.col_of]

    def swap_bound(self, medoid_rows) -> np.ndarray:
        """The node bound for :meth:`BoundedSearch.swap_gains` from the float64 medoid rows.

        Parameters
        ----------
        medoid_rows : float64 ndarray of shape (K, n)
            Unrounded float64 distances from each medoid (as source) to every point, point order.

        Returns
        -------
        float64 ndarray of shape (n,), node order
            Each node's second-smallest medoid distance (+inf when K = 1).
        """
        rows = np.ascontiguousarray(medoid_rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.n:
            raise ValueError(f"medoid_rows must have shape (K, {self.n}), got {rows.shape}")
        out = np.empty(self.n, np.float64)
        second_nearest_bound(rows, self.col_of, out)
        return out


def as_bounded_graph(graph) -> BoundedGraph:
    """A :class:`BoundedGraph` from itself, a ``PathPlan`` or a SciPy sparse matrix."""
    if isinstance(graph, BoundedGraph):
        return graph
    if all(hasattr(graph, a) for a in ("indptr", "indices", "weights", "delta", "n_buckets", "order")):
        return BoundedGraph.from_plan(graph)
    return BoundedGraph.from_csr(graph)


class BoundedSearch:
    """Work buffers of bounded searches for one thread, and the calls that use them.

    Holds O(n) buffers (about 100 bytes per node: the (n, 8) float64 distance rows, queue links, the
    touched list). Each call runs batches of 8 sources, and each batch costs time in proportion to
    the nodes it reaches (plus O(n) for :meth:`rows`, which writes full rows); every call leaves
    the buffers clean, so instances are reused indefinitely.

    Not thread-safe: create one per thread (they may share one :class:`BoundedGraph`); a call that
    finds the instance busy raises. The kernels release the GIL, so threads run in parallel.

    Sources are point ids; ``node_bound`` arrays are in node order (``graph.to_nodes``,
    ``graph.swap_bound``); everything else is in point order.

    Parameters
    ----------
    graph : BoundedGraph, PathPlan or scipy sparse matrix
        The graph (see :func:`as_bounded_graph`).
    """

    def __init__(self, graph):
        g = self.graph = as_bounded_graph(graph)
        n = g.n
        self._dist = np.full((n, LANES), np.inf)
        self._where = np.full(n, UNTOUCHED, np.int64)
        self._nxt = np.empty(n, np.int32)
        self._prv = np.empty(n, np.int32)
        self._head = np.full(g.n_buckets, -1, np.int32)
        self._touched = np.empty(n, np.int32)
        self._keys = np.empty(n, np.int64)
        self._busy = threading.Lock()
        #: Nodes touched by the last call, summed over its batches (a measure of its cost).
        self.last_touched = 0

    # -- helpers -------------------------------------------------------------------------------

    def _graph_args(self):
        g = self.graph
        return g.indptr, g.indices, g.weights, g.delta, g.n_buckets

    def _work(self):
        return self._dist, self._where, self._nxt, self._prv, self._head, self._touched

    def _acquire(self):
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this BoundedSearch is in use by another thread; create one BoundedSearch "
                               "per thread (they can share one BoundedGraph)")

    def _nodes(self, points) -> tuple[np.ndarray, int]:
        """Point ids -> (b, 8) source nodes, the last batch padded with a repeat of its last point."""
        points = np.asarray(points).reshape(-1)
        if points.size == 0:
            raise ValueError("need at least one source point")
        if not np.issubdtype(points.dtype, np.integer):
            raise TypeError(f"source points must be integer ids, got dtype {points.dtype}")
        n = self.graph.n
        if points.min() < 0 or points.max() >= n:
            raise ValueError(f"source points must be ids in [0, {n}), got {points.min()}..{points.max()}")
        m = points.size
        nodes = self.graph.node_of[points]
        pad = -(-m // LANES) * LANES
        nodes = np.concatenate([nodes, np.full(pad - m, nodes[-1], np.int64)])
        return nodes.reshape(-1, LANES), m

    def _radius(self, radius, m: int) -> np.ndarray:
        """Per-source radii (a scalar or shape (m,)) as (b, 8), padding lanes repeating the last."""
        r = np.broadcast_to(np.asarray(np.inf if radius is None else radius, dtype=np.float64), (m,))
        if np.isnan(r).any():
            raise ValueError("lane radius contains NaN; pass a distance or inf for no radius")
        pad = -(-m // LANES) * LANES
        return np.concatenate([r, np.full(pad - m, r[-1])]).reshape(-1, LANES)

    def _bound(self, node_bound) -> np.ndarray:
        if node_bound is None:
            return self.graph.no_bound
        b = np.asarray(node_bound)
        if b.dtype != np.float64 or b.shape != (self.graph.n,):
            raise ValueError(f"node_bound must be float64 of shape ({self.graph.n},) in node order "
                             f"(graph.to_nodes or graph.swap_bound), got {b.dtype} {b.shape}")
        return np.ascontiguousarray(b)

    # -- calls -----------------------------------------------------------------------------------

    def rows(self, points, *, node_bound=None, radius=None, out=None, dtype=np.float32,
             together: bool = True) -> np.ndarray:
        """Distance rows from ``points``, full length, in point order.

        Parameters
        ----------
        points : int array of shape (m,)
            Source points.
        node_bound : float64 ndarray of shape (n,), node order, optional
            Per-node expansion bound (none by default).
        radius : float or float array of shape (m,), optional
            Per-source expansion radius (none by default).
        out : float32 or float64 ndarray of shape (m, n), optional
            Where to write (C-contiguous).
        dtype : float32 or float64
            Of a new ``out``. float32 is the dense matrix's rounding of the float64 distance.
        together : bool, default=True
            True: each 8 consecutive points share one search, which costs about as much as one
            source when they are close together (consecutive positions of the plan's row order).
            False: one search per point, for unrelated points (8 random sources in one batch cost
            about 17 single searches at n = 200,000, 40 at n = 1,000,000). Same values either way.

        Returns
        -------
        ndarray of shape (m, n)
            ``out[j, o]``: the bounded search's value (exact where an admissible shortest path
            exists, see the module notes; with no bound and radius: SciPy's Dijkstra), +inf for
            points not reached.
        """
        src, m = self._nodes(points)
        n = self.graph.n
        if out is None:
            out = np.empty((m, n), dtype=dtype)
        if out.shape != (m, n) or out.dtype not in (np.float32, np.float64) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 or float64 array of shape {(m, n)}, "
                             f"got {out.dtype} {out.shape}")
        bound, rad = self._bound(node_bound), self._radius(radius, m)
        self._acquire()
        try:
            if together:
                self.last_touched = bounded_rows(*self._graph_args(), src, bound, rad, *self._work(),
                                                 self.graph.col_of, out)
            else:  # each point alone, its batch filled with copies (one row of out per search)
                nodes, rads = src.reshape(-1)[:m], rad.reshape(-1)[:m]
                self.last_touched = 0
                for j in range(m):
                    self.last_touched += bounded_rows(
                        *self._graph_args(), np.full((1, LANES), nodes[j]), bound, np.full((1, LANES), rads[j]),
                        *self._work(), self.graph.col_of, out[j : j + 1])
        finally:
            self._busy.release()
        return out

    def touched(self, points, *, node_bound=None, radius=None) -> tuple[np.ndarray, np.ndarray]:
        """The points one bounded batch reaches and their float64 distances.

        Parameters
        ----------
        points : int array of shape (m,), m <= 8
            Source points (one batch).
        node_bound, radius
            As for :meth:`rows`.

        Returns
        -------
        reached : int64 ndarray of shape (t,)
            Points with a finite distance from at least one source, ascending. Cost O(t log t).
        dist : float64 ndarray of shape (t, m)
            Their distances (+inf from sources that did not reach them). ``float32(dist)`` is
            what the dense matrix stores.
        """
        src, m = self._nodes(points)
        if src.shape[0] != 1:
            raise ValueError(f"touched() searches one batch of at most {LANES} sources, got {m}; "
                             "call it per batch")
        bound, rad = self._bound(node_bound), self._radius(radius, m)
        self._acquire()
        try:
            reached, values = bounded_touched(*self._graph_args(), src[0], bound, rad[0], *self._work(),
                                              self.graph.col_of, self._keys)
        finally:
            self._busy.release()
        self.last_touched = reached.size
        return reached, np.ascontiguousarray(values[:, :m])

    def swap_gains(self, points, state, node_bound) -> tuple[np.ndarray, np.ndarray]:
        """``kernels.swap_gains`` for candidate ``points`` without their rows, bit for bit.

        Parameters
        ----------
        points : int array of shape (m,)
            Candidate points; each 8 consecutive ones share one search, so pass them in the
            plan's row order (``plan.order[p0:p1]``), as the swap scan takes them.
        state : tuple
            ``(is_medoid, nearest, d1, d2, removal)`` as for ``kernels.swap_gains``: bool (n,),
            int64 (n,), float64 (n,), float64 (n,) in point order and float64 (K,); ``d1``/``d2``
            are ``float64(float32(distance))**2`` to the nearest / second-nearest medoid.
        node_bound : float64 ndarray of shape (n,), node order
            At least each node's float64 distance to its second-nearest medoid (any two distinct
            medoids' larger distance will do): ``graph.swap_bound(medoid_rows)`` gives exactly the
            second-nearest distance, the smallest valid bound and so the fastest; a larger bound
            only searches more, a smaller one gives wrong results.

        Returns
        -------
        delta : float64 ndarray of shape (m,)
            Change of total cost of each candidate's best swap (+inf for a medoid).
        best : int64 ndarray of shape (m,)
            Position of the medoid to remove (-1 for a medoid).
        """
        src, m = self._nodes(points)
        is_medoid, nearest, d1, d2, removal = state
        n = self.graph.n
        is_medoid = np.ascontiguousarray(is_medoid, dtype=np.bool_)
        nearest = np.ascontiguousarray(nearest, dtype=np.int64)
        d1 = np.ascontiguousarray(d1, dtype=np.float64)
        d2 = np.ascontiguousarray(d2, dtype=np.float64)
        removal = np.ascontiguousarray(removal, dtype=np.float64)
        if any(a.shape != (n,) for a in (is_medoid, nearest, d1, d2)) or removal.ndim != 1 or removal.size < 1:
            raise ValueError(f"state must be (is_medoid, nearest, d1, d2) of shape ({n},) and removal of shape "
                             f"(K,), got {[np.shape(a) for a in state]}")
        if node_bound is None:
            raise ValueError("swap_gains needs node_bound (graph.swap_bound(medoid_rows)); pass "
                             "graph.no_bound to search without pruning")
        bound = self._bound(node_bound)
        delta = np.empty(src.size, np.float64)
        best = np.empty(src.size, np.int64)
        loss = np.empty((removal.size, LANES), np.float64)
        self._acquire()
        try:
            self.last_touched = bounded_swap_gains(*self._graph_args(), src, bound, *self._work(),
                                                   self.graph.col_of, self._keys, is_medoid, nearest, d1, d2,
                                                   removal, loss, delta, best)
        finally:
            self._busy.release()
        return delta[:m], best[:m]

    def member_costs(self, points, labels, members, seg_start, radius=None) -> np.ndarray:
        """``kernels.medoid_costs`` for candidate ``points`` without their rows, bit for bit.

        Parameters
        ----------
        points : int array of shape (m,)
            Candidates; each is scored against the members of its own cluster ``labels[point]``.
            Each 8 consecutive ones share one search: pass points close together (e.g. a
            cluster's members in the plan's row order).
        labels : int64 ndarray of shape (n,)
            Cluster of each point.
        members : int64 ndarray of shape (n,)
            Points sorted by cluster, ascending ids within one (``argsort(labels, kind="stable")``).
        seg_start : int64 ndarray of shape (K + 1,)
            Cluster ``c`` is ``members[seg_start[c]:seg_start[c + 1]]``.
        radius : float or float array of shape (m,), optional
            Per-candidate search radius: any value above the largest float64 distance from the
            candidate to its cluster's members keeps the search local; +inf (default) searches
            the whole component.

        Returns
        -------
        float64 ndarray of shape (m,)
            Sum over the cluster's members, in ``members`` order, of
            ``float64(float32(distance))**2``.

        Raises
        ------
        ValueError
            When a member lies at or beyond a finite radius (its distance would be unreliable).
        """
        src, m = self._nodes(points)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        members = np.ascontiguousarray(members, dtype=np.int64)
        seg_start = np.ascontiguousarray(seg_start, dtype=np.int64)
        n = self.graph.n
        if labels.shape != (n,) or members.ndim != 1 or seg_start.ndim != 1:
            raise ValueError(f"labels must have shape ({n},), members and seg_start must be 1-D")
        rad = self._radius(radius, m)
        clusters = labels[self.graph.col_of[src]]
        if clusters.min() < 0 or clusters.max() + 1 >= seg_start.size:
            raise ValueError(f"labels of the candidates must be clusters in [0, {seg_start.size - 1})")
        out = np.empty(src.size, np.float64)
        ok = np.empty(src.size, np.bool_)
        self._acquire()
        try:
            self.last_touched = bounded_member_costs(*self._graph_args(), src, rad, self.graph.no_bound,
                                                     *self._work(), self.graph.node_of, clusters, members,
                                                     seg_start, out, ok)
        finally:
            self._busy.release()
        bad = np.flatnonzero(~ok[:m])
        if bad.size:
            p = np.asarray(points).reshape(-1)[bad]
            raise ValueError(
                f"{bad.size} candidate(s) (first: point {int(p[0])}, radius {float(rad.reshape(-1)[bad[0]])}) "
                "have a cluster member at or beyond their search radius, so its distance may be an "
                "overestimate; pass a radius above the largest distance from the candidate to its "
                "cluster's members, or inf")
        return out[:m]

    def is_clean(self) -> bool:
        """Whether the buffers are in their clean state (O(n); for tests and assertions)."""
        return bool(np.isposinf(self._dist).all() and (self._where == UNTOUCHED).all()
                    and (self._head == -1).all())
