// Whole-model checks of the CPU backend and the engine against an independent reference: the
// expected.json next to each tiny model holds the logits and greedy tokens that
// scripts/reference/llama_reference.py computed with a plain float64 PyTorch implementation of the
// published architecture (no KV cache, full recompute per step).
//
// Tolerance: the backend computes in float32. With hidden size 64, at most 160-wide dot products
// and two layers, float32 rounding (6e-8 relative) accumulates to well under 1e-4 on logits of
// magnitude ~10; 2e-3 leaves a wide margin while still catching any real error (a wrong RoPE
// frequency, a missing bias or a misplaced K/V row moves logits by 1e-1 or more).
#include "engine/cpu_backend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/model.h"
#include "engine/scheduler.h"
#include "engine/tokenizer.h"
#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

constexpr float kLogitTolerance = 2e-3f;
const std::string kModels = std::string(KVSERVE_TEST_DATA) + "/models/";

struct Expected {
  std::vector<TokenId> prompt;
  std::vector<TokenId> greedy;
  std::vector<std::vector<float>> step_logits;
  std::vector<float> prompt_final_hidden;  // after the last norm, at the prompt's last token
};

Expected read_expected(const std::string& model) {
  std::ifstream in(kModels + model + "/expected.json");
  const auto j = nlohmann::json::parse(in);
  return {j.at("prompt_ids").get<std::vector<TokenId>>(), j.at("greedy_ids").get<std::vector<TokenId>>(),
          j.at("step_logits").get<std::vector<std::vector<float>>>(),
          j.at("prompt_final_hidden").get<std::vector<float>>()};
}

std::shared_ptr<const Model> load(const std::string& model) {
  return std::make_shared<const Model>(load_model(kModels + model));
}

// Runs one request step by step through scheduler + batch builder + backend with a given token
// budget (small budgets force chunked prefill), feeding back the reference's greedy tokens, and
// returns the logits row of every step that emitted a token.
std::vector<std::vector<float>> run_logits(std::shared_ptr<const Model> model, const Expected& exp,
                                           int budget) {
  SchedulerConfig cfg;
  cfg.block_size = 4;
  cfg.num_blocks = 64;
  cfg.max_num_batched_tokens = budget;
  Scheduler sched(cfg);
  CpuBackend backend(model, cfg.num_blocks, cfg.block_size);
  BatchBuilder builder;
  Request r;
  r.id = "probe";
  r.prompt = exp.prompt;
  r.stop.max_tokens = static_cast<int>(exp.greedy.size());
  r.stop.ignore_eos = true;
  EXPECT_TRUE(sched.add(std::make_unique<Sequence>(r, cfg.block_size, std::vector<TokenId>{})).ok());
  std::vector<std::vector<float>> rows;
  const int vocab = model->config.vocab_size;
  while (sched.has_unfinished()) {
    const StepPlan plan = sched.schedule();
    const auto logits = backend.forward(builder.build(plan, cfg.block_size));
    std::vector<TokenId> next(plan.seqs.size(), 0);
    if (plan.seqs[0].emits_token) {
      rows.emplace_back(logits.begin(), logits.begin() + vocab);
      next[0] = exp.greedy.at(rows.size() - 1);
    }
    sched.complete_step(plan, next);
  }
  return rows;
}

class TinyModel : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyModel, LogitsMatchTheReferenceAtEveryStepWholeAndChunked) {
  const Expected exp = read_expected(GetParam());
  const auto model = load(GetParam());
  for (int budget : {2048, 3}) {
    SCOPED_TRACE("token budget " + std::to_string(budget));
    const auto rows = run_logits(model, exp, budget);
    ASSERT_EQ(rows.size(), exp.step_logits.size());
    for (size_t step = 0; step < rows.size(); ++step) {
      ASSERT_EQ(rows[step].size(), exp.step_logits[step].size());
      float max_diff = 0.0f;
      for (size_t v = 0; v < rows[step].size(); ++v)
        max_diff = std::max(max_diff, std::abs(rows[step][v] - exp.step_logits[step][v]));
      EXPECT_LT(max_diff, kLogitTolerance) << "step " << step;
    }
  }
}

