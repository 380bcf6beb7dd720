#include "engine/unicode_text.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <unictype.h>
#include <uninorm.h>

namespace kvserve {

bool is_unicode_whitespace(char32_t c) {
  return uc_is_property_white_space(c);
}

bool is_word_character(char32_t c) {
  return uc_is_property_alphabetic(c) || uc_is_general_category(c, UC_CATEGORY_M) ||
         uc_is_general_category(c, UC_CATEGORY_Nd) || uc_is_general_category(c, UC_CATEGORY_Pc) ||
         uc_is_property_join_control(c);
}

std::string normalize_unicode(std::string_view text, NormalizationForm form) {
  uninorm_t nf = UNINORM_NFC;
  switch (form) {
    case NormalizationForm::kNFC:
      break;
    case NormalizationForm::kNFD:
      nf = UNINORM_NFD;
      break;
    case NormalizationForm::kNFKC:
      nf = UNINORM_NFKC;
      break;
    case NormalizationForm::kNFKD:
      nf = UNINORM_NFKD;
      break;
  }
  if (text.empty()) return {};
  size_t length = 0;
  const std::unique_ptr<uint8_t, decltype(&std::free)> out(
      u8_normalize(nf, reinterpret_cast<const uint8_t*>(text.data()), text.size(), nullptr, &length),
      &std::free);
  if (!out) throw std::runtime_error(std::string("Unicode normalization failed: ") + std::strerror(errno));
  return std::string(reinterpret_cast<const char*>(out.get()), length);
}

}  // namespace kvserve
