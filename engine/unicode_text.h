// Unicode character properties and normalization forms the tokenizer.json reader needs, with the
// definitions Hugging Face tokenizers (Rust) uses, so that text splits exactly as it does there.
// The data is GNU libunistring's (Unicode 14 in Debian 12's 1.0); characters assigned since read as
// unassigned, where the reference may know them.
#pragma once

#include <string>
#include <string_view>

namespace kvserve {

// The White_Space property (Rust's char::is_whitespace, Oniguruma's \s for Unicode text).
bool is_unicode_whitespace(char32_t c);

// A word character as Unicode regular expressions define \w (and the tokenizers library tests an
// added token's single_word rule with): Alphabetic, a mark, a decimal digit, a connector
// punctuation such as '_', or a join control.
bool is_word_character(char32_t c);

enum class NormalizationForm { kNFC, kNFD, kNFKC, kNFKD };

// `text` (well-formed UTF-8) in the given Unicode normalization form, through GNU libunistring.
std::string normalize_unicode(std::string_view text, NormalizationForm form);

}  // namespace kvserve
