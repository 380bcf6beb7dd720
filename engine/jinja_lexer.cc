#include "engine/jinja_lexer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "engine/jinja_text.h"
#include "engine/utf8.h"

namespace kvserve::jinja {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// A \u escape naming a surrogate has no UTF-8 form; it reads as U+FFFD.
void append_code_point(uint32_t cp, std::string& out) {
  append_utf8(cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ? 0xFFFD : cp, out);
}

class Lexer {
 public:
  explicit Lexer(std::string_view raw) {
    // Jinja normalises \r\n and \r to \n and drops one trailing newline (keep_trailing_newline off).
    src_.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        src_ += '\n';
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        src_ += raw[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    bool strip_next = false;  // the previous tag ended with `-`
    while (pos_ < src_.size()) {
      const size_t open = next_opener(pos_);
      std::string data = src_.substr(pos_, open - pos_);
      const bool line_start = pos_ == 0 || src_[pos_ - 1] == '\n';
      // Whitespace is Python's (str.strip(), re's \s): Unicode spaces count, as in jinja2.
      if (strip_next) data = text::strip(data, nullptr, /*left=*/true, /*right=*/false);
      if (open == src_.size()) {
        emit_data(std::move(data));
        break;
      }
      const char kind = src_[open + 1];  // '{', '%' or '#'
      const char mod = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (mod == '-') {
        data = text::strip(data, nullptr, /*left=*/false, /*right=*/true);
      } else if (mod != '+' && kind != '{') {
        lstrip_block(data, line_start);
      }
      emit_data(std::move(data));
      const int start_line = line_at(open);
      pos_ = open + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
      bool trim = false;
      if (kind == '#') {
        const size_t close = src_.find("#}", pos_);
        if (close == std::string::npos) syntax_error(start_line, "a comment is not closed with '#}'");
        strip_next = close > pos_ && src_[close - 1] == '-';
        trim = !(close > pos_ && src_[close - 1] == '+');
        pos_ = close + 2;
      } else if (kind == '%' && starts_raw()) {
        read_raw(start_line);
        strip_next = raw_strip_after_;
        trim = raw_trim_after_;
      } else {
        read_tag(kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, start_line, &strip_next, &trim);
        if (kind == '{') trim = false;
      }
      if (trim && !strip_next && pos_ < src_.size() && src_[pos_] == '\n') ++pos_;  // trim_blocks
    }
    tokens_.push_back({Tok::kEnd, "", Value(), line_at(src_.size())});
    return std::move(tokens_);
  }

 private:
  // lstrip_blocks: a block or comment tag preceded on its line only by whitespace takes it away.
  static void lstrip_block(std::string& data, bool data_starts_line) {
    const size_t nl = data.rfind('\n');
    const size_t from = nl == std::string::npos ? 0 : nl + 1;
    if ((nl != std::string::npos || data_starts_line) &&
        text::strip(std::string_view(data).substr(from), nullptr, true, false).empty())
      data.erase(from);
  }

  size_t next_opener(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  int line_at(size_t p) {
    for (; line_pos_ < p && line_pos_ < src_.size(); ++line_pos_)
      if (src_[line_pos_] == '\n') ++line_;
    return line_;
  }

  void emit_data(std::string data) {
    if (!data.empty()) tokens_.push_back({Tok::kData, std::move(data), Value(), line_at(pos_)});
  }

  // {% raw %} ... {% endraw %}: the text between is data, tags and all.
  // pos_ is just past "{%" and its modifier.
  bool starts_raw() const {
    const size_t p = src_.find_first_not_of(" \t\n", pos_);
    if (p == std::string::npos || src_.compare(p, 3, "raw") != 0) return false;
    const size_t q = src_.find_first_not_of(" \t\n", p + 3);
    return q != std::string::npos && (src_.compare(q, 2, "%}") == 0 || src_.compare(q, 3, "-%}") == 0);
  }

  void read_raw(int line) {
    const size_t open_end = src_.find("%}", pos_);
    const bool strip_inside = src_[open_end - 1] == '-';
    size_t body = open_end + 2;
    for (size_t p = src_.find("{%", body); p != std::string::npos; p = src_.find("{%", p + 2)) {
      size_t q = p + 2;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) ++q;
      q = src_.find_first_not_of(" \t\n", q);
      if (q == std::string::npos || src_.compare(q, 6, "endraw") != 0) continue;
      const size_t close = src_.find("%}", q);
      if (close == std::string::npos) break;
      std::string content = src_.substr(body, p - body);
      if (strip_inside) content = text::strip(content, nullptr, /*left=*/true, /*right=*/false);
      if (src_[p + 2] == '-')
        content = text::strip(content, nullptr, /*left=*/false, /*right=*/true);
      else if (src_[p + 2] != '+')
        lstrip_block(content, /*data_starts_line=*/false);  // {% endraw %} is a block tag too
      emit_data(std::move(content));
      raw_strip_after_ = src_[close - 1] == '-';
      raw_trim_after_ = src_[close - 1] != '+';
      pos_ = close + 2;
      return;
    }
    syntax_error(line, "{% raw %} is not closed with {% endraw %}");
  }

  void read_tag(Tok begin, int line, bool* strip_after, bool* trim) {
    tokens_.push_back({begin, "", Value(), line});
    const std::string_view closer = begin == Tok::kVarBegin ? "}}" : "%}";
    int depth = 0;  // brackets open inside the tag: a '}}' there closes a dict, not the tag
    while (true) {
      while (pos_ < src_.size() && is_space(src_[pos_]))
        ++pos_;
      if (pos_ >= src_.size())
        syntax_error(line, std::string("a tag is not closed with '") + std::string(closer) + "'");
      const int tl = line_at(pos_);
      if (depth == 0) {
        for (const char m : {'-', '+', '\0'}) {
          const size_t len = m ? 3 : 2;
          if ((m == '\0' || src_[pos_] == m) && src_.compare(pos_ + (m ? 1 : 0), 2, closer) == 0) {
            *strip_after = m == '-';
            *trim = m != '+';
            pos_ += len;
            tokens_.push_back({begin == Tok::kVarBegin ? Tok::kVarEnd : Tok::kBlockEnd, "", Value(), tl});
            return;
          }
        }
      }
      const char c = src_[pos_];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos_;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_'))
          ++e;
        tokens_.push_back({Tok::kName, src_.substr(pos_, e - pos_), Value(), tl});
        pos_ = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        read_number(tl);
      } else if (c == '\'' || c == '"') {
        read_string(tl);
      } else {
        static constexpr std::string_view kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                                    "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                                    "]",  "{",  "}",  ",",  ".",  ":",  "|"};
        bool matched = false;
        for (std::string_view op : kOps) {
          if (src_.compare(pos_, op.size(), op) == 0) {
            if (op == "(" || op == "[" || op == "{") ++depth;
            if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
            tokens_.push_back({Tok::kOp, std::string(op), Value(), tl});
            pos_ += op.size();
            matched = true;
            break;
          }
        }
        if (!matched) syntax_error(tl, std::string("unexpected character '") + c + "'");
      }
    }
  }

