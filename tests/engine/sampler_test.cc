#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace kvserve {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
using Ids = std::vector<TokenId>;

// ---- Independent reference: plain double arithmetic, full sorts, std containers.

std::vector<double> ref_penalized(const std::vector<float>& logits, const SamplingParams& p,
                                  const Ids& prompt, const Ids& output, const Ids& suppressed) {
  std::vector<double> x(logits.begin(), logits.end());
  const auto in = [&](TokenId t) { return t >= 0 && t < static_cast<TokenId>(x.size()); };
  for (TokenId t : suppressed) {
    if (in(t)) x[t] = -kInf;
  }
  for (const auto& [t, bias] : p.logit_bias) {
    if (in(t) && x[t] != -kInf) x[t] = x[t] + bias;
  }
  std::set<TokenId> seen(prompt.begin(), prompt.end());
  seen.insert(output.begin(), output.end());
  for (TokenId t : seen) {
    if (in(t)) x[t] = x[t] > 0 ? x[t] / p.repetition_penalty : x[t] * p.repetition_penalty;
  }
  std::map<TokenId, int> count;
  for (TokenId t : output)
    ++count[t];
  for (auto [t, c] : count) {
    if (in(t)) x[t] = x[t] - p.presence_penalty - static_cast<double>(p.frequency_penalty) * c;
  }
  return x;
}

struct Dist {
  Ids ids;  // the support, most likely first, ties by lower id
  std::vector<double> probs;
};

void renormalize(Dist& d) {
  double z = 0;
  for (double q : d.probs)
    z += q;
  for (double& q : d.probs)
    q /= z;
}

void keep(Dist& d, size_t n) {
  d.ids.resize(n);
  d.probs.resize(n);
  renormalize(d);
}

