"""Geodesic k-means: k-medoids on squared geodesic distances.

Centres are data points (medoids), the cost is the sum of squared geodesic distances from each
point to its medoid. The fit runs, per restart:

1. greedy k-means++ seeding on squared geodesic distances;
2. alternating (Voronoi) iterations: assign each point to its nearest medoid, then move each medoid
   to the member with the least sum of squared distances to its cluster, until the medoids stop
   changing;
3. optionally, eager swap refinement in the manner of FasterPAM (Schubert & Rousseeuw, 2021):
   candidates are scanned in the matrix's row order and the first one whose best (medoid,
   candidate) swap lowers the cost is swapped in at once, until a whole pass over the candidates
   improves nothing. Step 2 alone can stop in a poor local optimum; a swap-optimal solution is
   also Voronoi-stable.

The algorithm (:class:`KMedoidsDriver`) asks a *distance source* for what it needs: whole rows
(seeding, medoid rows), per-point cluster costs, and swap gains for blocks of candidates. Two
sources give it:

* :class:`DenseSource` (this module, :class:`GeodesicKMeans`): the whole matrix, as row shards on
  an engine (threads in this process, or Dask workers, see :mod:`rapids_geovq.geodesic.engine`).
  The driver holds only per-point arrays and the K medoid rows; it sends labels or the swap state
  to the shards and gets back per-row sums (the compiled kernels of :mod:`rapids_geovq.cpu.kernels`
  or their GPU twins).
* :class:`~rapids_geovq.geodesic.ondemand.OnDemandSource` (:class:`~rapids_geovq.geodesic.ondemand.OnDemandKMedoids`):
  no matrix; every distance computed from the graph when needed, by bounded exact searches.

Blocks of swap candidates are evaluated ahead against the current medoids and used in scan order;
after a swap the evaluations made against the old medoids are dropped, so the swaps made are
exactly those of a one-candidate-at-a-time scan, whatever the number of workers. On threads a
block's task stops at its first improving candidate and the driver swaps it in; on Dask, where a
round trip costs milliseconds, the task swaps it in itself on a copy of the swap state kept in the
worker's process and scans on (:mod:`rapids_geovq.geodesic.swaps`), and the driver passes the
swaps it accepts on to the next tasks. Each row's result depends only on that row, and the
driver's sums run over points in a fixed order, so medoids, labels and inertia are identical with
any number of workers, with or without a cluster, and for either source where both evaluate the
same candidates.

Rows are used as distances *from* a point, so the matrix must be symmetric, as geodesic distances
on an undirected graph are.
"""
from __future__ import annotations

import logging
import time
from collections import deque

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from .engine import MAX_RESENDS
from .execution import Execution
from .shards import as_rows
from .swaps import (
    check_rows,
    forget_swap_states,
    invalid_distance,
    scan_and_swap_task,
    stop_threshold,
    swap_state,
    swap_task,
)

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


