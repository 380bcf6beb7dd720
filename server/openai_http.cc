#include "server/openai_http.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <optional>
#include <utility>
#include <vector>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "server/anthropic_messages.h"
#include "server/elastic_thread_pool.h"
#include "server/generation_service.h"
#include "server/http_proxy.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/openai_responses.h"
#include "server/prompt_calls.h"

namespace kvserve {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kJson = "application/json";
constexpr const char* kRoutes =
    "this server serves POST /v1/completions, POST /v1/chat/completions, POST /v1/responses, "
    "GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items, "
    "POST /v1/messages, POST /v1/messages/count_tokens, "
    "POST /v1/embeddings, GET /v1/models, POST /tokenize, "
    "POST /detokenize and GET /health";

// Anthropic's Messages API's routes: their errors have Anthropic's shape, which its clients read.
bool anthropic_route(const httplib::Request& req) {
  return req.path == "/v1/messages" || req.path.starts_with("/v1/messages/");
}

// An error body in the shape of the API `req` is for.
std::string error_body(const httplib::Request& req, int status, const std::string& message,
                       const std::string& code) {
  return anthropic_route(req) ? anthropic::error_body(status, message)
                              : openai::error_body(status, message, code);
}

void reply_error(const httplib::Request& req, httplib::Response& res, int status, const std::string& message,
                 const std::string& code) {
  res.status = status;
  if (status == 429) res.set_header("Retry-After", "1");  // the queue drains as requests finish
  res.set_content(error_body(req, status, message, code), kJson);
}

void reply_grpc_error(const httplib::Request& req, httplib::Response& res, const grpc::Status& status) {
  reply_error(req, res, openai::http_status(status.error_code()), status.error_message(),
              openai::code_name(status.error_code()));
}

// A body parse_request & co. refused: 404 for another model's name, else 400.
void reply_parse_error(const httplib::Request& req, httplib::Response& res, const Status& status) {
  const bool unknown_model = status.code() == StatusCode::kNotFound;
  reply_error(req, res, unknown_model ? 404 : 400, status.message(),
              unknown_model ? "model_not_found" : "invalid_argument");
}

// gRPC metadata values must be printable ASCII: gRPC aborts the process on any other byte, so a
// header is checked before it goes on as metadata.
bool printable_ascii(const std::string& text) {
  for (const char c : text)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

// The caller's API key: the Authorization header, or (as Anthropic's clients send it) x-api-key,
// which stands for "Bearer <key>". Empty for none.
std::string authorization(const httplib::Request& req) {
  if (req.has_header("Authorization")) return req.get_header_value("Authorization");
  if (req.has_header("x-api-key")) return "Bearer " + req.get_header_value("x-api-key");
  return {};
}

// The caller's bearer token goes on as gRPC metadata, for the service to check as it checks its
// own callers'. A header that cannot be a token (gRPC would abort on its bytes) is left off: a
// server with a token then refuses the call (401), one without serves it.
void forward_auth(const httplib::Request& req, grpc::ClientContext& context) {
  const std::string value = authorization(req);
  if (!value.empty() && printable_ascii(value)) context.AddMetadata("authorization", value);
}

// Bodies must come with a Content-Length and uncompressed: httplib enforces its size limit only
// on a declared length, and not on what a compressed body inflates to, so a chunked or gzip'ed
// body could fill the memory before any check ran. Runs before the body is read.
httplib::Server::HandlerResponse refuse_unbounded_body(const httplib::Request& req, httplib::Response& res) {
  if (req.method != "POST") return httplib::Server::HandlerResponse::Unhandled;
  const std::string encoding = req.get_header_value("Content-Encoding");
  if (!encoding.empty() && encoding != "identity") {
    reply_error(req, res, 415,
                "Content-Encoding \"" + encoding + "\" is not accepted; send the body uncompressed",
                "http_415");
  } else if (req.has_header("Transfer-Encoding") || !req.has_header("Content-Length")) {
    reply_error(req, res, 411, "send the body with a Content-Length (chunked bodies are not accepted)",
                "http_411");
  } else {
    return httplib::Server::HandlerResponse::Unhandled;
  }
  res.set_header("Connection", "close");  // the unread body must not be taken for the next request
  return httplib::Server::HandlerResponse::Handled;
}

}  // namespace

// Counts a generation call from its start until its state is destroyed: after the reply's last
// byte, or after the client hung up and the call was cancelled.
class InFlightCall {
 public:
  explicit InFlightCall(OpenAiHttpServer& server) : server_(server) { server_.call_started(); }
  ~InFlightCall() { server_.call_ended(); }
  InFlightCall(const InFlightCall&) = delete;
  InFlightCall& operator=(const InFlightCall&) = delete;

