"""Row access to a square distance matrix, whole in memory or as row shard files on disk, and the
writing of those files.

The geodesic matrix for 60,000 points is 14.4 GB of float32, so the stages that use it
(k-means, Geo-VQ) only ever ask for a few rows at a time or stream over row blocks.
:class:`DenseRows` wraps an in-memory array; :class:`ShardFiles` wraps ``.npy`` row shards on
disk and memory-maps them, so the operating system's page cache, not the Python heap, holds what
is being read. (Shards *held by the workers of an engine* are
:class:`rapids_geovq.geodesic.engine.HeldShards`.)

A shard file is written to a temporary name with its full size reserved on the disk first, filled,
checksummed (CRC-32, in a ``.json`` sidecar) and renamed into place, so a killed job never leaves
a half-written shard under a final name, and a disk that fills up gives an error naming the
directory instead of a bus error from a memory-mapped write.
"""
from __future__ import annotations

import errno
import json
import os
import threading
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..common.arrays import array_crc32
from ..common.resources import ResourceError, fmt_bytes, free_disk_bytes

MANIFEST = "manifest.json"


class ShardError(RuntimeError):
    """A shard file or manifest is missing, truncated or does not match its manifest."""


class DenseRows:
    """Row access to an in-memory square matrix.

    Parameters
    ----------
    array : ndarray of shape (n, n)
        The matrix; it is not copied.
    order : int array of shape (n,), optional
        The order in which row-wise algorithms visit the rows (default 0..n-1); see
        :attr:`ShardFiles.order`.
    """

    def __init__(self, array: np.ndarray, order=None):
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[0] != array.shape[1]:
            raise ValueError(f"expected a square (n, n) distance matrix, got shape {array.shape}")
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        n = array.shape[0]
        self.order = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)

    def take_rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows ``indices`` as an array of shape (len(indices), n)."""
        return self.array[np.asarray(indices, dtype=np.int64)]

    def row_blocks(self, block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_ids, rows)`` over all rows, ``block_rows`` at a time, in :attr:`order`."""
        n = self.shape[0]
        for start in range(0, n, block_rows):
            ids = self.order[start : start + block_rows]
            yield ids, self.array[ids]


@dataclass(frozen=True)
class ShardInfo:
    """One row shard: the rows at positions ``start:stop`` of the matrix's row order, in file ``path``."""

    start: int
    stop: int
    path: str
    crc32: int


# --- shard files open in this process ---------------------------------------------------------

_OPEN: dict = {}  # path -> (crc32, weak reference to its memory map): one mapping per file and process
_OPEN_LOCK = threading.Lock()


def open_shard(path: str | os.PathLike, crc32: int | None = None) -> np.ndarray:
    """A read-only memory map of a shard file, shared by the shard handles of this process while
    any of them uses it (a file rewritten with another checksum replaces its old mapping; a mapping
    no handle holds any more is unmapped, not kept for the life of the process)."""
    key = str(path)
    with _OPEN_LOCK:
        hit = _OPEN.get(key)
        arr = hit[1]() if hit is not None and hit[0] == crc32 else None
        if arr is None:
            arr = np.load(key, mmap_mode="r")
            _OPEN[key] = (crc32, weakref.ref(arr))
        return arr


