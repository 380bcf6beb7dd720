// UTF-8 helpers shared by the tokenizers: reading well-formed characters, writing code points, and
// repairing ill-formed bytes the way the reference libraries do.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvserve {

inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

// Length of the well-formed UTF-8 character that starts `s` (shortest form, no surrogates, at most
// U+10FFFF), or 0 when it does not start with one.
size_t utf8_char_len(std::string_view s);

// The code point of the well-formed character of `len` bytes (utf8_char_len) at the start of `s`.
char32_t utf8_decode(std::string_view s, size_t len);

// Appends code point `c` (at most U+10FFFF, not a surrogate) as UTF-8.
void append_utf8(char32_t c, std::string& out);

// `bytes` with every maximal ill-formed subsequence replaced by one U+FFFD: the Unicode standard's
// "substitution of maximal subparts", which Rust's String::from_utf8_lossy (Hugging Face
// tokenizers) and Python's decode(errors="replace") follow. An incomplete character at the end is
// one U+FFFD, so a stream decoder holds back at most one.
std::string utf8_lossy(std::string_view bytes);

}  // namespace kvserve
