"""The geodesic codebook: exact kNN graph, all-pairs shortest paths, geodesic k-medoids, Geo-VQ.

Modules, in the order data flows through them: :mod:`.knn` (the graph), :mod:`.plan` (the graph
prepared for searching), :mod:`.shortest_paths` (rows, in memory or as shards), :mod:`.shards`
(shard files), :mod:`.engine` (threads or Dask workers holding shards), :mod:`.kmeans` (geodesic
k-medoids over them), :mod:`.quantize` (coding new latents), :mod:`.codebook` (all of it as one
estimator), :mod:`.execution` (where it runs).
"""
from .codebook import GeodesicCodebook
from .engine import DaskEngine, EngineError, HeldShards, ThreadEngine, connect
from .execution import Execution
from .kmeans import GeodesicKMeans, kmeans_objective
from .knn import Connectivity, DisconnectedGraphError, exact_knn, knn_graph
from .quantize import EuclideanQuantizer, GeodesicQuantizer
from .shards import DenseRows, ShardError, ShardFiles
from .shortest_paths import geodesic_matrix, geodesic_row_shards, load_row_shards
from ..common.resources import ResourceError

__all__ = [
    "Connectivity", "DaskEngine", "DenseRows", "DisconnectedGraphError", "EngineError", "EuclideanQuantizer",
    "Execution", "GeodesicCodebook", "GeodesicKMeans", "GeodesicQuantizer", "HeldShards", "ResourceError",
    "ShardError", "ShardFiles", "ThreadEngine", "connect", "exact_knn", "geodesic_matrix", "geodesic_row_shards",
    "kmeans_objective", "knn_graph", "load_row_shards",
]
