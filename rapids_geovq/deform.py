"""Deformed MNIST: any number of seeded random deformations of the 60,000 training digits.

In the manner of infiMNIST (Loosli, Canu and Bottou 2007, "Training invariant support vector
machines using selective sampling"), every image is a source digit under a random affine map
(rotation, isotropic scale, shear, translation) composed with an elastic deformation (Simard,
Steinkraus and Platt 2003, "Best practices for convolutional neural networks applied to visual
document analysis"): a field of independent uniform(-1, 1) pixel displacements, smoothed by a
Gaussian of standard deviation ``sigma`` pixels and scaled by ``alpha`` pixels.

Mapping and reproducibility
---------------------------
Image ``i`` of ``n`` is a deformation of source digit ``i % m`` (``m`` = number of source images,
60,000 for MNIST), so its label is ``source_labels[i % m]``. With ``keep_originals=True`` the first
``m`` images are the source digits themselves, undeformed (infiMNIST's convention of putting the
originals first), and deformations start at ``i = m``.

The random numbers of image ``i`` come from the generator of its *chunk* ``i // CHUNK``, seeded by
``numpy.random.SeedSequence(seed, spawn_key=(chunk,))``, and every chunk is always computed whole
(a partial first or last chunk is computed in full and sliced). An image therefore depends only on
``seed``, the deformation ranges, the source digits and ``i``: not on ``n``, the batch size, where
a batch starts, or the number of torch threads. The first ``n'`` images of a set of ``n > n'`` are
the set of ``n'``.

Parameter ranges (defaults of :class:`DeformationRanges`)
---------------------------------------------------------
All parameters are drawn independently and uniformly per image:

* rotation in [-12, 12] degrees. Rotations well below the ±30 to 45 degrees at which a 6 and a 9,
  or a 1 and a slanted 7, become hard to tell apart; MNIST writers' own slant varies by about this.
* scale in [0.9, 1.1], isotropic. MNIST digits are size-normalised into a 20 x 20 box inside the
  28 x 28 frame, so 1.1 plus the translation below still keeps nearly all ink inside the frame.
* shear (horizontal, x += shear * y) in [-0.2, 0.2], i.e. up to about 11 degrees of extra slant.
* translation in [-2, 2] pixels along each axis (the frame leaves a 4-pixel margin around the box).
* elastic ``sigma`` in [4, 6] pixels and ``alpha`` in [30, 36] pixels, the range around Simard et
  al.'s sigma = 4, alpha = 34 for 28 x 28 digits. The smoothed field's per-pixel standard deviation
  is about ``alpha / (2 sqrt(3 pi) sigma)``, i.e. 0.8 to 1.5 pixels: strokes wobble and bend, but
  loops stay closed and strokes stay connected. Smaller sigma at the same alpha gives rougher,
  less digit-like fields; larger alpha tears thin strokes.

The defaults were checked by eye on grids of deformations beside their sources
(``benchmarks/million_latents.py --preview`` writes one, or call :func:`preview_grid`).

Computation
-----------
Per chunk, with torch on the CPU: the Gaussian smoothing is separable and is applied as two
batched matrix products, ``G @ U @ G.T``, where ``G`` (28 x 28, one per image since ``sigma``
varies) folds the 1-D Gaussian kernel (truncated at 4 sigma) and the boundary into one matrix;
the boundary is half-sample symmetric (scipy.ndimage's "reflect"), so the field near the border
is as strong as inside. The smoothed field is added to the affine sampling grid (the grid that
``torch.nn.functional.affine_grid`` makes, built here as one matrix product) and the source digit
is resampled bilinearly with ``grid_sample``, zeros outside the frame, then rounded to uint8.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

#: Images per random-number stream and per unit of computation (see the module docstring). Part of
#: the definition of the data set: changing it changes the images a seed gives.
CHUNK = 1000
#: Side of the images in pixels.
SIDE = 28
#: Gaussian kernels are truncated at this many standard deviations (as scipy.ndimage does).
TRUNCATE = 4.0


@dataclass(frozen=True)
class DeformationRanges:
    """Ranges of the per-image random deformation parameters (each drawn uniformly).

    Parameters
    ----------
    rotation : float, default=12.0
        Maximum absolute rotation in degrees.
    scale : (float, float), default=(0.9, 1.1)
        Range of the isotropic scale factor (> 0).
    shear : float, default=0.2
        Maximum absolute horizontal shear factor (x += shear * y).
    translation : float, default=2.0
        Maximum absolute translation in pixels, along each axis.
    sigma : (float, float), default=(4.0, 6.0)
        Range of the standard deviation, in pixels, of the Gaussian that smooths the elastic
        displacement field (> 0).
    alpha : (float, float), default=(30.0, 36.0)
        Range of the factor, in pixels, that scales the smoothed field (>= 0; 0 turns the elastic
        part off).

    See the module docstring for why these values.
    """

    rotation: float = 12.0
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 0.2
    translation: float = 2.0
    sigma: tuple[float, float] = (4.0, 6.0)
    alpha: tuple[float, float] = (30.0, 36.0)

    def __post_init__(self) -> None:
        for name in ("rotation", "shear", "translation"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite maximum >= 0, got {v!r}; give the largest "
                                 f"absolute value (the range is [-{name}, {name}])")
        for name, positive in (("scale", True), ("sigma", True), ("alpha", False)):
            lo_hi = tuple(float(x) for x in getattr(self, name))
            if len(lo_hi) != 2 or not all(math.isfinite(x) for x in lo_hi) or lo_hi[0] > lo_hi[1]:
                raise ValueError(f"{name} must be a (low, high) pair of finite numbers with low <= "
                                 f"high, got {getattr(self, name)!r}")
            if (lo_hi[0] <= 0) if positive else (lo_hi[0] < 0):
                raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {lo_hi!r}")
            object.__setattr__(self, name, lo_hi)

    @classmethod
    def identity(cls) -> "DeformationRanges":
        """Ranges that deform nothing (every image is its source digit, up to resampling)."""
        return cls(rotation=0.0, scale=(1.0, 1.0), shear=0.0, translation=0.0, sigma=(4.0, 4.0),
                   alpha=(0.0, 0.0))

    def to_dict(self) -> dict:
        """JSON-ready record of the ranges."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


