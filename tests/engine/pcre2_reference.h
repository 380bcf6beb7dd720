// PCRE2 as the independent regex reference of the tests of engine/regex_dfa.h and of what compiles
// to it (engine/json_schema_regex.h, engine/token_constraint.h). PCRE2 is a mature backtracking
// matcher that shares no code and no construction with the DFA, and the dialect is by design the
// common subset of ECMAScript and PCRE, so where the two agree on many texts that says something
// about the DFA, not about a helper written alongside it. PCRE2 reads the dialect with the same
// meaning given:
//   - PCRE2_UTF: '.', classes and negated escapes take whole characters, and no invalid UTF-8
//     ever matches (PCRE2 refuses such a subject; here it is answered "no" before PCRE2 is asked);
//   - PCRE2_ALT_BSUX: \uHHHH, and exactly two hex digits after \x, as ECMAScript reads them;
//   - \s and \S spelt out as ECMAScript's spaces (PCRE2's own \s is ASCII only without PCRE2_UCP)
//     and \v as the VT character (PCRE2's \v is a class of vertical spaces);
//   - newline LF, so that '.' excludes \n only;
//   - the whole text anchored, with nothing matching before a final newline the way PCRE2's $
//     does: PCRE2_ANCHORED | PCRE2_ENDANCHORED (with PCRE2_DOLLAR_ENDONLY), or ^(?:pattern)\z.
// Each user takes the preset below that it was written against; dialect() is the complete reading.
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <gtest/gtest.h>
#include <pcre2.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvserve::testing {

class Pcre2Reference {
 public:
  // How the pattern is handed to PCRE2.
  struct Options {
    bool spell_out_spaces = false;  // \s, \S, \v rewritten as above
    bool wrap_anchors = false;      // compiled as ^(?:pattern)\z
    bool newline_lf = false;        // PCRE2_NEWLINE_LF set in a compile context (else the build's)
    uint32_t compile_options = PCRE2_UTF;
    uint32_t match_options = 0;
  };

  // engine/regex_dfa.h's dialect read completely: every item above, anchored at compile time.
  static constexpr Options dialect() {
    return {.spell_out_spaces = true,
            .newline_lf = true,
            .compile_options =
                PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX};
  }
  // PCRE2's own syntax in UTF mode, anchored at both ends at match time: for regexes that keep to
  // what both read alike without spelling anything out (json_schema_to_regex, regex_escape).
  static constexpr Options utf() {
    return {.compile_options = PCRE2_UTF, .match_options = PCRE2_ANCHORED | PCRE2_ENDANCHORED};
  }
  // UTF mode with ECMAScript's \uHHHH and \xHH, anchored in the pattern as ^(?:pattern)\z: for
  // patterns without \s or \v that viable_prefix() is asked about.
  static constexpr Options utf_alt_bsux() {
    return {.wrap_anchors = true, .compile_options = PCRE2_UTF | PCRE2_ALT_BSUX};
  }

  Pcre2Reference(std::string_view pattern, const Options& options) : match_options_(options.match_options) {
    std::string source(pattern);
    if (options.spell_out_spaces && !spell_out_spaces(pattern, &source)) {
      error_ = "no PCRE2 spelling for \\S inside a class: " + std::string(pattern);
      return;
    }
    if (options.wrap_anchors) source = "^(?:" + source + ")\\z";
    pcre2_compile_context* context = nullptr;
    if (options.newline_lf) {
      context = pcre2_compile_context_create(nullptr);
      pcre2_set_newline(context, PCRE2_NEWLINE_LF);
    }
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options.compile_options,
                          &error, &offset, context);
    pcre2_compile_context_free(context);
    if (code_ == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      error_ = "PCRE2 cannot compile " + source + ": " + reinterpret_cast<const char*>(message) +
               " at offset " + std::to_string(offset);
      return;
    }
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  ~Pcre2Reference() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  Pcre2Reference(const Pcre2Reference&) = delete;
  Pcre2Reference& operator=(const Pcre2Reference&) = delete;

  bool ok() const { return code_ != nullptr; }
  const std::string& error() const { return error_; }