Dist ref_distribution(const std::vector<double>& x, const SamplingParams& p) {
  Dist d;
  if (p.temperature == 0) {
    d.ids = {static_cast<TokenId>(std::max_element(x.begin(), x.end()) - x.begin())};
    d.probs = {1.0};
    return d;
  }
  double zmax = -kInf;
  for (double v : x)
    zmax = std::max(zmax, v / p.temperature);
  std::vector<std::pair<double, TokenId>> e;
  for (size_t i = 0; i < x.size(); ++i) {
    const double z = x[i] / p.temperature;
    const double w = zmax == kInf ? (z == kInf ? 1.0 : 0.0) : std::exp(z - zmax);
    if (w > 0) e.emplace_back(w, static_cast<TokenId>(i));
  }
  std::sort(e.begin(), e.end(),
            [](auto a, auto b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  for (auto [w, id] : e)
    d.ids.push_back(id), d.probs.push_back(w);
  renormalize(d);
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < d.ids.size()) keep(d, p.top_k);
  if (p.top_p < 1) {
    double cum = 0;
    for (size_t i = 0; i < d.probs.size(); ++i) {
      cum += d.probs[i];
      if (cum >= p.top_p) {
        keep(d, i + 1);
        break;
      }
    }
  }
  size_t n = 0;
  while (n < d.probs.size() && d.probs[n] >= p.min_p * d.probs[0])
    ++n;
  keep(d, n);
  return d;
}

TokenId ref_draw(const Dist& d, double u) {
  double cum = 0;
  for (size_t i = 0; i < d.ids.size(); ++i) {
    cum += d.probs[i];
    if (u < cum) return d.ids[i];
  }
  return d.ids.back();
}

std::vector<double> ref_log_softmax(const std::vector<float>& logits) {
  double m = -kInf, s = 0;
  for (float v : logits)
    m = std::max(m, static_cast<double>(v));
  for (float v : logits)
    s += std::exp(v - m);
  std::vector<double> out;
  for (float v : logits)
    out.push_back(v - m - std::log(s));
  return out;
}

SampledToken draw(Sampler& s, const std::vector<float>& logits, const SamplingParams& p, uint64_t seed,
                  const Ids& prompt = {}, const Ids& output = {}, const Ids& suppressed = {}) {
  return s.sample({logits, &p, prompt, output, seed, suppressed, {}});
}

SamplingParams params(float temperature, int top_k = 0, float top_p = 1, float min_p = 0) {
  SamplingParams p;
  p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;
  return p;
}

// Eight tokens with known probabilities at temperature 1, stored out of id order so that
// "most likely first" differs from "lowest id first".
const std::vector<double> kProbs{0.10, 0.30, 0.02, 0.15, 0.20, 0.07, 0.12, 0.04};
std::vector<float> known_logits() {
  std::vector<float> l;
  for (double q : kProbs)
    l.push_back(static_cast<float>(std::log(q) + 2.0));
  return l;
}

// Draws 20000 seeded tokens and checks them against the reference distribution: exactly its
// support is drawn, and each frequency is within 5 sigma of the binomial(N, p) it should follow.
// Every support probability here is >= 0.002, so missing one has probability 0.998^20000 < 1e-17;
// a 5-sigma miss has probability < 1e-6 per token under the normal approximation (N p >= 40). The
// seeds are fixed, so the outcome is deterministic; the bound says a correct sampler is not
// expected to fail, and a distribution off by more than ~0.015 absolute cannot pass.
void expect_distribution(const std::vector<float>& logits, const SamplingParams& p, const Ids& prompt = {},
                         const Ids& output = {}, const Ids& suppressed = {}) {
  const Dist d = ref_distribution(ref_penalized(logits, p, prompt, output, suppressed), p);
  constexpr int kN = 20000;
  std::map<TokenId, int> counts;
  Sampler s;
  for (uint64_t seed = 0; seed < kN; ++seed)
    ++counts[draw(s, logits, p, seed, prompt, output, suppressed).token];
  std::set<TokenId> drawn, support(d.ids.begin(), d.ids.end());
  for (auto [t, c] : counts)
    drawn.insert(t);
  EXPECT_EQ(drawn, support);
  for (size_t i = 0; i < d.ids.size(); ++i) {
    ASSERT_GE(d.probs[i], 0.002) << "test design: support token too rare to check";
    const double f = static_cast<double>(counts[d.ids[i]]) / kN;
    EXPECT_NEAR(f, d.probs[i], 5 * std::sqrt(d.probs[i] * (1 - d.probs[i]) / kN)) << "token " << d.ids[i];
  }
}

// ---- Validation

template <typename T>
SamplingParams with(T SamplingParams::*field, T value) {
  SamplingParams p;
  p.*field = value;
  return p;
}
using SP = SamplingParams;

TEST(SamplerValidation, AcceptsTheDefaultsAndEveryBoundary) {
  for (const SamplingParams& p :
       {SP{}, with(&SP::temperature, 1e-30f), with(&SP::temperature, 100.0f), with(&SP::top_k, 1),
        with(&SP::top_k, 1 << 30), with(&SP::top_p, 1e-6f), with(&SP::min_p, 1.0f),
        with(&SP::repetition_penalty, 1e-3f), with(&SP::repetition_penalty, 10.0f),
        with(&SP::presence_penalty, -2.0f), with(&SP::presence_penalty, 2.0f),
        with(&SP::frequency_penalty, -2.0f), with(&SP::frequency_penalty, 2.0f),
        with(&SP::top_logprobs, kMaxTopLogprobs)}) {
    EXPECT_TRUE(validate_sampling_params(p).ok()) << validate_sampling_params(p).message();
  }
  SamplingParams biased;
  for (int i = 0; i < kMaxLogitBias; ++i)
    biased.logit_bias.emplace_back(i, i % 2 ? 100.0f : -100.0f);
  EXPECT_TRUE(validate_sampling_params(biased).ok()) << validate_sampling_params(biased).message();
}

TEST(SamplerValidation, RejectsEachBadFieldNamingValueAndRange) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::string temp = "temperature must be a finite number >= 0 (0 = greedy), got ";
  const std::string rep = "repetition_penalty must be a finite number > 0 (1 = off), got ";
  const std::vector<std::pair<SamplingParams, std::string>> bad{
      {with(&SP::temperature, -1.0f), temp + "-1"},
      {with(&SP::temperature, kNan), temp + "nan"},
      {with(&SP::temperature, -kNan), temp + "nan"},
      {with(&SP::temperature, inf), temp + "inf"},
      {with(&SP::top_k, -1), "top_k must be >= 0 (0 = no limit), got -1"},
      {with(&SP::top_p, 1.5f), "top_p must be in (0, 1], got 1.5"},
      {with(&SP::top_p, 0.0f), "top_p must be in (0, 1], got 0"},
      {with(&SP::top_p, -0.1f), "top_p must be in (0, 1], got -0.1"},
      {with(&SP::top_p, kNan), "top_p must be in (0, 1], got nan"},
      {with(&SP::min_p, -0.1f), "min_p must be in [0, 1], got -0.1"},
      {with(&SP::min_p, 1.5f), "min_p must be in [0, 1], got 1.5"},
      {with(&SP::min_p, kNan), "min_p must be in [0, 1], got nan"},
      {with(&SP::repetition_penalty, 0.0f), rep + "0"},
      {with(&SP::repetition_penalty, -1.0f), rep + "-1"},
      {with(&SP::repetition_penalty, kNan), rep + "nan"},
      {with(&SP::repetition_penalty, inf), rep + "inf"},
      {with(&SP::presence_penalty, 2.5f), "presence_penalty must be in [-2, 2], got 2.5"},
      {with(&SP::presence_penalty, -3.0f), "presence_penalty must be in [-2, 2], got -3"},
      {with(&SP::presence_penalty, kNan), "presence_penalty must be in [-2, 2], got nan"},
      {with(&SP::presence_penalty, -inf), "presence_penalty must be in [-2, 2], got -inf"},
      {with(&SP::frequency_penalty, 2.5f), "frequency_penalty must be in [-2, 2], got 2.5"},
      {with(&SP::frequency_penalty, kNan), "frequency_penalty must be in [-2, 2], got nan"},
      {with(&SP::top_logprobs, -1), "top_logprobs must be in [0, 20], got -1"},
      {with(&SP::top_logprobs, 21), "top_logprobs must be in [0, 20], got 21"},
  };
  for (const auto& [p, msg] : bad) {
    const Status st = validate_sampling_params(p);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << msg;
    EXPECT_EQ(st.message(), msg);
  }
  using Bias = std::vector<std::pair<TokenId, float>>;
  const std::vector<std::pair<Bias, std::string>> bad_bias{
      {{{7, 100.5f}}, "logit_bias[7] must be in [-100, 100], got 100.5"},
      {{{3, 1.0f}, {7, -101.0f}}, "logit_bias[7] must be in [-100, 100], got -101"},
      {{{7, kNan}}, "logit_bias[7] must be in [-100, 100], got nan"},
      {{{7, inf}}, "logit_bias[7] must be in [-100, 100], got inf"},
      {{{9, 1.0f}, {4, 2.0f}, {9, 3.0f}}, "logit_bias names token 9 twice"},
      {Bias(kMaxLogitBias + 1, {0, 0.0f}), "logit_bias has 1025 entries, at most 1024 allowed"},
  };
  for (const auto& [bias, msg] : bad_bias) {
    SamplingParams p;
    p.logit_bias = bias;
    const Status st = validate_sampling_params(p);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << msg;
    EXPECT_EQ(st.message(), msg);
  }
}

