"""Geodesic k-means: k-medoids on squared geodesic distances.

Centres are data points (medoids), the cost is the sum of squared geodesic distances from each
point to its medoid. The fit runs, per restart:

1. greedy k-means++ seeding on squared geodesic distances;
2. alternating (Voronoi) iterations: assign each point to its nearest medoid, then move each medoid
   to the member with the least sum of squared distances to its cluster, until the medoids stop
   changing;
3. optionally, eager swap refinement in the manner of FasterPAM (Schubert & Rousseeuw, 2021):
   candidates are scanned in the matrix's row order and the first one whose best (medoid,
   candidate) swap lowers the cost is swapped in at once, until a whole pass over the points
   improves nothing. Step 2 alone can stop in a poor local optimum; a swap-optimal solution is
   also Voronoi-stable.

The matrix stays where it is: row shards on an engine (threads in this process, or Dask workers,
see :mod:`rapids_geovq.geodesic.engine`). The driver holds only per-point arrays and the K medoid
rows; it sends labels or the swap state to the shards and gets back per-row sums (the compiled
kernels of :mod:`rapids_geovq.cpu.kernels`). Blocks of swap candidates are evaluated ahead
on all workers (one without the shard memory-maps its file) against the current medoids and used
in scan order; after a swap the evaluations
made against the old medoids are dropped, so the swaps made are exactly those of a one-candidate-
at-a-time scan, whatever the number of workers. Each row's result depends only on that row, and
the driver's sums run over points in a fixed order, so medoids, labels and inertia are identical
with any number of workers, with or without a cluster.

Rows are used as distances *from* a point, so the matrix must be symmetric, as geodesic distances
on an undirected graph are.
"""
from __future__ import annotations

import logging
from collections import deque

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from .execution import Execution
from .shards import as_rows

log = logging.getLogger(__name__)


