#include <algorithm>

#include "engine/sequence.h"
#include "engine/step_batch.h"

namespace kvserve {

const StepBatch& BatchBuilder::build(const StepPlan& plan, int block_size) {
  StepBatch& b = batch_;
  b.num_seqs = static_cast<int>(plan.seqs.size());
  b.num_tokens = plan.num_batched_tokens;
  b.num_decodes = plan.num_decodes;
  b.block_size = block_size;
  b.max_blocks_per_seq = 0;
  b.max_query_len = 0;
  b.max_context_len = 0;
  for (const ScheduledSequence& s : plan.seqs) {
    b.max_blocks_per_seq = std::max(b.max_blocks_per_seq, s.seq->block_table().num_blocks());
    b.max_query_len = std::max(b.max_query_len, s.num_new_tokens);
    b.max_context_len = std::max(b.max_context_len, s.start_pos + s.num_new_tokens);
  }

  b.token_ids.resize(b.num_tokens);
  b.positions.resize(b.num_tokens);
  b.slot_mapping.resize(b.num_tokens);
  b.query_start_loc.resize(b.num_seqs + 1);
  b.context_lens.resize(b.num_seqs);
  b.emits_token.resize(b.num_seqs);
  b.block_tables.assign(static_cast<size_t>(b.num_seqs) * b.max_blocks_per_seq, StepBatch::kPaddingBlock);

  int t = 0;
  for (int i = 0; i < b.num_seqs; ++i) {
    const ScheduledSequence& s = plan.seqs[i];
    const Sequence& seq = *s.seq;
    const BlockTable& table = seq.block_table();
    const auto tokens = seq.tokens();
    b.query_start_loc[i] = t;
    for (int pos = s.start_pos; pos < s.start_pos + s.num_new_tokens; ++pos, ++t) {
      b.token_ids[t] = tokens[pos];
      b.positions[t] = pos;
      b.slot_mapping[t] = table.slot(pos);
    }
    b.context_lens[i] = s.start_pos + s.num_new_tokens;
    b.emits_token[i] = s.emits_token ? 1 : 0;
    std::copy(table.blocks().begin(), table.blocks().end(),
              b.block_tables.begin() + static_cast<ptrdiff_t>(i) * b.max_blocks_per_seq);
  }
  b.query_start_loc[b.num_seqs] = t;
  return b;
}

}  // namespace kvserve