// ---- Greedy and penalties

TEST(SamplerGreedy, PicksTheArgmaxAndTheLowestIdOnTies) {
  Sampler s;
  EXPECT_EQ(draw(s, {0.5f, 2.0f, -1.0f, 2.0f}, params(0), 7).token, 1);
  EXPECT_EQ(draw(s, {-3.0f, -2.0f, -2.5f}, params(0), 7).token, 1);
  // NaN (a broken row) never wins; +inf does.
  EXPECT_EQ(draw(s, {kNan, 0.0f, 1.0f}, params(0), 7).token, 2);
  EXPECT_EQ(draw(s, {0.0f, std::numeric_limits<float>::infinity(), 1.0f}, params(0), 7).token, 1);
}

// Whether the penalized logit of token 0 equals `expected` exactly, found with greedy picks against
// a probe token that holds `expected`: the lower id wins a tie, so the probe placed after the
// target shows penalized >= expected, and placed before it shows penalized <= expected.
void expect_penalized(float logit, int in_prompt, int in_output, const SamplingParams& base, float expected) {
  SamplingParams p = base;
  p.temperature = 0;
  for (int probe_first = 0; probe_first < 2; ++probe_first) {
    const TokenId target = probe_first ? 1 : 0, probe = probe_first ? 0 : 1;
    std::vector<float> logits(5, -1e30f);
    logits[target] = logit, logits[probe] = expected;
    Ids prompt{3, 4}, output{4, 3, 4};  // other tokens, which must not change the target
    for (int i = 0; i < in_prompt; ++i)
      prompt.insert(prompt.begin() + 1, target);
    for (int i = 0; i < in_output; ++i)
      output.insert(output.begin() + 1, target);
    Sampler s;
    EXPECT_EQ(draw(s, logits, p, 0, prompt, output).token, probe_first ? probe : target)
        << "logit " << logit << " prompt x" << in_prompt << " output x" << in_output << ": expected "
        << expected;
  }
}

