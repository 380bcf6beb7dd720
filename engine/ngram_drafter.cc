#include "engine/ngram_drafter.h"

#include <algorithm>

namespace kvserve {

void propose_ngram_draft(std::span<const TokenId> context, const NgramDraftConfig& config, int max_draft,
                         std::vector<TokenId>& draft) {
  draft.clear();
  const int len = static_cast<int>(context.size());
  const int max_n = std::min(config.max_ngram, len - 1);  // a match needs a token after it
  if (max_draft <= 0 || config.min_ngram <= 0 || max_n < config.min_ngram) return;
  // One pass from the end over the places an earlier occurrence of the tail could end (token q
  // equal to the last one; q <= len - 2, so a token follows): each is measured backwards against
  // the tail, up to max_n. The longest wins and, of those, the latest (the first seen), so the scan
  // stops at the first full-length match. It runs every step for every decode: the cheap test of
  // one token per position keeps it to a plain read of the context.
  const TokenId* c = context.data();
  const TokenId last = c[len - 1];
  int best_n = 0, best_end = -1;
  for (int q = len - 2; q >= 0; --q) {
    if (c[q] != last) continue;
    int n = 1;
    while (n < max_n && n <= q && c[q - n] == c[len - 1 - n])
      ++n;
    if (n > best_n) {
      best_n = n;
      best_end = q;
      if (n == max_n) break;
    }
  }
  if (best_n < config.min_ngram) return;
  // Token len + i is guessed to be the one `shift` before it. Past the context's end that is a
  // guessed token itself: a context that repeats with period `shift` (a loop, a list, a table row)
  // is drafted on for the whole draft, not cut where the match's continuation reaches the tail.
  const int shift = len - 1 - best_end;
  for (int i = 0; i < max_draft; ++i)
    draft.push_back(i < shift ? c[best_end + 1 + i] : draft[static_cast<size_t>(i - shift)]);
}

}  // namespace kvserve
