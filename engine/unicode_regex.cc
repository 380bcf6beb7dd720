#include "engine/unicode_regex.h"

#include <cctype>
#include <memory>
#include <stdexcept>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "engine/utf8.h"

namespace kvserve {
namespace {

[[noreturn]] void unsupported(std::string_view what, size_t offset) {
  throw std::invalid_argument(std::string(what) + " (at offset " + std::to_string(offset) +
                              ") is not supported: Oniguruma and PCRE2 read it differently");
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR message[256];
  pcre2_get_error_message(code, message, sizeof message);
  return reinterpret_cast<const char*>(message);
}

}  // namespace

std::string from_oniguruma(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      switch (e) {
        case 's':
          out += "\\p{White_Space}";
          break;
        case 'S':
          out += "\\P{White_Space}";
          break;
        case 'w':
        case 'W':
        case 'b':
        case 'B':
        case 'h':
        case 'H':
          unsupported(std::string("\\") + e, i - 1);
        case 'Q': {  // \Q...\E is literal text: copy it untouched
          const size_t end = pattern.find("\\E", i + 1);
          const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
          out += pattern.substr(i - 1, stop - (i - 1));
          i = stop - 1;
          break;
        }
        default:
          out += c;
          out += e;
      }
      continue;
    }
    if (in_class) {
      if (c == '[') {
        const size_t end = pattern.find(":]", i + 2);  // a POSIX class such as [:alpha:] is fine
        if (i + 1 < pattern.size() && pattern[i + 1] == ':' && end != std::string_view::npos) {
          out += pattern.substr(i, end + 2 - i);
          i = end + 1;
          continue;
        }
        unsupported("a character class inside a class", i);
      }
      if (c == '&' && i + 1 < pattern.size() && pattern[i + 1] == '&') unsupported("&& in a class", i);
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      // A ']' first in the class (after an optional '^') is a literal, not its end.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == '(' && pattern.substr(i, 3) == "(?#") {  // a comment: copy it untouched
      const size_t end = pattern.find(')', i);
      const size_t stop = end == std::string_view::npos ? pattern.size() : end + 1;
      out += pattern.substr(i, stop - i);
      i = stop - 1;
      continue;
    }
    if (c == '(' && pattern.substr(i, 2) == "(?") {
      // Inline options such as (?i: or (?m): extended mode would give whitespace and '#' meaning.
      size_t k = i + 2;
      while (k < pattern.size() &&
             (std::isalpha(static_cast<unsigned char>(pattern[k])) || pattern[k] == '-'))
        ++k;
      if (k < pattern.size() && (pattern[k] == ':' || pattern[k] == ')')) {
        out += "(?";
        for (size_t o = i + 2; o < k; ++o) {
          if (pattern[o] == 'i' || pattern[o] == '-') {
            out += pattern[o];
          } else if (pattern[o] == 'm') {
            out += 's';  // Oniguruma's m lets '.' match a newline: PCRE2's s
          } else {
            unsupported(std::string("the inline option '") + pattern[o] + "'", i);
          }
        }
        i = k - 1;
        continue;
      }
    }
    out += c;
  }
  return out;
}

UnicodeRegex::UnicodeRegex(std::string_view pattern, Syntax syntax) {
  const std::string source = syntax == Syntax::kOniguruma ? from_oniguruma(pattern) : std::string(pattern);
  // PCRE2_UCP gives \p{..} and case folding their Unicode meaning; multiline makes ^ and $ the line
  // anchors they are in Oniguruma. A literal takes neither.
  const uint32_t options =
      PCRE2_UTF | (syntax == Syntax::kLiteral ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options, &error, &offset,
                        nullptr);
  if (code_ == nullptr) {
    throw std::invalid_argument("pattern '" + std::string(pattern) +
                                "' does not compile: " + pcre2_message(error) + " (near offset " +
                                std::to_string(offset) + " of '" + source + "')");
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
  const auto match_at = [&](size_t start, uint32_t options) {
    return pcre2_match(code_, subject, text.size(), start, options | PCRE2_NO_UTF_CHECK, data.get(), nullptr);
  };
  size_t start = 0;
  size_t last_end = std::string_view::npos;  // where the previous reported match ended
  while (start <= text.size()) {
    int rc = match_at(start, 0);
    // The JIT's fixed 32 KiB stack can run out where the interpreter, whose frames live on the
    // heap, does not.
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) rc = match_at(start, PCRE2_NO_JIT);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw std::runtime_error("pattern matching failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end == begin && begin == last_end) {
      // An empty match where the last one ended: step over one character so the search moves on.
      if (begin >= text.size()) break;
      start = begin + std::max<size_t>(1, utf8_char_len(text.substr(begin)));
      continue;
    }
    matches.emplace_back(begin, end);
    last_end = end;
    start = end;
  }
  return matches;
}

}  // namespace kvserve
