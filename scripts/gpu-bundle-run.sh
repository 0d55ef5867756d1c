#!/usr/bin/env bash
# run.sh — the GPU check of shardline, from gpu-bundle/ (scripts/gpu-bundle.sh makes the folder
# and copies this file there as run.sh). Builds nothing, needs no network and none of our Debian
# packages: the programs, their libraries, Open MPI, the models and the CPU results of every
# end-to-end job are in the bundle. From the GPU machine it takes only the NVIDIA driver, the
# CUDA runtime, cuBLAS/cuBLASLt and NCCL (the CUDA 13 toolkit's copies where it has them, else
# the Python packages nvidia-cublas / nvidia-nccl-cu13 torch ships with) and python3 with numpy
# and h5py (the comparer; torch + transformers for the benchmark).
#
# Steps, each with its own timeout, under one deadline (SL_CHECK_SECONDS, default 480):
#   environment      GPUs, driver, glibc, where each CUDA library was found and its version,
#                    and that every carried program finds every library it needs;
#   test_cuda_ops    every backend op on CUDA against the CPU op (f32/f16/bf16);
#   test_bert, test_llama   on the CUDA backend (SL_DEVICE=cuda) against transformers' goldens
#                    (tiny models; MiniLM and SmolLM2 are not carried and say so);
#   e2e <job>        the job under the carried mpirun on --device cuda, compared with the CPU
#                    result computed when bundling: MLP, BERT embed, LLaMA score, greedy generate;
#   tp2 one GPU      mpirun -np 2 --tp 2 on the one GPU (all-reduce over host memory and MPI:
#                    --comm auto must choose it; MLP, BERT, LLaMA) equal to the CPU --tp 1
#                    result; --comm nccl there must be refused; a 1-rank NCCL communicator
#                    (--comm nccl, -np 1, LLaMA score: the decoder all-reduces even on one rank)
#                    runs ncclAllReduce;
#   bench            bench_gpu.py: shardline against PyTorch on the same GPU.
# With no GPU visible the GPU steps SKIP and the same binaries run their CPU paths: the e2e jobs
# on --device cpu, test_bert, test_llama, and MPI jobs across 2 ranks (--tp 2), which must PASS.
# Prints a table (step, status, seconds, figure); with OUT set, writes OUT/table.txt,
# OUT/steps.log (every step's output) and OUT/bench.json.
#
# Run: gpu-bundle/run.sh                   (from anywhere; exit 0 when no step FAILed)
#      gpu-bundle/run.sh --make-reference  (when bundling: the CPU results, into e2e/ref/)
set -uo pipefail
B=$(cd "$(dirname "$0")" && pwd)
E=$B/e2e
MODE=check
[ "${1:-}" = "--make-reference" ] && MODE=reference
DEADLINE=$(( $(date +%s) + ${SL_CHECK_SECONDS:-480} ))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sl-gpu-check.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
trap 'rm -rf "$WORK"' EXIT
# The programs and libraries travel packed (payload.tar.gz: bin/ lib/ ompi/ pmix/ nogpu/), which
# halves what the device call carries; unpacking takes about a second.
P=$WORK/payload
mkdir -p "$P"
tar -xzf "$B/payload.tar.gz" -C "$P" || { echo "run.sh: cannot unpack $B/payload.tar.gz" >&2; exit 1; }

# ---- the environment of every carried program ----------------------------------------------
export OPAL_PREFIX=$P/ompi OPAL_EXEC_PREFIX=$P/ompi OPAL_BINDIR=$P/ompi/bin OPAL_LIBDIR=$P/lib
export OPAL_PKGLIBDIR=$P/ompi/lib/openmpi3 OPAL_DATAROOTDIR=$P/ompi/share OPAL_DATADIR=$P/ompi/share
export OPAL_PKGDATADIR=$P/ompi/share/openmpi OPAL_SYSCONFDIR=$P/ompi/etc
export PMIX_PREFIX=$P/pmix PMIX_EXEC_PREFIX=$P/pmix PMIX_DATAROOTDIR=$P/pmix/share PMIX_DATADIR=$P/pmix/share
export PMIX_MCA_mca_base_component_path=$P/pmix/lib/pmix
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# one node: ranks are started by mpirun itself (plm isolated), so no ssh/rsh needs to exist
export OMPI_MCA_plm=isolated
# shared memory between the ranks without ptrace-based single copy (refused in containers)
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMP_WAIT_POLICY=passive
export SL_SOURCE_DIR=$B/src SL_MODELS_DIR=$B/models SL_SKIP_MODELS=minilm,smollm2
MPIRUN=$P/ompi/bin/mpirun
PY=${SL_PYTHON:-python3}

NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then
  NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi
[ "$MODE" = reference ] && NGPU=0

# The CUDA libraries: the toolkit's, else the Python packages' (nvidia/*/lib), else ldconfig's.
cuda_dirs() {
  local d
  for d in ${CUDA_HOME:+$CUDA_HOME/lib64 $CUDA_HOME/lib} /usr/local/cuda/lib64 /usr/local/cuda/lib \
           /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && echo "$d"
  done
  "$PY" - 2>/dev/null <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        print(d)
EOF
  ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null
}
CUDA_FOUND=() CUDA_MISSING=()
CUDA_LD=
mapfile -t dirs < <(cuda_dirs | awk '!seen[$0]++')
for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
  hit=
  for d in "${dirs[@]}"; do
    if [ -e "$d/$so" ]; then hit=$d/$so; break; fi
  done
  if [ -z "$hit" ]; then
    hit=$(ldconfig -p 2>/dev/null | awk -v s="$so" '$1 == s {print $NF; exit}')
  fi
  if [ -n "$hit" ]; then
    CUDA_FOUND+=("$hit")
    case ":$CUDA_LD:" in *":$(dirname "$hit"):"*) ;; *) CUDA_LD=$CUDA_LD:$(dirname "$hit") ;; esac
  else
    CUDA_MISSING+=("$so")
  fi
done
STANDINS=0
if [ ${#CUDA_MISSING[@]} -gt 0 ] && [ "$NGPU" -eq 0 ]; then
  CUDA_LD=:$P/nogpu # no GPU and no CUDA libraries: the stand-ins that answer "no driver"
  STANDINS=1
fi
# Only the carried programs see the bundle's libraries (sl CMD...): the machine's own tools and
# Python (the comparer, torch) keep the machine's, which an older carried libz, libcrypto or
# libpcre2 must not shadow.
SL_LD=$P/lib$CUDA_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
sl() { LD_LIBRARY_PATH=$SL_LD "$@"; }
py() { "$PY" "$@"; }

# ---- steps and the table ---------------------------------------------------------------------
names=() statuses=() secs=() figs=()
FAILED=0
record() { # NAME STATUS SECONDS FIGURE
  names+=("$1"); statuses+=("$2"); secs+=("$3"); figs+=("$4")
  [ "$2" = FAIL ] && FAILED=1
  printf '==== %-40s %-4s %4ss  %s\n' "$1" "$2" "$3" "$4"
}
# step NAME TIMEOUT FIGURE_FN COMMAND...: runs COMMAND (output to the step's log) under
# min(TIMEOUT, time left); FIGURE_FN LOG prints the figure; PASS on status 0.
step() {
  local name=$1 limit=$2 figfn=$3
  shift 3
  local left=$(( DEADLINE - $(date +%s) ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 2 ]; then
    record "$name" FAIL 0 "not run: the ${SL_CHECK_SECONDS:-480} s deadline has passed"
    return 1
  fi
  local log=$LOGS/$(printf '%02d' ${#names[@]})-${name//[^A-Za-z0-9_.-]/_}.log
  local t0=$(date +%s) rc
  # a new bash runs the step (timeout cannot run a function); the functions and the state they
  # read are exported below
  { echo "\$ $*"; timeout -k 5 "$limit" bash -c '"$@"' step "$@"; } >"$log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 )) fig
  fig=$("$figfn" "$log" 2>/dev/null | tr '\n' ' ' | cut -c1-110)
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    record "$name" FAIL "$dt" "timed out after ${limit}s; $fig"
  elif [ "$rc" -ne 0 ]; then
    local why
    why=$(grep -m1 -E 'shardline: error|^FAIL|Error|error:' "$log" || tail -n 3 "$log")
    record "$name" FAIL "$dt" "status $rc; $(tr '\n' ' ' <<<"$why" | cut -c1-150)"
  else
    record "$name" PASS "$dt" "$fig"
  fi
  [ "$rc" -eq 0 ]
}
skip() { record "$1" SKIP 0 "$2"; }
last_line() { tail -n 1 "$1"; }
test_figure() {
  grep -E 'passed, [0-9]+ failed|skipped' "$1" | tail -n 1
  grep -q 'NOT CHECKED' "$1" && echo "(the large-model part NOT CHECKED: not carried)"
}

# ---- the end-to-end jobs -----------------------------------------------------------------------
# job_args NAME: the job's options other than --device, --output and the ranks.
job_args() {
  case $1 in
    mlp) echo "--model $E/mlp --input $E/mlp_in/shard-000.h5 --input $E/mlp_in/shard-001.h5 --input-dataset features --unit-rows 300 --batch-size 64" ;;
    bert_embed) echo "--model $B/src/tests/reference/tiny_bert_cls --input $E/bert_text.h5 --task embed --unit-rows 16" ;;
    llama_score) echo "--model $B/src/tests/reference/tiny_llama/qwen2_bias --input $E/llama_score.h5 --input-dataset input_ids --task score" ;;
    llama_generate) echo "--model $B/src/tests/reference/tiny_llama/qwen2_bias --input $E/llama_prompts.h5 --input-dataset input_ids --task generate --max-new-tokens 16" ;;
  esac
}
kind_of() { case $1 in mlp) echo mlp ;; bert_embed) echo embed ;; llama_score) echo score ;; llama_generate) echo generate ;; esac; }