std::unique_ptr<Engine> make_engine(std::shared_ptr<const Model> model, int num_blocks, int budget) {
  EngineConfig cfg;
  cfg.scheduler.block_size = 8;
  cfg.scheduler.num_blocks = num_blocks;
  cfg.scheduler.max_num_batched_tokens = budget;
  cfg.scheduler.max_model_len = 512;
  cfg.eos_token_ids = model->config.eos_token_ids;
  return std::make_unique<Engine>(cfg,
                                  std::make_unique<CpuBackend>(model, num_blocks, cfg.scheduler.block_size));
}

TEST_P(TinyModel, EngineGreedyTokensMatchTheReference) {
  const Expected exp = read_expected(GetParam());
  auto engine = make_engine(load(GetParam()), 64, 2048);
  const auto results =
      engine->generate({testing::make_request("r", exp.prompt, static_cast<int>(exp.greedy.size()))});
  ASSERT_TRUE(results[0].status.ok()) << results[0].status.message();
  EXPECT_EQ(results[0].output, exp.greedy);
}

// Prompt logprobs: a prompt made of the reference's prompt and its greedy tokens but the last is
// scored, at its tail, by the reference's logits of every step (step j's logits score greedy token
// j). log_softmax moves each logprob by at most twice the logits' error: 2 * kLogitTolerance.
TEST_P(TinyModel, PromptLogprobsMatchTheReferenceWholeAndChunked) {
  const Expected exp = read_expected(GetParam());
  const auto model = load(GetParam());
  std::vector<TokenId> prompt = exp.prompt;
  prompt.insert(prompt.end(), exp.greedy.begin(), exp.greedy.end() - 1);
  const size_t tail = exp.prompt.size() - 1;  // the score of greedy token 0
  for (int budget : {2048, 3}) {
    SCOPED_TRACE("token budget " + std::to_string(budget));
    auto engine = make_engine(model, 64, budget);
    Request r = testing::make_request("scored", prompt, 1);
    r.sampling.prompt_logprobs = 3;
    const auto results = engine->generate({r});
    ASSERT_TRUE(results[0].status.ok()) << results[0].status.message();
    const std::vector<SampledToken>& scores = results[0].prompt_logprobs;
    ASSERT_EQ(scores.size(), prompt.size() - 1);
    for (size_t j = 0; j + 1 < exp.greedy.size(); ++j) {  // the prompt holds all but the last
      const std::vector<float>& logits = exp.step_logits[j];
      double max = logits[0], sum = 0.0;
      for (float x : logits)
        max = std::max(max, static_cast<double>(x));
      for (float x : logits)
        sum += std::exp(x - max);
      const double lse = max + std::log(sum);
      const SampledToken& s = scores[tail + j];
      EXPECT_EQ(s.token, exp.greedy[j]);
      EXPECT_NEAR(s.logprob, logits[static_cast<size_t>(exp.greedy[j])] - lse, 2 * kLogitTolerance) << j;
      ASSERT_EQ(s.top_logprobs.size(), 3u);
      EXPECT_EQ(s.top_logprobs[0].first, exp.greedy[j]) << "greedy token " << j << " is the likeliest";
      for (const auto& [id, logprob] : s.top_logprobs)
        EXPECT_NEAR(logprob, logits[static_cast<size_t>(id)] - lse, 2 * kLogitTolerance) << j << " id " << id;
    }
    // The engine samples the token after the prompt from the same logits: greedy's last token.
    EXPECT_EQ(results[0].output, std::vector<TokenId>{exp.greedy.back()});
  }
}

