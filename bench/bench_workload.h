// The requests kvserve-bench sends: prompt and output lengths, prompt contents and the shared prefix.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_options.h"
#include "kvserve/v1/kvserve.pb.h"

namespace kvserve::bench {

struct PlannedRequest {
  kvserve::v1::GenerateRequest request;
  uint32_t prompt_tokens = 0;  // as sent: token ids, or words in --text mode
  uint32_t output_tokens = 0;  // max_tokens
};

class Workload {
 public:
  // `options.vocab` must be known (non-zero) unless options.text is set.
  explicit Workload(const BenchOptions& options);

  // Request `index` depends only on the options and the index, so every run with the same seed sends the
  // same requests whatever order the callback threads ask for them in; safe to call from any thread.
  PlannedRequest make(uint64_t index) const;

  // The words --text prompts are made of; each is a single token in common BPE vocabularies.
  static const std::vector<std::string>& words();

 private:
  std::vector<uint32_t> draw_ids(std::mt19937_64& rng, uint32_t count) const;

  BenchOptions options_;
  std::vector<uint32_t> shared_prefix_;  // token ids, or indexes into words() in --text mode
};

}  // namespace kvserve::bench
