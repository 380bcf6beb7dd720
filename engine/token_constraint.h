// Structured output: a pattern over bytes (engine/regex_dfa.h) lifted to a model's tokens. At each
// step the sampler may only draw a token whose bytes keep the text generated so far a prefix of
// some match that the model's tokens can finish, and the model's EOS only once the text is a whole
// match; so every output that ends with EOS matches the pattern (one cut by max_tokens or a stop
// string is a prefix of a match).
//
// Everything is computed when a request's pattern is compiled, off the engine thread: the set of
// allowed tokens of every automaton state, as a bitmask over the vocabulary (engine/sampler.h's
// SampleInput::allowed). A step then costs the engine a lookup, and advancing a sequence the walk
// of one token's bytes. Identical masks are stored once (the many states inside a string share
// theirs), and states that no string as long as the longest token tells apart share one walk of
// the token trie (token_constraint.cc says why that is exact). A TokenConstraint is immutable and
// shared by every request with the same pattern (ConstraintCache).
//
// Token-level liveness: a vocabulary may lack single bytes (SentencePiece without byte fallback
// has no token for a lone UTF-8 lead byte, say), so a text the automaton could continue may have
// no token that continues it. Such states are token-dead: a state is token-live when it is
// accepting or some token leads from it to a token-live state, and a token is allowed only when it
// leads to a token-live state. Hence, from every state a sequence can reach, some tokens (then
// EOS) still finish a match: an allowed non-EOS token leads to a state that is complete() or not
// exhausted(), and never to one where generation would be stuck mid-pattern.
#pragma once

#include <array>
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

// A model's tokens as bytes (Tokenizer::token_bytes), in tries so that the tokens sharing a prefix
// are walked through the automaton together: one of the short tokens (at most kShortTokenBytes
// bytes: nearly all of a BPE vocabulary) and one of the few longer ones (runs of spaces or
// punctuation, long words), which TokenConstraint::compile() walks more often. Built once per
// served model.
class TokenVocabulary {
 public:
  static constexpr int kShortTokenBytes = 16;

  // token_bytes[id] for every id below vocab_size (ids past its end, and empty entries, are never
  // allowed: control tokens, padding rows of the LM head); eos_ids end a complete match.
  TokenVocabulary(std::vector<std::string> token_bytes, int vocab_size, std::vector<TokenId> eos_ids);
  static std::shared_ptr<const TokenVocabulary> from_tokenizer(const Tokenizer& tokenizer, int vocab_size,
                                                               std::vector<TokenId> eos_ids);

  int vocab_size() const { return vocab_size_; }
  int mask_words() const { return (vocab_size_ + 31) / 32; }
  const std::string& bytes(TokenId id) const { return token_bytes_[static_cast<size_t>(id)]; }
  std::span<const TokenId> eos_ids() const { return eos_ids_; }

  // The longest token's length in bytes: a state's allowed set depends on what the automaton does
  // over that many bytes only (over min(max_token_bytes(), kShortTokenBytes) for the short tokens).
  int max_token_bytes() const { return max_token_bytes_; }
  bool has_long_tokens() const { return max_token_bytes_ > kShortTokenBytes; }
  // True when some token is exactly the one byte `byte`.
  bool has_byte_token(uint8_t byte) const { return has_byte_token_[byte]; }

  enum class Tokens { kAll, kShort, kLong };
  // Sets in `mask` the bit of every token (of `which`) whose bytes lead from `state` to a state s
  // of `dfa` with live[s] != 0. Returns the number of trie nodes visited (the work done, for the
  // compile budget).
  size_t add_allowed_tokens(const RegexDfa& dfa, int32_t state, std::span<const uint8_t> live,
                            std::span<uint32_t> mask, Tokens which = Tokens::kAll) const;
  // Appends to `targets` every state other than kDead that some token leads to from `state`, each
  // once (`seen`, num_states() entries, is scratch: it must be all zero, and is again on return).
  // Returns the number of trie nodes visited.
  size_t add_token_targets(const RegexDfa& dfa, int32_t state, std::vector<uint8_t>& seen,
                           std::vector<int32_t>* targets) const;

 private:
  struct Trie {
    struct Node {
      uint32_t first_edge = 0;  // edges[first_edge, first_edge + num_edges)
      uint32_t num_edges = 0;
      uint32_t first_token = 0;  // tokens[first_token, first_token + num_tokens): tokens ending here
      uint32_t num_tokens = 0;
    };
    struct Edge {
      uint8_t byte;
      uint32_t child;
    };
    std::vector<Node> nodes;  // nodes[0] is the root (the empty prefix)
    std::vector<Edge> edges;
    std::vector<TokenId> tokens;

