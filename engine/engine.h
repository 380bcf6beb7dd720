// Engine: the step loop that ties scheduler, batch builder, backend and sampling together, and the
// offline API (submit requests, step until done, collect outputs). The server drives this same code.
//
// Not thread-safe: one thread owns an Engine and calls everything on it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "engine/status.h"

namespace kvserve {

struct EngineConfig {
  SchedulerConfig scheduler;
  std::vector<TokenId> eos_token_ids;
};

// A finished request as the offline API returns it.
struct GenerationResult {
  RequestId id;
  Status status;  // not ok: the request was rejected and generated nothing
  std::vector<TokenId> output;
  FinishReason finish = FinishReason::kNone;
  int num_prompt_tokens = 0;
  int num_cached_prompt_tokens = 0;
};

class Engine {
 public:
  Engine(const EngineConfig& config, std::unique_ptr<Backend> backend);

  Status add_request(Request request);
  Status abort(const RequestId& id);
  // One step: schedule, build the batch, run the backend, pick tokens, apply them. Returns what
  // happened to each sequence that produced a token. Does nothing when no request is pending.
  std::vector<SequenceEvent> step();
  bool has_unfinished() const { return scheduler_.has_unfinished(); }

  // Offline API: runs the requests to completion alongside anything already queued, returning one
  // result per request in the order given.
  std::vector<GenerationResult> generate(std::vector<Request> requests);

  const Scheduler& scheduler() const { return scheduler_; }
  const Backend& backend() const { return *backend_; }
  uint64_t num_steps() const { return num_steps_; }

 private:
  EngineConfig config_;
  std::unique_ptr<Backend> backend_;
  Scheduler scheduler_;
  BatchBuilder batch_builder_;
  std::vector<TokenId> sampled_;
  uint64_t num_steps_ = 0;
};

}  // namespace kvserve
