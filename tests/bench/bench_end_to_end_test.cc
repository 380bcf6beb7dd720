// kvserve-bench against kvserve-trivial-server on loopback: exit statuses, and counts in the JSON report
// checked against what the flags ask for.
#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "child_process.h"

namespace kvserve::bench::testing {
namespace {

using std::chrono::seconds;

class BenchAgainstTrivialServer : public ::testing::Test {
 protected:
  // Each test gets its own server on a port the kernel picks, so tests can run in parallel.
  void start_server(int tokens_per_message) {
    server_ = std::make_unique<BackgroundProcess>(
        std::vector<std::string>{KVSERVE_TRIVIAL_SERVER_BINARY, "--port", "0", "--tokens-per-message",
                                 std::to_string(tokens_per_message)});
    const auto line = server_->read_line(seconds(10));
    ASSERT_TRUE(line.has_value()) << "kvserve-trivial-server printed no address";
    const std::string marker = "listening on 127.0.0.1:";
    const auto at = line->find(marker);
    ASSERT_NE(at, std::string::npos) << *line;
    target_ = "127.0.0.1:" + line->substr(at + marker.size());
  }

  // Runs kvserve-bench against the server with `flags`, writing JSON to a file of this test's own.
  CommandResult run_bench(std::vector<std::string> flags) {
    json_path_ = (std::filesystem::temp_directory_path() /
                  ("kvserve_bench_test_" + std::to_string(getpid()) + ".json"))
                     .string();
    std::filesystem::remove(json_path_);
    std::vector<std::string> argv = {KVSERVE_BENCH_BINARY, "--target", target_, "--json", json_path_};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return run_command(argv, seconds(20));
  }

  nlohmann::json read_report() {
    std::ifstream file(json_path_);
    return nlohmann::json::parse(file);
  }

  void TearDown() override {
    if (!json_path_.empty()) std::filesystem::remove(json_path_);
  }

