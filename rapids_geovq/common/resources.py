"""Memory and disk: what this process uses, what the machine has, and what a stage will need.

One reader of Linux's ``/proc`` files serves everything (stage records, benchmarks, the checks
that refuse a job before it allocates what the machine cannot hold). Where ``/proc`` cannot be
read (not Linux), readings fall back to ``resource.getrusage`` or to "unknown" and the checks let
the work go ahead.
"""
from __future__ import annotations

import logging
import resource
import shutil
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class ResourceError(MemoryError):
    """The machine cannot hold what a stage needs; the message names settings that would fit."""


def proc_field_bytes(field: str, path: str = "/proc/self/status") -> int | None:
    """A ``Name:  value kB`` field of a ``/proc`` file in bytes, or None where it cannot be read."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory_bytes() -> int:
    """MemAvailable of the machine; a very large number where it cannot be read."""
    got = proc_field_bytes("MemAvailable", "/proc/meminfo")
    return (1 << 62) if got is None else got


def reset_peak_rss() -> None:
    """Reset this process's peak-RSS counter (Linux), so each stage reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM; ru_maxrss where /proc is missing)."""
    peak = proc_field_bytes("VmHWM")
    if peak is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak


def children_peak_rss_bytes() -> int:
    """The largest peak RSS of any finished or waited-for child process (worker processes)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


class AnonPeak:
    """Samples this process's anonymous resident memory (RssAnon) in a background thread.

    Peak RSS counts pages of memory-mapped files too (the geodesic shards being read); RssAnon is
    the memory the process itself allocated, which is what must fit in RAM. Use as a context
    manager; ``peak`` is in bytes.
    """

    def __init__(self, interval: float = 0.2):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    @staticmethod
    def _read() -> int:
        return proc_field_bytes("RssAnon") or 0

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            self._stop.wait(interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())


def fmt_bytes(nbytes: float) -> str:
    """Bytes in the unit that reads best (MiB below 1 GiB)."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def free_disk_bytes(path) -> int:
    """Free bytes on the file system holding ``path`` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


# --- what the geodesic and k-means stages need ----------------------------------------------

def estimate_resources(n: int, nnz: int, *, n_workers: int = 1, n_clusters: int = 64,
                       work_bytes: int = 0) -> dict:
    """Bytes the geodesic and k-means stages need for n points and a graph of nnz edges.

    ``work_bytes`` is one shortest-path worker's search state (the solver's ``work_bytes(n)``).
    Returns ``disk`` (the float32 matrix), ``per_worker`` (the renumbered graph plus one search
    state), ``memory`` (what ``n_workers`` workers of one process hold), ``driver`` (the k-means
    state: medoid rows in float64 and per-point arrays) and ``matrix`` (the matrix in memory).
    """
    plan = (n + 1) * 8 + nnz * (4 + 8) + n * 8 + nnz * (8 + 4) + (n + 1) * 4
    return {"disk": n * n * 4, "per_worker": plan + work_bytes, "n_workers": n_workers,
            "memory": plan + n_workers * work_bytes, "driver": 2 * n_clusters * n * 8 + 64 * n,
            "matrix": n * n * 4}


def largest_n(budget_bytes: float) -> int:
    """The most points whose float32 n x n matrix fits in ``budget_bytes``."""
    return int(np.sqrt(max(budget_bytes, 0) / 4))


def check_resources(n: int, nnz: int, out_dir: Path | None, *, todo_rows: int | None = None,
                    n_workers: int = 1, in_memory: bool = False, work_bytes: int = 0) -> dict:
    """Refuse, before allocating, what this machine cannot hold; return the estimate.

    ``n_workers`` counts the workers that share this machine's memory (threads of this process);
    ``todo_rows`` the rows still to be written to ``out_dir`` (all by default); ``work_bytes`` one
    worker's search state.

    Raises
    ------
    ResourceError
        Naming what is short and the settings that would fit.
    """
    est = estimate_resources(n, nnz, n_workers=n_workers, work_bytes=work_bytes)
    have = available_memory_bytes()
    if in_memory:
        need = est["matrix"] + est["memory"]
        if need > 0.9 * have:
            raise ResourceError(
                f"a {n}x{n} float32 geodesic matrix needs {fmt_bytes(need)} of memory and "
                f"{fmt_bytes(have)} is available; write it as row shards on disk with "
                f"geodesic_row_shards(graph, out_dir), or use at most {largest_n(0.8 * have):,} points"
            )
    if est["memory"] > 0.9 * have:
        fit = max(int((0.9 * have - est["per_worker"]) // max(est["per_worker"], 1)), 0)
        raise ResourceError(
            f"{n_workers} geodesic workers need {fmt_bytes(est['memory'])} of memory and "
            f"{fmt_bytes(have)} is available; set geodesic.n_workers={max(fit, 1)} or fewer"
            + ("" if fit >= 1 else f", or use at most {largest_n(0.1 * have):,} points (data.n_train)")
        )
    if out_dir is not None:
        rows = n if todo_rows is None else todo_rows
        need = rows * n * 4
        free = free_disk_bytes(out_dir)
        if need > free:
            raise ResourceError(
                f"the geodesic shards still to write need {fmt_bytes(need)} on {out_dir} and "
                f"{fmt_bytes(free)} is free; free disk space, put the shards on a disk with {fmt_bytes(need)} free "
                "(run_dir in a job, --work-dir for the codebook command), or use at most "
                f"{largest_n(free + (n - rows) * n * 4):,} points (data.n_train in a job)"
            )
        if n * n * 4 > have:
            log.warning("the %.1f GiB geodesic matrix is larger than the %.1f GiB of free memory: k-means "
                        "will re-read its shards from disk on every pass (slow); more workers on more "
                        "nodes, or fewer points, keep it in memory", n * n * 4 / 2**30, have / 2**30)
    return est
