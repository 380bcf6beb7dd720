#include "engine/sequence.h"

#include <algorithm>
#include <utility>

#include "engine/token_constraint.h"

namespace kvserve {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kAborted:
      return "aborted";
  }
  return "unknown";
}

Sequence::Sequence(Request request, int block_size, std::span<const TokenId> eos_token_ids)
    : request_(std::move(request)),
      eos_token_ids_(eos_token_ids.begin(), eos_token_ids.end()),
      tokens_(request_.prompt),
      num_prompt_tokens_(static_cast<int>(request_.prompt.size())),
      table_(block_size) {
  if (request_.lora_adapter != 0) {
    // A negative "token", which no real block holds, so the root is not any real block's hash
    // (BlockPool also compares the adapter on lookup: this only keeps the chains apart).
    const TokenId adapter[] = {-request_.lora_adapter};
    root_hash_ = hash_block_tokens(kRootBlockHash, adapter);
  }
  // Room for the output up front, but not for a whole context's worth: max_tokens is often "all
  // that fits" (the model's length) for requests that stop long before, and queued ones hold it too.
  constexpr int kMaxReservedOutput = 4096;
  tokens_.reserve(tokens_.size() + std::clamp(request_.stop.max_tokens, 0, kMaxReservedOutput));
  if (request_.constraint) constraint_state_ = request_.constraint->start();
  // Positions [0, P - 1) are scored when prompt logprobs are asked for; none otherwise.
  next_position_to_score_ = request_.sampling.prompt_logprobs >= 0 ? 0 : num_prompt_positions_to_score();
}

std::span<const uint32_t> Sequence::allowed_tokens() const {
  return request_.constraint ? request_.constraint->allowed(constraint_state_) : std::span<const uint32_t>();
}

int Sequence::set_draft(std::span<const TokenId> draft, int max_tokens) {
  clear_draft();
  const size_t n = std::min(draft.size(), static_cast<size_t>(std::max(max_tokens, 0)));
  if (!request_.constraint) {
    draft_.assign(draft.begin(), draft.begin() + static_cast<ptrdiff_t>(n));
    return static_cast<int>(n);
  }
  // A token the constraint does not allow could never be drawn, and after one that leaves nothing
  // to follow, the request ends: drafting past either only wastes the model's time.
  int32_t state = constraint_state_;
  for (size_t i = 0; i < n; ++i) {
    state = request_.constraint->advance(state, draft[i]);
    if (request_.constraint->exhausted(state)) break;
    draft_.push_back(draft[i]);
    draft_states_.push_back(state);
  }
  return static_cast<int>(draft_.size());
}

std::span<const uint32_t> Sequence::allowed_tokens_after_draft(int i) const {
  if (!request_.constraint) return {};
  return request_.constraint->allowed(i == 0 ? constraint_state_ : draft_states_[static_cast<size_t>(i - 1)]);
}

std::span<const BlockHash> Sequence::block_hashes() {
  const int block_size = table_.block_size();
  const int full_blocks = num_tokens() / block_size;
  for (int i = static_cast<int>(block_hashes_.size()); i < full_blocks; ++i) {
    const BlockHash parent = i == 0 ? root_hash_ : block_hashes_[i - 1];
    block_hashes_.push_back(hash_block_tokens(
        parent, std::span<const TokenId>(tokens_).subspan(static_cast<size_t>(i) * block_size, block_size)));
  }
  return block_hashes_;
}

FinishReason Sequence::append_token(TokenId token) {
  tokens_.push_back(token);
  const StopCriteria& stop = request_.stop;
  const int produced = num_output_tokens();
  if (produced >= stop.min_tokens) {
    const auto has = [token](const std::vector<TokenId>& ids) {
      return std::find(ids.begin(), ids.end(), token) != ids.end();
    };
    if ((!stop.ignore_eos && has(eos_token_ids_)) || has(stop.stop_token_ids)) return FinishReason::kStop;
  }
  if (request_.constraint) {
    // The sampler drew from the allowed tokens, so the automaton has a live state; when nothing
    // may follow it (a whole match and no EOS in the model), the output is done.
    constraint_state_ = request_.constraint->advance(constraint_state_, token);
    if (request_.constraint->exhausted(constraint_state_)) return FinishReason::kStop;
  }
  if (produced >= stop.max_tokens) return FinishReason::kLength;
  return FinishReason::kNone;
}

}  // namespace kvserve
