#include "tests/kernels/attention_reference.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace kvserve::cuda::testing {

std::vector<double> reference_paged_attention(const AttentionReferenceInput& in) {
  const KvCacheLayout& L = in.layout;
  const int head_dim = L.head_dim;
  const int group = in.num_heads / L.num_kv_heads;
  const int num_seqs = static_cast<int>(in.context_lens.size());
  const int num_tokens = in.query_start_loc.back();
  const int out_width = in.num_heads * head_dim;
  std::vector<double> out(static_cast<size_t>(num_tokens) * out_width, 0.0);
  std::vector<double> scores;

  for (int s = 0; s < num_seqs; ++s) {
    const int first = in.query_start_loc[s];
    const int query_len = in.query_start_loc[s + 1] - first;
    const int context = in.context_lens[s];
    const int32_t* table = &in.block_tables[static_cast<size_t>(s) * in.max_blocks_per_seq];
    for (int j = 0; j < query_len; ++j) {
      const int position = context - query_len + j;
      if (position < 0) throw std::logic_error("reference: query longer than its context");
      const int oldest = in.sliding_window > 0 ? std::max(0, position - in.sliding_window + 1) : 0;
      const int visible = position + 1 - oldest;
      for (int h = 0; h < in.num_heads; ++h) {
        const int kv_head = h / group;
        const float* q = &(*in.q)[static_cast<size_t>(first + j) * in.q_row_stride + h * head_dim];
        scores.assign(visible, 0.0);
        double max_score = -INFINITY;
        for (int i = 0; i < visible; ++i) {
          const int p = oldest + i;
          const int64_t row = L.row(table[p / L.block_size], kv_head, p % L.block_size);
          double dot = 0.0;
          for (int d = 0; d < head_dim; ++d)
            dot += static_cast<double>(q[d]) * (*in.k_pool)[row + d];
          scores[i] = dot * in.scale;
          if (in.softcap > 0.0) scores[i] = in.softcap * std::tanh(scores[i] / in.softcap);
          max_score = std::max(max_score, scores[i]);
        }
        double denom = 0.0;
        for (double& x : scores) {
          x = std::exp(x - max_score);
          denom += x;
        }
        double* o = &out[static_cast<size_t>(first + j) * out_width + h * head_dim];
        for (int i = 0; i < visible; ++i) {
          const int p = oldest + i;
          const int64_t row = L.row(table[p / L.block_size], kv_head, p % L.block_size);
          for (int d = 0; d < head_dim; ++d)
            o[d] += scores[i] / denom * (*in.v_pool)[row + d];
        }
      }
    }
  }
  return out;
}

}  // namespace kvserve::cuda::testing