class DeformedMNIST:
    """``n`` seeded random deformations of source digits, computed on demand in batches.

    Parameters
    ----------
    images : uint8 array of shape (m, 28, 28)
        Source digits (MNIST's training set for :func:`deformed_mnist`).
    labels : integer array of shape (m,)
        Their labels.
    n : int
        Number of images in the set.
    seed : int, default=0
        One seed gives the same images in the same order, however they are batched.
    ranges : DeformationRanges, optional
        Parameter ranges; the defaults are documented in the module docstring.
    keep_originals : bool, default=False
        Images ``0 .. m-1`` are the source digits themselves (bit-exact), as in infiMNIST;
        deformations follow.

    Notes
    -----
    Image ``i`` comes from source ``i % m``. Only the source digits (47 MB for MNIST) are held;
    images are computed when asked for.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, n: int, *, seed: int = 0,
                 ranges: Optional[DeformationRanges] = None, keep_originals: bool = False) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
            raise ValueError(f"source images must be uint8 (m, {SIDE}, {SIDE}), got {images.dtype} "
                             f"{images.shape}; pass MNIST's train_images as loaded by load_mnist")
        if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
            raise ValueError(f"need one integer label per source image ({images.shape[0]}), got "
                             f"{labels.dtype} {labels.shape}")
        if images.shape[0] == 0:
            raise ValueError("no source images given; pass at least one digit")
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.source_images = np.ascontiguousarray(images)
        self.source_labels = np.ascontiguousarray(labels)
        self.n = int(n)
        self.seed = int(seed)
        self.ranges = ranges if ranges is not None else DeformationRanges()
        self.keep_originals = bool(keep_originals)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"DeformedMNIST(n={self.n}, sources={self.source_images.shape[0]}, seed={self.seed}, "
                f"keep_originals={self.keep_originals}, ranges={self.ranges})")

    def settings(self) -> dict:
        """JSON-ready record of everything that determines the images (except the sources'
        pixels, summarised by their count and a CRC-32)."""
        import zlib

        return {"n": self.n, "seed": self.seed, "chunk": CHUNK, "keep_originals": self.keep_originals,
                "ranges": self.ranges.to_dict(), "n_sources": int(self.source_images.shape[0]),
                "sources_crc32": zlib.crc32(self.source_images.tobytes()) & 0xFFFFFFFF,
                "labels_crc32": zlib.crc32(self.source_labels.astype(np.uint8).tobytes()) & 0xFFFFFFFF}

    # ------------------------------------------------------------------ mapping
    def sources(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Source-digit index of images ``start .. stop-1``: int64 array ``(stop - start,)``."""
        start, stop = self._check_range(start, stop)
        return np.arange(start, stop, dtype=np.int64) % self.source_images.shape[0]

    def labels(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Labels of images ``start .. stop-1``: uint8 array ``(stop - start,)``."""
        return self.source_labels[self.sources(start, stop)].astype(np.uint8)

    # ------------------------------------------------------------------ images
    def images(self, start: int = 0, stop: Optional[int] = None, *, dtype=np.uint8) -> np.ndarray:
        """Images ``start .. stop-1``.

        Parameters
        ----------
        start, stop : int
            Half-open range within ``0 .. n``; ``stop`` defaults to ``n``.
        dtype : {numpy.uint8, numpy.float32}
            uint8: pixel values rounded to 0..255 like MNIST's. float32: the same images as
            ``uint8 / 255`` (what :func:`rapids_geovq.data.images_to_float` gives), shape
            (B, 28, 28).

        Returns
        -------
        array of shape (stop - start, 28, 28)
        """
        start, stop = self._check_range(start, stop)
        dtype = _check_dtype(dtype)
        out = np.empty((stop - start, SIDE, SIDE), np.uint8)
        c0, c1 = start // CHUNK, -(-stop // CHUNK)
        for c in range(c0, c1):
            lo, hi = max(start, c * CHUNK), min(stop, (c + 1) * CHUNK)
            out[lo - start:hi - start] = self._chunk(c)[lo - c * CHUNK:hi - c * CHUNK]
        if dtype == np.float32:
            return out.astype(np.float32) / np.float32(255)
        return out

    def batches(self, batch_size: int = 10000, *, start: int = 0, stop: Optional[int] = None,
                dtype=np.uint8) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Iterate over images ``start .. stop-1`` in batches.

        Parameters
        ----------
        batch_size : int, default=10000
            Images per batch (the last one may be smaller). Does not change the images.
        start, stop : int
            Range of images; ``stop`` defaults to ``n``.
        dtype : {numpy.uint8, numpy.float32}
            As in :meth:`images`.

        Yields
        ------
        offset : int
            Index of the batch's first image.
        images : array (B, 28, 28) of ``dtype``
        labels : uint8 array (B,)
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        start, stop = self._check_range(start, stop)
        dtype = _check_dtype(dtype)
        for lo in range(start, stop, batch_size):
            hi = min(stop, lo + batch_size)
            yield lo, self.images(lo, hi, dtype=dtype), self.labels(lo, hi)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        return self.batches()

    def _check_range(self, start: int, stop: Optional[int]) -> tuple[int, int]:
        stop = self.n if stop is None else stop
        if not (0 <= start <= stop <= self.n):
            raise IndexError(f"image range [{start}, {stop}) is outside [0, {self.n}); the set has "
                             f"n={self.n} images (create it with a larger n for more)")
        return int(start), int(stop)

    def _chunk(self, c: int) -> np.ndarray:
        """All CHUNK images of chunk ``c`` as uint8 (CHUNK, 28, 28), independent of ``n``."""
        import torch

        m = self.source_images.shape[0]
        idx = np.arange(c * CHUNK, (c + 1) * CHUNK, dtype=np.int64)
        src = idx % m
        params, noise = chunk_randomness(self.seed, c, self.ranges)
        planes = torch.from_numpy(self.source_images[src].astype(np.float32)).unsqueeze(1)
        out = deform(planes, params, noise, max_sigma=self.ranges.sigma[1])
        if self.keep_originals:
            orig = idx < m
            out[orig] = self.source_images[src[orig]]
        return out


def _check_dtype(dtype) -> type:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.uint8), np.dtype(np.float32)):
        raise ValueError(f"dtype must be numpy.uint8 or numpy.float32, got {dt}")
    return dt.type


def chunk_randomness(seed: int, chunk: int, ranges: DeformationRanges) -> tuple[dict, np.ndarray]:
    """Deformation parameters and raw displacement noise of the CHUNK images of one chunk.

    Returns
    -------
    params : dict of float64 arrays (CHUNK,)
        ``rotation`` (degrees), ``scale``, ``shear``, ``tx``, ``ty`` (pixels), ``sigma``, ``alpha``.
    noise : float32 array (CHUNK, 28, 2, 28)
        Uniform(-1, 1) displacements before smoothing, indexed (image, row, x or y, column).
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(chunk,)))
    # Drawn in a fixed order and always for all parameters, so that a zero range leaves the
    # other parameters' values unchanged.
    u = rng.random((7, CHUNK))
    noise = rng.random((CHUNK, SIDE, 2, SIDE), dtype=np.float32)
    noise *= 2
    noise -= 1

    def sym(v, a):
        return (2 * v - 1) * a

    def lohi(v, r):
        return r[0] + (r[1] - r[0]) * v

    r = ranges
    params = {"rotation": sym(u[0], r.rotation), "scale": lohi(u[1], r.scale), "shear": sym(u[2], r.shear),
              "tx": sym(u[3], r.translation), "ty": sym(u[4], r.translation),
              "sigma": lohi(u[5], r.sigma), "alpha": lohi(u[6], r.alpha)}
    return params, noise


