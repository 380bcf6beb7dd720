#include "server/engine_runner.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "server/metrics.h"

namespace kvserve {
namespace {

using Clock = std::chrono::steady_clock;

// The last message of a request that ends without a token of its own (abort, shutdown).
StepOutput aborted_output(const RequestId& id) {
  StepOutput out;
  out.id = id;
  out.finish = FinishReason::kAborted;
  return out;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

EngineRunner::EngineRunner(std::unique_ptr<Engine> engine, EngineRunnerOptions options)
    : engine_(std::move(engine)), options_(options) {
  publish_status();
  thread_ = std::thread([this] { loop(); });
}

EngineRunner::~EngineRunner() {
  stop();
}

Status EngineRunner::submit(Request request, std::shared_ptr<OutputChannel> channel, RequestId* id_out) {
  std::vector<Request> requests;
  requests.push_back(std::move(request));
  std::vector<RequestId> ids;
  Status s = submit_all(std::move(requests), {std::move(channel)}, &ids);
  if (s.ok() && id_out) *id_out = ids.front();
  return s;
}

Status EngineRunner::submit_all(std::vector<Request> requests,
                                std::vector<std::shared_ptr<OutputChannel>> channels,
                                std::vector<RequestId>* ids_out) {
  if (requests.empty() || requests.size() != channels.size())
    return Status::Internal("submit_all: " + std::to_string(requests.size()) + " requests for " +
                            std::to_string(channels.size()) + " channels");
  for (const Request& request : requests)
    if (Status s = engine_->validate(request); !s.ok()) return s;
  const int count = static_cast<int>(requests.size());
  // The server holds max_num_seqs requests running and max_waiting more: a request that needs more
  // places than that never fits.
  const int seats = engine_->scheduler().config().max_num_seqs;
  if (options_.max_waiting > 0 && count > seats + options_.max_waiting)
    return Status::InvalidArgument(
        std::to_string(count) + " requests in one call (choices, or inputs to embed) " +
        "need as many places, more than this server holds: " + std::to_string(seats) +
        " running (--max-num-seqs) and " + std::to_string(options_.max_waiting) +
        " waiting (--max-queue); ask for fewer");
  std::lock_guard lock(mu_);
  if (!failure_.empty())
    return Status::Unavailable("the server's engine failed (" + failure_ +
                               ") and the server is stopping; retry on another replica");
  if (draining_ || stop_)
    return Status::Unavailable(
        "the server is shutting down and takes no new requests; retry on another replica");
  // Requests not yet admitted queue only beyond the seats free at the last step: a burst that
  // arrives between two steps finds the seats the next one fills, not a queue too short to reach
  // them. Seats that a step left free because the KV pool could not seat the requests waiting are
  // no places: none counts then, so a queue that the pool holds back stays within the limit.
  const int waiting = static_cast<int>(inbox_.size()) + status_.num_waiting;
  const int free_seats = seats_lack_blocks_ ? 0 : std::max(0, seats - status_.num_running);
  const int queued = std::max(0, waiting - free_seats);
  if (options_.max_waiting > 0 && waiting + count - free_seats > options_.max_waiting)
    return Status::ResourceExhausted(
        "the server's queue is full (" + std::to_string(queued) + " requests waiting" +
        (count > 1 ? ", " + std::to_string(count) + " more asked for" : "") + "); retry later");
  const auto now = Clock::now();
  if (ids_out) ids_out->clear();
  for (int i = 0; i < count; ++i) {
    Request& request = requests[i];
    std::string client_id = std::move(request.id);
    request.id = "r" + std::to_string(next_id_++);
    if (ids_out) ids_out->push_back(request.id);
    inbox_.push_back({std::move(request), std::move(client_id), std::move(channels[i]), now});
  }
  in_flight_ += count;
  wake_.notify_one();
  return Status::Ok();
}

void EngineRunner::abort(const RequestId& id) {
  std::lock_guard lock(mu_);
  aborts_.push_back(id);
  wake_.notify_one();
}

void EngineRunner::start_draining() {
  std::lock_guard lock(mu_);
  draining_ = true;
  status_.draining = true;
}

bool EngineRunner::wait_idle(std::chrono::milliseconds grace) {
  std::unique_lock lock(mu_);
  return idle_cv_.wait_for(lock, grace, [&] { return in_flight_ == 0; });
}

void EngineRunner::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    draining_ = true;
    status_.draining = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string EngineRunner::failure() const {
  std::lock_guard lock(mu_);
  return failure_;
}

EngineStatus EngineRunner::status() const {
  std::lock_guard lock(mu_);
  EngineStatus status = status_;
  // Accepted but not yet taken in by the engine thread: waiting too, so that a caller who sees no
  // request waiting or running knows that none is about to start.
  status.num_waiting += static_cast<int>(inbox_.size());
  return status;
}

void EngineRunner::loop() {
  std::vector<Pending> pending;
  std::vector<RequestId> aborts;
  // End of the previous step, while requests were still unfinished after it: the time from there to
  // the next step's start is host work the GPU waits through (engine_gap).
  std::optional<Clock::time_point> busy_step_end;
  while (true) {
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock,
                 [&] { return stop_ || !inbox_.empty() || !aborts_.empty() || engine_->has_unfinished(); });
      if (stop_) break;
      // They leave the inbox and are about to join the scheduler's queue: count them as waiting
      // until the next publish_status(), so that submit() never sees them in neither place.
      status_.num_waiting += static_cast<int>(inbox_.size());
      pending.swap(inbox_);
      aborts.swap(aborts_);
    }
    admit(pending);
    publish_status();
    for (const RequestId& id : aborts) {
      auto it = live_.find(id);
      if (it == live_.end()) continue;  // already finished
      engine_->abort(id);
      end_request(id, it->second, aborted_output(id));
    }
    aborts.clear();

    std::optional<Clock::time_point> step_end;
    if (engine_->has_unfinished()) {
      const auto start = Clock::now();
      if (options_.metrics && busy_step_end)
        options_.metrics->engine_gap(seconds_between(*busy_step_end, start));
      const double device_before = engine_->backend().device_seconds();
      std::vector<StepOutput> outputs;
      try {
        outputs = engine_->step();
      } catch (const std::exception& e) {
        spdlog::error("engine step failed: {}; ending every request and stopping the server", e.what());
        note_first_scheduled(start);
        // Under the lock that submit() takes, before the inbox is emptied below for the last time:
        // every request is either in it or refused.
        std::lock_guard lock(mu_);
        failure_ = e.what();
        if (failure_.empty()) failure_ = "unknown error";
        draining_ = true;
        status_.draining = true;
        break;
      }
      const auto now = Clock::now();
      step_end = now;
      note_first_scheduled(start);
      if (options_.metrics)
        options_.metrics->engine_step(seconds_between(start, now),
                                      engine_->backend().device_seconds() - device_before);
      if (options_.step_delay.count() > 0) std::this_thread::sleep_for(options_.step_delay);
      // Before any client hears this step's tokens: a client that reacts at once must find the
      // requests this step scheduled counted as running, not still as waiting (two requests sent on
      // a stream's first token were both refused "queue full" by the count from before the step).
      // The requests it finished count as served already, as their blocks already count as free.
      int finishing = 0;
      for (const StepOutput& out : outputs)
        finishing += out.finish != FinishReason::kNone && live_.contains(out.id);
      publish_status(finishing, /*after_step=*/true);
      for (StepOutput& out : outputs) {
        auto it = live_.find(out.id);
        if (it == live_.end()) continue;
        Live& live = it->second;
        if (live.num_output_tokens == 0) live.first_token = now;
        live.num_prompt_tokens = out.num_prompt_tokens;
        live.num_output_tokens = live.embedding ? 0 : out.num_output_tokens;
        live.num_cached_prompt_tokens = out.num_cached_prompt_tokens;
        if (out.finish != FinishReason::kNone) {
          const RequestId id = out.id;  // not out.id: `out` is moved into the call
          end_request(id, live, std::move(out));
        } else {
          live.channel->on_output(std::move(out));
        }
      }
    }
    busy_step_end = step_end && engine_->has_unfinished() ? step_end : std::nullopt;
    publish_status();
  }

