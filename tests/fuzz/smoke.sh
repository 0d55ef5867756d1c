#!/usr/bin/env bash
# smoke.sh — the CI check of the fuzz targets (ctest label fuzz). `smoke.sh build` configures
# and builds them in <source>/build-fuzz (clang, -DSL_FUZZ=ON) and writes the seed corpora;
# `smoke.sh TARGET` replays every input of tests/fuzz/regressions/TARGET (the crashes fixed so
# far: each must now pass) and then fuzzes TARGET for SL_FUZZ_SECONDS (default 20) from its
# seeds. Exits 77 (skipped, with the reason) where clang or libFuzzer is missing.
set -euo pipefail
SRC=${SL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${SL_FUZZ_BUILD:-$SRC/build-fuzz}
what=${1:?usage: smoke.sh build|TARGET}

if [ "$what" = build ]; then
  cc=$(command -v clang || true)
  if [ -z "$cc" ]; then
    echo "skipped: clang not found (Debian: clang, libclang-rt-14-dev; scripts/install-deps.sh)"
    exit 77
  fi
  probe=$(mktemp -d)
  trap 'rm -rf "$probe"' EXIT
  printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return 0; }\n' >"$probe/p.c"
  if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
    echo "skipped: $cc cannot link -fsanitize=fuzzer,address,undefined (libFuzzer: libclang-rt-14-dev): $(head -c 300 "$probe/err")"
    exit 77
  fi
  CC=$cc cmake -S "$SRC" -B "$B" -DSL_FUZZ=ON -DENABLE_CUDA=OFF -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$B" --target sl_fuzz -j"$(nproc)"
  rm -rf "$B/smoke-seeds"
  /usr/bin/python3 "$SRC/tests/fuzz/make_seeds.py" "$B/smoke-seeds"
  exit 0
fi

bin="$B/tests/fuzz/$what"
if [ ! -x "$bin" ]; then
  echo "skipped: $bin not built (test_fuzz_build skipped: clang or libFuzzer missing)"
  exit 77
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
reg="$SRC/tests/fuzz/regressions/$what"
if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
  echo "== replaying $(ls "$reg" | wc -l) regression input(s) of $what"
  "$bin" -runs=1 "$reg"/*
fi
case "$what" in
  fuzz_gguf) dict=gguf.dict ;;
  fuzz_jobspec) dict=ini.dict ;;
  fuzz_safetensors | fuzz_wordpiece_json | fuzz_bpe_json | fuzz_config) dict=json.dict ;;
  *) dict= ;;
esac
corpus=$(mktemp -d)
art=$(mktemp -d)
trap 'rm -rf "$corpus" "$art"' EXIT
secs=${SL_FUZZ_SECONDS:-20}
if [ "$what" = fuzz_h5input ]; then
  # Random bytes soon reach HDF5 1.10.8's own memory errors on corrupt files (not shardline's,
  # see tests/fuzz/README.md), which would fail CI at random: here only the seeds are run.
  echo "== running the seeds of $what (no random fuzzing in CI: HDF5's own bugs)"
  "$bin" -runs=0 "$B/smoke-seeds/$what"
  exit $?
fi
echo "== fuzzing $what for ${secs}s"
status=0
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
  -print_final_stats=1 -artifact_prefix="$art/" ${dict:+-dict="$SRC/tests/fuzz/$dict"} \
  "$corpus" "$B/smoke-seeds/$what" >"$art.log" 2>&1 || status=$?
grep -v -E '^#[0-9]+.*(NEW|REDUCE|pulse) ' "$art.log" | tail -n 60
rm -f "$art.log"
if [ "$status" -ne 0 ]; then
  for f in "$art"/*; do
    [ -e "$f" ] || continue
    echo "FAILED: $what crashed on $(basename "$f") (base64: $(base64 -w0 "$f" | head -c 2000))"
  done
  echo "FAILED: $what exited with status $status"
  exit 1
fi
exit 0