class DenseSource:
    """Distances read from a whole matrix held as row shards on an engine.

    Parameters
    ----------
    R : HeldShards
    block_rows : int
        Swap candidates per task (see :meth:`block_end`).
    """

    #: The swap scan covers every point; no pass changes the candidates.
    refreshes_candidates = False

    def __init__(self, R, block_rows: int):
        self.R = R
        self.n = R.n
        self.engine = R.engine
        self.block_rows = block_rows
        self._workers = self.engine.workers()
        self._turn = 0  # round-robin position over the workers
        self._running: dict = {}  # per worker, the swap tasks sent to it that may still run
        self._blocks: dict = {}  # id of a worker-side scan's future -> (p0, p1, start-state generation)
        if not self.engine.shares_memory:
            R.shard_files()  # known before any worker is lost: its shards can then be re-opened

    # -- whole rows ---------------------------------------------------------------------------
    def rows(self, points) -> np.ndarray:
        """Rows ``points`` as float32 (m, n), checked for NaN, inf and negative entries."""
        rows = self.R.take_rows(points)
        check_rows(rows, points)
        return rows

    def seed_first(self, point: int) -> np.ndarray:
        return self.rows([point])

    def seed_trials(self, cand) -> np.ndarray:
        return self.rows(cand)

    def seed_chosen(self, j: int) -> None:
        """Trial ``j`` of the last :meth:`seed_trials` became a medoid (nothing to keep here)."""

    # -- cluster costs ------------------------------------------------------------------------
    def costs(self, labels, members, seg_start, medoids, check_rows32=None) -> np.ndarray:
        """Per point, the sum of squared distances to the members of its cluster (float64, (n,)).
        With ``check_rows32`` (the float32 medoid rows), the same pass validates every entry of
        the matrix and its symmetry on the medoid columns."""
        R = self.R
        cost = np.empty(R.n)
        for attempt in range(MAX_RESENDS + 1):
            args = R.engine.scatter((labels, members, seg_start))
            try:
                results = R.map_shards(_medoid_cost_task, args, None if check_rows32 is None else medoids)
                break
            except Exception as exc:
                if attempt == MAX_RESENDS or not R.engine.lost_data(exc):
                    raise
                log.warning("a Dask worker was lost during a medoid update (%s); sending the cluster labels "
                            "again", exc)
                self._after_loss()
        for rows, (shard_cost, _, _) in zip(R.rows, results):
            cost[rows] = shard_cost
        if check_rows32 is not None:
            bad = [r[1] for r in results if r[1] is not None]
            if bad:
                raise invalid_distance(*min(bad))
            _check_symmetric(medoids, check_rows32, R.rows, [r[2] for r in results])
        return cost

    def _after_loss(self) -> None:
        """A worker was lost: shards it held that Dask cannot recompute are re-opened from their
        files, and tasks go to the workers left."""
        reopened = self.R.recover_lost()
        if reopened:
            log.warning("re-opened %d geodesic shards from their files on the workers left", reopened)
        self._workers = self.engine.workers(refresh=True)

    # -- swaps --------------------------------------------------------------------------------
    def swap_scan(self, medoids, labels, rows) -> np.ndarray:
        """The points the swap phase scans, in scan order: all of them, in the matrix's row order."""
        return self.R.order

    def begin_swaps(self, state, near, medoids, rows):
        """The context of the swap phase's first tasks. Where the engine's workers apply swaps
        themselves, the medoids and their squared rows go to every worker once, and the tasks
        carry only the swaps accepted since."""
        if not self.engine.applies_swaps_on_workers:
            return self.share_state(state, near, medoids)
        import uuid

        self._token = uuid.uuid4().hex
        self._files = self.R.shard_files()  # workers read new medoid rows there, if all can
        self._init_data = (np.array(medoids), rows.copy(), int(medoids.size), self._files)
        self._init = self.engine.scatter(self._init_data, broadcast=True)
        self._init_generation = 1  # sent again after a worker is lost with it
        self._log = []  # the accepted swaps: (medoid position, point, float32 row or (shard, position))
        self._log_sent: dict = {}  # per worker: how much of the log went with its last task
        return None

    def end_swaps(self) -> None:
        """The swap phase is over: workers let go of the states they kept for it."""
        if self.engine.applies_swaps_on_workers:
            self.engine.run_on_workers(forget_swap_states, self._token)

    def share_state(self, state, near, medoids):
        return self.engine.share(state)

    def block_end(self, pos: int) -> int:
        """Where a swap task's block starting at ``pos`` ends: ``block_rows`` on, but not past the
        end of its shard, unless tasks scan on through the shards that follow (worker-side swaps
        on shard files any worker can open)."""
        R = self.R
        if self.engine.applies_swaps_on_workers and R.file_backed:
            return min(pos + self.block_rows, R.n)
        shard = int(np.searchsorted(R.bounds, pos, side="right") - 1)
        return min(pos + self.block_rows, int(R.bounds[shard + 1]))

    def submit_swap(self, scan, p0: int, p1: int, ctx, stop_below: float):
        """Swap gains of scan positions p0:p1 (``scan`` is the matrix's row order; see
        :meth:`block_end`), a future for :meth:`swap_result`."""
        if self.engine.applies_swaps_on_workers:
            return self._submit_scan(p0, p1, self._next_worker())
        R = self.R
        shard = int(np.searchsorted(R.bounds, p0, side="right") - 1)
        lo = p0 - int(R.bounds[shard])
        worker = self._next_worker() if R.file_backed else R.owners[shard]
        return self._track(worker, R.submit(shard, swap_task, lo, lo + p1 - p0, ctx, stop_below, worker=worker))

    def _submit_scan(self, p0: int, p1: int, worker, log_from: int | None = None):
        """A worker-side scan of positions p0:p1 with the log from ``log_from`` on (default: what
        ``worker`` has not been sent)."""
        R = self.R
        first = int(np.searchsorted(R.bounds, p0, side="right") - 1)
        last = int(np.searchsorted(R.bounds, p1 - 1, side="right") - 1)
        ranges = [(max(p0, int(R.bounds[k])) - int(R.bounds[k]), min(p1, int(R.bounds[k + 1])) - int(R.bounds[k]))
                  for k in range(first, last + 1)]
        if not R.file_backed:
            worker = R.owners[first]  # a shard on a GPU is read by its owner only (and blocks stay in it)
        if log_from is None:
            # a worker runs its tasks one after the other, so it holds what its last task carried
            # (if that task was dropped before it started, the worker says so and gets more)
            log_from = self._log_sent.get(worker, 0)
        self._log_sent[worker] = len(self._log)
        fut = self.engine.submit(scan_and_swap_task, R.handles[first : last + 1], ranges, self._token, self._init,
                                 log_from, self._log[log_from:], not R.files_readable_here, worker=worker)
        self._blocks[id(fut)] = (p0, p1, self._init_generation)
        return self._track(worker, fut)

    def _track(self, worker, fut):
        self._running.setdefault(worker, []).append(fut)
        return fut

    def swap_result(self, fut):
        """``(hits, scanned)`` of a swap task, ``hits`` the swaps it made as ``(offset, medoid
        position, float32 row or None)``. A worker-side scan's swaps join the log of accepted swaps
        (the driver only asks for the oldest task it has not dropped, whose swaps it accepts); a
        worker that does not hold the state as far as the task's log starts is sent more of it; a
        task cancelled because a worker was lost with the data it needed is sent again."""
        if not self.engine.applies_swaps_on_workers:
            return fut.result()
        R = self.R
        while True:
            p0, p1, generation = self._blocks.pop(id(fut))
            try:
                hits, scanned, worker, n_applied = fut.result()
            except Exception as exc:
                if not self.engine.lost_data(exc) or (generation == self._init_generation
                                                      and generation > MAX_RESENDS):
                    raise
                if generation == self._init_generation:
                    # tasks sent with the lost copy come back here and go out with the new one
                    log.warning("a Dask worker was lost during the swap phase (%s); going on without it", exc)
                    self._after_loss()
                    self._init = self.engine.scatter(self._init_data, broadcast=True)
                    self._init_generation += 1
                fut = self._submit_scan(p0, p1, self._next_worker(), log_from=0)  # with the whole log
                continue
            if hits is not None:
                break
            fut = self._submit_scan(p0, p1, worker, log_from=n_applied)
        for h, m, row in hits:
            x = int(R.order[p0 + h])
            self._log.append((m, x, R.place(x) if self._files else row))
        return hits, scanned

    def drop(self, futures) -> None:
        """Let go of swap tasks whose answers the driver no longer needs. A worker's first unfinished
        task is kept in mind (it is likely running, and a running task cannot be stopped); the
        others are forgotten, so those not started never run."""
        dropped = set(map(id, futures))
        for i in dropped:
            self._blocks.pop(i, None)
        for w, futs in self._running.items():
            left = [f for f in futs if not f.done()]
            self._running[w] = left[:1] + [f for f in left[1:] if id(f) not in dropped]
        self.engine.cancel(futures)

    def _next_worker(self):
        """Consecutive blocks mostly share a shard: spread them over the workers, in turn, skipping
        workers still busy with tasks the driver dropped at a swap (a running task cannot be
        stopped, and the first task after a swap should not wait behind one)."""
        n = len(self._workers)
        for i in range(n):
            w = self._workers[(self._turn + i) % n]
            left = [f for f in self._running.get(w, ()) if not f.done()]
            self._running[w] = left
            if not left:
                self._turn += i + 1
                return w
        w = self._workers[self._turn % n]
        self._turn += 1
        return w

    def lookahead(self) -> int:
        return self.engine.swap_tasks_per_worker * self.engine.n_workers


