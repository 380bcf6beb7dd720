// kvserve-bench over the OpenAI-compatible API: its reading of server-sent events (timed in pieces as a
// socket delivers them), the request body it sends, and whole runs against the real kvserve's
// --openai-port, with the counts in the JSON report checked against what the flags ask for.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/openai_call.h"
#include "child_process.h"

namespace kvserve::bench::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A stream as kvserve writes it: a chunk per message, then usage, then [DONE].
const std::string kStream =
    "data: "
    "{\"id\":\"cmpl-1\",\"choices\":[{\"index\":0,\"text\":\"Hel\",\"finish_reason\":null}],\"usage\":null}"
    "\n\n"
    "data: "
    "{\"id\":\"cmpl-1\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: "
    "{\"id\":\"cmpl-1\",\"choices\":[{\"index\":0,\"text\":\"lo\",\"finish_reason\":null}],\"usage\":null}"
    "\n\n"
    "data: "
    "{\"id\":\"cmpl-1\",\"choices\":[{\"index\":0,\"text\":\"!\",\"finish_reason\":\"length\"}],\"usage\":"
    "null}\n\n"
    "data: {\"id\":\"cmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":4}}\n\n"
    "data: [DONE]\n\n";

TEST(StreamTimer, TimesChunksWithTextAndTakesTheUsage) {
  const Clock::time_point sent = Clock::now();
  StreamTimer timer(sent);
  // One event per millisecond: TTFT is the first text's arrival, each later text chunk a gap; the
  // empty chunk is no token.
  size_t at = 0;
  for (int i = 0; at < kStream.size(); ++i) {
    const size_t end = kStream.find("\n\n", at) + 2;
    timer.feed(std::string_view(kStream).substr(at, end - at), sent + milliseconds(i + 1));
    at = end;
  }
  EXPECT_TRUE(timer.done());
  EXPECT_FALSE(timer.error().has_value());
  RequestResult result;
  result.prompt_tokens = 5;  // as sent; the usage's count replaces it
  timer.fill(result);
  EXPECT_DOUBLE_EQ(result.ttft_ms, 1.0);
  EXPECT_EQ(result.itl_ms, (std::vector<float>{2.0f, 1.0f}));
  EXPECT_EQ(result.output_tokens, 4u) << "usage.completion_tokens, not the 3 chunks";
  EXPECT_EQ(result.prompt_tokens, 7u);
}

TEST(StreamTimer, ReadsTheSameInAnyPiecesAndWithCrLf) {
  // Bytes arrive as the socket gives them: events split anywhere must read the same.
  // Servers that end lines with CRLF (as SSE allows) are read alike.
  std::string crlf;
  for (const char c : kStream)
    crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
  for (uint32_t seed = 1; seed <= 30; ++seed) {
    std::mt19937 rng(seed);
    const std::string& stream = seed % 2 ? kStream : crlf;
    StreamTimer timer(Clock::now());
    for (size_t at = 0; at < stream.size();) {
      const size_t n = std::uniform_int_distribution<size_t>(1, 40)(rng);
      timer.feed(std::string_view(stream).substr(at, n), Clock::now());
      at += n;
    }
    ASSERT_TRUE(timer.done()) << seed;
    RequestResult result;
    timer.fill(result);
    EXPECT_EQ(result.output_tokens, 4u);
    EXPECT_EQ(result.itl_ms.size(), 2u);
    EXPECT_GE(result.ttft_ms, 0.0);
  }
}

TEST(StreamTimer, ErrorEventsAndNonJsonAreErrors) {
  StreamTimer error(Clock::now());
  error.feed("data: {\"error\": {\"message\": \"draining\", \"code\": \"unavailable\"}}\n\ndata: [DONE]\n\n",
             Clock::now());
  ASSERT_TRUE(error.error().has_value());
  EXPECT_EQ(*error.error(), "draining");
  StreamTimer garbage(Clock::now());
  garbage.feed("data: <html>\n\n", Clock::now());
  ASSERT_TRUE(garbage.error().has_value());
  EXPECT_NE(garbage.error()->find("not a JSON object"), std::string::npos);
  // Without usage, the chunks count the tokens.
  StreamTimer no_usage(Clock::now());
  no_usage.feed("data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\"}]}\n\n",
                Clock::now());
  RequestResult result;
  no_usage.fill(result);
  EXPECT_EQ(result.output_tokens, 2u);
  EXPECT_FALSE(no_usage.done());
}

