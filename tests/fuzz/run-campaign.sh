#!/usr/bin/env bash
# run-campaign.sh — the long fuzzing runs recorded in tests/fuzz/README.md: each target in turn
# (one at a time), for SECONDS seconds each (default 420), from its seeds (make_seeds.py) and
# the corpus earlier runs left in build-fuzz/corpus/<target>, with its dictionary. libFuzzer's
# fork mode (one child at a time) keeps going after a crash and records it under
# build-fuzz/artifacts/<target>/; the log of each run is build-fuzz/logs/<target>.log.
#
# Run: tests/fuzz/run-campaign.sh [SECONDS] [TARGET...]   (after building build-fuzz, see README)
# SL_FUZZ_RUNS=N also stops a target once it has run N inputs (checked between fork-mode jobs,
# so it overshoots by up to one job), e.g. SL_FUZZ_RUNS=10000000 for "10 million or SECONDS".
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-420}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors gguf wordpiece_json wordpiece_encode bpe_json
                                     bpe_encode config jobspec h5input)
B=build-fuzz
[ -d "$B/seeds" ] || /usr/bin/python3 tests/fuzz/make_seeds.py "$B/seeds" >/dev/null
dict_of() {
  case "$1" in
    gguf) echo tests/fuzz/gguf.dict ;;
    jobspec) echo tests/fuzz/ini.dict ;;
    safetensors | wordpiece_json | bpe_json | config) echo tests/fuzz/json.dict ;;
    *) echo "" ;;
  esac
}
for t in "${targets[@]}"; do
  mkdir -p "$B/corpus/fuzz_$t" "$B/artifacts/fuzz_$t" "$B/logs"
  d=$(dict_of "$t")
  echo "$(date -u +%T) fuzz_$t: ${secs}s" >&2
  "$B/tests/fuzz/fuzz_$t" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="$B/artifacts/fuzz_$t/" ${d:+-dict=$d} ${SL_FUZZ_RUNS:+-runs=$SL_FUZZ_RUNS} \
    "$B/corpus/fuzz_$t" "$B/seeds/fuzz_$t" >"$B/logs/fuzz_$t.log" 2>&1 || true
  tail -n 3 "$B/logs/fuzz_$t.log" >&2
done
