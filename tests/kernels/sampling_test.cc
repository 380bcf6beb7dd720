// GPU sampling (kernels/sampling.cu) against the host Sampler (engine/sampler.cc), the reference:
// the same logits, params, histories and seeds go to both, rows with different params in one call.
//
// Tolerances: logprobs are within 1e-5 relative (floor 1) of the host's: the kernel sums fp32
// exponentials in double, the host double ones. Greedy tokens and top-logprob ids are exact (both
// rank exactly, ties to the lower id). Drawn tokens: the kernel decides top-p and the draw on
// integer-quantized weights (see sampling.cu), the host in double, so the two can disagree when u
// (or top_p) falls within ~1e-11 of a boundary; at least 99% must agree, and any disagreement must
// be the host token's neighbour in the (probability desc, id asc) order.
//
// logit_bias: the kernel adds a bias in double after the suppression and before the penalties, as
// the host does, so the penalized values are the host's bit for bit and the tolerances above stand
// unchanged: greedy exact, draws as above. A +100 bias on a low token leaves every other token
// under e^-50 of its weight (no mass on either side), so forced draws are exact too. Logprobs (the
// token's and the top ones) stay those of the raw logits: checked bit for bit against a twin row
// without the bias, and within the tolerance above against a log_softmax of the raw row.
//
// Token masks (structured output): a masked-out id is a suppressed one on both sides, so the
// tolerances above stand too, and the logprobs stay the raw row's (checked as for logit_bias).
#include "kernels/sampling.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "engine/sample_uniform.h"
#include "engine/sampler.h"
#include "tests/kernels/gpu_test_util.h"

namespace kvserve::cuda {
namespace {

using ::kvserve::cuda::testing::download;
using ::kvserve::cuda::testing::poisoned;
using ::kvserve::cuda::testing::random_bf16_values;
using ::kvserve::cuda::testing::upload;

constexpr float kInfF = std::numeric_limits<float>::infinity();
constexpr float kNaNF = std::numeric_limits<float>::quiet_NaN();
constexpr float kLogprobTol = 1e-5f;

// One row to sample: what a request would carry.
struct Case {
  int logits_row = 0;
  SamplingParams params;
  uint64_t seed = 0;
  std::vector<TokenId> prompt, output, suppressed;
  std::vector<uint32_t> allowed;  // SampleInput::allowed: empty = no mask
  TokenId forced_token = -1;      // SamplingRow::forced_token: prompt logprobs
};

// Runs the cases on the GPU, a chunk of rows per call (the workspace grows with rows * vocab).
std::vector<SampledRow> run_gpu(const std::vector<float>& logits, int vocab, const std::vector<Case>& cases) {
  const auto d_logits = upload(logits);
  std::vector<SampledRow> result;
  const size_t chunk = vocab > 40000 ? 64 : 256;
  for (size_t first = 0; first < cases.size(); first += chunk) {
    const size_t n = std::min(chunk, cases.size() - first);
    std::vector<SamplingRow> rows(n);
    std::vector<int32_t> history, suppressed, bias_ids;
    std::vector<float> bias_values;
    std::vector<uint32_t> allowed;
    for (size_t i = 0; i < n; ++i) {
      const Case& c = cases[first + i];
      SamplingRow& r = rows[i];
      r.logits_row = c.logits_row;
      r.temperature = c.params.temperature;
      r.top_k = c.params.top_k;
      r.top_p = c.params.top_p;
      r.min_p = c.params.min_p;
      r.repetition_penalty = c.params.repetition_penalty;
      r.presence_penalty = c.params.presence_penalty;
      r.frequency_penalty = c.params.frequency_penalty;
      r.num_top_logprobs = c.params.top_logprobs;
      r.forced_token = c.forced_token;
      r.seed = c.seed;
      r.draw_index = c.output.size();
      r.history_offset = static_cast<int32_t>(history.size());
      r.num_prompt_tokens = static_cast<int32_t>(c.prompt.size());
      r.num_output_tokens = static_cast<int32_t>(c.output.size());
      history.insert(history.end(), c.prompt.begin(), c.prompt.end());
      history.insert(history.end(), c.output.begin(), c.output.end());
      r.suppressed_offset = static_cast<int32_t>(suppressed.size());
      r.num_suppressed = static_cast<int32_t>(c.suppressed.size());
      suppressed.insert(suppressed.end(), c.suppressed.begin(), c.suppressed.end());
      r.bias_offset = static_cast<int32_t>(bias_ids.size());
      r.num_bias = static_cast<int32_t>(c.params.logit_bias.size());
      for (const auto& [id, bias] : c.params.logit_bias) {
        bias_ids.push_back(id);
        bias_values.push_back(bias);
      }
      if (!c.allowed.empty()) {  // the backend's packing: no mask travels for an empty one
        r.allowed_offset = static_cast<int32_t>(allowed.size());
        r.num_allowed_words = static_cast<int32_t>(c.allowed.size());
        allowed.insert(allowed.end(), c.allowed.begin(), c.allowed.end());
      }
    }
    const auto d_rows = upload(rows);
    const auto d_history = upload(history);
    const auto d_suppressed = upload(suppressed);
    const auto d_bias_ids = upload(bias_ids);
    const auto d_bias_values = upload(bias_values);
    const auto d_allowed = upload(allowed);
    // Poisoned (state -1: every mark set; weights NaN): the kernel must write what it reads.
    auto workspace = poisoned<unsigned char>(sampling_workspace_bytes(static_cast<int>(n), vocab));
    auto d_out = poisoned<SampledRow>(n);
    sample_rows(d_logits.get(), vocab, d_rows.get(), static_cast<int>(n), d_history.get(), d_suppressed.get(),
                d_bias_ids.get(), d_bias_values.get(), allowed.empty() ? nullptr : d_allowed.get(),
                workspace.get(), workspace.bytes(), d_out.get(), nullptr);
    const auto out = download(d_out);
    result.insert(result.end(), out.begin(), out.end());
  }
  return result;
}

SampledToken run_host(const std::vector<float>& logits, int vocab, const Case& c) {
  Sampler sampler;
  const SampleInput in{
      std::span<const float>(logits).subspan(static_cast<size_t>(c.logits_row) * vocab, vocab),
      &c.params,
      c.prompt,
      c.output,
      c.seed,
      c.suppressed,
      c.allowed};
  return sampler.sample(in);
}

void expect_logprob(float got, float want) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << got;
  } else if (std::isinf(want)) {
    EXPECT_EQ(got, want);
  } else {
    EXPECT_NEAR(got, want, kLogprobTol * std::max(1.0f, std::abs(want)));
  }
}

void expect_top_logprobs(const SampledRow& got, const SampledToken& want) {
  for (size_t j = 0; j < want.top_logprobs.size(); ++j) {
    SCOPED_TRACE(::testing::Message() << "top logprob " << j);
    EXPECT_EQ(got.top_ids[j], want.top_logprobs[j].first);
    expect_logprob(got.top_logprobs[j], want.top_logprobs[j].second);
  }
}

