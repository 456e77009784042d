"""Exact k nearest neighbours on the CPU: scikit-learn's brute-force search, finished exactly.

scikit-learn's GEMM-based search (|x|^2 + |y|^2 - 2xy) loses precision for near points, so a few
spare candidates are fetched and :func:`rapids_geovq.common.exact_knn.finish_knn` re-ranks them
with exact differences and proves every row complete.
"""
from __future__ import annotations

import numpy as np

from ..common.exact_knn import GEMM_REL_ERR, RERANK_EXTRA, check_k, check_latents, finish_knn


def sklearn_knn(Z, k: int, *, query=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest neighbours, ordered by (distance, index).

    Parameters
    ----------
    Z : array of shape (n, d)
        Reference points.
    k : int
        Number of neighbours.
    query : array of shape (m, d), optional
        Query points. When omitted the queries are ``Z`` itself and each point is excluded from
        its own neighbours (but exact duplicates of it are not).

    Returns
    -------
    distances : float64 array of shape (m, k), ascending per row
    indices : int64 array of shape (m, k)
        Among points at equal distance the lower index comes first, also at the k-th place.
    """
    from sklearn.neighbors import NearestNeighbors

    Z = check_latents(Z)
    n = Z.shape[0]
    self_query = query is None
    check_k(k, n, self_query=self_query)
    limit = n - 1 if self_query else n
    fetch = min(k + RERANK_EXTRA, limit)
    nn = NearestNeighbors(n_neighbors=fetch, algorithm="brute").fit(Z)
    if self_query:
        approx, cand = nn.kneighbors()
        Q = Z
    else:
        Q = check_latents(query, min_rows=1, what="query latents")
        if Q.shape[1] != Z.shape[1]:
            raise ValueError(f"query latents have {Q.shape[1]} dimensions but the reference latents "
                             f"have {Z.shape[1]}; encode them with the same model")
        approx, cand = nn.kneighbors(Q)
    return finish_knn(Q, Z, cand, approx**2, k, rel_err=GEMM_REL_ERR, self_query=self_query)
