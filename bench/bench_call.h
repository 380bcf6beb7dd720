// One streaming Generate call on the gRPC callback API, timing every message as it arrives.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"

namespace kvserve::bench {

using Clock = std::chrono::steady_clock;

struct RequestResult {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error_message;
  bool unfinished = false;  // cut by the end of a --duration run; neither a success nor an error
  Clock::time_point finished_at;
  double ttft_ms = -1;  // -1 when no token arrived
  double e2e_ms = 0;
  uint32_t prompt_tokens = 0;  // usage.prompt_tokens, else the count sent
  uint32_t output_tokens = 0;  // usage.completion_tokens, else the tokens counted
  std::vector<float> itl_ms;   // one per token after the first message's
};

// Receives each call's result on a gRPC callback thread.
class CallObserver {
 public:
  virtual ~CallObserver() = default;
  virtual void on_call_finished(RequestResult&& result) = 0;
};

class GenerateCall final : public grpc::ClientReadReactor<kvserve::v1::GenerateResponse> {
 public:
  // Starts the call; it deletes itself after handing its result to `observer`. The call is cut at
  // `deadline`; when `deadline_is_run_end` that is the run's end rather than the request's own timeout,
  // so running out of time there makes it unfinished rather than failed.
  static void start(kvserve::v1::Generation::Stub& stub, kvserve::v1::GenerateRequest request,
                    uint32_t prompt_tokens_sent, std::chrono::system_clock::time_point deadline,
                    bool deadline_is_run_end, CallObserver& observer);

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  GenerateCall(kvserve::v1::GenerateRequest request, uint32_t prompt_tokens_sent, bool deadline_is_run_end,
               CallObserver& observer);

  grpc::ClientContext context_;
  kvserve::v1::GenerateRequest request_;
  kvserve::v1::GenerateResponse response_;
  CallObserver& observer_;
  const bool deadline_is_run_end_;
  Clock::time_point sent_at_;
  Clock::time_point last_tokens_at_;
  uint32_t tokens_counted_ = 0;
  bool has_usage_ = false;
  kvserve::v1::Usage usage_;
  RequestResult result_;
};

// Starts calls over one API: the load driver's only view of the transport.
class CallStarter {
 public:
  virtual ~CallStarter() = default;
  // Starts request `index`'s call; its result reaches `observer` on another thread. Cut at `deadline`;
  // `deadline_is_run_end` as for GenerateCall::start.
  virtual void start(uint64_t index, kvserve::v1::GenerateRequest request, uint32_t prompt_tokens_sent,
                     std::chrono::system_clock::time_point deadline, bool deadline_is_run_end,
                     CallObserver& observer) = 0;
};

// kvserve's gRPC API: GenerateCall on the stubs, round-robin by request index.
class GrpcCallStarter final : public CallStarter {
 public:
  explicit GrpcCallStarter(std::vector<std::unique_ptr<kvserve::v1::Generation::Stub>> stubs)
      : stubs_(std::move(stubs)) {}
  void start(uint64_t index, kvserve::v1::GenerateRequest request, uint32_t prompt_tokens_sent,
             std::chrono::system_clock::time_point deadline, bool deadline_is_run_end,
             CallObserver& observer) override {
    GenerateCall::start(*stubs_[index % stubs_.size()], std::move(request), prompt_tokens_sent, deadline,
                        deadline_is_run_end, observer);
  }

 private:
  std::vector<std::unique_ptr<kvserve::v1::Generation::Stub>> stubs_;
};

// "DEADLINE_EXCEEDED" and so on, as gRPC's documentation spells them.
const char* status_code_name(grpc::StatusCode code);

}  // namespace kvserve::bench
