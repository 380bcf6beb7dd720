#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

using testing::chunk_sizes;
using testing::complete;
using testing::iota_prompt;
using testing::make_seq;
using testing::small_config;

std::vector<BlockId> table_of(const Scheduler& s, const std::string& id) {
  const auto blocks = s.find(id)->block_table().blocks();
  return {blocks.begin(), blocks.end()};
}

TEST(Scheduler, LongPromptIsChunkedUnderTheTokenBudget) {
  SchedulerConfig cfg = small_config(4, 16);
  cfg.max_num_batched_tokens = 8;
  Scheduler s(cfg);
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(20), 2, 4)).ok());
  StepPlan p1 = s.schedule();
  EXPECT_EQ(chunk_sizes(p1), (std::vector<int>{8}));
  EXPECT_FALSE(p1.seqs[0].emits_token);
  EXPECT_TRUE(complete(s, p1).empty());
  StepPlan p2 = s.schedule();
  EXPECT_EQ(p2.seqs[0].start_pos, 8);
  EXPECT_EQ(chunk_sizes(p2), (std::vector<int>{8}));
  complete(s, p2);
  StepPlan p3 = s.schedule();
  EXPECT_EQ(p3.seqs[0].start_pos, 16);
  EXPECT_EQ(chunk_sizes(p3), (std::vector<int>{4}));
  EXPECT_TRUE(p3.seqs[0].emits_token);
  const auto events = complete(s, p3, 55);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].token, 55);
  EXPECT_EQ(events[0].finish, FinishReason::kNone);
}

// The pool's waste is the unfilled tail of each running sequence's last block, nothing more:
// blocks are taken only as tokens arrive.
TEST(Scheduler, StatsCountTheUnfilledSlotsOfLastBlocks) {
  Scheduler s(small_config(4, 16));
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(5), 4, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("b", iota_prompt(8), 4, 4)).ok());
  EXPECT_EQ(s.stats().num_unfilled_slots, 0);  // nothing running yet
  complete(s, s.schedule());
  EXPECT_EQ(s.stats().num_unfilled_slots, 3 + 0);  // a: 5 of 8 slots, b: 8 of 8
  complete(s, s.schedule());
  EXPECT_EQ(s.stats().num_unfilled_slots, 2 + 3);  // a: 6 of 8, b: 9 of 12 (a third block)
}

TEST(Scheduler, RunningDecodesAreScheduledBeforeNewPrefills) {
  SchedulerConfig cfg = small_config(4, 32);
  cfg.max_num_batched_tokens = 10;
  Scheduler s(cfg);
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(3, 100), 5, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("b", iota_prompt(3, 200), 5, 4)).ok());
  complete(s, s.schedule());
  ASSERT_TRUE(s.add(make_seq("c", iota_prompt(30, 300), 5, 4)).ok());
  const StepPlan p = s.schedule();
  ASSERT_EQ(p.seqs.size(), 3u);
  EXPECT_EQ(p.seqs[0].seq->id(), "a");
  EXPECT_EQ(p.seqs[1].seq->id(), "b");
  EXPECT_EQ(p.seqs[2].seq->id(), "c");
  EXPECT_EQ(chunk_sizes(p), (std::vector<int>{1, 1, 8}));
  EXPECT_EQ(p.num_decodes, 2);
  EXPECT_EQ(p.num_batched_tokens, 10);
}

TEST(Scheduler, MaxNumSeqsCapsRunningSequences) {
  SchedulerConfig cfg = small_config(4, 32);
  cfg.max_num_seqs = 2;
  Scheduler s(cfg);
  for (const char* id : {"a", "b", "c"})
    ASSERT_TRUE(s.add(make_seq(id, iota_prompt(3), 2, 4)).ok());
  const StepPlan p = s.schedule();
  EXPECT_EQ(p.seqs.size(), 2u);
  EXPECT_EQ(s.stats().num_running, 2);
  EXPECT_EQ(s.stats().num_waiting, 1);
}

