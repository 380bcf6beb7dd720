#include "engine/ngram_drafter.h"

#include <algorithm>

namespace kvserve {

void propose_ngram_draft(std::span<const TokenId> context, const NgramDraftConfig& config, int max_draft,
                         std::vector<TokenId>& draft) {
  draft.clear();
  const int len = static_cast<int>(context.size());
  if (max_draft <= 0 || config.min_ngram <= 0) return;
  for (int n = std::min(config.max_ngram, len - 1); n >= config.min_ngram; --n) {
    const std::span<const TokenId> tail = context.subspan(static_cast<size_t>(len - n));
    // Earlier occurrences start at p with p + n <= len - 1, so at least one token follows them.
    for (int p = len - n - 1; p >= 0; --p) {
      if (!std::equal(tail.begin(), tail.end(), context.begin() + p)) continue;
      // Token len + i is guessed to be the one `shift` before it. Past the context's end that is a
      // guessed token itself: a context that repeats with period `shift` (a loop, a list, a table
      // row) is drafted on for the whole draft, not cut where the match's continuation reaches the
      // tail.
      const int shift = len - n - p;
      for (int i = 0; i < max_draft; ++i)
        draft.push_back(i < shift ? context[static_cast<size_t>(len - shift + i)]
                                  : draft[static_cast<size_t>(i - shift)]);
      return;
    }
  }
}

}  // namespace kvserve
