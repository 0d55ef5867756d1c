#!/usr/bin/env bash
# gpu-check.sh — the checks that need a GPU, in one short run on a GPU machine:
#   1. configure and build with the CUDA backend (-DENABLE_CUDA=ON) into build/;
#   2. build/tests/test_cuda_ops (CUDA ops against the CPU ops); here a "skipped: no GPU"
#      (exit 77) is a FAILURE, since this script only makes sense where a GPU is visible;
#   3. the end-to-end TP test on the GPU: tests/mpi/test_tp_equivalence.py with
#      SL_DEVICE=cuda (every run gets --device cuda) and SL_MAX_TP = the number of GPUs
#      (NCCL refuses two ranks of one communicator on the same GPU);
#   4. test_llama with SL_DEVICE=cuda: the decoder forward (packed prefill, cached decode, the
#      vocabulary-parallel LM head) on the GPU against transformers' logits;
#   5. the benchmark on the GPU (bench/bench_mlp.py --device cuda, a smaller dataset).
# Everything runs under one deadline of GPU_CHECK_SECONDS (default 480) seconds; a summary
# table (step, status, seconds) is printed at the end, and the exit status is 0 only when
# every step passed.
#
# Run: scripts/gpu-check.sh        (from anywhere; needs nvcc, a GPU, and the build
#                                   dependencies of scripts/install-deps.sh)
set -uo pipefail
cd "$(dirname "$0")/.."

DEADLINE=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-480} ))
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

names=() statuses=() times=()
failed=0

# step NAME COMMAND...: runs COMMAND under the time left; records PASS/FAIL.
step() {
  local name=$1; shift
  local left=$(( DEADLINE - $(date +%s) ))
  local t0 rc
  t0=$(date +%s)
  if [ "$left" -le 5 ]; then
    names+=("$name"); statuses+=("NOT RUN (deadline)"); times+=(0); failed=1
    return 1
  fi
  echo "==== $name (time left ${left}s)"
  timeout "$left" "$@"
  rc=$?
  local st="PASS"
  if [ "$rc" -eq 124 ]; then st="FAIL (timeout)"; elif [ "$rc" -ne 0 ]; then st="FAIL (status $rc)"; fi
  [ "$st" = "PASS" ] || failed=1
  names+=("$name"); statuses+=("$st"); times+=($(( $(date +%s) - t0 )))
  [ "$st" = "PASS" ]
}

gpus() {
  local n
  n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  echo "${n:-0}"
}

nvidia-smi -L 2>/dev/null || echo "gpu-check: nvidia-smi found no GPU" >&2
NGPU=$(gpus)
[ "$NGPU" -ge 1 ] || NGPU=1

scripts/install-deps.sh || echo "gpu-check: install-deps failed (offline?); trying the build anyway" >&2
scripts/install-models.sh >/dev/null || echo "gpu-check: install-models failed (offline? carry build/models)" >&2
if step "configure (ENABLE_CUDA=ON)" cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DENABLE_CUDA=ON &&
   step "build" cmake --build build -j"$(nproc)"; then
  # exit 77 means "skipped: no GPU": a failure here
  step "test_cuda_ops (no skip allowed)" bash -c 'build/tests/test_cuda_ops; rc=$?
    if [ "$rc" -eq 77 ]; then echo "gpu-check: test_cuda_ops skipped (no GPU visible): FAIL" >&2; exit 1; fi
    exit "$rc"'
  step "e2e TP test --device cuda (SL_MAX_TP=$NGPU)" env SL_DEVICE=cuda SL_MAX_TP="$NGPU" \
       SHARDLINE="$PWD/build/shardline" SL_SOURCE_DIR="$PWD" MPIEXEC="$(command -v mpirun)" \
       "$PY" tests/mpi/test_tp_equivalence.py
  step "test_llama on CUDA (decoders vs transformers)" env SL_DEVICE=cuda SL_SOURCE_DIR="$PWD" \
       SL_MODELS_DIR="$PWD/build/models" build/tests/test_llama
  step "benchmark --device cuda" "$PY" bench/bench_mlp.py --device cuda --rows 16384 \
       --configs 1:1 --reps 3
fi

echo
echo "==== gpu-check summary ($(hostname), $(date -u +%Y-%m-%dT%H:%M:%SZ), $NGPU GPU(s))"
printf '%-45s %-22s %s\n' "step" "status" "seconds"
for i in "${!names[@]}"; do
  printf '%-45s %-22s %s\n' "${names[$i]}" "${statuses[$i]}" "${times[$i]}"
done
exit "$failed"
