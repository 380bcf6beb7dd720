// ChecksumBackend: a stand-in model whose next token is a hash of the whole context, read back
// through the paged cache. It exercises the cache exactly the way attention does — write each new
// token at its slot, gather every earlier one through the block table — but its answer can also be
// computed from the plain token list (reference_next_token), so any bookkeeping error (a shared block
// overwritten, a wrong slot, a stale block after preemption) shows up as a wrong token. Each cache
// entry also records its position and its sequence's LoRA adapter, and a read of the wrong position,
// or of another adapter's K/V, fails loudly. Each adapter is another model: its tokens are another
// hash of the same context.
//
// It is the engine's built-in model until real model files are loaded, and the backend of the
// scheduler's end-to-end tests.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/backend.h"

namespace kvserve {

class ChecksumBackend : public Backend {
 public:
  ChecksumBackend(int num_blocks, int block_size, int vocab_size, int num_lora_adapters = 0);

  std::string name() const override { return "checksum"; }
  int vocab_size() const override { return vocab_size_; }
  int num_lora_adapters() const override { return num_lora_adapters_; }
  std::span<const float> forward(const StepBatch& batch) override;
  // Row r is one-hot at the token predicted after position token_indices[r] of its sequence.
  bool scores_tokens() const override { return true; }
  // Its "hidden state" is the one-hot of the token it predicts next (its LM head is the identity),
  // so an embedding says whether it was taken at the right token of the right context.
  std::span<const float> hidden_states(const StepBatch& batch, std::span<const int> token_indices) override {
    return token_logits(batch, token_indices);
  }
  std::span<const float> token_logits(const StepBatch& batch, std::span<const int> token_indices) override;

  // The token the model (with LoRA adapter `lora_adapter`) predicts after `context`, computed
  // without any cache.
  static TokenId reference_next_token(std::span<const TokenId> context, int vocab_size, int lora_adapter = 0);

 private:
  struct Entry {
    TokenId token = -1;
    int32_t position = -1;
    int32_t lora_adapter = 0;
  };
  // The token predicted after the first context_len tokens of the batch's sequence s, read
  // through its block table.
  TokenId next_token(const StepBatch& batch, int s, int context_len) const;
  // The token predicted after the batch's flat token t, from its sequence's cache.
  TokenId predicted_after(const StepBatch& batch, int t) const;

  int block_size_;
  int vocab_size_;
  int num_lora_adapters_;
  std::vector<Entry> cache_;  // num_blocks * block_size slots
  std::vector<float> logits_;
};

}  // namespace kvserve