 private:
  OpenAiHttpServer& server_;
};

namespace {

// One HTTP request: a gRPC call per prompt (one, but for /v1/completions with a list) and the
// reply being built. The calls run at once in the engine; their messages go into the reply as
// they arrive, from whichever prompt. A streaming one is kept across httplib's calls of the content
// provider (all on the worker thread that took the request).
struct Call {
  explicit Call(OpenAiHttpServer& server) : in_flight(server) {}

  InFlightCall in_flight;
  openai::ParsedRequest request;
  std::unique_ptr<openai::Reply> reply;
  // Every prompt's first message, read before the reply began; they go into it first, in prompt
  // order (so the reply's id is the first prompt's).
  std::vector<std::optional<v1::GenerateResponse>> firsts;
  size_t firsts_sent = 0;
  bool done = false;    // every call has ended (or been cancelled)
  PromptCalls prompts;  // last: destroyed (cancelled, waited for) first

  // `message` of prompt `prompt`, with its choice index in the reply: prompt i's choice j is
  // choice i * n + j.
  v1::GenerateResponse& numbered(v1::GenerateResponse& message, size_t prompt) const {
    const uint32_t n = std::max<uint32_t>(request.generate.n(), 1);
    message.set_index(static_cast<uint32_t>(prompt) * n + message.index());
    return message;
  }

  // Before the reply begins: every call's first message, so that a refusal of any prompt keeps its
  // HTTP status and cancels the others at once. Not OK (the rest cancelled) when a call failed, or
  // ended without a message.
  grpc::Status read_first_messages() {
    firsts.resize(prompts.size());
    for (size_t received = 0; received < firsts.size();) {
      PromptCalls::Event event = prompts.next();
      if (event.message) {
        firsts[event.prompt] = std::move(event.message);
        ++received;
        continue;
      }
      // (A call that has given its first message ends only once resume()d: an end here is a
      // call's without one. Kept as a guard.)
      if (event.status.ok() && firsts[event.prompt]) continue;
      cancel();
      return event.status.ok() ? grpc::Status(grpc::StatusCode::INTERNAL, "the call ended with no output")
                               : event.status;
    }
    return grpc::Status::OK;
  }

  // The next message for the reply: the first messages in prompt order, then whatever arrives.
  // nullopt once every call has ended OK; a failed call's status in `failure`, the rest cancelled.
  std::optional<v1::GenerateResponse> next_message(grpc::Status& failure) {
    if (firsts_sent < firsts.size()) {
      const size_t prompt = firsts_sent++;
      v1::GenerateResponse message = std::move(*firsts[prompt]);
      prompts.resume(prompt);
      return std::move(numbered(message, prompt));
    }
    while (prompts.running() > 0) {
      PromptCalls::Event event = prompts.next();
      if (event.message) {
        prompts.resume(event.prompt);
        return std::move(numbered(*event.message, event.prompt));
      }
      if (!event.status.ok()) {
        failure = event.status;
        cancel();
        return std::nullopt;
      }
    }
    done = true;
    return std::nullopt;
  }

  // Not streaming: every message of every call into the reply. Not OK (the rest cancelled) when a
  // call fails, which is noticed whenever it happens.
  grpc::Status read_all() {
    if (grpc::Status status = read_first_messages(); !status.ok()) return status;
    grpc::Status failure;
    while (std::optional<v1::GenerateResponse> message = next_message(failure))
      reply->add(*message);
    return failure;
  }

  // Streaming: the next events to send: one message's, or the closing events once every call has
  // ended (failure events when one failed).
  std::string next_events() {
    grpc::Status failure;
    if (std::optional<v1::GenerateResponse> message = next_message(failure)) return reply->event(*message);
    if (!failure.ok())
      return reply->failure_events(openai::http_status(failure.error_code()), failure.error_message(),
                                   openai::code_name(failure.error_code()));
    return reply->closing_events();
  }

