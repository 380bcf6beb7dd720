#include "engine/byte_level_bpe.h"

#include <array>
#include <queue>
#include <stdexcept>

#include "engine/utf8.h"

namespace kvserve {
namespace {

// GPT-2's byte map: the printable Latin-1 bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand
// for themselves; the other 68 (controls, space, DEL..NBSP, soft hyphen) take U+0100 onwards in
// byte order, so that no token text holds whitespace or control characters.
struct ByteMap {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 324> to_byte{};  // indexed by code point; -1 where none

  ByteMap() {
    to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

std::string to_byte_level(std::string_view bytes) {
  const ByteMap& map = byte_map();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char b : bytes)
    append_utf8(map.to_char[static_cast<unsigned char>(b)], out);
  return out;
}

bool from_byte_level(std::string_view token, std::string& out) {
  const ByteMap& map = byte_map();
  std::string bytes;
  while (!token.empty()) {
    const size_t n = utf8_char_len(token);
    if (n == 0) return false;
    const char32_t c = utf8_decode(token, n);
    if (c >= map.to_byte.size() || map.to_byte[c] < 0) return false;
    bytes += static_cast<char>(map.to_byte[c]);
    token.remove_prefix(n);
  }
  out += bytes;
  return true;
}

ByteLevelBpe::ByteLevelBpe(std::unordered_map<std::string, TokenId> vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges, Options options)
    : vocab_(std::move(vocab)), options_(options) {
  const auto id_of = [&](const std::string& token, size_t rank) {
    const auto it = vocab_.find(token);
    if (it == vocab_.end())
      throw std::invalid_argument("[" + std::to_string(rank) + "] ('" + merges[rank].first + "' + '" +
                                  merges[rank].second + "') needs '" + token +
                                  "', which is not in the vocabulary");
    return it->second;
  };
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const TokenId result = id_of(left + right, rank);
    // A pair listed twice takes its last rank, as the tokenizers library's map of merges does.
    merges_.insert_or_assign(pair_key(id_of(left, rank), id_of(right, rank)),
                             Merge{static_cast<uint32_t>(rank), result});
  }
}

void ByteLevelBpe::encode_word(std::string_view word, std::vector<TokenId>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (const auto it = vocab_.find(std::string(word)); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // The word's characters as a linked list of symbols, merged in place.
  struct Symbol {
    TokenId id;
    int prev;
    int next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  bool prev_unknown = false;
  for (size_t pos = 0; pos < word.size();) {
    const size_t n = std::max<size_t>(1, utf8_char_len(word.substr(pos)));
    const auto it = vocab_.find(std::string(word.substr(pos, n)));
    pos += n;
    if (it == vocab_.end()) {
      if (!options_.unk) continue;
      if (!(options_.fuse_unk && prev_unknown)) {
        symbols.push_back({*options_.unk, static_cast<int>(symbols.size()) - 1, -1});
      }
      prev_unknown = true;
      continue;
    }
    symbols.push_back({it->second, static_cast<int>(symbols.size()) - 1, -1});
    prev_unknown = false;
  }
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    symbols[i].next = static_cast<int>(i) + 1;

  // Lowest rank first; equal ranks (the same pair twice) leftmost first.
  struct Candidate {
    uint32_t rank;
    int left;
    TokenId left_id;
    TokenId right_id;
    TokenId result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> agenda;
  const auto consider = [&](int left) {
    if (left < 0) return;
    const int right = symbols[static_cast<size_t>(left)].next;
    if (right < 0) return;
    const TokenId a = symbols[static_cast<size_t>(left)].id;
    const TokenId b = symbols[static_cast<size_t>(right)].id;
    if (const auto it = merges_.find(pair_key(a, b)); it != merges_.end())
      agenda.push({it->second.rank, left, a, b, it->second.result});
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    consider(static_cast<int>(i));

  while (!agenda.empty()) {
    const Candidate top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[static_cast<size_t>(top.left)];
    // Stale: the left symbol was merged away (id -1) or changed, or its neighbour did.
    if (left.id != top.left_id || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    if (right.id != top.right_id) continue;
    left.id = top.result;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.left;
    right.id = -1;
    consider(left.prev);
    consider(top.left);
  }
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[static_cast<size_t>(i)].next)
    out.push_back(symbols[static_cast<size_t>(i)].id);
}

}  // namespace kvserve
