"""Compiled CPU kernels (Numba) for the geodesic engine.

All kernels release the GIL, so threads of one process (or Dask worker threads) run them in
parallel. They are compiled on first use and cached on disk next to this file.

Shortest paths
--------------
:func:`multi_source_rows` runs a bucket-queue (Dial / delta-stepping) label-correcting search from
``LANES`` sources at once. Each node holds one float64 distance per source (a 64-byte row, one
cache line), and one scan of a node's edge list relaxes all lanes together, so the edge lists of
the graph, which do not fit in L2 for n = 60,000, are read once for several sources. Sources that
are close in the graph (one group of the row order, see ``lane_groups``) have similar search fronts,
so a node is scanned about 1.8 times for 8 sources instead of 8 times. Before relaxing a node's
edges, the kernel issues prefetches for all its neighbours' distance rows (random accesses into a
3.8 MB array that does not fit in L2), so their cache misses overlap.

Exactness: every distance is a float64 sum ``dist[u] + w(u, v)`` along a path, the search stops
only when no relaxation improves any lane, and the fixpoint of ``d[v] = min_u fl(d[u] + w)`` with
non-negative weights is unique, so the float64 distances are the ones SciPy's Dijkstra computes,
and the float32 output is SciPy's result rounded to float32. The tests check equality on every
test graph.

k-medoids
---------
:func:`medoid_costs` and :func:`swap_gains` compute, for a block of rows of the distance matrix,
the quantities geodesic k-means needs (sum of squared distances to a cluster's members; the best
FasterPAM swap for each candidate). Each row's result depends on that row only and sums run in a
fixed column order, so results do not depend on how the rows are split among shards or workers.
"""
from __future__ import annotations

import threading

import numba
import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir as _ir
from numba import njit, types
from numba.core import cgutils
from numba.core import config as _numba_config
from numba.extending import intrinsic

#: Sources searched together by :func:`multi_source_rows` (8 float64 = one 64-byte cache line;
#: the kernel's lane code is written out for exactly 8).
LANES = 8
#: Cap on the circular bucket array of :func:`multi_source_rows`; beyond it the bucket width
#: grows (the search stays exact: it is label-correcting).
MAX_BUCKETS = 1 << 16


