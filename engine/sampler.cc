#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

namespace kvserve {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// %g prints floats as people write them ("1.5", "-inf"), which is what the client reads. A NaN's
// sign bit is noise to the reader, and glibc would print it as "-nan".
std::string show(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Status out_of_range(const char* field, const char* range, double got) {
  return Status::InvalidArgument(std::string(field) + " must be " + range + ", got " + show(got));
}

bool in_vocab(TokenId id, size_t vocab) {
  return id >= 0 && static_cast<size_t>(id) < vocab;
}

using Candidate = std::pair<double, int32_t>;  // (unnormalized probability, id)

// The candidates in (probability desc, id asc) order, never fully sorted: the filters and the
// draw each ask how many of the best candidates it takes for their weight to pass a target, and a
// quickselect that halves the range every round answers that in O(V) instead of O(V log V).
class Candidates {
 public:
  explicit Candidates(std::vector<Candidate>& c) : c_(c) {}

  int32_t id(size_t i) const { return c_[i].second; }
  double sum(size_t lo, size_t hi) const {
    double s = 0.0;
    for (size_t i = lo; i < hi; ++i)
      s += c_[i].first;
    return s;
  }
  // Moves the best k of the first n to the front.
  void keep_best(size_t k, size_t n) {
    if (n > kSplitAbove) {  // see smallest_prefix
      const size_t heavy = keep_at_least(kHeavy, n);
      if (heavy < k) {
        std::nth_element(at(heavy), at(k), at(n), before);
        return;
      }
      n = heavy;
    }
    std::nth_element(at(0), at(k), at(n), before);
  }
  // Moves the candidates of the first n that weigh at least `w` to the front; returns their count.
  size_t keep_at_least(double w, size_t n) {
    return static_cast<size_t>(
        std::partition(at(0), at(n), [w](const Candidate& c) { return c.first >= w; }) - at(0));
  }
  // The smallest r such that the best r of the first n weigh more than `target` (at least
  // `target` when inclusive), moved to the front with the r-th best at index r - 1.
  size_t smallest_prefix(size_t n, double target, bool inclusive) {
    const auto passes = [&](double s) { return inclusive ? s >= target : s > target; };
    size_t lo = 0, hi = n;  // the answer lies in (lo, hi]; everything before lo weighs too little
    // Logits of real models leave most of a large vocabulary with a negligible weight: one pass
    // that splits by value usually leaves the answer among a few heavy candidates.
    if (n > kSplitAbove) {
      const size_t heavy = keep_at_least(kHeavy, n);
      if (heavy > 0 && heavy < n) {
        const double s = sum(0, heavy);
        if (passes(s)) {
          hi = heavy;
        } else {
          target -= s;
          lo = heavy;
        }
      }
    }
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      std::nth_element(at(lo), at(mid), at(hi), before);
      double s = sum(lo, mid);
      if (passes(s)) {
        hi = mid;
        continue;
      }
      s += c_[mid].first;
      if (passes(s)) return mid + 1;
      target -= s;
      lo = mid + 1;
    }
    // Reached when rounding keeps the sum a hair short: all of the range, whose worst element
    // the last round put at lo - 1.
    return lo;
  }

 private:
  static constexpr double kHeavy = 1e-4;  // relative to the most likely candidate's weight of 1
  static constexpr size_t kSplitAbove = 1024;

  std::vector<Candidate>::iterator at(size_t i) { return c_.begin() + static_cast<std::ptrdiff_t>(i); }
  // A function object rather than a function, so that std::nth_element inlines the comparison.
  struct Before {
    bool operator()(const Candidate& a, const Candidate& b) const {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    }
  };
  static constexpr Before before{};

  std::vector<Candidate>& c_;
};

// The largest element (NaN never wins; -inf when there is none). Four running maxima break the
// dependency chain of one, and keeping this out of line stops GCC 12 from holding the maximum in
// memory inside sample(): together they made the scans over a 128k row several times faster.
template <typename T>
[[gnu::noinline]] T max_of(std::span<const T> v) {
  T m[4];
  std::fill(m, m + 4, -std::numeric_limits<T>::infinity());
  size_t i = 0;
  for (; i + 4 <= v.size(); i += 4) {
    for (size_t j = 0; j < 4; ++j) {
      if (v[i + j] > m[j]) m[j] = v[i + j];
    }
  }
  for (; i < v.size(); ++i) {
    if (v[i] > m[0]) m[0] = v[i];
  }
  for (size_t j = 1; j < 4; ++j) {
    if (m[j] > m[0]) m[0] = m[j];
  }
  return m[0];
}

}  // namespace

