// Small builders shared by the engine tests.
#pragma once

#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "engine/sequence.h"

namespace kvserve::testing {

inline constexpr TokenId kTestEos = 0;

inline Request make_request(std::string id, std::vector<TokenId> prompt, int max_tokens) {
  Request r;
  r.id = std::move(id);
  r.prompt = std::move(prompt);
  r.stop.max_tokens = max_tokens;
  r.stop.ignore_eos = true;
  return r;
}

// Prompt of n tokens counting up from `first` (never the EOS id).
inline std::vector<TokenId> iota_prompt(int n, TokenId first = 100) {
  std::vector<TokenId> p(n);
  std::iota(p.begin(), p.end(), first);
  return p;
}

inline std::unique_ptr<Sequence> make_seq(std::string id, std::vector<TokenId> prompt, int max_tokens,
                                          int block_size) {
  const std::vector<TokenId> eos{kTestEos};
  return std::make_unique<Sequence>(make_request(std::move(id), std::move(prompt), max_tokens), block_size,
                                    eos);
}

inline SchedulerConfig small_config(int block_size, int num_blocks) {
  SchedulerConfig cfg;
  cfg.block_size = block_size;
  cfg.num_blocks = num_blocks;
  return cfg;
}

// Completes a step giving every emitting sequence the same token.
inline std::vector<SequenceEvent> complete(Scheduler& s, const StepPlan& plan, TokenId token = 7) {
  return s.complete_step(plan, std::vector<TokenId>(plan.seqs.size(), token));
}

inline std::vector<int> chunk_sizes(const StepPlan& plan) {
  std::vector<int> out;
  for (const auto& s : plan.seqs)
    out.push_back(s.num_new_tokens);
  return out;
}

}  // namespace kvserve::testing