# e2e_job NAME NP TP DEVICE [EXTRA...]: runs the job and compares it with e2e/ref/NAME.h5;
# prints the comparer's figure and the all-reduce the report names.
e2e_job() {
  local name=$1 np=$2 tp=$3 dev=$4
  shift 4
  local out=$WORK/out-$name-np$np-tp$tp-$dev
  # shellcheck disable=SC2046
  sl "$MPIRUN" -np "$np" "$P/bin/shardline" run $(job_args "$name") --device "$dev" --tp "$tp" \
    --output "$out" --quiet "$@" || return 1
  py "$B/compare_outputs.py" "$(kind_of "$name")" "$out" "$E/ref/$name.h5" || return 1
  py -c "import json,sys; print('all_reduce', json.load(open(sys.argv[1]))['all_reduce'])" \
    "$out/report.json"
}
# e2e_expect_comm NAME NP TP DEVICE COMM [EXTRA...]: as e2e_job, and the report must name COMM.
e2e_expect_comm() {
  local want=$5 args=("$1" "$2" "$3" "$4")
  shift 5
  local res
  res=$(e2e_job "${args[@]}" "$@") || { echo "$res"; return 1; }
  echo "$res"
  grep -q "^all_reduce $want\$" <<<"$res" || { echo "expected all_reduce $want"; return 1; }
}
e2e_figure() { grep -vE '^\$|^shardline' "$1" | tail -n 2; }

# refused_nccl: --comm nccl with two ranks on one GPU must stop with status 2 and say why.
refused_nccl() {
  sl "$MPIRUN" -np 2 "$P/bin/shardline" run $(job_args mlp) --device cuda --tp 2 --comm nccl \
    --output "$WORK/out-refused" --quiet
  local rc=$?
  echo "exit status $rc"
  [ "$rc" -eq 2 ]
}

if [ "$MODE" = reference ]; then
  mkdir -p "$E/ref"
  rc=0
  for j in mlp bert_embed llama_score llama_generate; do
    out=$WORK/ref-$j
    # shellcheck disable=SC2046
    if sl "$MPIRUN" -np 1 "$P/bin/shardline" run $(job_args "$j") --device cpu --output "$out" --quiet &&
       sl "$P/bin/shardline" merge "$out" --consolidate >/dev/null; then
      cp "$out/predictions.h5" "$E/ref/$j.h5"
      echo "gpu-bundle: CPU result of $j -> e2e/ref/$j.h5"
    else
      echo "gpu-bundle: the CPU job $j failed" >&2
      rc=1
    fi
  done
  exit $rc
