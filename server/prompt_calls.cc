#include "server/prompt_calls.h"

#include <utility>

namespace kvserve {

// One prompt's call. Reads start from outside gRPC's reactions (resume() on the HTTP worker), so
// the call holds a hold until a read finds the stream's end: without it, gRPC could finish the
// call, and run OnDone, between two reads. Its flags are guarded by the owner's mutex.
class PromptCalls::Call final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  Call(PromptCalls& owner, size_t prompt) : owner_(owner), prompt_(prompt) {}

  void OnReadDone(bool ok) override {
    {
      std::lock_guard lock(owner_.mu_);
      reading = false;
      if (ok && !owner_.cancelling_) {
        owner_.events_.push_back(Event{prompt_, std::move(incoming), grpc::Status::OK});
        owner_.changed_.notify_all();
        return;
      }
      if (ok) {
        reading = true;  // cancelling: read on to the end, dropping what comes
      } else {
        stream_ended = true;
      }
    }
    // Outside the lock: gRPC may run a reaction inline.
    if (ok)
      StartRead(&incoming);
    else
      RemoveHold();  // no read will start again: the call may finish
  }

  void OnDone(const grpc::Status& status) override {
    std::lock_guard lock(owner_.mu_);
    ++owner_.ended_;
    if (!owner_.cancelling_) owner_.events_.push_back(Event{prompt_, std::nullopt, status});
    owner_.changed_.notify_all();
  }

  grpc::ClientContext context;
  v1::GenerateResponse incoming;  // the read in flight writes here
  bool reading = false;           // a read is in flight
  bool stream_ended = false;      // a read found no more messages

 private:
  PromptCalls& owner_;
  const size_t prompt_;
};

PromptCalls::PromptCalls() = default;

PromptCalls::~PromptCalls() {
  cancel();
}

void PromptCalls::start(v1::Generation::StubInterface& stub,
                        const std::vector<const v1::GenerateRequest*>& requests,
                        const std::function<void(grpc::ClientContext&)>& prepare) {
  // A call joins calls_ only once nothing can throw before it starts: cancel() and the destructor
  // then wait for the ends of exactly the calls that run.
  calls_.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    auto call = std::make_unique<Call>(*this, i);
    prepare(call->context);
    {
      std::lock_guard lock(mu_);
      call->reading = true;
      calls_.push_back(std::move(call));
    }
    Call& started = *calls_.back();
    stub.async()->Generate(&started.context, requests[i], &started);
    started.AddHold();
    started.StartRead(&started.incoming);
    started.StartCall();
  }
}

PromptCalls::Event PromptCalls::next() {
  std::unique_lock lock(mu_);
  if (returned_ends_ == calls_.size())
    return Event{0, std::nullopt, grpc::Status(grpc::StatusCode::INTERNAL, "no call is running")};
  changed_.wait(lock, [&] { return !events_.empty(); });
  Event event = std::move(events_.front());
  events_.pop_front();
  if (!event.message) ++returned_ends_;
  return event;
}

void PromptCalls::resume(size_t prompt) {
  Call& call = *calls_.at(prompt);
  {
    std::lock_guard lock(mu_);
    if (call.reading || call.stream_ended || cancelling_) return;
    call.reading = true;
  }
  call.StartRead(&call.incoming);
}

size_t PromptCalls::running() const {
  std::lock_guard lock(mu_);
  return calls_.size() - returned_ends_;
}

void PromptCalls::interrupt() {
  for (auto& call : calls_)
    call->context.TryCancel();
}

void PromptCalls::cancel() {
  // A call whose last message was not taken has no read in flight: one is started, so that its
  // reads go on to the end and release the hold.
  std::vector<Call*> idle;
  {
    std::lock_guard lock(mu_);
    cancelling_ = true;
    events_.clear();
    for (auto& call : calls_) {
      if (call->reading || call->stream_ended) continue;
      call->reading = true;
      idle.push_back(call.get());
    }
  }
  interrupt();
  for (Call* call : idle)
    call->StartRead(&call->incoming);
  std::unique_lock lock(mu_);
  changed_.wait(lock, [&] { return ended_ == calls_.size(); });
  events_.clear();
  returned_ends_ = calls_.size();
}

}  // namespace kvserve