// Where `token` stands in the order the host draws along: penalized logit desc, id asc (the
// weights exp((x - max) / T) rank alike). Recomputes the penalties as sampler.h states them.
size_t rank_in_order(const std::vector<float>& logits, int vocab, const Case& c, int token) {
  std::vector<double> v(vocab);
  for (int i = 0; i < vocab; ++i) {
    const float x = logits[static_cast<size_t>(c.logits_row) * vocab + i];
    v[i] = std::isnan(x) || !token_allowed(c.allowed, i) ? -std::numeric_limits<double>::infinity() : x;
  }
  const auto in_vocab = [&](TokenId id) { return id >= 0 && id < vocab; };
  for (TokenId id : c.suppressed) {
    if (in_vocab(id)) v[id] = -std::numeric_limits<double>::infinity();
  }
  for (const auto& [id, bias] : c.params.logit_bias) {
    if (in_vocab(id)) v[id] += bias;
  }
  std::vector<int> seen(vocab, 0), count(vocab, 0);
  for (const auto* ids : {&c.prompt, &c.output}) {
    for (TokenId id : *ids) {
      if (in_vocab(id)) seen[id] = 1;
    }
  }
  for (TokenId id : c.output) {
    if (in_vocab(id)) ++count[id];
  }
  const double r = c.params.repetition_penalty;
  for (int i = 0; i < vocab; ++i) {
    if (seen[i] && r != 1.0) v[i] = v[i] > 0.0 ? v[i] / r : v[i] * r;
    if (count[i] > 0)
      v[i] -= c.params.presence_penalty + c.params.frequency_penalty * static_cast<double>(count[i]);
  }
  size_t rank = 0;
  for (int i = 0; i < vocab; ++i)
    rank += v[i] > v[token] || (v[i] == v[token] && i < token);
  return rank;
}

// Tokens must agree exactly (greedy, or draws far from any boundary). Returns the GPU's rows.
std::vector<SampledRow> expect_same_tokens(const std::vector<float>& logits, int vocab,
                                           const std::vector<Case>& cases) {
  const auto got = run_gpu(logits, vocab, cases);
  EXPECT_EQ(got.size(), cases.size());
  if (got.size() != cases.size()) return got;
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " case " << i << " seed " << cases[i].seed);
    const SampledToken want = run_host(logits, vocab, cases[i]);
    EXPECT_EQ(got[i].token, want.token);
    expect_logprob(got[i].logprob, want.logprob);
    expect_top_logprobs(got[i], want);
  }
  return got;
}

// Draws: at least 99% agree, and a disagreement is a neighbour in the order. Returns the GPU's rows.
std::vector<SampledRow> expect_same_draws(const std::vector<float>& logits, int vocab,
                                          const std::vector<Case>& cases) {
  const auto got = run_gpu(logits, vocab, cases);
  EXPECT_EQ(got.size(), cases.size());
  if (got.size() != cases.size()) return got;
  size_t mismatches = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " case " << i << " seed " << cases[i].seed);
    const SampledToken want = run_host(logits, vocab, cases[i]);
    expect_top_logprobs(got[i], want);
    if (got[i].token == want.token) {
      expect_logprob(got[i].logprob, want.logprob);
      continue;
    }
    ++mismatches;
    if (got[i].token < 0 || got[i].token >= vocab) {
      ADD_FAILURE() << "token " << got[i].token << " outside the vocabulary";
      continue;
    }
    const size_t g = rank_in_order(logits, vocab, cases[i], got[i].token);
    const size_t w = rank_in_order(logits, vocab, cases[i], want.token);
    EXPECT_EQ(std::max(g, w) - std::min(g, w), 1u) << "gpu " << got[i].token << " host " << want.token;
  }
  EXPECT_LE(mismatches * 100, cases.size()) << mismatches << " of " << cases.size() << " draws differ";
  return got;
}

// Rows of N(0, stddev) logits rounded to bf16, so exact ties are common.
std::vector<float> random_rows(int rows, int vocab, uint64_t seed, float stddev = 2.0f) {
  return random_bf16_values(static_cast<size_t>(rows) * vocab, seed, stddev);
}

std::vector<TokenId> random_ids(std::mt19937_64& rng, size_t n, int lo, int hi) {
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<TokenId> ids(n);
  for (auto& id : ids)
    id = dist(rng);
  return ids;
}

// The ids of the `n` largest logits of a row: penalties and suppression matter there.
std::vector<TokenId> best_ids(const std::vector<float>& logits, int vocab, int row, int n) {
  std::vector<TokenId> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  const float* x = logits.data() + static_cast<size_t>(row) * vocab;
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int a, int b) { return x[a] > x[b]; });
  ids.resize(n);
  return ids;
}

// n ids drawn (with repeats) from `top`, plus n / 4 anywhere in the vocabulary, shuffled: a
// history (or a bias list) that meets the tokens a row is likely to pick.
std::vector<TokenId> ids_among(std::mt19937_64& rng, const std::vector<TokenId>& top, int vocab, size_t n) {
  std::vector<TokenId> ids;
  for (TokenId j : random_ids(rng, n, 0, static_cast<int>(top.size()) - 1))
    ids.push_back(top[j]);
  for (TokenId id : random_ids(rng, n / 4, 0, vocab - 1))
    ids.push_back(id);
  std::shuffle(ids.begin(), ids.end(), rng);
  return ids;
}

constexpr int kVocabs[] = {512, 32000, 128256};

TEST(SamplingCpu, SampleUniformKeepsItsValues) {
  // Computed with sample_uniform as it was in engine/sampler.cc before it moved to the header.
  EXPECT_EQ(sample_uniform(0, 0), 0x1.4e0dba5e9a32fp-1);
  EXPECT_EQ(sample_uniform(0, 1), 0x1.6705460be8829p-1);
  EXPECT_EQ(sample_uniform(42, 0), 0x1.5f87eae99441cp-2);
  EXPECT_EQ(sample_uniform(42, 7), 0x1.782d47a99890cp-1);
  EXPECT_EQ(sample_uniform(1234567890123ull, 99), 0x1.1d53dbb646924p-3);
  EXPECT_EQ(sample_uniform(~0ull, ~0ull), 0x1.1140638c16042p-2);
  EXPECT_EQ(sample_uniform(7, 1000000), 0x1.141ea1d5f1a6ep-1);
}

TEST(SamplingCpu, WorkspaceBytesAreSane) {
  EXPECT_EQ(sampling_workspace_bytes(0, 32000), 0u);
  EXPECT_EQ(sampling_workspace_bytes(8, 0), 0u);
  for (int vocab : kVocabs) {
    const size_t one = sampling_workspace_bytes(1, vocab);
    EXPECT_GE(one, static_cast<size_t>(vocab) * (sizeof(int32_t) + sizeof(double)));  // state + weights
    EXPECT_LE(one, static_cast<size_t>(vocab) * 12 + 1024);
    EXPECT_EQ(sampling_workspace_bytes(256, vocab), 256 * one);
  }
}

