#include "engine/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
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

TEST(Engine, ListsARequestInTheStepThatFirstRunsItOnly) {
  EngineConfig cfg;
  cfg.scheduler.block_size = 8;
  cfg.scheduler.num_blocks = 64;
  cfg.scheduler.max_num_batched_tokens = 8;  // a's 20-token prompt runs in chunks of 8, 8, 4
  cfg.scheduler.max_num_seqs = 1;            // b waits for a to finish
  cfg.scheduler.max_model_len = 1024;
  Engine engine(cfg, std::make_unique<ChecksumBackend>(64, 8, kVocab));
  ASSERT_TRUE(engine.add_request(make_request("a", std::vector<TokenId>(20, 7), 3)).ok());
  ASSERT_TRUE(engine.add_request(make_request("b", {1, 2, 3, 4}, 2)).ok());
  std::vector<std::vector<RequestId>> listed;
  int a_finished_at = -1;
  while (engine.has_unfinished()) {
    for (const StepOutput& out : engine.step())
      if (out.id == "a" && out.finish != FinishReason::kNone) a_finished_at = static_cast<int>(listed.size());
    listed.push_back(engine.first_scheduled());
  }
  // a: 3 prefill chunks (the last one samples its first token) and 2 decodes; then b: 2 steps.
  ASSERT_EQ(a_finished_at, 4);
  ASSERT_EQ(listed.size(), 7u);
  for (size_t step = 0; step < listed.size(); ++step) {
    const std::vector<RequestId> expected = step == 0   ? std::vector<RequestId>{"a"}
                                            : step == 5 ? std::vector<RequestId>{"b"}
                                                        : std::vector<RequestId>{};
    EXPECT_EQ(listed[step], expected) << "step " << step;
  }
}

TEST(Engine, ListsEachRequestOnceThoughPreemptedAndRecomputed) {
  auto engine = make_engine(40, 8, 64);  // as above: a pool too small for the batch
  const std::vector<Request> batch = random_requests(64, 11, {});
  for (const Request& r : batch)
    ASSERT_TRUE(engine->add_request(r).ok());
  std::map<RequestId, int> times_listed;
  while (engine->has_unfinished()) {
    engine->step();
    for (const RequestId& id : engine->first_scheduled())
      ++times_listed[id];
  }
  EXPECT_GT(engine->scheduler().stats().num_preemptions, 0u);
  ASSERT_EQ(times_listed.size(), batch.size());
  for (const auto& [id, times] : times_listed)
    EXPECT_EQ(times, 1) << id;
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

// Prompt logprobs against the checksum model, whose logits after any context are one-hot (1 at the
// token reference_next_token predicts, 0 elsewhere): prompt token i + 1 scores
// 1 - log(e + V - 1) when it is the predicted one and -log(e + V - 1) otherwise, and the best
// alternative is the predicted token. Exact up to float rounding of one log: 1e-5.
void expect_reference_prompt_logprobs(const std::vector<TokenId>& prompt,
                                      const std::vector<SampledToken>& scores, int num_top,
                                      const std::string& id) {
  ASSERT_EQ(scores.size(), prompt.size() - 1) << id;
  const double log_z = std::log(std::exp(1.0) + (kVocab - 1));
  for (size_t i = 0; i + 1 < prompt.size(); ++i) {
    const std::vector<TokenId> context(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    const TokenId predicted = ChecksumBackend::reference_next_token(context, kVocab);
    const SampledToken& s = scores[i];
    EXPECT_EQ(s.token, prompt[i + 1]) << id << " position " << i;
    EXPECT_NEAR(s.logprob, (s.token == predicted ? 1.0 : 0.0) - log_z, 1e-5) << id << " position " << i;
    ASSERT_EQ(s.top_logprobs.size(), static_cast<size_t>(num_top)) << id << " position " << i;
    if (num_top > 0) {
      EXPECT_EQ(s.top_logprobs[0].first, predicted) << id << " position " << i;
      EXPECT_NEAR(s.top_logprobs[0].second, 1.0 - log_z, 1e-5) << id << " position " << i;
    }
  }
}

// Prompts that follow the model in places (their next token is the predicted one), so that both
// branches of the reference are exercised.
std::vector<Request> scored_requests(int n, uint64_t seed, const std::vector<TokenId>& shared_prefix) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<TokenId> tok(1, kVocab - 1);
  std::uniform_int_distribution<int> len(1, 90), out(1, 12);
  std::vector<Request> reqs;
  for (int i = 0; i < n; ++i) {
    std::vector<TokenId> prompt = shared_prefix;
    for (int k = len(rng); k > 0; --k)
      prompt.push_back(rng() % 3 == 0 && !prompt.empty()
                           ? ChecksumBackend::reference_next_token(prompt, kVocab)
                           : tok(rng));
    Request r = make_request("s" + std::to_string(i), prompt, out(rng));
    r.sampling.prompt_logprobs = i % 3 == 0 ? 0 : static_cast<int>(i % 5);
    reqs.push_back(std::move(r));
  }
  return reqs;
}

TEST(Engine, PromptLogprobsMatchTheReferenceWholeChunkedPreemptedAndAfterTheCacheFills) {
  std::vector<TokenId> prefix(40);
  for (size_t i = 0; i < prefix.size(); ++i)
    prefix[i] = static_cast<TokenId>(1 + i * 13 % (kVocab - 1));
  auto batch = scored_requests(48, 3, prefix);
  // Requests without prompt logprobs share the prefix too: they may still be served from the cache.
  for (Request r : random_requests(16, 5, prefix))
    batch.push_back(std::move(r));

  struct Setup {
    const char* name;
    int blocks, budget;
  };
  for (const Setup& setup :
       {Setup{"whole", 512, 2048}, Setup{"chunked", 512, 7}, Setup{"preempted", 40, 64}}) {
    SCOPED_TRACE(setup.name);
    auto engine = make_engine(setup.blocks, 8, setup.budget);
    // Twice: the second time the prefix cache holds every prompt.
    for (int round = 0; round < 2; ++round) {
      const auto results = engine->generate(batch);
      for (size_t i = 0; i < batch.size(); ++i) {
        const Request& r = batch[i];
        ASSERT_TRUE(results[i].status.ok()) << results[i].status.message();
        EXPECT_EQ(results[i].output, reference(r.prompt, r.stop.max_tokens)) << r.id;
        if (r.sampling.prompt_logprobs < 0) {
          EXPECT_TRUE(results[i].prompt_logprobs.empty()) << r.id;
          if (round == 1 && setup.blocks == 512) {  // 40 blocks evict most of the cache
            EXPECT_GT(results[i].num_cached_prompt_tokens, 0) << r.id;
          }
          continue;
        }
        expect_reference_prompt_logprobs(r.prompt, results[i].prompt_logprobs, r.sampling.prompt_logprobs,
                                         r.id);
        EXPECT_EQ(results[i].num_cached_prompt_tokens, 0)
            << r.id << ": a scored position came from the cache";
      }
    }
    if (std::string(setup.name) == "preempted") {
      EXPECT_GT(engine->scheduler().stats().num_preemptions, 0u);
    }
    EXPECT_EQ(engine->scheduler().pool().num_free_blocks(), setup.blocks);
  }
}

TEST(Engine, PromptLogprobsGoOutOnceWithTheFirstToken) {
  auto engine = make_engine(64, 8, 5);  // chunks of 5: the prompt takes several steps
  Request r = make_request("p", {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}, 3);
  r.sampling.prompt_logprobs = 2;
  Request one = make_request("one", {42}, 2);  // a one-token prompt has nothing to score
  one.sampling.prompt_logprobs = 0;
  ASSERT_TRUE(engine->add_request(r).ok());
  ASSERT_TRUE(engine->add_request(one).ok());
  std::map<std::string, int> outputs, with_prompt;
  while (engine->has_unfinished()) {
    for (StepOutput& out : engine->step()) {
      const Request& req = out.id == "p" ? r : one;
      if (outputs[out.id]++ == 0) {
        ++with_prompt[out.id];
        EXPECT_EQ(out.prompt_token_ids, req.prompt) << out.id;
        expect_reference_prompt_logprobs(req.prompt, out.prompt_logprobs, req.sampling.prompt_logprobs,
                                         out.id);
      } else {
        EXPECT_TRUE(out.prompt_token_ids.empty() && out.prompt_logprobs.empty()) << out.id;
      }
    }
  }
  EXPECT_EQ(outputs["p"], 3);
  EXPECT_EQ(outputs["one"], 2);
  EXPECT_EQ(with_prompt["p"], 1);
}

TEST(Engine, RejectsPromptLogprobsOutOfRange) {
  auto engine = make_engine(64);
  Request r = make_request("r", {1, 2, 3}, 2);
  r.sampling.prompt_logprobs = kMaxTopLogprobs + 1;
  const Status st = engine->add_request(r);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("prompt_logprobs"), std::string::npos) << st.message();
  r.sampling.prompt_logprobs = -2;
  EXPECT_EQ(engine->add_request(r).code(), StatusCode::kInvalidArgument);
}