def gaussian_matrices(sigma: np.ndarray, *, max_sigma: Optional[float] = None,
                      side: int = SIDE) -> np.ndarray:
    """Matrices of 1-D Gaussian smoothing with half-sample symmetric boundaries.

    Parameters
    ----------
    sigma : float64 array (B,)
        Standard deviations in pixels (> 0).
    max_sigma : float, optional
        Upper bound of ``sigma`` that fixes the size of the intermediate weight table (default
        ``sigma.max()``); the result does not depend on it.

    Returns
    -------
    float64 array (B, side, side)
        ``G[b] @ v`` smooths a length-``side`` signal ``v`` with a Gaussian of ``sigma[b]`` truncated
        at ``TRUNCATE * sigma[b]`` (weights normalised to sum 1), reflecting ``v`` about its ends
        as ``scipy.ndimage.gaussian_filter1d(v, sigma, mode="reflect")`` does. Rows sum to 1.
    """
    sigma = np.asarray(sigma, np.float64)
    radius = int(TRUNCATE * float(sigma.max() if max_sigma is None else max_sigma) + 0.5)
    t = np.arange(-radius, radius + 1)
    radii = (TRUNCATE * sigma + 0.5).astype(np.int64)
    w = np.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    w[np.abs(t)[None, :] > radii[:, None]] = 0  # each image's own truncation radius
    w /= w.sum(axis=1, keepdims=True)
    # Which input sample each (output i, offset t) reads, folded into 0..side-1 (period 2 side,
    # mirrored), as a 0/1 table S[t, i, j]; then G[b] = sum_t w[b, t] S[t] is one matrix product.
    j = (np.arange(side)[:, None] + t[None, :]) % (2 * side)
    j = np.where(j >= side, 2 * side - 1 - j, j)
    S = np.zeros((t.size, side, side))
    for ti in range(t.size):
        S[ti, np.arange(side), j[:, ti]] = 1.0
    return (w @ S.reshape(t.size, side * side)).reshape(sigma.size, side, side)


