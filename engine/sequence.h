// Sequence: the engine's state for one request — its tokens, how many of them are already in the KV
// cache, its block table, and the stop rules applied to every token it produces.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "engine/block_pool.h"
#include "engine/block_table.h"
#include "engine/request.h"

namespace kvserve {

enum class SequenceStatus { kWaiting, kRunning, kFinished };

// Better than any request's own priority (an int): what an overdue request is scheduled at.
inline constexpr int64_t kOverduePriority = int64_t{std::numeric_limits<int>::min()} - 1;

class Sequence {
 public:
  // eos_token_ids comes from the model (Llama 3 has several).
  Sequence(Request request, int block_size, std::span<const TokenId> eos_token_ids);

  const RequestId& id() const { return request_.id; }
  const SamplingParams& sampling() const { return request_.sampling; }
  const StopCriteria& stop() const { return request_.stop; }
  int priority() const { return request_.priority; }
  int lora_adapter() const { return request_.lora_adapter; }
  // The priority the scheduler orders by: the request's, or, once the request is overdue (it has
  // waited in the queue longer than SchedulerConfig::max_priority_wait, in all), better than any
  // request's. Overdue is for good: an overdue request keeps its place until it finishes.
  int64_t scheduling_priority() const { return overdue_ ? kOverduePriority : request_.priority; }
  bool overdue() const { return overdue_; }
  void mark_overdue() { overdue_ = true; }
  // The scheduler's count of requests added before this one: ties of priority go by it.
  uint64_t arrival() const { return arrival_; }
  void set_arrival(uint64_t n) { arrival_ = n; }
  // Time in the waiting queue, by the scheduler's clock: every stay, the current one up to `now`.
  void start_waiting(std::chrono::steady_clock::time_point now) { waiting_since_ = now; }
  void stop_waiting(std::chrono::steady_clock::time_point now) { waited_ += now - waiting_since_; }
  std::chrono::steady_clock::duration waited(std::chrono::steady_clock::time_point now) const {
    return waited_ + (status_ == SequenceStatus::kWaiting ? now - waiting_since_
                                                          : std::chrono::steady_clock::duration{});
  }

  std::span<const TokenId> tokens() const { return tokens_; }  // prompt, then output
  std::span<const TokenId> output() const {
    return std::span<const TokenId>(tokens_).subspan(num_prompt_tokens_);
  }
  int num_tokens() const { return static_cast<int>(tokens_.size()); }
  int num_prompt_tokens() const { return num_prompt_tokens_; }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens_; }

  // Tokens whose K/V are in the cache. The rest (num_tokens - num_computed) are fed to the backend,
  // a chunk per step; the last one's logits give the next token.
  int num_computed_tokens() const { return num_computed_; }
  void set_num_computed_tokens(int n) { num_computed_ = n; }
  int num_uncomputed_tokens() const { return num_tokens() - num_computed_; }

  // Prompt logprobs (SamplingParams::prompt_logprobs): the logits at prompt position p score
  // prompt token p + 1, so positions [0, num_prompt_positions_to_score()) are scored, in order, as
  // prefill computes them. Those before next_position_to_score() are done (all of them when none
  // were asked for). Only those may come from the prefix cache: a cached position computes no logits.
  int num_prompt_positions_to_score() const { return std::max(num_prompt_tokens_ - 1, 0); }
  int next_position_to_score() const { return next_position_to_score_; }
  void set_next_position_to_score(int p) { next_position_to_score_ = p; }
  bool scoring_prompt() const { return next_position_to_score_ < num_prompt_positions_to_score(); }

  BlockTable& block_table() { return table_; }
  const BlockTable& block_table() const { return table_; }
  // Leading blocks of the table already registered in the prefix cache (reset when preempted).
  int num_registered_blocks() const { return num_registered_blocks_; }
  void set_num_registered_blocks(int n) { num_registered_blocks_ = n; }

  // Prefix-cache hash of every full block of tokens(); block i covers tokens [i*B, (i+1)*B).
  std::span<const BlockHash> block_hashes();
  BlockHash parent_hash(int block_index) {
    return block_index == 0 ? root_hash_ : block_hashes()[block_index - 1];
  }

  SequenceStatus status() const { return status_; }
  void set_status(SequenceStatus s) { status_ = s; }
  FinishReason finish_reason() const { return finish_reason_; }
  void finish(FinishReason reason) {
    status_ = SequenceStatus::kFinished;
    finish_reason_ = reason;
  }

  // Prompt tokens served from the prefix cache on first admission (reported in usage).
  int num_cached_prompt_tokens() const { return num_cached_prompt_tokens_; }
  void set_num_cached_prompt_tokens(int n) { num_cached_prompt_tokens_ = n; }
  int num_preemptions() const { return num_preemptions_; }
  void count_preemption() { ++num_preemptions_; }
  bool ever_scheduled() const { return ever_scheduled_; }
  void mark_scheduled() { ever_scheduled_ = true; }

  // Appends a generated token and applies the token-level stop rules: max_tokens, EOS (unless
  // ignore_eos), stop token ids, all but max_tokens held off until min_tokens tokens exist; and,
  // under a structured-output constraint, kStop once no token may follow.
  // Returns kNone while the sequence should go on.
  FinishReason append_token(TokenId token);

  // The tokens the request's constraint allows next (a SampleInput::allowed mask); empty when it
  // has none.
  std::span<const uint32_t> allowed_tokens() const;

  // Speculative decoding: tokens guessed to follow tokens() (engine/ngram_drafter.h), fed to the
  // model behind the last one in this step. Scheduler::schedule sets the draft and complete_step
  // clears it; it is never part of tokens(), whose tokens have all been drawn by the sampler.
  std::span<const TokenId> draft() const { return draft_; }
  // Takes at most the first max_tokens tokens of `draft`; under a constraint, only the leading ones
  // it allows in turn and after which something may still follow. Returns how many it took.
  int set_draft(std::span<const TokenId> draft, int max_tokens);
  void clear_draft() {
    draft_.clear();
    draft_states_.clear();
  }
  // The allowed_tokens() mask after the first i tokens of the draft (i <= draft().size()).
  std::span<const uint32_t> allowed_tokens_after_draft(int i) const;

 private:
  Request request_;
  std::vector<TokenId> eos_token_ids_;
  std::vector<TokenId> tokens_;
  int num_prompt_tokens_;
  int num_computed_ = 0;
  BlockTable table_;
  int num_registered_blocks_ = 0;
  std::vector<BlockHash> block_hashes_;
  // The first block's parent: kRootBlockHash for the base model, one of its own per LoRA adapter,
  // so that adapters' blocks hash apart (BlockPool compares the adapter on lookup, too).
  BlockHash root_hash_ = kRootBlockHash;
  SequenceStatus status_ = SequenceStatus::kWaiting;
  FinishReason finish_reason_ = FinishReason::kNone;
  int num_cached_prompt_tokens_ = 0;
  int num_preemptions_ = 0;
  bool ever_scheduled_ = false;
  int32_t constraint_state_ = -1;  // the constraint's automaton state after the output so far
  std::vector<TokenId> draft_;
  std::vector<int32_t> draft_states_;  // under a constraint: its state after each draft token
  int next_position_to_score_ = 0;
  uint64_t arrival_ = 0;
  std::chrono::steady_clock::time_point waiting_since_;
  std::chrono::steady_clock::duration waited_{};
  bool overdue_ = false;
};

}  // namespace kvserve
