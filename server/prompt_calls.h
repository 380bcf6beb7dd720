// The Generate calls of one OpenAI-API request, one per prompt (several for /v1/completions with a
// list of prompts), all running at once and read through gRPC's callback API, so that their
// messages come out merged in the order they arrive: a short prompt's tokens stream while a long
// one is still generating, and a refusal of any prompt is seen as soon as it happens.
//
// One message per call is in flight at a time: a call's next read starts only when the caller
// resume()s it after taking its message. A slow HTTP client therefore slows its calls, whose
// server side merges tokens into fewer, larger messages, instead of a buffer here growing.
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"

namespace kvserve {

class PromptCalls {
 public:
  // A message of a call, or (without one) its end and how it ended.
  struct Event {
    size_t prompt = 0;
    std::optional<v1::GenerateResponse> message;
    grpc::Status status;
  };

  PromptCalls();
  // Cancels the calls still running and waits until gRPC is done with every one.
  ~PromptCalls();
  PromptCalls(const PromptCalls&) = delete;
  PromptCalls& operator=(const PromptCalls&) = delete;

  // Starts a call per request (requests[i] is prompt i; each must outlive the calls); `prepare`
  // sets up each call's context (metadata) before it starts. Called once. If `prepare` throws, the
  // calls started before it run on (the destructor cancels them).
  void start(v1::Generation::StubInterface& stub, const std::vector<const v1::GenerateRequest*>& requests,
             const std::function<void(grpc::ClientContext&)>& prepare);
  size_t size() const { return calls_.size(); }

  // Blocks until a call has a message or has ended, and returns that. Each call's messages come in
  // order and before its end. Only while running() > 0.
  Event next();
  // Starts the next read of `prompt`'s call, after its last message was taken from next().
  void resume(size_t prompt);
  // Calls whose end next() has not returned yet.
  size_t running() const;

  // From any thread (a hang-up noticed elsewhere): cancels every call (its request is aborted and
  // frees its KV blocks at the engine's next step). A call still running ends CANCELLED, as next()
  // then says; one whose message is held ends when resume()d or cancel()led; one already finished
  // keeps its own status.
  void interrupt();
  // Cancels every call still running and waits until all have ended; their messages are dropped.
  void cancel();

 private:
  class Call;
  friend class Call;

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::unique_ptr<Call>> calls_;
  std::deque<Event> events_;  // not yet returned by next()
  size_t ended_ = 0;          // calls gRPC is done with
  size_t returned_ends_ = 0;  // ends next() has returned
  bool cancelling_ = false;   // messages are dropped and reads go on to the end
};

}  // namespace kvserve
