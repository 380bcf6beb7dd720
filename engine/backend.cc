#include "engine/backend.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace kvserve {

void Backend::forward_and_sample(const StepBatch& batch, std::span<const SamplingTask> tasks,
                                 std::span<SampledToken> out) {
  if (out.size() != tasks.size()) throw std::logic_error("forward_and_sample: one output per task");
  const std::span<const float> logits = forward(batch);
  const size_t vocab = static_cast<size_t>(vocab_size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    const SamplingTask& t = tasks[i];
    out[i] = host_sampler_.sample(SampleInput{logits.subspan(static_cast<size_t>(t.row) * vocab, vocab),
                                              t.params, t.prompt, t.output, t.seed, t.suppressed, t.allowed});
  }
}

std::span<const float> Backend::token_logits(const StepBatch&, std::span<const int>) {
  throw std::logic_error("the " + name() + " backend cannot compute logits at prompt positions");
}

std::span<const float> Backend::hidden_states(const StepBatch&, std::span<const int>) {
  throw std::logic_error("the " + name() + " backend cannot return hidden states");
}

void Backend::score_tokens(const StepBatch& batch, std::span<const ScoringTask> tasks,
                           std::span<SampledToken> out) {
  if (out.size() != tasks.size()) throw std::logic_error("score_tokens: one output per task");
  // Rows per token_logits() call: a long prompt's positions times a large vocabulary would not fit
  // in memory at once (8k positions x 152k ids of float32 is 5 GB).
  constexpr size_t kRowsPerCall = 64;
  const size_t vocab = static_cast<size_t>(vocab_size());
  std::vector<int> indices;
  for (size_t first = 0; first < tasks.size(); first += kRowsPerCall) {
    const size_t count = std::min(kRowsPerCall, tasks.size() - first);
    indices.clear();
    for (size_t i = first; i < first + count; ++i)
      indices.push_back(tasks[i].token_index);
    const std::span<const float> logits = token_logits(batch, indices);
    for (size_t i = 0; i < count; ++i) {
      const ScoringTask& t = tasks[first + i];
      out[first + i] = host_sampler_.score(logits.subspan(i * vocab, vocab), t.target, t.num_top_logprobs);
    }
  }
}

}  // namespace kvserve
