#include "kernels/step_upload.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace kvserve::cuda {
namespace {

size_t align_up(size_t n) {
  return (n + 255) / 256 * 256;
}  // each array 256-byte aligned

template <typename T>
T* at(std::span<std::byte> dst, size_t offset) {
  return reinterpret_cast<T*>(dst.data() + offset);
}

}  // namespace

StepArraysLayout StepArraysLayout::make(int max_tokens, int max_seqs, int max_logits_rows) {
  StepArraysLayout l;
  l.max_tokens = max_tokens;
  l.max_seqs = max_seqs;
  l.max_logits_rows = std::max(max_logits_rows, max_seqs);
  size_t off = 0;
  const auto place = [&off](size_t bytes) {
    const size_t at = off;
    off = align_up(off + bytes);
    return at;
  };
  // Arrays used by every step first; the packed prefix covers what a step fills.
  l.token_ids = place(sizeof(int32_t) * max_tokens);
  l.positions = place(sizeof(int32_t) * max_tokens);
  l.slot_mapping = place(sizeof(int64_t) * max_tokens);
  l.query_start_loc = place(sizeof(int32_t) * (max_seqs + 1));
  l.context_lens = place(sizeof(int32_t) * max_seqs);
  l.logits_indices = place(sizeof(int32_t) * l.max_logits_rows);
  l.lora_index = place(sizeof(int32_t) * max_tokens);
  l.total_bytes = off;
  return l;
}

PackedStep pack_step_arrays(const StepBatch& batch, int padded_seqs, const StepArraysLayout& layout,
                            std::span<std::byte> dst) {
  const int seqs = batch.num_seqs;
  if (padded_seqs < seqs) throw std::invalid_argument("pack_step_arrays: padded_seqs < num_seqs");
  const bool decode_only = batch.num_decodes == seqs;
  if (padded_seqs > seqs && !decode_only)
    throw std::invalid_argument("pack_step_arrays: only decode-only batches are padded");
  const int pad = padded_seqs - seqs;
  const int tokens = batch.num_tokens + pad;
  const int rows = static_cast<int>(batch.logits_indices.size()) + pad;
  if (tokens > layout.max_tokens || padded_seqs > layout.max_seqs || rows > layout.max_logits_rows)
    throw std::invalid_argument("pack_step_arrays: step of " + std::to_string(tokens) + " tokens / " +
                                std::to_string(padded_seqs) + " sequences / " + std::to_string(rows) +
                                " logits rows exceeds the backend's " + std::to_string(layout.max_tokens) +
                                " / " + std::to_string(layout.max_seqs) + " / " +
                                std::to_string(layout.max_logits_rows));
  if (pad > 0 && batch.logits_indices.size() != static_cast<size_t>(seqs))
    throw std::invalid_argument("pack_step_arrays: a padded batch has one logits row per sequence");
  if (dst.size() < layout.total_bytes) throw std::invalid_argument("pack_step_arrays: buffer too small");

  const int n = batch.num_tokens;
  std::memcpy(at<int32_t>(dst, layout.token_ids), batch.token_ids.data(), sizeof(int32_t) * n);
  std::memcpy(at<int32_t>(dst, layout.positions), batch.positions.data(), sizeof(int32_t) * n);
  std::memcpy(at<int64_t>(dst, layout.slot_mapping), batch.slot_mapping.data(), sizeof(int64_t) * n);
  std::memcpy(at<int32_t>(dst, layout.query_start_loc), batch.query_start_loc.data(),
              sizeof(int32_t) * (seqs + 1));
  std::memcpy(at<int32_t>(dst, layout.context_lens), batch.context_lens.data(), sizeof(int32_t) * seqs);
  int32_t* logits_index = at<int32_t>(dst, layout.logits_indices);
  std::memcpy(logits_index, batch.logits_indices.data(), sizeof(int32_t) * batch.logits_indices.size());
  int32_t* lora_index = at<int32_t>(dst, layout.lora_index);
  for (int s = 0; s < seqs; ++s)
    std::fill(lora_index + batch.query_start_loc[s], lora_index + batch.query_start_loc[s + 1],
              batch.lora_adapter(s));

  for (int p = 0; p < pad; ++p) {
    const int t = n + p;
    const int s = seqs + p;
    at<int32_t>(dst, layout.token_ids)[t] = 0;
    at<int32_t>(dst, layout.positions)[t] = 0;
    at<int64_t>(dst, layout.slot_mapping)[t] = -1;
    at<int32_t>(dst, layout.query_start_loc)[s + 1] = t + 1;
    at<int32_t>(dst, layout.context_lens)[s] = 0;
    logits_index[s] = t;
    lora_index[t] = 0;
  }
  // The device copy starts at offset 0 and must reach the end of the last array a step fills.
  return PackedStep{padded_seqs, tokens, rows, layout.total_bytes};
}

int graph_bucket(int num_seqs, int max_seqs) {
  if (num_seqs > max_seqs || num_seqs <= 0) return 0;
  int bucket = num_seqs <= 1 ? 1 : num_seqs <= 2 ? 2 : num_seqs <= 4 ? 4 : (num_seqs + 7) / 8 * 8;
  return std::min(bucket, max_seqs);
}

}  // namespace kvserve::cuda
