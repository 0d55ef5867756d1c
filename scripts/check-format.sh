#!/usr/bin/env bash
# check-format.sh — every C and CUDA file of the repository is as .clang-format lays it out.
# Uses Debian 12's clang-format 14 (scripts/install-deps.sh installs it); another major version
# formats some constructs differently, so the check is skipped (77) rather than failed there.
# Prints each file that differs and the first lines of the difference; exits 1 if any does.
#
# Run: scripts/check-format.sh           (from anywhere)
#      scripts/check-format.sh --fix     (rewrites the files in place)
set -euo pipefail
cd "$(dirname "$0")/.."

cf="$(command -v clang-format-14 || command -v clang-format || true)"
if [ -z "$cf" ]; then
  echo "check-format: clang-format not found (apt-get install clang-format)" >&2
  exit 77
fi
major="$("$cf" --version | sed -n 's/.*version \([0-9][0-9]*\)\..*/\1/p')"
if [ "$major" != 14 ]; then
  echo "check-format: $cf is version $major, the layout is defined by clang-format 14" >&2
  exit 77
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu' '*.cuh')
else
  mapfile -t files < <(find . -path ./build -prune -o -path './build-*' -prune -o \
                         \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print | sort)
fi

if [ "${1:-}" = --fix ]; then
  "$cf" -i "${files[@]}"
  exit 0
fi

bad=0
for f in "${files[@]}"; do
  if ! "$cf" "$f" | cmp -s - "$f"; then
    echo "check-format: $f differs from clang-format's layout:" >&2
    "$cf" "$f" | diff -u "$f" - | sed -n '3,14p' >&2 || true
    bad=$((bad + 1))
  fi
done
if [ "$bad" -gt 0 ]; then
  echo "check-format: $bad of ${#files[@]} files differ; scripts/check-format.sh --fix rewrites them" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files as clang-format lays them out"
