"""GPU implementations: CuPy / Numba-CUDA kernels and RAPIDS (cuML, cuGraph) adapters.

Nothing here imports a GPU library at ``import rapids_geovq.gpu``; each module imports CuPy,
cuML or cuGraph inside the functions that need them, and these modules import only the package's
backend-neutral helpers (:mod:`rapids_geovq.common`). The GPU backends
(:mod:`rapids_geovq.backends.cupy_backend`, :mod:`~rapids_geovq.backends.rapids_backend`)
assemble them; :mod:`.device` answers whether a GPU is usable here.

Every GPU function has a CPU twin computing the same function (the reference):

==================================  =============================================  ==========================
GPU                                 CPU twin                                       equality
==================================  =============================================  ==========================
``knn.brute_knn`` / ``cuml_knn``    ``cpu.knn.sklearn_knn``                        same neighbour lists
``cuda_paths.batched_rows``         ``scipy.sparse.csgraph.dijkstra``              bit-equal float32 rows
``cugraph_paths.cugraph_rows``      ``scipy.sparse.csgraph.dijkstra``              bit-equal float32 rows
``cuda_kmeans`` kernels             ``cpu.kernels.medoid_costs / swap_gains``      bit-equal float64 sums
==================================  =============================================  ==========================

The Numba-CUDA kernels are plain Python functions compiled for the GPU; where no GPU is present
the tests run the same kernel source on Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""
