// The mixture-of-experts layer's data movement on the GPU (engine/moe_routing.h routes on the host):
// the rows routed to the experts are gathered expert by expert, each expert's MLP runs as cuBLAS
// GEMMs over its block of rows, and the combine adds each token's experts' outputs back together,
// weighted, with Qwen2-MoE's gated shared expert. Launchers validate their arguments
// (std::invalid_argument) before any CUDA call; zero rows launch nothing. Row pointers (in, out,
// expert_out, shared_out) must be 16-byte aligned: the kernels move 8 bf16 values at a time.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvserve::cuda {

// out[r][:] = in[token[r]][:] for r < rows (rows of `width` bf16 values, width % 8 == 0).
void moe_gather(const __nv_bfloat16* in, const int32_t* token, int rows, int width, __nv_bfloat16* out,
                cudaStream_t stream);

// For t < tokens, i < width:
//   out[t][i] = multiplier * (sum_j weight[row] * expert_out[row][i]   (row = token_rows[t * k + j], j < k)
//                             + sigmoid(shared_gate[t]) * shared_out[t][i])   (when shared_out is given)
// summed in fp32 in the order j = 0, 1, ..., then the shared term, and rounded to bf16 once.
// shared_out and shared_gate are both given or both null; width % 8 == 0.
void moe_combine(const __nv_bfloat16* expert_out, const int32_t* token_rows, const float* weight, int tokens,
                 int k, int width, const __nv_bfloat16* shared_out, const float* shared_gate,
                 float multiplier, __nv_bfloat16* out, cudaStream_t stream);

}  // namespace kvserve::cuda
