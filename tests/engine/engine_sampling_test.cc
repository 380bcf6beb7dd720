// The engine with a real (tiny) model, a tokenizer and the sampler: seeded sampling is batch
// invariant, stop strings end generation without appearing in the text, min_tokens suppresses the
// stop tokens, logprobs match the reference's logits, and bad sampling values are refused. Under a
// response format (structured output) every output matches the pattern (PCRE2 the reference),
// whatever the seed, even when the model's logits are useless or the prompt has no text.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/token_constraint.h"
#include "engine/tokenizer.h"
#include "tests/engine/pcre2_reference.h"

namespace kvserve {
namespace {

using testing::Pcre2Reference;

const std::string kModelDir = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama3-gqa";

class EngineSampling : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = std::make_shared<const Model>(load_model(kModelDir));
    tokenizer_ = Tokenizer::load(kModelDir + "/tokenizer.model");
  }

  std::unique_ptr<Engine> make_engine(int num_blocks = 256, int budget = 512) {
    EngineConfig cfg;
    cfg.scheduler.block_size = 8;
    cfg.scheduler.num_blocks = num_blocks;
    cfg.scheduler.max_num_batched_tokens = budget;
    cfg.scheduler.max_model_len = 512;
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

  // The model's tokens as structured output matches them.
  static std::shared_ptr<const TokenVocabulary> vocabulary() {
    return TokenVocabulary::from_tokenizer(*tokenizer_, model_->config.vocab_size,
                                           model_->config.eos_token_ids);
  }

  static std::shared_ptr<const Model> model_;
  static std::shared_ptr<const Tokenizer> tokenizer_;
};

std::shared_ptr<const Model> EngineSampling::model_;
std::shared_ptr<const Tokenizer> EngineSampling::tokenizer_;

TEST_F(EngineSampling, SeededSamplingGivesTheSameTokensAloneBatchedAndPreempted) {
  Request probe = request("probe", "Once upon a time", 24);
  probe.sampling.temperature = 0.9f;
  probe.sampling.top_p = 0.95f;
  probe.sampling.top_k = 50;
  probe.sampling.seed = 42;
  const auto alone = make_engine()->generate({probe})[0];
  ASSERT_TRUE(alone.status.ok()) << alone.status.message();

  std::vector<Request> batch;
  std::mt19937 rng(5);
  for (int i = 0; i < 24; ++i) {
    Request r = request("other-" + std::to_string(i), "The server streams tokens " + std::to_string(i), 20);
    r.sampling.temperature = 1.0f;  // unseeded: whatever they draw must not disturb the probe
    batch.push_back(r);
  }
  batch.insert(batch.begin() + 9, probe);
  EXPECT_EQ(make_engine()->generate(batch)[9].output, alone.output);

  auto tight = make_engine(/*num_blocks=*/12, /*budget=*/32);
  const auto squeezed = tight->generate(batch);
  EXPECT_GT(tight->scheduler().stats().num_preemptions, 0u);
  EXPECT_EQ(squeezed[9].output, alone.output);

  Request other_seed = probe;
  other_seed.sampling.seed = 43;
  EXPECT_NE(make_engine()->generate({other_seed})[0].output, alone.output);
}

TEST_F(EngineSampling, StopStringEndsGenerationAndIsNotInTheText) {
  const auto free_run = make_engine()->generate({request("free", "Once upon a time", 24)})[0];
  const std::string& text = free_run.text;
  ASSERT_GE(text.size(), 8u) << text;
  // A stop string taken from the unconstrained text (three printable ASCII characters after its
  // start, so it cannot cut a UTF-8 character): the constrained run must give exactly the text
  // before its first occurrence.
  size_t at = 1;
  const auto printable = [&](size_t i) { return text[i] > ' ' && text[i] < 0x7f; };
  while (at + 3 <= text.size() && !(printable(at) && printable(at + 1) && printable(at + 2)))
    ++at;
  ASSERT_LE(at + 3, text.size()) << "no ASCII run in: " << text;
  const std::string stop = text.substr(at, 3);
  const size_t first = text.find(stop);
  Request r = request("stopped", "Once upon a time", 24);
  r.stop.stop = {stop};
  const auto result = make_engine()->generate({r})[0];
  EXPECT_EQ(result.finish, FinishReason::kStop);
  EXPECT_EQ(result.text, text.substr(0, first)) << "stop string '" << stop << "'";
  EXPECT_LT(result.output.size(), free_run.output.size());
}

TEST_F(EngineSampling, MinTokensSuppressesStopTokensUntilReached) {
  const auto free_run = make_engine()->generate({request("free", "Once upon a time", 8)})[0];
  const TokenId first = free_run.output[0];
  Request r = request("min", "Once upon a time", 8);
  r.stop.stop_token_ids = {first};
  r.stop.min_tokens = 2;
  const auto result = make_engine()->generate({r})[0];
  ASSERT_GE(result.output.size(), 2u);
  EXPECT_NE(result.output[0], first);
  EXPECT_NE(result.output[1], first);
  for (size_t i = 2; i < result.output.size(); ++i) {
    if (result.output[i] == first) {
      EXPECT_EQ(i + 1, result.output.size()) << "the stop token must end the request";
    }
  }
}

TEST_F(EngineSampling, GreedyLogprobsAreTheReferenceLogSoftmax) {
  std::ifstream in(kModelDir + "/expected.json");
  const auto expected = nlohmann::json::parse(in);
  const auto prompt = expected.at("prompt_ids").get<std::vector<TokenId>>();
  const auto logits = expected.at("step_logits").get<std::vector<std::vector<double>>>();
  Request r;
  r.id = "lp";
  r.prompt = prompt;
  r.stop.max_tokens = static_cast<int>(logits.size());
  r.stop.ignore_eos = true;
  const auto result = make_engine()->generate({r})[0];
  ASSERT_EQ(result.logprobs.size(), logits.size());
  for (size_t step = 0; step < logits.size(); ++step) {
    double max = -INFINITY, sum = 0.0;
    for (double v : logits[step])
      max = std::max(max, v);
    for (double v : logits[step])
      sum += std::exp(v - max);
    const double ref = logits[step][result.output[step]] - max - std::log(sum);
    EXPECT_NEAR(result.logprobs[step], ref, 2e-3) << "step " << step;  // the logits' own tolerance
  }
}

TEST_F(EngineSampling, InvalidSamplingValuesAreRejectedBeforeAdmission) {
  auto engine = make_engine();
  Request r = request("bad", "hi", 4);
  r.sampling.temperature = -1.0f;
  Status s = engine->add_request(r);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("temperature"), std::string::npos) << s.message();
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = NAN;
  s = engine->add_request(r);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("top_p"), std::string::npos) << s.message();
  EXPECT_FALSE(engine->has_unfinished());
}

