#include "server/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace kvserve {
namespace {

// Bucket boundaries. Histogram quantiles interpolate inside a bucket, so buckets are densest where
// service-level objectives and typical values sit, and log-spaced out to the worst case.
//
// TTFT: a short prompt on a GPU answers in ~10-100 ms and TTFT objectives are usually set between
// 100 ms and 1 s, hence 20 ms steps up to 100 ms and fine steps to 1 s; long prompts and queueing
// under load reach seconds, and 60 s is past any client's patience. TTFT's two parts, time in the
// queue and prefill time, share its buckets, so that their quantiles read on the same scale.
constexpr std::array<double, 21> kTtftBuckets = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06,
                                                 0.08,  0.1,    0.15,  0.2,  0.3,  0.5,  0.75,
                                                 1,     2.5,    5,     10,   20,   30,   60};
// TPOT: one decode step per token, ~5-50 ms on a GPU depending on batch size and model, and
// interactive objectives around 50-100 ms (faster than reading speed), hence the dense middle;
// 2.5 s covers the CPU reference backend and a badly overloaded server.
constexpr std::array<double, 20> kTpotBuckets = {0.001, 0.0025, 0.005, 0.0075, 0.01,  0.015, 0.02,
                                                 0.025, 0.03,   0.04,  0.05,   0.075, 0.1,   0.15,
                                                 0.2,   0.3,    0.5,   0.75,   1,     2.5};
// End to end: from a one-token answer (tens of ms) to thousands of tokens at tens of ms each
// (minutes); 600 s is a typical upper bound on a streaming call's deadline.
constexpr std::array<double, 20> kE2eBuckets = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,   10,
                                                15,   20,    30,   45,  60,   90,  120, 180, 300, 600};
// Token counts: powers of two, because max_tokens and context lengths are set in powers of two
// (a request that stops at max_tokens = 256 lands exactly on le="256"); 128k is the longest
// context of the models served.
constexpr std::array<double, 18> kTokenBuckets = {1,   2,    4,    8,    16,   32,    64,    128,   256,
                                                  512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072};
// Engine step: a decode step is a few ms on a GPU, a 2048-token prefill chunk 50-200 ms; seconds
// only on the CPU reference backend. Sub-millisecond buckets show host overhead of empty steps.
constexpr std::array<double, 21> kStepBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075,
                                                 0.01,   0.015,   0.02,   0.03,  0.04,   0.05,  0.075,
                                                 0.1,    0.25,    0.5,    1,     2.5,    5,     10};

constexpr std::string_view kOverflowLabel = "other";
constexpr std::string_view kEmptyLabel = "unknown";  // an empty label value would read as no label

std::uint64_t non_negative(int n) {
  return n > 0 ? static_cast<std::uint64_t>(n) : 0;
}

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  out.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

// Go's ParseFloat (what Prometheus reads with) takes every form written here.
void append_double(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  if (v == 0) v = 0;  // no "-0"
  // Shortest round-trip digits; plain decimals for every magnitude a metric here takes, so bucket
  // labels read le="0.001" and le="131072", exponents only where decimals would get long.
  const double mag = std::fabs(v);
  const auto format =
      mag == 0 || (mag >= 1e-4 && mag < 1e15) ? std::chars_format::fixed : std::chars_format::general;
  char buf[64];
  out.append(buf, std::to_chars(buf, buf + sizeof buf, v, format).ptr);
}

// Label values escape \, " and newline; HELP text only \ and newline.
void append_escaped(std::string& out, std::string_view s, bool is_label_value) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && is_label_value) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

void append_header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  append_escaped(out, help, false);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void append_labelled_name(std::string& out, std::string_view name, std::string_view label,
                          std::string_view value) {
  out += name;
  out += '{';
  out += label;
  out += "=\"";
  append_escaped(out, value, true);
  out += "\"} ";
}

void append_counter(std::string& out, std::string_view name, std::string_view help, std::uint64_t v) {
  append_header(out, name, "counter", help);
  out += name;
  out += ' ';
  append_uint(out, v);
  out += '\n';
}

// A counter of seconds (a float, as Prometheus counters may be).
void append_seconds_counter(std::string& out, std::string_view name, std::string_view help, double v) {
  append_header(out, name, "counter", help);
  out += name;
  out += ' ';
  append_double(out, v);
  out += '\n';
}