// The checksum backend's hidden state is the one-hot of the token it predicts after the context
// it read through the cache, so each embedding must be the one-hot of the reference's next token
// after that request's own prompt: taken at its last token, in a batch of many, in 5-token chunks.
TEST(Engine, EachEmbeddingIsTakenAtItsOwnPromptsLastToken) {
  auto engine = make_engine(256, 8, 5);
  std::vector<Request> requests;
  std::mt19937 rng(17);
  for (int i = 0; i < 12; ++i) {
    std::vector<TokenId> prompt(1 + rng() % 30);
    for (TokenId& t : prompt)
      t = static_cast<TokenId>(1 + rng() % (kVocab - 1));
    Request r = make_request("e" + std::to_string(i), prompt, 1);
    r.embedding = {true, 0, i % 2 == 0};
    requests.push_back(r);
    requests.push_back(make_request("g" + std::to_string(i), prompt, 4));
  }
  const auto results = engine->generate(requests);
  for (size_t i = 0; i < results.size(); ++i) {
    const GenerationResult& r = results[i];
    ASSERT_TRUE(r.status.ok()) << r.status.message();
    const std::vector<TokenId>& prompt = requests[i].prompt;
    if (!requests[i].embedding.enabled) {
      EXPECT_EQ(r.output, reference(prompt, 4)) << r.id;
      EXPECT_TRUE(r.embedding.empty());
      continue;
    }
    std::vector<float> one_hot(kVocab, 0.0f);
    one_hot[static_cast<size_t>(ChecksumBackend::reference_next_token(prompt, kVocab))] = 1.0f;
    EXPECT_EQ(r.embedding, one_hot) << r.id;
    EXPECT_EQ(r.output.size(), 1u);  // the one token drawn, which the server does not report
  }
}

TEST(Engine, RejectsAnEmbeddingThatWouldGenerate) {
  auto engine = make_engine(64);
  Request r = make_request("r", {1, 2, 3}, 2);
  r.embedding.enabled = true;
  Status st = engine->add_request(r);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("max_tokens must be 1"), std::string::npos) << st.message();
  r.stop.max_tokens = 1;
  r.embedding.dimensions = -1;
  st = engine->add_request(r);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("dimensions"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace kvserve
