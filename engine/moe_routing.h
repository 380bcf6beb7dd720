// Routing a step's tokens through a mixture-of-experts layer (MoeConfig): which experts each token
// goes through and with what weight, grouped by expert so that each expert runs once over the rows
// routed to it. The CPU backend and the CUDA backend route with this one function, so both pick the
// same experts from the same logits.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/model.h"

namespace kvserve {

struct MoeRouting {
  // The routed rows grouped by expert: expert e's are rows [expert_start[e], expert_start[e + 1]),
  // in increasing token order; row r takes token token[r]'s input with weight weight[r].
  std::vector<int32_t> expert_start;  // [num_experts + 1]
  std::vector<int32_t> token;         // [tokens * experts_per_token]
  std::vector<float> weight;          // [tokens * experts_per_token]
  // token_rows[t * experts_per_token + j]: the rows of token t, its j-th best expert's first.
  std::vector<int32_t> token_rows;
  // The closest call: the smallest difference, over the tokens, between the probability of the
  // last expert a token goes through and the next one's (infinity when every expert is chosen or
  // there are no tokens). Another backend whose probabilities differ by more may route otherwise.
  double smallest_margin = INFINITY;
};

// From the router's logits [tokens][num_experts] (row-major): each token's experts_per_token experts
// with the highest softmax probability (ties to the lower index; a NaN probability ranks last; the
// experts of a +infinity logit share all the probability), each
// weighted by its probability, renormalized over the chosen ones when moe.normalize_routing_weights.
// `out` is overwritten (its buffers reused).
void route_tokens(std::span<const float> logits, int tokens, const MoeConfig& moe, MoeRouting& out);

}  // namespace kvserve
