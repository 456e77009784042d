"""Geo-VQ: quantize new latents to the geodesic codebook, and the Euclidean ablation.

A new point x enters the training graph through its k nearest training latents, as Isomap embeds
new points: its geodesic distance to code c is ``min over neighbours n of ||x - z_n|| + D[n, c]``,
where ``D[:, medoids]`` comes from the geodesic matrix. The code is the nearest one.
"""
from __future__ import annotations

import numpy as np

from ..common.exact_knn import check_latents
from .knn import exact_knn


class GeodesicQuantizer:
    """Nearest-code lookup by geodesic distance through the training kNN graph.

    Parameters
    ----------
    train_latents : array of shape (n, d)
        The latents the graph and codebook were built from.
    medoid_indices : int array of shape (K,)
        Rows of ``train_latents`` that are the codes.
    dist_to_codes : array of shape (n, K)
        Geodesic distance from every training latent to every code, ``D[:, medoid_indices]``.
    k : int, default=10
        Training neighbours through which a new point enters the graph.
    """

    def __init__(self, train_latents, medoid_indices, dist_to_codes, *, k: int = 10):
        self.train_latents = check_latents(train_latents)
        n = self.train_latents.shape[0]
        medoids = np.asarray(medoid_indices)
        if medoids.ndim != 1 or medoids.size == 0 or not np.issubdtype(medoids.dtype, np.integer):
            raise ValueError(f"medoid_indices must be a non-empty 1-D array of point indices, got "
                             f"{medoids.dtype} of shape {medoids.shape}")
        if medoids.min() < 0 or medoids.max() >= n:
            raise ValueError(f"medoid_indices must index the {n} training latents (0..{n - 1}), got values "
                             f"from {medoids.min()} to {medoids.max()}; were they fitted on other latents?")
        self.medoid_indices = medoids.astype(np.int64)
        self.dist_to_codes = np.asarray(dist_to_codes)
        K = self.medoid_indices.size
        if self.dist_to_codes.shape != (n, K):
            raise ValueError(f"dist_to_codes must have shape ({n}, {K}), got {self.dist_to_codes.shape}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k must be a whole number of neighbours between 1 and {n}, got {k!r}")
        self.k = int(k)

    @property
    def codebook(self) -> np.ndarray:
        """Code latents, shape (K, d), float32."""
        return self.train_latents[self.medoid_indices].astype(np.float32)

    def distances(self, latents) -> np.ndarray:
        """Geodesic distance from each latent to each code, float64 array of shape (m, K)."""
        dist, ind = exact_knn(self.train_latents, self.k, query=latents)
        out = np.full((dist.shape[0], self.medoid_indices.size), np.inf)
        for j in range(self.k):  # k is small: a loop over neighbours keeps memory at (m, K)
            np.minimum(out, dist[:, j : j + 1] + self.dist_to_codes[ind[:, j]].astype(np.float64), out=out)
        return out

    def encode(self, latents) -> np.ndarray:
        """Index of the geodesically nearest code for each latent, int64 array of shape (m,)."""
        return np.argmin(self.distances(latents), axis=1).astype(np.int64)

    def decode(self, codes) -> np.ndarray:
        """Code latents for code indices, float32 array of shape (m, d)."""
        return self.codebook[check_codes(codes, self.medoid_indices.size)]


class EuclideanQuantizer:
    """The ablation: Euclidean k-means centroids on the same latents, nearest centroid by L2.

    Parameters
    ----------
    n_clusters : int
    n_init : int, default=3
    random_state : int or None
    """

    def __init__(self, n_clusters: int = 64, *, n_init: int = 3, random_state=None):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, latents) -> "EuclideanQuantizer":
        from sklearn.cluster import KMeans

        Z = check_latents(latents)
        if self.n_clusters > Z.shape[0]:
            raise ValueError(f"n_clusters={self.n_clusters} is more than the {Z.shape[0]} latents")
        km = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.random_state).fit(Z)
        self.codebook_ = km.cluster_centers_.astype(np.float32)
        self.labels_ = km.labels_.astype(np.int64)
        self.inertia_ = float(km.inertia_)
        return self

    def encode(self, latents) -> np.ndarray:
        from sklearn.metrics import pairwise_distances_argmin

        Z = check_latents(latents, min_rows=1, what="query latents")
        if Z.shape[1] != self.codebook_.shape[1]:
            raise ValueError(f"latents have {Z.shape[1]} dimensions but the codebook has {self.codebook_.shape[1]}")
        return pairwise_distances_argmin(Z, self.codebook_.astype(np.float64)).astype(np.int64)

    @classmethod
    def from_codebook(cls, codebook) -> "EuclideanQuantizer":
        """A quantizer for centroids fitted before (shape (K, d))."""
        codebook = np.asarray(codebook, dtype=np.float32)
        if codebook.ndim != 2 or codebook.shape[0] < 1:
            raise ValueError(f"codebook must have shape (K, d), got {codebook.shape}")
        eq = cls(codebook.shape[0])
        eq.codebook_ = codebook
        return eq

    def decode(self, codes) -> np.ndarray:
        """Centroids for code indices, float32 array of shape (m, d)."""
        return self.codebook_[check_codes(codes, self.codebook_.shape[0])]


def check_codes(codes, n_codes: int) -> np.ndarray:
    """Code indices as int64, refused unless whole numbers in [0, n_codes)."""
    codes = np.asarray(codes)
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        if not (np.issubdtype(codes.dtype, np.floating) and np.array_equal(codes, np.round(codes))):
            raise ValueError(f"codes must be whole numbers, got dtype {codes.dtype}")
    codes = codes.astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= n_codes):
        raise ValueError(f"codes must lie in [0, {n_codes}) for a {n_codes}-code codebook, got values from "
                         f"{codes.min()} to {codes.max()}")
    return codes
