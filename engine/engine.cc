#include "engine/engine.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

#include "engine/response_format.h"
#include "engine/sequence.h"
#include "engine/token_constraint.h"

namespace kvserve {

Engine::Engine(const EngineConfig& config, std::unique_ptr<Backend> backend)
    : config_(config),
      backend_(std::move(backend)),
      scheduler_(config.scheduler),
      seed_source_(std::random_device{}()) {
  if (!backend_) throw std::invalid_argument("Engine: no backend");
}

Status Engine::validate(const Request& request) const {
  const int vocab = backend_->vocab_size();
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    const TokenId t = request.prompt[i];
    if (t < 0 || t >= vocab)
      return Status::InvalidArgument("prompt token " + std::to_string(i) + " has id " + std::to_string(t) +
                                     ", outside the vocabulary [0, " + std::to_string(vocab) + ")");
  }
  if (Status s = validate_sampling_params(request.sampling); !s.ok()) return s;
  if (request.sampling.prompt_logprobs >= 0 && !backend_->scores_tokens())
    return Status::InvalidArgument("prompt_logprobs: the " + backend_->name() +
                                   " backend cannot score prompt tokens; leave it unset");
  for (const TokenId t : request.stop.stop_token_ids) {
    if (t < 0 || t >= vocab)
      return Status::InvalidArgument("stop token id " + std::to_string(t) +
                                     " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  }
  for (const auto& [t, bias] : request.sampling.logit_bias) {
    if (t < 0 || t >= vocab)
      return Status::InvalidArgument("logit_bias token id " + std::to_string(t) +
                                     " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  }
  if (request.constraint) {
    if (Status s = check_stop_criteria_for_response_format(request.stop); !s.ok()) return s;
    if (request.constraint->vocab().vocab_size() != vocab)
      return Status::Internal("response_format was compiled for a vocabulary of " +
                              std::to_string(request.constraint->vocab().vocab_size()) +
                              " tokens, the model has " + std::to_string(vocab));
  }
  const bool has_stop_strings = std::any_of(request.stop.stop.begin(), request.stop.stop.end(),
                                            [](const std::string& s) { return !s.empty(); });
  if (has_stop_strings && !config_.tokenizer)
    return Status::InvalidArgument(
        "stop strings need a tokenizer, and this model has none; use stop_token_ids");
  if (request.embedding.enabled) {
    if (!backend_->scores_tokens())
      return Status::InvalidArgument("embeddings: the " + backend_->name() +
                                     " backend cannot return hidden states");
    if (request.stop.max_tokens != 1)
      return Status::InvalidArgument("an embedding request generates no text: its max_tokens must be 1");
    if (request.embedding.dimensions < 0)
      return Status::InvalidArgument("embedding dimensions must be positive (or 0 for all)");
  }
  if (request.lora_adapter < 0 || request.lora_adapter > backend_->num_lora_adapters())
    return Status::InvalidArgument("LoRA adapter " + std::to_string(request.lora_adapter) +
                                   " is not served (the " + backend_->name() + " backend has " +
                                   std::to_string(backend_->num_lora_adapters()) + ")");
  if (Status s = scheduler_.check_priority(request.priority); !s.ok()) return s;
  return scheduler_.check_fits(static_cast<int>(request.prompt.size()), request.stop);
}

Status Engine::add_request(Request request) {
  if (Status s = validate(request); !s.ok()) return s;
  std::erase(request.stop.stop, std::string());

  RequestState state;
  state.seed = request.sampling.seed.value_or(seed_source_());
  if (request.sampling.prompt_logprobs >= 0) {
    state.prompt_logprobs_pending = true;
    state.prompt = request.prompt;
  }
  state.embedding_params = request.embedding;
  if (config_.tokenizer && !request.embedding.enabled)  // an embedding's one token has no text
    state.detokenizer = std::make_unique<IncrementalDetokenizer>(
        *config_.tokenizer, request.prompt, request.stop.stop, request.stop.min_tokens,
        /*continuation=*/request.constraint != nullptr, request.stop.include_stop_str_in_output,
        request.kept_control_tokens);
  const RequestId id = request.id;
  Status s = scheduler_.add(
      std::make_unique<Sequence>(std::move(request), config_.scheduler.block_size, config_.eos_token_ids));
  if (s.ok()) states_.emplace(id, std::move(state));
  return s;
}

Status Engine::abort(const RequestId& id) {
  Status s = scheduler_.finish(id, FinishReason::kAborted);
  if (s.ok()) states_.erase(id);
  return s;
}

std::vector<StepOutput> Engine::step() {
  first_scheduled_.clear();
  const StepPlan plan = scheduler_.schedule();
  if (plan.empty()) return {};
  for (const ScheduledSequence& s : plan.seqs) {
    RequestState& state = states_.at(s.seq->id());
    if (!state.scheduled) first_scheduled_.push_back(s.seq->id());
    state.scheduled = true;
  }
  const StepBatch& batch = batch_builder_.build(plan, config_.scheduler.block_size);
  // One sampling task per token a sequence may produce: at its last input, and for a sequence with
  // a draft, at each input a draft token follows, as if the draft so far were its output (so each
  // draw is the one decoding without the draft would make there: the same history for penalties,
  // the same constraint state, the same draw index). The backend samples where the logits are.
  tasks_.clear();
  task_sample_index_.clear();
  suppressed_.resize(plan.seqs.size());
  drafted_outputs_.resize(plan.seqs.size());
  size_t sample_index = 0;         // into complete_step's `sampled`: a run per sequence
  int draft_row = batch.num_seqs;  // logits rows that check drafts follow the sequences' rows
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSequence& s = plan.seqs[i];
    const size_t run = sample_index;
    sample_index += 1 + static_cast<size_t>(s.num_draft_tokens);
    const int first_draft_row = draft_row;
    draft_row += s.num_draft_tokens;
    if (!s.emits_token) continue;
    const Sequence& seq = *s.seq;
    // Before min_tokens, the tokens that would stop the request are not candidates at all.
    std::vector<TokenId>& suppressed = suppressed_[i];
    suppressed.clear();
    if (seq.num_output_tokens() < seq.stop().min_tokens) {
      if (!seq.stop().ignore_eos) suppressed = config_.eos_token_ids;
      suppressed.insert(suppressed.end(), seq.stop().stop_token_ids.begin(), seq.stop().stop_token_ids.end());
    }
    std::span<const TokenId> output = seq.output();
    if (s.num_draft_tokens > 0) {
      std::vector<TokenId>& drafted = drafted_outputs_[i];
      drafted.assign(output.begin(), output.end());
      drafted.insert(drafted.end(), seq.draft().begin(), seq.draft().end());
      output = drafted;
    }
    const int num_output = seq.num_output_tokens();
    for (int j = 0; j <= s.num_draft_tokens; ++j) {
      const bool suppress = num_output + j < seq.stop().min_tokens;
      tasks_.push_back(
          SamplingTask{j < s.num_draft_tokens ? first_draft_row + j : static_cast<int>(i), &seq.sampling(),
                       seq.tokens().first(seq.num_prompt_tokens()),
                       output.first(static_cast<size_t>(num_output + j)), states_.at(seq.id()).seed,
                       suppress ? std::span<const TokenId>(suppressed) : std::span<const TokenId>(),
                       seq.allowed_tokens_after_draft(j)});
      task_sample_index_.push_back(run + static_cast<size_t>(j));
    }
  }
  task_results_.assign(tasks_.size(), SampledToken{});
  backend_->forward_and_sample(batch, tasks_, task_results_);
  for (size_t k = 0; k < tasks_.size(); ++k) {
    // A sampler left with no finite logit among the allowed tokens (a broken model output) falls
    // back to the lowest id, which the structured-output mask may forbid; its lowest allowed id
    // keeps the output on the pattern instead.
    const std::span<const uint32_t> allowed = tasks_[k].allowed;
    SampledToken& r = task_results_[k];
    if (token_allowed(allowed, r.token)) continue;
    for (size_t w = 0; w < allowed.size(); ++w) {
      if (allowed[w] == 0) continue;
      r.token = static_cast<TokenId>(w * 32 + static_cast<size_t>(std::countr_zero(allowed[w])));
      r.logprob = -std::numeric_limits<float>::infinity();
      break;
    }
  }

  score_prompts(plan, batch);
  take_embeddings(plan, batch);

  sampled_.assign(sample_index, SampledToken{});
  sampled_ids_.assign(sample_index, -1);
  for (size_t k = 0; k < tasks_.size(); ++k) {
    const size_t i = task_sample_index_[k];
    sampled_[i] = std::move(task_results_[k]);
    sampled_ids_[i] = sampled_[i].token;
  }
  ++num_steps_;

  std::vector<StepOutput> outputs;
  for (const SequenceEvent& e : scheduler_.complete_step(plan, sampled_ids_)) {
    // A stop string may end a request at one of several tokens its draft let this step produce.
    if (!states_.contains(e.id)) continue;
    SampledToken& sampled = sampled_[e.sample_index];
    StepOutput out{e.id,
                   e.token,
                   sampled.logprob,
                   std::move(sampled.top_logprobs),
                   {},
                   e.finish,
                   e.num_prompt_tokens,
                   e.num_output_tokens,
                   e.num_cached_prompt_tokens,
                   {},
                   {},
                   {}};
    RequestState& state = states_.at(e.id);
    if (state.prompt_logprobs_pending) {
      // Every prompt position is scored by the step that emits the first token.
      state.prompt_logprobs_pending = false;
      out.prompt_token_ids = std::move(state.prompt);
      out.prompt_logprobs = std::move(state.prompt_logprobs);
    }
    out.embedding = std::move(state.embedding);
    if (state.detokenizer) {
      IncrementalDetokenizer::Delta delta = state.detokenizer->push(e.token);
      out.text = std::move(delta.text);
      if (delta.stopped) {
        // A stop string ends the request even if a token rule ended it in the same step.
        if (out.finish == FinishReason::kNone) scheduler_.finish(e.id, FinishReason::kStop);
        out.finish = FinishReason::kStop;
        out.stop = std::move(delta.stop);
      } else if (out.finish != FinishReason::kNone) {
        out.text += state.detokenizer->finish();
      }
    }
    if (out.finish != FinishReason::kNone) states_.erase(e.id);
    outputs.push_back(std::move(out));
  }
  return outputs;
}

void Engine::score_prompts(const StepPlan& plan, const StepBatch& batch) {
  struct Scored {
    Sequence* seq;
    int first, end;  // the prompt positions this step scores for it
  };
  std::vector<Scored> scored;
  scoring_tasks_.clear();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSequence& s = plan.seqs[i];
    if (!s.seq->scoring_prompt()) continue;
    // The chunk's positions not scored yet; the chunk starts at or before the next one, since the
    // prefix cache served none past it.
    const Scored range{s.seq, std::max(s.start_pos, s.seq->next_position_to_score()),
                       std::min(s.start_pos + s.num_new_tokens, s.seq->num_prompt_positions_to_score())};
    for (int p = range.first; p < range.end; ++p)
      scoring_tasks_.push_back(ScoringTask{batch.query_start_loc[i] + (p - s.start_pos),
                                           s.seq->tokens()[static_cast<size_t>(p) + 1],
                                           s.seq->sampling().prompt_logprobs});
    if (range.first < range.end) scored.push_back(range);
  }
  if (scoring_tasks_.empty()) return;
  scoring_results_.assign(scoring_tasks_.size(), SampledToken{});
  backend_->score_tokens(batch, scoring_tasks_, scoring_results_);
  size_t k = 0;
  for (const Scored& range : scored) {
    std::vector<SampledToken>& scores = states_.at(range.seq->id()).prompt_logprobs;
    for (int p = range.first; p < range.end; ++p)
      scores.push_back(std::move(scoring_results_[k++]));
    range.seq->set_next_position_to_score(range.end);
  }
}

void Engine::take_embeddings(const StepPlan& plan, const StepBatch& batch) {
  embedding_tokens_.clear();
  embedding_of_.clear();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSequence& s = plan.seqs[i];
    if (!s.emits_token) continue;
    RequestState& state = states_.at(s.seq->id());
    if (!state.embedding_params.enabled) continue;
    // Its query ends with the prompt's last token (it drafts nothing: max_tokens is 1).
    embedding_tokens_.push_back(batch.query_start_loc[i + 1] - 1 - s.num_draft_tokens);
    embedding_of_.push_back(&state);
  }
  if (embedding_tokens_.empty()) return;
  const std::span<const float> hidden = backend_->hidden_states(batch, embedding_tokens_);
  const size_t width = hidden.size() / embedding_tokens_.size();
  for (size_t k = 0; k < embedding_of_.size(); ++k) {
    RequestState& state = *embedding_of_[k];
    const EmbeddingParams& p = state.embedding_params;
    const size_t kept = p.dimensions > 0 ? std::min(width, static_cast<size_t>(p.dimensions)) : width;
    state.embedding.assign(hidden.begin() + static_cast<std::ptrdiff_t>(k * width),
                           hidden.begin() + static_cast<std::ptrdiff_t>(k * width + kept));
    if (!p.normalize) continue;
    double sum_squares = 0.0;
    for (const float x : state.embedding)
      sum_squares += static_cast<double>(x) * x;
    // A zero vector stays zero (sentence-transformers divides by max(norm, 1e-12) too).
    const double scale = 1.0 / std::max(std::sqrt(sum_squares), 1e-12);
    for (float& x : state.embedding)
      x = static_cast<float>(x * scale);
  }
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
    for (StepOutput& out : step()) {
      auto it = index.find(out.id);
      if (it == index.end()) continue;
      GenerationResult& r = results[it->second];
      r.output.push_back(out.token);
      r.logprobs.push_back(out.logprob);
      r.text += out.text;
      r.num_cached_prompt_tokens = out.num_cached_prompt_tokens;
      if (!out.prompt_logprobs.empty()) r.prompt_logprobs = std::move(out.prompt_logprobs);
      if (!out.embedding.empty()) r.embedding = std::move(out.embedding);
      if (out.finish != FinishReason::kNone) {
        r.finish = out.finish;
        --pending;
      }
    }
  }
  return results;
}

}  // namespace kvserve
