// Soak: thousands of requests at high concurrency against the real server (some with several
// choices, some with structured output), with random cancels, short deadlines, malformed requests and
// abandoned clients. Afterwards every KV block is free, the server's memory has not grown beyond a bound, and
// it still answers correctly. Bounded in requests and time; loopback only.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/server_process.h"

namespace kvserve {
namespace {

using namespace std::chrono_literals;

// Resident and peak resident memory of a process, in KiB, from /proc.
std::pair<long, long> rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  long rss = -1, peak = -1;
  while (in >> key) {
    if (key == "VmRSS:") in >> rss;
    if (key == "VmHWM:") in >> peak;
  }
  return {rss, peak};
}

enum class Kind { kNormal, kCancel, kDeadline, kMalformed, kAbandon };

struct Tally {
  std::mutex mu;
  std::map<std::string, int> by_outcome;
  void add(const std::string& outcome) {
    std::lock_guard lock(mu);
    ++by_outcome[outcome];
  }
};

void one_request(v1::Generation::Stub& stub, std::mt19937& rng, Tally& tally) {
  const Kind kind = static_cast<Kind>(std::uniform_int_distribution<int>(0, 9)(rng) % 5);
  v1::GenerateRequest req;
  const int prompt_len = std::uniform_int_distribution<int>(1, 200)(rng);
  for (int i = 0; i < prompt_len; ++i)
    req.mutable_token_ids()->add_ids(std::uniform_int_distribution<int>(3, 511)(rng));
  req.mutable_stop()->set_max_tokens(std::uniform_int_distribution<int>(1, 64)(rng));
  req.mutable_stop()->set_ignore_eos(true);
  req.mutable_sampling()->set_temperature(std::uniform_real_distribution<float>(0.0f, 1.5f)(rng));
  // One call in four asks for several choices, which share the prompt's blocks.
  if (std::uniform_int_distribution<int>(0, 3)(rng) == 0)
    req.set_n(std::uniform_int_distribution<int>(2, 4)(rng));
  // One in eight is structured output (the same few patterns, so the constraint cache is shared
  // between threads); it needs EOS to end, so ignore_eos goes.
  if (std::uniform_int_distribution<int>(0, 7)(rng) == 0) {
    static const char* const kPatterns[] = {"[a-z ]{1,40}", "(yes|no|[0-9]{1,6})",
                                            "\\{\"k\": ?[0-9]{1,3}\\}"};
    req.mutable_response_format()->set_regex(kPatterns[std::uniform_int_distribution<int>(0, 2)(rng)]);
    req.mutable_stop()->set_ignore_eos(false);
  }
  if (kind == Kind::kMalformed) {
    switch (std::uniform_int_distribution<int>(0, 3)(rng)) {
      case 0:
        req.mutable_token_ids()->add_ids(1u << 30);
        break;
      case 1:
        req.mutable_sampling()->set_top_p(-3);
        break;
      case 2:
        req.clear_input();
        break;
      default:
        req.mutable_stop()->set_max_tokens(100000);
        break;
    }
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + (kind == Kind::kDeadline ? 3ms : 30s));
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  int messages = 0;
  while (reader->Read(&msg)) {
    ++messages;
    if (kind == Kind::kCancel && messages == 2) ctx.TryCancel();
    if (kind == Kind::kAbandon && messages == 1) break;  // stop reading; the context goes away below
  }
  if (kind == Kind::kAbandon) {
    ctx.TryCancel();
    tally.add("abandoned");
    return;
  }
  const grpc::Status s = reader->Finish();
  static const std::map<int, std::string> names = {
      {grpc::StatusCode::CANCELLED, "CANCELLED"},
      {grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
      {grpc::StatusCode::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"}};
  const auto name = names.find(s.error_code());
  tally.add(s.ok() ? "OK" : name != names.end() ? name->second : "code " + std::to_string(s.error_code()));
}

TEST(Soak, ThousandsOfUnrulyRequestsLeaveNoTrace) {
  testing::ServerProcess server({"--model", std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama",
                                 "--num-kv-blocks", "96", "--block-size", "16", "--max-queue", "64",
                                 "--log-level", "warn"});
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);

  // Warm up so that allocator pools and gRPC buffers exist before the baseline is taken.
  Tally warm;
  std::mt19937 warm_rng(7);
  for (int i = 0; i < 200; ++i)
    one_request(*stub, warm_rng, warm);
  const auto [rss_before, peak_before] = rss_kib(server.pid());

  const int threads = 48, per_thread = 70;  // 3,360 requests
  const auto time_limit = std::chrono::steady_clock::now() + 90s;
  Tally tally;
  std::atomic<int> sent{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      for (int i = 0; i < per_thread && std::chrono::steady_clock::now() < time_limit; ++i) {
        one_request(*stub, rng, tally);
        ++sent;
      }
    });
  for (auto& t : pool)
    t.join();

  // Every block back in the pool, nothing running or waiting.
  v1::ServerStatus status;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  do {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->GetServerStatus(&ctx, {}, &status).ok());
    if (status.kv_blocks_free() == status.kv_blocks_total() && status.num_running() == 0 &&
        status.num_waiting() == 0)
      break;
    std::this_thread::sleep_for(20ms);
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(status.kv_blocks_free(), status.kv_blocks_total());
  EXPECT_EQ(status.num_running(), 0u);
  EXPECT_EQ(status.num_waiting(), 0u);

  // Still correct: a greedy request gives the same tokens as before the storm.
  auto greedy = [&] {
    v1::GenerateRequest req;
    req.set_text("Once upon a time");
    req.mutable_stop()->set_max_tokens(16);
    req.mutable_stop()->set_ignore_eos(true);
    grpc::ClientContext ctx;
    auto reader = stub->Generate(&ctx, req);
    std::vector<uint32_t> tokens;
    v1::GenerateResponse msg;
    while (reader->Read(&msg))
      tokens.insert(tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
    EXPECT_TRUE(reader->Finish().ok());
    return tokens;
  };
  const auto after = greedy();
  testing::ServerProcess fresh({"--model", std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama"});
  stub = v1::Generation::NewStub(grpc::CreateChannel(fresh.address(), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(after, greedy()) << "the soaked server must answer as a fresh one does";

  const auto [rss_after, peak_after] = rss_kib(server.pid());
  std::printf("soak: %d calls sent, %llu choices served;", sent.load(),
              static_cast<unsigned long long>(status.requests_served()));
  for (const auto& [outcome, n] : tally.by_outcome)
    std::printf(" %s=%d", outcome.c_str(), n);
  std::printf("; RSS %ld -> %ld KiB, peak %ld KiB\n", rss_before, rss_after, peak_after);
  EXPECT_GE(sent.load(), 1000) << "the time limit cut the soak short";
  EXPECT_GT(tally.by_outcome["OK"], 0);
  // Growth bound: the per-request state is freed; allow for allocator and gRPC buffer slack.
  EXPECT_LT(rss_after - rss_before, 64 * 1024) << "server memory grew by more than 64 MiB";
}

}  // namespace
}  // namespace kvserve
