#include "engine/added_tokens.h"

#include "engine/unicode_text.h"
#include "engine/utf8.h"

namespace kvserve {
namespace {

// The character that ends `before` / starts `after` and its length in bytes; {0, 0} at the text's
// edge (U+0000 counts as neither a word character nor whitespace).
struct Char {
  char32_t code = 0;
  size_t bytes = 0;
};

Char last_char(std::string_view before) {
  for (size_t back = 1; back <= 4 && back <= before.size(); ++back) {
    const std::string_view tail = before.substr(before.size() - back);
    if (utf8_char_len(tail) == back) return {utf8_decode(tail, back), back};
  }
  return {};
}

Char first_char(std::string_view after) {
  const size_t n = utf8_char_len(after);
  return n == 0 ? Char{} : Char{utf8_decode(after, n), n};
}

bool is_word_char(Char c) {
  return c.bytes > 0 && is_word_character(c.code);
}

// Bytes of whitespace that end `before` / start `after`.
size_t whitespace_before(std::string_view before) {
  size_t taken = 0;
  for (Char c;
       (c = last_char(before.substr(0, before.size() - taken))).bytes > 0 && is_unicode_whitespace(c.code);)
    taken += c.bytes;
  return taken;
}

size_t whitespace_after(std::string_view after) {
  size_t taken = 0;
  for (Char c; (c = first_char(after.substr(taken))).bytes > 0 && is_unicode_whitespace(c.code);)
    taken += c.bytes;
  return taken;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) : tokens_(tokens), trie_(1) {
  for (size_t t = 0; t < tokens_.size(); ++t) {
    int node = 0;
    for (const char ch : tokens_[t].content) {
      const auto byte = static_cast<unsigned char>(ch);
      int child = -1;
      for (const auto& [b, c] : trie_[static_cast<size_t>(node)].children)
        if (b == byte) child = c;
      if (child < 0) {
        child = static_cast<int>(trie_.size());
        trie_[static_cast<size_t>(node)].children.emplace_back(byte, child);
        trie_.emplace_back();
      }
      node = child;
    }
    // The same content twice: the first one listed stands.
    if (trie_[static_cast<size_t>(node)].token < 0)
      trie_[static_cast<size_t>(node)].token = static_cast<int>(t);
  }
}

std::pair<int, size_t> AddedTokenMatcher::longest_at(std::string_view text, size_t pos) const {
  std::pair<int, size_t> best{-1, 0};
  int node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    int child = -1;
    for (const auto& [b, c] : trie_[static_cast<size_t>(node)].children)
      if (b == byte) child = c;
    if (child < 0) break;
    node = child;
    if (trie_[static_cast<size_t>(node)].token >= 0)
      best = {trie_[static_cast<size_t>(node)].token, i + 1 - pos};
  }
  return best;
}

std::vector<AddedTokenMatcher::Piece> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<Piece> pieces;
  size_t done = 0;  // text before this is in `pieces`
  size_t pos = 0;   // where the search for the next match goes on
  while (pos < text.size()) {
    const auto [index, length] = longest_at(text, pos);
    if (index < 0) {
      ++pos;  // contents start with a lead byte, so a match never starts inside a character
      continue;
    }
    const AddedToken& token = tokens_[static_cast<size_t>(index)];
    size_t start = pos;
    size_t stop = pos + length;
    pos = stop;  // a match that is turned down below still hides what overlaps it
    if (token.single_word &&
        (is_word_char(last_char(text.substr(0, start))) || is_word_char(first_char(text.substr(stop))))) {
      continue;
    }
    // lstrip takes whitespace back to the previous piece's end, no further. rstrip takes all of it,
    // an added token made of whitespace included (the library would emit that one too, overlapping).
    if (token.lstrip) start -= whitespace_before(text.substr(done, start - done));
    if (token.rstrip) stop += whitespace_after(text.substr(stop));
    if (start > done) pieces.push_back({text.substr(done, start - done), std::nullopt});
    pieces.push_back({text.substr(start, stop - start), token.id});
    done = pos = stop;
  }
  if (done < text.size()) pieces.push_back({text.substr(done), std::nullopt});
  return pieces;
}

}  // namespace kvserve
