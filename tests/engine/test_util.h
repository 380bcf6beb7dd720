// Small builders shared by the engine tests.
#pragma once

#include <memory>
#include <numeric>
#include <string>
#include <vector>

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

}  // namespace kvserve::testing
