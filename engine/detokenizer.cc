#include "engine/detokenizer.h"

#include <algorithm>
#include <string_view>
#include <utility>

#include "engine/utf8.h"

namespace kvserve {
namespace {

// Prompt tokens decoded ahead of the first generated one. SentencePiece drops the leading space of
// the first piece it decodes, so the generated tokens must never be first in the window; one token
// would do, a few more cost nothing.
constexpr size_t kPromptContext = 4;
// The window is cut back to its last kKeepTokens once it holds kMaxWindow, so every push decodes a
// bounded number of tokens. kKeepTokens covers the largest unsettled tail (three U+FFFD, each up to
// three byte tokens when it is a literal EF BF BD) plus three bytes for the decoder to find the
// start of a character again when the cut lands inside one.
constexpr size_t kKeepTokens = 12;
constexpr size_t kMaxWindow = 32;

bool starts_char(const std::string& s, size_t pos) {
  return pos >= s.size() || (static_cast<unsigned char>(s[pos]) & 0xC0) != 0x80;
}

// Bytes at the end of `text` that a later token may still change. An incomplete UTF-8 character
// at the end is at most three bytes long and decodes as one U+FFFD per byte (SentencePiece's byte
// fallback) or one in all (byte-level BPE), so only the last three U+FFFD can still turn into a
// real character; anything before is final.
size_t unsettled_tail(std::string_view text) {
  size_t n = 0;
  while (n < 3 && text.size() >= (n + 1) * kReplacementCharacter.size() &&
         text.substr(text.size() - (n + 1) * kReplacementCharacter.size(), kReplacementCharacter.size()) ==
             kReplacementCharacter) {
    ++n;
  }
  return n * kReplacementCharacter.size();
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, const std::vector<TokenId>& prompt,
                                               std::vector<std::string> stop, int min_tokens,
                                               bool continuation, bool include_stop,
                                               std::vector<TokenId> kept_control_tokens)
    : tokenizer_(tokenizer),
      kept_control_tokens_(std::move(kept_control_tokens)),
      min_tokens_(min_tokens),
      include_stop_(include_stop) {
  for (auto& s : stop) {
    if (!s.empty()) stop_.push_back(std::move(s));
  }
  const int vocab = tokenizer_.vocab_size();
  for (auto it = prompt.rbegin(); it != prompt.rend() && window_.size() < kPromptContext; ++it) {
    if (*it >= 0 && *it < vocab && !tokenizer_.is_control(*it)) window_.push_back(*it);
  }
  std::reverse(window_.begin(), window_.end());
  // A prompt that ends inside a character (possible when ids are sent directly) must not let the
  // output's first bytes complete it: the output's text comes from output tokens only.
  std::string context = tokenizer_.decode(window_);
  while (!window_.empty() && unsettled_tail(context) > 0) {
    window_.pop_back();
    context = tokenizer_.decode(window_);
  }
  if (window_.empty() && continuation) {
    // Any plain text will do as the context; its bytes count as already emitted.
    window_ = tokenizer_.encode("x", false);
    context = tokenizer_.decode(window_);
  }
  window_done_ = context.size();
}

void IncrementalDetokenizer::advance_window(bool final) {
  const std::string text = tokenizer_.decode(window_);
  // Text only changes in its unsettled tail, so the accounted prefix stays as it was. The max()
  // covers a U+FFFD run that begins inside that prefix, whose start is final already (say a lone
  // continuation byte that opens the window after a cut); min() guards against a tokenizer that
  // broke the rule.
  const size_t settled = final ? text.size() : text.size() - unsettled_tail(text);
  const size_t end = std::min(std::max(settled, window_done_), text.size());
  if (end > window_done_) pending_.append(text, window_done_, end - window_done_);
  window_done_ = end;
  if (window_.size() < kMaxWindow) return;
  const size_t open = text.size() - window_done_;
  window_.erase(window_.begin(), window_.end() - kKeepTokens);
  const size_t kept = tokenizer_.decode(window_).size();
  window_done_ = kept >= open ? kept - open : 0;
}

IncrementalDetokenizer::Delta IncrementalDetokenizer::release_pending(bool final) {
  Delta d;
  if (pushed_ < min_tokens_) {  // stop strings do not apply yet: nothing to look for or hold
    d.text = std::move(pending_);
    pending_.clear();
    emitted_ += d.text;
    return d;
  }
  // Matches can only start in pending_: a prefix of a stop string is never emitted (see the
  // hold-back below), so no match can begin in emitted text. Of the matches in pending_, the cut output keeps
  // the text before the one that starts first (of those, the first listed); with include_stop the output ends
  // where a match ends, so the one that ends first wins (one token may complete several): nothing of another
  // stop string may follow.
  size_t match = std::string::npos, match_end = std::string::npos;
  const std::string* matched = nullptr;
  for (const auto& s : stop_) {
    // s's first occurrence on a character boundary, which also ends first of its occurrences.
    size_t pos = pending_.find(s);
    while (pos != std::string::npos && !starts_char(pending_, pos))
      pos = pending_.find(s, pos + 1);
    if (pos == std::string::npos) continue;
    if (include_stop_ ? pos + s.size() < match_end : pos < match) {
      match = pos;
      match_end = pos + s.size();
      matched = &s;
    }
  }
  if (match != std::string::npos) {
    d.text = pending_.substr(0, include_stop_ ? match_end : match);
    d.stopped = true;
    d.stop = *matched;
    emitted_ += d.text;
    pending_.clear();
    done_ = true;
    return d;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string; everything before it
  // can no longer become part of a match.
  size_t hold = 0;
  if (!final) {
    for (const auto& s : stop_) {
      for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len) {
        const size_t start = pending_.size() - len;
        if (starts_char(pending_, start) && pending_.compare(start, len, s, 0, len) == 0) {
          hold = len;
          break;
        }
      }
    }
  }
  d.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, d.text.size());
  emitted_ += d.text;
  return d;
}

IncrementalDetokenizer::Delta IncrementalDetokenizer::push(TokenId token) {
  if (done_) return {};
  ++pushed_;
  if (token < 0 || token >= tokenizer_.vocab_size()) return {};
  if (tokenizer_.is_control(token)) {
    if (std::find(kept_control_tokens_.begin(), kept_control_tokens_.end(), token) ==
        kept_control_tokens_.end())
      return {};
    // The text before it is settled (nothing merges across a control token), then its spelling
    // follows; the window starts again with plain context, so that the next token's leading
    // space stays.
    advance_window(/*final=*/true);
    pending_ += tokenizer_.token_spelling(token);
    window_ = tokenizer_.encode("x", false);
    window_done_ = tokenizer_.decode(window_).size();
    return release_pending(/*final=*/false);
  }
  window_.push_back(token);
  advance_window(/*final=*/false);
  return release_pending(/*final=*/false);
}

std::string IncrementalDetokenizer::finish() {
  if (done_) return {};
  advance_window(/*final=*/true);
  Delta d = release_pending(/*final=*/true);
  done_ = true;
  return std::move(d.text);
}

}  // namespace kvserve