// log_softmax of the raw logits, evaluated one id at a time from two numbers (declared in
// sampler.h, for Sampler's private helper).
struct LogSoftmax {
  explicit LogSoftmax(std::span<const float> logits) {
    max = max_of(logits);
    if (max == kInf) {
      for (float x : logits)
        infinite += (x == kInf);
    } else if (max > -kInf) {
      double sum = 0.0;
      for (float x : logits) {
        if (!std::isnan(x)) sum += std::exp(static_cast<double>(x) - max);  // NaN: as if -inf
      }
      lse = max + std::log(sum);
    }
  }
  float operator()(float x) const {
    if (max == kInf) return x == kInf ? static_cast<float>(-std::log(static_cast<double>(infinite))) : -kInf;
    if (max == -kInf) return static_cast<float>(-kInf);  // no finite logit: nothing is likely
    return static_cast<float>(static_cast<double>(x) - lse);
  }
  double max = -kInf;
  double lse = 0.0;
  int64_t infinite = 0;
};

Status validate_sampling_params(const SamplingParams& p) {
  // Written as "!(ok)" so that NaN, which fails every comparison, is rejected too.
  if (!(std::isfinite(p.temperature) && p.temperature >= 0.0f)) {
    return out_of_range("temperature", "a finite number >= 0 (0 = greedy)", p.temperature);
  }
  if (p.top_k < 0) return out_of_range("top_k", ">= 0 (0 = no limit)", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return out_of_range("top_p", "in (0, 1]", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return out_of_range("min_p", "in [0, 1]", p.min_p);
  if (!(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f)) {
    return out_of_range("repetition_penalty", "a finite number > 0 (1 = off)", p.repetition_penalty);
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return out_of_range("presence_penalty", "in [-2, 2]", p.presence_penalty);
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return out_of_range("frequency_penalty", "in [-2, 2]", p.frequency_penalty);
  }
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs) {
    return out_of_range("top_logprobs", "in [0, 20]", p.top_logprobs);
  }
  if (p.prompt_logprobs < -1 || p.prompt_logprobs > kMaxTopLogprobs) {
    return out_of_range("prompt_logprobs", "in [0, 20], or -1 for none", p.prompt_logprobs);
  }
  if (p.logit_bias.size() > static_cast<size_t>(kMaxLogitBias)) {
    return Status::InvalidArgument("logit_bias has " + std::to_string(p.logit_bias.size()) +
                                   " entries, at most " + std::to_string(kMaxLogitBias) + " allowed");
  }
  std::vector<TokenId> ids;
  ids.reserve(p.logit_bias.size());
  for (const auto& [id, bias] : p.logit_bias) {
    if (!(bias >= -kMaxLogitBiasValue && bias <= kMaxLogitBiasValue)) {
      return out_of_range(("logit_bias[" + std::to_string(id) + "]").c_str(), "in [-100, 100]", bias);
    }
    ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  if (const auto twice = std::adjacent_find(ids.begin(), ids.end()); twice != ids.end())
    return Status::InvalidArgument("logit_bias names token " + std::to_string(*twice) + " twice");
  return Status::Ok();
}

void Sampler::add_top_logprobs(std::span<const float> logits, const LogSoftmax& log_softmax, int count,
                               SampledToken& out) {
  if (count <= 0) return;
  const size_t vocab = logits.size();
  const size_t k = std::min(static_cast<size_t>(count), vocab);
  const auto key = [&](int32_t i) {
    const float x = logits[static_cast<size_t>(i)];
    return std::isnan(x) ? -kInf : static_cast<double>(x);
  };
  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  std::partial_sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(k), order_.end(),
                    [&](int32_t a, int32_t b) { return key(a) > key(b) || (key(a) == key(b) && a < b); });
  out.top_logprobs.reserve(k);
  for (size_t i = 0; i < k; ++i)
    out.top_logprobs.emplace_back(order_[i], log_softmax(logits[static_cast<size_t>(order_[i])]));
}

SampledToken Sampler::score(std::span<const float> logits, TokenId token, int num_top_logprobs) {
  SampledToken out;
  out.token = token;
  if (logits.empty() || !in_vocab(token, logits.size())) return out;
  const LogSoftmax log_softmax(logits);
  add_top_logprobs(logits, log_softmax, num_top_logprobs, out);
  out.logprob = log_softmax(logits[static_cast<size_t>(token)]);
  return out;
}

SampledToken Sampler::sample(const SampleInput& in) {
  static_assert(kMaxTopLogprobs == 20, "the top_logprobs message states the range");
  SampledToken out;
  const SamplingParams& p = *in.params;
  const size_t vocab = in.logits.size();
  if (vocab == 0) return out;

  const LogSoftmax log_softmax(in.logits);
  add_top_logprobs(in.logits, log_softmax, p.top_logprobs, out);

  // 1. Suppression. NaN (a broken model output) is treated like a suppressed token, and so is an
  // id the structured-output mask does not allow.
  work_.resize(vocab);
  for (size_t i = 0; i < vocab; ++i) {
    const double x = in.logits[i];
    work_[i] = std::isnan(x) || !token_allowed(in.allowed, static_cast<TokenId>(i)) ? -kInf : x;
  }
  for (TokenId id : in.suppressed) {
    if (in_vocab(id, vocab)) work_[static_cast<size_t>(id)] = -kInf;
  }
  for (const auto& [id, bias] : p.logit_bias) {
    if (in_vocab(id, vocab)) work_[static_cast<size_t>(id)] += bias;  // -inf + bias stays -inf
  }

  // 2. Penalties. Each token counts once for the repetition penalty however often it occurs.
  if (p.repetition_penalty != 1.0f) {
    const double r = p.repetition_penalty;
    seen_.resize(vocab, 0);
    const auto penalize = [&](std::span<const TokenId> ids) {
      for (TokenId id : ids) {
        if (!in_vocab(id, vocab) || seen_[static_cast<size_t>(id)]) continue;
        seen_[static_cast<size_t>(id)] = 1;
        double& x = work_[static_cast<size_t>(id)];
        x = x > 0.0 ? x / r : x * r;
      }
    };
    penalize(in.prompt);
    penalize(in.output);
    for (auto ids : {in.prompt, in.output}) {
      for (TokenId id : ids) {
        if (in_vocab(id, vocab)) seen_[static_cast<size_t>(id)] = 0;
      }
    }
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    counts_.resize(vocab, 0);
    for (TokenId id : in.output) {
      if (in_vocab(id, vocab)) ++counts_[static_cast<size_t>(id)];
    }
    for (TokenId id : in.output) {
      if (!in_vocab(id, vocab)) continue;
      int32_t& c = counts_[static_cast<size_t>(id)];
      if (c == 0) continue;  // already applied (and reset) at an earlier occurrence
      work_[static_cast<size_t>(id)] -= static_cast<double>(p.presence_penalty) +
                                        static_cast<double>(p.frequency_penalty) * static_cast<double>(c);
      c = 0;
    }
  }

  // 3. Greedy, and the fallback when no token has any probability left.
  const double xmax = max_of(std::span<const double>(work_));
  if (p.temperature == 0.0f || xmax == -kInf) {
    // The first occurrence of the maximum: the lowest id wins a tie.
    out.token = static_cast<TokenId>(std::find(work_.begin(), work_.end(), xmax) - work_.begin());
  } else {
    // Unnormalized probabilities exp((x - max) / T): subtracting first keeps a tiny temperature
    // from overflowing; the max token gets weight 1.
    const double t = p.temperature;
    cand_.clear();
    double total = 0.0;
    for (size_t i = 0; i < vocab; ++i) {
      const double x = work_[i];
      const double w = xmax == kInf ? (x == kInf ? 1.0 : 0.0) : std::exp((x - xmax) / t);
      if (w > 0.0) {
        cand_.emplace_back(w, static_cast<int32_t>(i));
        total += w;
      }
    }
    Candidates cand(cand_);
    const size_t n = cand_.size();
    // Every filter keeps the best few candidates, so each narrows the front of the list.
    size_t len = n;
    if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n) {
      len = static_cast<size_t>(p.top_k);
      cand.keep_best(len, n);
      total = cand.sum(0, len);
    }
    const size_t after_top_k = len;
    if (p.top_p < 1.0f) len = cand.smallest_prefix(len, static_cast<double>(p.top_p) * total, true);
    // The max token's weight is exactly 1 and the ratio of two probabilities does not depend on
    // the normalization, so min_p compares with the weights directly.
    if (p.min_p > 0.0f) len = cand.keep_at_least(static_cast<double>(p.min_p), len);
    if (len < after_top_k) total = cand.sum(0, len);
    const double target = sample_uniform(in.seed, in.output.size()) * total;
    out.token = cand.id(cand.smallest_prefix(len, target, false) - 1);
  }
  out.logprob = log_softmax(in.logits[static_cast<size_t>(out.token)]);
  return out;
}

}  // namespace kvserve
