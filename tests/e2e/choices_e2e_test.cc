// End-to-end tests of GenerateRequest.n: several choices from one prompt over one stream. Each
// choice must be exactly what a request of its own with seed + i generates (the reference: the
// same server, one choice at a time), the prompt's full blocks must be computed once, and
// cancelling, refusing or preempting a multi-choice call must lose no block and hang no choice.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/generation_client.h"
#include "tests/e2e/server_process.h"

namespace kvserve {
namespace {

using namespace std::chrono_literals;
using testing::ServerProcess;
using testing::status;
using testing::stub;
using testing::wait_all_blocks_free;

const std::string kModel = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama";
constexpr uint32_t kBlockSize = 16;  // kvserve's default --block-size

using Call = testing::ReceivedCall;
using Choice = testing::ReceivedChoice;
using testing::generate;

v1::GenerateRequest sampled_request(const std::string& text, uint32_t n, uint64_t seed, uint32_t max_tokens) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.set_n(n);
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_top_p(0.95f);
  r.mutable_sampling()->set_seed(seed);
  r.mutable_stop()->set_max_tokens(max_tokens);
  r.mutable_stop()->set_ignore_eos(true);
  return r;
}

// Every choice i equals the same request alone with seed + i, generated afterwards on the same
// server: the choices are independent samples, reproducible one by one.
void expect_choices_equal_single_requests(v1::Generation::Stub& client, const v1::GenerateRequest& request,
                                          const Call& call) {
  ASSERT_EQ(call.choices.size(), request.n());
  for (uint32_t i = 0; i < request.n(); ++i) {
    SCOPED_TRACE("choice " + std::to_string(i));
    v1::GenerateRequest alone = request;
    alone.set_n(1);
    alone.mutable_sampling()->set_seed(request.sampling().seed() + i);
    const Call want = generate(client, alone);
    ASSERT_TRUE(want.status.ok()) << want.status.error_message();
    const Choice& got = call.choices.at(i);
    EXPECT_EQ(got.tokens, want.choices.at(0).tokens);
    EXPECT_EQ(got.text, want.choices.at(0).text);
    EXPECT_EQ(got.final_messages, 1);
    EXPECT_EQ(got.finish, v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(got.usage.completion_tokens(), request.stop().max_tokens());
  }
}

TEST(ChoicesE2E, EachChoiceStreamsUnderItsIndexIsSeededApartAndSharesThePrompt) {
  // A 10 ms step so that the choices stream side by side rather than merge into one message each.
  ServerProcess server({"--model", kModel, "--debug-step-delay-ms", "10"});
  auto client = stub(server);
  v1::GenerateRequest request = sampled_request(
      "Four choices share this prompt, which is long enough to fill a few blocks of sixteen tokens.", 4,
      /*seed=*/1234, /*max_tokens=*/16);
  request.set_request_id("many");
  const Call call = generate(*client, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  for (const std::string& id : call.request_ids)
    EXPECT_EQ(id, "many");
  EXPECT_GT(call.messages, 4) << "choices must stream, not arrive at the end";

  // The prompt is computed once: the choices after the first find all its full blocks but the one
  // holding the last token (computed anew for the logits) in the prefix cache.
  ASSERT_EQ(call.choices.size(), 4u);
  const uint32_t prompt_tokens = call.choices.at(0).usage.prompt_tokens();
  ASSERT_GT(prompt_tokens, 2 * kBlockSize);
  EXPECT_EQ(call.choices.at(0).usage.cached_prompt_tokens(), 0u);
  for (uint32_t i = 1; i < 4; ++i) {
    EXPECT_EQ(call.choices.at(i).usage.prompt_tokens(), prompt_tokens);
    EXPECT_EQ(call.choices.at(i).usage.cached_prompt_tokens(), (prompt_tokens - 1) / kBlockSize * kBlockSize)
        << "choice " << i;
  }
  bool any_differ = false;
  for (uint32_t i = 1; i < 4; ++i)
    any_differ |= call.choices.at(i).tokens != call.choices.at(0).tokens;
  EXPECT_TRUE(any_differ) << "four samples at temperature 1 came out identical: the seeds are not apart";

  expect_choices_equal_single_requests(*client, request, call);
  EXPECT_TRUE(wait_all_blocks_free(*client));
  EXPECT_EQ(status(*client).requests_served(), 8u) << "each choice counts as a request";
}

// Greedy choices are all the model's greedy continuation: the PyTorch reference's, committed in
// the model's expected.json.
TEST(ChoicesE2E, NZeroAndOneAreOneChoiceAndGreedyChoicesEqualTheReference) {
  std::ifstream in(kModel + "/expected.json");
  const auto expected = nlohmann::json::parse(in);
  const auto greedy = expected.at("greedy_ids").get<std::vector<uint32_t>>();
  ServerProcess server({"--model", kModel});
  auto client = stub(server);
  v1::GenerateRequest request;
  for (uint32_t id : expected.at("prompt_ids").get<std::vector<uint32_t>>())
    request.mutable_token_ids()->add_ids(id);
  request.mutable_stop()->set_max_tokens(static_cast<uint32_t>(greedy.size()));
  request.mutable_stop()->set_ignore_eos(true);
  for (const uint32_t n : {0u, 1u, 3u}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    request.set_n(n);
    const Call call = generate(*client, request);
    ASSERT_TRUE(call.status.ok()) << call.status.error_message();
    ASSERT_EQ(call.choices.size(), std::max(n, 1u));
    for (const auto& [index, choice] : call.choices) {
      EXPECT_EQ(choice.tokens, greedy) << "greedy choice " << index;
      EXPECT_EQ(choice.final_messages, 1);
    }
  }
}

TEST(ChoicesE2E, TooManyChoicesAreRefusedNamingTheLimit) {
  // It holds 2 running and 2 waiting.
  ServerProcess server({"--model", kModel, "--max-num-seqs", "2", "--max-queue", "2"});
  auto client = stub(server);
  v1::GenerateRequest request = sampled_request("refused", 129, 1, 4);
  Call call = generate(*client, request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(call.status.error_message().find("n must be at most 128"), std::string::npos)
      << call.status.error_message();

  request.set_n(5);  // more choices than the server holds: never servable here
  call = generate(*client, request);
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(call.status.error_message().find("--max-queue"), std::string::npos)
      << call.status.error_message();
  EXPECT_EQ(call.messages, 0);

  request.set_n(4);
  call = generate(*client, request);
  EXPECT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_EQ(call.choices.size(), 4u);
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

TEST(ChoicesE2E, CancellingACallAbortsEveryChoiceAndFreesTheirBlocks) {
  ServerProcess server({"--model", kModel, "--debug-step-delay-ms", "5"});
  auto client = stub(server);
  const Call cancelled = generate(*client, sampled_request("Cancel us all", 8, 7, 900), /*cancel_after=*/3);
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(wait_all_blocks_free(*client)) << "blocks of cancelled choices must return to the pool";
  EXPECT_EQ(status(*client).requests_served(), 8u) << "every choice must end";
  EXPECT_TRUE(generate(*client, sampled_request("still there?", 2, 7, 4)).status.ok());
}

// Choices end at different times (seeded draws hit a stop token sooner or later); cancelling the
// call after one has ended aborts the others and frees every block. With these stop ids and seed
// the eight choices end after 3, 38, 48, 89, 102, 161, 336 and 580 tokens (found by trying seeds).
const std::vector<uint32_t> kStopIds = {3, 10, 20, 30, 40, 50};
constexpr uint64_t kEarlyAndLateSeed = 18;

TEST(ChoicesE2E, CancellingAfterSomeChoicesEndedAbortsTheRest) {
  ServerProcess server({"--model", kModel, "--debug-step-delay-ms", "5"});
  auto client = stub(server);
  v1::GenerateRequest request = sampled_request("Some end early", 8, kEarlyAndLateSeed, 900);
  for (uint32_t id : kStopIds)
    request.mutable_stop()->add_stop_token_ids(id);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 60s);
  auto reader = client->Generate(&ctx, request);
  v1::GenerateResponse msg;
  std::map<uint32_t, int> finals;
  while (reader->Read(&msg)) {
    if (msg.finish_reason() == v1::FINISH_REASON_UNSPECIFIED) continue;
    EXPECT_EQ(msg.finish_reason(), v1::FINISH_REASON_STOP);
    ++finals[msg.index()];
    ctx.TryCancel();  // with the first choice to end; reads go on until the stream ends
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_GE(finals.size(), 1u);
  EXPECT_LT(finals.size(), 8u) << "every choice ended before the cancel: pick another seed";
  for (const auto& [index, count] : finals)
    EXPECT_EQ(count, 1) << "choice " << index;
  EXPECT_TRUE(wait_all_blocks_free(*client)) << "the unfinished choices' blocks must return to the pool";
  EXPECT_EQ(status(*client).requests_served(), 8u) << "every choice must end";
}

// A shutdown that cuts a call short ends every choice with its own ABORTED message, and the call
// UNAVAILABLE so that the client retries.
TEST(ChoicesE2E, ADrainTimeoutEndsEveryChoiceAbortedAndTheCallUnavailable) {
  ServerProcess server({"--model", kModel, "--debug-step-delay-ms", "10", "--drain-timeout", "0.2"});
  auto client = stub(server);
  Call cut;
  std::thread in_flight([&] { cut = generate(*client, sampled_request("Cut short", 3, 5, 500)); });
  while (status(*client).num_running() < 3)
    std::this_thread::sleep_for(5ms);
  server.signal(SIGTERM);
  in_flight.join();
  EXPECT_EQ(cut.status.error_code(), grpc::StatusCode::UNAVAILABLE) << "clients must know to retry";
  ASSERT_EQ(cut.choices.size(), 3u);
  for (const auto& [index, choice] : cut.choices) {
    EXPECT_EQ(choice.final_messages, 1) << "choice " << index;
    EXPECT_EQ(choice.finish, v1::FINISH_REASON_ABORTED) << "choice " << index;
    EXPECT_LT(choice.tokens.size(), 500u);
  }
  EXPECT_EQ(server.wait_exit(10s), 0) << server.output();
}

TEST(ChoicesE2E, ChoicesPreemptedForWantOfBlocksComeOutUnchanged) {
  // 8 choices of ~40 tokens each with 10 blocks of 16 tokens: they cannot all hold their blocks at
  // once, so the scheduler preempts and recomputes; the seeded draws must not notice.
  ServerProcess server({"--model", kModel, "--num-kv-blocks", "10", "--max-model-len", "96"});
  auto client = stub(server);
  const v1::GenerateRequest request = sampled_request("Preempt the choices", 8, 99, 32);
  const Call call = generate(*client, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_GT(status(*client).preemptions(), 0u) << "the pool was meant to run short";
  expect_choices_equal_single_requests(*client, request, call);
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

}  // namespace
}  // namespace kvserve
