#include <gtest/gtest.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "engine/step_batch.h"
#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

using testing::iota_prompt;
using testing::make_seq;
using V32 = std::vector<int32_t>;
using V64 = std::vector<int64_t>;

TEST(BatchBuilder, PrefillThenDecodeArraysAreExact) {
  SchedulerConfig cfg;
  cfg.block_size = 4;
  cfg.num_blocks = 8;
  Scheduler sched(cfg);
  ASSERT_TRUE(sched.add(make_seq("a", iota_prompt(6, 10), 4, 4)).ok());
  ASSERT_TRUE(sched.add(make_seq("b", iota_prompt(3, 50), 4, 4)).ok());

  BatchBuilder builder;
  StepPlan plan = sched.schedule();
  const StepBatch& b = builder.build(plan, 4);
  EXPECT_EQ(b.num_seqs, 2);
  EXPECT_EQ(b.num_tokens, 9);
  EXPECT_EQ(b.num_decodes, 0);
  EXPECT_EQ(b.token_ids, (V32{10, 11, 12, 13, 14, 15, 50, 51, 52}));
  EXPECT_EQ(b.positions, (V32{0, 1, 2, 3, 4, 5, 0, 1, 2}));
  // a holds blocks 0 and 1, b holds block 2.
  EXPECT_EQ(b.slot_mapping, (V64{0, 1, 2, 3, 4, 5, 8, 9, 10}));
  EXPECT_EQ(b.query_start_loc, (V32{0, 6, 9}));
  EXPECT_EQ(b.context_lens, (V32{6, 3}));
  EXPECT_EQ(b.max_blocks_per_seq, 2);
  EXPECT_EQ(b.block_tables, (V32{0, 1, 2, StepBatch::kPaddingBlock}));
  EXPECT_EQ(b.emits_token, (std::vector<uint8_t>{1, 1}));
  EXPECT_EQ(b.max_query_len, 6);
  EXPECT_EQ(b.max_context_len, 6);

  const std::vector<TokenId> sampled{70, 80};
  sched.complete_step(plan, sampled);
  plan = sched.schedule();
  const StepBatch& d = builder.build(plan, 4);
  EXPECT_EQ(d.num_decodes, 2);
  EXPECT_EQ(d.token_ids, (V32{70, 80}));
  EXPECT_EQ(d.positions, (V32{6, 3}));
  EXPECT_EQ(d.slot_mapping, (V64{6, 11}));
  EXPECT_EQ(d.query_start_loc, (V32{0, 1, 2}));
  EXPECT_EQ(d.context_lens, (V32{7, 4}));
  EXPECT_EQ(d.block_tables, (V32{0, 1, 2, StepBatch::kPaddingBlock}));
}

TEST(BatchBuilder, DecodesComeBeforeAChunkedPrefill) {
  SchedulerConfig cfg;
  cfg.block_size = 4;
  cfg.num_blocks = 16;
  cfg.max_num_batched_tokens = 6;
  Scheduler sched(cfg);
  ASSERT_TRUE(sched.add(make_seq("a", iota_prompt(2, 10), 8, 4)).ok());
  StepPlan plan = sched.schedule();  // a's prefill
  const std::vector<TokenId> one{99};
  sched.complete_step(plan, one);

  ASSERT_TRUE(sched.add(make_seq("b", iota_prompt(12, 40), 4, 4)).ok());
  BatchBuilder builder;
  plan = sched.schedule();
  const StepBatch& b = builder.build(plan, 4);
  // a decodes (1 token), b gets the other 5 of the 6-token budget as its first chunk.
  EXPECT_EQ(b.num_decodes, 1);
  EXPECT_EQ(b.token_ids, (V32{99, 40, 41, 42, 43, 44}));
  EXPECT_EQ(b.positions, (V32{2, 0, 1, 2, 3, 4}));
  EXPECT_EQ(b.slot_mapping, (V64{2, 4, 5, 6, 7, 8}));  // b: blocks 1 and 2
  EXPECT_EQ(b.query_start_loc, (V32{0, 1, 6}));
  EXPECT_EQ(b.context_lens, (V32{3, 5}));
  EXPECT_EQ(b.emits_token, (std::vector<uint8_t>{1, 0}));  // b's chunk is not its last
  EXPECT_EQ(b.block_tables, (V32{0, StepBatch::kPaddingBlock, 1, 2}));
}

