#!/usr/bin/env bash
# Run a rapids-geovq job on a SLURM allocation with a Dask cluster spanning its nodes.
#
#   sbatch --nodes=4 --ntasks-per-node=1 --cpus-per-task=32 jobs/slurm_dask.sh jobs/paper.yaml [key=value ...]
#
# The first node runs the Dask scheduler and the driver (rapids-geovq); every node runs one Dask
# worker with one single-threaded process per CPU. The geodesic shards are computed on the workers
# and stay there; k-means sends medoid indices to them and gets partial sums back. The run
# directory (run_dir in the job, default runs/<name>) must be on a file system all nodes share.
#
# GPU nodes: set GPUS_PER_NODE (e.g. sbatch --gres=gpu:8 with GPUS_PER_NODE=8): every node then
# runs `dask cuda worker`, one worker per GPU, with no spilling and, where RMM is installed, the
# same memory set-up as geodesic.cluster=local (LocalCUDACluster(rmm_async=True,
# rmm_allocator_external_lib_list=["cupy", "torch"])): RMM's CUDA async memory resource
# (--rmm-async; without it RMM would allocate with plain cudaMalloc/cudaFree), and CuPy and PyTorch
# allocating from it (--set-rmm-allocator-for-libs cupy,torch; dask-cuda 26.10 accepts cupy and
# torch there). The job runs with backend=rapids (override with backend=cupy), and each worker
# computes its shards on its GPU and keeps them there for k-means.
#
# Environment: RAPIDS_GEOVQ_ENV (a venv or conda prefix to activate, default ./.venv),
# DASK_SCHEDULER_FILE (default $HOME/.rapids_geovq/scheduler-$SLURM_JOB_ID.json), GPUS_PER_NODE.
#SBATCH --job-name=rapids-geovq
#SBATCH --exclusive
set -euo pipefail

job=${1:?usage: sbatch jobs/slurm_dask.sh JOB.yaml [key=value ...]}
shift
env_dir=${RAPIDS_GEOVQ_ENV:-$PWD/.venv}
# shellcheck disable=SC1091
if [ -f "$env_dir/bin/activate" ]; then source "$env_dir/bin/activate"; fi
scheduler_file=${DASK_SCHEDULER_FILE:-$HOME/.rapids_geovq/scheduler-${SLURM_JOB_ID:-local}.json}
mkdir -p "$(dirname "$scheduler_file")"
rm -f "$scheduler_file"
cpus=${SLURM_CPUS_PER_TASK:-$(nproc)}
nodes=${SLURM_JOB_NUM_NODES:-1}

# Shards are memory maps (file cache); keep the workers' memory monitor from pausing them.
export DASK_DISTRIBUTED__WORKER__MEMORY__TARGET=False
export DASK_DISTRIBUTED__WORKER__MEMORY__SPILL=False
export DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE=False
export DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE=False

dask scheduler --scheduler-file "$scheduler_file" --dashboard-address :0 &
scheduler_pid=$!
trap 'kill $scheduler_pid 2>/dev/null || true' EXIT
for _ in $(seq 60); do [ -f "$scheduler_file" ] && break; sleep 1; done
[ -f "$scheduler_file" ] || { echo "the Dask scheduler did not start" >&2; exit 1; }

gpus=${GPUS_PER_NODE:-0}
if [ "$gpus" -gt 0 ]; then
  worker=(dask cuda worker --scheduler-file "$scheduler_file" --nthreads 1 --memory-limit 0
          --device-memory-limit 0)
  # as rapids_geovq.geodesic.engine does for LocalCUDACluster: RMM options only where RMM imports
  # (dask cuda worker ignores unknown options, so a misspelt flag here would pass silently:
  # benchmarks/gpu_api_check.py checks these against the installed CLI)
  if python -c "import rmm" 2>/dev/null; then
    worker+=(--rmm-async --rmm-release-threshold 1 --set-rmm-allocator-for-libs "cupy,torch")
  fi
  per_node=$gpus
  set -- backend=rapids "$@"
else
  worker=(dask worker --scheduler-file "$scheduler_file" --nworkers "$cpus" --nthreads 1 --memory-limit 0)
  per_node=$cpus
fi
if command -v srun >/dev/null && [ -n "${SLURM_JOB_ID:-}" ]; then
  srun --ntasks="$nodes" --ntasks-per-node=1 --cpus-per-task="$cpus" "${worker[@]}" &
else
  "${worker[@]}" &
fi
workers_pid=$!
trap 'kill $workers_pid $scheduler_pid 2>/dev/null || true' EXIT

python - "$scheduler_file" "$((nodes * per_node))" <<'PY'
import sys
from distributed import Client
client = Client(scheduler_file=sys.argv[1], timeout=120)
client.wait_for_workers(int(sys.argv[2]), timeout=300)
print(f"Dask cluster ready: {len(client.scheduler_info()['workers'])} workers", flush=True)
PY

status=0
rapids-geovq run "$job" geodesic.cluster="$scheduler_file" "$@" || status=$?

# shut the cluster down cleanly (scheduler and workers), then return the job's exit status
python - "$scheduler_file" <<'PY' || true
import sys
from distributed import Client
Client(scheduler_file=sys.argv[1], timeout=30).shutdown()
PY
wait "$workers_pid" "$scheduler_pid" 2>/dev/null || true
exit "$status"
