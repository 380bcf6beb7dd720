#!/usr/bin/env bash
# gpu_bundle.sh [DEST]: builds the CUDA preset here (no GPU needed) and bundles what a GPU-machine run
# needs into DEST (default .gpu, which git ignores): the kernel and backend tests, the GPU benchmarks,
# kvserve, kvserve-bench and kvserve-offline with their shared libraries. The tiny test models and the
# scripts that run there (scripts/gpu_kernel_check.sh, scripts/gpu_perf.sh) travel with the working tree.
#
# The bundle is about 90 MB (OpenBLAS alone is 35 MB) and a device call carries 64 MiB at most, so it
# is also packed as DEST.tgz (about 30 MB), which is what travels. On the GPU machine (the device
# tool, carry [".gpu.tgz"]):
#   tar -xzf .gpu.tgz && bash scripts/gpu_kernel_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.gpu}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
scripts/build.sh cuda >/dev/null
b=build/cuda
rm -rf "$dest"
bins=()
for t in tests/kernel_tests tests/attention_kernel_tests tests/layer_kernel_tests tests/sampling_kernel_tests \
         tests/cuda_backend_tests bench/attention_bench bench/gpu_peak_bench bench/kvserve-bench \
         server/kvserve server/kvserve-offline; do
  [[ -x $b/$t ]] && bins+=("$b/$t")
done
../shared/gpu/bundle.sh "$dest" "${bins[@]}"
# Host debug info is most of the size, and a device call carries 64 MiB at most (the kernels keep
# their -lineinfo: it lives in the embedded device code, which strip leaves alone).
strip --strip-debug "$dest"/bin/* "$dest"/lib/* 2>/dev/null || true
du -sh "$dest"
tar -czf "$dest.tgz" "$dest"
grep -qx "/$dest.tgz" .git/info/exclude 2>/dev/null || echo "/$dest.tgz" >> .git/info/exclude
size=$(stat -c %s "$dest.tgz")
echo "packed: $dest.tgz, $((size >> 20)) MiB (carry it; a call carries 64 MiB in all)"
if ((size > 60 << 20)); then
  echo "gpu_bundle.sh: $dest.tgz is over 60 MiB and will not travel with the working tree" >&2
  exit 1
fi
