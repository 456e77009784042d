"""The RAPIDS backend: the CuPy backend plus cuML's brute-force kNN, cuGraph's SSSP as an
alternative path solver, dask-cuda, and one RMM memory pool shared by PyTorch and CuPy."""
from __future__ import annotations

from .cupy_backend import CupyBackend


class RapidsBackend(CupyBackend):
    name = "rapids"
    path_methods = ("cuda", "cugraph", "numba", "scipy")
    needs = ("cupy", "numba", "cuml", "dask_cuda")

    def knn(self, Z, k: int):
        from ..gpu.knn import cuml_knn

        return cuml_knn(Z, k)

    def solver_problem(self, method: str) -> str | None:
        if method == "cugraph":
            from ..gpu.cugraph_paths import cugraph_problem

            return cugraph_problem()
        return None

    def _make_solver(self, method: str):
        if method == "cugraph":
            from ..gpu.cugraph_paths import CugraphPaths

            return CugraphPaths()
        return super()._make_solver(method)

    def prepare(self) -> dict:
        """CuPy and PyTorch allocate from one RMM pool (before PyTorch's first CUDA allocation)."""
        from ..gpu.device import share_gpu_memory_with_torch

        return share_gpu_memory_with_torch()