TEST(SamplingGpu, GreedyTiesNanInfAndLogprobs) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (int vocab : kVocabs) {
    constexpr int kRows = 7;
    auto logits = random_rows(kRows, vocab, 1000 + vocab);
    const auto at = [&](int row, int id) -> float& { return logits[static_cast<size_t>(row) * vocab + id]; };
    // Row 1: the maximum twice (the lower id wins) and once more just below.
    at(1, vocab - 3) = 100.0f;
    at(1, vocab / 2) = 100.0f;
    at(1, 0) = std::nextafter(100.0f, 0.0f);
    // Row 2: NaNs, one at id 0 and one where the maximum would be.
    at(2, best_ids(logits, vocab, 2, 1)[0]) = kNaNF;
    at(2, 0) = kNaNF;
    at(2, vocab - 1) = kNaNF;
    // Row 3: all NaN; row 4: all -inf but one; row 5: two +inf; row 6: +0 and -0 on top.
    for (int i = 0; i < vocab; ++i) {
      at(3, i) = kNaNF;
      at(4, i) = -kInfF;
    }
    at(4, vocab / 3) = -5.0f;
    at(5, 7) = kInfF;
    at(5, vocab - 2) = kInfF;
    for (int i = 0; i < vocab; ++i)
      at(6, i) = -std::abs(at(6, i)) - 1.0f;
    at(6, 9) = -0.0f;
    at(6, 4) = 0.0f;
    at(6, 20) = -0.0f;
    std::vector<Case> cases;
    for (int row = 0; row < kRows; ++row) {
      for (int top : {0, 1, 5, 20}) {
        Case c;
        c.logits_row = row;
        c.params.top_logprobs = top;
        cases.push_back(c);
      }
    }
    expect_same_tokens(logits, vocab, cases);
  }
}

// Prompt logprobs: a row with its token forced reports that token, with the host Sampler::score's
// logprob and alternatives (on rows with NaN, +-inf and ties too).
TEST(SamplingGpu, ForcedTokensReportTheirRawLogprobs) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (int vocab : kVocabs) {
    constexpr int kRows = 4;
    auto logits = random_rows(kRows, vocab, 2000 + vocab);
    const auto at = [&](int row, int id) -> float& { return logits[static_cast<size_t>(row) * vocab + id]; };
    at(1, vocab / 2) = kNaNF;
    at(2, 3) = kInfF;
    at(3, 0) = at(3, vocab - 1) = 50.0f;
    std::mt19937_64 rng(vocab);
    std::vector<Case> cases;
    for (int i = 0; i < 64; ++i) {
      Case c;
      c.logits_row = i % kRows;
      c.params.top_logprobs = i % 7 == 0 ? 20 : i % 4;
      // Some forced ids are the row's best, some anywhere, one the NaN.
      c.forced_token = i % 5 == 0 ? best_ids(logits, vocab, c.logits_row, 1)[0]
                       : i == 1   ? vocab / 2
                                  : static_cast<TokenId>(rng() % static_cast<uint64_t>(vocab));
      cases.push_back(c);
    }
    const auto got = run_gpu(logits, vocab, cases);
    Sampler sampler;
    for (size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " case " << i);
      const Case& c = cases[i];
      const SampledToken want = sampler.score(
          std::span<const float>(logits).subspan(static_cast<size_t>(c.logits_row) * vocab, vocab),
          c.forced_token, c.params.top_logprobs);
      EXPECT_EQ(got[i].token, c.forced_token);
      expect_logprob(got[i].logprob, want.logprob);
      expect_top_logprobs(got[i], want);
    }
  }
}

// n ids among a row's best ones and a few anywhere (ids_among), from the test's generator.
using Pick = std::function<std::vector<TokenId>(size_t n)>;

constexpr int kGridRows = 4;

// The penalty grid: 64 greedy rows over kGridRows logits rows, every combination of a repetition
// (i % 4), presence (i / 4 % 4) and frequency (i / 16 % 4) penalty, over a history drawn from the
// row's best 40 ids with repeats, plus a few anywhere (`prompt_step` * i prompt tokens, i % 16 * 3
// output ones). `add(c, i, top, pick)` then gives row i what the test is about (`top`: those best
// 40 ids; `pick`: more ids as the history's, from the same generator). Every third row reports 3
// top logprobs; seeds `seed` + i.
std::vector<Case> penalty_grid(
    const std::vector<float>& logits, int vocab, std::mt19937_64& rng, size_t prompt_step, uint64_t seed,
    const std::function<void(Case&, int, const std::vector<TokenId>&, const Pick&)>& add) {
  const float reps[] = {1.0f, 1.3f, 0.7f, 2.0f};
  const float presences[] = {0.0f, 0.5f, -1.0f, 2.0f};
  const float frequencies[] = {0.0f, 0.3f, 2.0f, -0.5f};
  std::vector<Case> cases;
  for (int i = 0; i < 64; ++i) {
    Case c;
    c.logits_row = i % kGridRows;
    const auto top = best_ids(logits, vocab, c.logits_row, 40);
    const Pick pick = [&](size_t n) { return ids_among(rng, top, vocab, n); };
    c.prompt = pick(prompt_step * static_cast<size_t>(i));
    c.output = pick(static_cast<size_t>(i % 16) * 3);
    c.params.repetition_penalty = reps[i % 4];
    c.params.presence_penalty = presences[(i / 4) % 4];
    c.params.frequency_penalty = frequencies[(i / 16) % 4];
    add(c, i, top, pick);
    c.params.top_logprobs = i % 3 == 0 ? 3 : 0;
    c.seed = seed + i;
    cases.push_back(c);
  }
  return cases;
}

// The cases again, drawn: case i at temperature t(i).
std::vector<Case> at_temperature(std::vector<Case> cases, const std::function<float(int)>& t) {
  for (size_t i = 0; i < cases.size(); ++i)
    cases[i].params.temperature = t(static_cast<int>(i));
  return cases;
}

TEST(SamplingGpu, PenaltiesMatchHost) {
  KVSERVE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(7);
  for (int vocab : kVocabs) {
    const auto logits = random_rows(kGridRows, vocab, 2000 + vocab);
    const auto greedy =
        penalty_grid(logits, vocab, rng, 5, 100, [&](Case& c, int i, const auto&, const auto&) {
          // A few invalid ids in the history.
          if (i % 5 == 0) c.output.push_back(-1);
          if (i % 7 == 0) c.prompt.push_back(vocab + 3);
        });
    expect_same_tokens(logits, vocab, greedy);
    expect_same_draws(logits, vocab, at_temperature(greedy, [](int) { return 1.0f; }));
  }
}

