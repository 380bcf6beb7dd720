#include "engine/unicode_regex.h"

#include <memory>
#include <stdexcept>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "engine/unicode_text.h"
#include "engine/utf8.h"

namespace kvserve {

std::string with_unicode_whitespace(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceClassBody) : "[" + std::string(kWhiteSpaceClassBody) + "]";
      } else if (e == 'S') {
        if (in_class)
          throw std::invalid_argument("\\S inside a character class is not supported (at offset " +
                                      std::to_string(i - 1) + ")");
        out += "[^" + std::string(kWhiteSpaceClassBody) + "]";
      } else if (e == 'Q') {  // \Q...\E is literal text: copy it untouched
        const size_t end = pattern.find("\\E", i + 1);
        const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
        out += pattern.substr(i - 1, stop - (i - 1));
        i = stop - 1;
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' first in the class (after an optional '^') is a literal, not its end.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t end = pattern.find(":]", i + 2);  // a POSIX class such as [:alpha:]
      if (end != std::string_view::npos) {
        out += pattern.substr(i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

UnicodeRegex::UnicodeRegex(std::string_view pattern, Syntax syntax) {
  const std::string source =
      syntax == Syntax::kRegex ? with_unicode_whitespace(pattern) : std::string(pattern);
  // PCRE2_UCP gives \p{..}, \w and case folding their Unicode meaning; a literal has none of them.
  const uint32_t options = PCRE2_UTF | (syntax == Syntax::kLiteral ? PCRE2_LITERAL : PCRE2_UCP);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options, &error, &offset,
                        nullptr);
  if (code_ == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    throw std::invalid_argument("pattern '" + std::string(pattern) +
                                "' does not compile: " + reinterpret_cast<const char*>(message) +
                                " (near offset " + std::to_string(offset) + " of '" + source + "')");
  }
  // JIT compilation speeds matching up several times; where it is unavailable PCRE2 interprets.
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

UnicodeRegex::~UnicodeRegex() {
  pcre2_code_free(code_);
}

std::vector<std::pair<size_t, size_t>> UnicodeRegex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  const std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
  if (!data) throw std::bad_alloc();
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(code_, subject, text.size(), start, PCRE2_NO_UTF_CHECK, data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      throw std::runtime_error(std::string("pattern matching failed: ") +
                               reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      start = end;
    } else {  // an empty match: step over one character so the search moves on
      if (begin >= text.size()) break;
      start = begin + std::max<size_t>(1, utf8_char_len(text.substr(begin)));
    }
  }
  return matches;
}

}  // namespace kvserve
