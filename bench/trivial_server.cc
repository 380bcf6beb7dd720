// kvserve-trivial-server: a Generation service with no model behind it. Generate streams max_tokens canned
// tokens back at once, so what kvserve-bench measures against it is the cost of gRPC and of the load
// generator itself: the ceiling above which the generator, not the server, would be the bottleneck.
//
//   kvserve-trivial-server --port 0 --tokens-per-message 4
//
// Prints "kvserve-trivial-server listening on HOST:PORT" once it accepts connections (the chosen port
// with --port 0) and stops cleanly on SIGINT or SIGTERM.
#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include "kvserve/v1/kvserve.grpc.pb.h"

namespace {

namespace v1 = kvserve::v1;

// What an empty max_tokens means here, standing in for a real server's default.
constexpr uint32_t kDefaultMaxTokens = 16;

struct ServerCounters {
  std::atomic<uint32_t> running{0};
  std::atomic<uint64_t> served{0};
};

class CannedStream final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  CannedStream(const v1::GenerateRequest& request, uint32_t tokens_per_message, uint32_t vocab_size,
               ServerCounters& counters)
      : tokens_per_message_(tokens_per_message), counters_(counters) {
    ++counters_.running;
    const grpc::Status invalid = validate(request, vocab_size);
    if (!invalid.ok()) {
      Finish(invalid);
      return;
    }
    response_.set_request_id(request.request_id().empty() ? "trivial" : request.request_id());
    prompt_tokens_ = request.has_token_ids() ? static_cast<uint32_t>(request.token_ids().ids_size())
                                             : count_words(request.text());
    total_tokens_ = request.stop().max_tokens() > 0 ? request.stop().max_tokens() : kDefaultMaxTokens;
    write_next();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    write_next();
  }

  void OnDone() override {
    --counters_.running;
    ++counters_.served;
    delete this;
  }

 private:
  static grpc::Status validate(const v1::GenerateRequest& request, uint32_t vocab_size) {
    if (request.input_case() == v1::GenerateRequest::INPUT_NOT_SET) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "set text or token_ids"};
    }
    for (const uint32_t id : request.token_ids().ids()) {
      if (id >= vocab_size) {
        return {grpc::StatusCode::INVALID_ARGUMENT, "token id " + std::to_string(id) +
                                                        " is outside the vocabulary (size " +
                                                        std::to_string(vocab_size) + ")"};
      }
    }
    return grpc::Status::OK;
  }

  static uint32_t count_words(const std::string& text) {
    uint32_t words = 0;
    bool in_word = false;
    for (const char c : text) {
      const bool space = c == ' ' || c == '\n' || c == '\t';
      if (!space && !in_word) ++words;
      in_word = !space;
    }
    return words;
  }

  void write_next() {
    response_.clear_token_ids();
    response_.clear_text();
    const uint32_t count = std::min(tokens_per_message_, total_tokens_ - tokens_sent_);
    for (uint32_t i = 0; i < count; ++i) {
      response_.add_token_ids(100 + (tokens_sent_ + i) % 100);
      response_.mutable_text()->append(" tok");
    }
    tokens_sent_ += count;
    if (tokens_sent_ < total_tokens_) {
      StartWrite(&response_);
      return;
    }
    response_.set_finish_reason(v1::FINISH_REASON_LENGTH);
    response_.mutable_usage()->set_prompt_tokens(prompt_tokens_);
    response_.mutable_usage()->set_completion_tokens(total_tokens_);
    StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
  }

  const uint32_t tokens_per_message_;
  ServerCounters& counters_;
  v1::GenerateResponse response_;
  uint32_t prompt_tokens_ = 0;
  uint32_t total_tokens_ = 0;
  uint32_t tokens_sent_ = 0;
};

class TrivialGeneration final : public v1::Generation::CallbackService {
 public:
  TrivialGeneration(uint32_t tokens_per_message, uint32_t vocab_size)
      : tokens_per_message_(tokens_per_message), vocab_size_(vocab_size) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext*,
                                                           const v1::GenerateRequest* request) override {
    return new CannedStream(*request, tokens_per_message_, vocab_size_, counters_);
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override {
    // One token per byte: enough for a client to exercise the RPC.
    for (const unsigned char byte : request->text())
      response->add_token_ids(byte);
    return finished(context);
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override {
    for (const uint32_t id : request->token_ids())
      response->mutable_text()->push_back(static_cast<char>(id));
    return finished(context);
  }

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest*,
                                         v1::ModelInfo* info) override {
    info->set_model("trivial");
    info->set_architecture("canned tokens");
    info->set_vocab_size(vocab_size_);
    info->set_max_model_len(1u << 20);
    info->set_backend("none");
    info->set_device("no model: kvserve-trivial-server");
    return finished(context);
  }

  grpc::ServerUnaryReactor* GetServerStatus(grpc::CallbackServerContext* context,
                                            const v1::GetServerStatusRequest*,
                                            v1::ServerStatus* status) override {
    status->set_num_running(counters_.running.load());
    status->set_requests_served(counters_.served.load());
    return finished(context);
  }

 private:
  static grpc::ServerUnaryReactor* finished(grpc::CallbackServerContext* context) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  const uint32_t tokens_per_message_;
  const uint32_t vocab_size_;
  ServerCounters counters_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 50051;
  uint32_t tokens_per_message = 1;
  uint32_t vocab_size = 32000;
  CLI::App app{"kvserve-trivial-server: a kvserve.v1 Generation server that streams canned tokens at once"};
  app.add_option("--host", host, "Address to listen on")->capture_default_str();
  app.add_option("--port", port, "Port to listen on; 0 picks a free one (printed at start)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--tokens-per-message", tokens_per_message, "Tokens in each streamed message")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--vocab", vocab_size, "vocab_size reported by GetModelInfo; larger prompt ids are rejected")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 30));
  CLI11_PARSE(app, argc, argv);

  // Blocked before gRPC starts its threads, so they inherit the mask and only sigwait() sees the signals.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  TrivialGeneration service(tokens_per_message, vocab_size);
  grpc::ServerBuilder builder;
  int chosen_port = 0;
  const std::string address =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &chosen_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || chosen_port == 0) {
    std::fprintf(stderr, "kvserve-trivial-server: error: cannot listen on %s\n", address.c_str());
    return 2;
  }
  std::printf("kvserve-trivial-server listening on %s:%d\n", host.c_str(), chosen_port);
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
