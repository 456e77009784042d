"""Backends: which hardware and libraries compute the kNN graph, the shortest paths and k-medoids.

``numpy``
    NumPy / SciPy / scikit-learn and the compiled CPU kernels. Always available; the reference.
``cupy``
    CuPy arrays and Numba-CUDA kernels on the GPU: exact brute-force kNN, batched shortest paths,
    geodesic k-means over device-resident shards.
``rapids``
    ``cupy`` plus cuML's brute-force kNN, cuGraph's SSSP (``geodesic.method=cugraph``), and
    dask-cuda with one RMM pool shared by PyTorch and CuPy.
``auto``
    The first of ``rapids``, ``cupy``, ``numpy`` that can run here.

A backend is one object (:class:`~rapids_geovq.backends.base.Backend`); the math calls it and
never branches on backend names or array types. Adding a backend is one new module here with a
subclass, and one entry in :data:`REGISTRY` (see DEVELOPERS.md).

Importing this package imports no GPU library: backend modules import their kernels inside the
methods that use them.
"""
from __future__ import annotations

import importlib
import logging

from .base import Backend, BackendError

log = logging.getLogger(__name__)

#: name -> "module:class", in the order ``auto`` tries them (the most capable first).
REGISTRY = {
    "rapids": "rapids_geovq.backends.rapids_backend:RapidsBackend",
    "cupy": "rapids_geovq.backends.cupy_backend:CupyBackend",
    "numpy": "rapids_geovq.backends.numpy_backend:NumpyBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_NAMES)}, got {name!r}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


#: What ``backend`` may be set to (config checks and command-line choices).
BACKEND_NAMES: tuple[str, ...] = ("auto",) + tuple(reversed(REGISTRY))
#: What ``geodesic.method`` may be set to: ``auto`` (the backend's preferred solver) or any
#: solver a registered backend offers.
PATH_METHODS: tuple[str, ...] = ("auto",) + tuple(dict.fromkeys(
    m for name in reversed(REGISTRY) for m in backend_class(name).path_methods))


def _gpu_visible() -> bool:
    from ..gpu.device import gpu_count

    return gpu_count() > 0


def resolve_backend(name: str | Backend = "auto") -> Backend:
    """The backend to run on for a setting ``auto | numpy | cupy | rapids`` (or a backend, as is).

    Raises
    ------
    ValueError
        For an unknown name.
    BackendError
        When a named backend cannot run here; the message says what is missing.
    """
    if isinstance(name, Backend):
        return name
    if name == "auto":
        skipped = []
        for cand in REGISTRY:
            problem = backend_class(cand).problem()
            if problem is None:
                if skipped and not backend_class(cand).gpu and _gpu_visible():
                    # a GPU is there but no GPU backend can use it: say why, not just "numpy"
                    log.warning("backend auto: %s, although a GPU is visible: %s", cand, " | ".join(skipped))
                else:
                    log.info("backend auto: %s", cand)
                return backend_class(cand)()
            skipped.append(problem)
        raise BackendError("no backend can run here")  # pragma: no cover - numpy always can
    cls = backend_class(name)
    problem = cls.problem()
    if problem:
        raise BackendError(problem)
    return cls()


__all__ = ["BACKEND_NAMES", "Backend", "BackendError", "PATH_METHODS", "REGISTRY", "backend_class",
           "resolve_backend"]
