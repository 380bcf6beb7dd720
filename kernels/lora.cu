// The LoRA kernels (contract in lora.h). Both are small next to the projection they adapt (rank
// 8-64 against thousands of columns), so they favour simplicity: one block per token for the
// shrink, a warp per rank row reducing over the input; one thread per output column for the
// expand, its token's rank values in shared memory.
#include "kernels/lora.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda_check.h"

namespace kvserve::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxRank = kLoraKernelMaxRank;  // the expand's shared row: 4 KiB

[[noreturn]] void fail(const char* fn, const std::string& what) {
  throw std::invalid_argument(std::string(fn) + ": " + what);
}

__global__ void lora_shrink_kernel(const __nv_bfloat16* x, int64_t x_row_stride, int in,
                                   const int32_t* lora_index, const __nv_bfloat16* a, int rank, float* tmp) {
  const int t = blockIdx.x;
  const int adapter = lora_index[t];
  if (adapter <= 0) return;  // the whole block: the base model's token
  const __nv_bfloat16* xr = x + t * x_row_stride;
  const __nv_bfloat16* ab = a + static_cast<size_t>(adapter - 1) * rank * in;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < rank; r += blockDim.x / 32) {
    const __nv_bfloat16* ar = ab + static_cast<size_t>(r) * in;
    float sum = 0.0f;
    for (int i = lane; i < in; i += 32)
      sum += __bfloat162float(xr[i]) * __bfloat162float(ar[i]);
    for (int offset = 16; offset > 0; offset >>= 1)
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) tmp[static_cast<size_t>(t) * rank + r] = sum;
  }
}

__global__ void lora_expand_kernel(const float* tmp, int rank, const int32_t* lora_index,
                                   const __nv_bfloat16* b, int out, const float* scaling, float multiplier,
                                   __nv_bfloat16* y, int64_t y_row_stride) {
  const int t = blockIdx.x;
  const int adapter = lora_index[t];
  if (adapter <= 0) return;  // uniform over the block: before the barrier
  __shared__ float row[kMaxRank];
  for (int r = threadIdx.x; r < rank; r += blockDim.x)
    row[r] = tmp[static_cast<size_t>(t) * rank + r];
  __syncthreads();
  const int o = blockIdx.y * blockDim.x + threadIdx.x;
  if (o >= out) return;
  const __nv_bfloat16* br = b + (static_cast<size_t>(adapter - 1) * out + o) * rank;
  float sum = 0.0f;
  for (int r = 0; r < rank; ++r)
    sum += __bfloat162float(br[r]) * row[r];
  __nv_bfloat16* yo = y + t * y_row_stride + o;
  *yo = __float2bfloat16(__bfloat162float(*yo) + multiplier * scaling[adapter - 1] * sum);
}

}  // namespace

void lora_shrink(const __nv_bfloat16* x, int64_t x_row_stride, int in, int num_tokens,
                 const int32_t* lora_index, const __nv_bfloat16* a, int rank, float* tmp,
                 cudaStream_t stream) {
  constexpr const char* fn = "lora_shrink";
  if (num_tokens < 0) fail(fn, "num_tokens is negative");
  if (in <= 0 || x_row_stride < in) fail(fn, "in must be positive and at most x_row_stride");
  if (rank <= 0 || rank > kMaxRank) fail(fn, "rank " + std::to_string(rank) + " outside [1, 1024]");
  if (num_tokens == 0) return;
  if (!x || !lora_index || !a || !tmp) fail(fn, "a pointer is null");
  lora_shrink_kernel<<<num_tokens, kThreads, 0, stream>>>(x, x_row_stride, in, lora_index, a, rank, tmp);
  CUDA_CHECK(cudaGetLastError());
}

void lora_expand(const float* tmp, int rank, int num_tokens, const int32_t* lora_index,
                 const __nv_bfloat16* b, int out, const float* scaling, float multiplier, __nv_bfloat16* y,
                 int64_t y_row_stride, cudaStream_t stream) {
  constexpr const char* fn = "lora_expand";
  if (num_tokens < 0) fail(fn, "num_tokens is negative");
  if (out <= 0 || y_row_stride < out) fail(fn, "out must be positive and at most y_row_stride");
  if (rank <= 0 || rank > kMaxRank) fail(fn, "rank " + std::to_string(rank) + " outside [1, 1024]");
  if (num_tokens == 0) return;
  if (!tmp || !lora_index || !b || !scaling || !y) fail(fn, "a pointer is null");
  const dim3 grid(static_cast<unsigned>(num_tokens), static_cast<unsigned>((out + kThreads - 1) / kThreads));
  if (grid.y > 65535) fail(fn, "out " + std::to_string(out) + " is too wide");
  lora_expand_kernel<<<grid, kThreads, 0, stream>>>(tmp, rank, lora_index, b, out, scaling, multiplier, y,
                                                    y_row_stride);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvserve::cuda
