#include "engine/moe_routing.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace kvserve {

void route_tokens(std::span<const float> logits, int tokens, const MoeConfig& moe, MoeRouting& out) {
  const int experts = moe.num_experts;
  const int k = moe.experts_per_token;
  if (tokens < 0 || experts < 1 || k < 1 || k > experts ||
      logits.size() != static_cast<size_t>(tokens) * static_cast<size_t>(experts))
    throw std::invalid_argument("route_tokens: " + std::to_string(logits.size()) + " logits for " +
                                std::to_string(tokens) + " tokens x " + std::to_string(experts) +
                                " experts, " + std::to_string(k) + " per token");
  const size_t rows = static_cast<size_t>(tokens) * k;
  // Each token's choices, then a counting sort by expert (stable: tokens stay in order).
  std::vector<int32_t> chosen(rows);
  std::vector<float> chosen_weight(rows);
  std::vector<int> order(static_cast<size_t>(experts));
  std::vector<float> probs(static_cast<size_t>(experts));
  out.expert_start.assign(static_cast<size_t>(experts) + 1, 0);
  out.smallest_margin = INFINITY;
  for (int t = 0; t < tokens; ++t) {
    const float* logit = logits.data() + static_cast<size_t>(t) * experts;
    float max_logit = -INFINITY;
    for (int e = 0; e < experts; ++e)
      if (!std::isnan(logit[e])) max_logit = std::max(max_logit, logit[e]);
    float sum = 0.0f;
    for (int e = 0; e < experts; ++e) {
      // exp(x - max) with x = max = +-infinity is NaN: the softmax's limit there is 1 for each
      // expert at the maximum (all of them when every logit is -infinity), 0 for the others.
      probs[e] =
          std::isinf(max_logit) ? (logit[e] == max_logit ? 1.0f : 0.0f) : std::exp(logit[e] - max_logit);
      if (!std::isnan(probs[e])) sum += probs[e];
    }
    for (int e = 0; e < experts; ++e) {
      probs[e] /= sum;
      order[e] = e;
    }
    const auto rank = [&](int e) { return std::isnan(probs[e]) ? -1.0f : probs[e]; };
    const auto top = order.begin() + k;
    std::partial_sort(order.begin(), top, order.end(),
                      [&](int a, int b) { return rank(a) > rank(b) || (rank(a) == rank(b) && a < b); });
    float total = 0.0f;
    for (auto it = order.begin(); it != top; ++it)
      total += probs[*it];
    if (k < experts) {  // (partial_sort leaves the others unordered: the best of them is the next)
      float next = -1.0f;
      for (auto it = top; it != order.end(); ++it)
        next = std::max(next, rank(*it));
      out.smallest_margin = std::min(out.smallest_margin, static_cast<double>(rank(order[k - 1]) - next));
    }
    const float divisor = moe.normalize_routing_weights ? total : 1.0f;
    for (int j = 0; j < k; ++j) {
      const int e = order[static_cast<size_t>(j)];
      chosen[static_cast<size_t>(t) * k + j] = e;
      chosen_weight[static_cast<size_t>(t) * k + j] = probs[e] / divisor;
      ++out.expert_start[static_cast<size_t>(e) + 1];
    }
  }
  for (int e = 0; e < experts; ++e)
    out.expert_start[static_cast<size_t>(e) + 1] += out.expert_start[static_cast<size_t>(e)];
  out.token.resize(rows);
  out.weight.resize(rows);
  out.token_rows.resize(rows);
  std::vector<int32_t> next(out.expert_start.begin(), out.expert_start.end() - 1);
  for (size_t i = 0; i < rows; ++i) {
    const int32_t row = next[static_cast<size_t>(chosen[i])]++;
    out.token[static_cast<size_t>(row)] = static_cast<int32_t>(i / static_cast<size_t>(k));
    out.weight[static_cast<size_t>(row)] = chosen_weight[i];
    out.token_rows[i] = row;
  }
}

}  // namespace kvserve
