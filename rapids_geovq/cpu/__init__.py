"""CPU implementations: compiled (Numba) kernels, the SciPy reference, scikit-learn's kNN search.

The NumPy backend (:mod:`rapids_geovq.backends.numpy_backend`) assembles these; nothing here
imports a GPU library.
"""
