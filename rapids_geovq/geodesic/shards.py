"""Row access to a square distance matrix, whole in memory or as row shards on disk.

The geodesic matrix for 60,000 points is 14.4 GB of float32, so the stages that use it
(k-means, Geo-VQ) only ever ask for a few rows at a time or stream over row blocks.
`DenseRows` wraps an in-memory array; `ShardedRows` wraps ``.npy`` row shards written by
:func:`rapids_geovq.geodesic.shortest_paths.geodesic_row_shards` and memory-maps them, so the
operating system's page cache, not the Python heap, holds what is being read.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

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
        :attr:`ShardedRows.order`.
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


class ShardedRows:
    """Row access to a square matrix stored as ``.npy`` row shards with a manifest.

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
        the kNN graph (nearby points in nearby rows); directories without a ``row_order`` entry hold rows 0..n-1 in order.
        Columns are always in point order.
    """

    def __init__(self, directory: str | os.PathLike, *, verify: bool = False):
        self.directory = Path(directory)
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
            arr = np.load(path, mmap_mode="r")
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


def as_rows(D) -> DenseRows | ShardedRows:
    """Wrap a matrix for row access: ndarray, :class:`DenseRows` or :class:`ShardedRows`."""
    if isinstance(D, (DenseRows, ShardedRows)):
        return D
    if hasattr(D, "take_rows") and hasattr(D, "shape"):
        return D
    return DenseRows(np.asarray(D))


def array_crc32(arr: np.ndarray, crc: int = 0, chunk_bytes: int = 1 << 26) -> int:
    """CRC-32 of an array's bytes in C order, continuing from ``crc``, read in chunks so a memory
    map is not loaded whole."""
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, chunk_bytes):
        crc = zlib.crc32(flat[start : start + chunk_bytes], crc)
    return crc


def write_manifest(directory: str | os.PathLike, n: int, dtype, shards: list[ShardInfo],
                   row_order: dict | None = None) -> None:
    """Atomically write the manifest that makes a shard directory readable by :class:`ShardedRows`.

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