  // The whole text matches. Invalid UTF-8 never does.
  bool matches(std::string_view text) const {
    if (!ok() || !valid_utf8(text)) return false;
    const int rc = run(text, 0);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) ADD_FAILURE() << "pcre2_match returned " << rc << " on " << text;
    return rc >= 0;
  }

  // Some continuation of the text matches: it matches whole or partially (PCRE2_PARTIAL_HARD: the
  // subject ended while a match was still possible). PCRE2 refuses a subject that ends inside a
  // UTF-8 character, which a token may well do ("\xC3" of "é"): such a text is viable when some
  // completion of the character is.
  bool viable_prefix(std::string_view text) const {
    if (!ok()) return false;
    if (missing_utf8_bytes(text) > 0) {
      for (int b = 0x80; b <= 0xBF; ++b) {
        if (viable_prefix(std::string(text) + static_cast<char>(b))) return true;
      }
      return false;
    }
    if (!valid_utf8(text)) return false;
    const int rc = run(text, PCRE2_PARTIAL_HARD);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && rc != PCRE2_ERROR_PARTIAL) {
      ADD_FAILURE() << "pcre2_match returned " << rc << " on " << text;
    }
    return rc >= 0 || rc == PCRE2_ERROR_PARTIAL;
  }

  // Well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), checked here
  // rather than with engine/utf8.h so that the reference shares nothing with the engine.
  static bool valid_utf8(std::string_view text) {
    for (size_t i = 0; i < text.size();) {
      const auto lead = static_cast<unsigned char>(text[i]);
      const size_t n = lead < 0x80                   ? 1
                       : lead >= 0xC2 && lead < 0xE0 ? 2
                       : lead >= 0xE0 && lead < 0xF0 ? 3
                       : lead >= 0xF0 && lead < 0xF5 ? 4
                                                     : 0;
      if (n == 0 || i + n > text.size()) return false;
      char32_t c = n == 1 ? lead : lead & (0x7F >> n);
      for (size_t k = 1; k < n; ++k) {
        const auto next = static_cast<unsigned char>(text[i + k]);
        if ((next & 0xC0) != 0x80) return false;
        c = (c << 6) | (next & 0x3F);
      }
      constexpr char32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
      if (c < kSmallest[n] || (c >= 0xD800 && c < 0xE000) || c > 0x10FFFF) return false;
      i += n;
    }
    return true;
  }

  // How many continuation bytes the text's last character still lacks (0 when it is complete or
  // not UTF-8 at all).
  static int missing_utf8_bytes(std::string_view text) {
    for (size_t back = 1; back <= 3 && back <= text.size(); ++back) {
      const auto c = static_cast<unsigned char>(text[text.size() - back]);
      if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
      const int length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      return std::max(0, length - static_cast<int>(back));
    }
    return 0;
  }

 private:
  // ECMAScript's \s, in PCRE2 syntax.
  static constexpr std::string_view kSpaceItems =
      "\\t\\n\\x0b\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff";

  // The pattern with \s and \S spelt out and \v as \x0b; false when \S sits inside a class, where
  // no spelling exists. Everything else is copied as it is.
  static bool spell_out_spaces(std::string_view pattern, std::string* out) {
    out->clear();
    bool in_class = false;
    for (size_t i = 0; i < pattern.size(); ++i) {
      const char c = pattern[i];
      if (c == '\\' && i + 1 < pattern.size()) {
        const char e = pattern[++i];
        if (e == 's') {
          *out += in_class ? std::string(kSpaceItems) : "[" + std::string(kSpaceItems) + "]";
        } else if (e == 'S') {
          if (in_class) return false;
          *out += "[^" + std::string(kSpaceItems) + "]";
        } else if (e == 'v') {
          *out += "\\x0b";
        } else {
          *out += c;
          *out += e;
        }
        continue;
      }
      if (c == '[' && !in_class) {
        in_class = true;
        *out += c;
        if (i + 1 < pattern.size() && pattern[i + 1] == '^') *out += pattern[++i];
        continue;
      }
      if (c == ']' && in_class) in_class = false;
      *out += c;
    }
    return true;
  }

  int run(std::string_view text, uint32_t options) const {
    return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                       match_options_ | options, data_, nullptr);
  }

  uint32_t match_options_ = 0;
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
  std::string error_;
};

}  // namespace kvserve::testing
