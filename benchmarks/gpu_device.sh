#!/usr/bin/env bash
# On a GPU machine without network, in two calls of under 10 minutes each:
#   OUT=/some/dir bash benchmarks/gpu_device.sh bench   GPU tests, then the benchmark at n = 60,000
#   OUT=/some/dir bash benchmarks/gpu_device.sh paper   the paper job on the GPU, its stage times
# Results go to $OUT (default /tmp/gpu-out). Run benchmarks/gpu_prepare.sh first where PyPI is
# reachable and carry .whl and bench-scratch/gpu-carry to the machine.
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

PART=${1:-bench}
LAT=bench-scratch/gpu-carry/latents.npz
if [ "$PART" = bench ]; then
  # the GPU tests: kernels on the device, parity with the CPU twins
  timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_kernels.py tests/test_gpu_backend.py \
    tests/test_gpu_cugraph.py tests/test_geodesic.py 2>&1 | tee "$OUT/gpu_tests.log"
  # kNN, all-pairs shortest paths, k-means beside the CPU reference (and cuGraph's loop if installed)
  timeout 420 "$PY" benchmarks/gpu_bench.py --latents "$LAT" --out "$OUT" --time-limit 380 2>&1 | tee "$OUT/gpu_bench.log"
elif [ "$PART" = paper ]; then
  "$PY" -m rapids_geovq fetch-data >/dev/null 2>&1
  /usr/bin/time -v timeout 500 "$PY" -m rapids_geovq run jobs/paper.yaml run_dir=/tmp/paper backend=auto \
    progress=false 2>&1 | tail -80 | tee "$OUT/paper_job.log"
  # one file: stage records (seconds per stage), metrics, report (a device call returns few files)
  tar czf "$OUT/paper_run.tgz" -C /tmp/paper stages metrics.json report.md config.yaml 2>/dev/null
else
  echo "usage: gpu_device.sh bench|paper" >&2; exit 2
fi
exit 0
