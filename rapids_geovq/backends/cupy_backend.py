"""The CuPy backend: CuPy arrays and Numba-CUDA kernels on one or more GPUs.

Exact brute-force kNN by CuPy distance products, batched exact shortest paths (``cuda``), and
geodesic k-means over shards kept on the GPU that computed them. Several GPUs in one job run
through dask-cuda (``geodesic.cluster=local`` starts one worker per GPU).
"""
from __future__ import annotations

from .base import Backend


class CupyBackend(Backend):
    name = "cupy"
    gpu = True
    path_methods = ("cuda", "numba", "scipy")
    local_cluster = "local-cuda"
    # A GPU evaluates a whole shard's swap candidates per task; the result does not depend on it.
    swap_block_rows = 2048
    needs = ("cupy", "numba")

    @classmethod
    def problem(cls) -> str | None:
        from ..gpu.device import gpu_count, installed, numba_cuda_problem

        missing = [m for m in cls.needs if not installed(m)]
        if missing:
            return (f"backend={cls.name} needs {', '.join(missing)}, which are not installed: install the GPU "
                    "environment (conda env create -f conda-env.yml, or pip install -e .[cu12] / .[cu13]), "
                    "or use backend=numpy")
        if gpu_count() == 0:
            return (f"backend={cls.name} needs a CUDA GPU, and none is visible (check nvidia-smi and "
                    "CUDA_VISIBLE_DEVICES), or use backend=numpy")
        problem = numba_cuda_problem()
        return None if problem is None else f"backend={cls.name} runs its kernels with Numba-CUDA: {problem}; or use backend=numpy"

    def latents(self, z):
        """A CUDA torch tensor is read in place (DLPack, no copy); anything else goes to the GPU."""
        import cupy

        from ..common.arrays import from_torch

        if hasattr(z, "detach"):
            return from_torch(z)
        return cupy.asarray(z)

    def knn(self, Z, k: int):
        import cupy

        from ..gpu.knn import brute_knn

        return brute_knn(Z, k, xp=cupy)

    def _make_solver(self, method: str):
        if method == "cuda":
            from ..gpu.cuda_paths import CudaPaths

            return CudaPaths()
        return super()._make_solver(method)

    def bounded_graph(self, plan):
        from ..gpu.cuda_bounded import DeviceBoundedGraph

        return DeviceBoundedGraph.from_plan(plan)

    def bounded_search(self, graph):
        from ..gpu.cuda_bounded import DeviceBoundedSearch

        return DeviceBoundedSearch(graph)

    def engine_spec(self, cluster: str, n_workers: int | None):
        if cluster == "threads" and n_workers is None:
            return cluster, 1  # this process's GPU; several GPUs: geodesic.cluster=local (dask-cuda)
        return super().engine_spec(cluster, n_workers)

    def release(self) -> None:
        from ..gpu.device import release_gpu_memory

        release_gpu_memory()
