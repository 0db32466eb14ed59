#!/usr/bin/env bash
# The GPU checks of one lent-GPU call, prepared to fit its budget: the step limits add up to 525 s.
#
#   bash launch/device_checks.sh            # on the GPU machine (device tool: timeout_s=560)
#   bash launch/device_checks.sh --smoke    # the steps' plumbing on a CPU host: CPU sizes, and the kernel
#                                           # tests only collected (the CI suite runs them interpreted)
#
# Each step runs under its own time limit and writes <step>.txt into $OUT (default /tmp/device_checks),
# plus summary.txt with each step's exit status and seconds, so one step failing or timing out still
# leaves the others' results:
#   env        nvidia-smi, python / jax / jaxlib / flax versions, jax.devices()
#   kernels    the tests marked gpu_kernel, run through the compiled Triton kernels
#              (NEMOCASCADE_KERNEL_TESTS=gpu): attention fwd+bwd and decode, gmm/tgmm fwd+grads, SSD scan
#   gmm, attention, ssd
#              python -m pallas_kernels.bench at the nano30b shapes: ours vs jax's bundled kernels vs
#              XLA (ragged_dot / dot_product_attention, cuDNN): time, TFLOP/s, fraction of peak, rel. error
#   rollout    python -m nemocascade.bench.rollout: prefill / decode tok/s, no-cache baseline, bw%
# Needs only jax, flax, absl-py, numpy and pytest, which the lent machines' image has (no install).
# Record what it prints in BENCHMARKS.md with the device, the date and this command.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--smoke]" >&2; exit 2
fi
OUT="${OUT:-/tmp/device_checks}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [[ $SMOKE == 1 ]]; then
  export JAX_PLATFORMS=cpu
  KERNEL_TESTS=interpret
  KERNEL_TEST_MODE=(--collect-only)
  BENCH_SIZE=(--small)
  ROLLOUT_ARGS=(--config=tiny --batches=4 --prompt=8 --new=8)
else
  export JAX_PLATFORMS=cuda
  KERNEL_TESTS=gpu
  KERNEL_TEST_MODE=()
  BENCH_SIZE=()
  ROLLOUT_ARGS=()
fi

# step NAME LIMIT_SECONDS COMMAND...: runs COMMAND, output to the console and $OUT/NAME.txt.
step() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "=== $name (limit ${limit} s): $*" | tee "$OUT/$name.txt"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
  rc=${PIPESTATUS[0]}
  echo "$name: rc=$rc$([[ $rc == 124 || $rc == 137 ]] && echo ' (timed out)') in $(($(date +%s) - start)) s" \
    | tee -a "$OUT/summary.txt"
}

date -u "+%F %T UTC" > "$OUT/summary.txt"
step env 30 bash -c "{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  || echo 'no nvidia-smi'; } && $PY -c 'import sys, jax, jaxlib, flax; print(sys.version.split()[0], \
  \"jax\", jax.__version__, \"jaxlib\", jaxlib.__version__, \"flax\", flax.__version__); print(jax.devices())'"
step kernels 120 env NEMOCASCADE_KERNEL_TESTS=$KERNEL_TESTS "$PY" -m pytest -q "${KERNEL_TEST_MODE[@]}" -m gpu_kernel tests/pallas_kernels
step gmm 90 "$PY" -m pallas_kernels.bench --ops=gmm,routing "${BENCH_SIZE[@]}"
step attention 120 "$PY" -m pallas_kernels.bench --ops=attention,decode "${BENCH_SIZE[@]}"
step ssd 45 "$PY" -m pallas_kernels.bench --ops=ssd "${BENCH_SIZE[@]}"
step rollout 120 "$PY" -m nemocascade.bench.rollout "${ROLLOUT_ARGS[@]}"
cat "$OUT/summary.txt"
