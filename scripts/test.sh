#!/usr/bin/env bash
# test.sh: the one command for a fresh machine (Debian 12) that installs what is missing, builds
# everything and runs every test. CI (.ci/run) calls exactly this. Set KVSERVE_PRESET=cpu to skip
# the CUDA build where nvcc is present.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh
preset=$(scripts/build.sh)
ctest --preset "$preset" -j "$(nproc)"
