// LoRA adapters on the GPU (engine/lora.h): per token, the update of its sequence's adapter added
// to a projection's output, in two steps as punica's SGMV / vLLM's LoRA kernels split it:
//   shrink: tmp[t][r] = sum_i x[t][i] * a[adapter - 1][r][i]                      (rank r values)
//   expand: y[t][o] += multiplier * scaling[adapter - 1] * sum_r b[adapter - 1][o][r] * tmp[t][r]
// where adapter = lora_index[t] (0: the base model; the token is left alone). Each projection's
// adapters are stacked: a [num_adapters][rank][in], b [num_adapters][out][rank], bf16, zero-padded
// to the largest rank (an adapter that leaves the projection alone is all zeros). fp32 arithmetic;
// y is read, added to and rounded to bf16 once.
//
// The adapter of each token comes from a device array, so one launch serves a batch that mixes
// adapters and the base model, and a CUDA graph replays it whatever the adapters of the next step.
// Launchers validate their arguments (std::invalid_argument) before any CUDA call; tokens == 0
// launches nothing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvserve::cuda {

// The largest rank the kernels take: the expand keeps a token's rank values in shared memory.
inline constexpr int kLoraKernelMaxRank = 1024;

void lora_shrink(const __nv_bfloat16* x, int64_t x_row_stride, int in, int num_tokens,
                 const int32_t* lora_index, const __nv_bfloat16* a, int rank, float* tmp,
                 cudaStream_t stream);

// y + o for o < out at each token's row (y_row_stride apart): out may be a column range of a wider
// fused output (q, k and v of the QKV projection's).
void lora_expand(const float* tmp, int rank, int num_tokens, const int32_t* lora_index,
                 const __nv_bfloat16* b, int out, const float* scaling, float multiplier, __nv_bfloat16* y,
                 int64_t y_row_stride, cudaStream_t stream);

}  // namespace kvserve::cuda