def _check_symmetric(medoids: np.ndarray, medoid_rows: np.ndarray, shard_rows, shard_cols) -> None:
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


class KMedoidsDriver(BaseEstimator, ClusterMixin):
    """The k-medoids algorithm over a distance source (see the module docstring); subclasses
    say where the distances come from.

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
        Where the work runs (engine, workers, backend, swap block size, progress bar; see
        :class:`rapids_geovq.geodesic.execution.Execution`). Results do not depend on it.
    """

    #: Seconds between saved states in the swap phase (when the fit saves its state at all).
    checkpoint_seconds = 60.0

    def __init__(self, n_clusters: int = 64, *, n_init: int = 3, max_iter: int = 100, swap: bool = True,
                 max_swap_passes: int = 20, random_state=None, execution: Execution | None = None):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.swap = swap
        self.max_swap_passes = max_swap_passes
        self.random_state = random_state
        self.execution = execution

    def fit_predict(self, X, y=None) -> np.ndarray:
        """Fit and return ``labels_``."""
        return self.fit(X).labels_

    # -- the algorithm ----------------------------------------------------------------------

    def _check_params(self, n: int) -> None:
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {k!r}")
        if k > n:
            raise ValueError(
                f"n_clusters={k} is more than the {n} points to cluster; use n_clusters <= {n} "
                "(or cluster more latents)"
            )
        if self.n_init < 1 or self.max_iter < 1 or self.max_swap_passes < 1:
            raise ValueError("n_init, max_iter and max_swap_passes must be >= 1")

    def _run(self, src, *, progress: bool = False, resume=None, checkpoint=None) -> None:
        """All restarts on ``src``; sets the fitted attributes. ``resume`` is a saved state to
        continue from and ``checkpoint(state)`` is called at safe points with the state to save
        (both optional; see :mod:`rapids_geovq.geodesic.ondemand`)."""
        from tqdm.auto import tqdm

        n = src.n
        self._check_params(n)
        rng = _check_random_state(self.random_state)
        self.timings_ = {"seeding": 0.0, "assignment": 0.0, "update": 0.0, "swaps": 0.0}
        best = None
        first = 0
        if resume is not None:
            first, best = resume["restart"], resume["best"]
            rng.bit_generator.state = resume["rng_state"]
        for run in tqdm(range(first, self.n_init), desc="geodesic k-means", unit="init", disable=not progress,
                        initial=first, total=self.n_init):
            here = resume if resume is not None and resume["restart"] == run else None
            if here is None or here["phase"] == "start":
                t0 = time.perf_counter()
                medoids = self._kmeanspp(src, n, rng)
                self.timings_["seeding"] += time.perf_counter() - t0
                if checkpoint:
                    checkpoint(self._state(run, "seeded", rng, best, medoids=medoids))
                here = None
            else:
                medoids = np.asarray(here["medoids"], dtype=np.int64)
            if here is None or here["phase"] == "seeded":
                # the first restart's first pass over the matrix also validates all of it
                medoids, rows, n_iter = self._alternate(src, medoids, check=run == 0)
                if checkpoint:
                    checkpoint(self._state(run, "alternated", rng, best, medoids=medoids, n_iter=n_iter))
                swap_from = None
            else:
                n_iter = int(here["n_iter"])
                rows = self._medoid_rows(src, medoids)
                swap_from = here if here["phase"] == "swapping" else None
            n_swaps = 0
            if self.swap:
                cp = None if checkpoint is None else (
                    lambda **kw: checkpoint(self._state(run, "swapping", rng, best, n_iter=n_iter, **kw)))
                t0 = time.perf_counter()
                medoids, rows, n_swaps = self._swap(src, medoids, rows, resume=swap_from, checkpoint=cp)
                self.timings_["swaps"] += time.perf_counter() - t0
            labels, d1 = self._assign(rows, medoids)
            inertia = float(np.sum(d1))
            log.info("k-means restart %d: inertia %.6g after %d iterations and %d swaps",
                     run, inertia, n_iter, n_swaps)
            if best is None or inertia < best[0]:
                best = (inertia, medoids, labels, n_iter, n_swaps)
            if checkpoint:
                checkpoint(self._state(run + 1, "start", rng, best))
            resume = None
        self.inertia_, self.medoid_indices_, self.labels_, self.n_iter_, self.n_swaps_ = best

    @staticmethod
    def _state(restart: int, phase: str, rng, best, **kw) -> dict:
        return {"restart": restart, "phase": phase, "rng_state": rng.bit_generator.state, "best": best, **kw}

    def _kmeanspp(self, src, n: int, rng: np.random.Generator) -> np.ndarray:
        """Greedy k-means++ on squared distances (as scikit-learn's): each step draws
        ``2 + log(k)`` candidates proportional to the current cost and keeps the one that lowers
        the total cost most."""
        n_trials = 2 + int(np.log(self.n_clusters))
        medoids = [int(rng.integers(n))]
        closest = src.seed_first(medoids[0])[0].astype(np.float64) ** 2
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
            trial = np.minimum(closest[None, :], src.seed_trials(cand).astype(np.float64) ** 2)
            best = int(np.argmin(trial.sum(axis=1)))
            medoids.append(int(cand[best]))
            src.seed_chosen(best)
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

    @staticmethod
    def _medoid_rows(src, medoids, *, keep32: bool = False):
        rows32 = src.rows(medoids)
        rows = rows32.astype(np.float64)
        rows *= rows
        return (rows, rows32) if keep32 else rows

    def _medoid_update(self, src, labels: np.ndarray, medoids: np.ndarray, check=None) -> np.ndarray:
        """Per cluster, the member with the least sum of squared distances to the other members
        (ties to the lowest point id), among the members the source scores (all of them, for the
        dense source). With ``check`` (the float32 medoid rows, on a fit's first pass) the dense
        source's pass over the shards also validates every entry of D and its symmetry."""
        k = self.n_clusters
        members = np.argsort(labels, kind="stable")
        seg_start = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))]).astype(np.int64)
        cost = src.costs(labels, members, seg_start, medoids, check)
        new = medoids.copy()
        for c in range(k):
            mem = members[seg_start[c] : seg_start[c + 1]]
            if mem.size:
                new[c] = mem[np.argmin(cost[mem])]
        return new

    def _alternate(self, src, medoids: np.ndarray, *, check: bool = False):
        t = self.timings_
        t0 = time.perf_counter()
        rows, rows32 = self._medoid_rows(src, medoids, keep32=True)
        t["update"] += time.perf_counter() - t0
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            t0 = time.perf_counter()
            labels, _ = self._assign(rows, medoids)
            t1 = time.perf_counter()
            new = self._medoid_update(src, labels, medoids, check=rows32 if check and n_iter == 1 else None)
            changed = np.flatnonzero(new != medoids)
            log.debug("k-means iteration %d: %d medoids moved", n_iter, changed.size)
            if changed.size:
                rows[changed] = self._medoid_rows(src, new[changed])
            t["assignment"] += t1 - t0
            t["update"] += time.perf_counter() - t1
            if changed.size == 0:
                break
            medoids = new
        return medoids, rows, n_iter

    def _swap_state(self, rows: np.ndarray, medoids: np.ndarray, near=None, changed: int = -1):
        return swap_state(rows, medoids, self.n_clusters, near, changed)

    def _swap(self, src, medoids: np.ndarray, rows: np.ndarray, *, resume=None, checkpoint=None):  # noqa: C901
        """Eager FasterPAM-style swaps: the first improving candidate in scan order is swapped in.

        Blocks of candidates are evaluated ahead against the current medoids and consumed in scan
        order. A block's task stops at its first improving candidate, or (where the source applies
        swaps where the rows are) swaps it in and scans on to the block's end; either way the
        block reports the swaps it made. After a swap the scan resumes just past the block's scanned
        part and evaluations made against the old medoids are dropped, so the swaps are those a
        one-candidate-at-a-time scan would make. It stops after a full pass over the candidates
        with no swap. A source whose candidates depend on the medoids draws them anew at the start
        of each pass (and looks ahead only within a pass).
        """
        k, n = self.n_clusters, src.n
        if k == n or k == 1:  # nothing to swap, or the alternating step is already optimal
            return medoids, rows, 0
        medoids = medoids.copy()
        state, near = self._swap_state(rows, medoids)
        n_swaps = passes = since_last = next_pos = 0
        scan = None
        if resume is not None:
            n_swaps, passes, since_last, next_pos = (int(resume[x]) for x in ("n_swaps", "passes", "since_last",
                                                                            "next_pos"))
            scan = None if resume.get("scan") is None else np.asarray(resume["scan"], dtype=np.int64)
        if scan is None:
            scan = src.swap_scan(medoids, near[0], rows)
        N = scan.size
        ctx = src.begin_swaps(state, near, medoids, rows)
        stop_below = stop_threshold(state)
        depth = src.lookahead()
        ahead = 0  # candidates submitted but not yet consumed
        pending: deque = deque()
        last_save = time.monotonic()
        try:
            while since_last < N and passes < self.max_swap_passes:
                while len(pending) < depth and since_last + ahead < N:
                    if src.refreshes_candidates and pending and pending[-1][1] == N:
                        break  # the next pass's candidates depend on this pass's swaps
                    p1 = min(src.block_end(next_pos), N)
                    fut = src.submit_swap(scan, next_pos, p1, ctx, stop_below)
                    pending.append((next_pos, p1, fut))
                    ahead += p1 - next_pos
                    next_pos = p1 % N
                p0, p1, fut = pending.popleft()
                ahead -= p1 - p0
                hits, scanned = src.swap_result(fut)
                pass_done = False
                if hits:
                    src.drop([f for _, _, f in pending])
                    pending.clear()
                    for h, m, hit_row in hits:
                        x = int(scan[p0 + h])
                        if hit_row is None:
                            hit_row = src.rows([x])[0]
                        else:
                            check_rows(hit_row[None, :], [x])
                        medoids[m] = x
                        rows[m] = hit_row.astype(np.float64) ** 2
                        state, near = self._swap_state(rows, medoids, near, m)
                        n_swaps += 1
                    ctx = src.share_state(state, near, medoids)
                    stop_below = stop_threshold(state)
                    ahead = 0
                    since_last = scanned - (hits[-1][0] + 1)
                    next_pos = p0 + scanned
                    if next_pos == N:
                        next_pos = 0
                        passes += 1
                        pass_done = True
                else:
                    since_last += scanned
                    if p1 == N:
                        passes += 1
                        pass_done = True
                        log.debug("k-means swap pass %d: %d swaps so far, cost %.6g", passes, n_swaps,
                                  float(np.sum(state[2])))
                if pass_done and src.refreshes_candidates and since_last < N:
                    # a pass with swaps moved medoids: draw the candidates again (no look-ahead
                    # crossed the end of the pass, so nothing evaluated on the old list is pending)
                    new_scan = src.swap_scan(medoids, near[0], rows)
                    if not np.array_equal(new_scan, scan):
                        scan, N, since_last = new_scan, new_scan.size, 0
                    next_pos = 0
                due = checkpoint is not None and time.monotonic() - last_save >= self.checkpoint_seconds
                if due and not pending:
                    checkpoint(medoids=medoids.copy(), n_swaps=n_swaps, passes=passes, since_last=since_last,
                               next_pos=next_pos, scan=scan if src.refreshes_candidates else None)
                    last_save = time.monotonic()
        finally:
            src.drop([f for _, _, f in pending])
            src.end_swaps()
        return medoids, rows, n_swaps


class GeodesicKMeans(KMedoidsDriver):
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
    timings_ : dict
        Seconds spent seeding, assigning, updating medoids and swapping, over all restarts.
    """

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
        from .engine import hold_matrix

        if not hasattr(D, "take_rows"):
            D = np.asarray(D)
        shape = tuple(D.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"D must be a square distance matrix, got shape {shape}")
        self._check_params(shape[0])
        ex = self.execution or Execution(backend="numpy")
        with ex.open_engine() as engine:
            block_rows = ex.swap_block_rows(engine)
            if block_rows < 1:
                raise ValueError(f"block_rows must be >= 1, got {block_rows}")
            R = hold_matrix(engine, D, kernels=ex.shard_kernels())
            self._run(DenseSource(R, block_rows), progress=ex.progress)
        return self


def kmeans_objective(D, medoids) -> float:
    """Sum over points of the squared distance to the nearest of ``medoids`` (float64)."""
    rows = as_rows(D).take_rows(np.asarray(medoids)).astype(np.float64) ** 2
    return float(rows.min(axis=0).sum())