void append_gauge(std::string& out, std::string_view name, std::string_view help, double v) {
  append_header(out, name, "gauge", help);
  out += name;
  out += ' ';
  append_double(out, v);
  out += '\n';
}

void append_labelled_counter(std::string& out, std::string_view name, std::string_view help,
                             std::string_view label, const std::vector<std::string>& values,
                             const std::vector<std::uint64_t>& counts) {
  append_header(out, name, "counter", help);
  for (std::size_t i = 0; i < values.size(); ++i) {
    append_labelled_name(out, name, label, values[i]);
    append_uint(out, counts[i]);
    out += '\n';
  }
}

void append_histogram(std::string& out, std::string_view name, std::string_view help,
                      std::span<const double> upper_bounds, std::span<const std::uint64_t> counts,
                      double sum) {
  append_header(out, name, "histogram", help);
  const std::string bucket = std::string(name) + "_bucket";
  std::uint64_t cumulative = 0;
  std::string le;
  for (std::size_t i = 0; i <= upper_bounds.size(); ++i) {
    le.clear();
    if (i < upper_bounds.size()) {
      append_double(le, upper_bounds[i]);
    } else {
      le = "+Inf";
    }
    cumulative += counts[i];
    append_labelled_name(out, bucket, "le", le);
    append_uint(out, cumulative);
    out += '\n';
  }
  out += name;
  out += "_sum ";
  append_double(out, sum);
  out += '\n';
  out += name;
  out += "_count ";
  append_uint(out, cumulative);
  out += '\n';
}

}  // namespace

void Metrics::Histogram::observe(double value) {
  if (!std::isfinite(value)) return;
  value = std::max(value, 0.0);
  // le is inclusive: a value equal to a bound belongs to that bound's bucket.
  const auto bucket =
      std::lower_bound(upper_bounds.begin(), upper_bounds.end(), value) - upper_bounds.begin();
  ++counts[static_cast<std::size_t>(bucket)];
  sum += value;
}

void Metrics::LabelledCounter::add(std::string_view value, std::uint64_t n) {
  if (value.empty()) value = kEmptyLabel;
  auto find = [this](std::string_view v) -> std::uint64_t* {
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (values[i] == v) return &counts[i];
    }
    return nullptr;
  };
  if (auto* count = find(value)) {
    *count += n;
    return;
  }
  if (values.size() >= kMaxLabelValues) {
    value = kOverflowLabel;
    if (auto* count = find(value)) {
      *count += n;
      return;
    }
  }
  values.emplace_back(value);
  counts.push_back(n);
}

Metrics::Metrics() {
  static_assert(kTtftBuckets.size() <= kMaxBuckets && kTpotBuckets.size() <= kMaxBuckets &&
                kE2eBuckets.size() <= kMaxBuckets && kTokenBuckets.size() <= kMaxBuckets &&
                kStepBuckets.size() <= kMaxBuckets);
  state_.ttft.upper_bounds = kTtftBuckets;
  state_.queue.upper_bounds = kTtftBuckets;
  state_.prefill.upper_bounds = kTtftBuckets;
  state_.tpot.upper_bounds = kTpotBuckets;
  state_.e2e.upper_bounds = kE2eBuckets;
  state_.request_prompt_tokens.upper_bounds = kTokenBuckets;
  state_.request_generation_tokens.upper_bounds = kTokenBuckets;
  state_.engine_step.upper_bounds = kStepBuckets;
  // Known label values are exported from the start at 0, so rate() sees their first increment.
  for (LabelledCounter* c : {&state_.requests, &state_.rejected, &state_.lora_requests,
                             &state_.lora_prompt_tokens, &state_.lora_generation_tokens}) {
    c->values.reserve(kMaxLabelValues + 1);
    c->counts.reserve(kMaxLabelValues + 1);
  }
  for (std::string_view reason : {"length", "stop", "aborted"})
    state_.requests.add(reason, 0);
  for (std::string_view code : {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}) {
    state_.rejected.add(code, 0);
  }
}