fi

# ---- 1. environment ---------------------------------------------------------------------------
environment() {
  echo "bundle $(cat "$B/VERSION" 2>/dev/null), host $(uname -n), kernel $(uname -r)"
  local have need
  have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  need=$(cat "$P/GLIBC_NEEDED" 2>/dev/null)
  echo "glibc $have (the bundle needs ${need:-?})"
  if [ -n "$need" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then
    echo "FAIL: glibc $have is older than the $need the carried programs were built against"
    return 1
  fi
  if [ "$NGPU" -gt 0 ]; then
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  else
    echo "no GPU visible (nvidia-smi: $(command -v nvidia-smi || echo absent))"
  fi
  local f
  for f in $CUDA_FOUND_S; do echo "found $f -> $(readlink -f "$f")"; done
  [ -z "$CUDA_MISSING_S" ] || echo "not found: $CUDA_MISSING_S"
  if [ "$STANDINS" = 1 ]; then
    echo "no CUDA libraries here: $P/nogpu stand-ins (every call answers 'no CUDA driver')"
  elif [ -n "$CUDA_MISSING_S" ]; then
    echo "FAIL: a GPU is visible but $CUDA_MISSING_S were found nowhere (CUDA_HOME, /usr/local/cuda, the Python packages nvidia/*/lib, ldconfig)"
    return 1
  fi
  if [ "$STANDINS" = 0 ]; then
    # shellcheck disable=SC2086
    py - $CUDA_FOUND_S <<'EOF' || true
import ctypes, sys
for p in sys.argv[1:]:
    v = ctypes.c_int(0)
    try:
        lib = ctypes.CDLL(p)
        if "cudart" in p and lib.cudaRuntimeGetVersion(ctypes.byref(v)) == 0:
            print(f"CUDA runtime {v.value // 1000}.{v.value % 1000 // 10} ({p})")
            if lib.cudaDriverGetVersion(ctypes.byref(v)) == 0:
                print(f"CUDA driver API {v.value // 1000}.{v.value % 1000 // 10}")
        if "nccl" in p and lib.ncclGetVersion(ctypes.byref(v)) == 0:
            print(f"NCCL {v.value // 10000}.{v.value // 100 % 100}.{v.value % 100} ({p})")
    except OSError as ex:
        print(f"cannot load {p}: {ex}")
EOF
  fi
  # every carried program and plugin finds every library it needs
  local bad=0 x
  for x in "$P"/bin/* "$P"/ompi/bin/* "$P"/ompi/lib/openmpi3/*.so "$P"/pmix/lib/pmix/*.so; do
    deps=$(sl ldd "$x" 2>&1)
    if grep -q "not found" <<<"$deps"; then
      echo "FAIL: $x: $(grep 'not found' <<<"$deps" | tr -s ' \t' ' ' | tr '\n' ';')"
      bad=1
    fi
  done
  sl "$MPIRUN" --version | head -n 1 || bad=1
  [ "$bad" = 0 ]
}
env_figure() {
  local gpu glibc rt nccl
  gpu=$(grep -m1 -E '^[^,]+, [0-9.]+, [0-9]+ MiB$' "$1" | cut -d, -f1,2)
  glibc=$(grep -m1 '^glibc' "$1" | cut -d' ' -f1-2)
  rt=$(grep -m1 '^CUDA runtime' "$1" | awk '{print $3}')
  nccl=$(grep -m1 '^NCCL' "$1" | awk '{print $2}')
  echo "${gpu:-no GPU}; $glibc; cudart ${rt:-none}; NCCL ${nccl:-none}$([ "$STANDINS" = 1 ] && echo '; CUDA stand-ins')"
}
CUDA_FOUND_S="${CUDA_FOUND[*]}" CUDA_MISSING_S="${CUDA_MISSING[*]}"
export B P E WORK MPIRUN PY SL_LD NGPU STANDINS CUDA_FOUND_S CUDA_MISSING_S
export -f sl py job_args kind_of e2e_job e2e_expect_comm refused_nccl environment
step environment 60 env_figure environment

# ---- 2. the checks ----------------------------------------------------------------------------
if [ "$NGPU" -gt 0 ]; then
  DEV=cuda
  # 77 is "skipped: no GPU" for ctest; here, with a GPU visible, it is a failure.
  step test_cuda_ops 120 test_figure sl bash -c '"$0"; rc=$?; [ $rc -eq 77 ] && echo "skipped with a GPU visible: FAIL"; exit $rc' "$P/bin/test_cuda_ops"
else
  DEV=cpu
  skip test_cuda_ops "no GPU visible"
fi
step "test_bert ($DEV)" 90 test_figure sl env SL_DEVICE=$DEV "$P/bin/test_bert"
step "test_llama ($DEV)" 90 test_figure sl env SL_DEVICE=$DEV "$P/bin/test_llama"
for j in mlp bert_embed llama_score llama_generate; do
  step "e2e $j ($DEV)" 60 e2e_figure e2e_job "$j" 1 1 "$DEV"
done
if [ "$NGPU" -gt 0 ]; then
  step "tp2 one GPU: mlp" 60 e2e_figure e2e_expect_comm mlp 2 2 cuda mpi-staged
  step "tp2 one GPU: bert_embed" 60 e2e_figure e2e_expect_comm bert_embed 2 2 cuda mpi-staged
  step "tp2 one GPU: llama_score" 60 e2e_figure e2e_expect_comm llama_score 2 2 cuda mpi-staged
  step "tp2 one GPU: --comm nccl refused" 30 last_line refused_nccl
  # the decoder all-reduces even with one rank, so this runs ncclAllReduce on a 1-rank communicator
  step "nccl 1-rank: llama_score" 60 e2e_figure e2e_expect_comm llama_score 1 1 cuda nccl --comm nccl
else
  step "mpi 2 ranks: mlp tp2 (cpu)" 60 e2e_figure e2e_expect_comm mlp 2 2 cpu mpi
  step "mpi 2 ranks: llama_score tp2 (cpu)" 60 e2e_figure e2e_expect_comm llama_score 2 2 cpu mpi
  skip "tp2 one GPU" "no GPU visible"
  skip "nccl 1-rank" "no GPU visible"
fi
if [ "$NGPU" -gt 0 ]; then
  bench_figure() { grep '^figure' "$1" | cut -d' ' -f2-; }
  step "bench vs PyTorch" 240 bench_figure env PYTHONUNBUFFERED=1 "$PY" \
    "$B/bench_gpu.py" --shardline "$P/bin/shardline" --mpirun "$MPIRUN" \
    --ld-library-path "$SL_LD" --tokenizer "$B/bert-base-uncased-tokenizer.json" \
    --json "$WORK/bench.json"
else
  skip "bench vs PyTorch" "no GPU visible"
fi

# ---- 3. the table -----------------------------------------------------------------------------
table() {
  echo "shardline GPU check: $(uname -n), $(date -u +%Y-%m-%dT%H:%M:%SZ), $NGPU GPU(s), bundle $(cat "$B/VERSION" 2>/dev/null)"
  printf '%-40s %-5s %5s  %s\n' step status sec figure
  local i
  for i in "${!names[@]}"; do
    printf '%-40s %-5s %5s  %s\n' "${names[$i]}" "${statuses[$i]}" "${secs[$i]}" "${figs[$i]}"
  done
  echo "result: $([ "$FAILED" = 0 ] && echo PASS || echo FAIL)"
}
echo
table
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  table >"$OUT/table.txt"
  for f in "$LOGS"/*.log; do echo "######## $(basename "$f")"; cat "$f"; done >"$OUT/steps.log"
  [ -f "$WORK/bench.json" ] && cp "$WORK/bench.json" "$OUT/bench.json"
fi
exit "$FAILED"
