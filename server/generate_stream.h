// One Generate call on the wire: the gRPC write reactor that streams a request's outputs (one or
// more choices) as the engine produces them, and the writer thread that builds and starts the
// writes, so that the engine thread only queues outputs. A cancelled or expired call aborts its
// choices, whose blocks return to the pool at the next engine step.
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/request.h"
#include "engine/status.h"
#include "kvserve/v1/kvserve.pb.h"
#include "server/engine_runner.h"

namespace kvserve {

// Builds messages and starts gRPC writes for streams with new output, on a thread of its own: the
// engine thread only queues outputs. Serializing a message and handing it to gRPC costs several
// microseconds per stream, which at a few hundred streams would otherwise be added to every step.
class StreamWriter {
 public:
  class Flushable {
   public:
    virtual ~Flushable() = default;
    virtual void flush() = 0;
  };

  StreamWriter();
  ~StreamWriter();
  void schedule(std::shared_ptr<Flushable> stream);

 private:
  void run();

  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<Flushable>> ready_;
  bool stop_ = false;
  std::thread thread_;
};

// One Generate call. gRPC allows one write in flight, so outputs that arrive meanwhile are merged
// into the next message of their choice: a slow client gets fewer, larger messages instead of an
// unbounded queue of small ones. Each message carries one choice; choices with output take turns
// in the order their output arrived. Deletes itself when gRPC is done with the call.
class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(EngineRunner& runner, StreamWriter& writer, std::string client_id);

  // Submits the choices (requests[i] is choice i) all or none; on failure returns why, and the
  // caller finishes the call with reject(). `reasoning_started` marks every message (see
  // GenerateResponse.reasoning_started).
  Status start(std::vector<Request> requests, bool reasoning_started = false);
  void reject(const grpc::Status& status);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  struct Stream;
  struct ChoiceChannel;

  void abort_unfinished_locked();
  void finish_locked(std::unique_lock<std::mutex>& lock, const grpc::Status& status);

  EngineRunner& runner_;
  std::shared_ptr<Stream> stream_;
};

// The choices of one call: copies of the request, choice i seeded with seed + i (when a seed is
// given) and logged as "<id>/<i>"; only choice 0 keeps prompt_logprobs. n <= 1 is the request itself.
std::vector<Request> expand_choices(Request request, uint32_t n);

}  // namespace kvserve
