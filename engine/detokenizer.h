// IncrementalDetokenizer: turns one request's stream of generated tokens into a stream of text
// deltas, and applies its stop strings.
//
// - A multi-byte UTF-8 character split across tokens is never emitted half: text is held back
//   until the character is complete.
// - Stop strings end generation and are not part of the output (unless include_stop: then the output
//   ends with the one that matched; nothing after it is ever emitted). Text that could still be the
//   start of a stop string is held back, and released as soon as it cannot be (or at finish()). The
//   first match to complete wins; of matches completed by the same token, the one that starts
//   first (the first listed of those starting together), or with include_stop the one that ends
//   first.
// - The output's text comes from output tokens only: after a prompt that ends inside a character,
//   the output's first bytes decode on their own rather than completing it.
// - Control tokens (BOS, EOS, chat markers) add no text, but for those the request keeps: their
//   spelling, as a piece of text of its own (what came before it is settled first).
#pragma once

#include <string>
#include <vector>

#include "engine/block_pool.h"
#include "engine/tokenizer.h"

namespace kvserve {

class IncrementalDetokenizer {
 public:
  // prompt: the request's prompt ids (decoding context so the first token's leading space is
  // right); stop: the request's stop strings (empty strings are ignored); min_tokens: stop strings
  // are looked for only in text that arrives once this many tokens have been pushed (text streamed
  // before then is never matched, as it has already gone to the client). A prompt without text
  // (only BOS) leaves the first token first in the decoded text, where SentencePiece drops its
  // leading space, as transformers' decode does; with `continuation` the output is decoded as
  // text that follows other text even then, so it is the tokens' Tokenizer::token_bytes, which
  // structured output matches.
  IncrementalDetokenizer(const Tokenizer& tokenizer, const std::vector<TokenId>& prompt,
                         std::vector<std::string> stop, int min_tokens = 0, bool continuation = false,
                         bool include_stop = false, std::vector<TokenId> kept_control_tokens = {});

  struct Delta {
    std::string text;      // new text to send; may be empty (held back)
    bool stopped = false;  // a stop string matched: generation must end; text excludes it (but
                           // with include_stop, where it ends with it)
    std::string stop;      // when stopped: the stop string that matched
  };
  // Adds one generated token.
  Delta push(TokenId token);
  // The request ended for another reason (length, EOS, abort): releases the held-back text.
  std::string finish();
  // All text emitted so far.
  const std::string& text() const { return emitted_; }

 private:
  // Moves the settled text of the decode window (all of it when final) into pending_, and cuts the
  // window back when it grows long.
  void advance_window(bool final);
  // Applies the stop strings to pending_ and moves what can no longer be part of a match (all of
  // it when final) to emitted_; returns that text.
  Delta release_pending(bool final);

  const Tokenizer& tokenizer_;
  std::vector<std::string> stop_;
  std::vector<TokenId> kept_control_tokens_;
  int min_tokens_ = 0;
  bool include_stop_ = false;
  int pushed_ = 0;  // tokens pushed, control tokens included (they count towards min_tokens)
  // Decode window: a few context tokens, then the tokens whose text is not settled yet. Control
  // tokens and ids outside the vocabulary are never added.
  std::vector<TokenId> window_;
  size_t window_done_ = 0;  // bytes of decode(window_) already accounted for (context or pending_)
  std::string pending_;     // settled text not yet emitted (could still start a stop string)
  std::string emitted_;
  bool done_ = false;  // stopped by a stop string, or finish() called
};

}  // namespace kvserve
