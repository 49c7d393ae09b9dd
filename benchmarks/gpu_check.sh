#!/usr/bin/env bash
# One prepared check for the first CUDA machine; under 8 minutes on a fresh one.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine, from a clone of the repository
#   bash benchmarks/gpu_check.sh --dry-run  # no GPU: the same steps on the CPU, small sizes, no install
#
# 1. installs what it needs into the running Python: the project (pip install -e .) and pytest; torch
#    with CUDA is taken as installed, or pip's default torch (a CUDA build on Linux x86_64) comes with
#    the project. Set PYTHON=... to pick the interpreter (default: python3).
# 2. reports the GPU (nvidia-smi, torch.cuda).
# 3. runs the CUDA tests (tests/gpu, marked cuda: CUDA vs CPU, AMP vs float32, a real out-of-memory
#    forced with a memory cap -> the batch halves or the CPU takes over, training steps) and the device /
#    predictor tests of the core.
# 4. prints AMP vs float32 differences, inference throughput (segment, MPx/s) and the training step
#    rate on the GPU and the CPU (benchmarks/gpu_check.py).
# Every step has a time limit; the script prints the elapsed time and exits non-zero if a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
START=$(date +%s)
FAILED=()
SCALE=1  # time limits are for a GPU machine; a dry run on a small, busy CPU gets more
step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$(( $2 * SCALE )); shift 2
  echo "=== ${name} (limit ${limit} s) ==="
  local t0; t0=$(date +%s)
  timeout --signal=INT "${limit}" "$@"
  local rc=$?
  echo "--- ${name}: exit ${rc} after $(( $(date +%s) - t0 )) s"
  if [[ ${rc} -ne 0 ]]; then FAILED+=("${name} (exit ${rc})"); fi
}

if [[ ${DRY} -eq 1 ]]; then
  echo "DRY RUN: CPU only, nothing installed, small sizes (this is not a GPU result)"
  export MEDSEG_CUDA_TESTS_ON_CPU=1
  SCALE=20
  DEVICE=cpu; SIZE=512; STEPS=2; CPU_STEPS=1
else
  DEVICE=cuda; SIZE=4096; STEPS=30; CPU_STEPS=3
  step "install" 180 "${PY}" -m pip install -q -e . pytest
fi

step "gpu" 60 bash -c "command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo 'no nvidia-smi'; ${PY} -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available())'"
if [[ ${DRY} -eq 0 ]] && ! "${PY}" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "torch sees no CUDA device: install a CUDA build of torch (pip's default on Linux x86_64) and rerun"
  exit 2
fi
step "cuda tests" 150 "${PY}" -m pytest -q -p no:cacheprovider -rs tests/gpu tests/core/test_device.py tests/core/test_predictor.py
step "figures" 150 "${PY}" benchmarks/gpu_check.py --device "${DEVICE}" --size "${SIZE}" --steps "${STEPS}" --cpu-steps "${CPU_STEPS}"

echo "=== total $(( $(date +%s) - START )) s ==="
if [[ ${#FAILED[@]} -gt 0 ]]; then
  printf 'FAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
echo "all steps passed"
