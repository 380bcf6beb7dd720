#include "kernels/seeded_fill.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/cuda_check.h"

namespace kvserve::cuda {
namespace {

constexpr int kThreads = 256;

// Grid-stride over the elements. The hash is integer arithmetic shared with the host
// (seeded_weights.h); the float part uses round-to-nearest intrinsics so that nothing is fused
// into a multiply-add the host does not do.
__global__ void __launch_bounds__(kThreads)
    seeded_fill_kernel(__nv_bfloat16* out, int64_t count, SeededFill fill) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    const float v =
        __fmul_rn(static_cast<float>(seeded_centred_sum(fill.key, static_cast<uint64_t>(i))), fill.scale);
    out[i] = __float2bfloat16_rn(fill.mean == 0.0f ? v : __fadd_rn(fill.mean, v));
  }
}

}  // namespace

void seeded_fill_bf16(__nv_bfloat16* out, int64_t count, const SeededFill& fill, cudaStream_t stream) {
  if (count < 0) throw std::invalid_argument("seeded_fill_bf16: count must be >= 0");
  if (count == 0) return;
  if (!out) throw std::invalid_argument("seeded_fill_bf16: out must be a device pointer");
  // A few waves of blocks; each thread then loops (an 8B model's largest tensor is 525 M elements).
  const int64_t blocks = std::min<int64_t>((count + kThreads - 1) / kThreads, 4096);
  seeded_fill_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(out, count, fill);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvserve::cuda
