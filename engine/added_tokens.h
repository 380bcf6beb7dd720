// Added tokens of a tokenizer.json ("<|eot_id|>", "<|im_start|>", ...): strings that stand for one
// id wherever they occur in the text, found before any other tokenization, as the tokenizers
// library finds them (leftmost, longest first, then its single_word / lstrip / rstrip rules).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/block_pool.h"

namespace kvserve {

struct AddedToken {
  std::string content;
  TokenId id = 0;
  bool special = false;      // a control token: left out of decoded text
  bool single_word = false;  // only where no word character touches it on either side
  bool lstrip = false;       // takes the whitespace before it
  bool rstrip = false;       // takes the whitespace after it
  bool normalized = false;   // matched in the normalized text rather than the raw text
};

class AddedTokenMatcher {
 public:
  // The tokens to look for (their contents non-empty, well-formed UTF-8).
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  struct Piece {
    std::string_view text;
    std::optional<TokenId> id;  // set for an added token, unset for text between them
  };
  // `text` (well-formed UTF-8) cut into added tokens and the text between them, in order.
  std::vector<Piece> split(std::string_view text) const;

  bool empty() const { return tokens_.empty(); }

 private:
  // A byte trie of the contents: node 0 is the root.
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int token = -1;  // index into tokens_ of the content ending here
  };
  // The longest content that starts at text[pos]: its index into tokens_ and length, or -1.
  std::pair<int, size_t> longest_at(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> trie_;
};

}  // namespace kvserve