// A model whose logits are all NaN leaves the sampler nothing to draw; under a structured-output
// mask the engine then takes the lowest allowed id, so the output still follows the pattern.
class NanBackend final : public Backend {
 public:
  std::string name() const override { return "nan"; }
  int vocab_size() const override { return 512; }
  std::span<const float> forward(const StepBatch& batch) override {
    logits_.assign(batch.logits_indices.size() * 512, NAN);
    return logits_;
  }

 private:
  std::vector<float> logits_;
};

TEST_F(EngineSampling, ARowWithNoFiniteLogitStillFollowsTheResponseFormat) {
  EngineConfig cfg;
  cfg.scheduler.block_size = 8;
  cfg.scheduler.num_blocks = 16;
  cfg.eos_token_ids = model_->config.eos_token_ids;
  cfg.tokenizer = tokenizer_;
  Engine engine(cfg, std::make_unique<NanBackend>());
  const auto vocab = vocabulary();
  std::shared_ptr<const TokenConstraint> c;
  ASSERT_TRUE(TokenConstraint::compile("(xy|z)[0-9]", vocab, ConstraintLimits{}, &c).ok());
  Request r = request("nan", "hi", 8);
  r.stop.ignore_eos = false;
  r.constraint = c;
  const GenerationResult result = engine.generate({r})[0];
  std::string text;
  for (const TokenId t : result.output)
    text += vocab->bytes(t);
  EXPECT_EQ(result.finish, FinishReason::kStop);
  EXPECT_TRUE(std::regex_match(text, std::regex("(xy|z)[0-9]"))) << text;
}