  void read_number(int line) {
    size_t e = pos_;
    auto digits = [&] {
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_'))
        ++e;
    };
    digits();
    bool is_float = false;
    if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      ++e;
      digits();
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t x = e + 1;
      if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
      if (x < src_.size() && std::isdigit(static_cast<unsigned char>(src_[x]))) {
        is_float = true;
        e = x;
        digits();
      }
    }
    std::string text;
    for (size_t i = pos_; i < e; ++i)
      if (src_[i] != '_') text += src_[i];
    pos_ = e;
    if (is_float) {
      tokens_.push_back({Tok::kFloat, text, Value(std::strtod(text.c_str(), nullptr)), line});
    } else {
      errno = 0;
      const long long v = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) syntax_error(line, "integer literal " + text + " is too large");
      tokens_.push_back({Tok::kInt, text, Value(static_cast<int64_t>(v)), line});
    }
  }

  // Python string literal escapes.
  void read_string(int line) {
    const char quote = src_[pos_++];
    std::string out;
    while (true) {
      if (pos_ >= src_.size()) syntax_error(line, "a string literal is not closed");
      const char c = src_[pos_++];
      if (c == quote) break;
      if (c != '\\' || pos_ >= src_.size()) {
        out += c;
        continue;
      }
      const char e = src_[pos_++];
      auto hex = [&](int n) {
        if (pos_ + n > src_.size()) syntax_error(line, "a \\x, \\u or \\U escape is cut short");
        uint32_t v = 0;
        for (int i = 0; i < n; ++i) {
          const char h = src_[pos_++];
          if (!std::isxdigit(static_cast<unsigned char>(h)))
            syntax_error(line, "a \\x, \\u or \\U escape is not hex");
          v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                 ? h - '0'
                                                 : (std::tolower(h) - 'a' + 10));
        }
        return v;
      };
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7': {
          uint32_t v = static_cast<uint32_t>(e - '0');
          for (int i = 0; i < 2 && pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '7'; ++i)
            v = v * 8 + static_cast<uint32_t>(src_[pos_++] - '0');
          append_code_point(v, out);
          break;
        }
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\n':
          break;
        case 'x':
          append_code_point(hex(2), out);
          break;
        case 'u':
          append_code_point(hex(4), out);
          break;
        case 'U':
          append_code_point(hex(8), out);
          break;
        default:
          out += '\\';
          out += e;
      }
    }
    tokens_.push_back({Tok::kString, std::move(out), Value(), line});
  }

  std::string src_;
  size_t pos_ = 0;
  size_t line_pos_ = 0;
  int line_ = 1;
  bool raw_strip_after_ = false;
  bool raw_trim_after_ = true;
  std::vector<Token> tokens_;
};

}  // namespace

void syntax_error(int line, const std::string& what) {
  throw Error("line " + std::to_string(line) + ": " + what);
}

std::vector<Token> tokenize(std::string_view source) {
  return Lexer(source).run();
}

}  // namespace kvserve::jinja