_BASIS = None


def _affine_basis():
    """(6, 28 * 28 * 2) float32: row r holds what theta's entry r multiplies in the grid."""
    global _BASIS
    if _BASIS is None:
        import torch

        x = (2 * np.arange(SIDE) + 1) / SIDE - 1  # pixel centres, align_corners=False
        basis = np.zeros((6, SIDE, SIDE, 2), np.float32)
        for comp in (0, 1):  # grid x = a00 x + a01 y + b0; grid y = a10 x + a11 y + b1
            basis[3 * comp + 0, :, :, comp] = x[None, :]
            basis[3 * comp + 1, :, :, comp] = x[:, None]
            basis[3 * comp + 2, :, :, comp] = 1
        _BASIS = torch.from_numpy(basis.reshape(6, -1))
    return _BASIS


def deform(src, params: dict, noise: np.ndarray, *, max_sigma: Optional[float] = None) -> np.ndarray:
    """Apply one affine map and one elastic field per image.

    Parameters
    ----------
    src : torch.Tensor float32 (B, 1, 28, 28)
        Source digits, pixel values 0..255.
    params : dict of float64 arrays (B,)
        As returned by :func:`chunk_randomness`.
    noise : float32 array (B, 28, 2, 28)
        Raw uniform(-1, 1) displacements (image, row, x or y, column).
    max_sigma : float, optional
        Passed to :func:`gaussian_matrices`.

    Returns
    -------
    uint8 array (B, 28, 28)
        Output pixel ``p`` (relative to the image centre, in pixels) is the source sampled
        bilinearly at ``M^-1 (p - t) + alpha * (G U G^T)(p)``, where ``M = rotation @ shear @
        scale`` is the forward affine map, ``t`` the translation and ``U`` the noise; then rounded.
    """
    import torch
    import torch.nn.functional as F

    B = src.shape[0]
    th = np.deg2rad(params["rotation"])
    c, s, h, k = np.cos(th), np.sin(th), params["shear"], 1.0 / params["scale"]
    # M^-1 = scale^-1 @ shear^-1 @ rotation^-1, in float64; the translation moved inside.
    a00, a01 = k * (c - h * s), k * (s + h * c)
    a10, a11 = -k * s, k * c
    # affine_grid works in coordinates where the frame spans [-1, 1]: one pixel is 2/28.
    b0 = -(a00 * params["tx"] + a01 * params["ty"]) * (2.0 / SIDE)
    b1 = -(a10 * params["tx"] + a11 * params["ty"]) * (2.0 / SIDE)
    theta = torch.from_numpy(np.stack([a00, a01, b0, a10, a11, b1], axis=1).astype(np.float32))
    # The grid affine_grid(theta) builds, as one (B, 6) @ (6, 28 * 28 * 2) product (affine_grid's
    # batched 784 x 3 products are several times slower on the CPU).
    grid = (theta @ _affine_basis()).view(B, SIDE, SIDE, 2)

    alpha = params["alpha"]
    if np.any(alpha != 0):
        G = gaussian_matrices(params["sigma"], max_sigma=max_sigma)
        # alpha (pixels -> grid units 2/28) folded into the left factor: no pass over the field.
        GL = torch.from_numpy((G * (alpha * (2.0 / SIDE))[:, None, None]).astype(np.float32))
        GT = torch.from_numpy(G.transpose(0, 2, 1).astype(np.float32))
        u = torch.from_numpy(noise).view(B, SIDE, 2 * SIDE)
        v = torch.bmm(GL, u)  # smooth along rows, both components at once: (B, 28, 2 * 28)
        v = torch.bmm(v.view(B, 2 * SIDE, SIDE), GT)  # then along columns: (B, 28 * 2, 28)
        grid += v.view(B, SIDE, 2, SIDE).permute(0, 1, 3, 2)  # (image, row, column, x or y)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # + 0.5 then truncation: rounding half up (values are >= 0 after the clamp)
    return out[:, 0].add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


