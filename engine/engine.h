// Engine: the step loop that ties scheduler, batch builder, backend, sampler and detokenizer
// together, and the offline API (submit requests, step until done, collect outputs). The server
// drives this same code.
//
// Not thread-safe: one thread owns an Engine and calls everything on it.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "engine/detokenizer.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/status.h"
#include "engine/tokenizer.h"

namespace kvserve {

struct EngineConfig {
  SchedulerConfig scheduler;
  std::vector<TokenId> eos_token_ids;
  // Detokenizes outputs and applies stop strings; without one, outputs carry token ids only and
  // requests with stop strings are rejected.
  std::shared_ptr<const Tokenizer> tokenizer;
};

// One token one step produced for one request (a request whose draft was right gets several in a
// step, in order): the server turns each into a stream message.
struct StepOutput {
  RequestId id;
  TokenId token = -1;
  float logprob = 0.0f;
  std::vector<std::pair<TokenId, float>> top_logprobs;
  std::string text;  // newly released text (may be empty while held back)
  FinishReason finish = FinishReason::kNone;
  int num_prompt_tokens = 0;
  int num_output_tokens = 0;
  int num_cached_prompt_tokens = 0;
  // On the first output of a request that asked for prompt logprobs: its prompt, and for each
  // prompt token after the first its logprob and alternatives (prompt_logprobs[i] scores
  // prompt_token_ids[i + 1]).
  std::vector<TokenId> prompt_token_ids;
  std::vector<SampledToken> prompt_logprobs;
  std::vector<float> embedding;  // an embedding request's (Request::embedding), on its one output
  std::string stop;              // finish kStop by a stop string: that string ("" for a token)
};

// A finished request as the offline API returns it.
struct GenerationResult {
  RequestId id;
  Status status;  // not ok: the request was rejected and generated nothing
  std::vector<TokenId> output;
  std::vector<float> logprobs;
  std::string text;
  FinishReason finish = FinishReason::kNone;
  int num_prompt_tokens = 0;
  int num_cached_prompt_tokens = 0;
  std::vector<SampledToken> prompt_logprobs;  // as StepOutput's, when asked for
  std::vector<float> embedding;               // an embedding request's
};

class Engine {
 public:
  Engine(const EngineConfig& config, std::unique_ptr<Backend> backend);

  // Validates (token ids, sampling values, stop strings) and queues the request.
  Status add_request(Request request);
  // Every check add_request makes that does not depend on the engine's current state (everything
  // but a duplicate id or a full queue). Reads only configuration: safe to call from any thread.
  Status validate(const Request& request) const;
  Status abort(const RequestId& id);
  // One step: schedule, build the batch, run the backend, sample, apply stop rules. Returns one
  // output per token produced (one per request, or several for one whose draft was right). Does
  // nothing when no request is pending.
  std::vector<StepOutput> step();
  bool has_unfinished() const { return scheduler_.has_unfinished(); }
  // The requests the last step() ran for the first time: their wait in the queue ended with it (a
  // preempted request that runs again is not listed again).
  const std::vector<RequestId>& first_scheduled() const { return first_scheduled_; }

  // Offline API: runs the requests to completion alongside anything already queued, returning one
  // result per request in the order given.
  std::vector<GenerationResult> generate(std::vector<Request> requests);

  const Scheduler& scheduler() const { return scheduler_; }
  const Backend& backend() const { return *backend_; }
  uint64_t num_steps() const { return num_steps_; }

 private:
  // Per-request state the scheduler does not need.
  struct RequestState {
    uint64_t seed;
    bool scheduled = false;  // some step has run it
    std::unique_ptr<IncrementalDetokenizer> detokenizer;
    // Prompt logprobs, while the prompt is scored: the prompt, and the scores so far. They go out
    // with the request's first output.
    bool prompt_logprobs_pending = false;
    std::vector<TokenId> prompt;
    std::vector<SampledToken> prompt_logprobs;
    EmbeddingParams embedding_params;
    std::vector<float> embedding;  // taken at the step that computes the prompt's last token
  };
  // Scores the prompt positions this step computed for requests that asked for prompt logprobs.
  void score_prompts(const StepPlan& plan, const StepBatch& batch);
  // Takes the embeddings of the embedding requests whose prompt's last token this step computed.
  void take_embeddings(const StepPlan& plan, const StepBatch& batch);

  EngineConfig config_;
  std::unique_ptr<Backend> backend_;
  Scheduler scheduler_;
  BatchBuilder batch_builder_;
  std::mt19937_64 seed_source_;  // seeds for requests that did not set one
  std::unordered_map<RequestId, RequestState> states_;
  std::vector<SampledToken> sampled_;
  std::vector<TokenId> sampled_ids_;
  std::vector<SamplingTask> tasks_;
  std::vector<size_t> task_sample_index_;              // tasks_[k] draws sampled_[task_sample_index_[k]]
  std::vector<std::vector<TokenId>> drafted_outputs_;  // per plan index: output + draft
  std::vector<SampledToken> task_results_;
  std::vector<std::vector<TokenId>> suppressed_;  // per plan index; tasks_ point into these
  std::vector<RequestId> first_scheduled_;
  std::vector<ScoringTask> scoring_tasks_;
  std::vector<SampledToken> scoring_results_;
  std::vector<int> embedding_tokens_;        // flat token indices, for take_embeddings
  std::vector<RequestState*> embedding_of_;  // whose embedding each is
  uint64_t num_steps_ = 0;
};

}  // namespace kvserve
