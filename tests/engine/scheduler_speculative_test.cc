// The scheduler's side of speculative decoding, step by step: which decodes get drafts and how long,
// that a draft only takes budget and blocks the real tokens leave (it never preempts), how
// complete_step keeps the matching run of drawn tokens and rolls the cache back past a wrong draft
// token, and that blocks enter the prefix cache only once real tokens fill them.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

using testing::make_seq;

SchedulerConfig spec_config(int block_size, int num_blocks, int draft_tokens) {
  SchedulerConfig cfg = testing::small_config(block_size, num_blocks);
  cfg.speculative = {.max_draft_tokens = draft_tokens, .min_ngram = 1, .max_ngram = 3};
  return cfg;
}

// Prompt 5 6 7 8 5 6 7: the tail "5 6 7" occurred at the start, followed by 8 5 6 7.
std::vector<TokenId> looping_prompt() {
  return {5, 6, 7, 8, 5, 6, 7};
}

TEST(SchedulerSpeculative, ADecodeCarriesThePromptLookupDraft) {
  Scheduler s(spec_config(4, 16, 3));
  ASSERT_TRUE(s.add(make_seq("a", looping_prompt(), 10, 4)).ok());
  StepPlan prefill = s.schedule();
  ASSERT_EQ(prefill.seqs.size(), 1u);
  EXPECT_EQ(prefill.seqs[0].num_draft_tokens, 0);     // prompts are not drafted, only decodes
  s.complete_step(prefill, std::vector<TokenId>{8});  // context: 5 6 7 8 5 6 7 8

  StepPlan decode = s.schedule();
  ASSERT_EQ(decode.seqs.size(), 1u);
  const ScheduledSequence& e = decode.seqs[0];
  const Sequence& seq = *e.seq;
  EXPECT_EQ(e.start_pos, 7);
  EXPECT_EQ(e.num_new_tokens, 4);  // the real token 8 and the draft 5 6 7
  EXPECT_EQ(e.num_draft_tokens, 3);
  EXPECT_EQ(e.end_of_tokens(), 8);
  EXPECT_EQ(std::vector<TokenId>(seq.draft().begin(), seq.draft().end()), (std::vector<TokenId>{5, 6, 7}));
  EXPECT_EQ(decode.num_batched_tokens, 4);
  EXPECT_EQ(decode.num_draft_tokens, 3);
  EXPECT_EQ(decode.num_decodes, 0);  // more than one query token: it runs as a chunk
  EXPECT_GE(seq.block_table().capacity(), 11);

  // Drawn after 8, 5, 6, 7: 5 6 9 4. Draft 5 matches, 6 matches, 7 does not (9 was drawn after 6):
  // the step produces 5 6 9, and the cache keeps the K/V of 8 5 6 (the 7's slot is rewritten).
  const auto events = s.complete_step(decode, std::vector<TokenId>{5, 6, 9, 4});
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].token, 5);
  EXPECT_EQ(events[1].token, 6);
  EXPECT_EQ(events[2].token, 9);
  EXPECT_EQ(events[2].sample_index, 2u);
  EXPECT_EQ(events[2].num_output_tokens, 4);
  const Sequence* a = s.find("a");
  EXPECT_EQ(a->num_tokens(), 11);
  EXPECT_EQ(a->num_computed_tokens(), 10);
  EXPECT_TRUE(a->draft().empty());
  EXPECT_EQ(s.stats().num_draft_tokens, 3u);
  EXPECT_EQ(s.stats().num_accepted_draft_tokens, 2u);
}

TEST(SchedulerSpeculative, AWrongFirstDraftTokenStillProducesOneToken) {
  Scheduler s(spec_config(4, 16, 3));
  ASSERT_TRUE(s.add(make_seq("a", looping_prompt(), 10, 4)).ok());
  s.complete_step(s.schedule(), std::vector<TokenId>{8});
  const StepPlan decode = s.schedule();
  ASSERT_EQ(decode.seqs[0].num_draft_tokens, 3);
  const auto events = s.complete_step(decode, std::vector<TokenId>{1, 2, 3, 4});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].token, 1);
  EXPECT_EQ(s.find("a")->num_computed_tokens(), 8);
  EXPECT_EQ(s.stats().num_accepted_draft_tokens, 0u);
  // The next step feeds the new token at position 8, over the wrong draft's slot.
  const StepPlan next = s.schedule();
  EXPECT_EQ(next.seqs[0].start_pos, 8);
}

