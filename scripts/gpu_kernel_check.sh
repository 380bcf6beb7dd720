#!/usr/bin/env bash
# gpu_kernel_check.sh [--budget-s S]: on the GPU machine, from the repository root with the bundle in
# .gpu (scripts/gpu_bundle.sh): every kernel and backend test, the attention benchmark, the check of
# our float64 reference against transformers, then compute-sanitizer memcheck and racecheck over the
# kernel tests. Logs and JSON go to $OUT (default ./gpu-out); a short summary is printed last.
# Builds nothing.
#
# Device time is scarce (one short call a session), so the stages run in order of what they tell:
# correctness first, then the figures, then the slow sanitizer passes. Each stage gets at most
# what is left of --budget-s (default 480, leaving a 10-minute call room to start and to return the
# files) and is killed past it; stages that find no time left are recorded as SKIP. The summary
# and every log written so far come back whatever happens.
set -uo pipefail
budget_s=480
while [[ $# -gt 0 ]]; do
  case $1 in
    --budget-s) budget_s=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_kernel_check.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
bundle=${BUNDLE:-.gpu}
out=${OUT:-gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The tiny models of this working tree (the binaries' compiled-in path is the build machine's).
export KVSERVE_TEST_DATA=$PWD/tests/data
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$out/gpu.txt"

start=$SECONDS
summary=()
failed=0
record() {
  summary+=("$1")
  printf '%s\n' "${summary[@]}" >"$out/summary.txt"  # kept current: a cut call still returns it
}
# run NAME CAP CMD...: at most CAP seconds (and never past the budget); logs to $out/NAME.log.
run() {
  local name=$1 cap=$2; shift 2
  local left=$((budget_s - (SECONDS - start)))
  if ((left < 15)); then
    record "SKIP  $name: no time left in the ${budget_s} s budget"
    return
  fi
  ((cap > left)) && cap=$left
  local t0=$SECONDS rc=0
  timeout --signal=TERM --kill-after=10 "$cap" "$@" >"$out/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - t0))
  if ((rc == 0)); then
    # A GPU test skips (and passes) where no device is usable: say so, or a PASS would mislead.
    local skipped
    skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) tests\{0,1\}\..*/\1/p' "$out/$name.log" | tail -1)
    record "PASS  $name (${took} s)${skipped:+, $skipped tests SKIPPED}"
  elif ((rc == 124 || rc == 137)); then
    record "TIME  $name: cut at ${cap} s, see $name.log"
    tail -15 "$out/$name.log"
  else
    record "FAIL  $name (${took} s, exit $rc): see $name.log"
    failed=1
    tail -30 "$out/$name.log"
  fi
}

# 1. Correctness: every kernel against its CPU reference, then the whole model against the CPU backend.
for t in kernel_tests layer_kernel_tests attention_kernel_tests sampling_kernel_tests cuda_backend_tests; do
  run "$t" 150 "$bundle/bin/$t" --gtest_brief=1
done
# 2. The figures of issue 5: decode bandwidth against a device copy, prefill TFLOP/s.
run attention_bench 90 "$bundle/bin/attention_bench" --json "$out/attention_bench.json"
# 3. Our float64 reference (expected.json, which cuda_backend_tests compare the GPU with) against
#    Hugging Face transformers on the same weights.
run transformers_reference 90 python3 scripts/reference/transformers_check.py tests/data/models/*/
#    Speculative decoding on the GPU: engine steps and time with and without drafts (a tiny model:
#    launch-bound, so it shows what fewer steps are worth when a step's cost is not its tokens).
run speculative_bench 60 env OFFLINE="$bundle/bin/kvserve-offline" BACKEND=cuda TOKENS=1000 REQUESTS=4 \
  REPEATS=3 scripts/bench_speculative.sh
# 4. The sanitizers slow kernels ~100x: run them over the shapes that cover every code path but not
#    the 8k-context references. memcheck of every area before any racecheck.
command -v compute-sanitizer >/dev/null || export PATH=$PATH:/usr/local/cuda/bin
cs=(compute-sanitizer --error-exitcode 1 --print-limit 20)
short='-*Long*:*8200*:*LongContext*'
run memcheck_attention 120 "${cs[@]}" --tool memcheck "$bundle/bin/attention_kernel_tests" --gtest_brief=1 \
  --gtest_filter="$short"
run memcheck_layers 60 "${cs[@]}" --tool memcheck "$bundle/bin/layer_kernel_tests" --gtest_brief=1
run memcheck_sampling 60 "${cs[@]}" --tool memcheck "$bundle/bin/sampling_kernel_tests" --gtest_brief=1
run memcheck_backend 90 "${cs[@]}" --tool memcheck "$bundle/bin/cuda_backend_tests" --gtest_brief=1 \
  --gtest_filter='TinyModels/CudaBackendModel.*/1:CudaBackend.*:StepUpload*'
run racecheck_attention 120 "${cs[@]}" --tool racecheck "$bundle/bin/attention_kernel_tests" --gtest_brief=1 \
  --gtest_filter="$short"
run racecheck_layers 60 "${cs[@]}" --tool racecheck "$bundle/bin/layer_kernel_tests" --gtest_brief=1
run racecheck_sampling 60 "${cs[@]}" --tool racecheck "$bundle/bin/sampling_kernel_tests" --gtest_brief=1

[[ -f $out/attention_bench.log ]] && cat "$out/attention_bench.log"
[[ -f $out/speculative_bench.log ]] && cat "$out/speculative_bench.log"
echo "--- summary ($((SECONDS - start)) s of ${budget_s} s) ---"
cat "$out/summary.txt"
exit $failed