void Metrics::request_finished(const FinishedRequest& r) {
  const std::uint64_t prompt = non_negative(r.prompt_tokens);
  const std::uint64_t generated = non_negative(r.generation_tokens);
  const std::uint64_t cached = std::min(non_negative(r.cached_prompt_tokens), prompt);
  std::lock_guard lock(mu_);
  state_.requests.add(r.finish_reason, 1);
  state_.prompt_tokens += prompt;
  state_.generation_tokens += generated;
  state_.cached_prompt_tokens += cached;
  state_.request_prompt_tokens.observe(static_cast<double>(prompt));
  state_.request_generation_tokens.observe(static_cast<double>(generated));
  if (generated >= 1) state_.ttft.observe(r.ttft_s);
  state_.queue.observe(r.queue_s);
  if (generated >= 1) state_.prefill.observe(r.prefill_s);
  if (generated >= 2) state_.tpot.observe(r.tpot_s);
  state_.e2e.observe(r.e2e_s);
  if (!r.lora_adapter.empty()) {
    state_.lora_requests.add(r.lora_adapter, 1);
    state_.lora_prompt_tokens.add(r.lora_adapter, prompt);
    state_.lora_generation_tokens.add(r.lora_adapter, generated);
  }
}

void Metrics::set_lora_adapters(std::span<const std::string> names) {
  std::lock_guard lock(mu_);
  for (const std::string& name : names)
    for (LabelledCounter* c :
         {&state_.lora_requests, &state_.lora_prompt_tokens, &state_.lora_generation_tokens})
      c->add(name, 0);
}

void Metrics::request_rejected(std::string_view code) {
  std::lock_guard lock(mu_);
  state_.rejected.add(code, 1);
}

void Metrics::engine_step(double seconds, double device_seconds) {
  std::lock_guard lock(mu_);
  ++state_.engine_steps;
  state_.engine_step.observe(seconds);
  if (std::isfinite(device_seconds) && device_seconds > 0) state_.engine_device_seconds += device_seconds;
}

void Metrics::engine_gap(double seconds) {
  if (!std::isfinite(seconds) || seconds <= 0) return;
  std::lock_guard lock(mu_);
  state_.engine_gap_seconds += seconds;
}

void Metrics::set_scheduler_state(const SchedulerState& s) {
  SchedulerState clean;
  clean.running = std::max(s.running, 0);
  clean.waiting = std::max(s.waiting, 0);
  clean.kv_blocks_total = std::max(s.kv_blocks_total, 0);
  clean.kv_blocks_free = std::clamp(s.kv_blocks_free, 0, clean.kv_blocks_total);
  clean.kv_blocks_cached = std::clamp(s.kv_blocks_cached, 0, clean.kv_blocks_total);
  clean.preemptions = s.preemptions;
  clean.draft_tokens = s.draft_tokens;
  clean.accepted_draft_tokens = std::min(s.accepted_draft_tokens, s.draft_tokens);
  std::lock_guard lock(mu_);
  state_.scheduler = clean;
}

void Metrics::set_stored_responses(std::uint64_t count, std::uint64_t bytes) {
  std::lock_guard lock(mu_);
  state_.stored_responses = count;
  state_.stored_response_bytes = bytes;
}