TEST(SamplingGpu, SuppressionMatchesHost) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (int vocab : kVocabs) {
    const auto logits = random_rows(2, vocab, 3000 + vocab);
    std::vector<Case> cases;
    for (float t : {0.0f, 0.8f}) {
      Case c;
      c.params.temperature = t;
      c.seed = 5;
      c.suppressed = best_ids(logits, vocab, 0, 1);  // the argmax
      cases.push_back(c);
      c.suppressed = best_ids(logits, vocab, 0, 30);  // the best 30, one twice, and ids out of range
      c.suppressed.push_back(c.suppressed[3]);
      c.suppressed.push_back(-7);
      c.suppressed.push_back(vocab);
      c.params.repetition_penalty = 1.2f;
      c.output = {c.suppressed[0], 11, 11};
      cases.push_back(c);
      // Everything suppressed: the host returns the lowest id, with its raw logprob.
      c.logits_row = 1;
      c.suppressed.resize(vocab);
      std::iota(c.suppressed.begin(), c.suppressed.end(), 0);
      std::reverse(c.suppressed.begin(), c.suppressed.end());
      c.params.top_logprobs = 4;
      cases.push_back(c);
    }
    expect_same_tokens(logits, vocab, cases);
  }
}

// Mixed temperature / top-k / top-p / min-p rows, one call per vocabulary.
std::vector<Case> mixed_draws(int vocab, int rows, int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const float temperatures[] = {1.0f, 0.7f, 1.5f, 0.05f, 1e-4f, 50.0f};
  const int top_ks[] = {0, 0, 1, 5, 50, 1000, vocab, vocab + 10};
  const float top_ps[] = {1.0f, 1.0f, 0.9f, 0.5f, 0.95f, 1e-6f};
  const float min_ps[] = {0.0f, 0.0f, 0.05f, 0.2f, 1.0f};
  std::vector<Case> cases(count);
  for (int i = 0; i < count; ++i) {
    Case& c = cases[i];
    c.logits_row = i % rows;
    c.params.temperature = temperatures[rng() % std::size(temperatures)];
    c.params.top_k = top_ks[rng() % std::size(top_ks)];
    c.params.top_p = top_ps[rng() % std::size(top_ps)];
    c.params.min_p = min_ps[rng() % std::size(min_ps)];
    c.params.top_logprobs = i % 10 == 0 ? 20 : 0;
    c.seed = rng();
    c.output = random_ids(rng, rng() % 4, 0, vocab - 1);  // only its length matters: the draw index
  }
  return cases;
}

TEST(SamplingGpu, DrawsMatchHost) {
  KVSERVE_SKIP_WITHOUT_GPU();
  const int counts[] = {1000, 2000, 300};
  for (int v = 0; v < 3; ++v) {
    const int vocab = kVocabs[v];
    constexpr int kRows = 8;
    auto logits = random_rows(kRows, vocab, 4000 + vocab, v == 0 ? 1.0f : 3.0f);
    // Row 7: two +inf logits, drawn between with equal probability.
    logits[7ull * vocab + 3] = kInfF;
    logits[7ull * vocab + vocab - 1] = kInfF;
    expect_same_draws(logits, vocab, mixed_draws(vocab, kRows, counts[v], 99 + v));
  }
}

// Row 0 drawn at temperature 1 under `allowed`, once with each seed in [0, 400).
std::vector<Case> draws_per_seed(const std::vector<uint32_t>& allowed = {}) {
  std::vector<Case> cases;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    Case c;
    c.params.temperature = 1.0f;
    c.seed = seed;
    c.allowed = allowed;
    cases.push_back(c);
  }
  return cases;
}

TEST(SamplingGpu, DrawsFollowTheUniform) {
  KVSERVE_SKIP_WITHOUT_GPU();
  // Four tokens with probabilities 0.1 each and 0.7, the rest nothing: the draw with u picks the
  // token whose cumulative interval along (probability desc, id asc) holds u.
  constexpr int kVocab = 512;
  std::vector<float> logits(kVocab, -kInfF);
  logits[300] = std::log(0.7f);
  for (int id : {10, 20, 400})
    logits[id] = std::log(0.1f);
  const auto cases = draws_per_seed();
  const auto got = run_gpu(logits, kVocab, cases);
  for (size_t i = 0; i < cases.size(); ++i) {
    const double u = sample_uniform(cases[i].seed, 0);
    // Boundaries at 0.7, 0.8, 0.9 up to float rounding of the logits: skip draws that close.
    const double edges[] = {0.7, 0.8, 0.9};
    if (std::any_of(std::begin(edges), std::end(edges), [&](double e) { return std::abs(u - e) < 1e-6; }))
      continue;
    const int want = u < 0.7 ? 300 : u < 0.8 ? 10 : u < 0.9 ? 20 : 400;
    EXPECT_EQ(got[i].token, want) << "seed " << cases[i].seed << " u " << u;
  }
}

// ---- logit_bias ----

using Bias = std::vector<std::pair<TokenId, float>>;

// Unique ids (in the order given, the first occurrence kept) with biases uniform in [lo, hi]; every
// `extreme`-th one (0: none) gets -100 or +100 (alternately, -100 first) instead.
Bias make_bias(std::mt19937_64& rng, const std::vector<TokenId>& ids, float lo, float hi, int extreme = 0) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<TokenId> seen;
  Bias bias;
  for (TokenId id : ids) {
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
    seen.push_back(id);
    const size_t k = bias.size();
    const bool big = extreme > 0 && (k + 1) % extreme == 0;
    bias.emplace_back(id, big ? ((k + 1) / extreme % 2 ? -100.0f : 100.0f) : dist(rng));
  }
  return bias;
}

// log_softmax of the raw row at `id`, in double: what every logprob must be, bias or not.
float raw_logprob(const std::vector<float>& logits, int vocab, int row, int id) {
  const float* x = logits.data() + static_cast<size_t>(row) * vocab;
  double max = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < vocab; ++i) {
    if (!std::isnan(x[i])) max = std::max(max, static_cast<double>(x[i]));
  }
  if (std::isinf(max)) {
    if (max < 0) return -kInfF;
    const auto infinite = std::count(x, x + vocab, kInfF);
    return x[id] == kInfF ? static_cast<float>(-std::log(static_cast<double>(infinite))) : -kInfF;
  }
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) {
    if (!std::isnan(x[i])) sum += std::exp(static_cast<double>(x[i]) - max);
  }
  return static_cast<float>(static_cast<double>(x[id]) - max - std::log(sum));
}

void clear_bias(Case& c) {
  c.params.logit_bias.clear();
}

void clear_mask_and_bias(Case& c) {
  c.allowed.clear();
  c.params.logit_bias.clear();
}

