"""The NumPy backend: NumPy / SciPy / scikit-learn and compiled Numba kernels on the CPU.

Always available, and the reference every other backend is tested against.
"""
from __future__ import annotations

from .base import Backend


class NumpyBackend(Backend):
    """CPU: scikit-learn's brute-force kNN finished exactly, the compiled multi-source search
    (``numba``) or SciPy's Dijkstra (``scipy``), compiled k-medoids kernels on memory-mapped
    shards."""

    name = "numpy"
    gpu = False
    path_methods = ("numba", "scipy")
    local_cluster = "local"
    swap_block_rows = 64

    def knn(self, Z, k: int):
        from ..cpu.knn import sklearn_knn

        return sklearn_knn(Z, k)