  // From another thread, while the calls are read (the client hung up): every call is cancelled;
  // the reads then see CANCELLED, and the engine ends the requests (freeing their blocks) at its
  // next step.
  void interrupt() { prompts.interrupt(); }

  // The client went away, a call failed, or the server is stopping: every call still running is
  // cancelled.
  void cancel() {
    prompts.cancel();
    done = true;
  }
};

}  // namespace

OpenAiHttpServer::OpenAiHttpServer(std::shared_ptr<grpc::Channel> channel, OpenAiHttpOptions options)
    : stub_(v1::Generation::NewStub(std::move(channel))), options_(std::move(options)) {
  if (options_.responses_store_bytes > 0)
    responses_ = std::make_shared<ResponseStore>(
        options_.responses_store_bytes, [metrics = options_.metrics](ResponseStore::Usage usage) {
          if (metrics) metrics->set_stored_responses(usage.responses, usage.bytes);
        });
}

grpc::Status OpenAiHttpServer::check_auth(const httplib::Request& req) {
  grpc::ClientContext context;
  forward_auth(req, context);
  v1::ModelInfo info;
  return stub_->GetModelInfo(&context, {}, &info);
}

Status OpenAiHttpServer::start(const std::string& host, int port) {
  started_ = std::time(nullptr);
  std::unique_ptr<httplib::Server> server;
  if (options_.tls_cert.empty() != options_.tls_key.empty())
    return Status::InvalidArgument("TLS for the OpenAI-compatible API needs both a certificate and a key");
  if (options_.tls_cert.empty()) {
    server = std::make_unique<httplib::Server>();
  } else {
    auto tls = std::make_unique<httplib::SSLServer>(
        options_.tls_cert.c_str(), options_.tls_key.c_str(),
        options_.tls_client_ca.empty() ? nullptr : options_.tls_client_ca.c_str());
    if (!tls->is_valid())
      return Status::InvalidArgument("the OpenAI-compatible API cannot use the TLS certificate " +
                                     options_.tls_cert + " and key " + options_.tls_key +
                                     " (unreadable or not a matching PEM pair)");
    server = std::move(tls);
  }
  server->new_task_queue = [threads = options_.threads] {
    return new ElasticThreadPool(static_cast<size_t>(threads));
  };
  server->set_idle_interval(1);  // the pool joins its threads that ended idle, once a second
  server->set_payload_max_length(options_.max_request_bytes);
  server->set_pre_routing_handler(refuse_unbounded_body);
  // A client that sends nothing for this long mid-request, or a streaming client that stops
  // reading for this long, is taken for gone (its request is aborted). Also what a stalled client
  // can add to a shutdown.
  server->set_read_timeout(10);
  server->set_write_timeout(10);
  // An idle keep-alive connection holds a worker, and stop() waits for every worker: 2 s bounds
  // what an idle client adds to a shutdown.
  server->set_keep_alive_max_count(100);
  server->set_keep_alive_timeout(2);
  // A streamed token is a small write: without TCP_NODELAY, Nagle's algorithm holds it until the
  // client acknowledges the previous one, which a delayed ACK puts off by tens of milliseconds.
  server->set_tcp_nodelay(true);

  server->Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generate(openai::Endpoint::kCompletions, req, res);
  });
  server->Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generate(openai::Endpoint::kChatCompletions, req, res);
  });
  server->Post("/v1/responses", [this](const httplib::Request& req, httplib::Response& res) {
    generate(openai::Endpoint::kResponses, req, res);
  });
  server->Post("/v1/messages", [this](const httplib::Request& req, httplib::Response& res) {
    generate(openai::Endpoint::kMessages, req, res);
  });
  server->Post("/v1/messages/count_tokens",
               [this](const httplib::Request& req, httplib::Response& res) { count_tokens(req, res); });
  const auto on_stored = [this](StoredResponseAction action) {
    return [this, action](const httplib::Request& req, httplib::Response& res) {
      stored_response(action, req, res);
    };
  };
  server->Get(R"(/v1/responses/([^/]+))", on_stored(StoredResponseAction::kRead));
  server->Get(R"(/v1/responses/([^/]+)/input_items)", on_stored(StoredResponseAction::kListInputItems));
  server->Delete(R"(/v1/responses/([^/]+))", on_stored(StoredResponseAction::kDelete));
  server->Post(R"(/v1/responses/([^/]+)/cancel)", on_stored(StoredResponseAction::kCancel));
  server->Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    grpc::ClientContext context;
    forward_auth(req, context);
    v1::ModelInfo info;
    if (grpc::Status s = stub_->GetModelInfo(&context, {}, &info); !s.ok())
      return reply_grpc_error(req, res, s);
    Json models = Json::array({Json{{"id", options_.served.model},
                                    {"object", "model"},
                                    {"created", static_cast<int64_t>(started_)},
                                    {"owned_by", "kvserve"},
                                    {"max_model_len", info.max_model_len()}}});
    // Each LoRA adapter is a model of its own for clients, as vLLM lists them: its parent the base.
    for (const std::string& adapter : info.lora_adapters())
      models.push_back(Json{{"id", adapter},
                            {"object", "model"},
                            {"created", static_cast<int64_t>(started_)},
                            {"owned_by", "kvserve"},
                            {"parent", options_.served.model},
                            {"max_model_len", info.max_model_len()}});
    res.set_content(Json{{"object", "list"}, {"data", std::move(models)}}.dump(), kJson);
  });
  server->Post("/tokenize",
               [this](const httplib::Request& req, httplib::Response& res) { tokenize(req, res); });
  server->Post("/v1/embeddings",
               [this](const httplib::Request& req, httplib::Response& res) { embeddings(req, res); });
  server->Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    v1::DetokenizeRequest request;
    if (Status s = openai::parse_detokenize_request(req.body, options_.served, &request); !s.ok())
      return reply_parse_error(req, res, s);
    grpc::ClientContext context;
    forward_auth(req, context);
    v1::DetokenizeResponse text;
    if (grpc::Status s = stub_->Detokenize(&context, request, &text); !s.ok())
      return reply_grpc_error(req, res, s);
    res.set_content(Json{{"prompt", text.text()}}.dump(-1, ' ', false, Json::error_handler_t::replace),
                    kJson);
  });
  server->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool healthy = !options_.healthy || options_.healthy();
    res.status = healthy ? 200 : 503;
    res.set_content(healthy ? "ok" : "draining", "text/plain; charset=utf-8");
  });
  // httplib's own refusals (no such route, a body over the limit, a malformed request) get an
  // OpenAI error object too, so that clients can show what went wrong.
  server->set_error_handler(httplib::Server::HandlerWithResponse(
      [max = options_.max_request_bytes](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // a handler's own error
        std::string message;
        if (res.status == 404)
          message = "no route " + req.method + " " + req.path + "; " + kRoutes;
        else if (res.status == 413)
          message = "request body over " + std::to_string(max) +
                    " bytes (--max-request-bytes); send a shorter request";
        else
          message = "the HTTP request could not be read (status " + std::to_string(res.status) + ")";
        res.set_content(error_body(req, res.status, message, "http_" + std::to_string(res.status)), kJson);
        return httplib::Server::HandlerResponse::Handled;
      }));
  return listener_.start(std::move(server), host, port, "OpenAI-compatible API");
}

