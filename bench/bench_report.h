// Turns a phase's results into the report: one JSON document, printed as a table or written as is.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <vector>

#include "bench/bench_driver.h"
#include "bench/bench_options.h"

namespace kvserve::bench {

struct LatencySummary {
  size_t count = 0;
  double mean = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
};

// Percentiles interpolate linearly between the two nearest ranks (numpy's default), so p50 of an even
// count is the mean of the middle two.
LatencySummary summarize(std::vector<double> samples);
LatencySummary summarize(const std::vector<float>& samples);

// `server` is what GetModelInfo said (model, backend, device), or null.
nlohmann::ordered_json make_report(const BenchOptions& options, const PhaseResults& results,
                                   const nlohmann::ordered_json& server);

// The report as a readable table; the JSON keys are documented in docs/benchmarks.md.
std::string format_table(const nlohmann::ordered_json& report);

}  // namespace kvserve::bench
