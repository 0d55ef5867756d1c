#!/usr/bin/env bash
# Installs what shardline needs to build, run and test, from Debian packages, when missing.
# Idempotent and quiet when everything is there. Needs root (or sudo) on a fresh machine.
set -euo pipefail

pkgs=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools
      libopenblas-dev libblis-dev libcjson-dev libinih-dev fortunes-min libutf8proc-dev libpcre2-dev libcsv-dev python3 python3-numpy python3-h5py iproute2
      slurmctld slurmd slurm-client munge valgrind
      debootstrap # debootstrap: the bare Debian 12 chroot of tests/bundle (the gpu-bundle check)
      chromium man-db # chromium: renders report.html in test_report_html; man-db: test_install
      clang libclang-rt-14-dev libomp-dev # clang, libFuzzer, clang's OpenMP: tests/fuzz (label fuzz)
      clang-format) # test_format: scripts/check-format.sh
# test_compare installs gguf-py (PyPI, --no-deps) with pip under build/; gguf imports yaml
pkgs+=(python3-pip python3-yaml)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
