// PromptCalls against a scripted Generation service on an in-process channel: the messages of
// several calls come out merged, each call's in order and before its end; a refusal is an end like
// any other; and cancel(), interrupt() and the destructor end every call, messages held or not,
// without waiting for the service to finish on its own.
#include "server/prompt_calls.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"

namespace kvserve {
namespace {

using namespace std::chrono_literals;

// Generate's script comes from the request's text (and it wants the metadata start() prepares): "refuse"
// fails at once (INVALID_ARGUMENT); "endless" writes a message every millisecond until the call is cancelled;
// anything else writes stop.max_tokens messages numbered 0, 1, ... in their token ids.
class ScriptedGeneration final : public v1::Generation::Service {
 public:
  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    const auto prepared = context->client_metadata().find("x-test");
    if (prepared == context->client_metadata().end() || prepared->second != "prepared")
      return {grpc::StatusCode::FAILED_PRECONDITION, "the call's context was not prepared"};
    if (request->text() == "refuse") return {grpc::StatusCode::INVALID_ARGUMENT, "refused by script"};
    const bool endless = request->text() == "endless";
    for (uint32_t i = 0; endless || i < request->stop().max_tokens(); ++i) {
      if (context->IsCancelled()) {
        ++cancelled;
        return grpc::Status::CANCELLED;
      }
      v1::GenerateResponse message;
      message.set_request_id(request->request_id());
      message.add_token_ids(i);
      if (!writer->Write(message)) {
        ++cancelled;  // the client is gone
        return grpc::Status::CANCELLED;
      }
      if (endless) std::this_thread::sleep_for(1ms);
    }
    return grpc::Status::OK;
  }

  std::atomic<int> cancelled{0};
};

class PromptCallsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Generation::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  void TearDown() override { server_->Shutdown(std::chrono::system_clock::now() + 5s); }

  // Requests named "p0", "p1", ...; texts and message counts as given.
  void start(PromptCalls& calls, const std::vector<std::pair<std::string, uint32_t>>& scripts) {
    for (size_t i = 0; i < scripts.size(); ++i) {
      requests_.emplace_back();
      requests_.back().set_request_id("p" + std::to_string(i));
      requests_.back().set_text(scripts[i].first);
      requests_.back().mutable_stop()->set_max_tokens(scripts[i].second);
    }
    std::vector<const v1::GenerateRequest*> pointers;
    for (const v1::GenerateRequest& r : requests_)
      pointers.push_back(&r);
    calls.start(*stub_, pointers, [](grpc::ClientContext& context) {
      context.AddMetadata("x-test", "prepared");
      context.set_deadline(std::chrono::system_clock::now() + 60s);  // a hang fails, not blocks CI
    });
  }

  ScriptedGeneration service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Generation::Stub> stub_;
  std::deque<v1::GenerateRequest> requests_;  // stable addresses while the calls run
};

TEST_F(PromptCallsTest, MergesTheCallsEachInOrderThenItsEnd) {
  PromptCalls calls;
  start(calls, {{"a", 5}, {"b", 3}, {"c", 0}, {"d", 1}});  // d's first message is its last
  ASSERT_EQ(calls.size(), 4u);
  std::map<size_t, std::vector<uint32_t>> tokens;
  std::map<size_t, int> ends;
  while (calls.running() > 0) {
    PromptCalls::Event event = calls.next();
    ASSERT_LT(event.prompt, 4u);
    if (event.message) {
      EXPECT_EQ(ends[event.prompt], 0) << "a message after its call's end";
      EXPECT_EQ(event.message->request_id(), "p" + std::to_string(event.prompt));
      tokens[event.prompt].push_back(event.message->token_ids(0));
      calls.resume(event.prompt);
    } else {
      EXPECT_TRUE(event.status.ok()) << event.status.error_message();
      ++ends[event.prompt];
    }
  }
  EXPECT_EQ(tokens[0], std::vector<uint32_t>({0, 1, 2, 3, 4}));
  EXPECT_EQ(tokens[1], std::vector<uint32_t>({0, 1, 2}));
  EXPECT_TRUE(tokens[2].empty());
  EXPECT_EQ(tokens[3], std::vector<uint32_t>({0}));
  EXPECT_EQ(ends, (std::map<size_t, int>{{0, 1}, {1, 1}, {2, 1}, {3, 1}}));
  // Nothing left: next() says so instead of blocking.
  EXPECT_EQ(calls.next().status.error_code(), grpc::StatusCode::INTERNAL);
}

