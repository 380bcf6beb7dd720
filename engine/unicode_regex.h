// UnicodeRegex: a regular expression over UTF-8 text with Unicode properties (\p{L}, \p{N}, ...),
// lookahead and inline flags, through PCRE2 - the pre-tokenizer patterns of tokenizer.json files
// are written for Oniguruma, whose syntax for them PCRE2 shares. One difference is removed: \s and
// \S are rewritten to Unicode's White_Space set (engine/unicode_text.h), which PCRE2's \s is not.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace kvserve {

class UnicodeRegex {
 public:
  enum class Syntax { kRegex, kLiteral };
  // Throws std::invalid_argument with PCRE2's message and the offset of the problem.
  explicit UnicodeRegex(std::string_view pattern, Syntax syntax = Syntax::kRegex);
  ~UnicodeRegex();
  UnicodeRegex(UnicodeRegex&& other) noexcept : code_(std::exchange(other.code_, nullptr)) {}
  UnicodeRegex& operator=(UnicodeRegex&&) = delete;
  UnicodeRegex(const UnicodeRegex&) = delete;
  UnicodeRegex& operator=(const UnicodeRegex&) = delete;

  // [begin, end) byte offsets of the successive non-overlapping matches in `text` (well-formed
  // UTF-8), searched left to right; empty matches are left out. Safe to call from many threads.
  // Throws std::runtime_error if PCRE2 gives up (its backtracking limits).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
};

// `pattern` with \s and \S (outside and inside character classes) spelled as Unicode's White_Space
// set. A \S inside a character class has no such spelling and throws std::invalid_argument.
std::string with_unicode_whitespace(std::string_view pattern);

}  // namespace kvserve
