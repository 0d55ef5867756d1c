#!/usr/bin/env bash
# run.sh — the sanitizer runs of CI (ctest label sanitize).
#   run.sh asan: configures and builds the `asan` preset (gcc, ASan + UBSan at -O1, build-asan/)
#                and runs under it, with leak detection on and lsan.supp (Open MPI, PMIx, hwloc
#                and HDF5's own leaks only): every C unit test of tests/unit but test_cuda_ops
#                (test_bert and test_llama without their real-model parts, SL_SKIP_MODELS), the
#                end-to-end test test_cli (real mpirun ranks), and pipeline_jobs.py on 2 ranks with --tp 2 (an mlp predict; a
#                BERT embed of all-MiniLM-L6-v2 checked against the transformers goldens).
#                SL_SANITIZE_ALL=1 adds test_outputs and test_bert_e2e (4-5 minutes each).
#   run.sh tsan: configures and builds the `tsan` preset (ThreadSanitizer, build-tsan/) and
#                runs pipeline_jobs.py on 1 rank: the I/O thread reads, tokenizes and commits
#                while the compute thread works (runner/pipeline.c); tsan.supp is for MPI,
#                PMIx, hwloc and HDF5 only.
# Any sanitizer report fails the run. Exits 77 (skipped, with the reason) where the compiler
# cannot build with that sanitizer.
set -euo pipefail
SRC=${SL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
HERE=$SRC/tests/sanitizers
mode=${1:?usage: run.sh asan|tsan}
cd "$SRC"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

probe() { # probe FLAGS: can cc build and run a program with these flags?
  local d
  d=$(mktemp -d)
  printf 'int main(void) { return 0; }\n' >"$d/p.c"
  if ! cc $1 "$d/p.c" -o "$d/p" 2>"$d/err" || ! "$d/p" 2>>"$d/err"; then
    echo "skipped: cc cannot build with $1: $(head -c 300 "$d/err")"
    rm -rf "$d"
    exit 77
  fi
  rm -rf "$d"
}

models() { # the tests look for the models under <build>/models, as in build/
  if [ -e "$SRC/build/models" ] && [ ! -e "$1/models" ]; then
    mkdir -p "$1"
    ln -sfn "$SRC/build/models" "$1/models"
  fi
}

if [ "$mode" = asan ]; then
  probe "-fsanitize=address,undefined"
  cmake --preset asan >/dev/null
  models build-asan
  cmake --build build-asan -j"$(nproc)"
  # intercept_tls_get_addr=0: with it on, LeakSanitizer's tracer may crash at exit ("Tracer
  # caught signal 11") scanning a bogus dynamic-TLS range of the main thread, before it reports
  # anything (gcc 12's libsanitizer on glibc 2.36; seen in `shardline run --help` and
  # test_pipeline, not on every machine state: these processes dlopen plug-ins through Open MPI
  # and hwloc, libOpenCL among them, which has TLS). Off, dynamic TLS blocks are not roots of the
  # leak scan; the static TLS of the program and its linked libraries still is.
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:intercept_tls_get_addr=0
  export LSAN_OPTIONS=suppressions=$HERE/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # Every C unit test of tests/unit (test_cuda_ops needs a GPU); test_bert and test_llama without
  # their all-MiniLM-L6-v2 and SmolLM2 parts (minutes under ASan; all-MiniLM-L6-v2 runs in
  # pipeline_jobs.py below), which say NOT CHECKED.
  # (test_pipeline below, with the end-to-end tests: it starts MPI and its plug-ins as a job does.)
  units=$(cd "$SRC/tests/unit" && ls test_*.c | sed 's/\.c$//' | grep -vx 'test_cuda_ops\|test_pipeline' | paste -sd'|')
  echo "unit tests under ASan: ${units//|/ } test_pipeline"
  status=0
  SL_SKIP_MODELS=minilm,smollm2 ctest --test-dir build-asan --output-on-failure -R "^($units)\$" || status=1
  # End-to-end under mpirun. Open MPI's and PMIx's plug-ins stay loaded (keep_dso.c, preloaded
  # ahead of the ASan runtime: verify_asan_link_order=0) and the slow unwinder follows
  # allocations through their libraries (built without frame pointers), so that lsan.supp can
  # name them.
  cc -shared -fPIC -O1 -o build-asan/keep-dso.so "$HERE/keep_dso.c"
  export LD_PRELOAD=$SRC/build-asan/keep-dso.so
  export ASAN_OPTIONS=$ASAN_OPTIONS:verify_asan_link_order=0:fast_unwind_on_malloc=0
  ctest --test-dir build-asan --output-on-failure -R '^(test_pipeline|test_cli)$' || status=1
  # and an mlp predict and a BERT embed on 2 ranks with --tp 2. test_outputs and test_bert_e2e
  # pass under ASan too but take 4 to 5 minutes each there: SL_SANITIZE_ALL=1 adds them.
  SL_JOBS_TP=2 /usr/bin/python3 "$HERE/pipeline_jobs.py" "$SRC/build-asan/shardline" || status=1
  if [ -n "${SL_SANITIZE_ALL:-}" ]; then
    ctest --test-dir build-asan --output-on-failure -R '^(test_outputs|test_bert_e2e)$' || status=1
  fi
  exit $status
fi

if [ "$mode" = tsan ]; then
  probe "-fsanitize=thread"
  cmake --preset tsan >/dev/null
  cmake --build build-tsan -j"$(nproc)" --target shardline
  export TSAN_OPTIONS="suppressions=$HERE/tsan.supp:halt_on_error=1:exitcode=66:second_deadlock_stack=1"
  # one OpenMP thread: libgomp is not instrumented, so its barriers would look like races;
  # the threads under test are the I/O thread and the compute thread
  export OMP_NUM_THREADS=1
  exec /usr/bin/python3 "$HERE/pipeline_jobs.py" "$SRC/build-tsan/shardline"
fi
echo "usage: run.sh asan|tsan" >&2
exit 2