TEST_F(PromptCallsTest, ARefusalIsAnEndWithItsStatus) {
  PromptCalls calls;
  start(calls, {{"endless", 0}, {"refuse", 0}});
  while (true) {
    PromptCalls::Event event = calls.next();
    if (event.message) continue;  // the endless call's first message, held: no resume
    EXPECT_EQ(event.prompt, 1u);
    EXPECT_EQ(event.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(event.status.error_message(), "refused by script");
    break;
  }
  const auto start = std::chrono::steady_clock::now();
  calls.cancel();  // the endless call, its message held, ends too
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_EQ(calls.running(), 0u);
}

TEST_F(PromptCallsTest, CancelEndsCallsWhetherTheirMessagesWereTakenOrNot) {
  {
    PromptCalls calls;
    start(calls, {{"endless", 0}, {"endless", 0}, {"endless", 0}});
    // Prompt 0 is read on, prompt 1 has a message held, prompt 2 may have one not yet taken.
    for (int taken = 0; taken < 20;) {
      PromptCalls::Event event = calls.next();
      ASSERT_TRUE(event.message.has_value());
      if (event.prompt == 0) {
        calls.resume(0);
        ++taken;
      }
    }
    calls.cancel();
    EXPECT_EQ(calls.running(), 0u);
    calls.cancel();  // idempotent
  }
  // The service saw every call cancelled (its handlers end after the client has).
  for (int i = 0; i < 500 && service_.cancelled < 3; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(service_.cancelled, 3);
}

TEST_F(PromptCallsTest, TheDestructorCancelsRunningCalls) {
  {
    PromptCalls calls;
    start(calls, {{"endless", 0}, {"endless", 0}});
    // A message from each: both handlers run (the second one's is held, the first read on).
    std::set<size_t> seen;
    while (seen.size() < 2) {
      PromptCalls::Event event = calls.next();
      ASSERT_TRUE(event.message.has_value());
      seen.insert(event.prompt);
      if (event.prompt == 0) calls.resume(0);
    }
  }
  for (int i = 0; i < 500 && service_.cancelled < 2; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(service_.cancelled, 2);
}

// Prompt 0 is read on throughout; prompt 1's first message is held until prompt 0 has ended (so
// the interrupt has happened), and its call then ends CANCELLED once resumed.
TEST_F(PromptCallsTest, AnInterruptFromAnotherThreadEndsEveryCallCancelled) {
  PromptCalls calls;
  start(calls, {{"endless", 0}, {"endless", 0}});
  std::thread interrupter([&] {
    std::this_thread::sleep_for(50ms);
    calls.interrupt();
  });
  std::map<size_t, grpc::StatusCode> ends;
  bool held = false;
  while (calls.running() > 0) {
    PromptCalls::Event event = calls.next();
    if (!event.message) {
      ends[event.prompt] = event.status.error_code();
    } else if (event.prompt == 0) {
      calls.resume(0);
    } else {
      held = true;
    }
    if (held && ends.contains(0)) {
      calls.resume(1);
      held = false;
    }
  }
  interrupter.join();
  EXPECT_EQ(ends, (std::map<size_t, grpc::StatusCode>{{0, grpc::StatusCode::CANCELLED},
                                                      {1, grpc::StatusCode::CANCELLED}}));
}

}  // namespace
}  // namespace kvserve
