"""Geodesic stage: exact kNN graph, all-pairs shortest paths, geodesic k-means, Geo-VQ."""
from .kmeans import GeodesicKMeans, kmeans_objective
from .knn import Connectivity, DisconnectedGraphError, exact_knn, knn_graph
from .shards import DenseRows, ShardedRows, ShardError
from .engine import DaskEngine, EngineError, LocalEngine, RowShards, connect
from .shortest_paths import ResourceError, estimate_resources, geodesic_matrix, geodesic_row_shards, load_row_shards

__all__ = [
    "Connectivity", "DaskEngine", "DenseRows", "EngineError", "LocalEngine", "ResourceError", "RowShards", "DisconnectedGraphError", "GeodesicKMeans", "ShardError", "ShardedRows",
    "connect", "estimate_resources", "exact_knn", "geodesic_matrix", "geodesic_row_shards", "kmeans_objective", "knn_graph", "load_row_shards",
]