TEST(SchedulerSpeculative, ABlockOnlyWrongDraftTokensReachedGoesBackToThePool) {
  Scheduler s(spec_config(4, 16, 3));
  ASSERT_TRUE(s.add(make_seq("a", {5, 6, 7, 8, 5}, 10, 4)).ok());
  s.complete_step(s.schedule(), std::vector<TokenId>{6});  // 6 tokens, 5 computed: 2 blocks
  const StepPlan decode = s.schedule();  // position 5, then the draft 7 8 5 at 6..8 (block 2)
  ASSERT_EQ(decode.seqs[0].num_draft_tokens, 3);
  EXPECT_EQ(s.find("a")->block_table().num_blocks(), 3);
  EXPECT_EQ(s.pool().num_free_blocks(), 13);
  s.complete_step(decode, std::vector<TokenId>{9, 9, 9, 9});  // wrong at once: next input at 6
  EXPECT_EQ(s.find("a")->block_table().num_blocks(), 2);
  EXPECT_EQ(s.pool().num_free_blocks(), 14);
}

TEST(SchedulerSpeculative, AllDraftTokensRightGivesOneMoreToken) {
  Scheduler s(spec_config(4, 16, 3));
  ASSERT_TRUE(s.add(make_seq("a", looping_prompt(), 10, 4)).ok());
  s.complete_step(s.schedule(), std::vector<TokenId>{8});
  const StepPlan decode = s.schedule();
  const auto events = s.complete_step(decode, std::vector<TokenId>{5, 6, 7, 8});
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(s.find("a")->num_tokens(), 12);
  EXPECT_EQ(s.find("a")->num_computed_tokens(), 11);
  EXPECT_EQ(s.stats().num_accepted_draft_tokens, 3u);
}

TEST(SchedulerSpeculative, StopRulesEndTheRunOfProducedTokens) {
  // A stop token among the produced tokens ends the output there; the rest are dropped.
  Request r = testing::make_request("a", looping_prompt(), 10);
  r.stop.stop_token_ids = {6};
  Scheduler s(spec_config(4, 16, 3));
  ASSERT_TRUE(s.add(std::make_unique<Sequence>(r, 4, std::vector<TokenId>{testing::kTestEos})).ok());
  s.complete_step(s.schedule(), std::vector<TokenId>{8});
  const StepPlan decode = s.schedule();
  ASSERT_EQ(decode.seqs[0].num_draft_tokens, 3);
  const auto events = s.complete_step(decode, std::vector<TokenId>{5, 6, 7, 8});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].token, 6);
  EXPECT_EQ(events[1].finish, FinishReason::kStop);
  EXPECT_EQ(s.find("a"), nullptr);
  EXPECT_EQ(s.pool().num_free_blocks(), 16);

  // max_tokens 3: after the prefill's token, a draft of at most 1 (so at most 2 more tokens).
  Scheduler t(spec_config(4, 16, 3));
  ASSERT_TRUE(t.add(make_seq("b", looping_prompt(), 3, 4)).ok());
  t.complete_step(t.schedule(), std::vector<TokenId>{8});
  const StepPlan d = t.schedule();
  EXPECT_EQ(d.seqs[0].num_draft_tokens, 1);
  const auto ev = t.complete_step(d, std::vector<TokenId>{5, 6});
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1].finish, FinishReason::kLength);
  EXPECT_EQ(t.find("b"), nullptr);
  EXPECT_EQ(t.pool().num_free_blocks(), 16);
}

