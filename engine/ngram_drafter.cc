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
    // Earlier occurrences start at p with p + n <= len - 1, so at least one token follows them
    // (the match may overlap the tail: a run of one repeated token drafts more of it).
    for (int p = len - n - 1; p >= 0; --p) {
      if (!std::equal(tail.begin(), tail.end(), context.begin() + p)) continue;
      const int first = p + n;
      const int count = std::min(max_draft, len - first);
      draft.assign(context.begin() + first, context.begin() + first + count);
      return;
    }
  }
}

}  // namespace kvserve
