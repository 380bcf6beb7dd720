#include "engine/sequence.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvserve {
namespace {

constexpr TokenId kEos = 2;

Sequence make_seq(std::vector<TokenId> prompt, StopCriteria stop = {}) {
  Request r;
  r.id = "r";
  r.prompt = std::move(prompt);
  r.stop = std::move(stop);
  const std::vector<TokenId> eos{kEos};
  return Sequence(std::move(r), 4, eos);
}

TEST(BlockTable, SlotIsPhysicalBlockTimesSizePlusOffset) {
  BlockTable t(4);
  t.append(7);
  t.append(2);
  t.append(9);
  EXPECT_EQ(t.slot(0), 28);
  EXPECT_EQ(t.slot(3), 31);
  EXPECT_EQ(t.slot(5), 9);
  EXPECT_EQ(t.slot(11), 39);
  EXPECT_EQ(t.capacity(), 12);
  EXPECT_EQ(t.blocks_needed(12), 0);
  EXPECT_EQ(t.blocks_needed(13), 1);
  EXPECT_EQ(t.blocks_needed(20), 2);
}

TEST(Sequence, MaxTokensEndsWithLength) {
  StopCriteria stop;
  stop.max_tokens = 3;
  Sequence s = make_seq({10, 11}, stop);
  EXPECT_EQ(s.append_token(5), FinishReason::kNone);
  EXPECT_EQ(s.append_token(6), FinishReason::kNone);
  EXPECT_EQ(s.append_token(7), FinishReason::kLength);
  EXPECT_EQ(s.num_output_tokens(), 3);
  EXPECT_EQ(std::vector<TokenId>(s.output().begin(), s.output().end()), (std::vector<TokenId>{5, 6, 7}));
}

TEST(Sequence, EosStopsUnlessIgnored) {
  StopCriteria stop;
  stop.max_tokens = 5;
  Sequence s = make_seq({10}, stop);
  EXPECT_EQ(s.append_token(kEos), FinishReason::kStop);

  stop.ignore_eos = true;
  Sequence t = make_seq({10}, stop);
  EXPECT_EQ(t.append_token(kEos), FinishReason::kNone);
}

TEST(Sequence, StopTokenIdsStop) {
  StopCriteria stop;
  stop.max_tokens = 5;
  stop.stop_token_ids = {42, 43};
  Sequence s = make_seq({10}, stop);
  EXPECT_EQ(s.append_token(41), FinishReason::kNone);
  EXPECT_EQ(s.append_token(43), FinishReason::kStop);
}

TEST(Sequence, MinTokensHoldsOffStopsButNotMaxTokens) {
  StopCriteria stop;
  stop.max_tokens = 4;
  stop.min_tokens = 3;
  stop.stop_token_ids = {42};
  Sequence s = make_seq({10}, stop);
  EXPECT_EQ(s.append_token(kEos), FinishReason::kNone);  // 1 < 3
  EXPECT_EQ(s.append_token(42), FinishReason::kNone);    // 2 < 3
  EXPECT_EQ(s.append_token(42), FinishReason::kStop);    // the third token may stop
}

TEST(Sequence, StopTokenOnTheLastAllowedTokenReportsStop) {
  StopCriteria stop;
  stop.max_tokens = 1;
  Sequence s = make_seq({10}, stop);
  EXPECT_EQ(s.append_token(kEos), FinishReason::kStop);
}

TEST(Sequence, BlockHashesChainOverFullBlocksOnly) {
  StopCriteria stop;
  stop.max_tokens = 8;
  Sequence s = make_seq({1, 2, 3, 4, 5, 6, 7}, stop);
  ASSERT_EQ(s.block_hashes().size(), 1u);
  const BlockHash h0 = hash_block_tokens(kRootBlockHash, std::vector<TokenId>{1, 2, 3, 4});
  EXPECT_EQ(s.block_hashes()[0], h0);
  s.append_token(8);  // completes the second block
  ASSERT_EQ(s.block_hashes().size(), 2u);
  EXPECT_EQ(s.block_hashes()[1], hash_block_tokens(h0, std::vector<TokenId>{5, 6, 7, 8}));
  EXPECT_EQ(s.parent_hash(0), kRootBlockHash);
  EXPECT_EQ(s.parent_hash(1), h0);
}

}  // namespace
}  // namespace kvserve
