"""rapids_geovq: VQ-VAE a posteriori with geodesic quantization.

A VAE's latents, an exact kNN graph on them, all-pairs geodesic distances, and a geodesic k-means
codebook turn a continuous VAE into a discrete one after training. Importing the package loads
NumPy, SciPy and scikit-learn only: nothing GPU, and no torch until a model is used.
"""
__version__ = "0.1.0"

from .geodesic import (
    DisconnectedGraphError,
    EuclideanQuantizer,
    Execution,
    GeodesicCodebook,
    GeodesicKMeans,
    GeodesicQuantizer,
    ShardFiles,
    exact_knn,
    geodesic_matrix,
    geodesic_row_shards,
    kmeans_objective,
    knn_graph,
    load_row_shards,
)
from .geodesic.shards import ShardedRows  # noqa: F401 - the former name of ShardFiles

__all__ = [
    "DisconnectedGraphError", "EuclideanQuantizer", "Execution", "GeodesicCodebook", "GeodesicKMeans",
    "GeodesicQuantizer", "ShardFiles", "exact_knn", "geodesic_matrix", "geodesic_row_shards", "kmeans_objective",
    "knn_graph", "load_row_shards",
]