TEST(Scheduler, PreemptsTheMostRecentlyAdmittedWhenBlocksRunOut) {
  // 4 blocks of 4 tokens; three 3-token prompts take one block each.
  Scheduler s(small_config(4, 4));
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(3, 100), 10, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("b", iota_prompt(3, 200), 10, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("c", iota_prompt(3, 300), 10, 4)).ok());
  complete(s, s.schedule());  // prefill: 3 tokens each, 1 free block left
  complete(s, s.schedule());  // decode at position 3 fills each first block
  EXPECT_EQ(s.pool().num_free_blocks(), 1);

  // Position 4 needs a second block each: a takes the free one, b forces c out.
  const StepPlan p = s.schedule();
  EXPECT_EQ(p.preempted, (std::vector<std::string>{"c"}));
  ASSERT_EQ(p.seqs.size(), 2u);
  EXPECT_EQ(p.seqs[0].seq->id(), "a");
  EXPECT_EQ(p.seqs[1].seq->id(), "b");
  const Sequence* c = s.find("c");
  EXPECT_EQ(c->status(), SequenceStatus::kWaiting);
  EXPECT_EQ(c->num_computed_tokens(), 0);
  EXPECT_EQ(c->block_table().num_blocks(), 0);
  EXPECT_EQ(c->num_output_tokens(), 2);  // kept: they are recomputed, not regenerated
  EXPECT_EQ(c->num_preemptions(), 1);
  EXPECT_EQ(s.stats().num_preemptions, 1u);
  EXPECT_EQ(s.stats().num_running, 2);
  EXPECT_EQ(s.stats().num_waiting, 1);
}

TEST(Scheduler, PreemptedSequenceResumesFromTheFrontOfTheQueue) {
  Scheduler s(small_config(4, 4));
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(3, 100), 6, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("b", iota_prompt(3, 200), 6, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("c", iota_prompt(3, 300), 6, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("d", iota_prompt(5, 400), 1, 4)).ok());  // needs 2 blocks: waits behind
  complete(s, s.schedule());
  complete(s, s.schedule());
  const StepPlan p = s.schedule();  // preempts c
  ASSERT_EQ(p.preempted.size(), 1u);
  complete(s, p);
  // a and b run to the end (6 tokens: 3 + 6 - 1 = 8 cached tokens = 2 blocks each).
  while (s.find("a") != nullptr) {
    const StepPlan q = s.schedule();
    // c (front of the queue) must be admitted before d.
    for (const auto& e : q.seqs)
      EXPECT_NE(e.seq->id(), "d");
    complete(s, q);
  }
  const StepPlan r = s.schedule();
  ASSERT_GE(r.seqs.size(), 1u);
  EXPECT_EQ(r.seqs[0].seq->id(), "c");
  EXPECT_EQ(r.seqs[0].num_new_tokens, 5);  // 3 prompt + 2 output tokens recomputed
}

TEST(Scheduler, RejectsRequestsThatCanNeverFit) {
  SchedulerConfig cfg = small_config(4, 4);
  cfg.max_model_len = 32;
  Scheduler s(cfg);
  Status st = s.add(make_seq("long", iota_prompt(30), 5, 4));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(
      st.message(),
      "prompt (30 tokens) + max_tokens (5) = 35 exceeds the maximum model length of 32 tokens; shorten the "
      "prompt or lower max_tokens");
  // 10 + 8 tokens need ceil(17 / 4) = 5 blocks; the pool has 4.
  st = s.add(make_seq("big", iota_prompt(10), 8, 4));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(
      st.message(),
      "prompt + max_tokens needs 5 KV blocks of 4 tokens but the pool holds only 4; shorten the prompt or "
      "lower max_tokens");
  EXPECT_TRUE(s.add(make_seq("fits", iota_prompt(10), 7, 4)).ok());  // 16 cached tokens = 4 blocks
  EXPECT_EQ(s.add(make_seq("empty", {}, 5, 4)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.add(make_seq("zero", iota_prompt(2), 0, 4)).code(), StatusCode::kInvalidArgument);
  st = s.add(make_seq("fits", iota_prompt(2), 2, 4));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "request id 'fits' is already in use; send a unique id");
  EXPECT_EQ(s.stats().num_waiting, 1);
}

