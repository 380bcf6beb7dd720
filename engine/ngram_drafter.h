// Prompt-lookup drafting for speculative decoding: the tokens a sequence is likely to produce next,
// guessed by finding its last few tokens earlier in its own context (the prompt or the output so
// far) and proposing what followed them there. Code edits, retrieval answers, summaries and
// structured output repeat long runs of their context, and for those the guess is often right.
//
// The draft costs no model: the engine feeds it to the model behind the sequence's real next input
// token, in one step, and keeps each draft token only while it equals the token the sampler draws at
// its position from the model's logits there (engine/engine.h). Every token that comes out is
// therefore the one decoding without a draft would have drawn, a guess only saves steps.
#pragma once

#include <span>
#include <vector>

#include "engine/block_pool.h"

namespace kvserve {

struct NgramDraftConfig {
  int max_draft_tokens = 0;  // 0: no drafts (speculative decoding off)
  // The longest and shortest tail of the context looked up; longer tails are tried first, since a
  // longer match predicts better. A tail shorter than min_ngram is not trusted.
  int min_ngram = 2;
  int max_ngram = 4;
};

// Sets `draft` to max_draft tokens: those that followed the most recent earlier occurrence of the
// context's last n tokens, for the largest n in [min_ngram, max_ngram] that occurs, read on as if
// the context repeated from there (so where the occurrence is s tokens before the tail, draft token
// i is the token s before it, in the context or the draft). Empty when no tail of those lengths
// occurs earlier (or max_draft <= 0). One backward read of the context, plus max_ngram compares
// where a token equals the last one.
void propose_ngram_draft(std::span<const TokenId> context, const NgramDraftConfig& config, int max_draft,
                         std::vector<TokenId>& draft);

}  // namespace kvserve
