// Sampling on the GPU: each row of the LM head's fp32 logits becomes one token id (plus logprobs
// when asked) without the logits leaving the device. Same semantics as the host Sampler
// (engine/sampler.h, the reference): suppression (of listed ids and of ids outside a structured
// output's token mask), logit_bias, repetition / presence / frequency penalties, greedy argmax with ties to
// the lowest id, temperature, top-k, top-p, min-p, and a draw that inverts the cumulative distribution along
// (probability desc, id asc) with the uniform sample_uniform(seed, draw_index) - the very same number the
// host would use, so a request's seed means the same thing on both backends. Logprobs are log_softmax of the
// raw logits (no bias, no penalty).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace kvserve::cuda {

inline constexpr int kMaxGpuTopLogprobs = 20;  // == engine's kMaxTopLogprobs

// One row to sample: plain data, copied to the device as an array.
struct SamplingRow {
  int32_t logits_row = 0;  // row of the logits matrix
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t num_top_logprobs = 0;  // 0..kMaxGpuTopLogprobs
  uint64_t seed = 0;
  uint64_t draw_index = 0;  // the number of tokens generated so far
  // Token history (only needed when a penalty is on): prompt tokens then output tokens, at
  // history[history_offset ...].
  int32_t history_offset = 0;
  int32_t num_prompt_tokens = 0;
  int32_t num_output_tokens = 0;
  // Ids that get -inf before anything else (EOS and stop ids before min_tokens), at
  // suppressed[suppressed_offset ...].
  int32_t suppressed_offset = 0;
  int32_t num_suppressed = 0;
  // logit_bias: bias_values[bias_offset + j] is added to the logit of bias_ids[bias_offset + j],
  // j < num_bias, after the suppression and before the penalties (a suppressed id stays -inf).
  // Ids must be unique (the engine validates them); ids outside the vocabulary are skipped.
  int32_t bias_offset = 0;
  int32_t num_bias = 0;
  // Structured output's token mask (engine/sampler.h's SampleInput::allowed), at
  // allowed_words[allowed_offset ...]: id i may be drawn only when i / 32 < num_allowed_words and
  // bit i % 32 of word i / 32 is set. A masked-out id is a suppressed one (-inf before the bias and
  // the penalties). -1: no mask, every id allowed.
  int32_t allowed_offset = -1;
  int32_t num_allowed_words = 0;
  // Prompt logprobs: an id in [0, vocab) is reported as the row's token (with its logprob and the
  // top_logprobs) in place of the one sampled; give such a row temperature 0 and nothing else, so
  // that nothing is drawn. -1: the sampled token.
  int32_t forced_token = -1;
};

struct SampledRow {
  int32_t token = -1;
  float logprob = 0.0f;
  int32_t top_ids[kMaxGpuTopLogprobs];
  float top_logprobs[kMaxGpuTopLogprobs];  // descending; the first num_top_logprobs are valid
};

// Scratch for sample_rows (per-row state and weights; logit_bias and the token masks need none of
// their own).
size_t sampling_workspace_bytes(int num_rows, int vocab);

// rows, history, suppressed, bias_ids, bias_values, allowed_words and out are device arrays; logits
// is [>= max logits_row + 1][vocab]. bias_ids and bias_values may be null when no row has
// num_bias > 0, allowed_words when no row has allowed_offset >= 0 (likewise history and suppressed
// for rows that use none).
void sample_rows(const float* logits, int vocab, const SamplingRow* rows, int num_rows,
                 const int32_t* history, const int32_t* suppressed, const int32_t* bias_ids,
                 const float* bias_values, const uint32_t* allowed_words, void* workspace,
                 size_t workspace_bytes, SampledRow* out, cudaStream_t stream);

}  // namespace kvserve::cuda
