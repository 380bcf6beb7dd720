// What the end-to-end tests ask of a running kvserve over its gRPC API besides Generate: a stub
// on a fresh channel, the server's status, and waiting until every KV block is back in the pool.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/server_process.h"

namespace kvserve::testing {

inline std::unique_ptr<v1::Generation::Stub> stub(const ServerProcess& server) {
  return v1::Generation::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
}

inline v1::ServerStatus status(v1::Generation::Stub& stub) {
  grpc::ClientContext ctx;
  v1::ServerStatus s;
  EXPECT_TRUE(stub.GetServerStatus(&ctx, {}, &s).ok());
  return s;
}

// Polls until every KV block is free and nothing runs or waits, or the timeout passes.
inline bool wait_all_blocks_free(v1::Generation::Stub& stub,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const v1::ServerStatus s = status(stub);
    if (s.num_running() == 0 && s.num_waiting() == 0 && s.kv_blocks_free() == s.kv_blocks_total())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace kvserve::testing