TEST(CompletionBody, SaysWhatTheGrpcRequestSays) {
  v1::GenerateRequest request;
  request.mutable_token_ids()->add_ids(5);
  request.mutable_token_ids()->add_ids(9);
  request.mutable_stop()->set_max_tokens(16);
  request.mutable_stop()->set_ignore_eos(true);
  request.mutable_sampling()->set_temperature(0.5f);
  request.mutable_sampling()->set_seed(42);
  EXPECT_EQ(completion_body(request, "m"), nlohmann::json::parse(R"({"model": "m", "prompt": [5, 9],
      "max_tokens": 16, "temperature": 0.5, "seed": 42, "ignore_eos": true, "stream": true,
      "stream_options": {"include_usage": true}})"));
  request.set_text("the old river");
  request.mutable_stop()->set_ignore_eos(false);
  const nlohmann::json text = completion_body(request, "");
  EXPECT_EQ(text["prompt"], "the old river");
  EXPECT_FALSE(text.contains("model"));
  EXPECT_FALSE(text.contains("ignore_eos"));
  EXPECT_FALSE(text.contains("priority"));
  request.set_priority(-2);
  EXPECT_EQ(completion_body(request, "")["priority"], -2);  // vLLM's field
  request.set_lora_adapter("sql");                          // an adapter is named as the model
  EXPECT_EQ(completion_body(request, "m")["model"], "sql");
}