// Each biased case runs with a twin without the bias (or whatever `strip` takes away): the twin's
// top logprobs must be the biased row's bit for bit, and the token's logprob must be its raw one.
std::vector<SampledRow> expect_raw_logprobs(const std::vector<float>& logits, int vocab,
                                            const std::vector<Case>& cases,
                                            const std::function<void(Case&)>& strip = clear_bias) {
  std::vector<Case> both = cases;
  for (Case c : cases) {
    strip(c);
    both.push_back(c);
  }
  auto got = run_gpu(logits, vocab, both);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " case " << i);
    const SampledRow& biased = got[i];
    const SampledRow& plain = got[cases.size() + i];
    for (int j = 0; j < cases[i].params.top_logprobs; ++j) {
      EXPECT_EQ(biased.top_ids[j], plain.top_ids[j]) << "top " << j;
      EXPECT_EQ(biased.top_logprobs[j], plain.top_logprobs[j]) << "top " << j;
    }
    if (biased.token < 0 || biased.token >= vocab) {
      ADD_FAILURE() << "token " << biased.token << " outside the vocabulary";
      continue;
    }
    expect_logprob(biased.logprob, raw_logprob(logits, vocab, cases[i].logits_row, biased.token));
  }
  got.resize(cases.size());
  return got;
}

// The token a case must give, and one it must not give (-1: no such check).
struct Expected {
  TokenId token = -1;
  TokenId not_token = -1;
};

void expect_tokens(const std::vector<SampledRow>& got, const std::vector<Expected>& expected, int vocab) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " case " << i);
    if (expected[i].token >= 0) {
      EXPECT_EQ(got[i].token, expected[i].token);
    }
    if (expected[i].not_token >= 0) {
      EXPECT_NE(got[i].token, expected[i].not_token);
    }
  }
}

TEST(SamplingGpu, LogitBiasMovesTokensButNotLogprobs) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (int vocab : kVocabs) {
    constexpr int kRows = 3;
    auto logits = random_rows(kRows, vocab, 5000 + vocab);
    const auto at = [&](int row, int id) -> float& { return logits[static_cast<size_t>(row) * vocab + id]; };
    // Row 1: all -inf but two; row 2: two +inf.
    for (int i = 0; i < vocab; ++i)
      at(1, i) = -kInfF;
    at(1, 10) = -5.0f;
    at(1, vocab - 5) = -7.0f;
    at(2, 7) = kInfF;
    at(2, vocab - 2) = kInfF;
    const auto best = best_ids(logits, vocab, 0, 2);
    const TokenId top = best[0];
    const TokenId low = static_cast<TokenId>(std::min_element(logits.begin(), logits.begin() + vocab) -
                                             logits.begin());  // ~-9: +100 wins
    std::vector<Case> cases;
    std::vector<Expected> expected;  // token -1: whatever the host gives
    const auto add = [&](Case c, TokenId must, TokenId must_not) {
      c.params.top_logprobs = static_cast<int>(cases.size() % 3) * 5;
      cases.push_back(std::move(c));
      expected.push_back({.token = must, .not_token = must_not});
    };
    {  // -100 on the argmax: greedy moves off it
      Case c;
      c.params.logit_bias = {{top, -100.0f}};
      add(c, -1, top);
      c.params.logit_bias = {{top, -100.0f}, {best[1], -100.0f}};
      add(c, -1, best[1]);
    }
    for (float t : {0.0f, 1.0f, 0.7f, 1.5f}) {  // +100 on the lowest token: greedy and draws take it
      for (uint64_t seed : {1u, 2u, 3u}) {
        Case c;
        c.params.temperature = t;
        c.seed = seed;
        c.params.logit_bias = {{top, 2.0f}, {low, 100.0f}};
        if (seed == 2) {
          c.params.top_k = 3;
          c.params.top_p = 0.5f;
        }
        if (seed == 3) c.params.min_p = 0.3f;
        add(c, low, -1);
        if (t == 0.0f) break;
      }
    }
    {  // A suppressed id stays suppressed, however large its bias.
      Case c;
      c.suppressed = {top};
      c.params.logit_bias = {{top, 100.0f}};
      add(c, -1, top);
      c.params.temperature = 1.0f;
      c.seed = 9;
      c.suppressed = {low};
      c.params.logit_bias = {{best[1], -100.0f}, {low, 100.0f}, {top, -100.0f}};
      add(c, -1, low);
    }
    {  // -inf stays -inf, +inf stays +inf.
      Case c;
      c.logits_row = 1;
      c.params.logit_bias = {{0, 100.0f}, {vocab - 1, 100.0f}};
      add(c, 10, -1);
      c.params.logit_bias = {{vocab - 5, 2.5f}};  // -4.5 > -5
      add(c, vocab - 5, -1);
      c.params.logit_bias = {{vocab - 5, 100.0f}, {3, 100.0f}};
      c.params.temperature = 1.0f;
      add(c, vocab - 5, -1);
      c = Case{};
      c.logits_row = 2;
      c.params.logit_bias = {{7, -100.0f}};
      add(c, 7, -1);  // still tied at +inf: the lower id
      c.params.temperature = 1.0f;
      for (uint64_t seed = 0; seed < 6; ++seed) {  // probability 1/2 each, exactly, on both sides
        c.seed = seed;
        add(c, -1, -1);
      }
    }
    expect_same_tokens(logits, vocab, cases);
    expect_tokens(expect_raw_logprobs(logits, vocab, cases), expected, vocab);
  }
}

float alternately_hot(int i) {
  return i % 2 ? 1.0f : 0.8f;
}

TEST(SamplingGpu, LogitBiasWithPenaltiesMatchesHost) {
  KVSERVE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(17);
  for (int vocab : kVocabs) {
    const auto logits = random_rows(kGridRows, vocab, 6000 + vocab);
    const auto greedy =
        penalty_grid(logits, vocab, rng, 3, 300, [&](Case& c, int i, const auto& top, const Pick& pick) {
          // Biases drawn as the history, so that they meet on the same tokens; of either sign, large
          // enough to flip signs (which the repetition penalty looks at) and to reorder the best ids;
          // in every third row every 7th is -100 or +100. Rows i % 8 == 7 have none.
          if (i % 8 != 7)
            c.params.logit_bias =
                make_bias(rng, pick(static_cast<size_t>(1 + i % 8 * 4)), -6.0f, 6.0f, i % 3 ? 0 : 7);
          if (i % 5 == 0 && !c.params.logit_bias.empty())
            c.suppressed = {c.params.logit_bias.back().first, top[0]};
        });
    expect_same_tokens(logits, vocab, greedy);
    expect_same_draws(logits, vocab, at_temperature(greedy, alternately_hot));
    expect_raw_logprobs(logits, vocab, greedy);
  }
}