std::string Metrics::render() const {
  const State s = [this] {
    std::lock_guard lock(mu_);
    return state_;
  }();
  std::string out;
  out.reserve(16384);
  append_labelled_counter(out, "kvserve_requests_total", "Requests finished, by finish reason.",
                          "finish_reason", s.requests.values, s.requests.counts);
  append_labelled_counter(out, "kvserve_requests_rejected_total",
                          "Requests rejected before running, by gRPC status code.", "code", s.rejected.values,
                          s.rejected.counts);
  append_labelled_counter(out, "kvserve_lora_requests_total",
                          "Requests finished that ran with a LoRA adapter, by adapter.", "adapter",
                          s.lora_requests.values, s.lora_requests.counts);
  append_labelled_counter(out, "kvserve_lora_prompt_tokens_total",
                          "Prompt tokens of finished requests that ran with a LoRA adapter, by adapter.",
                          "adapter", s.lora_prompt_tokens.values, s.lora_prompt_tokens.counts);
  append_labelled_counter(out, "kvserve_lora_generation_tokens_total",
                          "Tokens generated by finished requests that ran with a LoRA adapter, by adapter.",
                          "adapter", s.lora_generation_tokens.values, s.lora_generation_tokens.counts);
  append_counter(out, "kvserve_prompt_tokens_total", "Prompt tokens of finished requests.", s.prompt_tokens);
  append_counter(out, "kvserve_generation_tokens_total", "Tokens generated by finished requests.",
                 s.generation_tokens);
  append_counter(out, "kvserve_cached_prompt_tokens_total",
                 "Prompt tokens of finished requests served from the prefix cache.", s.cached_prompt_tokens);
  append_gauge(out, "kvserve_prefix_cache_hit_ratio",
               "Cached prompt tokens over prompt tokens since start (0 before the first request).",
               s.prompt_tokens == 0
                   ? 0.0
                   : static_cast<double>(s.cached_prompt_tokens) / static_cast<double>(s.prompt_tokens));
  const SchedulerState& q = s.scheduler;
  append_gauge(out, "kvserve_requests_running", "Requests in the running batch.", q.running);
  append_gauge(out, "kvserve_requests_waiting", "Requests waiting to be scheduled.", q.waiting);
  append_gauge(out, "kvserve_kv_blocks_capacity", "KV cache blocks in the pool.", q.kv_blocks_total);
  append_gauge(out, "kvserve_kv_blocks_free", "KV cache blocks not used by any running request.",
               q.kv_blocks_free);
  append_gauge(out, "kvserve_kv_blocks_cached", "KV cache blocks holding a prefix-cache entry.",
               q.kv_blocks_cached);
  append_gauge(out, "kvserve_kv_cache_usage_ratio", "KV cache blocks in use over blocks in the pool.",
               q.kv_blocks_total == 0 ? 0.0
                                      : static_cast<double>(q.kv_blocks_total - q.kv_blocks_free) /
                                            static_cast<double>(q.kv_blocks_total));
  append_gauge(out, "kvserve_responses_stored",
               "Responses the OpenAI API stores for previous_response_id (POST /v1/responses).",
               static_cast<double>(s.stored_responses));
  append_gauge(out, "kvserve_responses_stored_bytes",
               "Bytes of the stored responses, as counted against --responses-store-mb.",
               static_cast<double>(s.stored_response_bytes));
  const auto histogram = [&out](std::string_view name, std::string_view help, const Histogram& h) {
    append_histogram(out, name, help, h.upper_bounds,
                     std::span<const std::uint64_t>(h.counts).first(h.upper_bounds.size() + 1), h.sum);
  };
  histogram("kvserve_time_to_first_token_seconds", "Time from arrival to the first generated token.", s.ttft);
  histogram(
      "kvserve_request_queue_time_seconds",
      "Time from arrival to the first engine step that ran the request (the whole request when none did).",
      s.queue);
  histogram("kvserve_request_prefill_time_seconds",
            "Time from the start of the first engine step that ran the request to its first generated token.",
            s.prefill);
  histogram("kvserve_time_per_output_token_seconds",
            "Mean time per generated token after the first, per request of two tokens or more.", s.tpot);
  histogram("kvserve_e2e_request_latency_seconds", "Time from arrival to finish.", s.e2e);
  histogram("kvserve_request_prompt_tokens", "Prompt tokens per finished request.", s.request_prompt_tokens);
  histogram("kvserve_request_generation_tokens", "Generated tokens per finished request.",
            s.request_generation_tokens);
  append_counter(out, "kvserve_engine_steps_total", "Engine steps run.", s.engine_steps);
  append_counter(
      out, "kvserve_preemptions_total",
      "Running requests preempted for lack of KV blocks, or for a better priority (freed, recomputed later).",
      q.preemptions);
  append_counter(out, "kvserve_spec_decode_draft_tokens_total",
                 "Draft tokens (speculative decoding by prompt lookup) the model checked.", q.draft_tokens);
  append_counter(out, "kvserve_spec_decode_accepted_tokens_total",
                 "Draft tokens that became output tokens, each one a decode step saved.",
                 q.accepted_draft_tokens);
  histogram("kvserve_engine_step_seconds", "Host and device time of one engine step.", s.engine_step);
  // With the step histogram's _sum and the gap counter: 1 - rate(device) / (rate(step sum) +
  // rate(gap)) is the share of a busy engine's time that the GPU sat idle waiting for the host.
  append_seconds_counter(out, "kvserve_engine_device_seconds_total",
                         "Time the GPU spent on engine steps, first copy to last (0 on the CPU backend).",
                         s.engine_device_seconds);
  append_seconds_counter(out, "kvserve_engine_gap_seconds_total",
                         "Host time between consecutive engine steps while requests were unfinished.",
                         s.engine_gap_seconds);
  return out;
}

}  // namespace kvserve