def deformed_mnist(n: int, *, seed: int = 0, ranges: Optional[DeformationRanges] = None,
                   keep_originals: bool = False, data_dir: Optional[PathLike] = None) -> DeformedMNIST:
    """``n`` deformations of MNIST's 60,000 training digits (image ``i`` from digit ``i % 60000``).

    Parameters are those of :class:`DeformedMNIST`; ``data_dir`` is passed to
    :func:`rapids_geovq.data.load_mnist`.
    """
    from .data import load_mnist

    mnist = load_mnist(data_dir=data_dir)
    return DeformedMNIST(mnist.train_images, mnist.train_labels, n, seed=seed, ranges=ranges,
                         keep_originals=keep_originals)


def encode_deformed(model, data: DeformedMNIST, latents_path: PathLike,
                    labels_path: Optional[PathLike] = None, *, start: int = 0, batch_size: int = 10000,
                    flush_every: int = 100000, on_flush: Optional[Callable[[int], None]] = None,
                    progress: bool = False):
    """Encode a deformed set with a VAE's posterior means into ``.npy`` memory maps.

    Images are made and encoded one batch at a time, so memory stays at a few batches whatever
    ``len(data)``. The images encoded are the uint8 ones divided by 255, i.e. exactly what
    :func:`rapids_geovq.data.images_to_float` would give for the stored images.

    Parameters
    ----------
    model : rapids_geovq.models.vae.VAE
        Trained VAE (e.g. from :func:`rapids_geovq.models.training.load_checkpoint`); its
        ``encode`` means are stored.
    data : DeformedMNIST
    latents_path : path
        ``.npy`` file for float32 latents of shape (len(data), latent_dim). Created when
        ``start == 0``; opened for update when resuming.
    labels_path : path, optional
        ``.npy`` file for the uint8 labels (len(data),), written whole at the start (labels are
        known without making images).
    start : int, default=0
        Resume: rows before ``start`` are taken as already written.
    batch_size : int, default=10000
        Images per encoder call.
    flush_every : int, default=100000
        Rows between flushes of the memory map to disk; ``on_flush(rows_done)`` is called after
        each flush and at the end (record progress there to resume after a crash).
    progress : bool, default=False
        Print one line per flush.

    Returns
    -------
    numpy.memmap float32 (len(data), latent_dim)
        The latents, opened read-only.
    """
    import torch

    latents_path = Path(latents_path)
    n = len(data)
    dim = int(model.config.latent_dim)
    if not 0 <= start <= n:
        raise ValueError(f"start={start} is outside 0..{n}")
    if labels_path is not None:
        _save_atomic(Path(labels_path), data.labels())
    if start == 0:
        z = np.lib.format.open_memmap(latents_path, mode="w+", dtype=np.float32, shape=(n, dim))
    else:
        z = np.load(latents_path, mmap_mode="r+")
        if z.shape != (n, dim) or z.dtype != np.float32:
            raise ValueError(f"{latents_path} holds {z.dtype} {z.shape}, not float32 {(n, dim)}: it "
                             f"belongs to another run; delete it (or resume with start=0)")
    was_training = model.training
    model.eval()
    t0, since = time.perf_counter(), start
    try:
        with torch.no_grad():
            for lo, img, _ in data.batches(batch_size, start=start):
                x = torch.from_numpy(img.reshape(len(img), -1).astype(np.float32))
                x /= 255.0
                mu = model.encode(x)[0]
                z[lo:lo + len(img)] = mu.numpy()
                done = lo + len(img)
                if done - since >= flush_every or done == n:
                    z.flush()
                    since = done
                    if on_flush is not None:
                        on_flush(done)
                    if progress:
                        rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
                        print(f"encoded {done:,}/{n:,} ({rate:,.0f} images/s)", flush=True)
    finally:
        model.train(was_training)
    z.flush()
    del z
    return np.load(latents_path, mmap_mode="r")


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def preview_grid(data: DeformedMNIST, path: PathLike, *, count: int = 100, columns: int = 10,
                 start: int = 0) -> None:
    """Save a PNG of ``count`` images beside their source digits (for checking by eye).

    Each cell shows the source digit on the left and its deformation on the right, with the label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stop = min(len(data), start + count)
    imgs = data.images(start, stop)
    srcs = data.source_images[data.sources(start, stop)]
    labels = data.labels(start, stop)
    rows = -(-len(imgs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 0.95), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ax in enumerate(axes.ravel()[:len(imgs)]):
        pair = np.concatenate([srcs[i], np.full((SIDE, 2), 128, np.uint8), imgs[i]], axis=1)
        ax.imshow(pair, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{start + i}: {labels[i]}", fontsize=7, pad=1)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)
