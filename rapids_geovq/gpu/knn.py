"""Exact brute-force kNN on the GPU: CuPy distance products, or cuML's brute-force search.

Both end in :func:`rapids_geovq.common.exact_knn.finish_knn`, as the CPU search does: candidates are
re-ranked by exact differences with ties to the lower index, and a row whose candidates cannot
be proven to hold its k nearest (many points tied at the k-th distance) is recomputed in full.
The neighbour lists are therefore the CPU reference's, ties included.

The latents can come straight from the encoder: a CUDA torch tensor is read through DLPack
without a copy (:func:`rapids_geovq.common.arrays.from_torch`).
"""
from __future__ import annotations

import numpy as np

from ..common.arrays import array_module, from_torch
from ..common.exact_knn import GEMM_REL_ERR, RERANK_EXTRA, check_k, check_latents, finish_knn

#: Query rows per distance block: 4096 x 60,000 float64 is 2 GB of device memory.
BLOCK_ROWS = 4096
#: cuML computes in float32: a bound on its squared-distance error relative to |q|^2 + max |z|^2.
FLOAT32_REL_ERR = 1e-5


def _latents(Z, xp=None):
    """Checked float64 latents on the device: a torch tensor is shared (DLPack), not copied."""
    if hasattr(Z, "detach"):
        Z = from_torch(Z)
    if xp is not None:
        Z = xp.asarray(Z)
    return check_latents(Z)


def _smallest(D2, m: int, xp):
    """Column indices of the m smallest entries of each row (in no particular order)."""
    if xp is not np:
        try:
            import torch

            if torch.cuda.is_available():  # torch.topk is a radix select; CuPy's partition sorts whole rows
                return xp.from_dlpack(torch.topk(torch.from_dlpack(D2), m, dim=1, largest=False, sorted=False).indices)
        except ImportError:
            pass
    return xp.argpartition(D2, m - 1, axis=1)[:, :m]


def brute_knn(Z, k: int, *, xp=None, block_rows: int = BLOCK_ROWS):
    """Exact k nearest neighbours of every point among the others (self excluded, duplicates
    not), by blocked distance products on the device.

    Parameters
    ----------
    Z : (n, d) array: CuPy, a CUDA torch tensor (shared, not copied) or NumPy
    k : int
    xp : module, optional
        ``cupy`` or ``numpy``; default from ``Z`` (NumPy runs the same code on the CPU).

    Returns
    -------
    distances : float64 ndarray (n, k), indices : int64 ndarray (n, k), on the host
        Equal to :func:`rapids_geovq.geodesic.knn.exact_knn`'s.
    """
    Z = _latents(Z, xp)
    xp = array_module(Z)
    n = Z.shape[0]
    check_k(k, n)
    m = min(k + RERANK_EXTRA, n - 1)
    zz = (Z * Z).sum(axis=1)
    dist = np.empty((n, k))
    ind = np.empty((n, k), np.int64)
    for s in range(0, n, block_rows):
        e = min(s + block_rows, n)
        Q = Z[s:e]
        D2 = zz[s:e, None] + zz[None, :] - 2.0 * (Q @ Z.T)
        r = xp.arange(e - s)
        D2[r, r + s] = xp.inf  # not its own neighbour
        cand = _smallest(D2, m, xp)
        approx = xp.take_along_axis(D2, cand, axis=1)
        del D2
        dist[s:e], ind[s:e] = finish_knn(Q, Z, cand, approx, k, rel_err=GEMM_REL_ERR, self_query=True, start=s)
    return dist, ind


def cuml_knn(Z, k: int):
    """The same neighbours from cuML's brute-force search (``NearestNeighbors(algorithm="brute")``).

    cuML works in float32 and, queried with its own training points, returns each point among
    its own neighbours (not always first, with duplicates); the point itself is dropped here and
    the candidates are finished exactly as in :func:`brute_knn`.
    """
    import cupy as cp
    from cuml.neighbors import NearestNeighbors

    Z = _latents(Z, cp)
    n = Z.shape[0]
    check_k(k, n)
    m = min(k + RERANK_EXTRA + 1, n)
    nn = NearestNeighbors(n_neighbors=m, algorithm="brute", metric="euclidean", output_type="cupy")
    nn.fit(Z.astype(cp.float32))
    approx, cand = nn.kneighbors(Z.astype(cp.float32), n_neighbors=m, return_distance=True)
    approx = cp.asarray(approx, dtype=cp.float64)
    cand = cp.asarray(cand, dtype=cp.int64)
    # drop the point itself, or the last candidate where it was not found
    is_self = cand == cp.arange(n)[:, None]
    drop = cp.where(is_self.any(axis=1), cp.argmax(is_self, axis=1), m - 1)
    keep = cp.ones((n, m), dtype=bool)
    keep[cp.arange(n), drop] = False
    cand = cand[keep].reshape(n, m - 1)
    approx = approx[keep].reshape(n, m - 1)
    return finish_knn(Z, Z, cand, approx**2, k, rel_err=FLOAT32_REL_ERR, self_query=True)