void OpenAiHttpServer::call_started() {
  std::lock_guard lock(mu_);
  ++in_flight_;
}

void OpenAiHttpServer::call_ended() {
  std::lock_guard lock(mu_);
  if (--in_flight_ == 0) idle_.notify_all();
}

bool OpenAiHttpServer::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return idle_.wait_for(lock, timeout, [&] { return in_flight_ == 0; });
}

void OpenAiHttpServer::embeddings(const httplib::Request& req, httplib::Response& res) {
  InFlightCall in_flight(*this);  // its engine requests run until the answer: a drain waits for it
  openai::ParsedEmbeddings request;
  if (Status s = openai::parse_embeddings_request(req.body, options_.served, &request); !s.ok())
    return reply_parse_error(req, res, s);
  if (req.has_header("X-Request-Id")) {  // names the call in the log, as for completions
    const std::string id = req.get_header_value("X-Request-Id");
    if (!printable_ascii(id))
      return reply_error(req, res, 400, "the X-Request-Id header must be printable ASCII",
                         "invalid_argument");
    request.embed.set_request_id(id);
  }
  grpc::ClientContext context;
  forward_auth(req, context);
  // A client that hangs up cancels the call, which aborts every input (their blocks are freed at
  // the engine's next step) instead of computing them for nobody. The watch ends before `context`.
  std::optional<HangupWatcher::Watch> watch;
  if (const int connection =
          find_connection_socket(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
      connection >= 0)
    watch.emplace(hangups_.watch(connection, [&context] { context.TryCancel(); }));
  v1::EmbedResponse embedded;
  const grpc::Status status = stub_->Embed(&context, request.embed, &embedded);
  watch.reset();
  if (!status.ok()) return reply_grpc_error(req, res, status);
  Json data = Json::array();
  for (int i = 0; i < embedded.embeddings_size(); ++i) {
    const auto& values = embedded.embeddings(i).values();
    Json embedding;
    if (request.base64) {  // the float32 values' bytes, little-endian as on every host we build for
      embedding = base64(std::string_view(reinterpret_cast<const char*>(values.data()),
                                          static_cast<size_t>(values.size()) * sizeof(float)));
    } else {
      embedding = std::vector<float>(values.begin(), values.end());
    }
    data.push_back(Json{{"object", "embedding"}, {"index", i}, {"embedding", std::move(embedding)}});
  }
  const uint32_t prompt_tokens = embedded.usage().prompt_tokens();
  res.set_content(Json{{"object", "list"},
                       {"data", std::move(data)},
                       {"model", request.model},
                       {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}}
                      .dump(),
                  kJson);
}

grpc::Status OpenAiHttpServer::run_tokenize(const httplib::Request& req, const v1::TokenizeRequest& request,
                                            v1::TokenizeResponse* tokens) {
  grpc::ClientContext context;
  forward_auth(req, context);
  return stub_->Tokenize(&context, request, tokens);
}

void OpenAiHttpServer::tokenize(const httplib::Request& req, httplib::Response& res) {
  openai::ParsedTokenize request;
  if (Status s = openai::parse_tokenize_request(req.body, options_.served, &request); !s.ok())
    return reply_parse_error(req, res, s);
  v1::TokenizeResponse tokens;
  if (grpc::Status s = run_tokenize(req, request.tokenize, &tokens); !s.ok())
    return reply_grpc_error(req, res, s);
  grpc::ClientContext info_context;
  forward_auth(req, info_context);
  v1::ModelInfo info;
  if (grpc::Status s = stub_->GetModelInfo(&info_context, {}, &info); !s.ok())
    return reply_grpc_error(req, res, s);
  Json reply{{"count", tokens.token_ids_size()},
             {"max_model_len", info.max_model_len()},
             {"tokens", std::vector<uint32_t>(tokens.token_ids().begin(), tokens.token_ids().end())},
             {"token_strs", nullptr}};
  if (request.return_token_strs && options_.tokenizer) {
    Json spellings = Json::array();
    for (const uint32_t id : tokens.token_ids())
      spellings.push_back(options_.tokenizer->token_spelling(static_cast<TokenId>(id)));
    reply["token_strs"] = std::move(spellings);
  }
  res.set_content(reply.dump(-1, ' ', false, Json::error_handler_t::replace), kJson);
}

void OpenAiHttpServer::count_tokens(const httplib::Request& req, httplib::Response& res) {
  openai::ParsedTokenize request;
  if (Status s = anthropic::parse_count_tokens_request(req.body, options_.served, &request); !s.ok())
    return reply_parse_error(req, res, s);
  v1::TokenizeResponse tokens;
  if (grpc::Status s = run_tokenize(req, request.tokenize, &tokens); !s.ok())
    return reply_grpc_error(req, res, s);
  res.set_content(Json{{"input_tokens", tokens.token_ids_size()}}.dump(), kJson);
}

void OpenAiHttpServer::stored_response(StoredResponseAction action, const httplib::Request& req,
                                       httplib::Response& res) {
  const std::string id = req.matches[1].str();
  if (!responses_)
    return reply_error(
        req, res, 404,
        "response " + id +
            " is not stored: this server stores no responses (it runs with --responses-store-mb 0)",
        "not_found");
  if (grpc::Status s = check_auth(req); !s.ok()) return reply_grpc_error(req, res, s);
  const std::string owner = authorization(req);
  const auto not_found = [&] {
    reply_error(req, res, 404,
                "no response " + id +
                    " is stored for this API key: it was sent with store false, deleted, or evicted for "
                    "newer ones (--responses-store-mb), or another replica or an earlier run of the server "
                    "stored it",
                "not_found");
  };
  if (action == StoredResponseAction::kDelete) {
    if (!responses_->erase(id, owner)) return not_found();
    return res.set_content(Json{{"id", id}, {"object", "response"}, {"deleted", true}}.dump(), kJson);
  }
  const std::shared_ptr<const ResponseStore::Stored> stored = responses_->find(id, owner);
  if (!stored) return not_found();
  if (action == StoredResponseAction::kRead)
    return res.set_content(stored->response.dump(-1, ' ', false, Json::error_handler_t::replace), kJson);
  if (action == StoredResponseAction::kCancel)
    return reply_error(
        req, res, 400,
        "response " + id + " is " + stored->response.value("status", "stored") +
            ": only a background response can be cancelled, and kvserve runs none in the background",
        "invalid_argument");
  // The input items, newest first unless `order` is asc, `limit` (1 to 100, 20 unless set) of them
  // after the item `after` names, as OpenAI's API lists them.
  int limit = 20;
  if (req.has_param("limit")) {
    const std::string text = req.get_param_value("limit");
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), limit);
    if (error != std::errc() || end != text.data() + text.size() || limit < 1 || limit > 100)
      return reply_error(req, res, 400, "limit: \"" + text + "\" is not an integer from 1 to 100",
                         "invalid_argument");
  }
  const std::string order = req.has_param("order") ? req.get_param_value("order") : "desc";
  if (order != "asc" && order != "desc")
    return reply_error(req, res, 400, "order: \"" + order + "\" is neither asc nor desc", "invalid_argument");
  std::vector<const Json*> items;
  for (size_t i = 0; i < stored->input_items; ++i)
    items.push_back(&stored->items[i]);
  if (order == "desc") std::reverse(items.begin(), items.end());
  size_t first = 0;
  if (req.has_param("after")) {
    const std::string after = req.get_param_value("after");
    const auto it = std::find_if(items.begin(), items.end(),
                                 [&](const Json* item) { return item->value("id", "") == after; });
    if (it == items.end())
      return reply_error(req, res, 400, "after: response " + id + " has no input item \"" + after + "\"",
                         "invalid_argument");
    first = static_cast<size_t>(it - items.begin()) + 1;
  }
  Json data = Json::array();
  for (size_t i = first; i < items.size() && data.size() < static_cast<size_t>(limit); ++i)
    data.push_back(*items[i]);
  const bool has_more = first + data.size() < items.size();
  Json list{{"object", "list"},
            {"data", data},
            {"first_id", data.empty() ? Json() : data.front()["id"]},
            {"last_id", data.empty() ? Json() : data.back()["id"]},
            {"has_more", has_more}};
  res.set_content(list.dump(-1, ' ', false, Json::error_handler_t::replace), kJson);
}

