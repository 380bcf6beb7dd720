// StepPlan (scheduler -> batch builder) and StepBatch (engine -> backend): the two structs that say
// what one engine step computes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/block_pool.h"

namespace kvserve {

class Sequence;

// One sequence's share of a step: tokens [start_pos, start_pos + num_new_tokens) of its
// tokens() are fed to the model. When they reach its last token, the step produces its next token.
// A decode may carry a draft (speculative decoding): then its last num_draft_tokens inputs are its
// draft(), guessed to follow tokens(), and the step may produce up to 1 + num_draft_tokens tokens.
struct ScheduledSequence {
  Sequence* seq;
  int start_pos;
  int num_new_tokens;
  bool emits_token;
  int num_draft_tokens = 0;
  // The end of the inputs that are the sequence's own tokens (the draft follows them).
  int end_of_tokens() const { return start_pos + num_new_tokens - num_draft_tokens; }
};

struct StepPlan {
  // Single-token decodes first, then prefill chunks (new prompts, continued chunks, recomputes).
  std::vector<ScheduledSequence> seqs;
  int num_decodes = 0;
  int num_batched_tokens = 0;
  int num_draft_tokens = 0;  // of all sequences
  // Sequences preempted while planning this step (blocks freed, back in the queue ahead of every
  // request of their priority that arrived after them).
  std::vector<std::string> preempted;

  bool empty() const { return seqs.empty(); }
};

// Everything the backend needs for one forward pass, as flat arrays ready to copy to a device.
// Sequences appear in plan order; the first num_decodes have exactly one query token.
struct StepBatch {
  int num_seqs = 0;
  int num_tokens = 0;
  int num_decodes = 0;
  int block_size = 0;
  int max_blocks_per_seq = 0;  // row width of block_tables
  int max_query_len = 0;
  int max_context_len = 0;

  std::vector<TokenId> token_ids;        // [num_tokens]
  std::vector<int32_t> positions;        // [num_tokens] position of each token in its sequence
  std::vector<int64_t> slot_mapping;     // [num_tokens] pool slot where each token's K/V are written
  std::vector<int32_t> query_start_loc;  // [num_seqs + 1] prefix sums of query lengths
  std::vector<int32_t> context_lens;     // [num_seqs] tokens in the cache once this step is written
  // [num_seqs * max_blocks_per_seq] row-major; entries past a sequence's last block are
  // kPaddingBlock so that a kernel reading past context_lens fails loudly in the reference.
  std::vector<BlockId> block_tables;
  std::vector<uint8_t> emits_token;  // [num_seqs] 1 if the sequence's last-token logits are sampled
  // [num_seqs] each sequence's Request::lora_adapter (0 = the base model); or empty: all base.
  std::vector<int32_t> lora_adapters;
  int lora_adapter(int s) const { return lora_adapters.empty() ? 0 : lora_adapters[static_cast<size_t>(s)]; }
  // The flat token index of each row of logits forward() computes: row s < num_seqs is sequence s's
  // last token; then, for each sequence with a draft of m tokens (in batch order), the m inputs
  // before its last (its own last token and its draft but the last), whose next tokens check the
  // draft. [num_seqs + the batch's draft tokens]
  std::vector<int32_t> logits_indices;

  static constexpr BlockId kPaddingBlock = -1;

  int query_len(int s) const { return query_start_loc[s + 1] - query_start_loc[s]; }
  const BlockId* block_table(int s) const {
    return block_tables.data() + static_cast<size_t>(s) * max_blocks_per_seq;
  }
};

// Throws std::logic_error, naming the first offending entry, unless `batch` is one a backend with a
// pool of num_blocks blocks of block_size tokens and a vocabulary of vocab_size tokens can run without
// touching memory outside its arrays: the batch's block size is the pool's; every array has the
// length its counts say; logits rows are each sequence's last token, then tokens of the batch;
// query lengths are >= 1 (exactly 1
// for the first num_decodes); token ids are in [0, vocab_size); token j of a sequence with query
// length L and context C sits at position C - L + j; the context fits the table's width; the block of
// every new token is a pool block (that includes the context's last block, and a row is pool blocks
// and then kPaddingBlock, so the blocks before it are too); and every token's slot is the one its
// block table gives for its position. Batches come from BatchBuilder, so a failure is an engine bug;
// the backends check anyway because on a GPU an out-of-range index is not an exception but a
// corrupted pool or a dead CUDA context, which ends the server for everyone. O(tokens + sequences):
// BM_EngineStep in bench/scheduler_bench.cc measures it per step.
// Each sequence's LoRA adapter is in [0, num_lora_adapters].
void validate_step_batch(const StepBatch& batch, int num_blocks, int block_size, int vocab_size,
                         int num_lora_adapters = 0);

// Turns a plan into a batch, reusing its buffers from step to step.
class BatchBuilder {
 public:
  const StepBatch& build(const StepPlan& plan, int block_size);

 private:
  StepBatch batch_;
};

}  // namespace kvserve
