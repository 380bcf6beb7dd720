// Speculative decoding by prompt lookup, through the whole engine on a real (tiny, random-weight)
// model: with drafts, every request produces exactly the tokens, text, finish reason and logprobs
// it produces without them, under every sampling rule (greedy and seeded draws, penalties, logit
// bias, min_tokens, stop ids and strings, a response format), batched, preempted and prefix-cached;
// and drafts are actually taken. Exact equality is the right bar because every token is drawn at its
// own output index with the same counter-based draw (engine/sampler.h), and the CPU backend's rows do
// not depend on the rest of the batch (the batch invariance tests of engine_sampling_test.cc); the
// logprobs may differ by float32 rounding between a one-token and a several-token pass (1e-4).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/token_constraint.h"
#include "engine/tokenizer.h"

namespace kvserve {
namespace {

const std::string kModelDir = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama3-gqa";

class SpeculativeDecoding : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = std::make_shared<const Model>(load_model(kModelDir));
    tokenizer_ = Tokenizer::load(kModelDir + "/tokenizer.model");
  }

  static std::unique_ptr<Engine> make_engine(int draft_tokens, int num_blocks = 256, int budget = 512) {
    EngineConfig cfg;
    cfg.scheduler.block_size = 8;
    cfg.scheduler.num_blocks = num_blocks;
    cfg.scheduler.max_num_batched_tokens = budget;
    cfg.scheduler.max_model_len = 512;
    cfg.scheduler.speculative = {.max_draft_tokens = draft_tokens, .min_ngram = 1, .max_ngram = 3};
    cfg.eos_token_ids = model_->config.eos_token_ids;
    cfg.tokenizer = tokenizer_;
    return std::make_unique<Engine>(
        cfg, std::make_unique<CpuBackend>(model_, num_blocks, cfg.scheduler.block_size));
  }

  static Request request(std::string id, const std::string& text, int max_tokens) {
    Request r;
    r.id = std::move(id);
    r.prompt = tokenizer_->encode(text, /*add_bos=*/true);
    r.stop.max_tokens = max_tokens;
    r.stop.ignore_eos = true;
    return r;
  }

  // Requests under every sampling rule, with prompts that repeat themselves (so that prompt lookup
  // finds drafts from the first step) and ones that do not.
  static std::vector<Request> mixed_requests() {
    std::vector<Request> rs;
    const std::vector<std::string> texts = {
        "one two three four, one two three four, one two three",
        "The server streams tokens. The server streams tokens. The server",
        "Once upon a time",
        "a b a b a b a b a b",
    };
    for (int i = 0; i < 16; ++i) {
      Request r = request("r" + std::to_string(i), texts[i % texts.size()], 20 + i % 5 * 6);
      switch (i % 8) {
        case 0:  // greedy
          break;
        case 1:  // seeded draws, with top-k / top-p
          r.sampling.temperature = 0.8f;
          r.sampling.top_k = 40;
          r.sampling.top_p = 0.9f;
          r.sampling.seed = 7u + i;
          break;
        case 2:  // penalties see the output so far, draft tokens included as they are accepted
          r.sampling.temperature = 0.7f;
          r.sampling.repetition_penalty = 1.3f;
          r.sampling.presence_penalty = 0.5f;
          r.sampling.frequency_penalty = 0.4f;
          r.sampling.seed = 11u + i;
          break;
        case 3:  // logprobs and alternatives of every token
          r.sampling.top_logprobs = 3;
          r.sampling.logit_bias = {{tokenizer_->encode("two", false).back(), 3.0f}};
          break;
        case 4:  // EOS and stop ids held back until min_tokens, then allowed
          r.stop.ignore_eos = false;
          r.stop.min_tokens = 5;
          r.stop.stop_token_ids = {tokenizer_->encode("three", false).back()};
          r.sampling.temperature = 1.0f;
          r.sampling.seed = 3u + i;
          break;
        case 5:  // a stop string, which may end the output in the middle of a step's tokens
          r.stop.stop = {" two", "ab"};
          break;
        case 6:
          r.sampling.temperature = 1.2f;
          r.sampling.min_p = 0.05f;
          r.sampling.seed = 5u + i;
          break;
        case 7:
          r.stop.max_tokens = 1;  // no room for a draft at all
          break;
      }
      rs.push_back(std::move(r));
    }
    return rs;
  }