TEST(CompletionBody, HttpStatusesCountUnderTheGrpcNames) {
  EXPECT_EQ(status_for_http(400), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status_for_http(429), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(status_for_http(503), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status_for_http(502), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(status_for_http(404), grpc::StatusCode::NOT_FOUND);
}

// kvserve (the built-in tiny model) with its OpenAI-compatible API on a port the kernel picks.
class BenchOverOpenAi : public ::testing::Test {
 protected:
  void SetUp() override {
    json_path_ = (std::filesystem::temp_directory_path() /
                  ("kvserve_bench_openai_test_" + std::to_string(getpid()) + ".json"))
                     .string();
    start_server({});
  }

  // (Re)starts the server with these further flags, and finds its OpenAI port.
  void start_server(const std::vector<std::string>& more_flags) {
    std::vector<std::string> argv = {
        KVSERVE_BINARY, "--port",        "0", "--metrics-port", "-1",  "--openai-host",
        "127.0.0.1",    "--openai-port", "0", "--log-level",    "warn"};
    argv.insert(argv.end(), more_flags.begin(), more_flags.end());
    server_.reset();
    target_.clear();
    server_ = std::make_unique<BackgroundProcess>(argv);
    grpc_port_ = 0;
    const std::string marker = "OpenAI-compatible API on http://127.0.0.1:";
    const std::string grpc_marker = "serving kvserve.v1.Generation on ";
    for (int i = 0; i < 50 && (target_.empty() || grpc_port_ == 0); ++i) {
      const auto line = server_->read_line(seconds(20));
      ASSERT_TRUE(line.has_value()) << "kvserve printed no OpenAI or gRPC address";
      if (const auto at = line->find(marker); at != std::string::npos) {
        const std::string rest = line->substr(at + marker.size());
        target_ = "127.0.0.1:" + rest.substr(0, rest.find('/'));
      }
      if (line->find(grpc_marker) != std::string::npos)
        grpc_port_ = std::stoi(line->substr(line->rfind(':') + 1));
    }
    ASSERT_FALSE(target_.empty());
    ASSERT_GT(grpc_port_, 0);
  }
  void TearDown() override { std::filesystem::remove(json_path_); }

  CommandResult run_bench(std::vector<std::string> flags) {
    std::vector<std::string> argv = {
        KVSERVE_BENCH_BINARY, "--api", "openai", "--target", target_, "--json", json_path_};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return run_command(argv, seconds(60));
  }
  nlohmann::json read_report() {
    std::ifstream file(json_path_);
    return nlohmann::json::parse(file);
  }

  std::unique_ptr<BackgroundProcess> server_;
  std::string target_;  // the OpenAI API's host:port
  int grpc_port_ = 0;
  std::string json_path_;
};

TEST_F(BenchOverOpenAi, ClosedLoopCompletesEveryRequestWithTheServersTokenCounts) {
  const auto run = run_bench({"--requests", "60", "--concurrency", "8", "--vocab", "512", "--prompt-len",
                              "16", "--output-len", "8", "--warmup", "4"});
  ASSERT_EQ(run.exit_status, 0) << run.output;
  EXPECT_NE(run.output.find("over the OpenAI API"), std::string::npos) << run.output;
  const auto report = read_report();
  EXPECT_EQ(report["api"], "openai");
  EXPECT_EQ(report["server"]["model"], "embedded:tiny-llama");  // from GET /v1/models
  EXPECT_EQ(report["requests"]["completed"], 60);
  EXPECT_EQ(report["requests"]["failed"], 0);
  // The server's usage: token-id prompts as sent, max_tokens outputs (ignore_eos).
  EXPECT_EQ(report["tokens"]["prompt"], 60 * 16);
  EXPECT_EQ(report["tokens"]["output"], 60 * 8);
  EXPECT_EQ(report["latency_ms"]["ttft"]["count"], 60);
  EXPECT_GT(report["latency_ms"]["itl"]["count"].get<int>(), 0);
}

TEST_F(BenchOverOpenAi, OpenLoopTextPromptsAndRefusalsAreCounted) {
  const auto text = run_bench({"--requests", "20", "--rate", "200", "--text", "--prompt-len", "6",
                               "--output-len", "4", "--model-name", "embedded:tiny-llama"});
  ASSERT_EQ(text.exit_status, 0) << text.output;
  EXPECT_EQ(read_report()["requests"]["completed"], 20);
  EXPECT_EQ(read_report()["tokens"]["output"], 20 * 4);

  // Prompt ids past the vocabulary: every request is refused (400), counted as INVALID_ARGUMENT.
  const auto refused = run_bench({"--requests", "10", "--concurrency", "4", "--vocab", "100000",
                                  "--min-token-id", "90000", "--prompt-len", "4", "--output-len", "4"});
  EXPECT_EQ(refused.exit_status, 1) << refused.output;
  const auto report = read_report();
  EXPECT_EQ(report["requests"]["failed"], 10);
  EXPECT_EQ(report["errors"]["INVALID_ARGUMENT"]["count"], 10);
  // Another model's name: 404, NOT_FOUND.
  const auto wrong = run_bench({"--requests", "3", "--vocab", "512", "--model-name", "gpt-4"});
  EXPECT_EQ(wrong.exit_status, 1) << wrong.output;
  EXPECT_EQ(read_report()["errors"]["NOT_FOUND"]["count"], 3);
}

// LoRA adapters named in turn, over both APIs, against kvserve serving two: every request of a
// served adapter or of the base model completes, and each naming an adapter not served is refused
// (NOT_FOUND), exactly one in four here.
TEST_F(BenchOverOpenAi, RequestsNameTheLoraAdaptersInTurn) {
  const std::string data = KVSERVE_TEST_DATA;
  start_server({"--model", data + "/models/tiny-llama3-gqa", "--backend", "cpu", "--lora-modules",
                "qv=" + data + "/loras/tiny-llama3-gqa-lora-qv", "--lora-modules",
                "all=" + data + "/loras/tiny-llama3-gqa-lora"});
  const auto openai = run_bench({"--requests", "16", "--concurrency", "4", "--vocab", "512", "--prompt-len",
                                 "8", "--output-len", "4", "--lora-adapters", ",qv,nope,all"});
  EXPECT_EQ(openai.exit_status, 0) << openai.output;  // (non-zero only when every request fails)
  nlohmann::json report = read_report();
  EXPECT_EQ(report["workload"]["lora_adapters"], nlohmann::json::parse(R"(["", "qv", "nope", "all"])"));
  EXPECT_EQ(report["requests"]["completed"], 12);
  EXPECT_EQ(report["errors"]["NOT_FOUND"]["count"], 4);

  // The same over gRPC (GenerateRequest.lora_adapter), on the server's gRPC port.
  const auto grpc_port = std::to_string(grpc_port_);
  const auto grpc = run_command(
      {KVSERVE_BENCH_BINARY, "--target", "127.0.0.1:" + grpc_port, "--json", json_path_, "--requests", "16",
       "--concurrency", "4", "--prompt-len", "8", "--output-len", "4", "--lora-adapters", ",qv,nope,all"},
      seconds(60));
  EXPECT_EQ(grpc.exit_status, 0) << grpc.output;
  report = read_report();
  EXPECT_EQ(report["requests"]["completed"], 12);
  EXPECT_EQ(report["errors"]["NOT_FOUND"]["count"], 4);
  EXPECT_NE(report["errors"]["NOT_FOUND"]["first_message"].get<std::string>().find("nope"),
            std::string::npos);
}

TEST_F(BenchOverOpenAi, DurationCutsStreamsAtTheRunsEndAsUnfinished) {
  // 50 ms steps and 1000 tokens a request: every stream is still running when the 2 s run ends.
  start_server({"--debug-step-delay-ms", "50"});
  const auto run = run_bench({"--duration", "2", "--concurrency", "4", "--vocab", "512", "--prompt-len", "8",
                              "--output-len", "1000"});
  EXPECT_EQ(run.exit_status, 1) << run.output;  // none completed
  const auto report = read_report();
  EXPECT_EQ(report["requests"]["unfinished"], 4);
  EXPECT_EQ(report["requests"]["failed"], 0);
  EXPECT_LT(report["duration_s"].get<double>(), 10.0) << "the run ends at its duration, not its requests'";
}

// Requests that have no data yet when the run ends (a 3 s first step) are unfinished too, whether
// the watchdog cuts them or their read timeout, set to the deadline, ends them first.
TEST_F(BenchOverOpenAi, DurationCutsRequestsStillWaitingForTheirFirstTokenAsUnfinished) {
  start_server({"--debug-step-delay-ms", "3000"});
  const auto run = run_bench(
      {"--duration", "1", "--concurrency", "4", "--vocab", "512", "--prompt-len", "8", "--output-len", "8"});
  EXPECT_EQ(run.exit_status, 1) << run.output;  // none completed
  const auto report = read_report();
  EXPECT_EQ(report["requests"]["unfinished"], 4);
  EXPECT_EQ(report["requests"]["failed"], 0) << run.output;
}

TEST(BenchOverOpenAiWithoutServer, NeedsVocabAndAReachableApi) {
  const auto no_vocab = run_command(
      {KVSERVE_BENCH_BINARY, "--api", "openai", "--target", "127.0.0.1:1", "--requests", "1"}, seconds(20));
  EXPECT_NE(no_vocab.exit_status, 0);
  EXPECT_NE(no_vocab.output.find("--vocab"), std::string::npos) << no_vocab.output;
  const std::string target = "127.0.0.1:" + std::to_string(unused_loopback_port());
  const auto unreachable = run_command({KVSERVE_BENCH_BINARY, "--api", "openai", "--target", target,
                                        "--vocab", "512", "--requests", "1", "--connect-timeout", "1"},
                                       seconds(20));
  EXPECT_EQ(unreachable.exit_status, 2) << unreachable.output;
  EXPECT_NE(unreachable.output.find("GET http://" + target + "/v1/models failed"), std::string::npos)
      << unreachable.output;
}

}  // namespace
}  // namespace kvserve::bench::testing
