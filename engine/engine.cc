#include "engine/engine.h"

#include <algorithm>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "engine/sequence.h"

namespace kvserve {

Engine::Engine(const EngineConfig& config, std::unique_ptr<Backend> backend)
    : config_(config), backend_(std::move(backend)), scheduler_(config.scheduler) {
  if (!backend_) throw std::invalid_argument("Engine: no backend");
}

Status Engine::add_request(Request request) {
  const int vocab = backend_->vocab_size();
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    const TokenId t = request.prompt[i];
    if (t < 0 || t >= vocab)
      return Status::InvalidArgument("prompt token " + std::to_string(i) + " has id " + std::to_string(t) +
                                     ", outside the vocabulary [0, " + std::to_string(vocab) + ")");
  }
  return scheduler_.add(
      std::make_unique<Sequence>(std::move(request), config_.scheduler.block_size, config_.eos_token_ids));
}

Status Engine::abort(const RequestId& id) {
  return scheduler_.finish(id, FinishReason::kAborted);
}

std::vector<SequenceEvent> Engine::step() {
  const StepPlan plan = scheduler_.schedule();
  if (plan.empty()) return {};
  const StepBatch& batch = batch_builder_.build(plan, config_.scheduler.block_size);
  const std::span<const float> logits = backend_->forward(batch);
  const int vocab = backend_->vocab_size();
  // Greedy choice; the full sampler replaces this when it lands.
  sampled_.assign(plan.seqs.size(), 0);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    if (!plan.seqs[i].emits_token) continue;
    const float* row = logits.data() + i * vocab;
    sampled_[i] = static_cast<TokenId>(std::max_element(row, row + vocab) - row);
  }
  ++num_steps_;
  return scheduler_.complete_step(plan, sampled_);
}

std::vector<GenerationResult> Engine::generate(std::vector<Request> requests) {
  std::vector<GenerationResult> results(requests.size());
  std::unordered_map<RequestId, size_t> index;
  for (size_t i = 0; i < requests.size(); ++i) {
    results[i].id = requests[i].id;
    results[i].num_prompt_tokens = static_cast<int>(requests[i].prompt.size());
    results[i].status = add_request(std::move(requests[i]));
    if (results[i].status.ok()) index.emplace(results[i].id, i);
  }
  size_t pending = index.size();
  while (pending > 0 && has_unfinished()) {
    for (const SequenceEvent& e : step()) {
      auto it = index.find(e.id);
      if (it == index.end()) continue;
      GenerationResult& r = results[it->second];
      r.output.push_back(e.token);
      r.num_cached_prompt_tokens = e.num_cached_prompt_tokens;
      if (e.finish != FinishReason::kNone) {
        r.finish = e.finish;
        --pending;
      }
    }
  }
  return results;
}

}  // namespace kvserve
