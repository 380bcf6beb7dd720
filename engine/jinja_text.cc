#include "engine/jinja_text.h"

#include <unicase.h>
#include <uninorm.h>

#include <unictype.h>
#include <algorithm>
#include <cstdlib>

#include "engine/jinja_value.h"
#include "engine/utf8.h"

namespace kvserve::jinja::text {
namespace {

constexpr char32_t kEscapedByteBase = 0xDC80;  // Python's surrogateescape: lone byte b -> U+DC00 + b

bool is_cased(char32_t c) {
  return uc_is_property_lowercase(c) || uc_is_property_uppercase(c) ||
         uc_is_general_category(c, UC_CATEGORY_Lt);
}

char32_t map_case(char32_t c, ucs4_t (*f)(ucs4_t)) {
  return c >= kEscapedByteBase && c <= kEscapedByteBase + 0x7F ? c : static_cast<char32_t>(f(c));
}

// Python's str.upper() / lower() use full case mappings ("straße" -> "STRASSE"): libunistring's
// u8_ functions do too. Text with bytes that are not UTF-8 maps per code point instead.
std::string full_case(std::string_view s,
                      uint8_t* (*f)(const uint8_t*, size_t, const char*, uninorm_t, uint8_t*, size_t*),
                      ucs4_t (*simple)(ucs4_t)) {
  size_t n = 0;
  uint8_t* mapped = f(reinterpret_cast<const uint8_t*>(s.data()), s.size(), nullptr, nullptr, nullptr, &n);
  if (mapped) {
    std::string out(reinterpret_cast<const char*>(mapped), n);
    std::free(mapped);
    return out;
  }
  std::u32string u = decode(s);
  for (char32_t& c : u)
    c = map_case(c, simple);
  return encode(u);
}

}  // namespace

std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const size_t len = utf8_char_len(s);
    if (len == 0) {
      out += static_cast<char32_t>(0xDC00 + static_cast<unsigned char>(s[0]));
      s.remove_prefix(1);
    } else {
      out += utf8_decode(s, len);
      s.remove_prefix(len);
    }
  }
  return out;
}

std::string encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c >= kEscapedByteBase && c <= 0xDCFF)
      out += static_cast<char>(c - 0xDC00);
    else
      append_utf8(c, out);
  }
  return out;
}

bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

size_t length(std::string_view s) {
  return decode(s).size();
}

std::string strip(std::string_view s, const std::string* chars, bool left, bool right) {
  const std::u32string u = decode(s);
  const std::u32string set = chars ? decode(*chars) : std::u32string();
  const auto strippable = [&](char32_t c) {
    return chars ? set.find(c) != std::u32string::npos : is_space(c);
  };
  size_t b = 0;
  size_t e = u.size();
  if (left)
    while (b < e && strippable(u[b]))
      ++b;
  if (right)
    while (e > b && strippable(u[e - 1]))
      --e;
  return encode(std::u32string_view(u).substr(b, e - b));
}

std::string upper(std::string_view s) {
  return full_case(s, u8_toupper, uc_toupper);
}

std::string lower(std::string_view s) {
  return full_case(s, u8_tolower, uc_tolower);
}

std::string capitalize(std::string_view s) {
  const size_t first = std::max<size_t>(1, utf8_char_len(s));  // a stray byte stays as it is
  if (s.empty()) return "";
  return full_case(s.substr(0, first), u8_totitle, uc_totitle) + lower(s.substr(first));
}

std::string title_python(std::string_view s) {
  std::u32string u = decode(s);
  bool previous_cased = false;
  for (char32_t& c : u) {
    const bool cased = is_cased(c);
    c = map_case(c, previous_cased ? uc_tolower : uc_totitle);
    previous_cased = cased;
  }
  return encode(u);
}

std::string title_jinja(std::string_view s) {
  std::u32string u = decode(s);
  bool word_start = true;
  for (char32_t& c : u) {
    const bool separator = is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (!separator) c = map_case(c, word_start ? uc_toupper : uc_tolower);
    word_start = separator;
  }
  return encode(u);
}

std::vector<std::string> split(std::string_view s, const std::string* sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    size_t from = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      const size_t at = s.find(*sep, from);
      if (at == std::string_view::npos) break;
      out.emplace_back(s.substr(from, at - from));
      check_list_size(out.size());
      from = at + sep->size();
    }
    out.emplace_back(s.substr(from));
    return out;
  }
  const std::u32string u = decode(s);
  size_t i = 0;
  while (true) {
    while (i < u.size() && is_space(u[i]))
      ++i;
    if (i == u.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      out.push_back(encode(std::u32string_view(u).substr(i)));  // the rest, trailing space and all
      break;
    }
    size_t j = i;
    while (j < u.size() && !is_space(u[j]))
      ++j;
    out.push_back(encode(std::u32string_view(u).substr(i, j - i)));
    check_list_size(out.size());
    i = j;
  }
  return out;
}

std::vector<std::string> splitlines(std::string_view s) {
  const std::u32string u = decode(s);
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    const char32_t c = u[i];
    const bool breaks = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) ||
                        c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!breaks) continue;
    out.push_back(encode(std::u32string_view(u).substr(start, i - start)));
    check_list_size(out.size());
    if (c == '\r' && i + 1 < u.size() && u[i + 1] == '\n') ++i;
    start = i + 1;
  }
  if (start < u.size()) out.push_back(encode(std::u32string_view(u).substr(start)));
  return out;
}

std::string replace(std::string_view s, std::string_view old, std::string_view with, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `with` before every character and at the end.
    const std::u32string u = decode(s);
    int64_t done = 0;
    for (char32_t c : u) {
      if (count < 0 || done < count) {
        out += with;
        ++done;
      }
      out += encode(std::u32string(1, c));
      check_string_size(out.size());
    }
    if (count < 0 || done < count) out += with;
    return out;
  }
  size_t from = 0;
  for (int64_t done = 0; count < 0 || done < count; ++done) {
    const size_t at = s.find(old, from);
    if (at == std::string_view::npos) break;
    out += s.substr(from, at - from);
    out += with;
    check_string_size(out.size());
    from = at + old.size();
  }
  out += s.substr(from);
  return out;
}

int64_t find(std::string_view s, std::string_view sub) {
  const size_t at = s.find(sub);
  return at == std::string_view::npos ? -1 : static_cast<int64_t>(length(s.substr(0, at)));
}

int64_t count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return static_cast<int64_t>(length(s)) + 1;
  int64_t n = 0;
  for (size_t at = s.find(sub); at != std::string_view::npos; at = s.find(sub, at + sub.size()))
    ++n;
  return n;
}

}  // namespace kvserve::jinja::text
