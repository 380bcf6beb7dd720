// Server metrics, rendered in the Prometheus text exposition format (version 0.0.4).
//
// Writers are the engine loop (request_finished, engine_step, set_scheduler_state) and the request
// threads (request_rejected); the reader is the metrics HTTP endpoint (render). Every call takes one
// mutex for a bounded, allocation-free update (a new label value is the only exception, once), and
// render() holds it only to copy the numbers, so a scrape never stalls the engine loop for more than
// a copy. One mutex instead of per-counter atomics buys a render that is a single consistent
// snapshot: requests_total adds up to the histograms' _count, prompt_tokens_total equals the prompt
// histogram's _sum, every _count equals its +Inf bucket.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvserve {

// One finished request, as the engine loop reports it. Times in seconds; a time that does not exist
// for this request (no token produced, a single token has no TPOT) is left NaN and not observed.
struct FinishedRequest {
  std::string_view finish_reason;  // finish_reason_name(): "length", "stop" or "aborted"
  int prompt_tokens = 0;
  int generation_tokens = 0;
  int cached_prompt_tokens = 0;                              // prompt tokens served from the prefix cache
  double ttft_s = std::numeric_limits<double>::quiet_NaN();  // arrival -> first generated token
  double tpot_s = std::numeric_limits<double>::quiet_NaN();  // (e2e - ttft) / (generation_tokens - 1)
  double e2e_s = std::numeric_limits<double>::quiet_NaN();   // arrival -> finish
  // TTFT in its two parts: arrival -> the start of the first step that ran the request (all of e2e
  // when none did), and that step's start -> the first generated token.
  double queue_s = std::numeric_limits<double>::quiet_NaN();
  double prefill_s = std::numeric_limits<double>::quiet_NaN();
  std::string_view lora_adapter;  // the LoRA adapter it ran with (--lora-modules name); empty: none
};

// The scheduler and block pool as of the end of an engine step.
struct SchedulerState {
  int running = 0;
  int waiting = 0;
  int kv_blocks_total = 0;  // the pool's size, exported as kvserve_kv_blocks_capacity
  int kv_blocks_free = 0;
  int kv_blocks_cached = 0;       // blocks holding a prefix-cache entry, in use or free
  std::uint64_t preemptions = 0;  // running sequences preempted since start (cumulative)
  // Speculative decoding since start (cumulative): draft tokens checked, and those accepted.
  std::uint64_t draft_tokens = 0;
  std::uint64_t accepted_draft_tokens = 0;
};

class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Bad inputs never reach the output: negative counts and times count as 0, NaN and infinite
  // times are not observed, cached_prompt_tokens is capped at prompt_tokens.
  void request_finished(const FinishedRequest& request);
  // code: the gRPC status code name, e.g. "RESOURCE_EXHAUSTED".
  void request_rejected(std::string_view code);
  // seconds: host and device time of one engine step; device_seconds: the part a separate device
  // (the GPU) was working on it (0 on the CPU backend).
  void engine_step(double seconds, double device_seconds = 0.0);
  // seconds: host time between the end of one engine step and the start of the next while requests
  // were unfinished (admitting, aborting, publishing tokens): time the GPU waits outside any step.
  void engine_gap(double seconds);
  void set_scheduler_state(const SchedulerState& state);
  // The OpenAI API's stored responses (server/response_store.h): how many, and their bytes.
  void set_stored_responses(std::uint64_t count, std::uint64_t bytes);
  // The LoRA adapters served (--lora-modules): their counters are exported from the start, at 0.
  void set_lora_adapters(std::span<const std::string> names);

  std::string render() const;

  // Distinct values kept per label; later ones are counted under "other", so a caller passing
  // free-form text cannot grow the registry (or the scrape) without bound.
  static constexpr std::size_t kMaxLabelValues = 16;
  static constexpr std::size_t kMaxBuckets = 24;

 private:
  struct Histogram {
    std::span<const double> upper_bounds;  // ascending; +Inf is implicit
    // Per bucket, not cumulative; index upper_bounds.size() is the +Inf bucket.
    std::array<std::uint64_t, kMaxBuckets + 1> counts{};
    double sum = 0;
    void observe(double value);
  };
  struct LabelledCounter {
    std::vector<std::string> values;  // reserved up front: only a new value appends
    std::vector<std::uint64_t> counts;
    void add(std::string_view value, std::uint64_t n);
  };
  struct State {
    LabelledCounter requests;  // by finish_reason
    LabelledCounter rejected;  // by code
    // Per LoRA adapter: the requests that ran with it, and their prompt and generated tokens.
    LabelledCounter lora_requests, lora_prompt_tokens, lora_generation_tokens;
    std::uint64_t prompt_tokens = 0;
    std::uint64_t generation_tokens = 0;
    std::uint64_t cached_prompt_tokens = 0;
    std::uint64_t engine_steps = 0;
    double engine_device_seconds = 0;
    double engine_gap_seconds = 0;
    SchedulerState scheduler;
    std::uint64_t stored_responses = 0;
    std::uint64_t stored_response_bytes = 0;
    Histogram ttft, queue, prefill, tpot, e2e, request_prompt_tokens, request_generation_tokens, engine_step;
  };

  mutable std::mutex mu_;
  State state_;
};

}  // namespace kvserve
