// route_tokens against routing worked out by hand and against a brute-force reference.
#include "engine/moe_routing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <span>
#include <stdexcept>
#include <vector>

namespace kvserve {
namespace {

MoeConfig moe(int experts, int per_token, bool normalize) {
  MoeConfig m;
  m.num_experts = experts;
  m.experts_per_token = per_token;
  m.normalize_routing_weights = normalize;
  return m;
}

TEST(MoeRouting, PicksTheMostProbableExpertsAndGroupsTheRowsByExpert) {
  // Token 0 prefers experts 2 then 0; token 1 experts 0 then 3; token 2 ties 1 and 3 (then 1 wins,
  // the lower index) after expert 0.
  const std::vector<float> logits = {1.0f, -1.0f, 2.0f, 0.0f,  //
                                     3.0f, 0.0f,  1.0f, 2.0f,  //
                                     4.0f, 1.0f,  0.0f, 1.0f};
  MoeRouting r;
  route_tokens(logits, 3, moe(4, 2, /*normalize=*/false), r);
  EXPECT_EQ(r.expert_start, (std::vector<int32_t>{0, 3, 4, 5, 6}));
  EXPECT_EQ(r.token, (std::vector<int32_t>{0, 1, 2, 2, 0, 1}));  // expert 0: tokens 0, 1, 2; 1: 2; 2: 0; 3: 1
  // token_rows: each token's best expert's row first.
  EXPECT_EQ(r.token_rows, (std::vector<int32_t>{4, 0, 1, 5, 2, 3}));
  // Unnormalized: the softmax probabilities themselves.
  const auto softmax = [&](int t, int e) {
    double sum = 0;
    for (int j = 0; j < 4; ++j)
      sum += std::exp(logits[t * 4 + j]);
    return std::exp(logits[t * 4 + e]) / sum;
  };
  EXPECT_NEAR(r.weight[4], softmax(0, 2), 1e-6);
  EXPECT_NEAR(r.weight[0], softmax(0, 0), 1e-6);
  EXPECT_NEAR(r.weight[3], softmax(2, 1), 1e-6);

  EXPECT_EQ(r.smallest_margin, 0.0) << "token 2's tie";

  route_tokens(logits, 3, moe(4, 2, /*normalize=*/true), r);
  EXPECT_NEAR(r.weight[4], softmax(0, 2) / (softmax(0, 2) + softmax(0, 0)), 1e-6);
  EXPECT_NEAR(r.weight[4] + r.weight[0], 1.0f, 1e-6);

  // The closest call of tokens 0 and 1: expert 0 over 3 for token 0, expert 3 over 2 for token 1
  // (probabilities before renormalization).
  route_tokens(std::span<const float>(logits.data(), 8), 2, moe(4, 2, true), r);
  EXPECT_NEAR(r.smallest_margin, std::min(softmax(0, 0) - softmax(0, 3), softmax(1, 3) - softmax(1, 2)),
              1e-6);
  route_tokens(logits, 3, moe(4, 4, true), r);
  EXPECT_EQ(r.smallest_margin, INFINITY) << "every expert chosen: no call to make";
}

TEST(MoeRouting, MatchesABruteForceReferenceOnRandomLogits) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (int trial = 0; trial < 200; ++trial) {
    const int experts = 1 + static_cast<int>(rng() % 12);
    const int k = 1 + static_cast<int>(rng() % experts);
    const int tokens = static_cast<int>(rng() % 9);
    const bool normalize = rng() % 2;
    std::vector<float> logits(static_cast<size_t>(tokens) * experts);
    for (float& x : logits)
      x = normal(rng);
    MoeRouting r;
    route_tokens(logits, tokens, moe(experts, k, normalize), r);
    ASSERT_EQ(r.token.size(), static_cast<size_t>(tokens) * k);
    for (int t = 0; t < tokens; ++t) {
      // The reference: sort every expert by probability, take the first k.
      std::vector<int> order(static_cast<size_t>(experts));
      for (int e = 0; e < experts; ++e)
        order[e] = e;
      const float* l = &logits[static_cast<size_t>(t) * experts];
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
      double total = 0, chosen = 0;
      for (int e = 0; e < experts; ++e)
        total += std::exp(static_cast<double>(l[e]));
      for (int j = 0; j < k; ++j)
        chosen += std::exp(static_cast<double>(l[order[j]])) / total;
      for (int j = 0; j < k; ++j) {
        const int row = r.token_rows[static_cast<size_t>(t) * k + j];
        EXPECT_EQ(r.token[static_cast<size_t>(row)], t);
        const int e = order[static_cast<size_t>(j)];
        EXPECT_GE(row, r.expert_start[static_cast<size_t>(e)]) << "token " << t << " choice " << j;
        EXPECT_LT(row, r.expert_start[static_cast<size_t>(e) + 1]) << "token " << t << " choice " << j;
        const double p = std::exp(static_cast<double>(l[e])) / total;
        EXPECT_NEAR(r.weight[static_cast<size_t>(row)], normalize ? p / chosen : p, 1e-5);
      }
    }
    for (size_t e = 0; e + 1 < r.expert_start.size(); ++e)  // tokens in order within each expert
      EXPECT_TRUE(
          std::is_sorted(r.token.begin() + r.expert_start[e], r.token.begin() + r.expert_start[e + 1]));
  }
}

TEST(MoeRouting, InfiniteLogitsTakeTheirLimit) {
  MoeRouting r;
  route_tokens(std::vector<float>{INFINITY, 0.0f, INFINITY}, 1, moe(3, 1, false), r);
  EXPECT_EQ(r.expert_start, (std::vector<int32_t>{0, 1, 1, 1})) << "the lower index of the tie";
  EXPECT_EQ(r.weight[0], 0.5f) << "the two infinite logits share the probability";
  route_tokens(std::vector<float>{-INFINITY, -INFINITY}, 1, moe(2, 2, true), r);
  EXPECT_EQ(r.weight, (std::vector<float>{0.5f, 0.5f}));
}

TEST(MoeRouting, ANanLogitRanksLastAndBadShapesAreRefused) {
  const std::vector<float> logits = {NAN, 0.0f, 1.0f};
  MoeRouting r;
  route_tokens(logits, 1, moe(3, 2, true), r);
  EXPECT_EQ(r.expert_start, (std::vector<int32_t>{0, 0, 1, 2}));
  EXPECT_EQ(r.token_rows, (std::vector<int32_t>{1, 0}));  // expert 2, then expert 1
  EXPECT_THROW(route_tokens(logits, 2, moe(3, 2, true), r), std::invalid_argument);
  EXPECT_THROW(route_tokens(logits, 1, moe(3, 4, true), r), std::invalid_argument);
}

}  // namespace
}  // namespace kvserve