TEST(SamplerPenalties, RepetitionDividesPositiveAndMultipliesNegativeOncePerToken) {
  SamplingParams p;
  p.repetition_penalty = 2;
  expect_penalized(3, 1, 0, p, 1.5f);
  expect_penalized(3, 0, 1, p, 1.5f);
  expect_penalized(3, 3, 4, p, 1.5f);  // counted once, however often and wherever it occurs
  expect_penalized(-1.5f, 0, 2, p, -3);
  expect_penalized(-1.5f, 2, 0, p, -3);
  expect_penalized(0, 1, 1, p, 0);
  expect_penalized(3, 0, 0, p, 3);
  p.repetition_penalty = 0.5f;  // < 1 encourages repetition
  expect_penalized(3, 1, 0, p, 6);
}

TEST(SamplerPenalties, PresenceAndFrequencyUseOutputCountsOnly) {
  SamplingParams p;
  p.presence_penalty = 0.5f, p.frequency_penalty = 0.25f;
  expect_penalized(1, 0, 1, p, 0.25f);
  expect_penalized(1, 0, 2, p, 0);
  expect_penalized(1, 0, 4, p, -0.5f);
  expect_penalized(1, 5, 0, p, 1);  // the prompt does not count
  expect_penalized(1, 5, 2, p, 0);
  p.presence_penalty = -1, p.frequency_penalty = -0.5f;
  expect_penalized(1, 0, 2, p, 3);
}

TEST(SamplerPenalties, RepetitionComesBeforePresenceAndFrequency) {
  SamplingParams p;
  p.repetition_penalty = 2, p.presence_penalty = 0.5f, p.frequency_penalty = 0.25f;
  expect_penalized(3, 1, 2, p, 0.5f);  // 3 / 2 - (0.5 + 0.25 * 2); the other order gives 1
  expect_penalized(-1, 0, 2, p, -3);   // -1 * 2 - 1
}

TEST(SamplerPenalties, GreedyMatchesTheReferenceOnRandomRows) {
  for (uint64_t seed = 1; seed <= 400; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::uniform_real_distribution<float> uni(0.0f, 1.0f);
    std::vector<float> logits(1000);
    for (auto& v : logits)
      v = normal(rng);
    Ids prompt(rng() % 50), output(rng() % 50), suppressed(rng() % 5);
    for (auto* ids : {&prompt, &output, &suppressed}) {
      for (auto& t : *ids)
        t = static_cast<TokenId>(rng() % 120);  // small range: many repeats
    }
    SamplingParams p;
    p.repetition_penalty = 0.5f + 2 * uni(rng), p.presence_penalty = 4 * uni(rng) - 2;
    p.frequency_penalty = 4 * uni(rng) - 2;
    for (int b = static_cast<int>(rng() % 8); b > 0; --b)  // ids may repeat the penalized ones
      p.logit_bias.emplace_back(static_cast<TokenId>(b * 13 + rng() % 13), 20 * uni(rng) - 10);
    const Dist d = ref_distribution(ref_penalized(logits, p, prompt, output, suppressed), p);
    Sampler s;
    ASSERT_EQ(draw(s, logits, p, seed, prompt, output, suppressed).token, d.ids[0]);
  }
}

