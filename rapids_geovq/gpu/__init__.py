"""GPU backends: CuPy / Numba-CUDA kernels and RAPIDS (cuML, cuGraph, dask-cuda) adapters.

Nothing here imports a GPU library at ``import rapids_geovq.gpu``; each module imports CuPy,
cuML, cuGraph or dask-cuda inside the functions that need them. :mod:`.backend` decides which
backend a job runs on (``auto | numpy | cupy | rapids``).

Every GPU function has a CPU twin computing the same function (the reference):

==============================  =============================================  ==========================
GPU                             CPU twin                                       equality
==============================  =============================================  ==========================
``knn.brute_knn`` (CuPy/cuML)   ``geodesic.knn.exact_knn``                     same neighbour lists
``cuda_paths.batched_rows``     ``scipy.sparse.csgraph.dijkstra``              bit-equal float32 rows
``cugraph_paths.cugraph_rows``  ``scipy.sparse.csgraph.dijkstra``              bit-equal float32 rows
``cuda_kmeans`` kernels         ``geodesic.kernels.medoid_costs / swap_gains`` bit-equal float64 sums
==============================  =============================================  ==========================

The Numba-CUDA kernels are plain Python functions compiled for the GPU; where no GPU is present
the tests run the same kernel source on Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""
