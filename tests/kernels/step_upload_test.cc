// How a StepBatch is packed for the GPU, including CUDA-graph padding: pure host code, runs in CI.
#include "kernels/step_upload.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace kvserve::cuda {
namespace {

// Two decodes (contexts 5 and 9) then a 3-token prefill chunk (context 7), block size 4.
StepBatch mixed_batch() {
  StepBatch b;
  b.num_seqs = 3;
  b.num_tokens = 5;
  b.num_decodes = 2;
  b.block_size = 4;
  b.max_blocks_per_seq = 3;
  b.max_query_len = 3;
  b.max_context_len = 9;
  b.token_ids = {11, 12, 13, 14, 15};
  b.positions = {4, 8, 4, 5, 6};
  b.slot_mapping = {20, 33, 40, 41, 42};
  b.query_start_loc = {0, 1, 2, 5};
  b.context_lens = {5, 9, 7};
  b.block_tables = {4, 5, -1, 6, 7, 8, 9, 10, -1};
  b.emits_token = {1, 1, 1};
  b.logits_indices = {0, 1, 4};
  return b;
}

StepBatch decode_batch() {
  StepBatch b = mixed_batch();
  b.num_seqs = 2;
  b.num_tokens = 2;
  b.max_query_len = 1;
  b.token_ids.resize(2);
  b.positions.resize(2);
  b.slot_mapping.resize(2);
  b.query_start_loc = {0, 1, 2};
  b.context_lens.resize(2);
  b.block_tables.resize(6);
  b.emits_token.resize(2);
  b.logits_indices.resize(2);
  return b;
}

template <typename T>
std::vector<T> read(const std::vector<std::byte>& buf, size_t offset, int n) {
  const T* p = reinterpret_cast<const T*>(buf.data() + offset);
  return std::vector<T>(p, p + n);
}

TEST(StepUpload, LayoutAlignsEveryArrayAndFitsTheLargestStep) {
  const StepArraysLayout l = StepArraysLayout::make(100, 7);
  for (size_t off : {l.token_ids, l.positions, l.slot_mapping, l.query_start_loc, l.context_lens,
                     l.logits_indices, l.lora_index})
    EXPECT_EQ(off % 256, 0u);
  EXPECT_GE(l.total_bytes - l.lora_index, 100 * sizeof(int32_t));
  EXPECT_GE(l.positions - l.token_ids, 100 * sizeof(int32_t));
  EXPECT_GE(l.query_start_loc - l.slot_mapping, 100 * sizeof(int64_t));
  EXPECT_GE(l.context_lens - l.query_start_loc, 8 * sizeof(int32_t));
  EXPECT_GE(l.total_bytes - l.logits_indices, 7 * sizeof(int32_t));
}

TEST(StepUpload, PacksAMixedBatchAsIs) {
  const StepArraysLayout l = StepArraysLayout::make(16, 4);
  std::vector<std::byte> buf(l.total_bytes);
  StepBatch b = mixed_batch();
  b.lora_adapters = {2, 0, 1};
  const PackedStep p = pack_step_arrays(b, 3, l, buf);
  EXPECT_EQ(p.num_seqs, 3);
  EXPECT_EQ(p.num_tokens, 5);
  EXPECT_EQ(read<int32_t>(buf, l.token_ids, 5), b.token_ids);
  EXPECT_EQ(read<int32_t>(buf, l.positions, 5), b.positions);
  EXPECT_EQ(read<int64_t>(buf, l.slot_mapping, 5), b.slot_mapping);
  EXPECT_EQ(read<int32_t>(buf, l.query_start_loc, 4), b.query_start_loc);
  EXPECT_EQ(read<int32_t>(buf, l.context_lens, 3), b.context_lens);
  EXPECT_EQ(p.num_logits_rows, 3);
  EXPECT_EQ(read<int32_t>(buf, l.logits_indices, 3), (std::vector<int32_t>{0, 1, 4}));
  // Each token carries its sequence's LoRA adapter: the prefill chunk's three tokens adapter 1.
  EXPECT_EQ(read<int32_t>(buf, l.lora_index, 5), (std::vector<int32_t>{2, 0, 1, 1, 1}));
}

TEST(StepUpload, PadsADecodeBatchWithHarmlessSequences) {
  const StepArraysLayout l = StepArraysLayout::make(16, 8);
  std::vector<std::byte> buf(l.total_bytes);
  const PackedStep p = pack_step_arrays(decode_batch(), 4, l, buf);
  EXPECT_EQ(p.num_seqs, 4);
  EXPECT_EQ(p.num_tokens, 4);
  EXPECT_EQ(read<int32_t>(buf, l.token_ids, 4), (std::vector<int32_t>{11, 12, 0, 0}));
  EXPECT_EQ(read<int32_t>(buf, l.positions, 4), (std::vector<int32_t>{4, 8, 0, 0}));
  // Padding writes nothing to the pool (slot -1) and attends to nothing (context 0).
  EXPECT_EQ(read<int64_t>(buf, l.slot_mapping, 4), (std::vector<int64_t>{20, 33, -1, -1}));
  EXPECT_EQ(read<int32_t>(buf, l.query_start_loc, 5), (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(read<int32_t>(buf, l.context_lens, 4), (std::vector<int32_t>{5, 9, 0, 0}));
  EXPECT_EQ(p.num_logits_rows, 4);
  EXPECT_EQ(read<int32_t>(buf, l.logits_indices, 4), (std::vector<int32_t>{0, 1, 2, 3}));
  // No adapters (an empty lora_adapters), and none for the padding.
  EXPECT_EQ(read<int32_t>(buf, l.lora_index, 4), (std::vector<int32_t>{0, 0, 0, 0}));
  StepBatch adapted = decode_batch();
  adapted.lora_adapters = {3, 1};
  std::fill(buf.begin(), buf.end(), std::byte{0x7});  // what a previous step could have left
  pack_step_arrays(adapted, 4, l, buf);
  EXPECT_EQ(read<int32_t>(buf, l.lora_index, 4), (std::vector<int32_t>{3, 1, 0, 0}));
}

TEST(StepUpload, CarriesTheRowsThatCheckADraft) {
  // The prefill chunk (tokens 2..4) is a decode with a two-token draft: rows 2 and 3 check it.
  StepBatch b = mixed_batch();
  b.logits_indices = {0, 1, 4, 2, 3};
  const StepArraysLayout l = StepArraysLayout::make(16, 4, 6);
  std::vector<std::byte> buf(l.total_bytes);
  const PackedStep p = pack_step_arrays(b, 3, l, buf);
  EXPECT_EQ(p.num_logits_rows, 5);
  EXPECT_EQ(read<int32_t>(buf, l.logits_indices, 5), b.logits_indices);
  const StepArraysLayout too_few = StepArraysLayout::make(16, 4, 4);  // 5 rows > 4
  std::vector<std::byte> small(too_few.total_bytes);
  EXPECT_THROW(pack_step_arrays(b, 3, too_few, small), std::invalid_argument);
}

TEST(StepUpload, RejectsWhatItCannotCarry) {
  const StepArraysLayout l = StepArraysLayout::make(4, 2);
  std::vector<std::byte> buf(l.total_bytes);
  EXPECT_THROW(pack_step_arrays(mixed_batch(), 3, l, buf), std::invalid_argument);  // 5 tokens > 4
  const StepArraysLayout big = StepArraysLayout::make(16, 8);
  std::vector<std::byte> big_buf(big.total_bytes);
  EXPECT_THROW(pack_step_arrays(mixed_batch(), 4, big, big_buf), std::invalid_argument);   // pads a prefill
  EXPECT_THROW(pack_step_arrays(decode_batch(), 1, big, big_buf), std::invalid_argument);  // pads below size
  std::vector<std::byte> small(big.total_bytes - 1);
  EXPECT_THROW(pack_step_arrays(decode_batch(), 2, big, small), std::invalid_argument);
}

TEST(StepUpload, GraphBucketsAreFewAndCoverEverySize) {
  EXPECT_EQ(graph_bucket(1, 256), 1);
  EXPECT_EQ(graph_bucket(2, 256), 2);
  EXPECT_EQ(graph_bucket(3, 256), 4);
  EXPECT_EQ(graph_bucket(5, 256), 8);
  EXPECT_EQ(graph_bucket(9, 256), 16);
  EXPECT_EQ(graph_bucket(17, 256), 24);
  EXPECT_EQ(graph_bucket(256, 256), 256);
  EXPECT_EQ(graph_bucket(250, 252), 252);  // the cap is a bucket itself
  EXPECT_EQ(graph_bucket(257, 256), 0);
  EXPECT_EQ(graph_bucket(0, 256), 0);
  for (int n = 1; n <= 300; ++n) {
    const int b = graph_bucket(n, 300);
    EXPECT_GE(b, n);
    EXPECT_LE(b, n + 7);  // padding wastes at most 7 sequences
  }
}

}  // namespace
}  // namespace kvserve::cuda
