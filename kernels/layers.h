// The element-wise and row-wise pieces of a Llama (or Gemma) layer on the GPU. All bf16 storage with fp32
// arithmetic; the residual stream stays fp32 end to end, so that 32+ layers of additions do not
// accumulate bf16 rounding (the CPU reference is fp32 throughout).
//
// Every launcher handles rows == 0 (launches nothing) and throws std::invalid_argument for widths
// it does not support; each says its alignment needs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/kv_cache_layout.h"

namespace kvserve::cuda {

using bf16 = __nv_bfloat16;

// residual[t][:] = table[ids[t]][:] * multiplier (converted to fp32, then scaled: Granite's
// embedding multiplier; 1 elsewhere). ids must be in [0, vocab); hidden % 8 == 0.
void embedding_gather(const bf16* table, const int32_t* ids, int num_tokens, int hidden, float multiplier,
                      float* residual, cudaStream_t stream);

// Fused residual add + RMSNorm, row by row (rows x width):
//   if delta: residual += delta            (fp32 += bf16: the sublayer's output joins the stream)
//   out = bf16(residual * rsqrt(mean(residual^2) + eps) * (weight + weight_offset))
// weight_offset is 1 for Gemma, whose checkpoints store each norm weight as its offset from 1, and
// 0 otherwise. delta may be null (the first layer's input norm). width % 8 == 0. out may not alias
// residual.
void add_rms_norm(float* residual, const bf16* delta, const bf16* weight, float eps, int rows, int width,
                  bf16* out, cudaStream_t stream, float weight_offset = 0.0f);

// RMSNorm of bf16 rows: out = bf16(in * rsqrt(mean(in^2) + eps) * (weight + weight_offset)), row by
// row (rows x width). Gemma 2/3 normalize each sublayer's output so before it joins the residual
// stream. width % 8 == 0; out may be in.
void rms_norm(const bf16* in, const bf16* weight, float eps, float weight_offset, int rows, int width,
              bf16* out, cudaStream_t stream);

// The attention input step, per token t of num_tokens, on the fused QKV projection's output
// qkv[t] = [q (num_heads * head_dim) | k (num_kv_heads * head_dim) | v (num_kv_heads * head_dim)]:
//   1. adds qkv_bias (same layout, one row; null = none: Qwen2, Qwen3 with attention_bias);
//   2. with q_norm and k_norm (Qwen3, Gemma 3; both null = none): RMS-normalizes each q head and
//      each k head over its head_dim values, in fp32 on the biased values: x * rsqrt(mean(x^2) +
//      norm_eps) * (weight + norm_weight_offset), weight = q_norm for q heads and k_norm for k heads
//      (one [head_dim] vector each, shared by all heads); v is not normalized;
//   3. rotates q and k by RoPE at positions[t] (Hugging Face rotate-half: dimension i pairs with
//      i + head_dim / 2, angle = position * inv_freq[i], computed in double so long contexts keep
//      their precision), writing q back in place;
//   4. writes k and v to the pool at slot_mapping[t] (kv_cache_layout.h); a negative slot skips
//      the write (padding rows of a CUDA-graph bucket).
// k and v in qkv are left as they were (no bias, norm or rotation): only the pool gets them.
// inv_freq: device [head_dim / 2], rope scaling already applied. head_dim % 2 == 0, <= 256. With
// the norm, num_heads + num_kv_heads <= 1024, and exactly one null norm weight is an error.
// Pointers need no alignment; 16-byte aligned ones (all of qkv, qkv_bias, q_norm, k_norm, the
// caches), head_dim % 16 == 0 and qkv_row_stride % 8 == 0 take the 16-byte access path.
struct RopeKvWriteArgs {
  bf16* qkv = nullptr;
  int64_t qkv_row_stride = 0;  // elements between tokens, >= (num_heads + 2 * num_kv_heads) * head_dim
  const bf16* qkv_bias = nullptr;
  const int32_t* positions = nullptr;     // [num_tokens]
  const int64_t* slot_mapping = nullptr;  // [num_tokens]
  const float* inv_freq = nullptr;        // [head_dim / 2]
  bf16* k_cache = nullptr;
  bf16* v_cache = nullptr;
  KvCacheLayout layout;  // num_kv_heads and head_dim come from here
  int num_tokens = 0;
  int num_heads = 0;
  const bf16* q_norm = nullptr;     // [head_dim]: Qwen3's and Gemma 3's per-head q RMSNorm weight
  const bf16* k_norm = nullptr;     // [head_dim]: Qwen3's and Gemma 3's per-head k RMSNorm weight
  float norm_eps = 0.0f;            // the RMSNorm epsilon (rms_norm_eps) of q_norm and k_norm
  float norm_weight_offset = 0.0f;  // added to q_norm's and k_norm's weights: 1 for Gemma 3
};
void rope_and_kv_write(const RopeKvWriteArgs& args, cudaStream_t stream);

// out[t][i] = silu(gate_up[t][i]) * gate_up[t][intermediate + i]: the fused gate/up projection's
// output, gate first. intermediate % 8 == 0.
void silu_and_mul(const bf16* gate_up, int rows, int intermediate, bf16* out, cudaStream_t stream);

// The same with GELU's tanh approximation, 0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3))), for
// gelu(gate) * up: Gemma's GeGLU.
void gelu_tanh_and_mul(const bf16* gate_up, int rows, int intermediate, bf16* out, cudaStream_t stream);

// values[i] = cap * tanh(values[i] / cap) for i < count: Gemma 2's soft cap on the logits. cap > 0.
void soft_cap(float* values, int64_t count, float cap, cudaStream_t stream);

// out[r][:] = in[rows_index[r]][:] for r < rows: picks the last token of each sequence before the
// final norm and the LM head. width % 8 == 0. Works on fp32 rows (the residual stream).
void gather_rows(const float* in, const int32_t* rows_index, int rows, int width, float* out,
                 cudaStream_t stream);

}  // namespace kvserve::cuda
