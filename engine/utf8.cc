#include "engine/utf8.h"

namespace kvserve {
namespace {

// How many bytes of `s` form the longest prefix of a well-formed character (Unicode table 3-7):
// the character's length when it is complete, fewer when it is cut short or broken, and at least
// 1 (a byte that cannot start a character is a maximal subpart on its own).
size_t well_formed_prefix(std::string_view s, bool* complete) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  *complete = lead < 0x80;
  if (lead < 0x80) return 1;
  size_t need;                         // continuation bytes after the lead
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the first continuation byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 2;
    if (lead == 0xE0) lo = 0xA0;  // overlong
    if (lead == 0xED) hi = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 3;
    if (lead == 0xF0) lo = 0x90;  // overlong
    if (lead == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 1;
  }
  size_t have = 1;
  for (; have <= need && have < s.size(); ++have) {
    const unsigned char c = byte(have);
    const bool ok = have == 1 ? c >= lo && c <= hi : c >= 0x80 && c <= 0xBF;
    if (!ok) break;
  }
  *complete = have == need + 1;
  return have;
}

}  // namespace

size_t utf8_char_len(std::string_view s) {
  if (s.empty()) return 0;
  bool complete;
  const size_t n = well_formed_prefix(s, &complete);
  return complete ? n : 0;
}

char32_t utf8_decode(std::string_view s, size_t len) {
  const auto byte = [&](size_t i) { return static_cast<char32_t>(static_cast<unsigned char>(s[i])); };
  switch (len) {
    case 1:
      return byte(0);
    case 2:
      return (byte(0) & 0x1F) << 6 | (byte(1) & 0x3F);
    case 3:
      return (byte(0) & 0x0F) << 12 | (byte(1) & 0x3F) << 6 | (byte(2) & 0x3F);
    default:
      return (byte(0) & 0x07) << 18 | (byte(1) & 0x3F) << 12 | (byte(2) & 0x3F) << 6 | (byte(3) & 0x3F);
  }
}

void append_utf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  while (!bytes.empty()) {
    bool complete;
    const size_t n = well_formed_prefix(bytes, &complete);
    if (complete) {
      out += bytes.substr(0, n);
    } else {
      out += kReplacementCharacter;
    }
    bytes.remove_prefix(n);
  }
  return out;
}

}  // namespace kvserve
