"""Geodesic k-medoids without the n x n matrix: every distance computed from the graph when needed.

The dense matrix costs n^2 (14.4 GB at 60,000 points, 4 TB at 1,000,000). :class:`OnDemandKMedoids`
runs the same algorithm as :class:`~rapids_geovq.GeodesicKMeans` (the shared
:class:`~rapids_geovq.geodesic.kmeans.KMedoidsDriver`: greedy k-means++ seeding, alternating
updates, eager FasterPAM swaps, restarts) on the same objective, with a distance source that keeps
only the K medoid rows (O(n K) numbers) and the graph (O(n k)), and computes everything else by
*bounded* exact searches (:mod:`rapids_geovq.cpu.bounded_paths`, or its GPU twin):

seeding
    a k-means++ trial row is searched only while it is shorter than the distance to the nearest
    medoid chosen so far: beyond that a trial cannot lower any point's cost (a node reached through
    a pruned node is at least as far from the trial as from that medoid; float additions are
    monotone), so the trial sums equal the dense ones bit for bit.
medoid update
    a candidate's cost (sum of squared distances to its cluster's members) is searched within a
    radius of (distance from the medoid to the candidate) + (distance from the medoid to its
    farthest member), which by the triangle inequality holds every member, so every member's
    distance is exact.
swaps
    a candidate's search stops at nodes farther from it than from both their nearest medoids:
    points reached only through them cannot contribute to its swap gain, exactly as they contribute
    nothing in the dense kernel.

Every distance the fit uses is therefore exact; the results equal the dense fit's whenever both
score the same candidates (``update_candidates=None, swap_near=None``: every point, which is the
dense algorithm; tested on small graphs). At scale, scoring every point in every pass would cost a
whole all-pairs computation per pass, so the candidates are restricted, per cluster:

* medoid update: the ``update_candidates`` members nearest the current medoid (by geodesic
  distance) or, where the latents are given, half of them nearest the medoid and half nearest the
  cluster's mean latent. The best member (the cluster's geodesic centre) lies near one or the
  other: near the medoid once the iterations have moved it close, near the mean latent for the
  compact clusters of a VAE's latent space, which lets a medoid far from its centre jump there in
  one iteration instead of walking to it. The current medoid is always a candidate, so no update
  raises the cost.
* swaps: the ``swap_near`` members nearest each medoid (local moves, which are most of FasterPAM's
  improving swaps after a good start) and the ``swap_far`` members farthest from it (the points
  that pay the most, where a new medoid would open a cluster), drawn again after every pass that
  moved a medoid.

A pass then costs about (K x candidates per cluster) searches, each over the few clusters around
the candidate: close to linear in n. ``docs/ondemand.md`` measures what the restriction loses
against the dense fit at 60,000 latents.

A killed fit resumes from its last saved state (``checkpoint=`` in :meth:`OnDemandKMedoids.fit`):
after seeding, after the alternating phase and every minute of the swap phase; the medoid rows are
searched again on resume, and the continuation is identical to an unbroken run.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..common.graphs import graph_fingerprint
from .execution import Execution
from .kmeans import KMedoidsDriver
from .swaps import check_rows

log = logging.getLogger(__name__)

#: Relative slack on the member-cost radius: float64 sums along paths differ from exact real
#: arithmetic by far less (about 1e-13 relative over hundreds of edges).
RADIUS_SLACK = 1e-9


class OnDemandSource:
    """Distances computed on demand from a graph, for :class:`~rapids_geovq.geodesic.kmeans.KMedoidsDriver`.

    Parameters
    ----------
    plan : PathPlan
        The graph renumbered in row order (the swap scan follows it, as for shards).
    engine : ThreadEngine
        Threads that run the searches (one search state per thread).
    backend : Backend
        Its ``bounded_graph(plan)`` prepares the graph once and ``bounded_search(graph)`` gives one
        thread's search state (``BoundedSearch`` on the CPU, ``DeviceBoundedSearch`` on a GPU), with
        ``rows``, ``swap_gains`` and ``member_costs``.
    update_candidates, swap_near, swap_far : int or None
        See :class:`OnDemandKMedoids`.
    batches_per_task : int
        Batches of 8 candidates per swap task.
    """

    def __init__(self, plan, engine, backend, *, update_candidates=64, swap_near=192, swap_far=64,
                 batches_per_task: int = 2, latents=None):
        from ..cpu.kernels import LANES

        self.plan = plan
        self.n = plan.n
        self.engine = engine
        self.graph = backend.bounded_graph(plan)  # shared by the threads' search states
        self._make = backend.bounded_search
        self._local = threading.local()
        self._lanes = LANES
        self.update_candidates = update_candidates
        self.latents = None if latents is None else np.asarray(latents)
        self.swap_near = swap_near
        self.swap_far = swap_far
        self.refreshes_candidates = swap_near is not None
        self.block = LANES * batches_per_task
        self.position = np.empty(self.n, np.int64)
        self.position[plan.order] = np.arange(self.n)
        self._rows64: dict[int, np.ndarray] = {}  # full float64 rows of medoids and new medoids
        self._M = None  # (K, n) float64 rows of the current medoids, by medoid position
        self._M_points = None
        self._d1 = None  # seeding: float64 distance to the nearest chosen medoid
        self._trials = None
        #: Searches run, by kind (a measure of the work; reported by the benchmark).
        self.counts = {"full_rows": 0, "seed_trials": 0, "member_costs": 0, "swap_candidates": 0}
        self._count_lock = threading.Lock()

    def _count(self, kind: str, m: int) -> None:
        with self._count_lock:
            self.counts[kind] += m

    def _searcher(self):
        s = getattr(self._local, "search", None)
        if s is None:
            s = self._local.search = self._make(self.graph)
        return s

    def _map(self, fn, items):
        futures = [self.engine.submit(fn, it) for it in items]
        return [f.result() for f in futures]

    # -- whole rows ---------------------------------------------------------------------------
    def _known(self, p: int):
        """The float64 row of ``p`` if it is kept (a current medoid's, or one computed since)."""
        if p in self._rows64:
            return self._rows64[p]
        if self._M_points is not None:
            hit = np.flatnonzero(self._M_points == p)
            if hit.size:
                return self._M[hit[0]]
        return None

    def _full_rows64(self, points) -> list[np.ndarray]:
        """Unbounded float64 rows (one search per point: unrelated sources share no front)."""
        want = list(dict.fromkeys(int(p) for p in points if self._known(int(p)) is None))

        def one(p):
            return self._searcher().rows([p], dtype=np.float64, together=False)[0]

        for p, row in zip(want, self._map(one, want)):
            self._rows64[p] = row
        self._count("full_rows", len(want))
        return [self._known(int(p)) for p in points]

    def rows(self, points) -> np.ndarray:
        rows = np.stack([r.astype(np.float32) for r in self._full_rows64(points)])
        check_rows(rows, points)
        return rows

    def seed_first(self, point: int) -> np.ndarray:
        self._rows64.clear()
        row = self._full_rows64([point])[0]
        self._d1 = row.copy()
        out = row.astype(np.float32)[None, :]
        check_rows(out, [point])
        return out

    def seed_trials(self, cand) -> np.ndarray:
        bound = self.graph.to_nodes(self._d1)

        def one(p):
            return self._searcher().rows([int(p)], node_bound=bound, dtype=np.float64, together=False)[0]

        self._trials = np.stack(self._map(one, list(cand)))
        self._count("seed_trials", len(cand))
        return self._trials.astype(np.float32)

    def seed_chosen(self, j: int) -> None:
        # exact where the trial could lower a distance, >= the current one elsewhere
        np.minimum(self._d1, self._trials[j], out=self._d1)

    # -- cluster costs ------------------------------------------------------------------------
    def _place(self, medoids) -> np.ndarray:
        """The (K, n) float64 rows of ``medoids``, updated in place where medoids changed."""
        medoids = np.asarray(medoids, dtype=np.int64)
        if self._M is None or self._M.shape[0] != medoids.size:
            self._M = np.empty((medoids.size, self.n))
            self._M_points = np.full(medoids.size, -1, np.int64)
        changed = np.flatnonzero(self._M_points != medoids)
        rows = [r.copy() for r in self._full_rows64(medoids[changed])]  # a copy: M's rows move around
        for c, row in zip(changed, rows):
            self._M[c] = row
            self._M_points[c] = medoids[c]
        self._rows64.clear()  # every kept row is now in M (memory stays O(n K))
        return self._M

    def costs(self, labels, members, seg_start, medoids, check_rows32=None) -> np.ndarray:
        """Per candidate, the sum of squared distances to its cluster's members (float64); +inf
        for points not scored (see ``update_candidates``)."""
        M = self._place(medoids)
        cost = np.full(self.n, np.inf)
        batches = []  # (points, radii) of up to 8 candidates of one cluster, nearby in row order
        for c in range(medoids.size):
            mem = members[seg_start[c] : seg_start[c + 1]]
            if mem.size == 0:
                continue
            dist = M[c, mem]
            m = self.update_candidates
            if m is not None and mem.size > m:
                if self.latents is not None and m > 1:
                    # half nearest the medoid, half nearest the cluster's mean latent
                    z = self.latents[mem].astype(np.float64)
                    to_mean = ((z - z.mean(axis=0)) ** 2).sum(axis=1)
                    near = mem[np.lexsort((mem, dist))[: m - m // 2]]
                    central = mem[np.lexsort((mem, to_mean))]
                    central = central[~np.isin(central, near)][: m // 2]
                    cand = np.concatenate([near, central])
                else:
                    cand = mem[np.lexsort((mem, dist))[:m]]
                if medoids[c] not in cand:
                    cand = np.append(cand[:-1], medoids[c])
            else:
                cand = mem
            cand = cand[np.argsort(self.position[cand], kind="stable")]
            radius = (M[c, cand] + dist.max()) * (1 + RADIUS_SLACK) + 1e-300
            for s in range(0, cand.size, self._lanes):
                batches.append((cand[s : s + self._lanes], radius[s : s + self._lanes]))

        def one(batch):
            pts, rad = batch
            return self._searcher().member_costs(pts, labels, members, seg_start, radius=rad)

        for (pts, _), values in zip(batches, self._map(one, batches)):
            cost[pts] = values
        self._count("member_costs", sum(b[0].size for b in batches))
        return cost

    # -- swaps --------------------------------------------------------------------------------
    def swap_scan(self, medoids, nearest, rows) -> np.ndarray:
        """Candidates in row order: every point (``swap_near=None``), else per cluster the
        ``swap_near`` members nearest its medoid and the ``swap_far`` farthest."""
        if self.swap_near is None:
            return self.plan.order
        M = self._place(medoids)
        ar = np.arange(self.n)
        d = M[nearest, ar]
        members = np.argsort(nearest, kind="stable")
        seg = np.concatenate([[0], np.cumsum(np.bincount(nearest, minlength=medoids.size))])
        picks = []
        for c in range(medoids.size):
            mem = members[seg[c] : seg[c + 1]]
            order = mem[np.lexsort((mem, d[mem]))]
            picks.append(order[: self.swap_near])
            if self.swap_far:
                picks.append(order[::-1][: self.swap_far])
        cand = np.unique(np.concatenate(picks))
        cand = cand[~np.isin(cand, medoids)]
        return cand[np.argsort(self.position[cand], kind="stable")]

    def begin_swaps(self, state, near, medoids, rows):
        return self.share_state(state, near, medoids)

    def share_state(self, state, near, medoids):
        """The swap state plus the node bound: for each node, the larger of its float64 distances
        to its two nearest medoids (the medoids ``near`` names), at least its distance to the
        second-nearest, which is what the pruning needs."""
        M = self._place(medoids)
        n1, n2 = near[0], near[1]
        ar = np.arange(self.n)
        if medoids.size == 1:
            bound = np.full(self.n, np.inf)
        else:
            bound = np.maximum(M[n1, ar], M[n2, ar])
        return state, self.graph.to_nodes(bound)

    def block_end(self, pos: int) -> int:
        return pos + self.block

    def submit_swap(self, scan, p0: int, p1: int, ctx, stop_below: float):
        state, bound = ctx
        pts = np.asarray(scan[p0:p1])
        self._count("swap_candidates", pts.size)

        def task():
            delta, best = self._searcher().swap_gains(pts, state, bound)
            hits = np.flatnonzero(delta < stop_below)
            if not hits.size:
                return [], pts.size
            h = int(hits[0])
            return [(h, int(best[h]), None)], h + 1  # the driver computes the new medoid's full row

        return self.engine.submit(task)

    def drop(self, futures) -> None:
        """Let go of swap tasks whose answers the driver no longer needs."""
        self.engine.cancel(futures)

    def end_swaps(self) -> None:
        """The swap phase is over (nothing is kept for it elsewhere)."""

    @staticmethod
    def swap_result(fut):
        """``(hits, scanned)`` of a swap task (see :meth:`KMedoidsDriver._swap`)."""
        return fut.result()

    def lookahead(self) -> int:
        return self.engine.swap_tasks_per_worker * self.engine.n_workers


class OnDemandKMedoids(KMedoidsDriver):
    """Geodesic k-medoids on a kNN graph without the n x n matrix (see the module docstring).

    Parameters
    ----------
    n_clusters, n_init, max_iter, swap, max_swap_passes, random_state :
        As for :class:`~rapids_geovq.GeodesicKMeans`.
    update_candidates : int or None, default=64
        Members per cluster scored in a medoid update (those nearest the medoid); None: all.
    swap_near, swap_far : int or None, default=192 and 64
        Swap candidates per cluster: the members nearest to and farthest from its medoid.
        ``swap_near=None``: every point, in row order (the dense algorithm).
    execution : Execution, optional
        Backend (its bounded search: CPU kernels, or the GPU twin) and threads. Results do not
        depend on it.

    Attributes
    ----------
    medoid_indices_, labels_, inertia_, n_iter_, n_swaps_ :
        As for :class:`~rapids_geovq.GeodesicKMeans`.
    medoid_rows_ : float32 ndarray of shape (n_clusters, n)
        Geodesic distance from each medoid to every point (what Geo-VQ needs: its transpose is
        ``dist_to_codes``).
    searches_ : dict
        Searches run, by kind.
    """

    def __init__(self, n_clusters: int = 64, *, n_init: int = 3, max_iter: int = 100, swap: bool = True,
                 max_swap_passes: int = 20, random_state=None, update_candidates=64, swap_near=192, swap_far=64,
                 execution: Execution | None = None):
        super().__init__(n_clusters, n_init=n_init, max_iter=max_iter, swap=swap, max_swap_passes=max_swap_passes,
                         random_state=random_state, execution=execution)
        self.update_candidates = update_candidates
        self.swap_near = swap_near
        self.swap_far = swap_far

    def fit(self, graph, y=None, *, latents=None, checkpoint=None) -> "OnDemandKMedoids":
        """Cluster the nodes of ``graph`` (a symmetric, connected kNN graph, SciPy sparse) by
        geodesic k-medoids.

        Parameters
        ----------
        graph : sparse matrix (n, n)
            E.g. :func:`rapids_geovq.knn_graph`; a directed one is symmetrised with a warning.
        latents : array (n, d), optional
            The points the graph was built on: half of each medoid update's candidates are then the
            members nearest the cluster's mean latent (see the module docstring). Every distance
            used is still geodesic.
        checkpoint : path, optional
            A file (``.npz``) where the fit saves its state and from which a killed fit of the same
            graph and settings resumes.
        """
        from .plan import make_plan

        for name in ("update_candidates", "swap_near", "swap_far"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, got {v!r}")
        if self.update_candidates == 0:
            raise ValueError("update_candidates must be at least 1 (the medoid itself) or None")
        plan = make_plan(graph)
        self._check_params(plan.n)
        ex = self.execution or Execution(backend="numpy")
        backend = ex.resolve_backend()
        if latents is not None and np.shape(latents)[0] != plan.n:
            raise ValueError(f"latents has {np.shape(latents)[0]} rows but the graph has {plan.n} nodes")
        key = self._fingerprint(plan) + ("|latents" if latents is not None else "")
        resume = _load_state(checkpoint, key) if checkpoint else None
        if resume is not None:
            log.info("on-demand k-medoids: resuming from %s (restart %d, %s)", checkpoint, resume["restart"],
                     resume["phase"])
        save = (lambda state: _save_state(checkpoint, key, state)) if checkpoint else None
        with ex.open_engine() as engine:
            src = OnDemandSource(plan, engine, backend, update_candidates=self.update_candidates,
                                 swap_near=self.swap_near, swap_far=self.swap_far, latents=latents)
            self._run(src, progress=ex.progress, resume=resume, checkpoint=save)
            self.medoid_rows_ = src.rows(self.medoid_indices_)
        self.searches_ = dict(src.counts)
        return self

    def _fingerprint(self, plan) -> str:
        params = {k: v for k, v in self.get_params().items() if k != "execution"}
        if isinstance(params.get("random_state"), np.random.Generator):
            raise ValueError("a resumable fit needs an integer random_state (or None), not a Generator")
        return f"{graph_fingerprint(plan.graph)}|{json.dumps(params, sort_keys=True, default=str)}"


# --- saved state ----------------------------------------------------------------------------------

def _save_state(path, key: str, state: dict) -> None:
    """Write the fit's state atomically: arrays as arrays, the rest as JSON."""
    path = Path(path)
    best = state.get("best")
    arrays = {"medoids": state.get("medoids"), "scan": state.get("scan")}
    if best is not None:
        arrays.update(best_medoids=best[1], best_labels=best[2])
    meta = {k: v for k, v in state.items() if k not in ("medoids", "scan", "best")}
    meta["key"] = key
    meta["best"] = None if best is None else [float(best[0]), int(best[3]), int(best[4])]
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta, default=_jsonable)),
             **{k: np.asarray(v, dtype=np.int64) for k, v in arrays.items() if v is not None})
    os.replace(tmp, path)


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON-serialisable: {type(o)}")


def _load_state(path, key: str) -> dict | None:
    """The saved state of a fit of the same graph and settings, or None (a state of another fit or
    an unreadable file is ignored, with a warning)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if meta.get("key") != key:
                log.warning("%s holds the state of another fit (other graph or settings); starting afresh", path)
                return None
            state = dict(meta)
            for name in ("medoids", "scan"):
                state[name] = f[name] if name in f else None
            b = meta["best"]
            state["best"] = None if b is None else (b[0], f["best_medoids"], f["best_labels"], b[1], b[2])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read the saved k-medoids state %s (%s); starting afresh", path, exc)
        return None
    return state
