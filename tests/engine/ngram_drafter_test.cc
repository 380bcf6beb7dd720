// Prompt-lookup drafts against a reference written the slow way: every (n, start) pair is tried and
// the best one kept by the rule (longest tail first, then the latest earlier occurrence), and the
// draft read off a copy of the context extended token by token as it repeats from there.
#include "engine/ngram_drafter.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace kvserve {
namespace {

std::vector<TokenId> reference_draft(const std::vector<TokenId>& ctx, const NgramDraftConfig& c,
                                     int max_draft) {
  const int len = static_cast<int>(ctx.size());
  int best_n = 0, best_start = -1;
  for (int n = c.min_ngram; n <= c.max_ngram; ++n) {
    for (int start = 0; start + n < len; ++start) {  // an occurrence with a token after it
      bool match = true;
      for (int k = 0; k < n; ++k)
        match = match && ctx[start + k] == ctx[len - n + k];
      if (match && (n > best_n || (n == best_n && start > best_start))) {
        best_n = n;
        best_start = start;
      }
    }
  }
  std::vector<TokenId> draft;
  if (best_start < 0 || max_draft <= 0) return draft;
  // The tail at len - n equals the occurrence at best_start: the text is guessed to go on as it
  // went on after the occurrence, the same distance back.
  std::vector<TokenId> extended = ctx;
  const int distance = len - best_n - best_start;
  for (int i = 0; i < max_draft; ++i) {
    const TokenId next = extended[extended.size() - static_cast<size_t>(distance)];
    extended.push_back(next);
    draft.push_back(next);
  }
  return draft;
}

TEST(NgramDrafter, ProposesWhatFollowedTheLatestLongestMatch) {
  const NgramDraftConfig c{.max_draft_tokens = 4, .min_ngram = 1, .max_ngram = 3};
  std::vector<TokenId> draft;
  // "1 2 3" occurs at 0 and at 5; the latest occurrence before the tail (at 5) decides: 9 9 1 2.
  propose_ngram_draft(std::vector<TokenId>{1, 2, 3, 4, 5, 1, 2, 3, 9, 9, 1, 2, 3}, c, 4, draft);
  EXPECT_EQ(draft, (std::vector<TokenId>{9, 9, 1, 2}));
  // Where the occurrence is near the end, the context is read on as it repeats: "1 2 1 2" after
  // "1 2" gives 1 2 1 2 (the period 2), and a run of one token drafts more of it.
  propose_ngram_draft(std::vector<TokenId>{7, 1, 2, 1, 2}, c, 4, draft);
  EXPECT_EQ(draft, (std::vector<TokenId>{1, 2, 1, 2}));
  // A longer tail wins over a later shorter one: "7 8" matches at 0, "8" alone later at 4.
  propose_ngram_draft(std::vector<TokenId>{7, 8, 5, 6, 8, 1, 7, 8}, c, 4, draft);
  EXPECT_EQ(draft, (std::vector<TokenId>{5, 6, 8, 1}));
  propose_ngram_draft(std::vector<TokenId>{3, 3, 3}, c, 4, draft);
  EXPECT_EQ(draft, (std::vector<TokenId>{3, 3, 3, 3}));
  // max_draft tokens; nothing below min_ngram; nothing for a context with no repeat.
  propose_ngram_draft(std::vector<TokenId>{1, 2, 3, 4, 5, 1, 2}, c, 2, draft);
  EXPECT_EQ(draft, (std::vector<TokenId>{3, 4}));
  propose_ngram_draft(std::vector<TokenId>{1, 2, 3, 4, 5, 1, 2}, c, 6, draft);
  EXPECT_EQ(draft, (std::vector<TokenId>{3, 4, 5, 1, 2, 3}));
  propose_ngram_draft(std::vector<TokenId>{1, 2, 3, 4, 5, 1, 2},
                      {.max_draft_tokens = 4, .min_ngram = 3, .max_ngram = 3}, 4, draft);
  EXPECT_TRUE(draft.empty());
  propose_ngram_draft(std::vector<TokenId>{1, 2, 3, 4}, c, 4, draft);
  EXPECT_TRUE(draft.empty());
  propose_ngram_draft(std::vector<TokenId>{}, c, 4, draft);
  EXPECT_TRUE(draft.empty());
  propose_ngram_draft(std::vector<TokenId>{5, 5}, c, 0, draft);
  EXPECT_TRUE(draft.empty());
}

TEST(NgramDrafter, MatchesTheReferenceOnRandomContexts) {
  const uint64_t seed = 20261207;
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int proposed = 0;
  std::vector<TokenId> draft;
  for (int trial = 0; trial < 20000; ++trial) {
    std::vector<TokenId> ctx(static_cast<size_t>(uniform(0, 40)));
    const int vocab = uniform(2, 12);  // small vocabularies repeat n-grams often
    for (TokenId& t : ctx)
      t = uniform(0, vocab - 1);
    NgramDraftConfig c;
    c.min_ngram = uniform(1, 4);
    c.max_ngram = uniform(c.min_ngram, 6);
    c.max_draft_tokens = uniform(1, 8);
    const int max_draft = uniform(0, c.max_draft_tokens);
    propose_ngram_draft(ctx, c, max_draft, draft);
    ASSERT_EQ(draft, reference_draft(ctx, c, max_draft)) << "seed " << seed << " trial " << trial;
    proposed += !draft.empty();
  }
  EXPECT_GT(proposed, 5000);  // the random contexts do exercise matches
}

}  // namespace
}  // namespace kvserve
