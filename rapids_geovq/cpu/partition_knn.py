"""Exact k nearest neighbours of up to millions of points, in memory linear in n.

:func:`partition_knn` returns exactly what :func:`rapids_geovq.geodesic.knn.exact_knn` returns
(same indices, bit-equal float64 distances) without an n x n matrix, and without ever comparing
most pairs of points.

Method
------
1. **Partition.** The points are centred and scaled by a power of two, ``x~ = fl32(s (x - c))``
   (float32, coordinates below 1 in size). A few Lloyd iterations on a seeded sample give ``C``
   centroids ``mu``; every point is assigned to its nearest centroid (float64 products) and the
   points are stored cluster by cluster. Each cluster keeps its radius ``r_c`` (largest
   ``|x~ - mu_c|`` of a member).
2. **Search, one cluster of queries at a time.** The queries of cluster ``a`` visit their own
   cluster first, then the others in order of centroid distance. Query ``q`` skips cluster ``c``
   when a lower bound on ``|q~ - x~|`` over the members of ``c`` exceeds its *reach*, the largest
   ``|q~ - x~|`` of a point that could still enter its list. The bound is the larger of the ball
   bound ``|q~ - mu_c| - r_c`` and the Voronoi (hyperplane) bound
   ``(|q~ - mu_c|^2 - |q~ - mu_a|^2) / (2 |mu_c - mu_a|)``, which holds because every member of
   ``c`` is at least as close to ``mu_c`` as to ``mu_a``. Skipping is decided per query: on 20-D VAE
   latents 35-60 % of the pairs are visited (for the queries of one cluster taken together nearly
   every cluster is needed by some query, so block-level pruning would save nothing).
3. **Candidates by a float32 matrix product.** For the queries that need cluster ``c``, BLAS
   computes ``-2 q~.x~`` (the operands stored coordinates-first, in row chunks small enough for
   OpenBLAS's small-matrix kernels); ``|x~|^2`` is added and the entry kept if it is at most the
   query's threshold ``T``. Only kept entries get an exact distance.
4. **Exact distances and order.** A candidate's distance is computed as the reference does:
   float64 differences of the original coordinates, squares added one coordinate at a time in
   order, then ``sqrt`` (see :func:`rapids_geovq.common.arrays.squared_norms`). It enters the
   query's list when ``(distance, index)`` is lexicographically smaller than the list's k-th
   entry, so ties go to the lower index, at the k-th place too. A point is never its own
   neighbour; its exact duplicates are.

Why the result is exact
-----------------------
Nothing is approximated except the two filters, and both discard only points whose reference
distance is *strictly larger* than the query's current k-th distance ``D_k``. ``D_k`` only
decreases during the search, so a discarded point could never have entered the final list, not
even as a tie with a lower index. With ``u32 = 2^-24``, ``u64 = 2^-53``:

* The reach is ``a = s D_k (1 + rel) + delta``: ``rel = 2 (d + 3) u64`` is twice the relative
  error bound of the reference's own distance, and ``delta = 2 sqrt(d) ((u32 + 4 u64) max|x~_j| +
  2^-149)`` bounds how much rounding the centred, scaled coordinates to float32 moves a distance.
  A point with reference distance ``<= D_k`` therefore has ``|q~ - x~| <= a``.
* The float32 filter keeps every entry with ``v <= T``, where ``v`` is the computed
  ``|x~|^2 - 2 q~.x~`` and ``T = a^2 + gamma32 (|q~| + R_c)^2 - |q~|^2``, rounded up to float32.
  ``gamma32 = 2 (d + 4) u32`` bounds the error of the float32 dot product, of the stored
  ``|x~|^2`` and of the addition, relative to ``(|q~| + |x~|)^2``, in any summation order (BLAS
  may reorder and fuse); ``R_c`` bounds ``|x~|`` over the cluster; ``|q~|^2`` is rounded down and
  ``|q~|`` up.
* The cluster bounds are evaluated in float64 from a BLAS product ``q~.mu``, with its error bound
  ``gamma64 (|q~| + |mu|)^2``, ``gamma64 = (2 d + 10) u64``, subtracted; the hyperplane numerator
  also loses the assignment's possible error ``2 gamma64 (2 R)^2``; radii and centroid distances
  are rounded up; and a cluster is skipped only if its bound exceeds the reach by a further
  ``1e-12 R`` (``R`` bounds every ``|x~|`` and ``|mu|``).

The tests check equality with the reference on random, clustered, duplicated and lattice
(tied) points, at extreme offsets and scales, and for k = n - 1.

Cost
----
Memory is O(n d): the points in float64 and float32 in cluster order and the (n, k) results,
plus per-thread scratch of O(C x largest cluster); at n = 10^6, d = 20, k = 10 the peak is about
1 GiB. Time is dominated by the float32 products over the visited pairs (about 0.4 ns per pair on
one core of the machine in ``benchmarks/million_latents.py``) and the pass over their results.
Threads (``n_jobs``) take clusters of queries from a queue; each query's list depends on its own
search only, so the result does not depend on ``n_jobs`` or on the partition.
"""
from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["partition_knn", "KnnStats", "default_n_clusters"]


