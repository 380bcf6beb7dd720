#include "bench/bench_report.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvserve::bench {
namespace {

TEST(Summarize, InterpolatesBetweenRanksLikeNumpy) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i)
    samples.push_back(i);  // unsorted on purpose
  const auto summary = summarize(samples);
  // numpy.percentile(range(1, 101), [50, 90, 99]) == [50.5, 90.1, 99.01]
  EXPECT_EQ(summary.count, 100u);
  EXPECT_DOUBLE_EQ(summary.mean, 50.5);
  EXPECT_DOUBLE_EQ(summary.p50, 50.5);
  EXPECT_DOUBLE_EQ(summary.p90, 90.1);
  EXPECT_DOUBLE_EQ(summary.p99, 99.01);
}

TEST(Summarize, OneSampleAndNone) {
  const auto one = summarize(std::vector<double>{4.25});
  EXPECT_EQ(one.count, 1u);
  EXPECT_DOUBLE_EQ(one.p50, 4.25);
  EXPECT_DOUBLE_EQ(one.p99, 4.25);
  EXPECT_EQ(summarize(std::vector<float>{}).count, 0u);
}

PhaseResults two_requests() {
  PhaseResults results;
  results.sent = 3;
  results.completed = 2;
  results.failed = 1;
  results.errors_by_code["UNAVAILABLE"] = 1;
  results.first_error_message_by_code["UNAVAILABLE"] = "connection refused";
  results.prompt_tokens = 30;
  results.output_tokens = 20;
  results.ttft_ms = {2, 4};
  results.tpot_ms = {1, 1};
  results.e2e_ms = {11, 13};
  results.itl_ms = {1, 1, 1};
  results.elapsed_s = 0.5;
  return results;
}

TEST(Report, ThroughputIsCountsOverElapsedTime) {
  BenchOptions options;
  options.concurrency = 2;
  const auto report = make_report(options, two_requests(), nullptr);
  EXPECT_EQ(report["load"]["mode"], "closed");
  EXPECT_EQ(report["load"]["concurrency"], 2);
  EXPECT_TRUE(report["load"]["rate"].is_null());
  EXPECT_DOUBLE_EQ(report["throughput"]["requests_per_s"].get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(report["throughput"]["output_tokens_per_s"].get<double>(), 40.0);
  EXPECT_DOUBLE_EQ(report["throughput"]["total_tokens_per_s"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(report["latency_ms"]["ttft"]["mean"].get<double>(), 3.0);
  EXPECT_EQ(report["latency_ms"]["itl"]["count"], 3);
  EXPECT_EQ(report["errors"]["UNAVAILABLE"]["count"], 1);
  EXPECT_EQ(report["errors"]["UNAVAILABLE"]["first_message"], "connection refused");
}

TEST(Report, TableShowsTheSameFigures) {
  BenchOptions options;
  options.rate = 8;
  const auto table = format_table(make_report(options, two_requests(), nullptr));
  EXPECT_NE(table.find("open loop, Poisson 8.0 requests/s"), std::string::npos) << table;
  EXPECT_NE(table.find("4.0 requests/s, 40.0 output tokens/s, 100.0 total tokens/s"), std::string::npos)
      << table;
  EXPECT_NE(table.find("UNAVAILABLE"), std::string::npos) << table;
  EXPECT_NE(table.find("connection refused"), std::string::npos) << table;
}

}  // namespace
}  // namespace kvserve::bench