TEST(SamplerSuppression, SuppressedTokensAreNeverChosen) {
  Sampler s;
  const std::vector<float> logits{0.5f, 2.0f, -1.0f, 1.9f};
  EXPECT_EQ(draw(s, logits, params(0), 1, {}, {}, {1}).token, 3);
  EXPECT_EQ(draw(s, logits, params(0), 1, {}, {}, {1, 3, -4, 99}).token, 0);  // out-of-range ids ignored
  expect_distribution(known_logits(), params(1), {}, {}, {1, 4});
  // With nothing left the sampler still answers with a token of the vocabulary (the lowest id).
  EXPECT_EQ(draw(s, logits, params(1), 1, {}, {}, {0, 1, 2, 3}).token, 0);
}

// ---- The structured-output mask: an id outside it is exactly a suppressed id.

TEST(SamplerMask, DrawsAsTheReferenceDoesWithEveryIdOutsideTheMaskSuppressed) {
  std::mt19937_64 rng(23);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  const size_t vocab = 3000;
  std::vector<float> row(vocab);
  for (float& x : row)
    x = normal(rng);
  const std::vector<float> lp = [&] {
    std::vector<float> out;
    for (double v : ref_log_softmax(row))
      out.push_back(static_cast<float>(v));
    return out;
  }();
  Sampler s;
  // Sparse (a few ids), dense (most ids), without the argmax, and shorter than the vocabulary
  // (the ids past its end are not allowed).
  for (const double density : {0.002, 0.3, 0.97}) {
    for (const size_t words : {vocab / 32 + 1, vocab / 64}) {
      std::vector<uint32_t> mask(words, 0u);
      Ids outside;
      for (size_t id = 0; id < vocab; ++id) {
        const bool allowed = id / 32 < words && std::bernoulli_distribution(density)(rng);
        if (allowed)
          mask[id / 32] |= 1u << (id % 32);
        else
          outside.push_back(static_cast<TokenId>(id));
      }
      if (outside.size() == vocab) {
        mask[0] |= 1u << 5;  // keep at least one id
        std::erase(outside, 5);
      }
      for (const SamplingParams& p :
           {params(0), params(1), params(0.8f, 40, 0.9f), params(1.2f, 0, 1, 0.05f)}) {
        const Dist d = ref_distribution(ref_penalized(row, p, {}, {}, outside), p);
        for (uint64_t seed = 0; seed < 40; ++seed) {
          const Ids output(seed % 5, 7);
          const SampledToken got = s.sample({row, &p, {}, output, seed, {}, mask});
          ASSERT_TRUE(token_allowed(mask, got.token)) << got.token;
          if (p.temperature == 0.0f) {
            TokenId best = -1;
            for (size_t id = 0; id < vocab; ++id)
              if (token_allowed(mask, static_cast<TokenId>(id)) &&
                  (best < 0 || row[id] > row[static_cast<size_t>(best)]))
                best = static_cast<TokenId>(id);
            ASSERT_EQ(got.token, best);
          } else {
            ASSERT_EQ(got.token, ref_draw(d, sample_uniform(seed, output.size()))) << "seed " << seed;
          }
          ASSERT_NEAR(got.logprob, lp[static_cast<size_t>(got.token)], 1e-5)
              << "the logprob is the model's own";
        }
      }
    }
  }
}

// ---- Logit bias: added after suppression, before the penalties; the logprobs stay raw.

