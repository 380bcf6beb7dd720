// What the end-to-end tests ask of a running kvserve over its gRPC API: a stub on a fresh channel,
// a Generate call read to its end (sorted by choice), the server's status, and waiting until every
// KV block is back in the pool.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/server_process.h"

namespace kvserve::testing {

inline std::unique_ptr<v1::Generation::Stub> stub(const ServerProcess& server) {
  return v1::Generation::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
}

// One choice of a Generate call, as the client received it.
struct ReceivedChoice {
  std::vector<uint32_t> tokens;
  std::vector<float> logprobs;  // the chosen tokens'
  std::string text;
  int final_messages = 0;  // messages with a finish_reason: 1 in a well-formed stream
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
};

struct ReceivedCall {
  grpc::Status status;
  std::map<uint32_t, ReceivedChoice> choices;  // by index
  std::vector<std::string> request_ids;        // one per message
  int messages = 0;
};

// Streams one Generate call to the end (or cancels it after `cancel_after` messages), sorting
// each message into its choice.
inline ReceivedCall generate(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                             int cancel_after = -1) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub.Generate(&ctx, request);
  ReceivedCall call;
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    ++call.messages;
    call.request_ids.push_back(msg.request_id());
    ReceivedChoice& choice = call.choices[msg.index()];
    EXPECT_EQ(choice.final_messages, 0) << "choice " << msg.index() << " got a message after its last";
    choice.tokens.insert(choice.tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
    for (const v1::TokenLogprob& lp : msg.logprobs())
      choice.logprobs.push_back(lp.logprob());
    choice.text += msg.text();
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      ++choice.final_messages;
      choice.finish = msg.finish_reason();
      choice.usage = msg.usage();
    }
    if (call.messages == cancel_after) ctx.TryCancel();
  }
  call.status = reader->Finish();
  return call;
}

inline v1::ServerStatus status(v1::Generation::Stub& stub) {
  grpc::ClientContext ctx;
  v1::ServerStatus s;
  EXPECT_TRUE(stub.GetServerStatus(&ctx, {}, &s).ok());
  return s;
}

// Polls the server's status until `ready` holds for it or the timeout passes; returns the last
// status seen, for the caller's checks.
template <typename Ready>
v1::ServerStatus wait_for_status(v1::Generation::Stub& stub, Ready ready,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  v1::ServerStatus s = status(stub);
  while (!ready(s) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    s = status(stub);
  }
  return s;
}

// Polls until every KV block is free and nothing runs or waits, or the timeout passes.
inline bool wait_all_blocks_free(v1::Generation::Stub& stub,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto all_free = [](const v1::ServerStatus& s) {
    return s.num_running() == 0 && s.num_waiting() == 0 && s.kv_blocks_free() == s.kv_blocks_total();
  };
  return all_free(wait_for_status(stub, all_free, timeout));
}

}  // namespace kvserve::testing
