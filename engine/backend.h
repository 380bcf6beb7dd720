// Backend: the only seam between host logic and the code that runs the model (CPU or CUDA).
// A backend owns the KV pool's memory (num_blocks * block_size slots per layer) and runs one forward
// pass per step over a StepBatch, then picks each sampled sequence's next token.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/step_batch.h"

namespace kvserve {

// One sequence of the batch whose next token is sampled this step: a SampleInput without the
// logits, which stay wherever the backend computed them.
struct SamplingTask {
  int row = 0;  // the row of forward()'s logits: the sequence's index, or a row that checks a draft
  const SamplingParams* params = nullptr;
  std::span<const TokenId> prompt;
  std::span<const TokenId> output;  // tokens generated so far
  uint64_t seed = 0;
  std::span<const TokenId> suppressed;
  std::span<const uint32_t> allowed;  // structured output's token mask (engine/sampler.h)
};

// Prompt logprobs: one position of a prompt whose logits score the prompt's next token. The
// logits are those the last forward pass computed at the batch's flat token `token_index`.
struct ScoringTask {
  int token_index = 0;
  TokenId target = 0;        // the token that follows it in the prompt
  int num_top_logprobs = 0;  // alternatives to report, 0..kMaxTopLogprobs
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual int vocab_size() const = 0;
  // LoRA adapters the backend applies (engine/lora.h): a request's lora_adapter is in [0, this].
  virtual int num_lora_adapters() const { return 0; }
  // Writes the K/V of every token in the batch at its slot, attends through the block tables, and
  // returns the logits at the tokens batch.logits_indices names: [its size x vocab_size()],
  // row-major, valid until the next call; row s < num_seqs is sequence s's last token. Rows of
  // sequences whose emits_token is 0 are unspecified.
  // Contract: within each layer, all of the batch's K/V writes happen before any attention read, so
  // a sequence may attend to blocks that another sequence of the same batch fills (prefix sharing
  // between requests admitted together). A backend that throws leaves the cache undefined: the
  // engine treats that as fatal.
  virtual std::span<const float> forward(const StepBatch& batch) = 0;

  // What the engine calls each step: the forward pass, then one token per task (out[i] for
  // tasks[i]) under the Sampler's rules (engine/sampler.h). This default samples forward()'s
  // logits on the host; a GPU backend overrides it to sample on the device, so that only token ids
  // and logprobs come back, never the logits.
  virtual void forward_and_sample(const StepBatch& batch, std::span<const SamplingTask> tasks,
                                  std::span<SampledToken> out);

  // Prompt logprobs, after forward_and_sample ran `batch`: the logits at the given flat token
  // indices of it, [token_indices.size() x vocab_size()] row-major, valid until the next call. The
  // backend keeps every token's final hidden state until the next forward pass for this. Only
  // backends whose scores_tokens() is true have it; the default throws std::logic_error.
  virtual bool scores_tokens() const { return false; }
  virtual std::span<const float> token_logits(const StepBatch& batch, std::span<const int> token_indices);
  // Embeddings, from the same kept states: the final hidden state (after the model's last norm,
  // what the LM head multiplies) at the given flat token indices of the last pass, [token_indices
  // .size() x hidden size] row-major, valid until the next call. Where scores_tokens() is true.
  virtual std::span<const float> hidden_states(const StepBatch& batch, std::span<const int> token_indices);
  // out[i] = the target's logprob and alternatives under the logits at tasks[i].token_index, as
  // Sampler::score gives them. This default scores token_logits() on the host, a few rows at a
  // time; a GPU backend overrides it to score on the device, so that the logits stay there.
  virtual void score_tokens(const StepBatch& batch, std::span<const ScoringTask> tasks,
                            std::span<SampledToken> out);

  // Seconds a separate device (the GPU) has spent on steps so far, from the first copy of a step to
  // its last; 0 for backends that compute on the calling thread. Step wall time minus this is the
  // host overhead during which the device sits idle.
  virtual double device_seconds() const { return 0.0; }

 private:
  Sampler host_sampler_;
};

}  // namespace kvserve