TEST(SamplingGpu, LogitBiasWithFiltersMatchesHost) {
  KVSERVE_SKIP_WITHOUT_GPU();
  const int counts[] = {600, 800, 200};
  std::mt19937_64 rng(23);
  for (int v = 0; v < 3; ++v) {
    const int vocab = kVocabs[v];
    constexpr int kRows = 8;
    const auto logits = random_rows(kRows, vocab, 7000 + vocab, v == 0 ? 1.0f : 3.0f);
    auto cases = mixed_draws(vocab, kRows, counts[v], 199 + v);
    for (size_t i = 0; i < cases.size(); ++i) {
      if (i % 3 == 2) continue;  // some rows without a bias in every launch
      Case& c = cases[i];
      // Among the best 60, so that the bias reorders what top-k / top-p / min-p keep.
      const auto top = best_ids(logits, vocab, c.logits_row, 60);
      std::vector<TokenId> ids;
      for (TokenId j : random_ids(rng, 1 + rng() % 24, 0, 59))
        ids.push_back(top[j]);
      ids.push_back(static_cast<TokenId>(rng() % vocab));
      c.params.logit_bias = make_bias(rng, ids, -4.0f, 4.0f, i % 5 == 0 ? 9 : 0);
    }
    expect_same_draws(logits, vocab, cases);
  }
}

TEST(SamplingGpu, ManyLogitBiasEntriesMatchHost) {
  KVSERVE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(29);
  for (int vocab : kVocabs) {
    constexpr int kRows = 2;
    const auto logits = random_rows(kRows, vocab, 8000 + vocab);
    std::vector<Case> greedy, drawn;
    for (int i = 0; i < 16; ++i) {
      Case c;
      c.logits_row = i % kRows;
      // As many entries as allowed (all ids where the vocabulary is smaller): the best 100 ids, the
      // first and last ids, the rest anywhere; biases over the whole range [-100, 100].
      const int n = std::min(1024, vocab);
      std::vector<TokenId> ids = best_ids(logits, vocab, c.logits_row, 100);
      ids.push_back(0);
      ids.push_back(vocab - 1);
      if (n == vocab) {
        for (TokenId id = 0; id < vocab; ++id)
          ids.push_back(id);
      }
      while (static_cast<int>(ids.size()) < 4 * n)
        ids.push_back(static_cast<TokenId>(rng() % vocab));
      std::shuffle(ids.begin() + 102, ids.end(), rng);
      c.params.logit_bias = make_bias(rng, ids, -100.0f, 100.0f, i % 2 ? 13 : 0);
      ASSERT_GE(c.params.logit_bias.size(), static_cast<size_t>(n));
      c.params.logit_bias.resize(static_cast<size_t>(n));
      std::shuffle(c.params.logit_bias.begin(), c.params.logit_bias.end(), rng);
      if (i % 4 == 1) {
        c.params.repetition_penalty = 1.5f;
        c.params.presence_penalty = 0.5f;
        c.params.frequency_penalty = 0.25f;
        c.prompt = random_ids(rng, 50, 0, vocab - 1);
        c.output = {c.params.logit_bias[0].first, c.params.logit_bias[0].first, c.params.logit_bias[1].first};
      }
      if (i % 4 == 2) c.suppressed = {c.params.logit_bias[2].first, c.params.logit_bias[3].first};
      c.params.top_logprobs = i % 4 == 3 ? 20 : 0;
      c.seed = 500 + i;
      greedy.push_back(c);
      c.params.temperature = i % 3 == 0 ? 1.0f : 3.0f;  // hot: many biased ids in play
      c.params.top_k = i % 4 == 0 ? 40 : 0;
      c.params.top_p = i % 4 == 1 ? 0.9f : 1.0f;
      c.params.min_p = i % 4 == 2 ? 0.01f : 0.0f;
      drawn.push_back(c);
    }
    ASSERT_EQ(greedy[0].params.logit_bias.size(), static_cast<size_t>(std::min(1024, vocab)));
    expect_same_tokens(logits, vocab, greedy);
    expect_same_draws(logits, vocab, drawn);
    expect_raw_logprobs(logits, vocab, greedy);
  }
}

// ---- rows with and without a bias or a mask in one launch ----

constexpr int kMixedRows = 4;

// 40 rows over kMixedRows logits rows for one launch: greedy (i % 4 < 2) or drawn, every fifth
// with 4 top logprobs, every sixth (i % 6 == 3) penalized, so that it uses the state; seeds `seed`
// + i. `mark(c, i, f)` gives row i a bias or a mask, or neither, and says whether the row must then
// give `f`, an id distinct for every row at every vocabulary.
struct MixedLaunch {
  std::vector<Case> cases;
  std::vector<Expected> expected;
};

MixedLaunch mixed_launch(const std::vector<float>& logits, int vocab, uint64_t seed,
                         const std::function<bool(Case&, int, TokenId)>& mark) {
  MixedLaunch launch;
  for (int i = 0; i < 40; ++i) {
    Case c;
    c.logits_row = i % kMixedRows;
    c.params.temperature = i % 4 < 2 ? 0.0f : 1.0f;
    c.params.top_logprobs = i % 5 == 0 ? 4 : 0;
    c.seed = seed + i;
    if (i % 6 == 3) {
      c.params.repetition_penalty = 1.4f;
      c.prompt = best_ids(logits, vocab, c.logits_row, 5);
    }
    const TokenId f = static_cast<TokenId>(seed + 37 * i) % vocab;  // distinct for i < 40 at every vocabulary
    const bool forced = mark(c, i, f);
    launch.cases.push_back(c);
    launch.expected.push_back({.token = forced ? f : -1});
  }
  return launch;
}

// The launch runs, and again with no bias and no mask in any row: a forced row must give its token,
// and the rows without a bias or a mask must come out bit for bit as from the plain launch. A wrong
// offset into the bias or mask arrays, or one leaking into another row, changes a token.
void expect_only_marked_rows_change(const std::vector<float>& logits, int vocab, const MixedLaunch& launch) {
  std::vector<Case> unmarked = launch.cases;
  for (Case& c : unmarked)
    clear_mask_and_bias(c);
  const auto got = run_gpu(logits, vocab, launch.cases);
  const auto plain = run_gpu(logits, vocab, unmarked);
  expect_tokens(got, launch.expected, vocab);
  for (size_t i = 0; i < launch.cases.size(); ++i) {
    const Case& c = launch.cases[i];
    if (!c.allowed.empty() || !c.params.logit_bias.empty()) continue;
    SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " case " << i);
    EXPECT_EQ(got[i].token, plain[i].token);
    EXPECT_EQ(got[i].logprob, plain[i].logprob);
    for (int j = 0; j < c.params.top_logprobs; ++j) {
      EXPECT_EQ(got[i].top_ids[j], plain[i].top_ids[j]);
      EXPECT_EQ(got[i].top_logprobs[j], plain[i].top_logprobs[j]);
    }
  }
}

