// The mixture-of-experts kernels (contract in moe.h): both move rows of `width` bf16 values, one
// block per row and 8 values (16 bytes) per thread access.
#include "kernels/moe.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda_check.h"

namespace kvserve::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kVector = 8;  // bf16 values per 16-byte access

[[noreturn]] void fail(const char* fn, const std::string& what) {
  throw std::invalid_argument(std::string(fn) + ": " + what);
}

// The kernels read and write 16 bytes at a time: a misaligned pointer would fault on the device
// (and leave the context unusable) rather than say so.
void require_aligned(const char* fn, const char* name, const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) fail(fn, std::string(name) + " must be 16-byte aligned");
}

__global__ void moe_gather_kernel(const __nv_bfloat16* in, const int32_t* token, int width,
                                  __nv_bfloat16* out) {
  const int r = blockIdx.x;
  const auto* src = reinterpret_cast<const uint4*>(in + static_cast<size_t>(token[r]) * width);
  auto* dst = reinterpret_cast<uint4*>(out + static_cast<size_t>(r) * width);
  for (int v = threadIdx.x; v < width / kVector; v += blockDim.x)
    dst[v] = src[v];
}

__global__ void moe_combine_kernel(const __nv_bfloat16* expert_out, const int32_t* token_rows,
                                   const float* weight, int k, int width, const __nv_bfloat16* shared_out,
                                   const float* shared_gate, float multiplier, __nv_bfloat16* out) {
  const int t = blockIdx.x;
  const float gate = shared_out ? 1.0f / (1.0f + __expf(-shared_gate[t])) : 0.0f;
  for (int v = threadIdx.x; v < width / kVector; v += blockDim.x) {
    float sum[kVector] = {};
    for (int j = 0; j < k; ++j) {
      const int row = token_rows[t * k + j];
      const float w = weight[row];
      const uint4 packed = reinterpret_cast<const uint4*>(expert_out + static_cast<size_t>(row) * width)[v];
      const auto* values = reinterpret_cast<const __nv_bfloat16*>(&packed);
      for (int i = 0; i < kVector; ++i)
        sum[i] += w * __bfloat162float(values[i]);
    }
    if (shared_out) {
      const uint4 packed = reinterpret_cast<const uint4*>(shared_out + static_cast<size_t>(t) * width)[v];
      const auto* values = reinterpret_cast<const __nv_bfloat16*>(&packed);
      for (int i = 0; i < kVector; ++i)
        sum[i] += gate * __bfloat162float(values[i]);
    }
    uint4 result;
    auto* out_values = reinterpret_cast<__nv_bfloat16*>(&result);
    for (int i = 0; i < kVector; ++i)
      out_values[i] = __float2bfloat16(multiplier * sum[i]);
    reinterpret_cast<uint4*>(out + static_cast<size_t>(t) * width)[v] = result;
  }
}

}  // namespace

void moe_gather(const __nv_bfloat16* in, const int32_t* token, int rows, int width, __nv_bfloat16* out,
                cudaStream_t stream) {
  if (rows < 0) fail("moe_gather", "rows must not be negative");
  if (width <= 0 || width % kVector != 0)
    fail("moe_gather", "width " + std::to_string(width) + " must be a positive multiple of 8");
  require_aligned("moe_gather", "in", in);
  require_aligned("moe_gather", "out", out);
  if (rows == 0) return;
  if (!in || !token || !out) fail("moe_gather", "null pointer");
  moe_gather_kernel<<<rows, kThreads, 0, stream>>>(in, token, width, out);
  CUDA_CHECK(cudaGetLastError());
}

void moe_combine(const __nv_bfloat16* expert_out, const int32_t* token_rows, const float* weight, int tokens,
                 int k, int width, const __nv_bfloat16* shared_out, const float* shared_gate,
                 float multiplier, __nv_bfloat16* out, cudaStream_t stream) {
  if (tokens < 0) fail("moe_combine", "tokens must not be negative");
  if (k < 1) fail("moe_combine", "k must be at least 1");
  if (width <= 0 || width % kVector != 0)
    fail("moe_combine", "width " + std::to_string(width) + " must be a positive multiple of 8");
  if ((shared_out == nullptr) != (shared_gate == nullptr))
    fail("moe_combine", "shared_out and shared_gate go together");
  require_aligned("moe_combine", "expert_out", expert_out);
  require_aligned("moe_combine", "shared_out", shared_out);
  require_aligned("moe_combine", "out", out);
  if (tokens == 0) return;
  if (!expert_out || !token_rows || !weight || !out) fail("moe_combine", "null pointer");
  moe_combine_kernel<<<tokens, kThreads, 0, stream>>>(expert_out, token_rows, weight, k, width, shared_out,
                                                      shared_gate, multiplier, out);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvserve::cuda
