// kvserve-bench over the OpenAI-compatible HTTP API (--api openai): each request a streamed
// POST /v1/completions, timed chunk by chunk. The same workload then measures kvserve's HTTP path
// against its gRPC one, or any server that speaks the protocol (vLLM, SGLang, TGI, llama.cpp).
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/bench_call.h"

namespace httplib {
class Client;
}

namespace kvserve::bench {

// The body of POST /v1/completions for `request`: its prompt (token ids, or text), max_tokens,
// temperature, seed and ignore_eos (vLLM's field, which kvserve takes too), streamed with usage.
// `model` is left out when empty (servers of one model take that as it).
nlohmann::json completion_body(const kvserve::v1::GenerateRequest& request, const std::string& model);

// Reads a streamed reply's server-sent events as they arrive and times them: the first chunk with
// text gives TTFT, each later one an inter-token gap (a chunk is counted as one token: the protocol
// does not say how many it holds), the usage chunk the token counts, [DONE] the end.
class StreamTimer {
 public:
  explicit StreamTimer(Clock::time_point sent_at) : sent_at_(sent_at) {}

  // The next bytes of the body, arrived at `now`.
  void feed(std::string_view bytes, Clock::time_point now);

  bool done() const { return done_; }  // data: [DONE] seen
  // An error event ({"error": {...}}) or an event that is not JSON: what it said.
  const std::optional<std::string>& error() const { return error_; }
  // The error event's code ("unavailable": kvserve's are the gRPC status in lower case), or "".
  const std::string& error_code() const { return error_code_; }
  // Fills the result's ttft_ms, itl_ms and token counts (usage when the stream had it).
  void fill(RequestResult& result) const;

 private:
  void event(std::string_view data, Clock::time_point now);

  Clock::time_point sent_at_;
  std::string pending_;  // bytes of an event not yet complete
  Clock::time_point last_chunk_at_;
  uint32_t chunks_ = 0;
  double ttft_ms_ = -1;
  std::vector<float> itl_ms_;
  std::optional<uint32_t> prompt_tokens_, completion_tokens_;
  bool done_ = false;
  std::optional<std::string> error_;
  std::string error_code_;
};

// The gRPC status code an error event's code names (kvserve's "unavailable", ...); INTERNAL for
// codes of other servers.
grpc::StatusCode status_for_error_code(const std::string& code);

// The gRPC status code a reply's HTTP status stands for (429 -> RESOURCE_EXHAUSTED, ...), so that
// both APIs' failures are counted under the same names.
grpc::StatusCode status_for_http(int http_status);

// Runs the calls on worker threads, one blocking HTTP request each; a worker keeps its connection
// alive for its next request, as a client's connection pool does. Workers start as calls need
// them: as many as the most calls ever in flight.
class OpenAiCallStarter final : public CallStarter {
 public:
  // `host`, `port`: the server; `model`: the body's model field (may be empty).
  OpenAiCallStarter(std::string host, int port, std::string model, double connect_timeout_s);
  // Joins the workers; every call must have finished (its observer told).
  ~OpenAiCallStarter() override;

  void start(uint64_t index, kvserve::v1::GenerateRequest request, uint32_t prompt_tokens_sent,
             std::chrono::system_clock::time_point deadline, bool deadline_is_run_end,
             CallObserver& observer) override;

 private:
  struct Job {
    kvserve::v1::GenerateRequest request;
    uint32_t prompt_tokens_sent = 0;
    std::chrono::system_clock::time_point deadline;
    bool deadline_is_run_end = false;
    CallObserver* observer = nullptr;
  };
  void work(size_t id);
  // The watchdog: cuts each request at its deadline (httplib's timeouts bound each read, not the
  // whole request, so a stream that stalls late would run past it).
  void watch();

  struct InFlight {
    std::chrono::system_clock::time_point deadline;
    httplib::Client* client = nullptr;
    bool cut = false;  // stopped by the watchdog
  };

  const std::string host_;
  const int port_;
  const std::string model_;
  const double connect_timeout_s_;

  std::mutex mutex_;
  std::condition_variable job_ready_;
  std::deque<Job> jobs_;
  size_t outstanding_ = 0;  // calls queued or running
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  std::map<size_t, InFlight> in_flight_;  // by worker
  std::condition_variable watch_changed_;
  std::thread watchdog_;  // last: it starts in the constructor, once the rest is set up
};

}  // namespace kvserve::bench