  // Stopping: whatever is left is aborted, and every channel still hears its end.
  {
    std::lock_guard lock(mu_);
    pending.swap(inbox_);
  }
  admit(pending);
  std::vector<RequestId> left;
  for (const auto& [id, live] : live_)
    left.push_back(id);
  for (const RequestId& id : left) {
    engine_->abort(id);
    end_request(id, live_.at(id), aborted_output(id));
  }
  publish_status();
  const std::string failure = this->failure();
  if (!failure.empty() && options_.on_engine_failure) options_.on_engine_failure(failure);
}

void EngineRunner::note_first_scheduled(Clock::time_point step_start) {
  for (const RequestId& id : engine_->first_scheduled())
    if (auto it = live_.find(id); it != live_.end()) it->second.first_scheduled = step_start;
}

void EngineRunner::admit(std::vector<Pending>& pending) {
  for (Pending& p : pending) {
    const RequestId id = p.request.id;
    Live live;
    live.client_id = std::move(p.client_id);
    live.channel = std::move(p.channel);
    live.arrival = p.arrival;
    live.num_prompt_tokens = static_cast<int>(p.request.prompt.size());
    live.embedding = p.request.embedding.enabled;
    live.lora_adapter = p.request.lora_adapter;
    if (Status s = engine_->add_request(std::move(p.request)); !s.ok()) {
      // submit() validated everything that can fail here; reaching this is a bug, not a user error.
      spdlog::error("request {} refused by the engine after validation: {}", live.client_id, s.message());
      end_request(id, live, aborted_output(id));
      continue;
    }
    spdlog::debug("request {} ({}) admitted: {} prompt tokens", live.client_id, id, live.num_prompt_tokens);
    live_.emplace(id, std::move(live));
  }
  pending.clear();
}

void EngineRunner::end_request(const RequestId& id, Live& live, StepOutput final_output) {
  const auto now = Clock::now();
  final_output.num_prompt_tokens = live.num_prompt_tokens;
  final_output.num_output_tokens = live.num_output_tokens;
  final_output.num_cached_prompt_tokens = live.num_cached_prompt_tokens;
  const double e2e = seconds_between(live.arrival, now);
  const bool has_tokens = live.num_output_tokens > 0;
  const double ttft = has_tokens ? seconds_between(live.arrival, live.first_token) : e2e;
  const double tpot = live.num_output_tokens > 1
                          ? seconds_between(live.first_token, now) / (live.num_output_tokens - 1)
                          : 0.0;
  // A request that ended before any step ran it (aborted, or its client gone) waited all its life.
  const double queue = live.first_scheduled ? seconds_between(live.arrival, *live.first_scheduled) : e2e;
  const char* reason = live.embedding && final_output.finish != FinishReason::kAborted
                           ? "embedded"
                           : finish_reason_name(final_output.finish);
  spdlog::info(
      "request {} finished: reason={} prompt_tokens={} output_tokens={} cached_prompt_tokens={} "
      "queue={:.1f}ms ttft={:.1f}ms total={:.1f}ms",
      live.client_id, reason, live.num_prompt_tokens, live.num_output_tokens, live.num_cached_prompt_tokens,
      queue * 1e3, ttft * 1e3, e2e * 1e3);
  if (options_.metrics) {
    FinishedRequest finished{.finish_reason = reason,
                             .prompt_tokens = live.num_prompt_tokens,
                             .generation_tokens = live.num_output_tokens,
                             .cached_prompt_tokens = live.num_cached_prompt_tokens,
                             .e2e_s = e2e,
                             .queue_s = queue};
    if (has_tokens) finished.ttft_s = ttft;
    if (has_tokens && live.first_scheduled)
      finished.prefill_s = seconds_between(*live.first_scheduled, live.first_token);
    if (live.num_output_tokens > 1) finished.tpot_s = tpot;
    if (live.lora_adapter > 0 && static_cast<size_t>(live.lora_adapter) <= options_.lora_adapters.size())
      finished.lora_adapter = options_.lora_adapters[live.lora_adapter - 1];
    options_.metrics->request_finished(finished);
  }
  live.channel->on_output(std::move(final_output));
  live_.erase(id);
  ++served_;
  ++ended_since_publish_;  // leaves in_flight_ in publish_status(), once the status shows its blocks free
}

void EngineRunner::publish_status(int finishing, bool after_step) {
  const SchedulerStats stats = engine_->scheduler().stats();
  std::lock_guard lock(mu_);
  status_.num_running = stats.num_running;
  status_.num_waiting = stats.num_waiting;
  if (after_step || stats.num_waiting == 0) seats_lack_blocks_ = stats.admission_short_of_blocks;
  status_.kv_blocks_total = stats.num_total_blocks;
  status_.kv_blocks_free = stats.num_free_blocks;
  status_.kv_blocks_cached = stats.num_free_cached_blocks;
  status_.requests_served = served_ + static_cast<uint64_t>(finishing);
  in_flight_ -= ended_since_publish_;
  if (ended_since_publish_ > 0) idle_cv_.notify_all();
  ended_since_publish_ = 0;
  status_.preemptions = stats.num_preemptions;
  status_.kv_slots_unfilled = stats.num_unfilled_slots;
  status_.draft_tokens = stats.num_draft_tokens;
  status_.accepted_draft_tokens = stats.num_accepted_draft_tokens;
  if (options_.metrics)
    options_.metrics->set_scheduler_state({.running = stats.num_running,
                                           .waiting = stats.num_waiting,
                                           .kv_blocks_total = stats.num_total_blocks,
                                           .kv_blocks_free = stats.num_free_blocks,
                                           .kv_blocks_cached = stats.num_cached_blocks,
                                           .preemptions = stats.num_preemptions,
                                           .draft_tokens = stats.num_draft_tokens,
                                           .accepted_draft_tokens = stats.num_accepted_draft_tokens});
}

}  // namespace kvserve
