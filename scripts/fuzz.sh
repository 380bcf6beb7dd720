#!/usr/bin/env bash
# fuzz.sh [SECONDS_PER_TARGET]: builds the libFuzzer targets (tests/fuzz) in the asan preset's build
# (build/asan: clang, ASan + UBSan, every library instrumented for coverage) and runs each for
# SECONDS_PER_TARGET (default 30) from a scratch copy of its committed corpus, so tests/fuzz/corpus
# is never modified. Targets run $(nproc) at a time (FUZZ_JOBS overrides). Exits non-zero on any
# crash, leak, sanitizer report, timeout or out-of-memory, printing the reproducer and the command
# that replays it. tests/fuzz/README.md explains the targets.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
  exit 2
fi
build=build/asan
jobs=${FUZZ_JOBS:-$(nproc)}

targets=(fuzz_chat_template fuzz_model_files fuzz_openai_request fuzz_request_validation fuzz_response_format
  fuzz_tokenizer fuzz_tokenizer_model)
# Room for the seeds plus growth; longer inputs only slow the search down.
declare -A max_len=(
  [fuzz_chat_template]=8192      # the largest committed template (tools.jinja) is 3.2 KiB
  [fuzz_model_files]=16384       # config.json + a safetensors file of a 2-layer, hidden-8 model
  [fuzz_openai_request]=4096     # seeds are under 0.7 KiB; the fixture admits requests up to 4 KiB
  [fuzz_request_validation]=4096 # just past ServiceOptions.max_request_bytes in the target
  [fuzz_response_format]=4096    # the largest seed (a regression schema) is 2.5 KiB
  [fuzz_tokenizer]=4096
  [fuzz_tokenizer_model]=12288   # the committed tokenizer.model is 7.3 KiB
)

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ not found; run scripts/install_deps.sh (Debian: clang libclang-rt-14-dev)" >&2
  exit 2
fi

start=$SECONDS
# The asan preset instruments every library, not only the targets: coverage feedback and sanitizer
# checks must reach the code under test (CMakePresets.json). The ASan test suites share the build.
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$(nproc)" --target "${targets[@]}"
built=$SECONDS
echo "fuzz.sh: built in $((built - start)) s; fuzzing ${#targets[@]} targets for $seconds s each, $jobs at a time"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/kvserve-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# Reproducers outlive the scratch folder.
artifacts=$(realpath "$build")/artifacts
mkdir -p "$artifacts"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_target() {
  local t=$1
  mkdir -p "$scratch/$t/corpus"
  cp tests/fuzz/corpus/"$t"/* "$scratch/$t/corpus/"
  set +e
  "$build/tests/fuzz/$t" "$scratch/$t/corpus" -max_total_time="$seconds" -max_len="${max_len[$t]}" \
    -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 -artifact_prefix="$artifacts/$t-" \
    >"$scratch/$t.log" 2>&1
  echo $? >"$scratch/$t.rc"
}

running=0
for t in "${targets[@]}"; do
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait

failed=0
for t in "${targets[@]}"; do
  rc=$(cat "$scratch/$t.rc")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log")
  cov=$(grep -o 'cov: [0-9]*' "$scratch/$t.log" | tail -1 || true)
  if [[ $rc == 0 ]]; then
    echo "fuzz.sh: $t: ok (${execs:-?} inputs, $cov)"
    continue
  fi
  failed=1
  echo "fuzz.sh: $t FAILED (exit status $rc); the end of its log:" >&2
  tail -n 60 "$scratch/$t.log" >&2
  while read -r file; do
    echo "fuzz.sh: reproducer: $file" >&2
    echo "fuzz.sh: replay it:  $build/tests/fuzz/$t $file" >&2
    echo "fuzz.sh: (KVSERVE_FUZZ_VERBOSE=1 says why each stage refused it; copy it into" \
      "tests/fuzz/corpus/$t/ once fixed)" >&2
  done < <(sed -n "s/^.*Test unit written to \(.*\)$/\1/p" "$scratch/$t.log")
done
echo "fuzz.sh: total $((SECONDS - start)) s"
exit $failed
