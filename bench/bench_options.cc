#include "bench/bench_options.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

namespace kvserve::bench {
namespace {

// Far beyond any model's context, yet small enough that a wild normal draw cannot overflow.
constexpr double kLongestLength = 1 << 24;

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, separator))
    parts.push_back(part);
  if (!text.empty() && text.back() == separator) parts.emplace_back();
  return parts;
}

std::optional<double> parse_number(const std::string& text) {
  if (text.empty()) return std::nullopt;
  try {
    size_t used = 0;
    const double value = std::stod(text, &used);
    if (used != text.size() || !std::isfinite(value)) return std::nullopt;
    return value;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

bool is_length(double value) {
  return value >= 1 && value <= kLongestLength && value == std::floor(value);
}

std::string format_number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

}  // namespace

LengthDistribution LengthDistribution::fixed(uint32_t length) {
  LengthDistribution distribution;
  distribution.first_ = length;
  return distribution;
}

std::optional<LengthDistribution> LengthDistribution::parse(const std::string& spec, std::string* error) {
  const std::vector<std::string> parts = split(spec, ':');
  std::vector<double> numbers;
  for (size_t i = parts.size() == 1 ? 0 : 1; i < parts.size(); ++i) {
    const auto number = parse_number(parts[i]);
    if (!number) {
      *error = "'" + spec + "': '" + parts[i] + "' is not a number";
      return std::nullopt;
    }
    numbers.push_back(*number);
  }
  LengthDistribution distribution;
  if (parts.size() == 1) {
    if (!is_length(numbers[0])) {
      *error = "'" + spec + "': a fixed length is a whole number >= 1";
      return std::nullopt;
    }
    distribution.first_ = numbers[0];
    return distribution;
  }
  if (parts.size() == 3 && parts[0] == "uniform") {
    if (!is_length(numbers[0]) || !is_length(numbers[1]) || numbers[0] > numbers[1]) {
      *error = "'" + spec + "': uniform:LO:HI needs whole numbers 1 <= LO <= HI";
      return std::nullopt;
    }
    distribution.kind_ = Kind::kUniform;
  } else if (parts.size() == 3 && parts[0] == "normal") {
    if (numbers[0] <= 0 || numbers[0] > kLongestLength || numbers[1] < 0) {
      *error = "'" + spec + "': normal:MEAN:STDDEV needs MEAN > 0 and STDDEV >= 0";
      return std::nullopt;
    }
    distribution.kind_ = Kind::kNormal;
  } else {
    *error = "'" + spec + "': expected N, uniform:LO:HI or normal:MEAN:STDDEV";
    return std::nullopt;
  }
  distribution.first_ = numbers[0];
  distribution.second_ = numbers[1];
  return distribution;
}

uint32_t LengthDistribution::sample(std::mt19937_64& rng) const {
  switch (kind_) {
    case Kind::kFixed:
      return static_cast<uint32_t>(first_);
    case Kind::kUniform:
      return std::uniform_int_distribution<uint32_t>(static_cast<uint32_t>(first_),
                                                     static_cast<uint32_t>(second_))(rng);
    case Kind::kNormal: {
      const double drawn = std::round(std::normal_distribution<double>(first_, second_)(rng));
      return static_cast<uint32_t>(std::clamp(drawn, 1.0, kLongestLength));
    }
  }
  return 1;
}

std::string LengthDistribution::to_string() const {
  switch (kind_) {
    case Kind::kFixed:
      return format_number(first_);
    case Kind::kUniform:
      return "uniform:" + format_number(first_) + ":" + format_number(second_);
    case Kind::kNormal:
      return "normal:" + format_number(first_) + ":" + format_number(second_);
  }
  return "";
}

std::optional<int> parse_command_line(int argc, const char* const* argv, BenchOptions& options) {
  CLI::App app{
      "kvserve-bench: load generator for a kvserve.v1 Generation server. Streams Generate requests in a\n"
      "closed loop (--concurrency) or an open loop (Poisson --rate) and reports throughput and TTFT, TPOT,\n"
      "inter-token and end-to-end latency percentiles."};
  app.get_formatter()->column_width(34);

  const auto length_check = CLI::Validator(
      [](std::string& spec) {
        std::string error;
        return LengthDistribution::parse(spec, &error) ? std::string() : error;
      },
      "N|uniform:LO:HI|normal:MEAN:SD");
  std::string prompt_len = options.prompt_len.to_string();
  std::string output_len = options.output_len.to_string();

  app.add_option("--target", options.target, "Server address host:port")->capture_default_str();
  app.add_option("--api", options.api,
                 "grpc (kvserve's Generation service) or openai (streamed POST /v1/completions, on kvserve's "
                 "--openai-port or any OpenAI-compatible server; ITL then counts each chunk as one token)")
      ->check(CLI::IsMember({"grpc", "openai"}))
      ->capture_default_str();
  app.add_option("--model-name", options.model_name,
                 "--api openai: the requests' model (default: the first model GET /v1/models lists)");
  app.add_option("--duration", options.duration_s,
                 "Stop issuing after this many seconds; requests still running are cut and reported as "
                 "unfinished (default: 10 s unless --requests is given)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--requests", options.requests,
                 "Stop after this many requests (whichever of this and "
                 "--duration comes first)");
  app.add_option("--warmup", options.warmup, "Requests sent (in the same load shape) and discarded first")
      ->capture_default_str();
  auto* concurrency = app.add_option("--concurrency", options.concurrency,
                                     "Closed loop: requests kept in flight, each slot sending its next as "
                                     "the previous finishes")
                          ->capture_default_str()
                          ->check(CLI::Range(1u, 1u << 20));
  auto* rate = app.add_option("--rate", options.rate,
                              "Open loop: Poisson arrivals at this many requests/s, sent on schedule "
                              "whatever is in flight")
                   ->check(CLI::PositiveNumber);
  rate->excludes(concurrency);
  app.add_option("--max-inflight", options.max_inflight,
                 "Open loop: at most this many in flight; arrivals beyond it wait (counted as delayed)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--prompt-len", prompt_len, "Prompt tokens per request")
      ->check(length_check)
      ->capture_default_str();
  app.add_option("--output-len", output_len, "Output tokens per request (max_tokens, with ignore_eos)")
      ->check(length_check)
      ->capture_default_str();
  app.add_option("--vocab", options.vocab,
                 "Prompt token ids are drawn from [--min-token-id, VOCAB) (default: the server's vocab_size "
                 "from GetModelInfo)");
  app.add_option("--min-token-id", options.min_token_id,
                 "Lowest prompt token id; the default skips the usual <unk>, <s>, </s>")
      ->capture_default_str();
  app.add_flag("--text", options.text,
               "Send prompts as text (one common English word per prompt token) instead of token ids; the "
               "server's tokenizer then decides the real prompt length");
  app.add_option("--shared-prefix-frac", options.shared_prefix_frac,
                 "Fraction of requests whose prompt starts with the same --shared-prefix-len tokens")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--shared-prefix-len", options.shared_prefix_len,
                 "Length of the shared prefix (a shorter prompt is a cut of it)")
      ->capture_default_str();
  app.add_option("--temperature", options.temperature, "Sampling temperature (0 = greedy)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--priority", options.priority,
                 "Every request's priority (lower runs sooner), for a server run with --scheduling-policy "
                 "priority; one run per class of traffic, side by side")
      ->capture_default_str();
  std::string lora_adapters;
  app.add_option(
      "--lora-adapters", lora_adapters,
      "Comma-separated LoRA adapters (the server's --lora-modules names) that the requests name in "
      "turn, request i the (i mod n)-th; an empty entry is the base model, so \",sql\" "
      "alternates the base model and adapter sql (--api openai: sent as the model)");
  app.add_option("--seed", options.seed,
                 "Seeds the prompts, lengths, arrivals and each request's sampling seed (seed + index)")
      ->capture_default_str();
  app.add_option("--channels", options.channels, "gRPC channels (TCP connections), used round-robin")
      ->capture_default_str()
      ->check(CLI::Range(1u, 256u));
  app.add_option("--timeout", options.timeout_s, "Per-request deadline in seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--connect-timeout", options.connect_timeout_s,
                 "Give up if the target does not accept a connection within this many seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--json", options.json_path, "Also write the results as JSON to this file");

  try {
    app.parse(argc, argv);
    std::string error;
    options.prompt_len = *LengthDistribution::parse(prompt_len, &error);
    options.output_len = *LengthDistribution::parse(output_len, &error);
    if (options.vocab != 0 && options.min_token_id >= options.vocab) {
      throw CLI::ValidationError("--min-token-id", "must be below --vocab");
    }
    if (options.api == "openai" && options.vocab == 0 && !options.text) {
      throw CLI::ValidationError(
          "--vocab",
          "is needed with --api openai and token-id prompts (the OpenAI API does not say "
          "the vocabulary's size), or send --text");
    }
    if (options.api == "openai" && options.channels != 1) {
      throw CLI::ValidationError("--channels",
                                 "is for --api grpc (each OpenAI request has its own connection)");
    }
    if (!lora_adapters.empty()) {  // split by hand: an empty entry (the base model) counts
      size_t start = 0;
      for (size_t comma; (comma = lora_adapters.find(',', start)) != std::string::npos; start = comma + 1)
        options.lora_adapters.push_back(lora_adapters.substr(start, comma - start));
      options.lora_adapters.push_back(lora_adapters.substr(start));
    }
    if (options.shared_prefix_frac > 0 && options.shared_prefix_len == 0) {
      throw CLI::ValidationError("--shared-prefix-len", "must be >= 1 when --shared-prefix-frac is set");
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (options.duration_s == 0 && options.requests == 0) options.duration_s = BenchOptions::kDefaultDurationS;
  return std::nullopt;
}

}  // namespace kvserve::bench
