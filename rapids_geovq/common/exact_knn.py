"""Exact nearest neighbours from approximate candidates, on NumPy or CuPy arrays.

Every kNN search of the package (scikit-learn on the CPU, CuPy distance products or cuML on the
GPU) returns candidates from a fast but inexact method (the GEMM form |x|^2 + |y|^2 - 2xy, or
float32). :func:`finish_knn` turns them into the exact answer: candidates are re-ranked by exact
differences (ties to the lower index) and each row is *proven* complete from a bound on the
approximate distances' error; a row that cannot be proven is recomputed against all points. So
every backend returns the same neighbour lists, ties included.
"""
from __future__ import annotations

import numpy as np

from .arrays import array_module, squared_norms, to_host

#: Spare candidates fetched from an approximate (GEMM) search, re-ranked with exact differences.
RERANK_EXTRA = 4
#: Bound on the relative error of a float64 GEMM squared distance (|x|^2 + |y|^2 - 2xy), with margin.
GEMM_REL_ERR = 1e-12


def check_latents(Z, *, min_rows: int = 2, what: str = "latents"):
    """Validate latents: a finite 2-D real array with at least ``min_rows`` rows; returns it as
    float64 in the same array module (NumPy, or CuPy for device arrays).

    ``min_rows`` is 2 for points a graph is built on and 1 for query points.
    """
    xp = array_module(Z)
    Z = xp.asarray(Z)
    if Z.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (n_points, n_dims), got shape {tuple(Z.shape)}")
    if Z.shape[0] < min_rows:
        need = "to build a graph" if min_rows > 1 else "to query"
        raise ValueError(f"need at least {min_rows} {what} {need}, got {Z.shape[0]}")
    if not (np.issubdtype(Z.dtype, np.floating) or np.issubdtype(Z.dtype, np.integer)):
        raise ValueError(f"{what} must be real numbers, got dtype {Z.dtype}")
    bad = ~xp.isfinite(Z).all(axis=1)
    if bool(bad.any()):
        rows = np.flatnonzero(to_host(bad))
        raise ValueError(
            f"{what} contain NaN or inf in {rows.size} row(s) (first: {rows[:5].tolist()}); "
            "the encoder diverged or the file is corrupt: retrain the VAE (delete its checkpoint) "
            "or drop those rows before building the graph"
        )
    return Z.astype(xp.float64, copy=False)


def check_k(k: int, n: int, *, self_query: bool = True) -> None:
    """``k`` neighbours must exist among ``n`` points (one fewer when a point is not its own)."""
    limit = n - 1 if self_query else n
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a whole number of neighbours, got {k!r}")
    if not 1 <= k <= limit:
        raise ValueError(f"k={k} neighbours requested but only {limit} candidate points exist; use k <= {limit}")


def finish_knn(Q, Z, cand, approx_sq, k: int, *, rel_err: float, self_query: bool = False, start: int = 0):
    """Exact neighbours from approximate candidates: re-rank by exact distance (ties to the lower
    index) and prove each row complete, recomputing in full the rare rows it cannot prove.

    Works on NumPy or CuPy arrays alike (the kNN search of every backend ends here).

    Parameters
    ----------
    Q : (m, d) float64 queries; Z : (n, d) float64 reference points
    cand : (m, c) int candidate indices (distinct per row; c > k unless c == all points)
    approx_sq : (m, c) approximate squared distances of the candidates; every point left out of a
        row's candidates has an approximate squared distance >= that row's largest.
    rel_err : bound on |approximate - exact| squared distance, relative to |q|^2 + max |z|^2
    self_query : Q is Z[start:start + m] and each point is excluded from its own neighbours

    Returns
    -------
    distances : float64 ndarray (m, k), indices : int64 ndarray (m, k), on the host
    """
    xp = array_module(cand)
    m, c = cand.shape
    cand = cand.astype(xp.int64)
    diff = Q[:, None, :] - Z[cand]
    exact = xp.sqrt(squared_norms(diff))
    # rank of each candidate under (distance, index): a permutation, so any sort orders it
    before = (exact[:, None, :] < exact[:, :, None]) | (
        (exact[:, None, :] == exact[:, :, None]) & (cand[:, None, :] < cand[:, :, None]))
    order = xp.argsort(before.sum(axis=2), axis=1)[:, :k]
    dist = xp.take_along_axis(exact, order, axis=1)
    ind = xp.take_along_axis(cand, order, axis=1)
    n = Z.shape[0]
    if c < n - (1 if self_query else 0):
        # Points outside the candidates are at least this far (squared) in exact arithmetic:
        scale = (Q * Q).sum(axis=1) + float((Z * Z).sum(axis=1).max())
        floor = approx_sq.max(axis=1) - rel_err * scale
        unproven = xp.flatnonzero(dist[:, k - 1] ** 2 >= floor)
        if unproven.size:
            rows = to_host(unproven)
            fd, fi = full_rows(to_host(Q[unproven]), to_host(Z), k, rows + start if self_query else None)
            dist[unproven] = xp.asarray(fd)
            ind[unproven] = xp.asarray(fi)
    return to_host(dist), to_host(ind)


def full_rows(Q: np.ndarray, Z: np.ndarray, k: int, self_index):
    """Exact (distance, index)-ordered neighbours against all points (rows a search could not prove)."""
    dist = np.empty((Q.shape[0], k))
    ind = np.empty((Q.shape[0], k), np.int64)
    for r in range(Q.shape[0]):
        d = np.sqrt(squared_norms(Z - Q[r]))
        if self_index is not None:
            d[self_index[r]] = np.inf
        o = np.lexsort((np.arange(d.size), d))[:k]
        dist[r], ind[r] = d[o], o
    return dist, ind
