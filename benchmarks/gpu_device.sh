#!/usr/bin/env bash
# Everything a fresh GPU machine (no network) checks and measures, in ONE call of at most 8 minutes.
#
# Here, where PyPI is reachable, first:   bash benchmarks/gpu_prepare.sh
# then the session makes one device call:
#   run(command="bash benchmarks/gpu_device.sh", carry=["bench-scratch/gpu-carry"], timeout_s=480)
#
# Steps, each under its own time limit and all within GPU_DEVICE_BUDGET_S (default 450 s, so the
# call ends inside its 480 s with time to copy the results back):
#   setup      pip-install the carried wheels (dask, distributed, dask-cuda 26.10) into /tmp/site
#   preflight  GPU name, versions (python, torch, CuPy, Numba, numba-cuda, cuda-core, dask, dask-cuda),
#              CUDA_HOME and the NVVM / libdevice that numba-cuda found, a Numba-CUDA kernel compiled
#              and run (with libdevice's dmul_rn, as the k-means kernels use), and `import dask_cuda`,
#              which must succeed: a missing dask-cuda fails here rather than skipping tests later
#   tests_gpu      pytest -m gpu (all test files)
#   tests_kernels  the test files that import rapids_geovq.gpu, unmarked tests, with NUMBA_ENABLE_CUDASIM=0
#                  so the kernels run on the GPU and never on Numba's simulator
#   bench      benchmarks/gpu_bench.py on the 60,000 carried latents (kNN, all-pairs paths, k-means)
#   paper      the paper job for one seed (jobs/paper.yaml with seeds=null and no sweep or subsample
#              study; backend=auto: CuPy and Numba-CUDA, as cuML is
#              not carried) on the GPU with the time left (at least PAPER_MIN_S), under `timeout`.
#              It is resumable, so what it reaches is a stated part of it: the summary lists the
#              stages that finished, with their seconds, and the stage that was cut off, if any.
# Every step's exit status is kept (none is hidden); the script exits 1 if any step but the paper job
# failed, timed out or was skipped, or if the paper job failed (cut off at the time limit it is "partial").
#
# Results, at most 8 files, in $OUT (the device tool sets it; default /tmp/gpu-out):
#   summary.json  per step: status, exit code, seconds, limit; test counts; benchmark headline
#                 figures; the paper job's stage times
#   preflight.txt, tests.log, bench.log, gpu_<tag>.json, gpu_<tag>.md (the benchmark's own report),
#   paper_run.tgz (stage records, metrics.json, report.md, config.yaml, run.log, the job's output)
# Budgets can be changed for a dry run: GPU_DEVICE_BUDGET_S, BUDGET_SETUP, BUDGET_PREFLIGHT,
# BUDGET_TESTS_GPU, BUDGET_TESTS_KERNELS, BUDGET_BENCH, PAPER_MIN_S.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
CARRY=$ROOT/bench-scratch/gpu-carry
SITE=/tmp/site
WORK=/tmp/gpu-device
rm -rf "$WORK" && mkdir -p "$WORK"
STEPS=$WORK/steps.tsv
: >"$STEPS"
TOTAL=${GPU_DEVICE_BUDGET_S:-450}
PAPER_MIN_S=${PAPER_MIN_S:-45}
SECONDS=0
export PYTHONUNBUFFERED=1
export PYTHONPATH=$SITE:$ROOT
# MNIST from the carried wheel; its cache (55 MB) is written here, never into the carried folder
export RAPIDS_GEOVQ_DATA=$WORK/data
mkdir -p "$RAPIDS_GEOVQ_DATA"
for f in "$CARRY"/data/*.whl; do
  if [ -f "$f" ]; then ln -s "$f" "$RAPIDS_GEOVQ_DATA/"; fi
done
export NUMBA_ENABLE_CUDASIM=0  # the tests' conftest would pick the simulator where /dev/nvidia* is missing

left() { echo $((TOTAL - SECONDS)); }

# run_step NAME LIMIT LOG CMD...: runs CMD under `timeout`, output appended to LOG and echoed;
# records NAME, exit code, seconds and limit. A limit above the time left is cut to the time left.
run_step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local l
  l=$(left)
  if [ "$limit" -gt "$l" ]; then limit=$l; fi
  if [ "$limit" -lt 5 ]; then
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "skipped" 0 0 "no time left" >>"$STEPS"
    echo "== $name: skipped, no time left" | tee -a "$log"
    return 0
  fi
  echo "== $name (limit ${limit}s, ${SECONDS}s elapsed)" | tee -a "$log"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" $((SECONDS - t0)) "$limit" "" >>"$STEPS"
  echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$log"
  return 0
}

skip_step() {  # NAME REASON
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "skipped" 0 0 "$2" >>"$STEPS"
  echo "== $1: skipped: $2"
}

# --- setup: the carried wheels -------------------------------------------------------------------
if ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
  run_step setup "${BUDGET_SETUP:-40}" "$WORK/setup.log" \
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$CARRY"/whl/*.whl
else
  skip_step setup "no wheels in $CARRY/whl (run benchmarks/gpu_prepare.sh here and carry bench-scratch/gpu-carry)"
fi

# --- preflight ------------------------------------------------------------------------------------
cat >"$WORK/preflight.py" <<'PY'
"""Versions and the facts later steps rely on; exits 1 if any required one is missing."""
import atexit
import importlib
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time

facts, problems = {}, []


@atexit.register
def _write():  # whatever happens below, the facts gathered so far reach the summary
    facts.setdefault("problems", problems)
    with open(sys.argv[1], "w") as fh:
        json.dump(facts, fh, indent=1, default=str)



def say(key, value):
    facts[key] = value
    print(f"{key}: {value}", flush=True)


def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


say("python", f"{platform.python_version()} ({sys.executable})")
if shutil.which("nvidia-smi"):
    r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                       capture_output=True, text=True, timeout=30)
    say("nvidia_smi", r.stdout.strip() or r.stderr.strip())
else:
    say("nvidia_smi", "not found")
try:
    import torch

    say("torch", f"{torch.__version__} (CUDA {torch.version.cuda}, available {torch.cuda.is_available()})")
    if torch.cuda.is_available():
        say("gpu_name", torch.cuda.get_device_name(0))
except Exception as exc:  # noqa: BLE001
    say("torch", f"import failed: {exc!r}")
for dist in ("numpy", "scipy", "numba", "numba-cuda", "llvmlite", "cupy-cuda13x", "cupy-cuda12x", "cuda-core",
             "cuda-bindings", "cuda-pathfinder", "nvidia-ml-py", "pandas", "dask", "distributed", "dask-cuda",
             "rmm-cu13", "cuml-cu13", "pylibcugraph-cu13"):
    v = version(dist)
    if v is not None or dist in ("numba-cuda", "dask", "distributed", "dask-cuda", "cuda-core"):
        say(f"version {dist}", v or "NOT INSTALLED")
say("CUDA_HOME", os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "unset")
if version("numba-cuda") is None:
    problems.append("numba-cuda is not installed: numba.cuda is Numba's old built-in target")

try:
    import cupy

    n = cupy.cuda.runtime.getDeviceCount()
    say("cupy", f"{cupy.__version__}: {n} device(s), runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
        f"driver {cupy.cuda.runtime.driverGetVersion()}")
    if n == 0:
        problems.append("CuPy sees no GPU")
except Exception as exc:  # noqa: BLE001
    problems.append(f"CuPy: {exc!r}")
    say("cupy", f"failed: {exc!r}")

try:
    from numba import cuda
    from numba.cuda.cudadrv import nvvm

    say("numba.cuda module", cuda.__file__)
    if version("numba-cuda") is not None and "numba_cuda" not in cuda.__file__:
        problems.append("numba.cuda is not numba-cuda's (Numba's built-in CUDA target is in use)")
    say("numba cuda.is_available", cuda.is_available())
    try:
        from numba.cuda.cuda_paths import get_cuda_paths

        paths = get_cuda_paths()
        for key in ("nvvm", "libdevice", "cudalib_dir"):
            if key in paths:
                say(f"numba-cuda {key}", str(paths[key]))
    except Exception as exc:  # noqa: BLE001
        say("numba-cuda paths", f"not available: {exc!r}")
    say("libNVVM loaded", nvvm.is_available())
    if not nvvm.is_available():
        problems.append("libNVVM not found by numba-cuda")
    from numba.cuda.libdevice import dmul_rn

    @cuda.jit
    def square(x, out):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = dmul_rn(x[i], x[i])

    import numpy as np

    t = time.perf_counter()
    x = np.arange(256, dtype=np.float64)
    d_x = cuda.to_device(x)
    d_out = cuda.device_array_like(d_x)
    square[2, 128](d_x, d_out)
    cuda.synchronize()
    ok = bool((d_out.copy_to_host() == x * x).all())
    say("numba-cuda kernel (dmul_rn) compiled and ran", f"{ok} in {time.perf_counter() - t:.1f} s")
    if not ok:
        problems.append("the Numba-CUDA test kernel gave wrong results")
except Exception as exc:  # noqa: BLE001
    problems.append(f"Numba-CUDA kernel: {exc!r}")
    say("numba-cuda kernel", f"failed: {exc!r}")

for mod in ("dask", "distributed", "dask_cuda", "dask_cuda.cli"):
    try:
        m = importlib.import_module(mod)
        say(f"import {mod}", getattr(m, "__version__", "ok"))
    except Exception as exc:  # noqa: BLE001
        problems.append(f"import {mod}: {exc!r}")
        say(f"import {mod}", f"FAILED: {exc!r}")
try:
    importlib.import_module("cuda.core.experimental")
    say("cuda.core.experimental", "importable")
except Exception as exc:  # noqa: BLE001
    say("cuda.core.experimental", f"not importable ({type(exc).__name__})")
for mod in ("rmm", "cuml", "pylibcugraph"):
    say(f"import {mod}", "available" if importlib.util.find_spec(mod) else "not installed (not carried)")
resolve = None
for where in ("rapids_geovq.backends", "rapids_geovq.gpu.backend"):  # its home moves between versions
    try:
        resolve = getattr(importlib.import_module(where), "resolve_backend")
        break
    except (ImportError, AttributeError):
        continue
try:
    b = resolve("auto") if resolve is not None else None
    say("rapids_geovq backend auto", getattr(b, "name", b) if b is not None else "resolve_backend not found")
except Exception as exc:  # noqa: BLE001
    problems.append(f"resolve_backend: {exc!r}")
    say("rapids_geovq backend auto", f"failed: {exc!r}")
say("problems", problems)
sys.exit(1 if problems else 0)
PY
run_step preflight "${BUDGET_PREFLIGHT:-60}" "$OUT/preflight.txt" "$PY" "$WORK/preflight.py" "$WORK/preflight.json"

# --- tests ----------------------------------------------------------------------------------------
PYTEST=("$PY" -m pytest -q -rs -p no:cacheprovider --durations=5)
run_step tests_gpu "${BUDGET_TESTS_GPU:-100}" "$OUT/tests.log" \
  "${PYTEST[@]}" -m gpu --junitxml="$WORK/junit_gpu.xml" tests
# the test files that import the GPU modules (an import line, not a mention in a string)
mapfile -t kernel_files < <(grep -l -E '^\s*(from rapids_geovq\.gpu|import rapids_geovq\.gpu|from rapids_geovq import .*\bgpu\b)' \
  tests/test_*.py)
if [ "${#kernel_files[@]}" -gt 0 ]; then
  run_step tests_kernels "${BUDGET_TESTS_KERNELS:-90}" "$OUT/tests.log" \
    "${PYTEST[@]}" -m "not gpu" --junitxml="$WORK/junit_kernels.xml" "${kernel_files[@]}"
else
  skip_step tests_kernels "no test file imports rapids_geovq.gpu"
fi

# --- benchmark at n = 60,000 ----------------------------------------------------------------------
bench_limit=${BUDGET_BENCH:-170}
if [ -f "$CARRY/latents.npz" ]; then
  l=$(left)
  if [ "$bench_limit" -gt "$l" ]; then bench_limit=$l; fi
  # the benchmark sizes its steps to --time-limit; leave it 20 s for its CPU reference and report
  run_step bench "$bench_limit" "$OUT/bench.log" \
    "$PY" benchmarks/gpu_bench.py --latents "$CARRY/latents.npz" --out "$OUT" --scratch "$WORK" \
    --time-limit $((bench_limit > 40 ? bench_limit - 20 : bench_limit / 2))
else
  skip_step bench "no $CARRY/latents.npz (gpu_prepare.sh copies runs/paper/artifacts/latents.npz)"
fi

# --- the paper job with the time left -------------------------------------------------------------
RUN=$WORK/paper
if [ "$(left)" -ge "$PAPER_MIN_S" ]; then
  run_step paper "$(left)" "$WORK/paper_job.log" \
    "$PY" -m rapids_geovq run jobs/paper.yaml "run_dir=$RUN" backend=auto progress=false \
      seeds=null "sweep.n_codes=[]" "subsample.sizes=[]"
else
  skip_step paper "$(left) s left, under PAPER_MIN_S=$PAPER_MIN_S"
fi
if [ -d "$RUN" ]; then
  cp "$WORK/paper_job.log" "$RUN/paper_job.log" 2>/dev/null
  (cd "$RUN" && tar czf "$OUT/paper_run.tgz" --ignore-failed-read stages metrics.json report.md config.yaml \
     run.log paper_job.log 2>/dev/null)
fi

# --- summary --------------------------------------------------------------------------------------
"$PY" - "$STEPS" "$WORK" "$OUT" "$RUN" "$SECONDS" "$TOTAL" <<'PY'
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

steps_tsv, work, out, run, elapsed, total = sys.argv[1:7]
steps = []
for line in open(steps_tsv):
    name, rc, secs, limit, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    if rc == "skipped":
        status = "skipped"
    elif rc in ("124", "137"):  # the paper job gets the time that is left: cut off there, it is partial
        status = "partial" if name == "paper" else "timeout"
    else:
        status = "ok" if rc == "0" else "failed"
    steps.append({"step": name, "status": status, "exit_code": None if rc == "skipped" else int(rc),
                  "seconds": int(secs), "limit_s": int(limit), **({"note": note} if note else {})})
summary = {"elapsed_s": int(elapsed), "budget_s": int(total), "steps": steps}
try:
    summary["preflight"] = json.load(open(os.path.join(work, "preflight.json")))
except (OSError, ValueError):
    summary["preflight"] = None
for kind in ("gpu", "kernels"):
    path = os.path.join(work, f"junit_{kind}.xml")
    if os.path.exists(path):
        root = ET.parse(path).getroot()
        suites = [root] if root.tag == "testsuite" else list(root)
        summary[f"tests_{kind}"] = {k: sum(int(s.get(k, 0)) for s in suites)
                                    for k in ("tests", "failures", "errors", "skipped")}
bench = sorted(glob.glob(os.path.join(out, "gpu_*.json")))
if bench:
    r = json.load(open(bench[0]))
    head = {"file": os.path.basename(bench[0]), "n": r.get("n"), "device": (r.get("device") or {}).get("name")}
    for key in ("knn", "apsp", "apsp_cpu", "kmeans"):
        v = r.get(key)
        if isinstance(v, dict):
            head[key] = {k: v[k] for k in v if isinstance(v[k], (int, float, str, bool)) or v[k] is None}
    summary["bench"] = head
stages, last_running = {}, None
try:  # the job's log says which stages ran here and which were skipped (up to date)
    for line in open(os.path.join(run, "run.log")):
        words = line.split()
        if "stage" not in words or words.index("stage") + 2 >= len(words):
            continue
        i = words.index("stage")
        name, what = words[i + 1], words[i + 2]
        if what == "running":
            last_running = name
        elif what == "done":
            stages[name] = {"ran": True, "seconds": float(words[i + 4])}
            last_running = None
        elif what == "up":
            stages[name] = {"ran": False, "skipped": "up to date"}
except (OSError, ValueError, IndexError):
    pass
paper = next((s for s in steps if s["step"] == "paper"), None)
summary["paper"] = {"stages_done": [k for k, v in stages.items() if v.get("ran")], "stages": stages,
                    "cut_off_in_stage": last_running if paper and paper["status"] in ("partial", "failed") else None,
                    "metrics_json": os.path.exists(os.path.join(run, "metrics.json"))}
# required: every step but the paper job, which runs in the time left (partial or skipped is fine)
summary["all_ok"] = all(s["status"] == "ok" or (s["step"] == "paper" and s["status"] in ("partial", "skipped"))
                        for s in steps)
with open(os.path.join(out, "summary.json"), "w") as fh:
    json.dump(summary, fh, indent=1)
print(json.dumps({"elapsed_s": summary["elapsed_s"], "all_ok": summary["all_ok"],
                  "steps": [(s["step"], s["status"], s["exit_code"], s["seconds"]) for s in steps],
                  "tests_gpu": summary.get("tests_gpu"), "tests_kernels": summary.get("tests_kernels"),
                  "paper_stages": {k: v.get("seconds", "skipped") for k, v in stages.items()},
                  "paper_cut_off_in": summary["paper"]["cut_off_in_stage"]}))
sys.exit(0 if summary["all_ok"] else 1)
PY
status=$?
ls -la "$OUT"
exit "$status"
