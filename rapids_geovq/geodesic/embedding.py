"""Landmark MDS: every point placed in a low-dimensional map from its distances to a few landmarks.

de Silva and Tenenbaum (2004), "Sparse multidimensional scaling using landmark points": classical
MDS on the landmarks' own squared distances gives the landmarks' coordinates; every other point is
then placed by distance-based triangulation from its squared distances to the landmarks alone. With
the K medoids as landmarks, the geodesic k-medoids fit already holds every distance this needs (its
``dist_to_codes``), so a map of all n latents costs O(n K), no n x n work.
"""
from __future__ import annotations

import numpy as np


def landmark_mds(dist_to_landmarks, landmark_points, *, n_components: int = 2) -> np.ndarray:
    """Coordinates of every point from its distances to the landmarks.

    Parameters
    ----------
    dist_to_landmarks : float array of shape (n, K)
        Distance from every point to every landmark (e.g. a geodesic codebook's ``dist_to_codes``).
    landmark_points : int array of shape (K,)
        Which points are the landmarks (their rows give the landmarks' mutual distances).
    n_components : int, default=2

    Returns
    -------
    float64 ndarray of shape (n, n_components)
        For distances that are Euclidean in ``n_components`` dimensions, the points' coordinates up
        to a rigid motion; otherwise the classical-MDS map of the landmarks extended to all points.

    Raises
    ------
    ValueError
        For mismatched shapes, non-finite distances, or fewer positive eigenvalues than
        ``n_components`` (landmarks too few or too degenerate to span the map).
    """
    d = np.asarray(dist_to_landmarks, dtype=np.float64)
    idx = np.asarray(landmark_points, dtype=np.int64)
    if d.ndim != 2 or idx.ndim != 1 or d.shape[1] != idx.size:
        raise ValueError(f"dist_to_landmarks must be (n, K) with K = len(landmark_points), got {d.shape} "
                         f"and {idx.shape}")
    if not np.isfinite(d).all():
        raise ValueError("dist_to_landmarks contains NaN or infinite distances (a disconnected graph?)")
    K = idx.size
    if not 1 <= n_components < K:
        raise ValueError(f"n_components must be between 1 and K - 1 = {K - 1}, got {n_components}")
    sq = d * d  # (n, K)
    delta = sq[idx]  # (K, K) landmark-to-landmark squared distances
    delta = 0.5 * (delta + delta.T)  # geodesic rows are symmetric up to float rounding
    H = np.eye(K) - 1.0 / K
    B = -0.5 * H @ delta @ H
    w, v = np.linalg.eigh(B)
    top = np.argsort(w)[::-1][:n_components]
    w, v = w[top], v[:, top]
    if (w <= 1e-12 * max(abs(w).max(), 1e-300)).any():
        raise ValueError(f"only {(w > 0).sum()} positive eigenvalues among the landmarks' distances; use fewer "
                         "components or more landmarks")
    pinv = v / np.sqrt(w)  # (K, c): the pseudo-inverse transpose of the landmark coordinates
    mean = delta.mean(axis=0)  # each landmark's mean squared distance to the landmarks
    return -0.5 * (sq - mean) @ pinv