class ShardFiles:
    """Row access to a square matrix stored as ``.npy`` row shard files with a manifest.

    Parameters
    ----------
    directory : path
        Directory holding ``manifest.json`` and the shard files it lists.
    verify : bool, default=False
        Recompute every shard's CRC-32 and compare it with the manifest (reads every byte).

    Attributes
    ----------
    order : int64 ndarray of shape (n,)
        Row ids in storage order: shard files hold the rows ``order[start:stop]``. The geodesic
        engine stores rows in groups of 8 nearby points seeded in reverse Cuthill-McKee order of
        the kNN graph (nearby points in nearby rows); directories without a ``row_order`` entry
        hold rows 0..n-1 in order. Columns are always in point order.
    held : HeldShards or None
        Where an engine still holds these shards open (set by
        :func:`~rapids_geovq.geodesic.shortest_paths.geodesic_row_shards` when it computed them on
        an engine the caller keeps), so k-means on the same engine uses them in place; None for a
        directory opened from disk.
    """

    def __init__(self, directory: str | os.PathLike, *, verify: bool = False):
        self.directory = Path(directory)
        self.held = None  # HeldShards (rapids_geovq.geodesic.engine) while an engine holds them
        manifest_path = self.directory / MANIFEST
        if not manifest_path.exists():
            raise ShardError(
                f"{manifest_path} not found: the geodesic matrix in {self.directory} is incomplete; "
                "re-run the geodesic stage to (re)compute the missing shards"
            )
        meta = json.loads(manifest_path.read_text())
        n = int(meta["n"])
        self.shape = (n, n)
        self.dtype = np.dtype(meta["dtype"])
        self.shards = [ShardInfo(**s) for s in meta["shards"]]
        expected = 0
        for s in self.shards:
            if s.start != expected:
                raise ShardError(f"{manifest_path}: shards do not tile rows 0..{n} (gap at row {expected})")
            expected = s.stop
        if expected != n:
            raise ShardError(f"{manifest_path}: shards cover rows 0..{expected}, expected 0..{n}")
        self.order = np.arange(n, dtype=np.int64)
        if meta.get("row_order"):
            order_path = self.directory / meta["row_order"]["path"]
            try:
                self.order = np.load(order_path)
            except (OSError, ValueError) as exc:
                raise ShardError(f"row order {order_path} cannot be read ({exc}); re-run the geodesic stage") from exc
            if (self.order.shape != (n,) or array_crc32(self.order) != meta["row_order"]["crc32"]
                    or not np.array_equal(np.sort(self.order), np.arange(n))):
                raise ShardError(f"row order {order_path} is damaged; delete {self.directory} and re-run the geodesic stage")
        self.position = np.empty(n, dtype=np.int64)
        self.position[self.order] = np.arange(n)
        self.arrays = [self._open(s, verify) for s in self.shards]
        self.shard_rows = [self.order[s.start : s.stop] for s in self.shards]
        self._starts = np.array([s.start for s in self.shards], dtype=np.int64)

    def _open(self, shard: ShardInfo, verify: bool) -> np.ndarray:
        path = self.directory / shard.path
        try:
            arr = np.load(path, mmap_mode="r")  # a mapping of its own: the file is checked as it is now
        except (OSError, ValueError) as exc:
            raise ShardError(f"shard {path} cannot be read ({exc}); delete it and re-run the geodesic stage") from exc
        if arr.shape != (shard.stop - shard.start, self.shape[1]) or arr.dtype != self.dtype:
            raise ShardError(
                f"shard {path} has shape {arr.shape} and dtype {arr.dtype}, expected "
                f"{(shard.stop - shard.start, self.shape[1])} {self.dtype}; delete it and re-run the geodesic stage"
            )
        if verify and array_crc32(arr) != shard.crc32:
            raise ShardError(f"shard {path} fails its checksum; delete it and re-run the geodesic stage")
        return arr

    def take_rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows ``indices`` as a float array of shape (len(indices), n), in the order given."""
        indices = np.asarray(indices, dtype=np.int64)
        pos = self.position[indices]
        out = np.empty((indices.size, self.shape[1]), dtype=self.dtype)
        which = np.searchsorted(self._starts, pos, side="right") - 1
        for shard_id in np.unique(which):
            sel = np.flatnonzero(which == shard_id)
            out[sel] = self.arrays[shard_id][pos[sel] - self._starts[shard_id]]
        return out

    def row_blocks(self, block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_ids, rows)`` over all rows in storage order, never crossing a shard boundary."""
        for shard, arr in zip(self.shards, self.arrays):
            for offset in range(0, shard.stop - shard.start, block_rows):
                stop = min(offset + block_rows, shard.stop - shard.start)
                yield self.order[shard.start + offset : shard.start + stop], np.asarray(arr[offset:stop])

    def to_array(self) -> np.ndarray:
        """The whole matrix in memory, rows in point order (only sensible for small n)."""
        out = np.empty(self.shape, dtype=self.dtype)
        for rows, arr in zip(self.shard_rows, self.arrays):
            out[rows] = arr
        return out


