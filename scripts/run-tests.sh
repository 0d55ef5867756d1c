#!/usr/bin/env bash
# run-tests.sh — set-up, build and the whole test suite: installs missing Debian packages
# (scripts/install-deps.sh), configures and builds into build/ (Release), then runs every test
# registered with ctest (C unit tests and the end-to-end tests in tests/mpi/, which run the real
# binary under mpirun). Exits with ctest's status.
#
# Run: scripts/run-tests.sh            (from anywhere; extra arguments go to ctest, e.g. -R resume)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/install-models.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"

# mpirun refuses to run as root without these, and the tests start more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

status=0
ctest --test-dir build --output-on-failure "$@" || status=$?
exit "$status"
