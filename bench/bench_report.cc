#include "bench/bench_report.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <numeric>

namespace kvserve::bench {
namespace {

double percentile_of_sorted(const std::vector<double>& sorted, double fraction) {
  const double rank = fraction * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  return sorted[below] + (sorted[above] - sorted[below]) * (rank - static_cast<double>(below));
}

nlohmann::ordered_json latency_json(const LatencySummary& summary) {
  if (summary.count == 0) {
    return {{"count", 0}, {"mean", nullptr}, {"p50", nullptr}, {"p90", nullptr}, {"p99", nullptr}};
  }
  return {{"count", summary.count},
          {"mean", summary.mean},
          {"p50", summary.p50},
          {"p90", summary.p90},
          {"p99", summary.p99}};
}

double per_second(double amount, double seconds) {
  return seconds > 0 ? amount / seconds : 0.0;
}

__attribute__((format(printf, 2, 3))) void append(std::string& out, const char* format, ...) {
  char line[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(line, sizeof(line), format, args);
  va_end(args);
  out += line;
}

std::string number_or_dash(const nlohmann::ordered_json& value) {
  if (value.is_null()) return "-";
  char text[32];
  std::snprintf(text, sizeof(text), "%.3f", value.get<double>());
  return text;
}

}  // namespace

LatencySummary summarize(std::vector<double> samples) {
  LatencySummary summary;
  summary.count = samples.size();
  if (samples.empty()) return summary;
  std::sort(samples.begin(), samples.end());
  summary.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(samples.size());
  summary.p50 = percentile_of_sorted(samples, 0.50);
  summary.p90 = percentile_of_sorted(samples, 0.90);
  summary.p99 = percentile_of_sorted(samples, 0.99);
  return summary;
}

LatencySummary summarize(const std::vector<float>& samples) {
  return summarize(std::vector<double>(samples.begin(), samples.end()));
}

nlohmann::ordered_json make_report(const BenchOptions& options, const PhaseResults& results,
                                   const nlohmann::ordered_json& server) {
  const bool open_loop = options.mode() == LoadMode::kOpenLoop;
  nlohmann::ordered_json report;
  report["target"] = options.target;
  report["api"] = options.api;
  report["server"] = server;
  report["load"] = {
      {"mode", open_loop ? "open" : "closed"},
      {"concurrency", open_loop ? nlohmann::ordered_json() : nlohmann::ordered_json(options.concurrency)},
      {"rate", open_loop ? nlohmann::ordered_json(options.rate) : nlohmann::ordered_json()},
      {"max_inflight", open_loop ? nlohmann::ordered_json(options.max_inflight) : nlohmann::ordered_json()},
      {"channels", options.channels}};
  report["workload"] = {{"prompt_len", options.prompt_len.to_string()},
                        {"output_len", options.output_len.to_string()},
                        {"input", options.text ? "text" : "token_ids"},
                        {"shared_prefix_frac", options.shared_prefix_frac},
                        {"shared_prefix_len", options.shared_prefix_len},
                        {"temperature", options.temperature},
                        {"priority", options.priority},
                        {"lora_adapters", options.lora_adapters},
                        {"seed", options.seed},
                        {"warmup", options.warmup}};
  report["duration_s"] = results.elapsed_s;
  report["requests"] = {{"sent", results.sent},
                        {"completed", results.completed},
                        {"failed", results.failed},
                        {"unfinished", results.unfinished},
                        {"delayed_by_cap", results.delayed_by_cap}};
  report["errors"] = nlohmann::ordered_json::object();
  for (const auto& [code, count] : results.errors_by_code) {
    report["errors"][code] = {{"count", count},
                              {"first_message", results.first_error_message_by_code.at(code)}};
  }
  report["tokens"] = {{"prompt", results.prompt_tokens}, {"output", results.output_tokens}};
  const auto total_tokens = static_cast<double>(results.prompt_tokens + results.output_tokens);
  report["throughput"] = {
      {"requests_per_s", per_second(static_cast<double>(results.completed), results.elapsed_s)},
      {"output_tokens_per_s", per_second(static_cast<double>(results.output_tokens), results.elapsed_s)},
      {"total_tokens_per_s", per_second(total_tokens, results.elapsed_s)}};
  report["latency_ms"] = {{"ttft", latency_json(summarize(results.ttft_ms))},
                          {"tpot", latency_json(summarize(results.tpot_ms))},
                          {"itl", latency_json(summarize(results.itl_ms))},
                          {"e2e", latency_json(summarize(results.e2e_ms))}};
  return report;
}

std::string format_table(const nlohmann::ordered_json& report) {
  std::string out;
  const auto& load = report["load"];
  const auto& workload = report["workload"];
  const auto& requests = report["requests"];
  const auto& throughput = report["throughput"];
  append(out, "target      %s over %s", report["target"].get<std::string>().c_str(),
         report.value("api", "grpc") == "openai" ? "the OpenAI API" : "gRPC");
  if (report["server"].is_object()) {
    append(out, " (model %s, backend %s)", report["server"].value("model", "?").c_str(),
           report["server"].value("backend", "?").c_str());
  }
  out += '\n';
  if (load["mode"] == "open") {
    append(out, "load        open loop, Poisson %.1f requests/s, max in flight %u, %u channel(s)\n",
           load["rate"].get<double>(), load["max_inflight"].get<unsigned>(),
           load["channels"].get<unsigned>());
  } else {
    append(out, "load        closed loop, concurrency %u, %u channel(s)\n",
           load["concurrency"].get<unsigned>(), load["channels"].get<unsigned>());
  }
  append(out, "workload    prompt %s, output %s tokens, as %s, warmup %llu requests\n",
         workload["prompt_len"].get<std::string>().c_str(), workload["output_len"].get<std::string>().c_str(),
         workload["input"].get<std::string>().c_str(), workload["warmup"].get<unsigned long long>());
  if (workload["shared_prefix_frac"].get<double>() > 0) {
    append(out, "            shared %u-token prefix on %.0f%% of requests\n",
           workload["shared_prefix_len"].get<unsigned>(), 100 * workload["shared_prefix_frac"].get<double>());
  }
  append(out, "duration    %.3f s\n", report["duration_s"].get<double>());
  append(out, "requests    sent %llu, completed %llu, failed %llu, unfinished %llu, delayed by cap %llu\n",
         requests["sent"].get<unsigned long long>(), requests["completed"].get<unsigned long long>(),
         requests["failed"].get<unsigned long long>(), requests["unfinished"].get<unsigned long long>(),
         requests["delayed_by_cap"].get<unsigned long long>());
  append(out, "tokens      prompt %llu, output %llu\n", report["tokens"]["prompt"].get<unsigned long long>(),
         report["tokens"]["output"].get<unsigned long long>());
  append(out, "throughput  %.1f requests/s, %.1f output tokens/s, %.1f total tokens/s\n",
         throughput["requests_per_s"].get<double>(), throughput["output_tokens_per_s"].get<double>(),
         throughput["total_tokens_per_s"].get<double>());
  append(out, "\n%-14s %10s %10s %10s %10s %10s\n", "latency (ms)", "mean", "p50", "p90", "p99", "count");
  for (const auto& [key, label] : {std::pair{"ttft", "TTFT"}, std::pair{"tpot", "TPOT"},
                                   std::pair{"itl", "ITL"}, std::pair{"e2e", "end-to-end"}}) {
    const auto& latency = report["latency_ms"][key];
    append(out, "%-14s %10s %10s %10s %10s %10llu\n", label, number_or_dash(latency["mean"]).c_str(),
           number_or_dash(latency["p50"]).c_str(), number_or_dash(latency["p90"]).c_str(),
           number_or_dash(latency["p99"]).c_str(), latency["count"].get<unsigned long long>());
  }
  if (report["errors"].empty()) {
    out += "\nerrors      none\n";
  } else {
    out += "\nerrors\n";
    for (const auto& [code, error] : report["errors"].items()) {
      append(out, "  %-22s %8llu  first: %.300s\n", code.c_str(), error["count"].get<unsigned long long>(),
             error["first_message"].get<std::string>().c_str());
    }
  }
  return out;
}

}  // namespace kvserve::bench