@dataclass(frozen=True)
class KnnStats:
    """What :func:`partition_knn` did (``return_stats=True``).

    Attributes
    ----------
    n_clusters : int
        Clusters of the partition (non-empty ones).
    pair_fraction : float
        (query, point) pairs that went through the float32 product, as a fraction of all n^2.
    exact_per_query : float
        Mean number of exact float64 distances per query (candidates that passed the filter).
    seconds_partition, seconds_search : float
        Wall time of the partition (k-means, assignment, layout) and of the search.
    """

    n_clusters: int
    pair_fraction: float
    exact_per_query: float
    seconds_partition: float
    seconds_search: float


def default_n_clusters(n: int) -> int:
    """Clusters used when ``n_clusters`` is not given: ``sqrt(n)`` up to 250,000 points, rising to
    ``2 sqrt(n)`` at a million and beyond; at most ``n / 16``.

    More clusters give tighter bounds (fewer pairs) but smaller matrix products, more bound
    evaluations (``n C`` in all) and a k-means that costs ``O(C^2)``. On 20-D VAE latents (2 cores)
    the fastest were about 250 clusters at 60,000 points (120 to 350 all within 10 %), 500 at
    250,000 (350 to 700 within 3 %) and 2,000 at 1,000,000 (1,000: +6 %, 2,800: +11 %).
    """
    grow = min(2.0, max(1.0, math.sqrt(n / 250_000)))
    return int(max(1, min(round(grow * math.sqrt(n)), n // 16)))


def partition_knn(Z, k: int, *, n_clusters: int | None = None, n_jobs: int | None = None,
                  kmeans_iter: int = 8, kmeans_sample: int | None = None, seed: int = 0,
                  progress: bool = False, return_stats: bool = False):
    """Exact Euclidean k nearest neighbours of every point among the others.

    Same result as :func:`rapids_geovq.geodesic.knn.exact_knn(Z, k) <rapids_geovq.geodesic.knn.exact_knn>`:
    each point is excluded from its own neighbours (its exact duplicates are not), neighbours
    are ordered by (distance, index) with ties to the lower index (at the k-th place too), and
    distances are the float64 values the reference computes, bit for bit. See the module
    docstring for the method and why it is exact.

    Parameters
    ----------
    Z : array of shape (n, d)
        Points, finite; any real dtype (float32 latents are used as they are, converted to
        float64 exactly).
    k : int
        Neighbours per point, ``1 <= k <= n - 1``.
    n_clusters : int, optional
        Clusters of the partition; default :func:`default_n_clusters`. Only speed depends on it.
    n_jobs : int, optional
        Threads; default: the CPUs this process may run on.
    kmeans_iter : int, default=8
        Lloyd iterations for the centroids (only speed depends on their quality).
    kmeans_sample : int, optional
        Points the centroids are fitted on; default ``min(n, 64 * n_clusters)``.
    seed : int, default=0
        Seed of the k-means sample and initial centroids (does not change the result).
    progress : bool, default=False
        Show a progress bar of queries done (tqdm, on stderr).
    return_stats : bool, default=False
        Also return a :class:`KnnStats`.

    Returns
    -------
    distances : float64 array of shape (n, k)
        Ascending per row.
    indices : int64 array of shape (n, k)
    stats : KnnStats
        Only when ``return_stats``.

    Raises
    ------
    ValueError
        Non-2-D, non-real or non-finite points, fewer than two points, or ``k`` outside
        ``1 .. n - 1`` (the message says which and what to use).
    """
    # Loaded before threadpool_limits so that the limit reaches it: the kernel's matrix products
    # go to SciPy's BLAS, and an unlimited BLAS starts its own threads under each worker thread.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    from ..common.exact_knn import check_k, check_latents

    t0 = time.perf_counter()
    Z64 = np.ascontiguousarray(check_latents(Z))  # float64; no copy when Z already is
    n, d = Z64.shape
    check_k(k, n)
    if d == 0:
        raise ValueError("points have 0 coordinates; every distance is 0 and neighbours are "
                         "undefined beyond index order: give at least one coordinate")
    C = default_n_clusters(n) if n_clusters is None else int(n_clusters)
    if not 1 <= C <= n:
        raise ValueError(f"n_clusters={n_clusters} must lie in 1..{n} (the number of points)")
    if kmeans_iter < 0:
        raise ValueError(f"kmeans_iter must be >= 0, got {kmeans_iter}")
    n_jobs = _resolve_jobs(n_jobs)

    # One BLAS thread per worker thread: the parallelism is over clusters of queries, and nested
    # BLAS threads on top would only oversubscribe the cores.
    with threadpool_limits(limits=1, user_api="blas"):
        part = _partition(Z64, C, n_jobs=n_jobs, iters=kmeans_iter, sample=kmeans_sample, seed=seed)
        del Z64  # the search reads the sorted copy
        t1 = time.perf_counter()
        dist = np.empty((n, k), np.float64)
        ind = np.empty((n, k), np.int64)
        counters = np.zeros((part.C, 2), np.int64)  # per block: pairs through the product, exact distances
        # largest blocks first, so that the threads finish at about the same time
        order = np.argsort(-np.diff(part.starts), kind="stable")
        bar = _progress_bar(n, progress)
        lock = threading.Lock()
        local = threading.local()
        sizes = np.diff(part.starts)
        mmax, C_, d_ = int(sizes.max()), part.C, part.Z64s.shape[1]

        def run(a: int) -> None:
            # Scratch for the largest block, once per thread: fresh large arrays for every block
            # would be fresh pages that the kernel zeroes first.
            if not hasattr(local, "G"):
                local.G = np.empty(C_ * mmax)
                local.V = np.empty(mmax * mmax, np.float32)
                local.QT = np.empty(d_ * mmax, np.float32)
            _search_block(a, k, part.starts, part.XT, part.nx32, part.Z64s, part.perm, part.cent,
                          part.radius, part.R, part.scale, part.delta, part.rel, part.underflow,
                          part.gamma32, part.gamma64, part.assign_slack, part.tol, dist, ind, counters,
                          local.G, local.V, local.QT)
            if bar is not None:
                with lock:
                    bar.update(int(part.starts[a + 1] - part.starts[a]))

        try:
            if n_jobs == 1:
                for a in order:
                    run(int(a))
            else:
                with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                    for f in [pool.submit(run, int(a)) for a in order]:
                        f.result()
        finally:
            if bar is not None:
                bar.close()
    t2 = time.perf_counter()
    if not return_stats:
        return dist, ind
    stats = KnnStats(n_clusters=part.C, pair_fraction=float(counters[:, 0].sum()) / (float(n) * n),
                     exact_per_query=float(counters[:, 1].sum()) / n,
                     seconds_partition=t1 - t0, seconds_search=t2 - t1)
    return dist, ind, stats


def _resolve_jobs(n_jobs) -> int:
    if n_jobs is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    if int(n_jobs) != n_jobs or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive integer or None (all CPUs), got {n_jobs!r}")
    return int(n_jobs)


def _progress_bar(n: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=n, unit="pt", unit_scale=True, desc="kNN", mininterval=2.0)


# --------------------------------------------------------------------------- partition
@dataclass
class _Partition:
    """Points sorted by cluster, in the two forms the search reads, and the bounds' constants.

    ``x~ = fl32(scale (x - centre))`` are the centred, scaled float32 coordinates: the cluster
    bounds and the float32 filter work on them; ``Z64s`` (original values) gives exact distances.
    """

    C: int
    starts: np.ndarray  # (C + 1,) int64: cluster c holds sorted positions starts[c] .. starts[c+1]-1
    perm: np.ndarray  # (n,) int64: original index of each sorted position
    Z64s: np.ndarray  # (n, d) float64 original points, sorted
    XT: np.ndarray  # (n d,) float32 x~, sorted; cluster c is a (d, size) block from d starts[c]
    nx32: np.ndarray  # (n,) float32 |x~|^2
    cent: np.ndarray  # (C, d) float64 centroids in x~ space (float32 values)
    radius: np.ndarray  # (C,) float64 max |x~ - mu~| over the cluster, rounded up
    R: float  # bound on |x~| and |mu~|
    scale: float
    delta: float
    rel: float
    underflow: float
    gamma32: float
    gamma64: float
    assign_slack: float
    tol: float


def _partition(Z64: np.ndarray, C: int, *, n_jobs: int, iters: int, sample: int | None,
               seed: int) -> _Partition:
    n, d = Z64.shape
    u32, u64 = 2.0 ** -24, 2.0 ** -53
    # Centred, scaled by a power of two so that every coordinate is below 1 in size: float32
    # neither overflows nor loses small coordinates to underflow, whatever the data's units.
    centre = Z64.mean(axis=0)
    amax = 0.0
    for s in range(0, n, 65536):
        amax = max(amax, float(np.max(np.abs(Z64[s:s + 65536] - centre))))
    if amax > 1e150:
        raise ValueError(f"coordinates differ from their mean by up to {amax:.3g}: squared distances "
                         "overflow float64 beyond 1e154; rescale the points (distances scale with them)")
    # (the exponent is capped so that the scale stays a finite power of two for subnormal data)
    scale = 2.0 ** min(1000, -math.ceil(math.log2(amax))) if amax > 0 else 1.0
    Xu = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):
        Xu[s:s + 65536] = (Z64[s:s + 65536] - centre) * scale

    with _blas_threads(n_jobs):
        cent = _kmeans(Xu, C, iters=iters, sample=sample, seed=seed)
    lab = _assign(Xu, cent, n_jobs)
    counts = np.bincount(lab, minlength=C)
    keep = np.flatnonzero(counts)
    if keep.size < C:  # empty clusters hold nothing and bound nothing: drop them
        remap = np.full(C, -1, np.int64)
        remap[keep] = np.arange(keep.size)
        lab, cent, counts = remap[lab], cent[keep], counts[keep]
        C = keep.size
    perm = np.argsort(lab, kind="stable").astype(np.int64)
    del lab
    starts = np.zeros(C + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    X32 = Xu[perm]
    del Xu
    Z64s = Z64[perm]

    # Radii and norms from exact float64 differences of float32 values (relative error
    # ~ d 2^-53), rounded up generously.
    radius = np.zeros(C)
    nx32 = np.empty(n, np.float32)
    R = float(np.sqrt(np.einsum("ij,ij->i", cent, cent).max()))
    slab = np.repeat(np.arange(C), counts)
    for s in range(0, n, 65536):
        x = X32[s:s + 65536].astype(np.float64)
        diff = x - cent[slab[s:s + 65536]]
        _group_max(radius, slab[s:s + 65536], np.sqrt(np.einsum("ij,ij->i", diff, diff)))
        sq = np.einsum("ij,ij->i", x, x)
        nx32[s:s + 65536] = sq
        R = max(R, float(np.sqrt(sq.max())))
    radius *= 1 + 1e-12
    R *= 1 + 1e-12
    # Each cluster as one contiguous (d, size) block, coordinates first: the layout in which
    # BLAS multiplies small matrices fastest (its packing of the operands is cheapest).
    XT = np.empty(n * d, np.float32)
    for c in range(C):
        a, b = starts[c], starts[c + 1]
        XT[a * d:b * d].reshape(d, b - a)[...] = X32[a:b].T
    del X32

    # per coordinate of x~: float64 centring (2 u64 relative), float32 rounding (u32), subnormals
    delta = 2 * math.sqrt(d) * ((u32 + 4 * u64) * amax * scale + 2.0 ** -149)
    # twice the relative error bound of the reference's distance (d squares, d - 1 additions, sqrt)
    rel = 2 * (d + 3) * u64
    underflow = 2 * math.sqrt(d) * 2.0 ** -537  # sqrt(d 2^-1074), doubled
    gamma32 = 2 * (d + 4) * u32
    gamma64 = (2 * d + 10) * u64
    # the float64 nearest-centroid assignment: a member may be closer to another centroid by at
    # most the two products' error bounds (squared distances)
    assign_slack = 2 * gamma64 * (2 * R) ** 2
    tol = 1e-12 * R + 1e-300
    return _Partition(C=C, starts=starts, perm=perm, Z64s=Z64s, XT=XT, nx32=nx32,
                      cent=np.ascontiguousarray(cent), radius=radius, R=R, scale=scale, delta=delta,
                      rel=rel, underflow=underflow, gamma32=gamma32, gamma64=gamma64,
                      assign_slack=assign_slack, tol=tol)


class _blas_threads:
    """Context: NumPy's BLAS may use ``n`` threads (for the k-means products)."""

    def __init__(self, n: int) -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=n, user_api="blas")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._limits.restore_original_limits()


def _kmeans(X: np.ndarray, C: int, *, iters: int, sample: int | None, seed: int) -> np.ndarray:
    """Centroids (C, d), float32 values held as float64, from a few Lloyd iterations (float32
    products) on a seeded sample. Only the search's speed depends on them."""
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    m = min(n, 64 * C if sample is None else max(int(sample), C))
    S = X[np.sort(rng.choice(n, m, replace=False))] if m < n else X
    cent = S[rng.choice(S.shape[0], C, replace=False)].copy()
    for _ in range(iters):
        lab = np.empty(S.shape[0], np.int64)
        cn = np.einsum("ij,ij->i", cent, cent)
        for s in range(0, S.shape[0], 8192):
            g = S[s:s + 8192] @ cent.T
            g *= -2
            g += cn
            lab[s:s + 8192] = np.argmin(g, axis=1)
        counts = np.bincount(lab, minlength=C)
        full = counts > 0
        for j in range(X.shape[1]):
            sums = np.bincount(lab, weights=S[:, j], minlength=C)
            # an empty cluster keeps its centroid; it gets no members and is dropped later
            cent[full, j] = sums[full] / counts[full]
    return cent.astype(np.float64)


def _assign(X: np.ndarray, cent: np.ndarray, n_jobs: int) -> np.ndarray:
    """Nearest centroid of every point, by float64 products (error bounded by ``assign_slack``)."""
    n = X.shape[0]
    cn = np.einsum("ij,ij->i", cent, cent)
    lab = np.empty(n, np.int64)

    def rows(lo: int, hi: int) -> None:
        for s in range(lo, hi, 8192):
            e = min(hi, s + 8192)
            g = X[s:e].astype(np.float64) @ cent.T
            g *= -2
            g += cn  # |x|^2 is the same for every centroid
            lab[s:e] = np.argmin(g, axis=1)

    bounds = np.linspace(0, n, n_jobs + 1).astype(np.int64)
    if n_jobs == 1 or n < 65536:
        rows(0, n)
    else:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            list(pool.map(lambda i: rows(bounds[i], bounds[i + 1]), range(n_jobs)))
    return lab


def _group_max(out: np.ndarray, groups: np.ndarray, values: np.ndarray) -> None:
    """out[g] = max(out[g], largest value of group g); ``groups`` sorted ascending."""
    if values.size == 0:
        return
    firsts = np.concatenate([[0], np.flatnonzero(np.diff(groups)) + 1])
    g = groups[firsts]
    out[g] = np.maximum(out[g], np.maximum.reduceat(values, firsts))


# --------------------------------------------------------------------------- search kernel
#: Largest rows x columns x depth of one float32 product (speed only: OpenBLAS multiplies matrices
#: up to this size with kernels that skip packing and zeroing the output, 20 % faster here).
SMALL_GEMM = 1_000_000


@njit(nogil=True, cache=True)
def _exact_dist(Z, p, q):
    """Reference distance: float64 differences, squares added in coordinate order, sqrt."""
    t = Z[q, 0] - Z[p, 0]
    s = t * t
    for j in range(1, Z.shape[1]):
        t = Z[q, j] - Z[p, j]
        s = s + t * t
    return math.sqrt(s)


@njit(nogil=True, cache=True)
def _reach(dk, scale, rel, underflow, delta):
    """Largest |q~ - x~| of a point whose reference distance may be <= dk (inf while the list
    is not full)."""
    if dk == np.inf:
        return np.inf
    # rel: the reference's rounding; underflow: what its squares can lose below 2^-1022 (at most
    # d 2^-1074 in all); delta: the float32 coordinates' rounding
    return (dk * (1.0 + rel) + underflow) * scale + delta


@njit(nogil=True, cache=True)
def _threshold32(a, gamma32, qn_lo, qabs_up, Rc):
    """Largest float32 value of ``|x~|^2 - 2 q~.x~`` (as computed) of a point within ``a`` of
    q~, rounded up (see the module docstring)."""
    if a == np.inf:
        return np.float32(np.inf)
    b = qabs_up + Rc
    T = a * a + gamma32 * b * b - qn_lo
    T = T + abs(T) * 1e-6 + 1e-37  # covers the float64 steps and the float32 rounding (6e-8)
    return np.float32(T)


@njit(nogil=True, cache=True)
def _search_block(a, k, starts, XT, nx32, Z64s, perm, cent, radius, R, scale, delta, rel,
                  underflow, gamma32, gamma64, assign_slack, tol, out_dist, out_ind, counters,
                  Gbuf, Vbuf, QTbuf):
    """Neighbours of the queries of cluster ``a`` (sorted positions ``starts[a] ..``).

    ``Gbuf`` (>= C m float64), ``Vbuf`` (>= m max-cluster-size float32) and ``QTbuf``
    (>= d m float32) are scratch space.
    """
    p0 = starts[a]
    m = starts[a + 1] - p0
    C = cent.shape[0]
    d = Z64s.shape[1]
    if m == 0:
        return
    up = 1.0 + 4.0 * (d + 2) * 2.0 ** -53
    Xa = XT[p0 * d:(p0 + m) * d].reshape((d, m))  # this cluster's x~, coordinates first
    Q = np.empty((m, d))
    for j in range(d):
        for i in range(m):
            Q[i, j] = Xa[j, i]
    # q~.mu~ for all centroids by BLAS, (C, m) so that one cluster's row is contiguous
    Gt = Gbuf[:C * m].reshape((C, m))
    np.dot(cent, Q.T, Gt)
    qn = np.empty(m)
    qabs = np.empty(m)
    for i in range(m):
        s = 0.0
        for j in range(d):
            s += Q[i, j] * Q[i, j]
        qn[i] = s
        qabs[i] = math.sqrt(s) * up
    cn = np.empty(C)
    cabs = np.empty(C)
    La = np.empty(C)  # |mu_c - mu_a|, rounded up: the hyperplane bounds' denominators
    for c in range(C):
        s = 0.0
        t2 = 0.0
        for j in range(d):
            s += cent[c, j] * cent[c, j]
            t = cent[c, j] - cent[a, j]
            t2 += t * t
        cn[c] = s
        cabs[c] = math.sqrt(s) * up
        La[c] = math.sqrt(t2) * up
    order = np.argsort(La)
    ga_up = np.empty(m)  # |q~ - mu~_a|^2, rounded up
    qn_lo = np.empty(m)
    for i in range(m):
        ga_up[i] = qn[i] + cn[a] - 2.0 * Gt[a, i] + gamma64 * (qabs[i] + cabs[a]) ** 2
        qn_lo[i] = qn[i] * (2.0 - up)

    topd = np.full((m, k), np.inf)
    topi = np.full((m, k), np.int64(perm.shape[0]))
    reach = np.full(m, np.inf)  # per query: |q~ - x~| beyond which a point cannot enter
    lb = np.empty(m)
    sel = np.empty(m, np.int64)
    pairs = 0
    exact = 0

    for oi in range(C + 1):
        # own cluster first, then the others by centroid distance
        if oi == 0:
            c = a
        else:
            c = order[oi - 1]
            if c == a:
                continue
        pc0 = starts[c]
        mc = starts[c + 1] - pc0
        if c == a:
            for i in range(m):
                sel[i] = i
            ns = m
        else:
            # lower bound on |q~ - x~| over the members of c (ball and hyperplane), branch-free
            # so that it vectorises; then the queries whose reach it does not exceed
            g_row = Gt[c]
            cnc, cac, rc, L = cn[c], cabs[c], radius[c], La[c]
            inv2L = 0.5 / L if L > 0.0 else 0.0
            for i in range(m):
                glo = qn[i] + cnc - 2.0 * g_row[i] - gamma64 * (qabs[i] + cac) * (qabs[i] + cac)
                ball = math.sqrt(glo if glo > 0.0 else 0.0) - rc
                hyper = (glo - ga_up[i] - assign_slack) * inv2L
                lb[i] = (ball if ball > hyper else hyper) - tol
            ns = 0
            for i in range(m):
                if not lb[i] > reach[i]:
                    sel[ns] = i
                    ns += 1
        if ns == 0:
            continue
        # V = -2 q~.x~ for the selected queries, by BLAS, in chunks of rows small enough for
        # OpenBLAS's small-matrix kernels (rows x mc x d <= 1e6), which neither pack the operands
        # nor zero the output first; the queries go in as -2 q~ (exact in float32), coordinates
        # first.
        Xc = XT[pc0 * d:(pc0 + mc) * d].reshape((d, mc))
        step = max(8, SMALL_GEMM // (mc * d))
        for r0 in range(0, ns, step):
            r1 = min(ns, r0 + step)
            QT = QTbuf[d * r0:d * r1].reshape((d, r1 - r0))
            for j in range(d):
                for s in range(r0, r1):
                    QT[j, s - r0] = -2.0 * Xa[j, sel[s]]
            np.dot(QT.T, Xc, Vbuf[r0 * mc:r1 * mc].reshape((r1 - r0, mc)))
        pairs += ns * mc
        nxc = nx32[pc0:pc0 + mc]
        Rc = min(cabs[c] + radius[c], R)  # bounds |x~| over the members of c
        for s in range(ns):
            i = sel[s]
            T = _threshold32(reach[i], gamma32, qn_lo[i], qabs[i], Rc)
            # how many entries of the row pass: one flat loop that vectorises (most rows: none)
            base = s * mc
            cnt = 0
            for j in range(mc):
                cnt += Vbuf[base + j] + nxc[j] <= T
            if cnt == 0:
                continue
            for j in range(mc):
                if Vbuf[base + j] + nxc[j] <= T:
                    p = pc0 + j
                    if p == p0 + i:
                        continue  # the query itself (its duplicates stay)
                    dist = _exact_dist(Z64s, p, p0 + i)
                    exact += 1
                    idx = perm[p]
                    if dist < topd[i, k - 1] or (dist == topd[i, k - 1] and idx < topi[i, k - 1]):
                        t = k - 1
                        while t > 0 and (dist < topd[i, t - 1]
                                         or (dist == topd[i, t - 1] and idx < topi[i, t - 1])):
                            topd[i, t] = topd[i, t - 1]
                            topi[i, t] = topi[i, t - 1]
                            t -= 1
                        topd[i, t] = dist
                        topi[i, t] = idx
                        reach[i] = _reach(topd[i, k - 1], scale, rel, underflow, delta)
                        T = _threshold32(reach[i], gamma32, qn_lo[i], qabs[i], Rc)
    for i in range(m):
        o = perm[p0 + i]
        for t in range(k):
            out_dist[o, t] = topd[i, t]
            out_ind[o, t] = topi[i, t]
    counters[a, 0] = pairs
    counters[a, 1] = exact
