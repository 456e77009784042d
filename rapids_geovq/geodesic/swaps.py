"""The k-medoids swap phase's state, and the tasks that look for swaps where the shards are.

The driver (:class:`rapids_geovq.geodesic.kmeans.KMedoidsDriver`) scans the candidates in order
and swaps in the first one that lowers the cost; the swap kernels need, per point, its nearest and
second-nearest medoid and their distances (:func:`swap_state`).

On threads a task stops at its first improving candidate and the driver swaps it in
(:func:`swap_task`). A Dask task costs a round trip of milliseconds, so there a task swaps in what
it finds itself, on a copy of the swap state kept in the worker's process
(:class:`WorkerSwapState`), and scans on to the end of its block (:func:`scan_and_swap_task`); the
driver gets the list of swaps back and tells later tasks (on any worker) which swaps it accepted
since that worker last heard. The swaps made are still those of a one-candidate-at-a-time scan. A
kept state only ever holds swaps the driver accepted: a task undoes its own before it returns,
since the driver may have dropped it.
"""
from __future__ import annotations

import threading

import numpy as np


def invalid_distance(point: int, col: int, value: float) -> ValueError:
    """The error for a NaN, infinite or negative entry D[point, col]."""
    what = "negative" if value < 0 else ("NaN" if np.isnan(value) else "infinite")
    return ValueError(
        f"D contains NaN or infinite or negative distances: D[{point}, {col}] is {what} ({value}), and row "
        f"{point} is the first bad row. Geodesic distances must be finite and non-negative; a disconnected "
        "graph gives infinite ones and NaN latents NaN: rebuild the graph with "
        "knn_graph(..., disconnected='repair') from finite latents")


def check_rows(rows: np.ndarray, ids) -> None:
    """Rows taken whole (seeding, medoid rows, a swapped-in medoid's row) are checked as they arrive."""
    bad = ~((rows >= 0) & (rows < np.inf))
    if bad.any():
        i = int(np.argmax(bad.any(axis=1)))
        j = int(np.argmax(bad[i]))
        raise invalid_distance(int(np.asarray(ids)[i]), j, float(rows[i, j]))


def swap_state(rows: np.ndarray, medoids: np.ndarray, k: int, near=None, changed: int = -1):
    """``(is_medoid, nearest, d1, d2, removal)`` for the swap kernels, from the squared medoid rows
    (k, n); ``near`` holds the nearest / second-nearest arrays, updated in place for a change of
    medoid ``changed`` (-1: all). Returns ``(state, near)``; the state's arrays are new ones."""
    from ..cpu.kernels import nearest_two

    n = rows.shape[1]
    if near is None:
        near = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n), np.empty(n))
        changed = -1
    n1, n2, d1, d2 = near
    nearest_two(rows, changed, n1, n2, d1, d2)
    if rows.shape[0] == 1:
        d2 = np.full(n, np.inf)
    removal = np.bincount(n1, weights=d2 - d1, minlength=k)
    is_medoid = np.zeros(n, np.bool_)
    is_medoid[medoids] = True
    return (is_medoid, n1.copy(), d1.copy(), d2.copy(), removal), near


def stop_threshold(state) -> float:
    """A swap must lower the cost by more than this relative amount: float noise must not swap
    back and forth."""
    return -1e-12 * max(float(np.sum(state[2])), 1e-300)


def first_hit(handle, lo: int, hi: int, delta, best, stop_below: float):
    """``(hits, scanned)`` from the swap gains of rows lo:hi of a shard: the first improving row as
    ``[(offset, medoid, float32 row)]`` and how many rows the scan covered up to it, or ``([],
    hi - lo)``. (CPU kernels stop at the first improving row; GPU kernels evaluate them all.)"""
    hits = np.flatnonzero(delta < stop_below)
    if not hits.size:
        return [], hi - lo
    h = int(hits[0])
    return [(h, int(best[h]), np.array(handle.data[lo + h], dtype=np.float32))], h + 1


def swap_task(handle, lo: int, hi: int, state, stop_below: float):
    """Swap gains of candidate rows lo:hi, evaluated up to the first improving one: ``(hits,
    scanned)`` with at most one hit; its row comes back with it (the driver needs it as the new
    medoid's row, and would otherwise ask for it in another round trip)."""
    delta, best = handle.kernels.swap_gains(handle.block, handle.rows, lo, hi, state, stop_below)
    return first_hit(handle, lo, hi, delta, best, stop_below)


# --- swaps applied where the shards are -------------------------------------------------------

class Behind(Exception):
    """This process holds no free swap state as far along as the task's log starts (args: how far
    along the furthest one is)."""


