// The model half of a byte-level BPE tokenizer (GPT-2, Llama 3, Qwen2): every byte of the text is
// first written as one printable character (GPT-2's reversible byte map), and a word of those
// characters is merged pairwise by rank into vocabulary tokens. engine/hf_tokenizer.cc reads it
// from a tokenizer.json; the pre-tokenization that cuts text into words lives there too.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/block_pool.h"

namespace kvserve {

// `bytes` with every byte written as its byte-level character (UTF-8).
std::string to_byte_level(std::string_view bytes);

// The bytes a token's byte-level characters stand for, appended to `out`; false (and `out`
// unchanged) when some character is not one of the 256, as in an added token's plain text.
bool from_byte_level(std::string_view token, std::string& out);

class ByteLevelBpe {
 public:
  struct Options {
    bool ignore_merges = false;  // a word that is itself a token is taken whole (Llama 3)
    std::optional<TokenId> unk;  // for characters without a token; without one they are dropped
    bool fuse_unk = false;       // consecutive unknown characters become one unk
  };
  // vocab: token text -> id; merges: token-text pairs, highest priority first (a pair listed twice
  // takes its later place). Throws std::invalid_argument starting "[i]" for the first merge i whose
  // parts or result are not in the vocabulary.
  ByteLevelBpe(std::unordered_map<std::string, TokenId> vocab,
               const std::vector<std::pair<std::string, std::string>>& merges, Options options);

  // Appends the ids of one word (byte-level characters).
  void encode_word(std::string_view word, std::vector<TokenId>& out) const;

  const std::unordered_map<std::string, TokenId>& vocab() const { return vocab_; }

 private:
  struct Merge {
    uint32_t rank;
    TokenId result;
  };
  static uint64_t pair_key(TokenId left, TokenId right) {
    return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right);
  }

  std::unordered_map<std::string, TokenId> vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  Options options_;
};

}  // namespace kvserve
