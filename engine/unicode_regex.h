// UnicodeRegex: a regular expression over UTF-8 text with Unicode properties (\p{L}, \p{N}, ...),
// lookaround and inline flags, through PCRE2. The pre-tokenizer patterns of tokenizer.json files
// are written for Oniguruma (what Hugging Face tokenizers runs them with), whose syntax PCRE2
// mostly shares; where the two differ, the pattern is translated or refused (from_oniguruma), and
// matches are enumerated as Oniguruma's iterator does, empty ones included.
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
  enum class Syntax { kOniguruma, kLiteral };
  // Throws std::invalid_argument saying what in the pattern is wrong or not supported.
  explicit UnicodeRegex(std::string_view pattern, Syntax syntax = Syntax::kOniguruma);
  ~UnicodeRegex();
  UnicodeRegex(UnicodeRegex&& other) noexcept : code_(std::exchange(other.code_, nullptr)) {}
  UnicodeRegex& operator=(UnicodeRegex&&) = delete;
  UnicodeRegex(const UnicodeRegex&) = delete;
  UnicodeRegex& operator=(const UnicodeRegex&) = delete;

  // [begin, end) byte offsets of the successive non-overlapping matches in `text` (well-formed
  // UTF-8), left to right. An empty match counts (a zero-width pattern cuts text) unless it sits
  // where the previous match ended. Safe to call from many threads. Throws std::runtime_error if
  // PCRE2 gives up (its backtracking limits).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
};

// An Oniguruma pattern (Ruby syntax, as tokenizers compiles it) as PCRE2 reads it the same way:
// \s and \S become Unicode's White_Space property, which is Oniguruma's meaning and not PCRE2's
// (PCRE2's \s also takes U+180E). Constructs whose meaning differs and that no tokenizer we know
// uses are refused with std::invalid_argument: \w \W \b \B \h \H, classes nested in classes and
// && (set operations in Oniguruma), and inline options other than i and m (m, '.' matching a
// newline, becomes PCRE2's s). ^ and $ are line anchors in both once PCRE2 runs multiline
// (UnicodeRegex does).
std::string from_oniguruma(std::string_view pattern);

}  // namespace kvserve
