// EngineRunner: runs the Engine on a thread of its own — the only thread that ever touches engine,
// scheduler or cache state — and connects it to the server's threads: submit() and abort() post to
// an inbox, and each request's outputs go to the OutputChannel it was submitted with.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"

namespace kvserve {

class Metrics;

// Receives one request's outputs, in order, on the engine thread; the last has finish != kNone.
// Implementations must return quickly and never block on the network.
class OutputChannel {
 public:
  virtual ~OutputChannel() = default;
  virtual void on_output(StepOutput output) = 0;
};

struct EngineRunnerOptions {
  // Requests queued beyond the running seats (max_num_seqs) free at the last step; more get
  // RESOURCE_EXHAUSTED. 0 = no limit.
  int max_waiting = 1024;
  Metrics* metrics = nullptr;  // optional
  // Sleep after every step: makes the tiny test model slow enough to cancel, drain or queue up
  // against in tests and demos. 0 in production.
  std::chrono::milliseconds step_delay{0};
  // Called once, on the engine thread, if an engine step throws (a CUDA error, a broken batch):
  // by then every request has ended (UNAVAILABLE to its client, which may retry elsewhere) and
  // submit() refuses new ones. The engine's state is not trusted after that, so it never steps
  // again; the server stops and exits non-zero for its supervisor to restart it.
  std::function<void(const std::string& what)> on_engine_failure;
  // The LoRA adapters' names, in --lora-modules order (a request's lora_adapter i is names[i - 1]):
  // what the metrics count their requests under.
  std::vector<std::string> lora_adapters;
};

// What GetServerStatus reports; refreshed after every engine step.
struct EngineStatus {
  int num_running = 0;
  int num_waiting = 0;  // queued in the scheduler, or accepted and on their way to it
  int kv_blocks_total = 0;
  int kv_blocks_free = 0;
  int kv_blocks_cached = 0;
  uint64_t requests_served = 0;
  uint64_t preemptions = 0;
  int64_t kv_slots_unfilled = 0;
  uint64_t draft_tokens = 0;  // SchedulerStats::num_draft_tokens
  uint64_t accepted_draft_tokens = 0;
  bool draining = false;
};

class EngineRunner {
 public:
  EngineRunner(std::unique_ptr<Engine> engine, EngineRunnerOptions options);
  ~EngineRunner();

  // Validates and queues a request; request.id is replaced by a unique internal id, returned in
  // `id_out` for abort(). On error nothing is queued and the channel is never called.
  Status submit(Request request, std::shared_ptr<OutputChannel> channel, RequestId* id_out);
  // The same for several requests at once (the choices of one call), all or none: each is
  // validated, the queue must have room for all of them, and they reach the engine in the same
  // step, in order, so that later ones find the first one's prompt blocks in the prefix cache.
  // channels[i] receives requests[i]'s outputs; ids_out gets their internal ids in order.
  Status submit_all(std::vector<Request> requests, std::vector<std::shared_ptr<OutputChannel>> channels,
                    std::vector<RequestId>* ids_out);
  // Ends a request (client cancel, deadline): its blocks are freed at the start of the next step
  // and its channel gets a final output with finish kAborted. Unknown or finished ids are ignored.
  void abort(const RequestId& id);

  // Refuses new requests from now on (UNAVAILABLE); running ones go on.
  void start_draining();
  // Waits until no request is left or `grace` has passed; returns true if none is left.
  bool wait_idle(std::chrono::milliseconds grace);
  // Aborts whatever is left and stops the engine thread. Idempotent.
  void stop();
  // Why the engine failed (what its step threw), or empty while it has not.
  std::string failure() const;

  EngineStatus status() const;
  // The engine's immutable parts (configuration, backend name, validation) are safe to read from
  // any thread; nothing else of it is.
  const Engine& engine() const { return *engine_; }

 private:
  struct Pending {
    Request request;
    std::string client_id;  // the caller's id, for the log line
    std::shared_ptr<OutputChannel> channel;
    std::chrono::steady_clock::time_point arrival;
  };
  struct Live {
    std::string client_id;
    // An embedding request (Request::embedding): its one drawn token is not an output, so it ends
    // as "embedded" in the log and metrics, with no generated token and no time to first token.
    bool embedding = false;
    std::shared_ptr<OutputChannel> channel;
    std::chrono::steady_clock::time_point arrival;
    // The start of the first step that ran it (its wait in the queue ends there), if any did.
    std::optional<std::chrono::steady_clock::time_point> first_scheduled;
    std::chrono::steady_clock::time_point first_token;
    int num_prompt_tokens = 0;
    int num_output_tokens = 0;
    int num_cached_prompt_tokens = 0;
    int lora_adapter = 0;  // Request::lora_adapter: 0 for none, else 1-based
  };

  void loop();
  void admit(std::vector<Pending>& pending);
  // Ends the wait in the queue of the requests the last step (started at `step_start`) ran first.
  void note_first_scheduled(std::chrono::steady_clock::time_point step_start);
  // Sends the final output and forgets the request.
  void end_request(const RequestId& id, Live& live, StepOutput final_output);
  // Copies the scheduler's state into the status GetServerStatus reads; `finishing` requests the
  // last step ended, not yet delivered, count as served. `after_step`: a step just ran, so whether
  // the pool held the queue back is its.
  void publish_status(int finishing = 0, bool after_step = false);

  std::unique_ptr<Engine> engine_;
  EngineRunnerOptions options_;

  mutable std::mutex mu_;
  std::condition_variable wake_;     // inbox or abort posted, or stop
  std::condition_variable idle_cv_;  // a request finished
  std::vector<Pending> inbox_;
  std::vector<RequestId> aborts_;
  bool stop_ = false;
  bool draining_ = false;
  std::string failure_;  // set once, when a step throws
  int in_flight_ = 0;    // submitted and not yet finished
  EngineStatus status_;
  // The last step left requests waiting for lack of KV blocks (SchedulerStats::
  // admission_short_of_blocks): submit() counts no seat as free. Cleared once nothing waits.
  bool seats_lack_blocks_ = false;
  uint64_t next_id_ = 0;

  // Engine-thread state.
  std::unordered_map<RequestId, Live> live_;
  uint64_t served_ = 0;
  int ended_since_publish_ = 0;

  std::thread thread_;
};

}  // namespace kvserve
