// Unicode character properties and normalization forms the tokenizer.json reader needs, with the
// definitions Hugging Face tokenizers (Rust) uses, so that text splits exactly as it does there.
#pragma once

#include <string>
#include <string_view>

namespace kvserve {

// The White_Space property (Rust's char::is_whitespace, Oniguruma's \s for Unicode text).
bool is_unicode_whitespace(char32_t c);

// The same set as a PCRE2 character-class body (no brackets): PCRE2's own \s differs from it
// (it also matches U+180E), so patterns are rewritten to use this one (engine/unicode_regex.h).
inline constexpr std::string_view kWhiteSpaceClassBody =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"
    "\\x{3000}";

// A word character as Unicode regular expressions define \w (and the tokenizers library tests an
// added token's single_word rule with): Alphabetic, a mark, a decimal digit, a connector
// punctuation such as '_', or a join control.
bool is_word_character(char32_t c);

enum class NormalizationForm { kNFC, kNFD, kNFKC, kNFKD };

// `text` (well-formed UTF-8) in the given Unicode normalization form, through GNU libunistring.
std::string normalize_unicode(std::string_view text, NormalizationForm form);

}  // namespace kvserve