_PREFETCH = "llvm.prefetch.p0" if _llvm.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch_row(typingctx, arr, i):
    """Hint the CPU to fetch row ``i`` of a 2-D C-contiguous array for writing (no effect on results)."""
    sig = types.void(arr, types.int64)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], zero], wraparound=False)
        i8p = _ir.IntType(8).as_pointer()
        i32 = _ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32]),
                                            _PREFETCH)
        builder.call(fn, [builder.bitcast(ptr, i8p), _ir.Constant(i32, 1), _ir.Constant(i32, 3), _ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def multi_source_rows(indptr, indices, weights, delta, n_buckets, sources, out, col_of):  # pragma: no cover
    """Shortest-path lengths from ``sources`` (shape (b, LANES), graph node ids) into ``out``.

    ``out`` has shape (b * LANES, n_out); lane ``l`` of batch ``r`` is written to row
    ``r * LANES + l``, node ``i`` to column ``col_of[i]``. A batch may repeat a source to fill its
    lanes. ``delta`` is the bucket width (at most the smallest positive edge weight for a
    label-setting search), ``n_buckets`` the size of the circular bucket array (more than
    ``max weight / delta + 1``).
    """
    n = indptr.size - 1
    inv_delta = 1.0 / delta
    dist = np.empty((n, LANES), np.float64)
    nxt = np.empty(n, np.int32)
    prv = np.empty(n, np.int32)
    where = np.empty(n, np.int64)  # absolute bucket a queued node is in; -1 when not queued
    head = np.empty(n_buckets, np.int32)
    for r in range(sources.shape[0]):
        dist[:] = np.inf
        where[:] = -1
        head[:] = -1
        queued = 0
        for lane in range(LANES):
            s = sources[r, lane]
            dist[s, lane] = 0.0
            if where[s] == -1:
                q = head[0]
                nxt[s] = q
                prv[s] = -1
                if q != -1:
                    prv[q] = s
                head[0] = s
                where[s] = 0
                queued += 1
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
            e0 = indptr[u]
            e1 = indptr[u + 1]
            for e in range(e0, e1):  # the neighbours' rows are random accesses: start them all
                _prefetch_row(dist, np.int64(indices[e]))
            # The 8 lanes are written out so that the compiler's SLP vectorizer turns them into
            # one vector add, compare and select per edge (see _vectorized).
            u0, u1, u2, u3 = dist[u, 0], dist[u, 1], dist[u, 2], dist[u, 3]
            u4, u5, u6, u7 = dist[u, 4], dist[u, 5], dist[u, 6], dist[u, 7]
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
                    if wb != -1 and wb <= b:
                        continue
                    if wb != -1:  # move it to an earlier bucket
                        p = prv[v]
                        q = nxt[v]
                        if p != -1:
                            nxt[p] = q
                        else:
                            head[wb % n_buckets] = q
                        if q != -1:
                            prv[q] = p
                    else:
                        queued += 1
                    bs = b % n_buckets
                    q = head[bs]
                    nxt[v] = q
                    prv[v] = -1
                    if q != -1:
                        prv[q] = v
                    head[bs] = v
                    where[v] = b
        base = r * LANES
        if base + LANES <= out.shape[0]:  # one pass over the distances, all lanes at once
            for i in range(n):
                c = col_of[i]
                for lane in range(LANES):
                    out[base + lane, c] = np.float32(dist[i, lane])
        else:
            for lane in range(out.shape[0] - base):
                o = out[base + lane]
                for i in range(n):
                    o[col_of[i]] = np.float32(dist[i, lane])


@njit(nogil=True, cache=True, boundscheck=False)
def medoid_costs(block, rows, labels, members, seg_start, out):  # pragma: no cover
    """``out[i] = sum over x in cluster(labels[rows[i]]) of block[i, x]**2`` (float64).

    ``members`` lists the points sorted by cluster (ascending ids within one), cluster ``c`` being
    ``members[seg_start[c]:seg_start[c + 1]]``.
    """
    for i in range(block.shape[0]):
        c = labels[rows[i]]
        s = 0.0
        for j in range(seg_start[c], seg_start[c + 1]):
            d = np.float64(block[i, members[j]])
            s += d * d
        out[i] = s


@njit(nogil=True, cache=True, boundscheck=False)
def swap_gains(block, rows, is_medoid, nearest, d1, d2, removal, delta_out, best_out, stop_below=-np.inf):  # pragma: no cover
    """Best FasterPAM swap for each candidate row (Schubert & Rousseeuw, 2021), squared distances.

    For candidate x (a row of ``block``) and each point o with nearest medoid ``nearest[o]`` at
    squared distance ``d1[o]`` and second nearest at ``d2[o]``: if x is nearer than d1, o moves to
    x whatever medoid is removed (a shared gain) and removing its own medoid costs nothing extra;
    if x is between d1 and d2, removing o's medoid sends it to x instead of its second nearest.
    ``removal[m]`` is the cost of removing medoid m with no candidate added. Writes the change of
    total cost of the best swap and the position of the medoid to remove; medoids get +inf.
    Stops after the first row whose change is below ``stop_below`` (an eager scan swaps it in, so
    the rows after it would be evaluated against medoids about to change); returns the number of
    rows written.
    """
    k = removal.size
    loss = np.empty(k, np.float64)
    for i in range(block.shape[0]):
        if is_medoid[rows[i]]:
            delta_out[i] = np.inf
            best_out[i] = -1
            continue
        for m in range(k):
            loss[m] = removal[m]
        acc = 0.0
        for o in range(block.shape[1]):
            d = np.float64(block[i, o])
            d = d * d
            a = d1[o]
            if d < a:
                acc += d - a
                loss[nearest[o]] += a - d2[o]
            elif d < d2[o]:
                loss[nearest[o]] += d - d2[o]
        best = 0
        for m in range(1, k):
            if loss[m] < loss[best]:
                best = m
        delta_out[i] = loss[best] + acc
        best_out[i] = best
        if delta_out[i] < stop_below:
            return i + 1
    return block.shape[0]


@njit(nogil=True, cache=True, boundscheck=False)
def first_invalid(block, rows):  # pragma: no cover
    """The invalid entry (NaN, infinite or negative) of the lowest point id among the block's
    rows, as ``(point, column, value)``; ``(-1, -1, 0.0)`` when every entry is valid."""
    best_pt, best_col, best_val = -1, -1, 0.0
    for i in range(block.shape[0]):
        p = rows[i]
        if best_pt != -1 and p > best_pt:
            continue
        for j in range(block.shape[1]):
            d = np.float64(block[i, j])
            if not (d >= 0.0 and d < np.inf):  # NaN fails both comparisons
                best_pt, best_col, best_val = p, j, d
                break
    return best_pt, best_col, best_val


@njit(nogil=True, cache=True, boundscheck=False)
def nearest_two(rows, changed, n1, n2, d1, d2):  # pragma: no cover
    """Nearest and second-nearest medoid of every point from the squared medoid rows (K, n).

    Order is by (distance, medoid position), so ties go to the lower position. With
    ``changed = -1`` everything is recomputed; with ``changed = m`` only medoid m's row changed,
    and points whose nearest or second nearest was m are recomputed, the others compared with the
    new row (O(n) instead of O(K n) after a swap). Both give the same result.
    """
    k, n = rows.shape
    for o in range(n):
        if changed >= 0 and n1[o] != changed and n2[o] != changed:
            d = rows[changed, o]
            if d < d1[o] or (d == d1[o] and changed < n1[o]):
                n2[o] = n1[o]
                d2[o] = d1[o]
                n1[o] = changed
                d1[o] = d
            elif d < d2[o] or (d == d2[o] and changed < n2[o]):
                n2[o] = changed
                d2[o] = d
            continue
        a, b = -1, -1
        da, db = np.inf, np.inf
        for m in range(k):
            d = rows[m, o]
            if a == -1 or d < da:
                b, db = a, da
                a, da = m, d
            elif b == -1 or d < db:
                b, db = m, d
        n1[o] = a
        d1[o] = da
        n2[o] = b
        d2[o] = db


@njit(nogil=True, cache=True, boundscheck=False)
def lane_groups(indptr, indices, weights, seed_order, group, max_touched):  # pragma: no cover
    """A row order made of groups of ``group`` nearby points, for :func:`multi_source_rows`.

    Nodes are visited in ``seed_order``; each one not yet placed starts a group, filled with the
    nearest unplaced nodes by path length (a small Dijkstra that touches at most ``max_touched``
    nodes; a group may stay smaller). The closer a kernel call's sources are, the more of their
    search they share.
    """
    n = indptr.size - 1
    placed = np.zeros(n, np.bool_)
    settled = np.zeros(n, np.bool_)
    dist = np.full(n, np.inf)
    touched = np.empty(max_touched, np.int64)
    out = np.empty(n, np.int64)
    k = 0
    for s in seed_order:
        if placed[s]:
            continue
        nt = 1
        touched[0] = s
        dist[s] = 0.0
        got = 0
        while got < group:
            best = -1
            bd = np.inf
            for j in range(nt):
                c = touched[j]
                if not settled[c] and dist[c] < bd:
                    bd = dist[c]
                    best = c
            if best == -1:
                break
            settled[best] = True
            if not placed[best]:
                placed[best] = True
                out[k] = best
                k += 1
                got += 1
            for e in range(indptr[best], indptr[best + 1]):
                v = indices[e]
                nd = bd + weights[e]
                if nd < dist[v]:
                    if dist[v] == np.inf:
                        if nt == max_touched:
                            continue
                        touched[nt] = v
                        nt += 1
                    dist[v] = nd
        for j in range(nt):
            dist[touched[j]] = np.inf
            settled[touched[j]] = False
    return out


_SLP_LOCK = threading.Lock()


def _vectorized(dispatcher):
    """Call a kernel compiled with LLVM's SLP vectorizer on.

    Numba leaves that pass off by default (``NUMBA_SLP_VECTORIZE=0``); the lane code of
    :func:`multi_source_rows` needs it to become vector instructions (15 % faster on AVX-512).
    It is switched on only while this kernel compiles, so other Numba code in the process is not
    affected; the results are the same either way (lane-wise IEEE add, compare and select).
    """

    def call(*args):
        sig = tuple(numba.typeof(a) for a in args)
        if sig not in dispatcher.overloads:
            with _SLP_LOCK:
                old = _numba_config.SLP_VECTORIZE
                _numba_config.SLP_VECTORIZE = 1
                try:
                    dispatcher.compile(sig)
                finally:
                    _numba_config.SLP_VECTORIZE = old
        return dispatcher(*args)

    call.__doc__ = dispatcher.__doc__
    call.__name__ = dispatcher.__name__
    call.dispatcher = dispatcher
    return call


multi_source_rows = _vectorized(multi_source_rows)
