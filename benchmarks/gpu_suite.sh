#!/usr/bin/env bash
# The accelerator half of the benchmark suite in one command, for a lent GPU (issue 10).
#
# Runs from the repository root with the machine's own Python (jax, flax, optax, torch installed;
# nothing is installed, tensorflow-datasets is never imported, no data or weights are read), and
# writes everything under $OUT (default runs/gpu_suite):
#   machine.txt        GPU, driver, Python and package versions
#   float32.{md,json}  every workload but the disk loaders, rdfia-jax vs PyTorch eager, TF32 off
#   bfloat16.{md,json} the same in bfloat16
#   peak.{md,json}     the chip's measured bf16 matrix rate and VGG16 bf16 inference's share of it
# Each phase has its own time limit, so one slow phase still leaves the others' results.
# On the device tool:  run(command="bash benchmarks/gpu_suite.sh", timeout_s=560)
# A quick check of the script itself on a CPU:
#   FILTER=dann_step PEAK_ARGS="--n 256 --batch 1 --repeats 1" OUT=/tmp/gs bash benchmarks/gpu_suite.sh
set -u -o pipefail
OUT=${OUT:-runs/gpu_suite}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# FILTER: workloads to run; by default all but data_*, which time JPEG/IDX decoding on the host.
FILTER=${FILTER:-'^(?!data_)'}
PEAK_ARGS=${PEAK_ARGS:-}  # e.g. "--n 512 --batch 2" for a quick check on a CPU

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$PY" - <<'PY'
import platform, jax, flax, optax, torch
print(f"Python {platform.python_version()}, jax {jax.__version__} {jax.devices()}, flax {flax.__version__}, "
      f"optax {optax.__version__}, torch {torch.__version__} (cuda {torch.cuda.is_available()})")
PY
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

phase() {  # phase NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" 2> "$OUT/$name.err" | tee "$OUT/$name.md"
  local rc=$?
  [ "$rc" -eq 0 ] || echo "== $name ended with exit $rc (see $OUT/$name.err)"
}

phase float32 240 "$PY" -m benchmarks.harness run --frameworks jax,torch --filter "$FILTER" \
  --seconds 1 --repeats 20 --no-write --json-out "$OUT/float32.json"
phase bfloat16 180 "$PY" -m benchmarks.harness run --frameworks jax,torch --filter "$FILTER" \
  --precision bfloat16 --seconds 1 --repeats 20 --no-write --json-out "$OUT/bfloat16.json"
phase peak 90 "$PY" -m benchmarks.peak --json-out "$OUT/peak.json" $PEAK_ARGS
