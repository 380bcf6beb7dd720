// Sampler: picks each sequence's next token from its logits under the request's SamplingParams.
//
// Order of operations on a row of logits (as vLLM and Hugging Face do):
//   1. suppress: ids in `suppressed` get -inf (EOS and stop ids before min_tokens is reached), and
//      so do ids outside the `allowed` mask when there is one (structured output: the tokens the
//      response format allows next, engine/token_constraint.h); then the request's logit_bias is
//      added (a suppressed id stays -inf);
//   2. penalties: repetition (prompt + output tokens: positive logits divided, negative multiplied),
//      then presence and frequency (output tokens only: logit -= presence + frequency * count);
//   3. temperature 0 -> greedy argmax (ties: lowest id). Otherwise logits / temperature, then
//      top-k, top-p (smallest set whose probability reaches top_p), min-p (drop tokens whose
//      probability is below min_p * max probability), renormalize, draw.
// Candidates are ranked by probability, ties by lower id: top-k keeps the first k of that order and
// the draw inverts the cumulative distribution along it. NaN logits count as -inf; when no token
// is left with any probability (all suppressed), the lowest id is returned.
// The draw uses a counter-based generator keyed by (seed, index of the token in the output), so
// the same seed and the same request give the same tokens whatever else is in the batch, and a
// preempted request recomputed later continues exactly as it would have.
// Logprobs are the model's own: log_softmax of the raw logits, before any step above.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/block_pool.h"
#include "engine/request.h"
#include "engine/sample_uniform.h"
#include "engine/status.h"

namespace kvserve {

inline constexpr int kMaxTopLogprobs = 20;
inline constexpr int kMaxLogitBias = 1024;           // entries per request
inline constexpr float kMaxLogitBiasValue = 100.0f;  // |bias| at most, as OpenAI's API allows

// Checks every field; the message names the field and the allowed range. Token ids (of
// logit_bias too) are checked against the vocabulary by the engine, which knows it.
Status validate_sampling_params(const SamplingParams& params);

// sample_uniform(seed, index) (engine/sample_uniform.h): the uniform number in [0, 1) that draws
// the token at `index` of a request's output with `seed`. Public so that tests can check draws
// against an independent reference, and shared with the GPU sampler.

struct SampleInput {
  std::span<const float> logits;  // [vocab]
  const SamplingParams* params;
  std::span<const TokenId> prompt;
  std::span<const TokenId> output;  // tokens generated so far
  uint64_t seed;                    // the request's seed (resolved by the engine when unset)
  std::span<const TokenId> suppressed;
  // Empty: every id may be drawn. Otherwise a bitmask over the vocabulary, bit (id % 32) of word
  // id / 32 set when the id may be drawn; ids past the mask's end may not.
  std::span<const uint32_t> allowed;
};

// True when `allowed` (a SampleInput::allowed mask) lets `id` be drawn.
inline bool token_allowed(std::span<const uint32_t> allowed, TokenId id) {
  if (allowed.empty()) return true;
  const size_t word = static_cast<size_t>(id) / 32;
  return id >= 0 && word < allowed.size() && ((allowed[word] >> (id % 32)) & 1u) != 0;
}

struct SampledToken {
  TokenId token = -1;
  float logprob = 0.0f;                                 // of `token` under the raw logits
  std::vector<std::pair<TokenId, float>> top_logprobs;  // params->top_logprobs best, descending
};

struct LogSoftmax;

class Sampler {
 public:
  SampledToken sample(const SampleInput& in);
  // Prompt logprobs: `token` (not drawn: given) with its logprob and num_top_logprobs alternatives
  // under the raw logits, as sample() reports a drawn token's. An id outside the vocabulary gets
  // logprob 0 and no alternatives (the engine validates ids before this).
  SampledToken score(std::span<const float> logits, TokenId token, int num_top_logprobs);

 private:
  void add_top_logprobs(std::span<const float> logits, const LogSoftmax& log_softmax, int count,
                        SampledToken& out);

  // Scratch reused between calls, so a step allocates nothing once warm.
  std::vector<double> work_;                      // penalized logits
  std::vector<std::pair<double, int32_t>> cand_;  // (unnormalized probability, id) of candidates
  std::vector<int32_t> order_;                    // ids, for the top_logprobs selection
  std::vector<uint8_t> seen_;                     // all zero between calls
  std::vector<int32_t> counts_;                   // all zero between calls
};

}  // namespace kvserve
