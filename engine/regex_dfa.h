// RegexDfa: a regular expression compiled to a deterministic automaton over bytes. Constrained
// decoding (engine/token_constraint.h) walks it to decide which tokens may come next, so that the
// generated text as a whole matches the pattern.
//
// Dialect: the common subset of ECMAScript and PCRE, so that a pattern means here what it means
// in the engines clients test it with. Matching is always of the whole text (as if anchored at
// both ends); a leading ^ and a trailing $ are accepted and change nothing.
//   - literal characters (any UTF-8), escapes \\ \. \* \+ \? \( \) \[ \] \{ \} \| \^ \$ \/ \- (a
//     backslash before any other ASCII punctuation is that character too) and \n \r \t \f
//     \v (VT, as in ECMAScript) \0, \xHH, \uHHHH (a code point, UTF-8 encoded; a surrogate pair
//     such as \uD83D\uDE00 outside a class is one character);
//   - . (any character except \n), \d \D \w \W \s \S (ASCII meanings, as ECMAScript without the
//     u flag reads \d and \w; \s also takes the Unicode spaces ECMAScript lists);
//   - classes [abc] [a-z] [^...] with escapes and \d \w \s (and their negations) inside;
//   - groups (...) and (?:...) (both only group: there is nothing to capture), alternation |;
//   - quantifiers * + ? {n} {n,} {n,m} (greedy; a lazy or possessive suffix is refused since a
//     whole-text match does not depend on it).
// Refused with an error naming the position and the construct: backreferences, lookaround, named
// groups, inline flags, ^ or $ anywhere else, a repeat count above RegexLimits::max_repeat.
// A class, ., or a negated escape matches whole UTF-8 characters: the automaton never accepts
// invalid UTF-8, whatever bytes a token holds.
// The automaton is minimal, its states numbered breadth first from the start (0) in byte order, so
// the same language always gives the same table.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/status.h"

namespace kvserve {

struct RegexLimits {
  int max_pattern_bytes = 64 * 1024;
  int max_repeat = 1000;        // largest n or m in {n}, {n,}, {n,m}
  int max_nfa_states = 200000;  // after repeats are expanded
  int max_dfa_states = 10000;   // a pattern needing more is refused (say what to simplify), as is
                                // one whose construction costs over 1000 steps per allowed state
};

class RegexDfa {
 public:
  static constexpr int32_t kDead = -1;

  // Compiles `pattern`. On error returns InvalidArgument with a message that names the byte
  // offset and what to change, and leaves *out untouched.
  static Status compile(std::string_view pattern, const RegexLimits& limits, RegexDfa* out);

  int32_t start() const { return start_; }
  int num_states() const { return static_cast<int>(accepting_.size()); }
  // The state after `byte`, or kDead when no accepted text starts with what has been read so far.
  // Every live state can still reach an accepting state (dead ends are pruned at compile time).
  int32_t next(int32_t state, uint8_t byte) const { return table_[static_cast<size_t>(state) * 256 + byte]; }
  // True when the text read so far matches the whole pattern.
  bool accepting(int32_t state) const { return accepting_[static_cast<size_t>(state)] != 0; }
  // Walks `bytes` from `state`; kDead as soon as a byte leads nowhere.
  int32_t walk(int32_t state, std::string_view bytes) const {
    for (const char c : bytes) {
      if (state == kDead) break;
      state = next(state, static_cast<uint8_t>(c));
    }
    return state;
  }
  // True when the whole text matches (a convenience for tests and checks).
  bool matches(std::string_view text) const {
    const int32_t s = walk(start_, text);
    return s != kDead && accepting(s);
  }

 private:
  int32_t start_ = kDead;
  std::vector<int32_t> table_;      // num_states x 256
  std::vector<uint8_t> accepting_;  // num_states
};

}  // namespace kvserve
