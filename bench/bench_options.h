// kvserve-bench's settings: the load shape (closed or open loop), the request mix and the output.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace kvserve::bench {

// A per-request length, fixed or drawn: "128", "uniform:64:256" (inclusive) or "normal:128:32" (rounded,
// never below 1).
class LengthDistribution {
 public:
  enum class Kind { kFixed, kUniform, kNormal };

  LengthDistribution() = default;
  static LengthDistribution fixed(uint32_t length);
  // On a bad spec returns nothing and says why in `error`.
  static std::optional<LengthDistribution> parse(const std::string& spec, std::string* error);

  uint32_t sample(std::mt19937_64& rng) const;
  Kind kind() const { return kind_; }
  // The spec in the form parse() reads.
  std::string to_string() const;

 private:
  Kind kind_ = Kind::kFixed;
  double first_ = 1;   // the length, the lower bound or the mean
  double second_ = 0;  // the upper bound or the standard deviation
};

enum class LoadMode { kClosedLoop, kOpenLoop };

struct BenchOptions {
  std::string target = "127.0.0.1:50051";
  // "grpc": kvserve's Generation service; "openai": streamed POST /v1/completions (kvserve's
  // --openai-port, or any server with an OpenAI-compatible API).
  std::string api = "grpc";
  std::string model_name;  // --api openai: the body's `model` (default: the first of GET /v1/models)
  double duration_s = 0;   // 0 = no time limit
  uint64_t requests = 0;   // 0 = no count limit; with neither limit set the run lasts kDefaultDurationS
  uint64_t warmup = 0;

  uint32_t concurrency = 1;      // closed loop
  double rate = 0;               // open loop when > 0, requests per second
  uint32_t max_inflight = 1024;  // open loop

  LengthDistribution prompt_len = LengthDistribution::fixed(128);
  LengthDistribution output_len = LengthDistribution::fixed(128);
  uint32_t vocab = 0;  // 0 = ask the server (GetModelInfo)
  uint32_t min_token_id = 3;
  bool text = false;
  double shared_prefix_frac = 0;
  uint32_t shared_prefix_len = 0;
  float temperature = 0;
  uint64_t seed = 0;
  int32_t priority = 0;  // every request's (the server's --scheduling-policy priority takes others)
  // LoRA adapters the requests name in turn (request i the (i mod n)-th; "" = the base model);
  // empty: no request names one.
  std::vector<std::string> lora_adapters;

  uint32_t channels = 1;
  double timeout_s = 60;
  double connect_timeout_s = 5;
  std::string json_path;

  static constexpr double kDefaultDurationS = 10;

  LoadMode mode() const { return rate > 0 ? LoadMode::kOpenLoop : LoadMode::kClosedLoop; }
};

// Reads the command line into `options`. Returns an exit status when the process should stop here
// (--help, or bad flags after printing why).
std::optional<int> parse_command_line(int argc, const char* const* argv, BenchOptions& options);

}  // namespace kvserve::bench
