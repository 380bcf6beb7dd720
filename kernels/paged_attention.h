// Paged attention over the GPU KV pool: every query token attends, causally, to its sequence's
// tokens in the pool, found through the sequence's block table (see kv_cache_layout.h).
//
// Two kernels share one argument struct:
//   - decode: sequences with exactly one query token (the first StepBatch::num_decodes), with an
//     optional split of each context across thread blocks (flash-decoding) and a reduction, so
//     that a few long sequences still fill the GPU;
//   - prefill: sequences with one or more query tokens (new prompts, later chunks of a chunked
//     prefill, recomputed sequences), causal within the chunk and full over the earlier context,
//     which (prefix-cache hits, earlier chunks) lives only in the pool. Uses tensor cores.
// The query token at index j of a sequence with query length L and context length C sits at
// position P = C - L + j and sees positions 0 ..= P, or under a sliding window W only the last W of
// them, max(0, P - W + 1) ..= P (Mistral's and Phi-3's masking): the kernels then read no K/V row
// outside the window. The caller has already written this step's K/V to the pool (Backend contract).
//
// Supported: head_dim 16, 32, 64, 128 and 256; any block_size that is a multiple of 8 (8, 16, 32 are
// tested); num_heads a multiple of num_kv_heads; any context up to max_blocks_per_seq * block_size,
// which decode bounds by 2^30 - 1 tokens so that its token indices cannot overflow.
// Launchers throw std::invalid_argument for anything else.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/kv_cache_layout.h"

namespace kvserve::cuda {

using bf16 = __nv_bfloat16;

struct PagedAttentionArgs {
  // Query of token t (index into the batch's tokens), head h: q + t * q_row_stride + h * head_dim.
  // A row stride lets the kernels read Q straight out of the fused QKV projection's output.
  const bf16* q = nullptr;
  int64_t q_row_stride = 0;
  // The layer's K and V arrays.
  const bf16* k_cache = nullptr;
  const bf16* v_cache = nullptr;
  KvCacheLayout layout;
  // Output of token t, head h: out + t * out_row_stride + h * head_dim. Every element of the rows
  // of the sequences given is written.
  bf16* out = nullptr;
  int64_t out_row_stride = 0;

  // Per sequence, all device arrays. The caller may pass a sub-range of a StepBatch's sequences
  // by offsetting the three pointers; query_start_loc values are token indices into q / out.
  const int32_t* query_start_loc = nullptr;  // [num_seqs + 1]
  const int32_t* context_lens = nullptr;     // [num_seqs] tokens in the pool incl. this step's
  const int32_t* block_tables = nullptr;     // [num_seqs][max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int num_seqs = 0;
  int num_heads = 0;       // query heads; layout.num_kv_heads KV heads, layout.head_dim each
  float scale = 0.0f;      // softmax scale, normally 1 / sqrt(head_dim)
  int sliding_window = 0;  // positions a query sees, itself included; 0: all earlier ones
  // Gemma 2's soft cap: each score (after the scale) becomes softcap * tanh(score / softcap) before
  // the softmax. 0: none.
  float softcap = 0.0f;

  // Host-side bounds over the sequences given, used to size grids (prefill only; the decode
  // kernel's grid depends on num_seqs and num_splits alone, so it can be captured in a CUDA graph).
  int max_query_len = 0;
};

// ---- Decode: one query token per sequence; token s is sequence s (query_start_loc unused). ----

// How many thread blocks at most share one (sequence, KV head) context. 1 = no split.
// max_context_len: the most positions one query sees (under a sliding window, at most the window).
// The kernel is correct for any value >= 1: each sequence uses as many of them as its own
// context needs (at least kMinDecodePartition tokens each), and the reduction reads that count.
int choose_decode_splits(int num_seqs, int num_heads, int num_kv_heads, int max_context_len, int num_sms);

// Tokens one split handles at least: shorter partitions cost more in the reduction than they win.
inline constexpr int kMinDecodePartition = 256;

// Scratch the split path needs (0 when num_splits == 1): fp32 partial outputs plus running max
// and sum per (sequence, head, split).
size_t decode_workspace_bytes(int num_seqs, int num_heads, int head_dim, int num_splits);

// Context length 0 (a padding row of a CUDA-graph bucket) writes zeros.
void paged_decode_attention(const PagedAttentionArgs& args, int num_splits, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream);

// ---- Prefill / chunked prefill: query_len >= 1 per sequence, tensor cores. ----
void paged_prefill_attention(const PagedAttentionArgs& args, cudaStream_t stream);

}  // namespace kvserve::cuda
