#include "bench/bench_options.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvserve::bench {
namespace {

std::optional<int> parse(std::vector<const char*> args, BenchOptions& options) {
  args.insert(args.begin(), "kvserve-bench");
  return parse_command_line(static_cast<int>(args.size()), args.data(), options);
}

TEST(LengthDistribution, ParsesTheThreeForms) {
  std::string error;
  const auto fixed = LengthDistribution::parse("128", &error);
  ASSERT_TRUE(fixed) << error;
  EXPECT_EQ(fixed->kind(), LengthDistribution::Kind::kFixed);
  EXPECT_EQ(fixed->to_string(), "128");
  const auto uniform = LengthDistribution::parse("uniform:64:256", &error);
  ASSERT_TRUE(uniform) << error;
  EXPECT_EQ(uniform->kind(), LengthDistribution::Kind::kUniform);
  EXPECT_EQ(uniform->to_string(), "uniform:64:256");
  const auto normal = LengthDistribution::parse("normal:128:32.5", &error);
  ASSERT_TRUE(normal) << error;
  EXPECT_EQ(normal->kind(), LengthDistribution::Kind::kNormal);
  EXPECT_EQ(normal->to_string(), "normal:128:32.5");
}

TEST(LengthDistribution, RejectsBadSpecsWithAReason) {
  for (const char* spec : {"", "0", "-3", "1.5", "abc", "uniform:5", "uniform:9:2", "uniform:0:4",
                           "normal:0:1", "normal:10:-1", "poisson:3:4", "uniform:1:2:3", "12x"}) {
    std::string error;
    EXPECT_FALSE(LengthDistribution::parse(spec, &error)) << spec;
    EXPECT_FALSE(error.empty()) << spec;
  }
}

TEST(LengthDistribution, FixedAlwaysGivesItsLength) {
  std::mt19937_64 rng(1);
  const auto fixed = LengthDistribution::fixed(17);
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(fixed.sample(rng), 17u);
}

TEST(LengthDistribution, UniformCoversItsInclusiveRangeEvenly) {
  std::string error;
  const auto uniform = *LengthDistribution::parse("uniform:3:6", &error);
  std::mt19937_64 rng(2);
  std::vector<int> seen(7, 0);
  const int draws = 40000;
  for (int i = 0; i < draws; ++i) {
    const uint32_t length = uniform.sample(rng);
    ASSERT_GE(length, 3u);
    ASSERT_LE(length, 6u);
    ++seen[length];
  }
  // Each of the 4 values expects 10000 draws; 5 standard deviations is about 430.
  for (int length = 3; length <= 6; ++length)
    EXPECT_NEAR(seen[length], draws / 4, 450) << length;
}

TEST(LengthDistribution, NormalHasItsMeanAndNeverGoesBelowOne) {
  std::string error;
  const auto normal = *LengthDistribution::parse("normal:100:10", &error);
  const auto wide = *LengthDistribution::parse("normal:2:50", &error);
  std::mt19937_64 rng(3);
  double sum = 0;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i)
    sum += normal.sample(rng);
  // Standard error of the mean is 10 / sqrt(20000) = 0.07.
  EXPECT_NEAR(sum / draws, 100.0, 0.5);
  for (int i = 0; i < draws; ++i)
    ASSERT_GE(wide.sample(rng), 1u);
}

TEST(CommandLine, DefaultsToATenSecondClosedLoop) {
  BenchOptions options;
  EXPECT_FALSE(parse({}, options));
  EXPECT_EQ(options.target, "127.0.0.1:50051");
  EXPECT_EQ(options.mode(), LoadMode::kClosedLoop);
  EXPECT_EQ(options.duration_s, 10.0);
  EXPECT_EQ(options.requests, 0u);
}

TEST(CommandLine, ReadsAnOpenLoopRun) {
  BenchOptions options;
  EXPECT_FALSE(parse(
      {"--rate", "12.5", "--requests", "100", "--prompt-len", "uniform:8:16", "--output-len", "normal:32:4",
       "--shared-prefix-frac", "0.25", "--shared-prefix-len", "64", "--channels", "3", "--text"},
      options));
  EXPECT_EQ(options.mode(), LoadMode::kOpenLoop);
  EXPECT_EQ(options.rate, 12.5);
  EXPECT_EQ(options.requests, 100u);
  EXPECT_EQ(options.duration_s, 0.0);
  EXPECT_EQ(options.prompt_len.to_string(), "uniform:8:16");
  EXPECT_EQ(options.output_len.to_string(), "normal:32:4");
  EXPECT_EQ(options.shared_prefix_frac, 0.25);
  EXPECT_EQ(options.shared_prefix_len, 64u);
  EXPECT_EQ(options.channels, 3u);
  EXPECT_TRUE(options.text);
}

TEST(CommandLine, ReadsLoraAdaptersWithTheBaseModelAsAnEmptyEntry) {
  BenchOptions options;
  EXPECT_FALSE(parse({"--lora-adapters", ",sql,chat"}, options));
  EXPECT_EQ(options.lora_adapters, (std::vector<std::string>{"", "sql", "chat"}));
  BenchOptions one;
  EXPECT_FALSE(parse({"--lora-adapters", "sql"}, one));
  EXPECT_EQ(one.lora_adapters, (std::vector<std::string>{"sql"}));
  BenchOptions none;
  EXPECT_FALSE(parse({}, none));
  EXPECT_TRUE(none.lora_adapters.empty());
}

TEST(CommandLine, RejectsContradictions) {
  for (const std::vector<const char*>& args :
       {std::vector<const char*>{"--rate", "10", "--concurrency", "4"},
        std::vector<const char*>{"--vocab", "100", "--min-token-id", "100"},
        std::vector<const char*>{"--shared-prefix-frac", "0.5"},
        std::vector<const char*>{"--shared-prefix-frac", "1.5", "--shared-prefix-len", "4"},
        std::vector<const char*>{"--concurrency", "0"},
        std::vector<const char*>{"--output-len", "normal:x:1"}}) {
    BenchOptions options;
    testing::internal::CaptureStderr();
    testing::internal::CaptureStdout();
    const auto exit_status = parse(args, options);
    testing::internal::GetCapturedStdout();
    testing::internal::GetCapturedStderr();
    ASSERT_TRUE(exit_status) << args[0];
    EXPECT_NE(*exit_status, 0) << args[0];
  }
}

}  // namespace
}  // namespace kvserve::bench