  std::unique_ptr<BackgroundProcess> server_;
  std::string target_;
  std::string json_path_;
};

TEST_F(BenchAgainstTrivialServer, ClosedLoopCompletesEveryRequestWithExactTokenCounts) {
  start_server(1);
  const auto run = run_bench({"--requests", "300", "--concurrency", "16", "--warmup", "20", "--prompt-len",
                              "32", "--output-len", "8", "--seed", "7"});
  ASSERT_EQ(run.exit_status, 0) << run.output;
  EXPECT_NE(run.output.find("throughput"), std::string::npos) << run.output;

  const auto report = read_report();
  EXPECT_EQ(report["load"]["mode"], "closed");
  EXPECT_EQ(report["load"]["concurrency"], 16);
  EXPECT_EQ(report["requests"]["sent"], 300);
  EXPECT_EQ(report["requests"]["completed"], 300);
  EXPECT_EQ(report["requests"]["failed"], 0);
  EXPECT_EQ(report["requests"]["unfinished"], 0);
  EXPECT_TRUE(report["errors"].empty()) << report["errors"].dump();
  EXPECT_EQ(report["tokens"]["output"], 300 * 8);
  EXPECT_EQ(report["tokens"]["prompt"], 300 * 32);
  EXPECT_EQ(report["latency_ms"]["ttft"]["count"], 300);
  EXPECT_EQ(report["latency_ms"]["tpot"]["count"], 300);
  EXPECT_EQ(report["latency_ms"]["e2e"]["count"], 300);
  // One token per message: every token after the first has a gap of its own.
  EXPECT_EQ(report["latency_ms"]["itl"]["count"], 300 * 7);

  const double duration = report["duration_s"];
  ASSERT_GT(duration, 0);
  EXPECT_NEAR(report["throughput"]["requests_per_s"].get<double>(), 300 / duration, 1e-6 * 300 / duration);
  EXPECT_NEAR(report["throughput"]["output_tokens_per_s"].get<double>(), 2400 / duration,
              1e-6 * 2400 / duration);
  EXPECT_NEAR(report["throughput"]["total_tokens_per_s"].get<double>(), (2400 + 9600) / duration,
              1e-6 * 12000 / duration);
  const auto& ttft = report["latency_ms"]["ttft"];
  EXPECT_LE(ttft["p50"].get<double>(), ttft["p90"].get<double>());
  EXPECT_LE(ttft["p90"].get<double>(), ttft["p99"].get<double>());
  EXPECT_LE(ttft["p50"].get<double>(), report["latency_ms"]["e2e"]["p50"].get<double>());
}

TEST_F(BenchAgainstTrivialServer, SeveralTokensPerMessageShareTheirGap) {
  start_server(3);
  const auto run = run_bench(
      {"--requests", "50", "--concurrency", "4", "--prompt-len", "uniform:4:64", "--output-len", "8"});
  ASSERT_EQ(run.exit_status, 0) << run.output;
  const auto report = read_report();
  EXPECT_EQ(report["requests"]["completed"], 50);
  EXPECT_EQ(report["tokens"]["output"], 50 * 8);
  // Messages of 3, 3 and 2 tokens: the first message's 3 have no gap, the other 5 share two gaps.
  EXPECT_EQ(report["latency_ms"]["itl"]["count"], 50 * 5);
  const auto prompt_tokens = report["tokens"]["prompt"].get<int>();
  EXPECT_GE(prompt_tokens, 50 * 4);
  EXPECT_LE(prompt_tokens, 50 * 64);
}

TEST_F(BenchAgainstTrivialServer, OpenLoopSendsOnPoissonSchedule) {
  start_server(1);
  const auto run = run_bench({"--rate", "200", "--requests", "150", "--prompt-len", "16", "--output-len",
                              "10", "--max-inflight", "64"});
  ASSERT_EQ(run.exit_status, 0) << run.output;
  const auto report = read_report();
  EXPECT_EQ(report["load"]["mode"], "open");
  EXPECT_EQ(report["load"]["rate"], 200.0);
  EXPECT_EQ(report["requests"]["completed"], 150);
  EXPECT_EQ(report["requests"]["failed"], 0);
  EXPECT_EQ(report["tokens"]["output"], 150 * 10);
  // 150 arrivals at 200/s take 0.75 s on average (standard deviation 0.06 s); the server answers in
  // about a millisecond, so the run lasts about as long as the schedule.
  const double duration = report["duration_s"];
  EXPECT_GT(duration, 0.45);
  EXPECT_LT(duration, 3.0);
}

TEST_F(BenchAgainstTrivialServer, DurationCutsTheRunAndCountsOnlyFinishedRequests) {
  start_server(1);
  const auto run =
      run_bench({"--duration", "1", "--concurrency", "4", "--prompt-len", "8", "--output-len", "4"});
  ASSERT_EQ(run.exit_status, 0) << run.output;
  const auto report = read_report();
  const auto completed = report["requests"]["completed"].get<long>();
  EXPECT_GT(completed, 0);
  EXPECT_EQ(report["requests"]["failed"], 0);
  EXPECT_LE(report["requests"]["unfinished"].get<long>(), 4);
  EXPECT_EQ(report["requests"]["sent"].get<long>(), completed + report["requests"]["unfinished"].get<long>());
  EXPECT_EQ(report["tokens"]["output"].get<long>(), completed * 4);
  EXPECT_GT(report["duration_s"].get<double>(), 0.9);
  EXPECT_LT(report["duration_s"].get<double>(), 2.0);
}

TEST_F(BenchAgainstTrivialServer, TextPromptsWithSharedPrefix) {
  start_server(2);
  const auto run =
      run_bench({"--requests", "40", "--concurrency", "8", "--text", "--prompt-len", "normal:24:8",
                 "--output-len", "5", "--shared-prefix-frac", "0.5", "--shared-prefix-len", "16"});
  ASSERT_EQ(run.exit_status, 0) << run.output;
  const auto report = read_report();
  EXPECT_EQ(report["workload"]["input"], "text");
  EXPECT_EQ(report["requests"]["completed"], 40);
  EXPECT_EQ(report["tokens"]["output"], 40 * 5);
}

TEST_F(BenchAgainstTrivialServer, EveryRequestRejectedExitsNonZeroAndCountsTheCode) {
  start_server(1);
  // The trivial server's vocabulary is 32000 ids, so every prompt here is out of range.
  const auto run = run_bench({"--requests", "20", "--concurrency", "4", "--vocab", "33000", "--min-token-id",
                              "32000", "--prompt-len", "4", "--output-len", "4"});
  EXPECT_EQ(run.exit_status, 1) << run.output;
  EXPECT_NE(run.output.find("none of 20 requests completed"), std::string::npos) << run.output;
  const auto report = read_report();
  EXPECT_EQ(report["requests"]["completed"], 0);
  EXPECT_EQ(report["requests"]["failed"], 20);
  EXPECT_EQ(report["errors"]["INVALID_ARGUMENT"]["count"], 20);
  EXPECT_EQ(report["latency_ms"]["ttft"]["count"], 0);
  EXPECT_TRUE(report["latency_ms"]["ttft"]["p50"].is_null());
}

TEST(BenchWithoutServer, UnreachableTargetExitsNonZeroWithClearMessage) {
  const std::string target = "127.0.0.1:" + std::to_string(unused_loopback_port());
  const auto run = run_command(
      {KVSERVE_BENCH_BINARY, "--target", target, "--requests", "5", "--connect-timeout", "1"}, seconds(20));
  EXPECT_EQ(run.exit_status, 2) << run.output;
  EXPECT_NE(run.output.find("cannot reach " + target), std::string::npos) << run.output;
}

TEST(BenchWithoutServer, BadFlagsExitNonZeroNamingTheFlag) {
  const auto run = run_command({KVSERVE_BENCH_BINARY, "--prompt-len", "uniform:9:2"}, seconds(20));
  EXPECT_NE(run.exit_status, 0) << run.output;
  EXPECT_NE(run.output.find("--prompt-len"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("1 <= LO <= HI"), std::string::npos) << run.output;
}

TEST(BenchWithoutServer, HelpListsTheLoadFlags) {
  const auto run = run_command({KVSERVE_BENCH_BINARY, "--help"}, seconds(20));
  EXPECT_EQ(run.exit_status, 0) << run.output;
  for (const char* flag : {"--target", "--duration", "--requests", "--warmup", "--concurrency", "--rate",
                           "--max-inflight", "--prompt-len", "--output-len", "--text", "--shared-prefix-frac",
                           "--channels", "--timeout", "--json", "--api", "--model-name"}) {
    EXPECT_NE(run.output.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
}  // namespace kvserve::bench::testing