// A batch mixing a decode with a chunk of a longer prompt, and the pool it lives in.
struct MixedBatch {
  static constexpr int kBlocks = 16;
  static constexpr int kBlockSize = 4;
  static constexpr int kVocab = 1000;
  StepBatch batch;
};
MixedBatch mixed_batch() {
  SchedulerConfig cfg;
  cfg.block_size = MixedBatch::kBlockSize;
  cfg.num_blocks = MixedBatch::kBlocks;
  cfg.max_num_batched_tokens = 6;
  Scheduler sched(cfg);
  EXPECT_TRUE(sched.add(make_seq("short", iota_prompt(3, 10), 4, 4)).ok());
  BatchBuilder builder;
  StepPlan plan = sched.schedule();
  builder.build(plan, cfg.block_size);
  sched.complete_step(plan, std::vector<TokenId>{70});
  EXPECT_TRUE(sched.add(make_seq("long", iota_prompt(20, 100), 4, 4)).ok());
  plan = sched.schedule();
  MixedBatch m{builder.build(plan, cfg.block_size)};
  EXPECT_EQ(m.batch.num_decodes, 1);
  EXPECT_EQ(m.batch.num_seqs, 2);
  return m;
}

TEST(ValidateStepBatch, AcceptsWhatTheBuilderMakes) {
  const MixedBatch m = mixed_batch();
  EXPECT_NO_THROW(
      validate_step_batch(m.batch, MixedBatch::kBlocks, MixedBatch::kBlockSize, MixedBatch::kVocab));
  // The random workloads of scheduler_property_test.cc validate every batch they build, too.
}

TEST(ValidateStepBatch, RejectsEveryIndexThatWouldLeaveThePoolOrDisagree) {
  struct Case {
    const char* name;
    std::function<void(StepBatch&)> corrupt;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"token id past the vocabulary", [](StepBatch& b) { b.token_ids[2] = MixedBatch::kVocab; },
       "vocabulary"},
      {"negative token id", [](StepBatch& b) { b.token_ids[0] = -1; }, "vocabulary"},
      {"block id past the pool",
       [](StepBatch& b) { b.block_tables[b.max_blocks_per_seq] = MixedBatch::kBlocks; }, "outside the pool"},
      {"padding block inside the context",  // the decode's last block, which holds its new token
       [](StepBatch& b) {
         b.block_tables[(b.context_lens[0] - 1) / b.block_size] = StepBatch::kPaddingBlock;
       },
       "outside the pool"},
      {"slot that is not the table's", [](StepBatch& b) { b.slot_mapping[0] += 1; }, "block table says"},
      {"position off by one", [](StepBatch& b) { b.positions[1] += 1; }, "position"},
      {"context longer than the table",
       [](StepBatch& b) { b.context_lens[1] = b.max_blocks_per_seq * b.block_size + 1; }, "context length"},
      {"context shorter than the query", [](StepBatch& b) { b.context_lens[1] = b.query_len(1) - 1; },
       "context length"},
      {"decode with two query tokens", [](StepBatch& b) { b.num_decodes = 2; }, "query length"},
      {"empty query", [](StepBatch& b) { b.query_start_loc[1] = b.query_start_loc[0]; }, "query length"},
      {"token count that disagrees", [](StepBatch& b) { b.num_tokens += 1; }, "num_tokens"},
      {"block table of the wrong size", [](StepBatch& b) { b.block_tables.pop_back(); }, "num_seqs"},
      {"block size that is not the pool's", [](StepBatch& b) { b.block_size = 8; }, "the pool's is 4"},
      {"max_query_len short of the longest query", [](StepBatch& b) { b.max_query_len -= 1; },
       "max_query_len"},
      {"max_query_len past the longest query", [](StepBatch& b) { b.max_query_len += 1; }, "max_query_len"},
      // The validation is given 2 LoRA adapters below.
      {"LoRA adapter not served", [](StepBatch& b) { b.lora_adapters[1] = 3; }, "LoRA adapter 3 of 2"},
      {"negative LoRA adapter", [](StepBatch& b) { b.lora_adapters[0] = -1; }, "LoRA adapter -1"},
      {"LoRA adapters of the wrong size", [](StepBatch& b) { b.lora_adapters.pop_back(); }, "lora_adapters"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    StepBatch b = mixed_batch().batch;
    ASSERT_EQ(b.lora_adapters, (std::vector<int32_t>{0, 0})) << "the builder fills them in";
    EXPECT_NO_THROW(
        validate_step_batch(b, MixedBatch::kBlocks, MixedBatch::kBlockSize, MixedBatch::kVocab, 2));
    c.corrupt(b);
    try {
      validate_step_batch(b, MixedBatch::kBlocks, MixedBatch::kBlockSize, MixedBatch::kVocab, 2);
      ADD_FAILURE() << "accepted";
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace kvserve
