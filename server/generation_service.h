// The kvserve.v1.Generation service over gRPC's callback API: no thread per request. It checks and
// translates requests; Generate's streaming of outputs (and aborting on cancel) is
// server/generate_stream.h's.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/tokenizer.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "server/engine_runner.h"

namespace kvserve {

// The longest request id a call may name: the id is echoed on every message and logged, so a long
// one would multiply what the server sends.
inline constexpr size_t kMaxRequestIdBytes = 256;

class ChatTemplate;
class ConstraintCache;
class Metrics;
class StreamWriter;

struct ServiceOptions {
  int default_max_tokens = 0;  // a cap for requests that leave max_tokens at 0 (0: none, all that fits)
  size_t max_request_bytes = 1 << 20;  // larger requests get INVALID_ARGUMENT
  int max_stop_strings = 16;           // per request
  size_t max_stop_string_bytes = 256;  // per stop string
  std::string model_name;              // what GetModelInfo reports as `model`
  std::string device;                  // e.g. "2 CPU threads"
  Metrics* metrics = nullptr;          // optional: counts rejections
  // When set, every call must carry metadata "authorization: Bearer <token>" (UNAUTHENTICATED
  // otherwise). The health and reflection services stay open.
  std::string auth_token;
  // The model's chat template, for requests that send a conversation; null = no chat input
  // (FAILED_PRECONDITION), as for a model that ships none.
  std::shared_ptr<const ChatTemplate> chat_template;
  // The LoRA adapters the backend serves, by name: adapter i + 1 is lora_adapters[i] (--lora-modules).
  std::vector<std::string> lora_adapters;
};

// Request::lora_adapter for a request naming `name` (empty: the base model, 0); NOT_FOUND naming
// the served ones for another name.
Status resolve_lora_adapter(const std::vector<std::string>& served, const std::string& name, int* index);

class GenerationService final : public v1::Generation::CallbackService {
 public:
  // The model, tokenizer and runner must outlive the service.
  GenerationService(EngineRunner& runner, const ModelConfig& model,
                    std::shared_ptr<const Tokenizer> tokenizer, ServiceOptions options);
  ~GenerationService() override;

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                           const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetServerStatus(grpc::CallbackServerContext* context,
                                            const v1::GetServerStatusRequest* request,
                                            v1::ServerStatus* response) override;
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context, const v1::EmbedRequest* request,
                                  v1::EmbedResponse* response) override;

  // Turns a wire request into an engine request, or says (INVALID_ARGUMENT) which field is wrong
  // (FAILED_PRECONDITION for chat input without a chat template). `reasoning_started` (if given)
  // says whether a chat prompt ends inside an open <think> block. Public for tests.
  Status to_engine_request(const v1::GenerateRequest& in, Request* out,
                           bool* reasoning_started = nullptr) const;

 private:
  grpc::Status reject(const Status& status) const;
  // OK, or UNAUTHENTICATED when a token is configured and the call does not carry it.
  grpc::Status check_auth(const grpc::CallbackServerContext& context) const;
  // What Tokenize and Detokenize check before any work: auth, a tokenizer, the size limit.
  grpc::Status check_tokenizer_call(const grpc::CallbackServerContext& context, size_t request_bytes) const;
  // The compiled constraint of a request's response_format (cached by pattern).
  Status compile_response_format(const v1::ResponseFormat& format,
                                 std::shared_ptr<const TokenConstraint>* out) const;

  EngineRunner& runner_;
  const ModelConfig& model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  ServiceOptions options_;
  mutable std::atomic<uint64_t> next_request_number_{0};
  std::unique_ptr<StreamWriter> writer_;          // sends stream messages off the engine thread
  std::unique_ptr<ConstraintCache> constraints_;  // structured output; null without a tokenizer
};

// The gRPC status for an engine status (same codes, same message).
grpc::Status to_grpc_status(const Status& status);

// Encodes a client's text, or says (INVALID_ARGUMENT) that it could not be.
Status encode_text(const Tokenizer& tokenizer, const std::string& text, bool add_bos,
                   std::vector<TokenId>* ids);

}  // namespace kvserve