TEST(SchedulerSpeculative, ADraftOnlyTakesBlocksNoRealTokenNeedsAndNeverPreempts) {
  // Block size 4, 4 blocks. After their prefills, a holds 8 tokens in 2 blocks and b 4 in 1; both
  // next real tokens fit the blocks they have, and one block is free. a (first in order) drafts
  // 5 6 7 into it; b's draft (9) would need another block and is dropped, preempting nobody.
  Scheduler s(spec_config(4, 4, 3));
  ASSERT_TRUE(s.add(make_seq("a", looping_prompt(), 8, 4)).ok());
  ASSERT_TRUE(s.add(make_seq("b", {9, 9, 9}, 8, 4)).ok());
  StepPlan first = s.schedule();
  ASSERT_EQ(first.seqs.size(), 2u);
  s.complete_step(first, std::vector<TokenId>{8, 9});
  StepPlan second = s.schedule();
  ASSERT_EQ(second.seqs.size(), 2u);
  EXPECT_TRUE(second.preempted.empty());
  EXPECT_EQ(second.seqs[0].seq->id(), "b");  // the single-token decode goes first
  EXPECT_EQ(second.seqs[0].num_draft_tokens, 0);
  EXPECT_EQ(second.seqs[1].seq->id(), "a");
  EXPECT_EQ(second.seqs[1].num_draft_tokens, 3);
  EXPECT_EQ(second.num_decodes, 1);
  EXPECT_EQ(s.pool().num_free_blocks(), 0);
  s.complete_step(second, std::vector<TokenId>(5, 3));
  // Every draft token was wrong (3 was drawn); the block a's draft took is the one its next input
  // (position 8) goes to, so a keeps it.
  EXPECT_EQ(s.find("a")->block_table().num_blocks(), 3);
  // From here both need new blocks and the pool is short; after every step, no sequence holds a
  // block beyond its next input's, and everything finishes with every block back.
  for (int step = 0; step < 40 && s.has_unfinished(); ++step) {
    StepPlan p = s.schedule();
    s.complete_step(p, std::vector<TokenId>(p.seqs.size() + static_cast<size_t>(p.num_draft_tokens), 3));
    s.for_each_sequence([](const Sequence& seq) {
      EXPECT_LE(seq.block_table().num_blocks(), (seq.num_computed_tokens() + 4) / 4) << seq.id();
    });
  }
  EXPECT_FALSE(s.has_unfinished());
  EXPECT_EQ(s.pool().num_free_blocks(), 4);
}

TEST(SchedulerSpeculative, BlocksEnterThePrefixCacheOnlyWhenRealTokensFillThem) {
  Scheduler s(spec_config(4, 16, 3));
  ASSERT_TRUE(s.add(make_seq("a", looping_prompt(), 10, 4)).ok());
  s.complete_step(s.schedule(), std::vector<TokenId>{8});  // 7 of 8 tokens computed: block 0 full
  EXPECT_EQ(s.find("a")->num_registered_blocks(), 1);
  // This step computes position 7 (block 1 then holds real tokens only) and drafts 5 6 7 at 8..10.
  const StepPlan decode = s.schedule();
  ASSERT_EQ(decode.seqs[0].num_draft_tokens, 3);
  EXPECT_EQ(s.find("a")->num_registered_blocks(), 2);  // not block 2: the draft may be wrong
  // 5 6 wrong 9: positions 8 and 9 hold real K/V, block 2 is not full: nothing more registered.
  s.complete_step(decode, std::vector<TokenId>{5, 6, 9, 4});
  EXPECT_EQ(s.find("a")->num_registered_blocks(), 2);
  EXPECT_EQ(s.find("a")->num_computed_tokens(), 10);

  // A request whose draft is all right and ends exactly at a block's end: that block is registered
  // when the step completes, before a later step could preempt or finish the request.
  Scheduler t(spec_config(4, 16, 3));
  ASSERT_TRUE(t.add(make_seq("b", {5, 6, 7, 8, 5, 6, 7, 8}, 10, 4)).ok());
  t.complete_step(t.schedule(), std::vector<TokenId>{5});  // 9 tokens, 8 computed: 2 blocks
  const StepPlan d = t.schedule();                         // position 8, then the draft 6 7 8 at 9..11
  ASSERT_EQ(d.seqs[0].num_draft_tokens, 3);
  EXPECT_EQ(t.find("b")->num_registered_blocks(), 2);
  t.complete_step(d, std::vector<TokenId>{6, 7, 8, 5});  // all right: positions 8..11 hold real K/V
  EXPECT_EQ(t.find("b")->num_computed_tokens(), 12);
  EXPECT_EQ(t.find("b")->num_registered_blocks(), 3);
}

}  // namespace
}  // namespace kvserve