// Embeddings: the final hidden state at the prompt's last token, as the reference computes it,
// whole, in 3-token chunks, and again for the same prompt served from the prefix cache, next to a
// generation that is unaffected; normalized, and truncated to 16 dimensions and then normalized.
// The hidden state is what the LM head multiplies into the logits (64-wide dot products, values
// of order 1): float32 rounding leaves it well under 1e-4 from the float64 reference; 1e-3 still
// catches a wrong token, position or norm (which move values by 1e-1 or more).
TEST_P(TinyModel, EmbeddingsMatchTheReferenceWholeChunkedAndFromTheCache) {
  constexpr float kHiddenTolerance = 1e-3f;
  const Expected exp = read_expected(GetParam());
  const auto model = load(GetParam());
  ASSERT_EQ(exp.prompt_final_hidden.size(), static_cast<size_t>(model->config.hidden_size));
  const auto embed = [&](std::string id, int dimensions, bool normalize) {
    Request r = testing::make_request(std::move(id), exp.prompt, 1);
    r.embedding = {true, dimensions, normalize};
    return r;
  };
  const auto scaled = [](std::vector<float> v, size_t n) {
    v.resize(n);
    double sum = 0.0;
    for (float x : v)
      sum += static_cast<double>(x) * x;
    for (float& x : v)
      x = static_cast<float>(x / std::sqrt(sum));
    return v;
  };
  const auto expect_near = [&](const std::vector<float>& got, const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], kHiddenTolerance) << "dimension " << i;
  };
  for (int budget : {2048, 3}) {
    SCOPED_TRACE("token budget " + std::to_string(budget));
    auto engine = make_engine(model, 64, budget);
    const auto results =
        engine->generate({embed("raw", 0, false), embed("unit", 0, true), embed("mrl", 16, true),
                          testing::make_request("text", exp.prompt, 3)});
    for (const GenerationResult& r : results)
      ASSERT_TRUE(r.status.ok()) << r.status.message();
    expect_near(results[0].embedding, exp.prompt_final_hidden);
    expect_near(results[1].embedding, scaled(exp.prompt_final_hidden, exp.prompt_final_hidden.size()));
    expect_near(results[2].embedding, scaled(exp.prompt_final_hidden, 16));
    EXPECT_EQ(results[3].output, std::vector<TokenId>(exp.greedy.begin(), exp.greedy.begin() + 3));
    EXPECT_TRUE(results[3].embedding.empty());
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(results[i].finish, FinishReason::kLength);

    const auto again = engine->generate({embed("cached", 0, false)});
    EXPECT_GT(again[0].num_cached_prompt_tokens, 0);
    expect_near(again[0].embedding, exp.prompt_final_hidden);
  }
}

// The same request gives the same greedy tokens alone, in a batch of 64 mixed requests, after being
// preempted and recomputed, and with its prompt partly served from the prefix cache.
TEST_P(TinyModel, BatchInvariance) {
  const Expected exp = read_expected(GetParam());
  const auto model = load(GetParam());
  const int vocab = model->config.vocab_size;
  const int n = static_cast<int>(exp.greedy.size());
  std::mt19937 rng(1234);
  std::uniform_int_distribution<TokenId> tok(3, vocab - 1);
  std::uniform_int_distribution<int> len(1, 60), out(1, 24);
  std::vector<Request> batch;
  for (int i = 0; i < 64; ++i) {
    std::vector<TokenId> prompt;
    if (i % 4 == 0) prompt = exp.prompt;  // share the probe's prompt as a prefix
    for (int k = len(rng); k > 0; --k)
      prompt.push_back(tok(rng));
    batch.push_back(testing::make_request("mixed-" + std::to_string(i), prompt, out(rng)));
  }
  batch.insert(batch.begin() + 17, testing::make_request("probe", exp.prompt, n));

  auto roomy = make_engine(model, 1024, 256);
  const auto batched = roomy->generate(batch);
  EXPECT_EQ(batched[17].output, exp.greedy) << "in a batch of 65";
  EXPECT_GT(batched[17].num_cached_prompt_tokens, 0) << "the probe's prompt should hit the prefix cache";

  // 24 blocks of 8 tokens cannot hold the batch: requests are preempted and recomputed.
  auto tight = make_engine(model, 24, 64);
  const auto squeezed = tight->generate(batch);
  EXPECT_GT(tight->scheduler().stats().num_preemptions, 0u);
  EXPECT_EQ(squeezed[17].output, exp.greedy) << "under preemption";
  for (size_t i = 0; i < batch.size(); ++i)
    EXPECT_EQ(squeezed[i].output, batched[i].output) << batch[i].id;
  EXPECT_EQ(tight->scheduler().pool().num_free_blocks(), 24);
}

INSTANTIATE_TEST_SUITE_P(Models, TinyModel,
                         ::testing::Values("tiny-llama", "tiny-llama3-gqa", "tiny-qwen2-gqa", "tiny-qwen3",
                                           "tiny-phi3", "tiny-granite", "tiny-gemma", "tiny-gemma2",
                                           "tiny-gemma3", "tiny-qwen3-fp8", "tiny-phi3-fp8",
                                           "tiny-llama3-gqa-fp8", "tiny-mixtral", "tiny-qwen2-moe",
                                           "tiny-qwen3-moe", "tiny-qwen3-moe-fp8"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace kvserve
