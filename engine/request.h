// The Request struct crosses from the server into the engine: everything the engine needs to know
// about one generation, already tokenized. Defaults match the wire API's zero values where they
// mean "off" (temperature 0 = greedy, top_k 0 = all tokens, ...).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/block_pool.h"

namespace kvserve {

using RequestId = std::string;
class TokenConstraint;

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = no limit
  float top_p = 1.0f;        // in (0, 1]
  float min_p = 0.0f;        // in [0, 1]
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;
  int top_logprobs = 0;  // how many alternatives to report per token; 0 = none
  // Prompt logprobs: -1 = off; otherwise each prompt token after the first is reported with its
  // logprob under the tokens before it, and this many alternatives (0..kMaxTopLogprobs), once the
  // prompt has been computed (StepOutput::prompt_logprobs). Such a request's prompt is computed
  // whole: a position served from the prefix cache would have no logits to score.
  int prompt_logprobs = -1;
  // Added to the logits of these ids before penalties and sampling (OpenAI's logit_bias): -100
  // all but bans a token, +100 all but forces it. Ids unique and in the vocabulary, biases in
  // [-100, 100], at most kMaxLogitBias entries (engine/sampler.h).
  std::vector<std::pair<TokenId, float>> logit_bias;
};

struct StopCriteria {
  int max_tokens = 16;  // new tokens to generate at most; must be >= 1 when the engine sees it
  int min_tokens = 0;   // stops (EOS, stop ids, stop strings) are ignored before this many tokens
  bool ignore_eos = false;
  std::vector<TokenId> stop_token_ids;
  std::vector<std::string> stop;  // stop strings, matched on detokenized text (not by the scheduler)
  // The stop string that ended the output is kept at its end (vLLM's include_stop_str_in_output);
  // by default it is cut.
  bool include_stop_str_in_output = false;
};

// An embedding request (Generation.Embed, /v1/embeddings): the prompt is computed and the final
// hidden state at its last token (last-token pooling, as decoder embedding models such as
// Qwen3-Embedding and e5-mistral pool) comes back as StepOutput::embedding. Such a request has
// max_tokens 1; the one token it draws is not reported.
struct EmbeddingParams {
  bool enabled = false;
  int dimensions = 0;     // keep the first this many values (Matryoshka-trained models); 0 = all
  bool normalize = true;  // scale to unit L2 norm, after the truncation
};

struct Request {
  RequestId id;
  std::vector<TokenId> prompt;
  SamplingParams sampling;
  StopCriteria stop;
  // Structured output: only tokens that keep the output a prefix of a match of this pattern are
  // drawn, EOS only once it is a whole match (engine/token_constraint.h). Null: free text.
  std::shared_ptr<const TokenConstraint> constraint;
  // Scheduling priority (SchedulerConfig::policy kPriority): lower runs sooner, as vLLM's. Under
  // first-come-first-served it must be 0.
  int priority = 0;
  // Control tokens whose spelling the output's text keeps (all others are left out of it): the
  // markers of a tool-call format that are control tokens, for the server's reader.
  std::vector<TokenId> kept_control_tokens;
  EmbeddingParams embedding;
  // The LoRA adapter the request runs with: 0 for the base model, i for the backend's adapter i
  // (1-based, in --lora-modules order; engine/lora.h). Requests of different adapters never share
  // prefix-cache blocks: the same tokens have other K/V under another adapter.
  int lora_adapter = 0;
};

enum class FinishReason {
  kNone = 0,  // still running
  kLength,    // max_tokens reached, or the model's length limit
  kStop,      // EOS, a stop token id or a stop string
  kAborted,   // cancelled by the client (or by shutdown)
};

const char* finish_reason_name(FinishReason r);

}  // namespace kvserve