#: The former name of :class:`ShardFiles`.
ShardedRows = ShardFiles


def as_rows(D) -> DenseRows | ShardFiles:
    """Wrap a matrix for row access: ndarray, :class:`DenseRows` or :class:`ShardFiles`."""
    if isinstance(D, (DenseRows, ShardFiles)):
        return D
    if hasattr(D, "take_rows") and hasattr(D, "shape"):
        return D
    return DenseRows(np.asarray(D))


def write_manifest(directory: str | os.PathLike, n: int, dtype, shards: list[ShardInfo],
                   row_order: dict | None = None) -> None:
    """Atomically write the manifest that makes a shard directory readable by :class:`ShardFiles`.

    ``row_order`` is ``{"path": file, "crc32": crc}`` of an int64 ``.npy`` holding the row ids in
    storage order, or None for rows 0..n-1.
    """
    directory = Path(directory)
    tmp = directory / (MANIFEST + ".tmp")
    meta = {"n": int(n), "dtype": np.dtype(dtype).str, "shards": [s.__dict__ for s in shards]}
    if row_order is not None:
        meta["row_order"] = row_order
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, directory / MANIFEST)


# --- writing shard files ----------------------------------------------------------------------

def shard_name(start: int, stop: int) -> str:
    """The file name of the shard holding row positions start:stop."""
    return f"rows_{start:07d}_{stop:07d}.npy"


def finished_shard(directory: Path, start: int, stop: int, n: int, *, log=None) -> ShardInfo | None:
    """A previously written shard if it is complete and its checksum matches, else None (a damaged
    one is removed, so it is recomputed)."""
    name = shard_name(start, stop)
    side = directory / (name + ".json")
    if not (directory / name).exists() or not side.exists():
        return None
    try:
        info = ShardInfo(**json.loads(side.read_text()))
        arr = np.load(directory / name, mmap_mode="r")
        ok = (arr.shape == (stop - start, n) and arr.dtype == np.float32 and info.start == start
              and info.stop == stop and array_crc32(arr) == info.crc32)
    except (OSError, ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        ok = False
    if not ok:
        if log is not None:
            log.warning("shard %s is truncated or corrupt; recomputing it", directory / name)
        (directory / name).unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return None
    return info


def _reserve(path: Path, directory: Path) -> None:
    """Allocate every byte of ``path`` on the disk now, so writes through a memory map cannot fail
    later for lack of space (which the kernel reports as SIGBUS, killing the process unexplained)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceError(
                f"the disk holding {directory} is full: a geodesic shard needs {fmt_bytes(size)} and "
                f"{fmt_bytes(free_disk_bytes(directory))} is free. Free disk space (or move run_dir / "
                "--work-dir to a larger disk) and run the same command again: the finished shards are "
                "kept and the computation resumes at this one") from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        # a file system without fallocate: the shard is written unreserved, as before
    finally:
        os.close(fd)


def write_shard(directory: Path, start: int, stop: int, n: int, fill, *, sync: bool = False):
    """Write the shard of row positions start:stop atomically with its checksum sidecar.

    ``fill(out)`` writes the rows into ``out``, a float32 memory map of shape (stop - start, n)
    whose disk space is already reserved, and may return a device copy of them. Returns
    ``(ShardInfo, fill's result)``. ``sync`` flushes the pages before the rename (several nodes
    sharing a file system); without it a shard torn by a crash of the machine fails its CRC-32
    when reused and is recomputed.
    """
    name = shard_name(start, stop)
    tmp = directory / f"{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"  # one per writer
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(stop - start, n))
        _reserve(tmp, directory)
        kept = fill(out)
        if sync:
            out.flush()
        crc = array_crc32(out)
        del out
        os.replace(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    info = ShardInfo(start, stop, name, crc)
    side_tmp = tmp.with_name(tmp.name.replace(".tmp", ".json.tmp"))
    side_tmp.write_text(json.dumps(info.__dict__))
    os.replace(side_tmp, directory / (name + ".json"))
    return info, kept
