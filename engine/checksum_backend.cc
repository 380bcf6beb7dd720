#include "engine/checksum_backend.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace kvserve {
namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t fold(uint64_t h, TokenId token) {
  return (h ^ static_cast<uint32_t>(token)) * kFnvPrime;
}

// The hash before any token: each LoRA adapter starts from its own.
uint64_t start(int lora_adapter) {
  return lora_adapter == 0 ? kFnvOffset : fold(kFnvOffset, -lora_adapter);
}

TokenId to_token(uint64_t h, int vocab_size) {
  return static_cast<TokenId>((h ^ (h >> 29)) % static_cast<uint64_t>(vocab_size));
}

}  // namespace

ChecksumBackend::ChecksumBackend(int num_blocks, int block_size, int vocab_size, int num_lora_adapters)
    : block_size_(block_size),
      vocab_size_(vocab_size),
      num_lora_adapters_(num_lora_adapters),
      cache_(static_cast<size_t>(num_blocks) * block_size) {
  if (vocab_size <= 1) throw std::invalid_argument("ChecksumBackend: vocab_size must be at least 2");
}

TokenId ChecksumBackend::reference_next_token(std::span<const TokenId> context, int vocab_size,
                                              int lora_adapter) {
  uint64_t h = start(lora_adapter);
  for (TokenId t : context)
    h = fold(h, t);
  return to_token(h, vocab_size);
}

std::span<const float> ChecksumBackend::forward(const StepBatch& batch) {
  if (batch.block_size != block_size_)
    throw std::logic_error("ChecksumBackend: batch block size " + std::to_string(batch.block_size) +
                           " != pool block size " + std::to_string(block_size_));
  const auto num_slots = static_cast<int64_t>(cache_.size());
  for (int s = 0; s < batch.num_seqs; ++s) {
    const int adapter = batch.lora_adapter(s);
    if (adapter < 0 || adapter > num_lora_adapters_)
      throw std::logic_error("LoRA adapter " + std::to_string(adapter) + " is not served");
    for (int t = batch.query_start_loc[s]; t < batch.query_start_loc[s + 1]; ++t) {
      const int64_t slot = batch.slot_mapping[t];
      if (slot < 0 || slot >= num_slots)
        throw std::logic_error("slot " + std::to_string(slot) + " out of range");
      cache_[slot] = {batch.token_ids[t], batch.positions[t], adapter};
    }
  }

  logits_.assign(batch.logits_indices.size() * vocab_size_, 0.0f);
  for (size_t r = 0; r < batch.logits_indices.size(); ++r)
    logits_[r * vocab_size_ + predicted_after(batch, batch.logits_indices[r])] = 1.0f;
  return logits_;
}

std::span<const float> ChecksumBackend::token_logits(const StepBatch& batch,
                                                     std::span<const int> token_indices) {
  logits_.assign(token_indices.size() * static_cast<size_t>(vocab_size_), 0.0f);
  for (size_t r = 0; r < token_indices.size(); ++r) {
    const int t = token_indices[r];
    if (t < 0 || t >= batch.num_tokens)
      throw std::logic_error("ChecksumBackend::token_logits: token index " + std::to_string(t) +
                             " outside the batch");
    logits_[r * static_cast<size_t>(vocab_size_) + static_cast<size_t>(predicted_after(batch, t))] = 1.0f;
  }
  return logits_;
}

TokenId ChecksumBackend::predicted_after(const StepBatch& batch, int t) const {
  const auto seq = std::upper_bound(batch.query_start_loc.begin(), batch.query_start_loc.end(), t) -
                   batch.query_start_loc.begin() - 1;
  return next_token(batch, static_cast<int>(seq), batch.positions[t] + 1);
}

TokenId ChecksumBackend::next_token(const StepBatch& batch, int s, int context_len) const {
  const BlockId* table = batch.block_table(s);
  const int adapter = batch.lora_adapter(s);
  uint64_t h = start(adapter);
  for (int pos = 0; pos < context_len; ++pos) {
    const BlockId block = table[pos / block_size_];
    if (block < 0) throw std::logic_error("block table padding read at position " + std::to_string(pos));
    const Entry& e = cache_[static_cast<size_t>(block) * block_size_ + pos % block_size_];
    if (e.position != pos)
      throw std::logic_error("KV cache corrupted: sequence " + std::to_string(s) + " position " +
                             std::to_string(pos) + " reads a slot holding position " +
                             std::to_string(e.position));
    if (e.lora_adapter != adapter)
      throw std::logic_error("KV cache shared across LoRA adapters: sequence " + std::to_string(s) +
                             " (adapter " + std::to_string(adapter) + ") reads position " +
                             std::to_string(pos) + " written under adapter " +
                             std::to_string(e.lora_adapter));
    h = fold(h, e.token);
  }
  return to_token(h, vocab_size_);
}

}  // namespace kvserve