  // same_pool: both engines had the same pool, so the same prefix-cache hits.
  static void expect_same(const std::vector<GenerationResult>& with,
                          const std::vector<GenerationResult>& without, bool same_pool = true) {
    ASSERT_EQ(with.size(), without.size());
    for (size_t i = 0; i < with.size(); ++i) {
      SCOPED_TRACE(without[i].id);
      ASSERT_TRUE(with[i].status.ok()) << with[i].status.message();
      EXPECT_EQ(with[i].output, without[i].output);
      EXPECT_EQ(with[i].text, without[i].text);
      EXPECT_EQ(with[i].finish, without[i].finish);
      if (same_pool) {
        EXPECT_EQ(with[i].num_cached_prompt_tokens, without[i].num_cached_prompt_tokens);
      }
      ASSERT_EQ(with[i].logprobs.size(), without[i].logprobs.size());
      for (size_t j = 0; j < with[i].logprobs.size(); ++j)
        EXPECT_NEAR(with[i].logprobs[j], without[i].logprobs[j], 1e-4) << "token " << j;
    }
  }

  static std::shared_ptr<const Model> model_;
  static std::shared_ptr<const Tokenizer> tokenizer_;
};

std::shared_ptr<const Model> SpeculativeDecoding::model_;
std::shared_ptr<const Tokenizer> SpeculativeDecoding::tokenizer_;

TEST_F(SpeculativeDecoding, EveryRequestGetsTheTokensItGetsWithoutDrafts) {
  const auto without = make_engine(0)->generate(mixed_requests());
  for (const int drafts : {1, 3, 8}) {
    SCOPED_TRACE("num_speculative_tokens " + std::to_string(drafts));
    auto engine = make_engine(drafts);
    expect_same(engine->generate(mixed_requests()), without);
    const SchedulerStats stats = engine->scheduler().stats();
    EXPECT_GT(stats.num_accepted_draft_tokens, 20u);  // drafts were right often enough to matter
    EXPECT_GT(stats.num_draft_tokens, stats.num_accepted_draft_tokens);  // and wrong sometimes
    EXPECT_EQ(stats.num_free_blocks, stats.num_total_blocks);            // no block leaked
    std::printf("drafts %d: %llu draft tokens, %llu accepted, %llu steps\n", drafts,
                static_cast<unsigned long long>(stats.num_draft_tokens),
                static_cast<unsigned long long>(stats.num_accepted_draft_tokens),
                static_cast<unsigned long long>(engine->num_steps()));
  }
}

TEST_F(SpeculativeDecoding, TakesFewerStepsForOutputThatRepeatsItsPrompt) {
  // Greedy decoding of this random model falls into loops, which prompt lookup predicts.
  std::vector<Request> rs;
  for (int i = 0; i < 4; ++i)
    rs.push_back(request("loop" + std::to_string(i), "a b a b a b a b a b a b", 64));
  auto plain = make_engine(0);
  auto spec = make_engine(4);
  expect_same(spec->generate(rs), plain->generate(rs));
  // 64 tokens each take 64 steps without drafts; with them, about 49 (the model is deterministic,
  // so this does not vary from run to run).
  std::printf("%llu steps with drafts, %llu without\n", static_cast<unsigned long long>(spec->num_steps()),
              static_cast<unsigned long long>(plain->num_steps()));
  EXPECT_LT(spec->num_steps() * 20, plain->num_steps() * 17)
      << spec->num_steps() << " steps with drafts, " << plain->num_steps() << " without";
}