TEST(Scheduler, FullWaitingQueueIsResourceExhausted) {
  SchedulerConfig cfg = small_config(4, 8);
  cfg.max_waiting = 2;
  Scheduler s(cfg);
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(3), 2, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("b", iota_prompt(3), 2, 4)).ok());
  const Status st = s.add(make_seq("c", iota_prompt(3), 2, 4));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(st.message(), "the waiting queue is full (2 requests); retry later");
  s.schedule();  // both move to running: room again
  EXPECT_TRUE(s.add(make_seq("c", iota_prompt(3), 2, 4)).ok());
}

TEST(Scheduler, InvalidConfigThrowsWithTheFieldName) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 0;
  try {
    Scheduler s(cfg);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "max_num_seqs must be positive, got 0");
  }
}

TEST(Scheduler, PromptPrefixIsSharedWithARunningRequest) {
  Scheduler s(small_config(4, 16));
  std::vector<TokenId> shared = iota_prompt(8);
  std::vector<TokenId> pa = shared, pb = shared;
  pa.insert(pa.end(), {1, 2});
  pb.insert(pb.end(), {3, 4, 5});
  ASSERT_TRUE(s.add(make_seq("a", pa, 4, 4)).ok());
  complete(s, s.schedule());  // a's 10 tokens computed: blocks 0 and 1 are full
  ASSERT_TRUE(s.add(make_seq("b", pb, 4, 4)).ok());
  const StepPlan p = s.schedule();
  ASSERT_EQ(p.seqs.size(), 2u);
  EXPECT_EQ(p.seqs[1].seq->id(), "b");
  EXPECT_EQ(p.seqs[1].start_pos, 8);
  EXPECT_EQ(p.seqs[1].num_new_tokens, 3);
  const auto ta = table_of(s, "a"), tb = table_of(s, "b");
  EXPECT_EQ(tb[0], ta[0]);
  EXPECT_EQ(tb[1], ta[1]);
  EXPECT_NE(tb[2], ta[2]);
  EXPECT_EQ(s.pool().ref_count(ta[0]), 2);
  EXPECT_EQ(s.pool().ref_count(ta[2]), 1);
  EXPECT_EQ(s.find("b")->num_cached_prompt_tokens(), 8);
}

TEST(Scheduler, LastPromptTokenIsAlwaysComputed) {
  Scheduler s(small_config(4, 16));
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(8), 4, 4)).ok());
  complete(s, s.schedule());
  ASSERT_TRUE(s.add(make_seq("b", iota_prompt(8), 4, 4)).ok());
  const StepPlan p = s.schedule();
  // Both blocks of b's prompt are cached, but only the first is used: the 8th token must run to
  // produce logits.
  EXPECT_EQ(p.seqs.back().start_pos, 4);
  EXPECT_EQ(p.seqs.back().num_new_tokens, 4);
  EXPECT_EQ(s.find("b")->num_cached_prompt_tokens(), 4);
}

TEST(Scheduler, FinishedRequestsLeaveTheirPrefixInTheCache) {
  Scheduler s(small_config(4, 16));
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(9), 1, 4)).ok());
  const auto events = complete(s, s.schedule());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].finish, FinishReason::kLength);
  EXPECT_EQ(s.find("a"), nullptr);
  EXPECT_EQ(s.pool().num_free_blocks(), 16);
  EXPECT_EQ(s.pool().num_cached_blocks(), 2);
  ASSERT_TRUE(s.add(make_seq("b", iota_prompt(9), 1, 4)).ok());
  const StepPlan p = s.schedule();
  EXPECT_EQ(p.seqs[0].start_pos, 8);
  EXPECT_EQ(s.find("b")->num_cached_prompt_tokens(), 8);
}