// Two rows in three biased, each forcing its own token (+100) among small biases on its best ids.
TEST(SamplingGpu, OnlySomeRowsBiasedInOneLaunch) {
  KVSERVE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(31);
  for (int vocab : kVocabs) {
    const auto logits = random_rows(kMixedRows, vocab, 9000 + vocab);
    const auto launch = mixed_launch(logits, vocab, 700, [&](Case& c, int i, TokenId f) {
      if (i % 3 == 1) return false;
      auto ids = best_ids(logits, vocab, c.logits_row, 20);
      ids.resize(1 + i % 20);
      ids.erase(std::remove(ids.begin(), ids.end(), f), ids.end());
      c.params.logit_bias = make_bias(rng, ids, -3.0f, 3.0f);
      c.params.logit_bias.emplace_back(f, 100.0f);
      std::shuffle(c.params.logit_bias.begin(), c.params.logit_bias.end(), rng);
      return true;
    });
    expect_same_tokens(logits, vocab, launch.cases);
    expect_only_marked_rows_change(logits, vocab, launch);
  }
}

// ---- token masks (structured output) ----

using Mask = std::vector<uint32_t>;

size_t mask_words(int vocab) {
  return (static_cast<size_t>(vocab) + 31) / 32;
}

void allow(Mask& m, TokenId id) {
  m[static_cast<size_t>(id) / 32] |= 1u << (id % 32);
}

void disallow(Mask& m, TokenId id) {
  m[static_cast<size_t>(id) / 32] &= ~(1u << (id % 32));
}

// A mask over the whole vocabulary that allows exactly `ids`.
Mask mask_of(int vocab, const std::vector<TokenId>& ids) {
  Mask m(mask_words(vocab), 0);
  for (TokenId id : ids)
    allow(m, id);
  return m;
}

// Every id allowed with probability `density`.
Mask random_mask(std::mt19937_64& rng, int vocab, double density) {
  std::bernoulli_distribution keep(density);
  Mask m(mask_words(vocab), 0);
  for (TokenId id = 0; id < vocab; ++id) {
    if (keep(rng)) allow(m, id);
  }
  return m;
}

// `n` ids anywhere, and with `likely` two of the row's best 10 too: a mask that allows a few ids.
Mask sparse_mask(std::mt19937_64& rng, const std::vector<float>& logits, int vocab, int row, int n,
                 bool likely) {
  std::vector<TokenId> ids = random_ids(rng, static_cast<size_t>(n), 0, vocab - 1);
  if (likely) {
    const auto top = best_ids(logits, vocab, row, 10);
    ids.push_back(top[rng() % 10]);
    ids.push_back(top[rng() % 10]);
  }
  return mask_of(vocab, ids);
}

// Every token the GPU gave is one its mask allows, where the mask allows some id of the vocabulary
// (all logits of these rows are finite; otherwise the fallback is id 0, allowed or not).
void expect_allowed(const std::vector<SampledRow>& got, const std::vector<Case>& cases, int vocab) {
  ASSERT_EQ(got.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    bool any = false;
    for (TokenId id = 0; id < vocab && !any; ++id)
      any = token_allowed(cases[i].allowed, id);
    if (any) {
      EXPECT_TRUE(token_allowed(cases[i].allowed, got[i].token)) << "case " << i << " token " << got[i].token;
    }
  }
}

// Greedy and drawn rows under masks that allow a few ids (sparse) or most of them (dense), some
// dense ones without the row's best ids (the argmax among them), the draws under mixed filters.
TEST(SamplingGpu, TokenMaskSparseAndDenseMatchHost) {
  KVSERVE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(37);
  for (int vocab : kVocabs) {
    constexpr int kRows = 4;
    const auto logits = random_rows(kRows, vocab, 10000 + vocab);
    std::vector<Case> greedy;
    std::vector<Expected> expected;  // not the row's argmax where the mask leaves it out
    for (int i = 0; i < 48; ++i) {
      Case c;
      c.logits_row = i % kRows;
      const auto top = best_ids(logits, vocab, c.logits_row, 6);
      TokenId out = -1;
      switch (i % 4) {
        case 0:
          c.allowed = sparse_mask(rng, logits, vocab, c.logits_row, 1 + i % 7, false);
          break;
        case 1:
          c.allowed = sparse_mask(rng, logits, vocab, c.logits_row, 1 + i % 7, true);
          break;
        case 2:
          c.allowed = random_mask(rng, vocab, i % 8 == 2 ? 0.9 : 0.5);
          break;
        default:
          c.allowed = random_mask(rng, vocab, 0.97);
          for (int k = 0; k <= i % 5; ++k)
            disallow(c.allowed, top[k]);
          out = top[0];
          break;
      }
      c.params.top_logprobs = i % 3 == 0 ? 5 : 0;
      c.seed = 900 + i;
      greedy.push_back(c);
      expected.push_back({.token = -1, .not_token = out});
    }
    const auto got = expect_same_tokens(logits, vocab, greedy);
    expect_allowed(got, greedy, vocab);
    expect_tokens(got, expected, vocab);
    // The same masks (on the same rows: 48 is a multiple of kRows) under mixed filters.
    auto drawn = mixed_draws(vocab, kRows, 480, 37 + vocab);
    for (size_t i = 0; i < drawn.size(); ++i)
      drawn[i].allowed = greedy[i % greedy.size()].allowed;
    expect_allowed(expect_same_draws(logits, vocab, drawn), drawn, vocab);
  }
}

// Four allowed ids of equal logit among better disallowed ones: the draw with u picks the
// (u * 4)-th of them in id order, whatever the disallowed ids weigh.
TEST(SamplingGpu, TokenMaskDrawsFollowTheUniformOverTheAllowedIds) {
  KVSERVE_SKIP_WITHOUT_GPU();
  constexpr int kVocab = 512;
  std::vector<float> logits(kVocab, 5.0f);
  const std::vector<TokenId> ids = {31, 32, 200, 511};
  for (TokenId id : ids)
    logits[id] = 0.0f;
  const auto cases = draws_per_seed(mask_of(kVocab, ids));
  const auto got = expect_same_tokens(logits, kVocab, cases);
  std::vector<int> seen(ids.size(), 0);
  for (size_t i = 0; i < cases.size(); ++i) {
    const double u = sample_uniform(cases[i].seed, 0);
    const auto k = static_cast<size_t>(u * 4);
    EXPECT_EQ(got[i].token, ids[k]) << "seed " << cases[i].seed << " u " << u;
    ++seen[k];
  }
  for (size_t k = 0; k < ids.size(); ++k)
    EXPECT_GT(seen[k], 50) << "id " << ids[k];
}