TEST(SamplerLogitBias, MovesBansAndForcesTokensButNeverRevivesASuppressedOne) {
  Sampler s;
  const std::vector<float> logits{0.5f, 2.0f, -1.0f, 1.9f};
  SamplingParams p = params(0);
  p.logit_bias = {{1, -0.2f}};  // 1.8 < 1.9
  EXPECT_EQ(draw(s, logits, p, 1).token, 3);
  p.logit_bias = {{1, -100.0f}, {2, 3.4f}};  // 2.4 beats 1.9
  EXPECT_EQ(draw(s, logits, p, 1).token, 2);
  p.logit_bias = {{0, 100.0f}};
  const SampledToken forced = draw(s, logits, p, 1);
  EXPECT_EQ(forced.token, 0);
  EXPECT_NEAR(forced.logprob, ref_log_softmax(logits)[0], 1e-6) << "the logprob is the model's own";
  EXPECT_EQ(draw(s, logits, p, 1, {}, {}, {0}).token, 1) << "a suppressed token stays suppressed";
  // +100 leaves every other token e^-98 or less as likely: sampling picks the forced one too.
  p.temperature = 1.0f;
  for (uint64_t seed = 0; seed < 200; ++seed)
    ASSERT_EQ(draw(s, logits, p, seed).token, 0) << "seed " << seed;
}

TEST(SamplerLogitBias, ShapesTheDistributionAsTheReferenceDoes) {
  SamplingParams p = params(1);
  p.logit_bias = {{1, -1.5f}, {2, 2.0f}, {5, 0.5f}};
  expect_distribution(known_logits(), p);
  p = params(0.8f, 0, 0.9f);
  p.logit_bias = {{4, 1.0f}, {6, -0.7f}};
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.4f;
  expect_distribution(known_logits(), p, {4, 1}, {6, 6, 0}, {3});
}

// ---- Sampling distributions

TEST(SamplerDistribution, TemperatureScalesTheLogits) {
  expect_distribution(known_logits(), params(1));
  expect_distribution(known_logits(), params(0.5f));
  expect_distribution(known_logits(), params(2));
}

TEST(SamplerDistribution, TopKKeepsTheKMostLikely) {
  expect_distribution(known_logits(), params(1, 3));
  expect_distribution(known_logits(), params(0.7f, 5));
  expect_distribution({1, 3, 3, 2}, params(1, 1));      // tie for the top: the lower id
  expect_distribution({1, 1, 1, 0}, params(1, 2));      // three-way tie: the two lowest ids
  expect_distribution(known_logits(), params(1, 100));  // more than the vocabulary: off
}

TEST(SamplerDistribution, TopPKeepsTheSmallestSetReachingP) {
  expect_distribution(known_logits(), params(1, 0, 0.6f));      // 0.30 + 0.20 + 0.15
  expect_distribution(known_logits(), params(1, 0, 0.25f));     // the top token alone
  expect_distribution(known_logits(), params(1.5f, 0, 0.85f));  // six tokens; cum 0.81 then 0.90
}

TEST(SamplerDistribution, MinPDropsTokensBelowAFractionOfTheMax) {
  expect_distribution(known_logits(), params(1, 0, 1, 0.3f));  // keeps p >= 0.09
  expect_distribution(known_logits(), params(0.8f, 0, 1, 0.05f));
}

TEST(SamplerDistribution, FiltersComposeInOrder) {
  // top-k 5 renormalizes to 0.345, 0.23, 0.172, 0.138, 0.115; top-p 0.8 keeps four of them;
  // min-p 0.45 then keeps the three at or above 0.155.
  expect_distribution(known_logits(), params(1, 5, 0.8f, 0.45f));
  SamplingParams p = params(0.8f, 6, 0.9f);
  p.repetition_penalty = 1.3f, p.presence_penalty = 0.4f, p.frequency_penalty = 0.2f;
  expect_distribution(known_logits(), p, {1, 2}, {4, 4, 0});
}

