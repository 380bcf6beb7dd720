// The OpenAI-compatible HTTP API: POST /v1/completions, /v1/chat/completions and /v1/responses
// (whole replies or server-sent events; stored responses read back and deleted), GET /v1/models, POST
// /tokenize and /detokenize (as vLLM's) and GET /health, for the many clients and tools that speak OpenAI's
// protocol; and Anthropic's POST /v1/messages and /v1/messages/count_tokens (server/anthropic_messages.h),
// for those that speak Anthropic's (an x-api-key header is taken as the bearer token). Each request is read
// into a kvserve.v1.GenerateRequest (server/openai_request.h) and run through the server's own gRPC service
// over an in-process channel, so the two APIs share validation, authentication, choices, structured output,
// cancellation, metrics and logs; only the wire format differs (server/openai_response.h).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "engine/status.h"
#include "engine/tokenizer.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "server/hangup_watcher.h"
#include "server/http_listener.h"
#include "server/metrics.h"
#include "server/openai_request.h"
#include "server/response_store.h"

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace kvserve {

struct OpenAiHttpOptions {
  openai::ServedApi served;                    // the model's name (clients' `model`), its tool-call format
  std::shared_ptr<const Tokenizer> tokenizer;  // spells tokens in logprobs; may be null
  size_t max_request_bytes = 1 << 20;          // largest body accepted (413 over it)
  // Requests served at once: each holds a worker thread while it waits for its tokens; more wait
  // for a free worker. Threads start as requests need them and end after a minute idle.
  int threads = 256;
  // TLS: both paths or neither (plain HTTP); with a client CA, clients must present a certificate
  // it signed.
  std::string tls_cert, tls_key, tls_client_ca;
  // GET /health: true answers 200, false 503 (draining). Empty means always healthy.
  std::function<bool()> healthy;
  // The Responses API's stored responses, in bytes (server/response_store.h); 0 stores none.
  size_t responses_store_bytes = size_t{64} << 20;
  Metrics* metrics = nullptr;  // where the stored responses are counted; may be null
};

class OpenAiHttpServer {
 public:
  // `channel` reaches the kvserve.v1.Generation service (the server's in-process channel).
  OpenAiHttpServer(std::shared_ptr<grpc::Channel> channel, OpenAiHttpOptions options);
  ~OpenAiHttpServer() = default;  // stops

  // Binds host:port (0: any free port) and serves until stop(). Fails if the address cannot be
  // bound or the TLS files do not load.
  Status start(const std::string& host, int port);
  // Waits until no generation request is being served, or `timeout` has passed; true if none is.
  // The server calls it before shutting gRPC down, which would cut these calls off.
  bool wait_idle(std::chrono::milliseconds timeout);
  // Stops accepting, lets requests in flight finish (a call still running ends when the gRPC
  // server shuts down) and joins the threads. Idempotent.
  void stop() { listener_.stop(); }
  int bound_port() const { return listener_.bound_port(); }

 private:
  // POST /v1/completions, /v1/chat/completions, /v1/responses and /v1/messages.
  void generate(openai::Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  // POST /tokenize: the Tokenize RPC, with the model's max_model_len.
  // POST /v1/embeddings, through the Embed RPC.
  void embeddings(const httplib::Request& req, httplib::Response& res);
  void tokenize(const httplib::Request& req, httplib::Response& res);
  // POST /v1/messages/count_tokens (Anthropic's): the Tokenize RPC on the prompt /v1/messages
  // would run.
  void count_tokens(const httplib::Request& req, httplib::Response& res);
  // The Tokenize RPC, with the caller's API key.
  grpc::Status run_tokenize(const httplib::Request& req, const v1::TokenizeRequest& request,
                            v1::TokenizeResponse* tokens);
  // GET /v1/responses/{id} (and .../input_items), DELETE /v1/responses/{id} and POST
  // /v1/responses/{id}/cancel: a stored response of the caller's API key.
  enum class StoredResponseAction { kRead, kListInputItems, kDelete, kCancel };
  void stored_response(StoredResponseAction action, const httplib::Request& req, httplib::Response& res);
  // The caller's API key, checked by the service (a cheap call that needs it).
  grpc::Status check_auth(const httplib::Request& req);
  friend class InFlightCall;
  void call_started();
  void call_ended();

  std::unique_ptr<v1::Generation::Stub> stub_;
  OpenAiHttpOptions options_;
  std::shared_ptr<ResponseStore> responses_;  // null when responses are not stored
  std::time_t started_ = 0;
  std::mutex mu_;
  std::condition_variable idle_;
  int in_flight_ = 0;      // generation calls not yet ended
  HangupWatcher hangups_;  // clients that leave before their reply begins; outlives the workers
  HttpListener listener_;
};

}  // namespace kvserve
