#!/usr/bin/env bash
# test.sh: the one command for a fresh machine (Debian 12) that installs what is missing, builds
# everything and runs every test. CI (.ci/run) calls exactly this.
#
# Stages: AddressSanitizer + UndefinedBehaviorSanitizer over the engine, server and end-to-end
# tests, then the fuzzers for a bounded time (built in the same clang tree, build/asan), then
# ThreadSanitizer over the server and end-to-end tests, then the main build (CUDA too where nvcc is
# present) with every test, last, so that the run ends with ctest's summary. KVSERVE_QUICK=1 runs the main build only;
# KVSERVE_PRESET=cpu skips the CUDA build; KVSERVE_FUZZ_SECONDS sets the time per fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh

if [[ ${KVSERVE_QUICK:-0} != 1 ]]; then
  echo "=== AddressSanitizer + UBSan: engine, server and end-to-end tests ===" >&2
  scripts/build.sh asan >/dev/null
  ctest --preset asan -j "$(nproc)"
  echo "=== fuzzing ===" >&2
  scripts/fuzz.sh "${KVSERVE_FUZZ_SECONDS:-20}"
  echo "=== ThreadSanitizer: server and end-to-end tests ===" >&2
  cmake --preset tsan >/dev/null
  cmake --build --preset tsan -j "$(nproc)" --target kvserve server_tests engine_runner_tests openai_http_tests hub_download_tests \
    server_e2e_tests security_tests soak_tests
  ctest --preset tsan -j "$(nproc)"
fi

echo "=== main build and tests ===" >&2
preset=$(scripts/build.sh)
ctest --preset "$preset" -j "$(nproc)"
