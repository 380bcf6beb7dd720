// Plain CPU reference for the paged-attention kernels, in float64, reading the same pool layout
// (kernels/kv_cache_layout.h) from host copies holding the bf16-rounded values the kernel reads.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/kv_cache_layout.h"

namespace kvserve::cuda::testing {

struct AttentionReferenceInput {
  const std::vector<float>* q = nullptr;  // [num_tokens][q_row_stride], head h at h * head_dim
  int64_t q_row_stride = 0;
  const std::vector<float>* k_pool = nullptr;  // one layer, layout.layer_elements()
  const std::vector<float>* v_pool = nullptr;
  KvCacheLayout layout;
  std::vector<int32_t> query_start_loc;  // [num_seqs + 1]
  std::vector<int32_t> context_lens;     // [num_seqs]
  std::vector<int32_t> block_tables;     // [num_seqs][max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int num_heads = 0;
  double scale = 0.0;
  int sliding_window = 0;  // 0: none
  double softcap = 0.0;    // scores (after the scale) -> softcap * tanh(score / softcap); 0: none
};

// Returns [num_tokens][num_heads * head_dim] for the tokens query_start_loc covers (rows before
// query_start_loc[0] are zero): softmax(q.k * scale) . v over positions 0 ..= P, the token's position
// (token j of a sequence with query length L and context C sits at P = C - L + j), or under a
// sliding window W over positions max(0, P - W + 1) ..= P.
std::vector<double> reference_paged_attention(const AttentionReferenceInput& in);

}  // namespace kvserve::cuda::testing