def _check_random_state(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


# --- tasks run where a shard is held: the handle carries the kernels that read its block -----

def _medoid_cost_task(handle, args, check_cols=None):
    """Per-row cluster costs; with ``check_cols`` (the medoids, on the first pass of a fit) also the
    shard's first invalid entry and its entries in those columns, for the driver's checks."""
    cost = handle.kernels.medoid_costs(handle.block, handle.rows, args)
    if check_cols is None:
        return cost, None, None
    return (cost, handle.kernels.first_invalid(handle.block, handle.rows),
            handle.kernels.columns(handle.block, check_cols))


def _swap_task(handle, lo: int, hi: int, state, stop_below: float):
    """Swap gains of candidate rows lo:hi, evaluated up to the first improving one, whose
    distance row comes back with them (the driver needs it as the new medoid's row, and would
    otherwise ask for it in another round trip)."""
    delta, best = handle.kernels.swap_gains(handle.block, handle.rows, lo, hi, state, stop_below)
    hits = np.flatnonzero(delta < stop_below)
    hit_row = np.array(handle.data[lo + int(hits[0])], dtype=np.float32) if hits.size else None
    return delta, best, hit_row


class GeodesicKMeans(BaseEstimator, ClusterMixin):
    """k-medoids clustering on a precomputed geodesic distance matrix, squared-distance cost.

    Parameters
    ----------
    n_clusters : int, default=64
        Number of medoids (codebook size).
    n_init : int, default=3
        Restarts from different k-means++ seeds; the lowest inertia is kept.
    max_iter : int, default=100
        Cap on alternating iterations per restart.
    swap : bool, default=True
        Refine each restart with eager FasterPAM-style swaps after the alternating phase.
    max_swap_passes : int, default=20
        Cap on full passes over the candidates in the swap phase.
    random_state : int, numpy Generator or None
        Seed for the k-means++ draws.
    execution : Execution, optional
        Where the matrix's shards are and the work runs (engine, workers, backend, swap block
        size, progress bar; see :class:`rapids_geovq.geodesic.execution.Execution`). Results do
        not depend on it. Default: threads in this process, on the NumPy backend.

    Attributes
    ----------
    medoid_indices_ : int64 ndarray of shape (n_clusters,)
        Row indices of the medoids, in cluster order.
    labels_ : int64 ndarray of shape (n,)
        Cluster of each point (index into ``medoid_indices_``).
    inertia_ : float
        Sum over points of the squared geodesic distance to their medoid.
    n_iter_ : int
        Alternating iterations of the best restart.
    n_swaps_ : int
        Swaps applied in the best restart.
    """

    def __init__(self, n_clusters: int = 64, *, n_init: int = 3, max_iter: int = 100, swap: bool = True,
                 max_swap_passes: int = 20, random_state=None, execution: Execution | None = None):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.swap = swap
        self.max_swap_passes = max_swap_passes
        self.random_state = random_state
        self.execution = execution

    # -- public -----------------------------------------------------------------------------

    def fit(self, D, y=None) -> "GeodesicKMeans":
        """Cluster the points of a square, symmetric geodesic distance matrix.

        Parameters
        ----------
        D : array of shape (n, n), ``DenseRows``, ``ShardFiles`` (shards on disk) or ``HeldShards``
            Geodesic distances, finite, non-negative and symmetric. The swap scan follows the
            matrix's row order (``order`` attribute; 0..n-1 for an array). Every entry is checked
            in the fit's first pass over the rows (the first bad row is named), and so is the
            symmetry D[p, m] = D[m, p] for every point p and the first medoids m: a matrix that
            fails is refused (a ValueError saying how to fix it) rather than clustered.
        y : ignored

        Returns
        -------
        self
        """
        from tqdm.auto import tqdm

        from .engine import hold_matrix

        if not hasattr(D, "take_rows"):
            D = np.asarray(D)
        shape = tuple(D.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"D must be a square distance matrix, got shape {shape}")
        ex = self.execution or Execution(backend="numpy")
        with ex.open_engine() as engine:
            self._block_rows = ex.swap_block_rows(engine)
            R = hold_matrix(engine, D, kernels=ex.shard_kernels())
            n = self._validate(R)
            rng = _check_random_state(self.random_state)
            best = None
            for run in tqdm(range(self.n_init), desc="geodesic k-means", unit="init", disable=not ex.progress):
                medoids = self._kmeanspp(R, n, rng)
                # the first restart's first pass over the shards also validates all of D
                medoids, rows, n_iter = self._alternate(R, medoids, check=run == 0)
                n_swaps = 0
                if self.swap:
                    medoids, rows, n_swaps = self._swap(R, medoids, rows)
                labels, d1 = self._assign(rows, medoids)
                inertia = float(np.sum(d1))
                log.info("k-means restart %d: inertia %.6g after %d iterations and %d swaps",
                         run, inertia, n_iter, n_swaps)
                if best is None or inertia < best[0]:
                    best = (inertia, medoids, labels, n_iter, n_swaps)
        self.inertia_, self.medoid_indices_, self.labels_, self.n_iter_, self.n_swaps_ = best
        return self

    def fit_predict(self, D, y=None) -> np.ndarray:
        """Fit and return ``labels_``."""
        return self.fit(D).labels_

    # -- steps ------------------------------------------------------------------------------

    def _validate(self, R) -> int:
        n, m = R.shape
        if n != m:
            raise ValueError(f"D must be a square distance matrix, got shape {R.shape}")
        k = self.n_clusters
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {k!r}")
        if k > n:
            raise ValueError(
                f"n_clusters={k} is more than the {n} points to cluster; use n_clusters <= {n} "
                "(or cluster more latents)"
            )
        if self.n_init < 1 or self.max_iter < 1 or self._block_rows < 1:
            raise ValueError("n_init, max_iter and block_rows must be >= 1")
        return n

    @staticmethod
    def _invalid(point: int, col: int, value: float) -> ValueError:
        what = "negative" if value < 0 else ("NaN" if np.isnan(value) else "infinite")
        return ValueError(
            f"D contains NaN or infinite or negative distances: D[{point}, {col}] is {what} ({value}), and row "
            f"{point} is the first bad row. Geodesic distances must be finite and non-negative; a disconnected "
            "graph gives infinite ones and NaN latents NaN: rebuild the graph with "
            "knn_graph(..., disconnected='repair') from finite latents")

    def _check_rows(self, rows: np.ndarray, ids) -> None:
        """Rows taken whole (seeding, medoid rows) are checked as they arrive."""
        bad = ~((rows >= 0) & (rows < np.inf))
        if bad.any():
            i = int(np.argmax(bad.any(axis=1)))
            j = int(np.argmax(bad[i]))
            raise self._invalid(int(np.asarray(ids)[i]), j, float(rows[i, j]))

    def _check_symmetric(self, medoids: np.ndarray, medoid_rows: np.ndarray, shard_rows, shard_cols) -> None:
        """D[p, m] must equal D[m, p] (up to float32 rounding of sums taken in opposite orders) for
        every point p and medoid m: rows are read as distances *from* a point."""
        scale = float(np.max(medoid_rows)) if medoid_rows.size else 0.0
        for rows, cols in zip(shard_rows, shard_cols):
            want = medoid_rows[:, rows].T  # D[m, p] for p in this shard
            off = ~np.isclose(cols, want, rtol=1e-5, atol=1e-6 * scale)
            if off.any():
                i, c = np.unravel_index(int(np.argmax(off)), off.shape)
                p, m = int(rows[i]), int(medoids[c])
                raise ValueError(
                    f"D is not symmetric: D[{p}, {m}] = {cols[i, c]:.6g} but D[{m}, {p}] = {want[i, c]:.6g}. "
                    "Geodesic k-means reads rows as distances from a point, so D must be symmetric, as "
                    "shortest paths on an undirected graph are. A directed kNN graph (scikit-learn's "
                    "kneighbors_graph) gives this: build the graph with rapids_geovq.knn_graph, or pass it "
                    "to geodesic_matrix, which symmetrises it")

    def _kmeanspp(self, R, n: int, rng: np.random.Generator) -> np.ndarray:
        """Greedy k-means++ on squared distances (as scikit-learn's): each step draws
        ``2 + log(k)`` candidates proportional to the current cost and keeps the one that lowers
        the total cost most."""
        n_trials = 2 + int(np.log(self.n_clusters))
        medoids = [int(rng.integers(n))]
        first = R.take_rows([medoids[0]])
        self._check_rows(first, medoids)
        closest = first[0].astype(np.float64) ** 2
        for _ in range(1, self.n_clusters):
            total = closest.sum()
            if total <= 0:  # every remaining point coincides with a chosen medoid
                rest = np.setdiff1d(np.arange(n), medoids)
                pick = int(rng.choice(rest))
                medoids.append(pick)
                continue
            cum = np.cumsum(closest)
            cand = np.searchsorted(cum, rng.uniform(0.0, total, n_trials), side="right")
            cand = np.minimum(cand, n - 1)
            # rounding can land a draw on a zero-cost point (a chosen medoid or its duplicate)
            cand = np.where(closest[cand] > 0, cand, int(np.argmax(closest)))
            cand_rows = R.take_rows(cand)
            self._check_rows(cand_rows, cand)
            trial = np.minimum(closest[None, :], cand_rows.astype(np.float64) ** 2)
            best = int(np.argmin(trial.sum(axis=1)))
            medoids.append(int(cand[best]))
            closest = trial[best]
        return np.array(medoids, dtype=np.int64)

    @staticmethod
    def _assign(rows: np.ndarray, medoids: np.ndarray):
        """Nearest medoid per point (ties to the lower cluster) from the squared medoid rows. A
        medoid always belongs to its own cluster, even when it duplicates another medoid, so no
        cluster is ever empty."""
        labels = np.argmin(rows, axis=0).astype(np.int64)
        labels[medoids] = np.arange(medoids.size)
        return labels, rows[labels, np.arange(rows.shape[1])]

    def _medoid_rows(self, R, medoids, *, keep32: bool = False):
        rows32 = R.take_rows(medoids)
        self._check_rows(rows32, medoids)
        rows = rows32.astype(np.float64)
        rows *= rows
        return (rows, rows32) if keep32 else rows

    def _medoid_update(self, R, labels: np.ndarray, medoids: np.ndarray, check=None) -> np.ndarray:
        """Per cluster, the member with the least sum of squared distances to the other members
        (ties to the lowest point id). With ``check`` (the float32 medoid rows, on a fit's first
        pass) the same pass over the shards also validates every entry of D and its symmetry on
        the medoid columns."""
        k = self.n_clusters
        members = np.argsort(labels, kind="stable")
        seg_start = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))]).astype(np.int64)
        args = R.engine.scatter((labels, members, seg_start))
        cost = np.empty(R.n)
        results = R.map_shards(_medoid_cost_task, args, None if check is None else medoids)
        for rows, (shard_cost, _, _) in zip(R.rows, results):
            cost[rows] = shard_cost
        if check is not None:
            bad = [r[1] for r in results if r[1] is not None]
            if bad:
                raise self._invalid(*min(bad))
            self._check_symmetric(medoids, check, R.rows, [r[2] for r in results])
        new = medoids.copy()
        for c in range(k):
            mem = members[seg_start[c] : seg_start[c + 1]]
            if mem.size:
                new[c] = mem[np.argmin(cost[mem])]
        return new

    def _alternate(self, R, medoids: np.ndarray, *, check: bool = False):
        rows, rows32 = self._medoid_rows(R, medoids, keep32=True)
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            labels, _ = self._assign(rows, medoids)
            new = self._medoid_update(R, labels, medoids, check=rows32 if check and n_iter == 1 else None)
            changed = np.flatnonzero(new != medoids)
            log.debug("k-means iteration %d: %d medoids moved", n_iter, changed.size)
            if changed.size == 0:
                break
            rows[changed] = self._medoid_rows(R, new[changed])
            medoids = new
        return medoids, rows, n_iter

    def _swap_state(self, rows: np.ndarray, medoids: np.ndarray, near=None, changed: int = -1):
        """(is_medoid, nearest, d1, d2, removal) for the swap kernel; ``near`` holds the nearest /
        second-nearest arrays, updated in place for a change of medoid ``changed`` (-1: all)."""
        from ..cpu.kernels import nearest_two

        n = rows.shape[1]
        if near is None:
            near = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n), np.empty(n))
            changed = -1
        n1, n2, d1, d2 = near
        nearest_two(rows, changed, n1, n2, d1, d2)
        if rows.shape[0] == 1:
            d2 = np.full(n, np.inf)
        removal = np.bincount(n1, weights=d2 - d1, minlength=self.n_clusters)
        is_medoid = np.zeros(n, np.bool_)
        is_medoid[medoids] = True
        return (is_medoid, n1.copy(), d1.copy(), d2.copy(), removal), near

    def _swap(self, R, medoids: np.ndarray, rows: np.ndarray):
        """Eager FasterPAM-style swaps: the first improving candidate in scan order is swapped in.

        Blocks of candidates are evaluated ahead, on all workers, against the current medoids and
        consumed in scan order. After a swap the scan resumes just past the swapped-in candidate
        and evaluations made against the old medoids are dropped, so the swaps are those a
        one-candidate-at-a-time scan would make. It stops after a full pass with no swap.
        """
        k, n = self.n_clusters, R.n
        if k == n or k == 1:  # nothing to swap, or the alternating step is already optimal
            return medoids, rows, 0
        eng = R.engine
        medoids = medoids.copy()
        state, near = self._swap_state(rows, medoids)
        state_ref = eng.share(state)
        # A relative threshold stops float noise from swapping back and forth.
        stop_below = -1e-12 * max(float(np.sum(state[2])), 1e-300)
        depth = 2 * eng.n_workers
        workers = eng.workers()
        n_sent = 0
        n_swaps = passes = since_last = 0
        next_pos = 0
        ahead = 0  # candidates submitted but not yet consumed
        pending: deque = deque()
        while since_last < n and passes < self.max_swap_passes:
            while len(pending) < depth and since_last + ahead < n:
                shard = int(np.searchsorted(R.bounds, next_pos, side="right") - 1)
                lo = next_pos - int(R.bounds[shard])
                hi = min(lo + self._block_rows, R.rows[shard].size)
                # consecutive blocks mostly share a shard: spread them over the workers
                fut = R.submit(shard, _swap_task, lo, hi, state_ref, stop_below,
                               worker=workers[n_sent % len(workers)])
                n_sent += 1
                pending.append((next_pos, next_pos + hi - lo, fut))
                ahead += hi - lo
                next_pos = (next_pos + hi - lo) % n
            p0, p1, fut = pending.popleft()
            ahead -= p1 - p0
            delta, best, hit_row = fut.result()
            hits = np.flatnonzero(delta < stop_below)
            if hits.size:
                h = int(hits[0])
                m, x = int(best[h]), int(R.order[p0 + h])
                eng.cancel([f for _, _, f in pending])
                pending.clear()
                medoids[m] = x
                self._check_rows(hit_row[None, :], [x])
                rows[m] = hit_row.astype(np.float64) ** 2
                ahead = 0
                state, near = self._swap_state(rows, medoids, near, m)
                state_ref = eng.share(state)
                stop_below = -1e-12 * max(float(np.sum(state[2])), 1e-300)
                n_swaps += 1
                since_last = 0
                next_pos = p0 + h + 1
                if next_pos == n:
                    next_pos = 0
                    passes += 1
            else:
                since_last += p1 - p0
                if p1 == n:
                    passes += 1
                    log.debug("k-means swap pass %d: %d swaps so far, cost %.6g", passes, n_swaps,
                              float(np.sum(state[2])))
        eng.cancel([f for _, _, f in pending])
        return medoids, rows, n_swaps


def kmeans_objective(D, medoids) -> float:
    """Sum over points of the squared distance to the nearest of ``medoids`` (float64)."""
    rows = as_rows(D).take_rows(np.asarray(medoids)).astype(np.float64) ** 2
    return float(rows.min(axis=0).sum())