TEST_F(SpeculativeDecoding, PreemptedAndPrefixCachedRequestsGetTheSameTokens) {
  const auto without = make_engine(0)->generate(mixed_requests());
  // A pool of 12 blocks and a budget of 24 tokens: requests are preempted and recomputed, and
  // drafts must fit what the real tokens leave.
  auto tight = make_engine(4, /*num_blocks=*/12, /*budget=*/24);
  expect_same(tight->generate(mixed_requests()), without, /*same_pool=*/false);
  EXPECT_GT(tight->scheduler().stats().num_preemptions, 0u);
  EXPECT_GT(tight->scheduler().stats().num_accepted_draft_tokens, 0u);

  // A follow-up turn that repeats a finished request's prompt and output: the blocks the drafts
  // filled (accepted tokens) are in the prefix cache like any other.
  auto plain = make_engine(0);
  auto spec = make_engine(4);
  Request first = request("first", "one two three four, one two three four, one two three", 48);
  const auto plain_first = plain->generate({first});
  const auto spec_first = spec->generate({first});
  expect_same(spec_first, plain_first);
  Request second = first;
  second.id = "second";
  second.prompt.insert(second.prompt.end(), plain_first[0].output.begin(), plain_first[0].output.end());
  second.stop.max_tokens = 16;
  const auto plain_second = plain->generate({second});
  const auto spec_second = spec->generate({second});
  expect_same(spec_second, plain_second);
  EXPECT_GE(spec_second[0].num_cached_prompt_tokens, 48);
}

TEST_F(SpeculativeDecoding, EveryOutputUnderAResponseFormatIsTheOneWithoutDrafts) {
  const auto vocab =
      TokenVocabulary::from_tokenizer(*tokenizer_, model_->config.vocab_size, model_->config.eos_token_ids);
  std::shared_ptr<const TokenConstraint> c;
  const std::string pattern = R"((ab|a b ){2,6}(yes|no)\.)";
  ASSERT_TRUE(TokenConstraint::compile(pattern, vocab, ConstraintLimits{}, &c).ok());
  std::vector<Request> rs;
  for (int i = 0; i < 8; ++i) {
    Request r;
    r.id = "c" + std::to_string(i);
    r.prompt = tokenizer_->encode("a b a b ab ab yes. a b a b", true);
    r.sampling.temperature = i == 0 ? 0.0f : 1.0f;
    r.sampling.seed = 40 + i;
    r.stop.max_tokens = 40;
    r.constraint = c;
    rs.push_back(std::move(r));
  }
  auto spec = make_engine(5);
  expect_same(spec->generate(rs), make_engine(0)->generate(rs));
  EXPECT_GT(spec->scheduler().stats().num_draft_tokens, 0u);
}

TEST(SpeculativeDecodingConfig, RefusesOutOfRangeSettings) {
  SchedulerConfig c;
  c.speculative.max_draft_tokens = kMaxDraftTokens + 1;
  EXPECT_NE(c.validate().message().find("num_speculative_tokens"), std::string::npos);
  c.speculative.max_draft_tokens = -1;
  EXPECT_FALSE(c.validate().ok());
  c.speculative = {.max_draft_tokens = 4, .min_ngram = 3, .max_ngram = 2};
  EXPECT_NE(c.validate().message().find("prompt_lookup_min and prompt_lookup_max"), std::string::npos);
  c.speculative = {.max_draft_tokens = 4, .min_ngram = 0, .max_ngram = 2};
  EXPECT_FALSE(c.validate().ok());
  c.speculative = {.max_draft_tokens = 4, .min_ngram = 1, .max_ngram = kMaxNgram + 1};
  EXPECT_FALSE(c.validate().ok());
  c.speculative = {.max_draft_tokens = 0, .min_ngram = 0, .max_ngram = 0};  // off: not read
  EXPECT_TRUE(c.validate().ok());
}

}  // namespace
}  // namespace kvserve