    // The trie of the tokens whose length is in [min_bytes, max_bytes].
    static Trie build(const std::vector<std::string>& token_bytes, size_t min_bytes, size_t max_bytes);
    // Depth-first from `state`, pruning at kDead; calls on_node(dfa_state, first, end) at every
    // node where tokens end (tokens[first, end)). Returns the nodes visited.
    template <typename OnNode>
    size_t walk(const RegexDfa& dfa, int32_t state, OnNode&& on_node) const;
  };

  std::vector<std::string> token_bytes_;
  int vocab_size_;
  std::vector<TokenId> eos_ids_;
  Trie short_;  // tokens of 1 to kShortTokenBytes bytes
  Trie long_;   // the longer ones
  int max_token_bytes_ = 0;
  std::array<bool, 256> has_byte_token_{};
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
  // compiler refuses, one over the limits, or one that no token of the model can begin (so that
  // tokens can go on to a whole match: a text that only bytes no token spells would finish does
  // not count).
  static Status compile(std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
                        const ConstraintLimits& limits, std::shared_ptr<const TokenConstraint>* out);
  // The same constraint, computed the slow way: one walk of the token trie from every live state
  // instead of one per class of states (compile()'s sharing). The reference for tests and
  // benchmarks; the server uses compile().
  static Status compile_per_state(std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
                                  const ConstraintLimits& limits,
                                  std::shared_ptr<const TokenConstraint>* out);

  int32_t start() const { return dfa_.start(); }
  // The tokens that may come next in `state` (a mask of vocab().mask_words() words). Empty for
  // kDead; all zero when nothing may follow (a complete match and a model without EOS; or a state
  // the vocabulary cannot finish a match from, which no allowed token leads to): the engine ends
  // the request there.
  std::span<const uint32_t> allowed(int32_t state) const;
  // True when allowed(state) is all zero (precomputed, so the engine need not scan the mask): nothing
  // may follow, and the engine ends the request. Also true for kDead. A state reached by allowed
  // tokens is exhausted only when it is complete(), the model has no EOS, and no token continues
  // the match.
  bool exhausted(int32_t state) const {
    return state == kDead || (flags_[static_cast<size_t>(state)] & kExhausted) != 0;
  }
  // The state after `token`: kDead when the token was not allowed (its bytes lead the automaton
  // nowhere, or to a token-dead state). EOS leads to kDead too: the request ends with it.
  int32_t advance(int32_t state, TokenId token) const;
  bool complete(int32_t state) const { return state != kDead && dfa_.accepting(state); }

  const TokenVocabulary& vocab() const { return *vocab_; }
  size_t num_states() const { return mask_of_state_.size(); }
  size_t num_distinct_masks() const { return masks_.size() / static_cast<size_t>(vocab_->mask_words()); }
  size_t memory_bytes() const;

 private:
  RegexDfa dfa_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  std::vector<uint32_t> masks_;             // distinct masks, mask_words() each
  std::vector<uint32_t> mask_of_state_;     // index into masks_ (in masks) per DFA state
  static constexpr uint8_t kExhausted = 1;  // the mask is all zero
  static constexpr uint8_t kTokenDead = 2;  // no token can finish a match from here: never entered
  std::vector<uint8_t> flags_;              // per DFA state

  static Status compile_impl(std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
                             const ConstraintLimits& limits, bool share_by_class,
                             std::shared_ptr<const TokenConstraint>* out);
};

// Compiled constraints by pattern, so that requests with the same schema compile it once: least
// recently used ones are dropped past max_bytes. A pattern that fails to compile is kept too, with
// its Status (compiling is deterministic), so that a client resending it does not cost the whole
// compile budget each time; such an entry counts kFailureBytes plus twice its pattern's length (the
// entry and the index each hold it). Thread-safe; two requests that miss on the same pattern at
// once may both compile it (the second result wins, both are correct).
class ConstraintCache {
 public:
  ConstraintCache(std::shared_ptr<const TokenVocabulary> vocab, ConstraintLimits limits,
                  size_t max_bytes = 256u << 20);
  static constexpr size_t kFailureBytes = 256;

  // The compiled constraint of `pattern` in *out, or the error compiling it gave (then *out is left
  // as it was), cached or not.
  Status get(const std::string& pattern, std::shared_ptr<const TokenConstraint>* out);
  size_t size() const;  // entries, failed ones included

 private:
  struct Entry {
    std::string pattern;
    std::shared_ptr<const TokenConstraint> constraint;  // null when compiling failed
    Status status;                                      // why, then
    size_t bytes = 0;                                   // what it counts toward max_bytes
  };
  std::shared_ptr<const TokenVocabulary> vocab_;
  ConstraintLimits limits_;
  size_t max_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> by_pattern_;
  size_t bytes_ = 0;
};

}  // namespace kvserve