// With only BOS for a prompt, SentencePiece would drop the first output piece's leading space;
// under a response format the text must stay what the pattern matched (the tokens' bytes).
TEST_F(EngineSampling, AResponseFormatAfterAPromptWithoutTextKeepsTheFirstSpace) {
  auto engine = make_engine();
  const auto vocab = vocabulary();
  std::shared_ptr<const TokenConstraint> c;
  ASSERT_TRUE(TokenConstraint::compile(" the| to| and", vocab, ConstraintLimits{}, &c).ok());
  std::vector<Request> requests;
  for (int i = 0; i < 12; ++i) {
    Request r;
    r.id = "bos" + std::to_string(i);
    r.prompt = {*tokenizer_->bos_id()};
    r.sampling.temperature = 1.0f;
    r.sampling.seed = i;
    r.stop.max_tokens = 8;
    r.constraint = c;
    requests.push_back(std::move(r));
  }
  for (const GenerationResult& res : engine->generate(std::move(requests))) {
    EXPECT_EQ(res.finish, FinishReason::kStop) << res.id;
    EXPECT_TRUE(res.text == " the" || res.text == " to" || res.text == " and")
        << res.id << ": '" << res.text << "'";
  }
}

// The whole engine, on a real (tiny, random-weight) model: whatever the seed, an output that ends
// with EOS matches the pattern, and one cut by max_tokens is a prefix of a match.
TEST_F(EngineSampling, EveryOutputUnderAResponseFormatMatchesThePattern) {
  auto engine = make_engine();
  const auto vocab = vocabulary();

  const std::vector<std::string> patterns = {
      " ?(yes|no|maybe)",
      "[A-Z][a-z]{1,8}( [a-z]{1,8}){0,3}\\.",
      R"(\{"name":[ ]?"[a-zA-Z ]{1,12}",[ ]?"age":[ ]?(0|[1-9][0-9]{0,2})\})",
  };
  int stopped = 0;
  for (const std::string& pattern : patterns) {
    SCOPED_TRACE(pattern);
    std::shared_ptr<const TokenConstraint> c;
    const Status cs = TokenConstraint::compile(pattern, vocab, ConstraintLimits{}, &c);
    ASSERT_TRUE(cs.ok()) << cs.message();
    const Pcre2Reference ref(pattern, Pcre2Reference::utf_alt_bsux());
    EXPECT_TRUE(ref.ok()) << ref.error();
    std::vector<Request> requests;
    for (int i = 0; i < 16; ++i) {
      Request r;
      r.id = "r" + std::to_string(i);
      r.prompt = tokenizer_->encode("Answer:", true);
      r.sampling.temperature = i == 0 ? 0.0f : 1.0f;  // greedy once, then draws
      r.sampling.seed = 100 + i;
      r.stop.max_tokens = 60;
      r.constraint = c;
      requests.push_back(std::move(r));
    }
    for (const GenerationResult& res : engine->generate(std::move(requests))) {
      ASSERT_TRUE(res.status.ok()) << res.status.message();
      std::string text;
      for (const TokenId t : res.output)
        text += vocab->bytes(t);
      if (res.finish == FinishReason::kStop) {
        ++stopped;
        EXPECT_TRUE(ref.matches(text)) << res.id << ": '" << text << "'";
        EXPECT_EQ(res.text, text);  // the detokenizer's text is the same bytes
      } else {
        EXPECT_EQ(res.finish, FinishReason::kLength);
        EXPECT_TRUE(ref.viable_prefix(text)) << res.id << ": '" << text << "'";
      }
    }
  }
  EXPECT_GT(stopped, 24);  // most outputs complete well within 60 tokens
  EXPECT_FALSE(engine->has_unfinished());
}

TEST_F(EngineSampling, StopRulesThatHoldBackEosAreRefusedWithAResponseFormat) {
  auto engine = make_engine();
  std::shared_ptr<const TokenConstraint> c;
  ASSERT_TRUE(TokenConstraint::compile("[a-z]+", vocabulary(), ConstraintLimits{}, &c).ok());
  Request r;
  r.id = "a";
  r.prompt = {1, 5};
  r.constraint = c;
  r.stop.ignore_eos = true;
  Status s = engine->add_request(r);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("stop.ignore_eos"), std::string::npos) << s.message();
  r.stop.ignore_eos = false;
  r.stop.min_tokens = 3;
  s = engine->add_request(r);
  EXPECT_NE(s.message().find("stop.min_tokens"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kvserve
