#include "bench/openai_call.h"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <utility>

namespace kvserve::bench {
namespace {

using Json = nlohmann::json;

double milliseconds(Clock::duration duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
}

// The error object's message ({"error": {"message": ...}}), else the body as it came.
std::string error_message(const std::string& body) {
  const Json json = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_object() && json.contains("error")) {
    const Json& error = json["error"];
    if (error.is_object() && error.contains("message") && error["message"].is_string())
      return error["message"].get<std::string>();
    if (error.is_string()) return error.get<std::string>();
  }
  return body;
}

}  // namespace

Json completion_body(const kvserve::v1::GenerateRequest& request, const std::string& model) {
  Json body = Json::object();
  // A LoRA adapter is named as the model (kvserve's and vLLM's OpenAI APIs); else the base model.
  if (!request.lora_adapter().empty())
    body["model"] = request.lora_adapter();
  else if (!model.empty())
    body["model"] = model;
  if (request.has_token_ids())
    body["prompt"] =
        std::vector<uint32_t>(request.token_ids().ids().begin(), request.token_ids().ids().end());
  else
    body["prompt"] = request.text();
  body["max_tokens"] = request.stop().max_tokens();
  body["temperature"] = request.sampling().temperature();
  body["seed"] = request.sampling().seed();
  if (request.stop().ignore_eos()) body["ignore_eos"] = true;
  if (request.priority() != 0) body["priority"] = request.priority();  // vLLM's field
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  return body;
}

void StreamTimer::feed(std::string_view bytes, Clock::time_point now) {
  pending_.append(bytes);
  // Events end at a blank line: "\n\n", or "\r\n\r\n" from servers that end lines with CRLF.
  const auto event_end = [&](size_t& separator) {
    const size_t lf = pending_.find("\n\n"), crlf = pending_.find("\r\n\r\n");
    separator = crlf < lf ? 4 : 2;
    return std::min(lf, crlf);
  };
  size_t end, separator;
  while ((end = event_end(separator)) != std::string::npos) {
    std::string_view block(pending_.data(), end);
    // An event is lines; the data line is what counts (others, such as comments, are skipped).
    while (!block.empty()) {
      const size_t line_end = std::min(block.find('\n'), block.size());
      std::string_view line = block.substr(0, line_end);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.starts_with("data:")) {
        line.remove_prefix(5);
        if (line.starts_with(' ')) line.remove_prefix(1);
        event(line, now);
      }
      block.remove_prefix(std::min(line_end + 1, block.size()));
    }
    pending_.erase(0, end + separator);
  }
}

void StreamTimer::event(std::string_view data, Clock::time_point now) {
  if (data == "[DONE]") {
    done_ = true;
    return;
  }
  const Json chunk = Json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (!chunk.is_object()) {
    error_ = "an event that is not a JSON object: " + std::string(data.substr(0, 200));
    return;
  }
  if (chunk.contains("error")) {
    error_ = error_message(std::string(data));
    if (chunk["error"].is_object() && chunk["error"].contains("code") && chunk["error"]["code"].is_string())
      error_code_ = chunk["error"]["code"].get<std::string>();
    return;
  }
  bool has_text = false;
  if (auto choices = chunk.find("choices"); choices != chunk.end() && choices->is_array()) {
    for (const Json& choice : *choices) {
      auto text = choice.find("text");
      has_text |= text != choice.end() && text->is_string() && !text->get<std::string>().empty();
    }
  }
  if (has_text) {
    if (chunks_ == 0)
      ttft_ms_ = milliseconds(now - sent_at_);
    else
      itl_ms_.push_back(static_cast<float>(milliseconds(now - last_chunk_at_)));
    ++chunks_;
    last_chunk_at_ = now;
  }
  if (auto usage = chunk.find("usage"); usage != chunk.end() && usage->is_object()) {
    if (usage->contains("prompt_tokens") && (*usage)["prompt_tokens"].is_number_unsigned())
      prompt_tokens_ = (*usage)["prompt_tokens"].get<uint32_t>();
    if (usage->contains("completion_tokens") && (*usage)["completion_tokens"].is_number_unsigned())
      completion_tokens_ = (*usage)["completion_tokens"].get<uint32_t>();
  }
}

void StreamTimer::fill(RequestResult& result) const {
  result.ttft_ms = ttft_ms_;
  result.itl_ms = itl_ms_;
  result.output_tokens = completion_tokens_.value_or(chunks_);
  if (prompt_tokens_ && *prompt_tokens_ > 0) result.prompt_tokens = *prompt_tokens_;
}

grpc::StatusCode status_for_error_code(const std::string& code) {
  // kvserve names the gRPC status in lower case ("unavailable"); other servers' codes count as INTERNAL.
  for (int c = 0; c <= static_cast<int>(grpc::StatusCode::UNAUTHENTICATED); ++c) {
    std::string name = status_code_name(static_cast<grpc::StatusCode>(c));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char x) { return std::tolower(x); });
    if (name == code && c != 0) return static_cast<grpc::StatusCode>(c);
  }
  return grpc::StatusCode::INTERNAL;
}

grpc::StatusCode status_for_http(int http_status) {
  switch (http_status) {
    case 200:
      return grpc::StatusCode::OK;
    case 400:
    case 413:
    case 422:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case 401:
      return grpc::StatusCode::UNAUTHENTICATED;
    case 403:
      return grpc::StatusCode::PERMISSION_DENIED;
    case 404:
      return grpc::StatusCode::NOT_FOUND;
    case 408:
    case 504:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case 429:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case 501:
      return grpc::StatusCode::UNIMPLEMENTED;
    case 503:
      return grpc::StatusCode::UNAVAILABLE;
    default:
      return http_status >= 500 ? grpc::StatusCode::INTERNAL : grpc::StatusCode::UNKNOWN;
  }
}

