#include "engine/backend.h"

#include <stdexcept>

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

}  // namespace kvserve