// Masks with logit_bias, penalties and suppressed ids on the same likely tokens: a bias never
// brings a masked-out id back, a suppressed id stays out whatever the mask allows, and the
// penalties act on the allowed ids only.
TEST(SamplingGpu, TokenMaskWithBiasPenaltiesAndSuppressionMatchesHost) {
  KVSERVE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(41);
  for (int vocab : kVocabs) {
    const auto logits = random_rows(kGridRows, vocab, 11000 + vocab);
    std::vector<Expected> expected;
    const auto greedy =
        penalty_grid(logits, vocab, rng, 3, 1100, [&](Case& c, int i, const auto& top, const Pick& pick) {
          // Half of the best 40 allowed, and elsewhere dense or sparse.
          c.allowed = random_mask(rng, vocab, i % 2 ? 0.8 : 0.01);
          for (TokenId id : top) {
            if (rng() % 2) {
              allow(c.allowed, id);
            } else {
              disallow(c.allowed, id);
            }
          }
          if (i % 8 != 7)
            c.params.logit_bias = make_bias(rng, pick(static_cast<size_t>(1 + i % 8 * 4)), -6.0f, 6.0f);
          TokenId out = -1;
          if (i % 4 == 1) {  // +100 on a masked-out id
            out = top[static_cast<size_t>(i) % top.size()];
            disallow(c.allowed, out);
          }
          if (i % 4 == 2) {  // +100 on an allowed but suppressed id
            out = top[static_cast<size_t>(i) % top.size()];
            allow(c.allowed, out);
            c.suppressed = {out, top[0]};
          }
          if (out >= 0) {
            std::erase_if(c.params.logit_bias, [&](const auto& e) { return e.first == out; });
            c.params.logit_bias.emplace_back(out, 100.0f);
          }
          expected.push_back({.token = -1, .not_token = out});
        });
    const auto drawn = at_temperature(greedy, alternately_hot);
    const auto got = expect_same_tokens(logits, vocab, greedy);
    expect_allowed(got, greedy, vocab);
    const auto got_drawn = expect_same_draws(logits, vocab, drawn);
    expect_allowed(got_drawn, drawn, vocab);
    expect_tokens(got, expected, vocab);
    expect_tokens(got_drawn, expected, vocab);
    expect_raw_logprobs(logits, vocab, greedy, clear_mask_and_bias);
  }
}

// Two rows in three masked: one allowing one id of its own (forced, greedy or not), the other a
// random half of the vocabulary. The plain launch gets no mask array at all.
TEST(SamplingGpu, OnlySomeRowsMaskedInOneLaunch) {
  KVSERVE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(43);
  for (int vocab : kVocabs) {
    const auto logits = random_rows(kMixedRows, vocab, 12000 + vocab);
    const auto launch = mixed_launch(logits, vocab, 1300, [&](Case& c, int i, TokenId f) {
      if (i % 3 == 0) c.allowed = mask_of(vocab, {f});
      if (i % 3 == 2) c.allowed = random_mask(rng, vocab, 0.5);
      return i % 3 == 0;
    });
    expect_allowed(expect_same_tokens(logits, vocab, launch.cases), launch.cases, vocab);
    expect_only_marked_rows_change(logits, vocab, launch);
  }
}

// A mask of fewer words than the vocabulary needs disallows every id past its end, even where the
// row's best ids lie there; one of more words than needed (bits set past the vocabulary, whose
// size need not be a multiple of 32) names no extra id; one that allows nothing leaves the host's
// fallback, id 0.
TEST(SamplingGpu, TokenMaskShorterThanTheVocabularyDisallowsTheRest) {
  KVSERVE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(47);
  for (int vocab : {512, 1000, 32000, 128256}) {
    constexpr int kRows = 2;
    auto logits = random_rows(kRows, vocab, 13000 + vocab);
    // The best logits at the end of the vocabulary.
    for (int row = 0; row < kRows; ++row) {
      for (int k = 1; k <= 40; ++k)
        logits[static_cast<size_t>(row) * vocab + vocab - k] = 10.0f + static_cast<float>(k % 7);
    }
    const auto full = static_cast<int>(mask_words(vocab));
    std::vector<Case> cases;
    std::vector<int> limit;  // every token must lie below it
    for (int words : {1, 3, full / 2, full - 1, full, full + 2}) {
      for (int i = 0; i < 8; ++i) {
        Case c;
        c.logits_row = i % kRows;
        c.params.temperature = i < 2 ? 0.0f : i < 5 ? 1.0f : 3.0f;
        c.params.top_k = i == 6 ? 20 : 0;
        c.params.top_p = i == 7 ? 0.8f : 1.0f;
        c.params.top_logprobs = i == 0 ? 20 : 0;
        c.seed = 1500 + static_cast<uint64_t>(words * 8 + i);
        if (i % 2) {
          c.allowed.assign(static_cast<size_t>(words), ~0u);
        } else {
          c.allowed = random_mask(rng, 32 * words, 0.3);
          c.allowed[0] |= 1u;  // something allowed in every mask
        }
        cases.push_back(c);
        limit.push_back(std::min(vocab, 32 * words));
      }
    }
    for (int row = 0; row < kRows; ++row) {  // nothing allowed: a mask of zeros, short or full
      for (int words : {1, full}) {
        Case c;
        c.logits_row = row;
        c.params.temperature = 1.0f;
        c.params.top_logprobs = 2;
        c.allowed.assign(static_cast<size_t>(words), 0u);
        cases.push_back(c);
        limit.push_back(1);
      }
    }
    const auto got = expect_same_tokens(logits, vocab, cases);
    ASSERT_EQ(got.size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      EXPECT_GE(got[i].token, 0) << "case " << i;
      EXPECT_LT(got[i].token, limit[i]) << "case " << i;
    }
  }
}

// The mask moves tokens but not logprobs: the top logprobs (masked-out ids included) are a twin's
// without the mask bit for bit, and the token's logprob is its raw one.
TEST(SamplingGpu, TokenMaskLeavesLogprobsRaw) {
  KVSERVE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(53);
  for (int vocab : kVocabs) {
    constexpr int kRows = 3;
    const auto logits = random_rows(kRows, vocab, 14000 + vocab);
    std::vector<Case> cases;
    for (int i = 0; i < 24; ++i) {
      Case c;
      c.logits_row = i % kRows;
      c.params.temperature = i % 2 ? 1.0f : 0.0f;
      c.params.top_logprobs = 1 + i % 20;
      c.seed = 1700 + i;
      // Never the best 10 ids, which the top logprobs report all the same.
      const auto top = best_ids(logits, vocab, c.logits_row, 10);
      c.allowed =
          i % 3 ? random_mask(rng, vocab, 0.5) : sparse_mask(rng, logits, vocab, c.logits_row, 3, false);
      for (TokenId id : top)
        disallow(c.allowed, id);
      if (i % 4 == 0) c.params.logit_bias = {{top[1], 5.0f}};
      cases.push_back(c);
    }
    const auto got = expect_same_tokens(logits, vocab, cases);
    expect_allowed(got, cases, vocab);
    expect_raw_logprobs(logits, vocab, cases, clear_mask_and_bias);
    for (size_t i = 0; i < cases.size(); ++i) {
      // The best raw logit is reported, though masked out.
      EXPECT_FALSE(token_allowed(cases[i].allowed, got[i].top_ids[0])) << "case " << i;
    }
  }
}

}  // namespace
}  // namespace kvserve::cuda
