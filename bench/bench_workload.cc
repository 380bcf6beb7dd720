#include "bench/bench_workload.h"

#include <algorithm>

namespace kvserve::bench {
namespace {

// splitmix64's finaliser: neighbouring indexes get unrelated generator states.
uint64_t mix(uint64_t value) {
  value += 0x9e3779b97f4a7c15ULL;
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ULL;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebULL;
  return value ^ (value >> 31);
}

// Keeps the shared prefix's stream apart from every request's.
constexpr uint64_t kSharedPrefixStream = ~0ULL;

}  // namespace

const std::vector<std::string>& Workload::words() {
  static const std::vector<std::string> kWords = {
      "the",   "of",    "and",   "to",    "in",    "is",     "that",  "for",   "it",    "as",    "was",
      "with",  "be",    "by",    "on",    "not",   "he",     "this",  "are",   "or",    "his",   "from",
      "at",    "which", "but",   "have",  "an",    "had",    "they",  "you",   "were",  "their", "one",
      "all",   "we",    "can",   "her",   "has",   "there",  "been",  "if",    "more",  "when",  "will",
      "would", "who",   "so",    "no",    "time",  "people", "water", "world", "house", "light", "river",
      "city",  "music", "paper", "table", "green", "small",  "large", "old",   "new"};
  return kWords;
}

Workload::Workload(const BenchOptions& options) : options_(options) {
  if (options_.shared_prefix_frac > 0 && options_.shared_prefix_len > 0) {
    std::mt19937_64 rng(mix(options_.seed ^ mix(kSharedPrefixStream)));
    shared_prefix_ = draw_ids(rng, options_.shared_prefix_len);
  }
}

std::vector<uint32_t> Workload::draw_ids(std::mt19937_64& rng, uint32_t count) const {
  const uint32_t low = options_.text ? 0 : options_.min_token_id;
  const uint32_t high = options_.text ? static_cast<uint32_t>(words().size()) - 1 : options_.vocab - 1;
  std::uniform_int_distribution<uint32_t> pick(low, high);
  std::vector<uint32_t> ids(count);
  for (auto& id : ids)
    id = pick(rng);
  return ids;
}

PlannedRequest Workload::make(uint64_t index) const {
  std::mt19937_64 rng(mix(options_.seed ^ mix(index)));
  PlannedRequest planned;
  planned.prompt_tokens = options_.prompt_len.sample(rng);
  planned.output_tokens = options_.output_len.sample(rng);
  const bool shares_prefix = !shared_prefix_.empty() &&
                             std::uniform_real_distribution<double>(0, 1)(rng) < options_.shared_prefix_frac;

  // A prompt shorter than the prefix is a cut of it, so drawn lengths stay exact.
  const uint32_t prefix_tokens =
      shares_prefix ? std::min(planned.prompt_tokens, static_cast<uint32_t>(shared_prefix_.size())) : 0;
  std::vector<uint32_t> ids(shared_prefix_.begin(), shared_prefix_.begin() + prefix_tokens);
  const std::vector<uint32_t> rest = draw_ids(rng, planned.prompt_tokens - prefix_tokens);
  ids.insert(ids.end(), rest.begin(), rest.end());

  auto& request = planned.request;
  request.set_request_id("bench-" + std::to_string(options_.seed) + "-" + std::to_string(index));
  if (options_.text) {
    std::string text;
    for (const uint32_t word : ids) {
      if (!text.empty()) text += ' ';
      text += words()[word];
    }
    request.set_text(std::move(text));
  } else {
    request.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  }
  auto& sampling = *request.mutable_sampling();
  sampling.set_temperature(options_.temperature);
  sampling.set_seed(options_.seed + index);
  request.set_priority(options_.priority);
  if (!options_.lora_adapters.empty())
    request.set_lora_adapter(options_.lora_adapters[index % options_.lora_adapters.size()]);
  auto& stop = *request.mutable_stop();
  stop.set_max_tokens(planned.output_tokens);
  stop.set_ignore_eos(true);
  return planned;
}

}  // namespace kvserve::bench