TEST(SamplerDistribution, ExtremeTemperaturesAndInfiniteLogits) {
  expect_distribution({1, 3, 3, 2}, params(1e-30f));         // greedy-like, ties split evenly
  expect_distribution({1, 3, 3, 2, -1e30f}, params(1e30f));  // nearly uniform
  expect_distribution({0, std::numeric_limits<float>::infinity(), 1, std::numeric_limits<float>::infinity()},
                      params(1));
  expect_distribution({kNan, 0, 1}, params(1));
}

// ---- Randomness

TEST(SamplerRandomness, SameSeedAndInputsGiveTheSameTokenWhateverCameBefore) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  Sampler busy;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    std::vector<float> noise(1 + rng() % 3000);
    for (auto& v : noise)
      v = normal(rng);
    draw(busy, noise, params(0.9f, 40, 0.9f), rng(), {1, 2}, {3});  // leaves scratch state behind
    Sampler fresh;
    const SampledToken a = draw(fresh, known_logits(), params(1), seed, {}, {5, 6});
    const SampledToken b = draw(busy, known_logits(), params(1), seed, {}, {5, 6});
    ASSERT_EQ(a.token, b.token) << "seed " << seed;
    ASSERT_EQ(a.logprob, b.logprob);
  }
}

TEST(SamplerRandomness, DrawsAtDifferentOutputIndicesAreIndependent) {
  // Two equally likely tokens: the pair (token at index 0, token at index 1) must fall in each of
  // the four cells with probability 1/4; 5 sigma of binomial(20000, 1/4) is about 306.
  constexpr int kN = 20000;
  int cells[2][2] = {};
  Sampler s;
  for (uint64_t seed = 0; seed < kN; ++seed) {
    const TokenId a = draw(s, {0, 0}, params(1), seed, {}, {}).token;
    const TokenId b = draw(s, {0, 0}, params(1), seed, {}, {a}).token;
    ++cells[a][b];
  }
  for (auto& row : cells) {
    for (int c : row)
      EXPECT_NEAR(c, kN / 4, 5 * std::sqrt(kN * 0.25 * 0.75));
  }
}

TEST(SamplerRandomness, UniformsAreUniformAcrossSeedsAndIndices) {
  // Ten equal bins over 100000 draws: 5 sigma of binomial(100000, 0.1) is about 474.
  constexpr int kN = 100000;
  for (bool by_index : {false, true}) {
    int bins[10] = {};
    for (uint64_t i = 0; i < kN; ++i) {
      const double u = by_index ? sample_uniform(42, i) : sample_uniform(i, 3);
      ASSERT_GE(u, 0.0);
      ASSERT_LT(u, 1.0);
      ++bins[static_cast<int>(u * 10)];
    }
    for (int b : bins)
      EXPECT_NEAR(b, kN / 10, 5 * std::sqrt(kN * 0.1 * 0.9));
  }
}

TEST(SamplerRandomness, LargeVocabularyDrawsMatchTheReferenceExactly) {
  // With the sampler's uniform for each (seed, index), the reference's inverse CDF over its own
  // fully sorted, filtered distribution must pick the very same token.
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> rows(3, std::vector<float>(32000));
  for (size_t i = 0; i < rows[0].size(); ++i) {
    rows[0][i] = 2.5f * normal(rng);   // thousands of plausible tokens
    rows[1][i] = 0.25f * normal(rng);  // nearly flat: the filters must go deep into the list
    rows[2][i] = 0.1f * normal(rng);   // one spike above a long tail that holds most of the mass
  }
  rows[2][123] = 10;
  const std::vector<std::pair<size_t, SamplingParams>> cases{
      {0, params(1)},
      {0, params(0.7f, 50)},
      {0, params(1, 0, 0.9f)},
      {0, params(1, 0, 1, 0.1f)},
      {0, params(1.3f, 0, 0.95f, 0.05f)},
      {0, params(0.9f, 1000, 0.5f)},
      {0, params(1, 20000)},
      {1, params(1)},
      {1, params(1, 0, 0.95f)},
      {1, params(1, 500)},
      {2, params(1)},
      {2, params(1, 0, 0.9f)},
      {2, params(1, 5)},
      {2, params(1, 20000, 0.99f)},
  };
  std::vector<std::vector<double>> lp;
  for (const auto& row : rows)
    lp.push_back(ref_log_softmax(row));
  Sampler s;
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto& [r, p] = cases[c];
    const Dist d = ref_distribution(ref_penalized(rows[r], p, {}, {}, {}), p);
    for (uint64_t seed = 0; seed < 150; ++seed) {
      const Ids output(seed % 7, 3);  // the index of the draw is the output length
      const SampledToken got = draw(s, rows[r], p, seed, {}, output);
      ASSERT_EQ(got.token, ref_draw(d, sample_uniform(seed, output.size())))
          << "case " << c << " seed " << seed;
      ASSERT_NEAR(got.logprob, lp[r][got.token], 1e-5);
    }
  }
}