TEST(Scheduler, AbortFreesBlocksImmediately) {
  Scheduler s(small_config(4, 8));
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(9), 8, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("w", iota_prompt(3), 8, 4)).ok());
  SchedulerConfig cfg = s.config();
  complete(s, s.schedule());
  EXPECT_EQ(s.pool().num_free_blocks(), cfg.num_blocks - 4);
  EXPECT_TRUE(s.finish("a", FinishReason::kAborted).ok());
  EXPECT_TRUE(s.finish("w", FinishReason::kAborted).ok());
  EXPECT_EQ(s.pool().num_free_blocks(), cfg.num_blocks);
  EXPECT_FALSE(s.has_unfinished());
  EXPECT_EQ(s.finish("a", FinishReason::kAborted).code(), StatusCode::kNotFound);
}

TEST(Scheduler, AbortOfAWaitingRequestRemovesItFromTheQueue) {
  SchedulerConfig cfg = small_config(4, 8);
  cfg.max_num_seqs = 1;
  Scheduler s(cfg);
  ASSERT_TRUE(s.add(make_seq("a", iota_prompt(3), 8, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("b", iota_prompt(3), 8, 4)).ok());
  complete(s, s.schedule());
  EXPECT_EQ(s.stats().num_waiting, 1);
  EXPECT_TRUE(s.finish("b", FinishReason::kAborted).ok());
  EXPECT_EQ(s.stats().num_waiting, 0);
  EXPECT_EQ(s.schedule().seqs.size(), 1u);
}

TEST(Scheduler, RequestsAdmittedInTheSameStepShareTheirCommonPrefix) {
  Scheduler s(small_config(4, 16));
  std::vector<TokenId> pa = iota_prompt(8), pb = iota_prompt(8);
  pa.push_back(1);
  pb.push_back(2);
  ASSERT_TRUE(s.add(make_seq("a", pa, 4, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("b", pb, 4, 4)).ok());
  const StepPlan p = s.schedule();
  ASSERT_EQ(p.seqs.size(), 2u);
  EXPECT_EQ(chunk_sizes(p), (std::vector<int>{9, 1}));  // b computes only its last token
  const auto ta = table_of(s, "a"), tb = table_of(s, "b");
  EXPECT_EQ(std::vector<BlockId>(tb.begin(), tb.begin() + 2),
            std::vector<BlockId>(ta.begin(), ta.begin() + 2));
  EXPECT_EQ(s.find("b")->num_cached_prompt_tokens(), 8);
  EXPECT_EQ(s.pool().num_free_blocks(), 16 - 4);
}

// The server counts free seats as places in its queue unless the pool held the queue back.
TEST(Scheduler, StatsSayWhetherThePoolHeldTheQueueBack) {
  SchedulerConfig budget_limited = small_config(4, 64);
  budget_limited.max_num_batched_tokens = 8;
  Scheduler by_budget(budget_limited);
  ASSERT_TRUE(by_budget.add(make_seq("a", iota_prompt(8, 100), 4, 4)).ok());
  ASSERT_TRUE(by_budget.add(make_seq("b", iota_prompt(8, 200), 4, 4)).ok());
  complete(by_budget, by_budget.schedule());
  EXPECT_EQ(by_budget.stats().num_waiting, 1);
  EXPECT_FALSE(by_budget.stats().admission_short_of_blocks) << "the token budget, not the pool";

  Scheduler by_blocks(small_config(4, 4));
  ASSERT_TRUE(by_blocks.add(make_seq("a", iota_prompt(12, 100), 4, 4)).ok());
  ASSERT_TRUE(by_blocks.add(make_seq("b", iota_prompt(12, 200), 4, 4)).ok());
  complete(by_blocks, by_blocks.schedule());
  EXPECT_EQ(by_blocks.stats().num_waiting, 1);
  EXPECT_TRUE(by_blocks.stats().admission_short_of_blocks);
  ASSERT_TRUE(by_blocks.finish("b", FinishReason::kAborted).ok());
  EXPECT_FALSE(by_blocks.stats().admission_short_of_blocks) << "nothing waits";
}

}  // namespace
}  // namespace kvserve
