#!/usr/bin/env bash
# build.sh [PRESET [CMAKE_ARGS...]]: configures and builds kvserve. The preset defaults to "cuda" where nvcc exists
# (no GPU needed to compile) and "cpu" otherwise; KVSERVE_PRESET overrides. Build logs go to stderr;
# the only line on stdout is the preset used (the build is in build/PRESET).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${CUDACXX:-} ]] && ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
default=cpu
if command -v nvcc >/dev/null || [[ -n ${CUDACXX:-} ]]; then default=cuda; fi
preset=${1:-${KVSERVE_PRESET:-$default}}

cmake --preset "$preset" "${@:2}" >&2
cmake --build --preset "$preset" -j "$(nproc)" >&2
echo "$preset"