void OpenAiHttpServer::generate(openai::Endpoint endpoint, const httplib::Request& req,
                                httplib::Response& res) {
  // While draining, new requests are refused here, uncounted: the drain waits only for the calls
  // that run, not for the traffic a load balancer still sends.
  if (options_.healthy && !options_.healthy())
    return reply_error(req, res, 503,
                       "the server is shutting down and takes no new requests; retry on another replica",
                       "unavailable");
  // Where responses are stored, the API key is checked first: a wrong one is 401, not a stored
  // response that "is not found" for it.
  if (endpoint == openai::Endpoint::kResponses && responses_)
    if (grpc::Status s = check_auth(req); !s.ok()) return reply_grpc_error(req, res, s);
  auto call = std::make_shared<Call>(*this);
  nlohmann::ordered_json responses_echo;
  openai::ResponsesTurn responses_turn;
  // A stored response belongs to the API key that made it.
  const std::string owner = authorization(req);
  openai::FindStoredResponse find_stored;
  if (responses_) find_stored = [this, &owner](const std::string& id) { return responses_->find(id, owner); };
  Status parsed;
  if (endpoint == openai::Endpoint::kResponses)
    parsed = openai::parse_responses_request(req.body, options_.served, find_stored, &call->request,
                                             &responses_echo, &responses_turn);
  else if (endpoint == openai::Endpoint::kMessages)
    parsed = anthropic::parse_messages_request(req.body, options_.served, &call->request);
  else
    parsed = openai::parse_request(endpoint, req.body, options_.served, &call->request);
  if (!parsed.ok()) return reply_parse_error(req, res, parsed);
  if (req.has_header("X-Request-Id")) {
    const std::string id = req.get_header_value("X-Request-Id");
    if (!printable_ascii(id))
      return reply_error(req, res, 400, "the X-Request-Id header must be printable ASCII",
                         "invalid_argument");
    call->request.generate.set_request_id(id);
  }
  const auto created = static_cast<int64_t>(std::time(nullptr));
  if (endpoint == openai::Endpoint::kResponses) {
    std::string id;
    openai::ResponsesReply::OnComplete store;
    if (responses_ && responses_turn.store) {
      id = openai::new_stored_response_id();
      responses_echo["store"] = true;
      store = [responses = responses_, owner,
               items = std::move(responses_turn.input_items)](const Json& response) mutable {
        const size_t input_items = items.size();
        ResponseStore::Stored stored{
            .response = response,
            .items = openai::conversation_items(std::move(items), response["output"]),
            .input_items = input_items};
        if (!responses->put(response["id"].get<std::string>(), owner, std::move(stored)))
          spdlog::warn("response {} is larger than the whole store (--responses-store-mb) and was not stored",
                       response["id"].get<std::string>());
      };
    }
    call->reply =
        std::make_unique<openai::ResponsesReply>(call->request, std::move(responses_echo), created,
                                                 options_.tokenizer.get(), std::move(id), std::move(store));
  } else if (endpoint == openai::Endpoint::kMessages) {
    call->reply = std::make_unique<anthropic::MessagesReply>(call->request, options_.tokenizer.get());
  } else {
    call->reply = std::make_unique<openai::ReplyBuilder>(call->request, created, options_.tokenizer.get());
  }
  // A call per prompt, all started at once; a client's X-Request-Id names the first, "-1", "-2",
  // ... added for the others.
  std::vector<v1::GenerateRequest*> generates = {&call->request.generate};
  for (v1::GenerateRequest& more : call->request.more_prompts)
    generates.push_back(&more);
  if (const std::string& id = call->request.generate.request_id(); !id.empty() && generates.size() > 1) {
    const size_t longest = id.size() + 1 + std::to_string(generates.size() - 1).size();
    if (longest > kMaxRequestIdBytes)
      return reply_error(req, res, 400,
                         "the X-Request-Id header is " + std::to_string(id.size()) + " bytes; with " +
                             std::to_string(generates.size()) + " prompts it gets a suffix up to \"-" +
                             std::to_string(generates.size() - 1) + "\", and request ids are at most " +
                             std::to_string(kMaxRequestIdBytes) + " bytes",
                         "invalid_argument");
  }
  for (size_t i = 1; i < generates.size(); ++i)
    if (!call->request.generate.request_id().empty())
      generates[i]->set_request_id(call->request.generate.request_id() + "-" + std::to_string(i));
  call->prompts.start(*stub_, {generates.begin(), generates.end()},
                      [&req](grpc::ClientContext& context) { forward_auth(req, context); });

  // Until the reply begins, nothing is written that would fail for a client that has hung up:
  // its connection is watched instead, and a hang-up cancels the calls (their requests end, and
  // free their blocks, at the engine's next step). A stream's events notice it afterwards.
  std::optional<HangupWatcher::Watch> watch;
  if (const int connection =
          find_connection_socket(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
      connection >= 0)
    watch.emplace(hangups_.watch(connection, [call] { call->interrupt(); }));
  else
    spdlog::warn(
        "cannot find the connection of {}:{} among the open descriptors (out of them?): a hang-up "
        "before its reply begins goes unnoticed",
        req.remote_addr, req.remote_port);
  if (!call->request.stream) {
    // The whole reply at the end.
    if (grpc::Status s = call->read_all(); !s.ok()) return reply_grpc_error(req, res, s);
    return res.set_content(call->reply->body(), kJson);
  }
  if (grpc::Status s = call->read_first_messages(); !s.ok()) return reply_grpc_error(req, res, s);
  watch.reset();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [call](size_t, httplib::DataSink& sink) {
        const std::string events = call->next_events();
        if (!events.empty() && !sink.write(events.data(), events.size())) return false;  // client gone
        if (call->done) sink.done();
        return true;
      },
      [call](bool) { call->cancel(); });
}

}  // namespace kvserve
