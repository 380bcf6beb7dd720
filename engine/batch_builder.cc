#include <algorithm>
#include <stdexcept>
#include <string>

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
  b.lora_adapters.resize(b.num_seqs);
  b.logits_indices.resize(b.num_seqs);
  b.block_tables.assign(static_cast<size_t>(b.num_seqs) * b.max_blocks_per_seq, StepBatch::kPaddingBlock);

  int t = 0;
  for (int i = 0; i < b.num_seqs; ++i) {
    const ScheduledSequence& s = plan.seqs[i];
    const Sequence& seq = *s.seq;
    const BlockTable& table = seq.block_table();
    const auto tokens = seq.tokens();
    const auto draft = seq.draft();
    b.query_start_loc[i] = t;
    for (int pos = s.start_pos; pos < s.start_pos + s.num_new_tokens; ++pos, ++t) {
      b.token_ids[t] =
          pos < s.end_of_tokens() ? tokens[pos] : draft[static_cast<size_t>(pos - s.end_of_tokens())];
      b.positions[t] = pos;
      b.slot_mapping[t] = table.slot(pos);
    }
    b.context_lens[i] = s.start_pos + s.num_new_tokens;
    b.emits_token[i] = s.emits_token ? 1 : 0;
    b.lora_adapters[i] = seq.lora_adapter();
    b.logits_indices[i] = t - 1;
    std::copy(table.blocks().begin(), table.blocks().end(),
              b.block_tables.begin() + static_cast<ptrdiff_t>(i) * b.max_blocks_per_seq);
  }
  b.query_start_loc[b.num_seqs] = t;
  for (int i = 0; i < b.num_seqs; ++i)
    for (int j = plan.seqs[i].num_draft_tokens; j > 0; --j)
      b.logits_indices.push_back(b.query_start_loc[i + 1] - 1 - j);
  return b;
}

void validate_step_batch(const StepBatch& b, int num_blocks, int block_size, int vocab_size,
                         int num_lora_adapters) {
  const auto fail = [](const std::string& what) { throw std::logic_error("invalid StepBatch: " + what); };
  const auto str = [](auto v) { return std::to_string(v); };
  if (b.num_seqs < 0 || b.num_tokens < 0 || b.num_decodes < 0 || b.num_decodes > b.num_seqs)
    fail("counts " + str(b.num_seqs) + " seqs / " + str(b.num_tokens) + " tokens / " + str(b.num_decodes) +
         " decodes");
  if (b.block_size != block_size || block_size <= 0)
    fail("block size " + str(b.block_size) + ", the pool's is " + str(block_size));
  if (b.max_blocks_per_seq < 0) fail("max_blocks_per_seq " + str(b.max_blocks_per_seq));
  const auto tokens = static_cast<size_t>(b.num_tokens);
  const auto seqs = static_cast<size_t>(b.num_seqs);
  if (b.token_ids.size() != tokens || b.positions.size() != tokens || b.slot_mapping.size() != tokens)
    fail("per-token arrays are not num_tokens (" + str(b.num_tokens) + ") long");
  if (b.query_start_loc.size() != seqs + 1 || b.context_lens.size() != seqs || b.emits_token.size() != seqs ||
      b.block_tables.size() != seqs * static_cast<size_t>(b.max_blocks_per_seq))
    fail("per-sequence arrays do not match num_seqs (" + str(b.num_seqs) + ")");
  if (!b.lora_adapters.empty() && b.lora_adapters.size() != seqs)
    fail("lora_adapters is neither empty nor num_seqs (" + str(b.num_seqs) + ") long");
  for (size_t s = 0; s < b.lora_adapters.size(); ++s)
    if (b.lora_adapters[s] < 0 || b.lora_adapters[s] > num_lora_adapters)
      fail("sequence " + str(s) + ": LoRA adapter " + str(b.lora_adapters[s]) + " of " +
           str(num_lora_adapters));
  if (b.query_start_loc[0] != 0 || b.query_start_loc[seqs] != b.num_tokens)
    fail("query_start_loc does not run from 0 to num_tokens");

  // Runs every step on the engine thread, so nothing here allocates unless it fails.
  const auto fail_seq = [&](int s, const std::string& what) { fail("sequence " + str(s) + ": " + what); };
  int longest_query = 0;
  for (int s = 0; s < b.num_seqs; ++s) {
    const int begin = b.query_start_loc[s];
    const int len = b.query_start_loc[s + 1] - begin;
    const int context = b.context_lens[s];
    if (len < 1 || (s < b.num_decodes && len != 1) || begin + len > b.num_tokens)
      fail_seq(s, "query length " + str(len));
    longest_query = std::max(longest_query, len);
    if (context < len || context > static_cast<int64_t>(b.max_blocks_per_seq) * b.block_size)
      fail_seq(s, "context length " + str(context) + " for query length " + str(len) + " and " +
                      str(b.max_blocks_per_seq) + " blocks of " + str(b.block_size));
    const BlockId* table = b.block_table(s);
    for (int j = 0; j < len; ++j) {
      const int t = begin + j;
      const int pos = b.positions[t];
      if (pos != context - len + j)
        fail_seq(s, "token " + str(t) + " at position " + str(pos) + ", not " + str(context - len + j));
      if (b.token_ids[t] < 0 || b.token_ids[t] >= vocab_size)
        fail("token id " + str(b.token_ids[t]) + " outside the vocabulary of " + str(vocab_size));
      // The block of each new token, and so the last block of the context, must be a pool block:
      // rows are pool blocks followed by kPaddingBlock, so the whole row up to it is.
      const BlockId block = table[pos / b.block_size];
      if (block < 0 || block >= num_blocks)
        fail_seq(s, "block " + str(block) + " at table index " + str(pos / b.block_size) +
                        " is outside the pool of " + str(num_blocks));
      // Attention reads what the KV write stored only if both agree on where the token lives.
      const int64_t slot = static_cast<int64_t>(block) * b.block_size + pos % b.block_size;
      if (b.slot_mapping[t] != slot)
        fail_seq(s, "token " + str(t) + " has slot " + str(b.slot_mapping[t]) + ", its block table says " +
                        str(slot));
    }
  }
  // The GPU sizes the prefill kernel's grid by it: a short one would leave query rows uncomputed.
  if (b.max_query_len != longest_query)
    fail("max_query_len " + str(b.max_query_len) + ", the longest query is " + str(longest_query));
  if (b.logits_indices.size() < seqs || b.logits_indices.size() > seqs + tokens)
    fail(str(b.logits_indices.size()) + " logits rows for " + str(b.num_seqs) + " sequences");
  for (size_t r = 0; r < b.logits_indices.size(); ++r) {
    const int32_t t = b.logits_indices[r];
    if (r < seqs ? t != b.query_start_loc[r + 1] - 1 : (t < 0 || t >= b.num_tokens))
      fail("logits row " + str(r) + " is token " + str(t) + ", not " +
           (r < seqs ? "its sequence's last token" : "a token of the batch"));
  }
}

}  // namespace kvserve
