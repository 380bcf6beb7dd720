// How a StepBatch travels to the GPU: its per-token and per-sequence arrays are packed into one
// pinned host buffer and copied with one cudaMemcpyAsync into a device buffer of the same layout,
// whose addresses never change (CUDA graphs capture them). Block tables go separately, as a 2-D
// copy from the batch's own width into a device table of fixed width (the most blocks any sequence
// can have), so a step uploads only the blocks it has, not max_model_len's worth per sequence.
//
// Host-only and GPU-free, so the packing (including CUDA-graph padding) is tested in CI.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/step_batch.h"

namespace kvserve::cuda {

// Byte offsets of each array inside the packed buffer, sized for the largest step.
struct StepArraysLayout {
  int max_tokens = 0;
  int max_seqs = 0;
  int max_logits_rows = 0;     // max_seqs, plus the draft tokens a step may check (speculative decoding)
  size_t token_ids = 0;        // int32 [max_tokens]
  size_t positions = 0;        // int32 [max_tokens]
  size_t slot_mapping = 0;     // int64 [max_tokens]
  size_t query_start_loc = 0;  // int32 [max_seqs + 1]
  size_t context_lens = 0;     // int32 [max_seqs]
  size_t logits_indices = 0;   // int32 [max_logits_rows]: StepBatch::logits_indices
  size_t lora_index = 0;       // int32 [max_tokens]: each token's sequence's LoRA adapter (0 = none)
  size_t total_bytes = 0;

  // max_logits_rows defaults to max_seqs (no speculative decoding).
  static StepArraysLayout make(int max_tokens, int max_seqs, int max_logits_rows = 0);
};

// The batch as the device sees it this step.
struct PackedStep {
  int num_seqs = 0;         // including padding sequences
  int num_tokens = 0;       // including padding tokens
  int num_logits_rows = 0;  // including padding sequences' rows
  size_t bytes = 0;         // of the packed buffer to copy (a prefix of total_bytes)
};

// Packs `batch` into dst (layout.total_bytes long), padded to `padded_seqs` sequences; padding is
// only for decode-only batches (one token per sequence), which CUDA graphs run at fixed sizes.
// A padding sequence has one token (id 0, position 0, slot -1: nothing is written to the pool, LoRA
// adapter 0), context length 0 (attention writes zeros) and has a logits row of its own token,
// which nobody reads.
// Throws std::invalid_argument if the batch does not fit the layout or pads a non-decode batch.
PackedStep pack_step_arrays(const StepBatch& batch, int padded_seqs, const StepArraysLayout& layout,
                            std::span<std::byte> dst);

// The smallest CUDA-graph batch size >= num_seqs among 1, 2, 4, 8 and the multiples of 8, capped at
// max_seqs (itself a bucket); 0 when num_seqs > max_seqs.
int graph_bucket(int num_seqs, int max_seqs);

}  // namespace kvserve::cuda
