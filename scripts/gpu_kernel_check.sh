#!/usr/bin/env bash
# gpu_kernel_check.sh: on the GPU machine, from the repository root with the bundle in .gpu
# (scripts/gpu_bundle.sh): every kernel and backend test, compute-sanitizer memcheck and racecheck
# over the kernel tests, and the attention benchmark. Logs and JSON go to $OUT (default ./gpu-out);
# a short summary is printed last. Builds nothing. Fits one 10-minute device call.
set -uo pipefail
bundle=${BUNDLE:-.gpu}
out=${OUT:-gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The tiny models of this working tree (the binaries' compiled-in path is the build machine's).
export KVSERVE_TEST_DATA=$PWD/tests/data
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"

summary=()
run() {  # run NAME CMD...: logs to $out/NAME.log, records pass/fail
  local name=$1; shift
  local start=$SECONDS
  if "$@" >"$out/$name.log" 2>&1; then
    summary+=("PASS  $name ($((SECONDS - start)) s)")
  else
    summary+=("FAIL  $name ($((SECONDS - start)) s): see $name.log")
    tail -30 "$out/$name.log"
  fi
}

for t in kernel_tests attention_kernel_tests layer_kernel_tests sampling_kernel_tests cuda_backend_tests; do
  run "$t" "$bundle/bin/$t" --gtest_brief=1
done
# The sanitizers slow kernels ~100x: run them over the shapes that cover every code path but not the
# 8k-context references.
cs="compute-sanitizer --error-exitcode 1 --print-limit 20"
run memcheck_attention $cs --tool memcheck "$bundle/bin/attention_kernel_tests" --gtest_brief=1 \
  --gtest_filter='-*Long*:*8200*:*LongContext*'
run racecheck_attention $cs --tool racecheck "$bundle/bin/attention_kernel_tests" --gtest_brief=1 \
  --gtest_filter='-*Long*:*8200*:*LongContext*'
run memcheck_layers $cs --tool memcheck "$bundle/bin/layer_kernel_tests" --gtest_brief=1
run racecheck_layers $cs --tool racecheck "$bundle/bin/layer_kernel_tests" --gtest_brief=1
run memcheck_sampling $cs --tool memcheck "$bundle/bin/sampling_kernel_tests" --gtest_brief=1
run racecheck_sampling $cs --tool racecheck "$bundle/bin/sampling_kernel_tests" --gtest_brief=1
run memcheck_backend $cs --tool memcheck "$bundle/bin/cuda_backend_tests" --gtest_brief=1 \
  --gtest_filter='TinyModels/CudaBackendModel.*/1:CudaBackend.*:StepUpload*'
# Our float64 reference (expected.json, which cuda_backend_tests compare the GPU with) against
# Hugging Face transformers on the same weights.
run transformers_reference python3 scripts/reference/transformers_check.py tests/data/models/*/
run attention_bench "$bundle/bin/attention_bench" --json "$out/attention_bench.json"
cat "$out/attention_bench.log"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
