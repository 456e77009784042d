#!/usr/bin/env bash
# One call on a GPU machine (no network): GPU tests, the GPU benchmark at n = 60,000, then the
# paper job on the GPU. Results go to $OUT (default /tmp/gpu-out). Run benchmarks/gpu_prepare.sh
# first where PyPI is reachable and carry .whl and bench-scratch/gpu-carry to the machine.
#   OUT=/some/dir bash benchmarks/gpu_device.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export RAPIDS_GEOVQ_DATA=$PWD/bench-scratch/gpu-carry
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
"$PY" -c "import cupy, numba, torch; print('cupy', cupy.__version__, 'numba', numba.__version__, 'torch', torch.__version__)" | tee -a "$OUT/device.txt"

# 1. the GPU tests: kernels on the device, parity with the CPU twins
timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_kernels.py tests/test_gpu_backend.py \
  tests/test_gpu_cugraph.py tests/test_geodesic.py 2>&1 | tee "$OUT/gpu_tests.log"

# 2. the benchmark (kNN, all-pairs shortest paths, k-means beside the CPU reference)
LAT=bench-scratch/gpu-carry/latents.npz
timeout 420 "$PY" benchmarks/gpu_bench.py --latents "$LAT" --out "$OUT" 2>&1 | tee "$OUT/gpu_bench.log"

# 3. the whole paper job on the GPU
"$PY" -m rapids_geovq fetch-data >/dev/null 2>&1
/usr/bin/time -v timeout 420 "$PY" -m rapids_geovq run jobs/paper.yaml run_dir=/tmp/paper backend=cupy \
  progress=false 2>&1 | tail -60 | tee "$OUT/paper_job.log"
cp /tmp/paper/metrics.json "$OUT/paper_metrics.json" 2>/dev/null
exit 0
