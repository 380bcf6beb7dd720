#include "engine/engine.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/checksum_backend.h"
#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

using testing::make_request;

constexpr int kVocab = 500;

std::unique_ptr<Engine> make_engine(int num_blocks, int block_size = 8, int budget = 2048) {
  EngineConfig cfg;
  cfg.scheduler.block_size = block_size;
  cfg.scheduler.num_blocks = num_blocks;
  cfg.scheduler.max_num_batched_tokens = budget;
  cfg.scheduler.max_model_len = 1024;
  cfg.eos_token_ids = {testing::kTestEos};
  return std::make_unique<Engine>(cfg, std::make_unique<ChecksumBackend>(num_blocks, block_size, kVocab));
}

std::vector<TokenId> reference(std::vector<TokenId> context, int max_tokens) {
  std::vector<TokenId> out;
  for (int i = 0; i < max_tokens; ++i) {
    out.push_back(ChecksumBackend::reference_next_token(context, kVocab));
    context.push_back(out.back());
  }
  return out;
}

std::vector<Request> random_requests(int n, uint64_t seed, const std::vector<TokenId>& shared_prefix) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<TokenId> tok(1, kVocab - 1);
  std::uniform_int_distribution<int> len(1, 120), out(1, 40);
  std::vector<Request> reqs;
  for (int i = 0; i < n; ++i) {
    std::vector<TokenId> prompt = shared_prefix;
    for (int k = len(rng); k > 0; --k)
      prompt.push_back(tok(rng));
    reqs.push_back(make_request("r" + std::to_string(i), prompt, out(rng)));
  }
  return reqs;
}

TEST(Engine, GeneratesTheReferenceContinuationForEveryRequest) {
  auto engine = make_engine(512);
  const auto reqs = random_requests(64, 7, {});
  const auto results = engine->generate(reqs);
  ASSERT_EQ(results.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.message();
    EXPECT_EQ(results[i].output, reference(reqs[i].prompt, reqs[i].stop.max_tokens)) << reqs[i].id;
    EXPECT_EQ(results[i].finish, FinishReason::kLength);
  }
  EXPECT_EQ(engine->scheduler().pool().num_free_blocks(), 512);
}

TEST(Engine, SameRequestSameTokensAloneBatchedPreemptedAndPrefixCached) {
  std::vector<TokenId> prefix(64);
  for (size_t i = 0; i < prefix.size(); ++i)
    prefix[i] = static_cast<TokenId>(1 + i * 7 % (kVocab - 1));
  auto batch = random_requests(64, 11, prefix);
  const Request probe = batch[5];

  const auto alone = make_engine(512)->generate({probe})[0].output;

  auto roomy = make_engine(512);
  const auto batched = roomy->generate(batch);
  EXPECT_EQ(batched[5].output, alone);
  EXPECT_GT(batched[5].num_cached_prompt_tokens, 0) << "the shared prefix should come from the cache";

  // A pool of 40 blocks (320 tokens) for 64 requests forces preemption and recompute.
  auto tight = make_engine(40, 8, 64);
  const auto squeezed = tight->generate(batch);
  EXPECT_GT(tight->scheduler().stats().num_preemptions, 0u);
  for (size_t i = 0; i < batch.size(); ++i)
    EXPECT_EQ(squeezed[i].output, batched[i].output) << batch[i].id;
  EXPECT_EQ(tight->scheduler().pool().num_free_blocks(), 40);
}

TEST(Engine, RejectsTokenIdsOutsideTheVocabulary) {
  auto engine = make_engine(64);
  const Status st = engine->add_request(make_request("bad", {1, kVocab, 3}, 4));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "prompt token 1 has id 500, outside the vocabulary [0, 500)");
  const auto results = engine->generate({make_request("neg", {-1}, 4), make_request("ok", {1, 2}, 4)});
  EXPECT_FALSE(results[0].status.ok());
  EXPECT_TRUE(results[1].status.ok());
  EXPECT_EQ(results[1].output.size(), 4u);
}

TEST(Engine, AbortMidGenerationReturnsBlocksAndLeavesOthersRunning) {
  auto engine = make_engine(64);
  ASSERT_TRUE(engine->add_request(make_request("a", {1, 2, 3}, 50)).ok());
  ASSERT_TRUE(engine->add_request(make_request("b", {4, 5, 6}, 5)).ok());
  engine->step();
  engine->step();
  ASSERT_TRUE(engine->abort("a").ok());
  std::vector<TokenId> b_tokens;
  while (engine->has_unfinished())
    for (const auto& e : engine->step()) {
      EXPECT_EQ(e.id, "b");
      b_tokens.push_back(e.token);
    }
  EXPECT_EQ(b_tokens.size(), 3u);  // 2 of b's 5 tokens came before the abort
  EXPECT_EQ(engine->scheduler().pool().num_free_blocks(), 64);
}

}  // namespace
}  // namespace kvserve
