// Structured output: a pattern over bytes (engine/regex_dfa.h) lifted to a model's tokens. At each
// step the sampler may only draw a token whose bytes keep the text generated so far a prefix of
// some match, and the model's EOS only once the text is a whole match; so every output that ends
// with EOS matches the pattern (one cut by max_tokens or a stop string is a prefix of a match).
//
// Everything is computed when a request's pattern is compiled, off the engine thread: the set of
// allowed tokens of every automaton state, as a bitmask over the vocabulary (engine/sampler.h's
// SampleInput::allowed). A step then costs the engine a lookup, and advancing a sequence the walk
// of one token's bytes. Identical masks are stored once (the many states inside a string share
// theirs). A TokenConstraint is immutable and shared by every request with the same pattern
// (ConstraintCache).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/block_pool.h"
#include "engine/regex_dfa.h"
#include "engine/status.h"

namespace kvserve {

class Tokenizer;

// A model's tokens as bytes (Tokenizer::token_bytes), in a trie so that the tokens sharing a
// prefix are walked through the automaton together. Built once per served model.
class TokenVocabulary {
 public:
  // token_bytes[id] for every id below vocab_size (ids past its end, and empty entries, are never
  // allowed: control tokens, padding rows of the LM head); eos_ids end a complete match.
  TokenVocabulary(std::vector<std::string> token_bytes, int vocab_size, std::vector<TokenId> eos_ids);
  static std::shared_ptr<const TokenVocabulary> from_tokenizer(const Tokenizer& tokenizer, int vocab_size,
                                                               std::vector<TokenId> eos_ids);

  int vocab_size() const { return vocab_size_; }
  int mask_words() const { return (vocab_size_ + 31) / 32; }
  const std::string& bytes(TokenId id) const { return token_bytes_[static_cast<size_t>(id)]; }
  std::span<const TokenId> eos_ids() const { return eos_ids_; }

  // Sets in `mask` the bit of every token whose bytes lead from `state` to a live state of `dfa`.
  // Returns the number of trie nodes visited (the work done, for the compile budget).
  size_t add_allowed_tokens(const RegexDfa& dfa, int32_t state, std::span<uint32_t> mask) const;

 private:
  struct Node {
    uint32_t first_edge = 0;  // edges_[first_edge, first_edge + num_edges)
    uint32_t num_edges = 0;
    uint32_t first_token = 0;  // node_tokens_[first_token, first_token + num_tokens): tokens ending here
    uint32_t num_tokens = 0;
  };
  struct Edge {
    uint8_t byte;
    uint32_t child;
  };
  std::vector<std::string> token_bytes_;
  int vocab_size_;
  std::vector<TokenId> eos_ids_;
  std::vector<Node> nodes_;  // nodes_[0] is the root (the empty prefix)
  std::vector<Edge> edges_;
  std::vector<TokenId> node_tokens_;
};

struct ConstraintLimits {
  RegexLimits regex;
  size_t max_mask_bytes = 64u << 20;     // distinct masks of one pattern, all together
  size_t max_trie_visits = 400'000'000;  // compile work: (state, trie node) pairs walked
};

class TokenConstraint {
 public:
  static constexpr int32_t kDead = RegexDfa::kDead;

  // Compiles `pattern` for `vocab`. InvalidArgument (with what to change) for a pattern the regex
  // compiler refuses, one over the limits, or one that no token of the model can begin.
  static Status compile(std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
                        const ConstraintLimits& limits, std::shared_ptr<const TokenConstraint>* out);

  int32_t start() const { return dfa_.start(); }
  // The tokens that may come next in `state` (a mask of vocab().mask_words() words). Empty for
  // kDead; all zero when nothing may follow (a complete match and a model without EOS, or a text
  // the vocabulary cannot go on spelling): the engine ends the request there.
  std::span<const uint32_t> allowed(int32_t state) const;
  // The state after `token`: kDead when the token was not allowed. EOS leads to kDead too: the
  // request ends with it.
  int32_t advance(int32_t state, TokenId token) const;
  bool complete(int32_t state) const { return state != kDead && dfa_.accepting(state); }

  const TokenVocabulary& vocab() const { return *vocab_; }
  size_t num_states() const { return mask_of_state_.size(); }
  size_t num_distinct_masks() const { return masks_.size() / static_cast<size_t>(vocab_->mask_words()); }
  size_t memory_bytes() const;

 private:
  RegexDfa dfa_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  std::vector<uint32_t> masks_;          // distinct masks, mask_words() each
  std::vector<uint32_t> mask_of_state_;  // index into masks_ (in masks) per DFA state
};

// Compiled constraints by pattern, so that requests with the same schema compile it once: least
// recently used ones are dropped past max_bytes. Thread-safe; two requests that miss on the same
// pattern at once may both compile it (the second result wins, both are correct).
class ConstraintCache {
 public:
  ConstraintCache(std::shared_ptr<const TokenVocabulary> vocab, ConstraintLimits limits,
                  size_t max_bytes = 256u << 20);
  Status get(const std::string& pattern, std::shared_ptr<const TokenConstraint>* out);
  size_t size() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const TokenConstraint>>;
  std::shared_ptr<const TokenVocabulary> vocab_;
  ConstraintLimits limits_;
  size_t max_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> by_pattern_;
  size_t bytes_ = 0;
};

}  // namespace kvserve