class WorkerSwapState:
    """The swap state of one swap phase as a worker keeps it: the squared medoid rows, the medoids,
    the nearest / second-nearest arrays and the kernels' state tuple, after the first ``n_applied``
    swaps of the driver's log."""

    def __init__(self, medoids: np.ndarray, rows: np.ndarray, k: int, files=None):
        self.k = k
        self.files = files  # per shard (path, checksum) when log entries name rows by place
        self.medoids = np.array(medoids, dtype=np.int64)
        self.rows = np.array(rows, dtype=np.float64)  # the scattered copy is shared: never written
        self.state, self.near = swap_state(self.rows, self.medoids, k)
        self.stop_below = stop_threshold(self.state)
        self.n_applied = 0

    def apply(self, m: int, x: int, row32: np.ndarray) -> None:
        check_rows(row32[None, :], [x])
        self.medoids[m] = x
        self.rows[m] = row32.astype(np.float64) ** 2
        self.state, self.near = swap_state(self.rows, self.medoids, self.k, self.near, m)
        self.stop_below = stop_threshold(self.state)

    def catch_up(self, log_from: int, entries) -> None:
        """Apply the log entries ``log_from, log_from + 1, ...`` this state lacks."""
        if log_from > self.n_applied:
            raise Behind(self.n_applied)
        for m, x, row in entries[self.n_applied - log_from:]:
            if isinstance(row, tuple):  # (shard, position in it): read from the shard file
                from .shards import open_shard

                row = np.array(open_shard(*self.files[row[0]])[row[1]], dtype=np.float32)
            self.apply(m, x, row)
        self.n_applied = max(self.n_applied, log_from + len(entries))

    def snapshot(self):
        return (self.medoids.copy(), self.rows, tuple(a.copy() for a in self.near), self.state, self.stop_below)

    def restore(self, snap, changed: dict) -> None:
        """Back to ``snap``; ``changed`` maps each medoid position the scan changed to its row before."""
        self.medoids, rows, near, self.state, self.stop_below = snap
        for m, row in changed.items():
            rows[m] = row
        for mine, saved in zip(self.near, near):
            mine[:] = saved


class SwapStates:
    """Per process: the swap states of the latest swap phases (two kept, in case a phase's end was
    not heard of), each a pool of states so that a worker running several tasks at once gives each
    its own."""

    keep = 2

    def __init__(self):
        self._lock = threading.Lock()
        self._free: dict = {}  # token -> list of idle WorkerSwapState

    def take(self, token: str, init, log_from: int) -> WorkerSwapState:
        """A state of phase ``token`` at least ``log_from`` swaps along, the furthest one free; a new
        one from ``init`` when the log starts at 0; else :class:`Behind`."""
        with self._lock:
            pool = self._free.pop(token, None)
            if pool is None:
                pool = []
                while len(self._free) >= self.keep:
                    self._free.pop(next(iter(self._free)))
            self._free[token] = pool
            usable = [s for s in pool if s.n_applied >= log_from]
            if usable:
                st = max(usable, key=lambda s: s.n_applied)
                pool.remove(st)
                return st
            if log_from > 0:  # a new state starts from the scattered one, before every swap
                raise Behind(max((s.n_applied for s in pool), default=0))
        return WorkerSwapState(*init)

    def give_back(self, token: str, st: WorkerSwapState) -> None:
        with self._lock:
            if token in self._free:
                self._free[token].append(st)

    def forget(self, token: str) -> None:
        with self._lock:
            self._free.pop(token, None)


SWAP_STATES = SwapStates()


def forget_swap_states(token: str) -> None:
    """Run on every worker when a swap phase ends: its kept states are let go (k x n float64 each)."""
    SWAP_STATES.forget(token)


def worker_address():
    """The Dask worker this runs on, or None outside one."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def scan_and_swap_task(handles, ranges, token: str, init, log_from: int, entries, send_rows: bool):
    """Scan candidate rows ``ranges[i]`` (lo, hi) of ``handles[i]``, in turn (consecutive shards,
    one block of the scan), swapping in each improving candidate at once and scanning on.

    ``entries`` are the driver's accepted swaps ``(medoid position, point, row or (shard,
    position))`` from ``log_from`` on. Returns ``(hits, scanned, worker, n_applied)``: the swaps
    made as ``(offset in the block, medoid position, row)`` (the float32 row if ``send_rows``,
    else None: the driver reads it from the shard file), the candidates scanned, this worker and
    how many logged swaps its state holds. A process whose states are all short of ``log_from``
    answers with ``hits`` None and how far along its furthest is; a task older than the state it
    finds (the driver accepted swaps since it was sent, so it dropped the task) answers the same
    without scanning.
    """
    from concurrent.futures import Future

    who = worker_address()
    try:
        st = SWAP_STATES.take(token, init, log_from)
    except Behind as e:
        return None, 0, who, e.args[0]
    if st.n_applied > log_from + len(entries):  # dropped: leave the state to the tasks that count
        SWAP_STATES.give_back(token, st)
        return None, 0, who, log_from
    st.catch_up(log_from, entries)  # a state that fails here or below is dropped, not given back
    hits, snap, changed, base = [], None, {}, 0
    for handle, (lo, hi) in zip(handles, ranges):
        if isinstance(handle, Future):  # threads: Dask resolves its own futures in a list
            handle = handle.result()
        pos = lo
        while pos < hi:
            delta, best = handle.kernels.swap_gains(handle.block, handle.rows, pos, hi, st.state, st.stop_below)
            found, scanned = first_hit(handle, pos, hi, delta, best, st.stop_below)
            if not found:
                break
            h, m, row32 = found[0]
            if snap is None:
                snap = st.snapshot()
            changed.setdefault(m, st.rows[m].copy())
            st.apply(m, int(handle.rows[pos + h]), row32)
            hits.append((base + pos + h - lo, m, row32 if send_rows else None))
            pos += scanned
        base += hi - lo
    if snap is not None:  # the driver decides which swaps count: keep only its log here
        st.restore(snap, changed)
    SWAP_STATES.give_back(token, st)
    return hits, base, who, st.n_applied
