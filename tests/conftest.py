"""Test session set-up.

Without a GPU, Numba's CUDA simulator runs the GPU kernels (rapids_geovq.gpu.cuda_*) from the
same source on the CPU, so their parity tests run in CI. It must be chosen before Numba is
imported. On a machine with an NVIDIA GPU the same tests run on the GPU.
"""
import os
from pathlib import Path

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not any(Path("/dev").glob("nvidia[0-9]*")):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