// ---- Logprobs

TEST(SamplerLogprobs, AreTheRawLogSoftmaxWithTopListSortedAndTiesByLowerId) {
  // 1000 overflows a naive exp; 985 keeps the smallest finite logprob where a float resolves 1e-5.
  const std::vector<float> logits{1000, 999, 985, -std::numeric_limits<float>::infinity(), 998.5f, 999};
  const auto ref = ref_log_softmax(logits);
  SamplingParams p = params(0);
  p.top_logprobs = 6;
  p.repetition_penalty = 100;  // moves the greedy choice but never the logprobs
  Sampler s;
  const SampledToken t = draw(s, logits, p, 0, {0}, {});
  EXPECT_EQ(t.token, 1);
  EXPECT_NEAR(t.logprob, ref[1], 1e-5);
  const Ids order{0, 1, 5, 4, 2, 3};
  ASSERT_EQ(t.top_logprobs.size(), order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(t.top_logprobs[i].first, order[i]);
    if (std::isinf(ref[order[i]])) {
      EXPECT_EQ(t.top_logprobs[i].second, -std::numeric_limits<float>::infinity());
    } else {
      EXPECT_NEAR(t.top_logprobs[i].second, ref[order[i]], 1e-5);
    }
  }
  p.repetition_penalty = 1.0005f;  // token 0 stays the greedy pick, at a penalized 999.5
  const SampledToken penalized = draw(s, logits, p, 0, {0}, {});
  EXPECT_EQ(penalized.token, 0);
  EXPECT_NEAR(penalized.logprob, ref[0], 1e-5);
  p.top_logprobs = 20;  // more than the vocabulary: all of it
  EXPECT_EQ(draw(s, logits, p, 0).top_logprobs.size(), logits.size());
  p.top_logprobs = 0;
  EXPECT_TRUE(draw(s, logits, p, 0).top_logprobs.empty());
}

TEST(SamplerLogprobs, MatchTheReferenceOnRandomRows) {
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(static_cast<float>(rng() % 200) - 100, 4.0f);
    std::vector<float> logits(5000);
    for (auto& v : logits)
      v = normal(rng);
    const auto ref = ref_log_softmax(logits);
    Ids by_ref(logits.size());
    for (size_t i = 0; i < by_ref.size(); ++i)
      by_ref[i] = static_cast<TokenId>(i);
    std::stable_sort(by_ref.begin(), by_ref.end(), [&](TokenId a, TokenId b) { return ref[a] > ref[b]; });
    SamplingParams p = params(0.8f, 0, 0.9f);
    p.top_logprobs = kMaxTopLogprobs;
    Sampler s;
    const SampledToken t = draw(s, logits, p, seed);
    ASSERT_NEAR(t.logprob, ref[t.token], 1e-5);
    ASSERT_EQ(t.top_logprobs.size(), static_cast<size_t>(kMaxTopLogprobs));
    for (size_t i = 0; i < t.top_logprobs.size(); ++i) {
      EXPECT_EQ(t.top_logprobs[i].first, by_ref[i]);
      EXPECT_NEAR(t.top_logprobs[i].second, ref[by_ref[i]], 1e-5);
    }
  }
}

}  // namespace
}  // namespace kvserve