OpenAiCallStarter::OpenAiCallStarter(std::string host, int port, std::string model, double connect_timeout_s)
    : host_(std::move(host)),
      port_(port),
      model_(std::move(model)),
      connect_timeout_s_(connect_timeout_s),
      watchdog_([this] { watch(); }) {}

OpenAiCallStarter::~OpenAiCallStarter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  job_ready_.notify_all();
  watch_changed_.notify_all();
  for (std::thread& worker : workers_)
    worker.join();
  watchdog_.join();
}

void OpenAiCallStarter::watch() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    auto next = std::chrono::system_clock::time_point::max();
    const auto now = std::chrono::system_clock::now();
    for (auto& [worker, request] : in_flight_) {
      if (request.cut) continue;
      if (request.deadline <= now) {
        request.client->stop();  // the blocked read returns at once, failed
        request.cut = true;
      } else {
        next = std::min(next, request.deadline);
      }
    }
    if (next == std::chrono::system_clock::time_point::max())
      watch_changed_.wait(lock);
    else
      watch_changed_.wait_until(lock, next);
  }
}

void OpenAiCallStarter::start(uint64_t, kvserve::v1::GenerateRequest request, uint32_t prompt_tokens_sent,
                              std::chrono::system_clock::time_point deadline, bool deadline_is_run_end,
                              CallObserver& observer) {
  std::lock_guard lock(mutex_);
  jobs_.push_back(Job{std::move(request), prompt_tokens_sent, deadline, deadline_is_run_end, &observer});
  // A worker per call in flight: a call never waits for another to finish.
  if (++outstanding_ > workers_.size()) workers_.emplace_back([this, id = workers_.size()] { work(id); });
  job_ready_.notify_one();
}

void OpenAiCallStarter::work(size_t id) {
  httplib::Client client(host_, port_);
  client.set_keep_alive(true);
  // The request's headers and body are two writes: Nagle's algorithm would hold the body for the
  // server's delayed ACK, adding its tens of milliseconds to every TTFT.
  client.set_tcp_nodelay(true);
  const auto connect = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::duration<double>(connect_timeout_s_));
  client.set_connection_timeout(connect.count() / 1000000, connect.count() % 1000000);
  std::unique_lock lock(mutex_);
  while (true) {
    job_ready_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) return;
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();

    RequestResult result;
    result.prompt_tokens = job.prompt_tokens_sent;
    const auto sent_at = Clock::now();
    auto remaining = std::chrono::duration_cast<std::chrono::microseconds>(job.deadline -
                                                                           std::chrono::system_clock::now());
    // httplib waits in whole milliseconds, rounded down: rounded up here, and one more, a timeout
    // never fires before the deadline, so that one at it is known for the deadline's (below).
    remaining =
        std::chrono::ceil<std::chrono::milliseconds>(std::max(remaining, std::chrono::microseconds(1))) +
        std::chrono::milliseconds(1);
    client.set_read_timeout(remaining.count() / 1000000, remaining.count() % 1000000);
    client.set_write_timeout(remaining.count() / 1000000, remaining.count() % 1000000);
    // The timeouts bound each wait, not the request: the watchdog cuts it at its deadline.
    lock.lock();
    in_flight_[id] = InFlight{job.deadline, &client, false};
    lock.unlock();
    watch_changed_.notify_one();

    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.set_header("X-Request-Id", job.request.request_id());
    req.body = completion_body(job.request, model_).dump();
    StreamTimer timer(sent_at);
    std::string body;  // the start of the body, for an error's message
    bool past_deadline = false;
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      timer.feed(std::string_view(data, n), Clock::now());
      body.append(data, std::min(n, size_t{4096} - std::min(body.size(), size_t{4096})));
      past_deadline = !timer.done() && std::chrono::system_clock::now() >= job.deadline;
      return !past_deadline;
    };
    const httplib::Result res = client.send(req);
    lock.lock();
    // Cut by the watchdog, or ended by the read timeout, which the deadline sets: before any data
    // came (a request sent just before the run's end, still queued), the latter may come first.
    past_deadline |= in_flight_[id].cut || std::chrono::system_clock::now() >= job.deadline;
    in_flight_.erase(id);
    lock.unlock();

    result.finished_at = Clock::now();
    result.e2e_ms = milliseconds(result.finished_at - sent_at);
    if (!res && timer.done()) {
      // Complete: the connection failed only after [DONE] (cut at the deadline, say).
    } else if (!res) {
      if (past_deadline) {
        result.code = grpc::StatusCode::DEADLINE_EXCEEDED;
        result.error_message = "no reply within the deadline";
        result.unfinished = job.deadline_is_run_end;
      } else {
        result.code = grpc::StatusCode::UNAVAILABLE;
        result.error_message = "HTTP request failed: " + httplib::to_string(res.error());
      }
    } else if (res->status != 200) {
      result.code = status_for_http(res->status);
      result.error_message = "HTTP " + std::to_string(res->status) + ": " + error_message(body);
    } else if (timer.error()) {
      result.code = status_for_error_code(timer.error_code());
      result.error_message = "the stream ended with an error: " + *timer.error();
    } else if (!timer.done()) {
      result.code = grpc::StatusCode::UNAVAILABLE;
      result.error_message = "the stream ended without data: [DONE]";
    }
    timer.fill(result);

    lock.lock();
    --outstanding_;  // before the observer, which may start the next call at once
    lock.unlock();
    job.observer->on_call_finished(std::move(result));
    lock.lock();
  }
}

}  // namespace kvserve::bench
