#include "engine/regex_dfa.h"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/utf8.h"

namespace kvserve {
namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;
constexpr char32_t kFirstSurrogate = 0xD800;
constexpr char32_t kLastSurrogate = 0xDFFF;
// The parser and the NFA builder recurse once per group level; this bound keeps the stack small
// whatever the pattern, and no pattern a person or a schema writes comes near it.
constexpr int kMaxGroupDepth = 200;
constexpr int kUnbounded = -1;  // the maximum of * + and {n,}

// Errors unwind to compile() as this exception: from deep inside nested groups that is simpler
// than passing a Status back through every parsing and building function.
struct RegexError {
  std::string message;
};

[[noreturn]] void fail(const std::string& message) {
  throw RegexError{"regex: " + message};
}

std::string at(size_t offset) {
  return " at byte " + std::to_string(offset);
}

// A construct other engines have and this automaton cannot express.
[[noreturn]] void unsupported(const std::string& construct, size_t offset, const std::string& advice) {
  fail(construct + at(offset) + " is not supported; " + advice);
}

// ---- Sets of code points.

struct CodeRange {
  char32_t lo, hi;
};
// Sorted, disjoint and non-adjacent, without surrogates, once normalized.
using CodeSet = std::vector<CodeRange>;

void normalize(CodeSet& set) {
  std::sort(set.begin(), set.end(), [](const CodeRange& a, const CodeRange& b) { return a.lo < b.lo; });
  CodeSet merged;
  for (const CodeRange& r : set) {
    if (!merged.empty() && r.lo <= merged.back().hi + 1) {
      merged.back().hi = std::max(merged.back().hi, r.hi);
    } else {
      merged.push_back(r);
    }
  }
  // Surrogates are not characters: UTF-8 cannot encode them, so no class can match one.
  set.clear();
  for (const CodeRange& r : merged) {
    if (r.hi < kFirstSurrogate || r.lo > kLastSurrogate) {
      set.push_back(r);
      continue;
    }
    if (r.lo < kFirstSurrogate) set.push_back({r.lo, kFirstSurrogate - 1});
    if (r.hi > kLastSurrogate) set.push_back({kLastSurrogate + 1, r.hi});
  }
}

// Every valid code point not in `set` (which is normalized).
CodeSet complement(const CodeSet& set) {
  CodeSet out;
  char32_t next = 0;
  for (const CodeRange& r : set) {
    if (r.lo > next) out.push_back({next, r.lo - 1});
    next = r.hi + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  normalize(out);
  return out;
}

CodeSet digit_set() {
  return {{'0', '9'}};
}
CodeSet word_set() {
  return {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
}
// ECMAScript's WhiteSpace and LineTerminator, which its \s matches.
CodeSet space_set() {
  return {{'\t', '\r'},     {' ', ' '},       {0xA0, 0xA0},     {0x1680, 0x1680}, {0x2000, 0x200A},
          {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
}

// ---- Code point ranges as UTF-8 byte-range sequences.

// A run of byte ranges: the texts it matches are the byte strings whose i-th byte lies in
// [lo[i], hi[i]].
struct ByteSequence {
  int length = 0;
  uint8_t lo[4] = {};
  uint8_t hi[4] = {};
};

int encode(char32_t c, uint8_t* bytes) {
  std::string s;
  append_utf8(c, s);
  std::copy(s.begin(), s.end(), bytes);
  return static_cast<int>(s.size());
}

// Splits [lo, hi], whose ends encode to the same number of bytes, until each piece is the set of
// byte strings of one ByteSequence: a piece qualifies when, for every trailing continuation byte,
// it either spans all 64 values or keeps the bytes before it fixed.
void split_same_length(char32_t lo, char32_t hi, std::vector<ByteSequence>& out) {
  uint8_t lo_bytes[4];
  const int length = encode(lo, lo_bytes);
  for (int trailing = 1; trailing < length; ++trailing) {
    const char32_t low_bits = (char32_t{1} << (6 * trailing)) - 1;
    if ((lo & ~low_bits) == (hi & ~low_bits)) continue;
    if ((lo & low_bits) != 0) {
      split_same_length(lo, lo | low_bits, out);
      split_same_length((lo | low_bits) + 1, hi, out);
      return;
    }
    if ((hi & low_bits) != low_bits) {
      split_same_length(lo, (hi & ~low_bits) - 1, out);
      split_same_length(hi & ~low_bits, hi, out);
      return;
    }
  }
  ByteSequence seq;
  seq.length = length;
  uint8_t hi_bytes[4];
  encode(hi, hi_bytes);
  for (int i = 0; i < length; ++i) {
    seq.lo[i] = lo_bytes[i];
    seq.hi[i] = hi_bytes[i];
  }
  out.push_back(seq);
}

std::vector<ByteSequence> utf8_sequences(const CodeSet& set) {
  // The last code point of each encoded length: a range is first cut where the length changes.
  static constexpr char32_t kLengthEnds[] = {0x7F, 0x7FF, 0xFFFF, kMaxCodePoint};
  std::vector<ByteSequence> out;
  for (const CodeRange& r : set) {
    char32_t lo = r.lo;
    for (const char32_t end : kLengthEnds) {
      if (lo > r.hi) break;
      if (lo > end) continue;
      const char32_t hi = std::min(r.hi, end);
      split_same_length(lo, hi, out);
      lo = hi + 1;
    }
  }
  return out;
}

// ---- Syntax tree.

struct Node {
  enum class Kind { kEmpty, kChars, kConcat, kAlternation, kRepeat };
  Kind kind = Kind::kEmpty;
  CodeSet chars;              // kChars, normalized
  std::vector<int> children;  // kConcat, kAlternation; kRepeat has one
  int min = 0;                // kRepeat
  int max = 0;                // kRepeat; kUnbounded for no maximum
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_ascii_digit(char c) {
  return c >= '0' && c <= '9';
}

// What an escape stands for: one character, or a class (\d \w \s and their negations).
struct Escape {
  CodeSet set;
  bool is_class = false;
  char32_t code_point = 0;  // when not is_class
};

Escape single(char32_t c) {
  Escape e;
  e.set = {{c, c}};
  e.code_point = c;
  return e;
}

Escape class_escape(CodeSet set) {
  Escape e;
  normalize(set);
  e.set = std::move(set);
  e.is_class = true;
  return e;
}

// Recursive descent over the grammar
//   alternation := concat ('|' concat)*
//   concat      := (atom quantifier?)*
//   atom        := '(' ['?:'] alternation ')' | '[' class ']' | '.' | escape | character
// building the syntax tree in nodes().
class Parser {
 public:
  Parser(std::string_view pattern, const RegexLimits& limits) : p_(pattern), limits_(limits) {}

  int parse() {
    const int root = parse_alternation(0);
    // Only a ')' ends the top-level alternation before the end of the pattern.
    if (pos_ < p_.size()) {
      fail("unbalanced ')'" + at(pos_) + ": no group is open; write \\) for a literal parenthesis");
    }
    return root;
  }

  std::vector<Node>& nodes() { return nodes_; }

 private:
  static constexpr int kNoAtom = -1;  // a leading ^ or trailing $: nothing to match

  bool at_end() const { return pos_ >= p_.size(); }
  bool peek_is(char c) const { return pos_ < p_.size() && p_[pos_] == c; }

  int add(Node node) {
    nodes_.push_back(std::move(node));
    return static_cast<int>(nodes_.size()) - 1;
  }

  int add_chars(CodeSet set) {
    Node node;
    node.kind = Node::Kind::kChars;
    normalize(set);
    node.chars = std::move(set);
    return add(std::move(node));
  }

  int add_list(Node::Kind kind, std::vector<int> children) {
    if (children.empty()) return add(Node{});
    if (children.size() == 1) return children[0];
    Node node;
    node.kind = kind;
    node.children = std::move(children);
    return add(std::move(node));
  }

  int parse_alternation(int depth) {
    std::vector<int> branches{parse_concat(depth)};
    while (peek_is('|')) {
      ++pos_;
      branches.push_back(parse_concat(depth));
    }
    return add_list(Node::Kind::kAlternation, std::move(branches));
  }

  int parse_concat(int depth) {
    std::vector<int> items;
    while (!at_end() && p_[pos_] != '|' && p_[pos_] != ')') {
      const int atom = parse_atom(depth);
      if (atom == kNoAtom) continue;
      const int item = parse_quantifier(atom);
      // An item that matches only the empty text (an empty group, x{0}) adds nothing to a sequence,
      // and left out it costs the NFA builder nothing either (see parse_quantifier).
      if (nodes_[static_cast<size_t>(item)].kind != Node::Kind::kEmpty) items.push_back(item);
    }
    return add_list(Node::Kind::kConcat, std::move(items));
  }

  int parse_atom(int depth) {
    const size_t start = pos_;
    const char c = p_[pos_];
    switch (c) {
      case '(':
        return parse_group(depth);
      case '[':
        return parse_class();
      case '.':
        ++pos_;
        return add_chars(complement({{'\n', '\n'}}));
      case '\\':
        return add_chars(parse_escape(false).set);
      case '*':
      case '+':
      case '?':
        fail(std::string("quantifier '") + c + "'" + at(start) + " has nothing to repeat; write \\" + c +
             " for a literal " + c);
      case '{': {
        int min, max;
        if (read_braces(&min, &max)) {
          fail("repeat " + std::string(p_.substr(start, pos_ - start)) + at(start) +
               " has nothing to repeat; write \\{ for a literal brace");
        }
        fail("'{'" + at(start) +
             " does not start a repeat {n}, {n,} or {n,m}; write \\{ for a literal brace");
      }
      case '}':
        fail("unbalanced '}'" + at(start) + ": no repeat {n,m} is open; write \\} for a literal brace");
      case ']':
        fail("unbalanced ']'" + at(start) + ": no class is open; write \\] for a literal bracket");
      case '^':
        // Matching is always of the whole text, so a leading ^ asserts nothing more.
        if (start == 0) {
          ++pos_;
          return kNoAtom;
        }
        unsupported(
            "'^'", start,
            "only a leading ^ is (matching is always of the whole text); write \\^ for a literal caret");
      case '$':
        if (start + 1 == p_.size()) {
          ++pos_;
          return kNoAtom;
        }
        unsupported(
            "'$'", start,
            "only a trailing $ is (matching is always of the whole text); write \\$ for a literal dollar");
      default: {
        const char32_t literal = next_char();
        return add_chars({{literal, literal}});
      }
    }
  }

  // The character at pos_ (the pattern is valid UTF-8, checked up front), consumed.
  char32_t next_char() {
    const size_t length = utf8_char_len(p_.substr(pos_));
    const char32_t c = utf8_decode(p_.substr(pos_), length);
    pos_ += length;
    return c;
  }

  int parse_group(int depth) {
    const size_t open = pos_;
    if (depth >= kMaxGroupDepth) {
      fail("groups nest more than " + std::to_string(kMaxGroupDepth) + " deep" + at(open) +
           "; flatten the pattern");
    }
    ++pos_;
    if (peek_is('?')) {
      if (pos_ + 1 < p_.size() && p_[pos_ + 1] == ':') {
        pos_ += 2;
      } else {
        unsupported(group_extension(p_.substr(pos_ + 1)), open, "only plain groups (...) and (?:...) are");
      }
    }
    const int inner = parse_alternation(depth + 1);
    if (!peek_is(')')) {
      fail("'('" + at(open) + " is never closed; add ')' or write \\( for a literal parenthesis");
    }
    ++pos_;
    return inner;
  }

  // Names the (?... construct that `rest` (what follows "(?") starts.
  static std::string group_extension(std::string_view rest) {
    const auto starts = [&](std::string_view prefix) { return rest.substr(0, prefix.size()) == prefix; };
    if (starts("=")) return "lookahead (?=...)";
    if (starts("!")) return "negative lookahead (?!...)";
    if (starts("<=")) return "lookbehind (?<=...)";
    if (starts("<!")) return "negative lookbehind (?<!...)";
    if (starts("<") || starts("P<") || starts("'")) return "named group (?<name>...)";
    if (starts("P=") || starts("P>") || starts("&")) return "named reference (?P=name)";
    if (starts(">")) return "atomic group (?>...)";
    if (starts("|")) return "branch reset group (?|...)";
    if (starts("#")) return "comment (?#...)";
    if (starts("(")) return "conditional group (?(...)...)";
    if (starts("R") || (!rest.empty() && (is_ascii_digit(rest[0]) || rest[0] == '+' || rest[0] == '-'))) {
      return "recursion (?R)";
    }
    if (!rest.empty() && (std::isalpha(static_cast<unsigned char>(rest[0])) || rest[0] == '^')) {
      return "inline flags (?" + std::string(1, rest[0]) + "...)";
    }
    return "group syntax '(?'";
  }

  // A quantifier after the atom, if any.
  int parse_quantifier(int atom) {
    if (at_end()) return atom;
    const size_t start = pos_;
    int min, max;
    switch (p_[pos_]) {
      case '*':
        min = 0, max = kUnbounded, ++pos_;
        break;
      case '+':
        min = 1, max = kUnbounded, ++pos_;
        break;
      case '?':
        min = 0, max = 1, ++pos_;
        break;
      case '{':
        if (!read_braces(&min, &max)) {
          fail("'{'" + at(start) +
               " does not start a repeat {n}, {n,} or {n,m}; write \\{ for a literal brace");
        }
        break;
      default:
        return atom;
    }
    const std::string quantifier(p_.substr(start, pos_ - start));
    if (peek_is('?')) {
      unsupported("lazy quantifier '" + quantifier + "?'", start,
                  "matching is always of the whole text, so laziness changes nothing: drop the '?'");
    }
    if (peek_is('+')) {
      unsupported("possessive quantifier '" + quantifier + "+'", start,
                  "an automaton cannot forbid giving characters back; write the greedy '" + quantifier + "'");
    }
    if (peek_is('*') || peek_is('{')) {
      fail("quantifier" + at(pos_) + " follows another quantifier; wrap the repeated part in (?:...)");
    }
    if (min == 1 && max == 1) return atom;
    if (max == 0) return add(Node{});
    // Any repeat of the empty text is the empty text. Kept as a repeat, it would cost the NFA
    // builder one call per copy without adding a state, so the state limit would never stop nested
    // counts: ((((){1000}){1000}){1000}){1000} took 10^12 steps. With this and parse_concat leaving
    // empty items out, every node the builder expands adds a state.
    if (nodes_[static_cast<size_t>(atom)].kind == Node::Kind::kEmpty) return atom;
    Node node;
    node.kind = Node::Kind::kRepeat;
    node.children = {atom};
    node.min = min;
    node.max = max;
    return add(std::move(node));
  }

  // Reads {n}, {n,} or {n,m} at pos_ into *min and *max; false (pos_ unmoved) when what follows
  // the '{' is not one of those.
  bool read_braces(int* min, int* max) {
    const size_t open = pos_;
    size_t i = pos_ + 1;
    const auto read_count = [&](int* count) {
      const size_t first = i;
      while (i < p_.size() && is_ascii_digit(p_[i]))
        ++i;
      if (i == first) return false;
      const std::string_view digits = p_.substr(first, i - first);
      // Compared as text first, so that no count overflows however many digits it has.
      const std::string limit = std::to_string(limits_.max_repeat);
      const std::string_view trimmed =
          digits.substr(std::min(digits.find_first_not_of('0'), digits.size() - 1));
      if (trimmed.size() > limit.size() || (trimmed.size() == limit.size() && trimmed > limit)) {
        fail("repeat count " + std::string(digits) + at(open) + " is above the limit of " + limit +
             "; use a smaller count or * / +");
      }
      *count = std::stoi(std::string(trimmed));
      return true;
    };
    if (!read_count(min)) return false;
    if (i < p_.size() && p_[i] == '}') {
      *max = *min;
    } else if (i < p_.size() && p_[i] == ',') {
      ++i;
      if (i < p_.size() && p_[i] == '}') {
        *max = kUnbounded;
      } else if (!read_count(max) || i >= p_.size() || p_[i] != '}') {
        return false;
      }
    } else {
      return false;
    }
    if (*max != kUnbounded && *max < *min) {
      fail("repeat " + std::string(p_.substr(open, i + 1 - open)) + at(open) +
           " has its minimum above its maximum");
    }
    pos_ = i + 1;
    return true;
  }

  int parse_class() {
    const size_t open = pos_;
    ++pos_;
    const bool negated = peek_is('^');
    if (negated) ++pos_;
    if (peek_is(']')) {
      unsupported(
          "']' first in a class", pos_,
          "ECMAScript reads [] as an empty class and PCRE as a literal ]; write \\] for a literal bracket");
    }
    CodeSet set;
    while (true) {
      if (at_end()) fail("'['" + at(open) + " is never closed; add ']' or write \\[ for a literal bracket");
      if (p_[pos_] == ']') {
        ++pos_;
        break;
      }
      const size_t item_start = pos_;
      const Escape lo = parse_class_item();
      // A '-' just before the closing ']' is a literal dash, as is one first in the class.
      if (!peek_is('-') || pos_ + 1 >= p_.size() || p_[pos_ + 1] == ']') {
        set.insert(set.end(), lo.set.begin(), lo.set.end());
        continue;
      }
      ++pos_;
      const size_t hi_start = pos_;
      const Escape hi = parse_class_item();
      if (lo.is_class || hi.is_class) {
        unsupported("a class escape as a range end", lo.is_class ? item_start : hi_start,
                    "write the '-' as \\- to mean a literal dash");
      }
      if (lo.code_point > hi.code_point) {
        fail("class range " + std::string(p_.substr(item_start, pos_ - item_start)) + at(item_start) +
             " is out of order: its start is above its end");
      }
      set.push_back({lo.code_point, hi.code_point});
    }
    normalize(set);
    return add_chars(negated ? complement(set) : set);
  }

  Escape parse_class_item() {
    if (p_[pos_] == '[') {
      unsupported("unescaped '[' in a class", pos_,
                  "PCRE reads [: [. [= there as POSIX classes; write \\[ for a literal bracket");
    }
    if (p_[pos_] == '\\') return parse_escape(true);
    return single(next_char());
  }

  // The escape at pos_ (a backslash), consumed.
  Escape parse_escape(bool in_class) {
    const size_t start = pos_;
    ++pos_;
    if (at_end()) fail("trailing backslash" + at(start) + "; write \\\\ for a literal backslash");
    const char e = p_[pos_];
    const std::string name =
        "\\" + std::string(p_.substr(pos_, std::max<size_t>(1, utf8_char_len(p_.substr(pos_)))));
    // Both ECMAScript and PCRE read a backslash before ASCII punctuation as the character itself.
    if (static_cast<unsigned char>(e) < 0x80 && std::ispunct(static_cast<unsigned char>(e)) && e != '_') {
      ++pos_;
      return single(static_cast<unsigned char>(e));
    }
    ++pos_;
    switch (e) {
      case 'n':
        return single('\n');
      case 'r':
        return single('\r');
      case 't':
        return single('\t');
      case 'f':
        return single('\f');
      case 'v':
        return single('\v');  // ECMAScript's meaning; PCRE's \v (a class) is not in the dialect
      case '0':
        if (!at_end() && is_ascii_digit(p_[pos_])) {
          unsupported("octal escape \\0" + std::string(1, p_[pos_]), start,
                      "engines read octal escapes differently; write \\xHH");
        }
        return single(0);
      case 'x':
        if (peek_is('{')) unsupported("\\x{...}", start, "write \\uHHHH or the character itself");
        return single(read_hex(2, start, "\\x must be followed by two hex digits (\\xHH)"));
      case 'u':
        return unicode_escape(start, in_class);
      case 'd':
        return class_escape(digit_set());
      case 'D':
        return class_escape(complement(digit_set()));
      case 'w':
        return class_escape(word_set());
      case 'W': {
        CodeSet word = word_set();
        normalize(word);
        return class_escape(complement(word));
      }
      case 's':
        return class_escape(space_set());
      case 'S': {
        CodeSet space = space_set();
        normalize(space);
        return class_escape(complement(space));
      }
      case 'b':
        if (in_class) unsupported("backspace \\b in a class", start, "write \\x08");
        unsupported("word boundary \\b", start, "the automaton has no assertions");
      case 'B':
        unsupported("non-boundary \\B", start, "the automaton has no assertions");
      case 'A':
      case 'z':
      case 'Z':
      case 'G':
        unsupported("anchor " + name, start, "matching is always of the whole text, so drop it");
      case 'k':
        unsupported("named backreference \\k", start, "the automaton cannot refer back to a group");
      case 'p':
      case 'P':
        unsupported("Unicode property " + name, start,
                    "write the ranges as a class such as [\\u00c0-\\u024f]");
      case 'c':
        unsupported("control escape \\c", start, "write \\xHH");
      case 'Q':
      case 'E':
        unsupported("quoting " + name, start, "escape each special character with a backslash");
      default:
        if (e >= '1' && e <= '9') {
          unsupported("backreference " + name, start, "the automaton cannot refer back to a group");
        }
        fail("unknown escape " + name + at(start) +
             "; escapes are \\n \\r \\t \\f \\v \\0 \\xHH \\uHHHH \\d \\D \\w \\W \\s \\S and \\ before "
             "punctuation");
    }
  }

  // `digits` hex digits at pos_, consumed.
  char32_t read_hex(int digits, size_t escape_start, const std::string& what) {
    char32_t value = 0;
    for (int i = 0; i < digits; ++i) {
      const int v = pos_ < p_.size() ? hex_value(p_[pos_]) : -1;
      if (v < 0) fail(what + at(escape_start));
      value = value << 4 | static_cast<char32_t>(v);
      ++pos_;
    }
    return value;
  }

  Escape unicode_escape(size_t start, bool in_class) {
    if (peek_is('{')) unsupported("\\u{...}", start, "write \\uHHHH or the character itself");
    const std::string what = "\\u must be followed by four hex digits (\\uHHHH)";
    const char32_t unit = read_hex(4, start, what);
    if (unit < kFirstSurrogate || unit > kLastSurrogate) return single(unit);
    // ECMAScript patterns spell a character above U+FFFF as a UTF-16 surrogate pair, which outside
    // a class matches that character; inside one (or alone) the halves are separate code units,
    // which UTF-8 text never holds.
    const bool high = unit <= 0xDBFF;
    if (high && !in_class && p_.substr(pos_, 2) == "\\u") {
      const size_t low_start = pos_;
      pos_ += 2;
      const char32_t low = read_hex(4, low_start, what);
      if (low >= 0xDC00 && low <= kLastSurrogate) {
        return single(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00));
      }
    }
    unsupported(std::string(in_class ? "a surrogate in a class" : "a lone surrogate") + " " +
                    std::string(p_.substr(start, 6)),
                start, "UTF-8 text cannot hold one; write the character itself");
  }

  std::string_view p_;
  const RegexLimits& limits_;
  size_t pos_ = 0;
  std::vector<Node> nodes_;
};

// ---- Thompson NFA over byte ranges.

// Up to two epsilon moves, or one move on a byte range: all Thompson's construction needs.
struct NfaState {
  int32_t epsilon[2] = {-1, -1};
  int32_t next = -1;  // the target of the byte-range move, -1 when there is none
  uint8_t lo = 0;
  uint8_t hi = 0;
};

class NfaBuilder {
 public:
  NfaBuilder(const std::vector<Node>& nodes, int max_states) : nodes_(nodes), max_states_(max_states) {}

  // Builds the automaton for `root` from state 0; returns its accepting state.
  int32_t build_root(int root) { return build(root, add()); }

  const std::vector<NfaState>& states() const { return states_; }

 private:
  int32_t add() {
    if (static_cast<int>(states_.size()) >= max_states_) {
      fail("the pattern needs more than " + std::to_string(max_states_) +
           " NFA states once its counted repeats are expanded; lower the counts in {n,m}, or nest repeats "
           "less");
    }
    states_.emplace_back();
    return static_cast<int32_t>(states_.size()) - 1;
  }

  void add_epsilon(int32_t from, int32_t to) {
    int32_t* epsilon = states_[static_cast<size_t>(from)].epsilon;
    (epsilon[0] < 0 ? epsilon[0] : epsilon[1]) = to;
  }

  void set_range(int32_t from, uint8_t lo, uint8_t hi, int32_t to) {
    NfaState& state = states_[static_cast<size_t>(from)];
    state.lo = lo;
    state.hi = hi;
    state.next = to;
  }

  // Splits `in` into `count` entry states, each to start one alternative (`in` itself is the last).
  std::vector<int32_t> fan_out(int32_t in, size_t count) {
    std::vector<int32_t> entries;
    int32_t split = in;
    for (size_t i = 0; i + 1 < count; ++i) {
      const int32_t entry = add();
      const int32_t rest = add();
      add_epsilon(split, entry);
      add_epsilon(split, rest);
      entries.push_back(entry);
      split = rest;
    }
    entries.push_back(split);
    return entries;
  }

  // Builds node `id` starting at state `in`, which has no moves yet; returns the state the node
  // ends at, which has no moves either (the next piece starts there).
  int32_t build(int id, int32_t in) {
    const Node& node = nodes_[static_cast<size_t>(id)];
    switch (node.kind) {
      case Node::Kind::kEmpty:
        return in;
      case Node::Kind::kChars: {
        const std::vector<ByteSequence> sequences = utf8_sequences(node.chars);
        const int32_t out = add();  // unreachable when the set is empty: nothing matches
        const std::vector<int32_t> entries = fan_out(in, std::max<size_t>(sequences.size(), 1));
        // Sequences that end alike share their tail states (one "two continuation bytes to go"
        // state for E1-EC and EE-EF, say), so that the subset construction does not keep apart
        // what only the lead byte told apart: each copy of a repeated class would double its states.
        std::map<std::tuple<uint8_t, uint8_t, int32_t>, int32_t> tails;
        for (size_t i = 0; i < sequences.size(); ++i) {
          const ByteSequence& sequence = sequences[i];
          int32_t to = out;
          for (int b = sequence.length - 1; b > 0; --b) {
            const auto key = std::make_tuple(sequence.lo[b], sequence.hi[b], to);
            auto it = tails.find(key);
            if (it == tails.end()) {
              const int32_t tail = add();
              set_range(tail, sequence.lo[b], sequence.hi[b], to);
              it = tails.emplace(key, tail).first;
            }
            to = it->second;
          }
          set_range(entries[i], sequence.lo[0], sequence.hi[0], to);
        }
        return out;
      }
      case Node::Kind::kConcat: {
        int32_t end = in;
        for (const int child : node.children)
          end = build(child, end);
        return end;
      }
      case Node::Kind::kAlternation: {
        const int32_t out = add();
        const std::vector<int32_t> entries = fan_out(in, node.children.size());
        for (size_t i = 0; i < entries.size(); ++i)
          add_epsilon(build(node.children[i], entries[i]), out);
        return out;
      }
      case Node::Kind::kRepeat: {
        const int child = node.children[0];
        int32_t end = in;
        for (int i = 0; i < node.min; ++i)
          end = build(child, end);
        if (node.max == kUnbounded) {
          // `end` loops: into one more copy, which comes back to it, or out.
          const int32_t body = add();
          const int32_t exit = add();
          add_epsilon(end, body);
          add_epsilon(end, exit);
          add_epsilon(build(child, body), end);
          return exit;
        }
        // The optional copies nest, x{0,3} as (x(x(x)?)?)?: after k copies only copy k+1 can come
        // next, which keeps the subsets of the DFA construction small.
        if (node.max == node.min) return end;
        const int32_t exit = add();
        for (int i = node.min; i < node.max; ++i) {
          const int32_t body = add();
          add_epsilon(end, body);
          add_epsilon(end, exit);
          end = build(child, body);
        }
        add_epsilon(end, exit);
        return exit;
      }
    }
    return in;
  }

  const std::vector<Node>& nodes_;
  const int max_states_;
  std::vector<NfaState> states_;
};

// ---- Subset construction.

// The NFA states a DFA state stands for, sorted: only those that move on a byte, and the
// accepting one. The others (epsilon splits) add nothing once the closure is taken, and leaving
// them out lets subsets that differ only in them be one DFA state.
using StateSet = std::vector<int32_t>;

struct StateSetHash {
  size_t operator()(const StateSet& set) const {
    uint64_t hash = 1469598103934665603ULL;  // FNV-1a
    for (const int32_t s : set) {
      hash ^= static_cast<uint32_t>(s);
      hash *= 1099511628211ULL;
    }
    return static_cast<size_t>(hash);
  }
};

class DfaBuilder {
 public:
  DfaBuilder(const std::vector<NfaState>& nfa, int32_t accept, int max_states)
      : nfa_(nfa),
        accept_(accept),
        max_states_(max_states),
        work_budget_(std::max<int64_t>(kWorkPerDfaState * max_states, kMinWork)),
        mark_(nfa.size(), 0) {
    find_byte_classes();
  }

  // Builds the DFA breadth first from the start, so that state numbers follow the pattern.
  void build() {
    intern(closure({0}));
    std::vector<std::vector<int32_t>> targets(static_cast<size_t>(num_classes_));
    for (size_t id = 0; id < sets_.size(); ++id) {
      const StateSet& set = *sets_[id];
      accepting_[id] = std::binary_search(set.begin(), set.end(), accept_) ? 1 : 0;
      for (auto& t : targets)
        t.clear();
      for (const int32_t s : set) {
        const NfaState& state = nfa_[static_cast<size_t>(s)];
        if (state.next < 0) continue;
        for (int c = class_of_[state.lo]; c <= class_of_[state.hi]; ++c)
          targets[static_cast<size_t>(c)].push_back(state.next);
      }
      for (int c = 0; c < num_classes_; ++c) {
        if (targets[static_cast<size_t>(c)].empty()) continue;
        work_ += static_cast<int64_t>(targets[static_cast<size_t>(c)].size());
        StateSet next = closure(targets[static_cast<size_t>(c)]);
        if (next.empty()) continue;
        const int32_t target = intern(std::move(next));
        for (int b = class_first_[c]; b < class_first_[c + 1]; ++b)
          table_[id * 256 + static_cast<size_t>(b)] = target;
      }
    }
  }

  // Turns every state from which no accepting state can be reached into kDead, renumbering the
  // rest in their order. Fails when that leaves no start.
  void prune_dead_ends() {
    const size_t n = accepting_.size();
    // Reverse edges (one per distinct target), in compressed rows.
    std::vector<int32_t> edge_count(n + 1, 0);
    std::vector<std::pair<int32_t, int32_t>> edges;  // (to, from)
    for (size_t s = 0; s < n; ++s) {
      int32_t last = RegexDfa::kDead;
      for (int c = 0; c < num_classes_; ++c) {
        const int32_t t = table_[s * 256 + static_cast<size_t>(class_first_[c])];
        if (t == RegexDfa::kDead || t == last) continue;
        edges.emplace_back(t, static_cast<int32_t>(s));
        last = t;
      }
    }
    std::sort(edges.begin(), edges.end());
    for (const auto& e : edges)
      ++edge_count[static_cast<size_t>(e.first) + 1];
    for (size_t s = 0; s < n; ++s)
      edge_count[s + 1] += edge_count[s];
    std::vector<uint8_t> live(n, 0);
    std::vector<int32_t> queue;
    for (size_t s = 0; s < n; ++s) {
      if (accepting_[s]) {
        live[s] = 1;
        queue.push_back(static_cast<int32_t>(s));
      }
    }
    for (size_t i = 0; i < queue.size(); ++i) {
      const auto to = static_cast<size_t>(queue[i]);
      for (int32_t k = edge_count[to]; k < edge_count[to + 1]; ++k) {
        const auto from = static_cast<size_t>(edges[static_cast<size_t>(k)].second);
        if (!live[from]) {
          live[from] = 1;
          queue.push_back(static_cast<int32_t>(from));
        }
      }
    }
    if (!live[0])
      fail("the pattern matches no text; check its classes ([^\\s\\S], for one, matches nothing)");
    std::vector<int32_t> new_id(n, RegexDfa::kDead);
    int32_t kept = 0;
    for (size_t s = 0; s < n; ++s) {
      if (live[s]) new_id[s] = kept++;
    }
    std::vector<int32_t> table(static_cast<size_t>(kept) * 256);
    std::vector<uint8_t> accepting(static_cast<size_t>(kept));
    for (size_t s = 0; s < n; ++s) {
      if (!live[s]) continue;
      const auto row = static_cast<size_t>(new_id[s]);
      accepting[row] = accepting_[s];
      for (size_t b = 0; b < 256; ++b) {
        const int32_t t = table_[s * 256 + b];
        table[row * 256 + b] = t == RegexDfa::kDead ? RegexDfa::kDead : new_id[static_cast<size_t>(t)];
      }
    }
    table_ = std::move(table);
    accepting_ = std::move(accepting);
  }

  // Merges states no text tells apart (Hopcroft's partition refinement), then numbers the states
  // breadth first from the start, bytes in order, so that equal languages give equal tables. The
  // subset construction leaves many such twins: each copy of a counted repeat has its own states
  // for the middle of a multibyte character, one per kind of lead byte. Runs after pruning, so
  // the only state that cannot finish is kDead, kept as an explicit sink here.
  void minimize() {
    const auto n = static_cast<int32_t>(accepting_.size());
    const int32_t sink = n;  // kDead
    const int32_t total = n + 1;
    const auto target = [&](int32_t s, int c) {
      if (s == sink) return sink;
      const int32_t t = table_[static_cast<size_t>(s) * 256 + static_cast<size_t>(class_first_[c])];
      return t == RegexDfa::kDead ? sink : t;
    };
    // Predecessors by class, in compressed rows: for class c, the states moving into t are
    // sources[row[c * total + t] .. row[c * total + t + 1]).
    const auto k = static_cast<size_t>(num_classes_);
    std::vector<int32_t> row(k * static_cast<size_t>(total) + 1, 0);
    std::vector<int32_t> sources(k * static_cast<size_t>(total));
    for (int c = 0; c < num_classes_; ++c) {
      for (int32_t s = 0; s < total; ++s)
        ++row[static_cast<size_t>(c) * static_cast<size_t>(total) + static_cast<size_t>(target(s, c)) + 1];
    }
    for (size_t i = 1; i < row.size(); ++i)
      row[i] += row[i - 1];
    {
      std::vector<int32_t> fill(row.begin(), row.end() - 1);
      for (int c = 0; c < num_classes_; ++c) {
        for (int32_t s = 0; s < total; ++s) {
          const size_t slot =
              static_cast<size_t>(c) * static_cast<size_t>(total) + static_cast<size_t>(target(s, c));
          sources[static_cast<size_t>(fill[slot]++)] = s;
        }
      }
    }

    // The partition: states ordered by block in `members`; block b holds members[first[b], end[b]).
    std::vector<int32_t> members(static_cast<size_t>(total));
    std::vector<int32_t> position(static_cast<size_t>(total));
    std::vector<int32_t> block_of(static_cast<size_t>(total));
    std::vector<int32_t> first, end, marked;
    std::vector<uint8_t> waiting;
    std::vector<int32_t> worklist;
    {
      int32_t next = 0;
      for (const bool accepting : {true, false}) {
        const int32_t begin = next;
        for (int32_t s = 0; s < total; ++s) {
          if ((s != sink && accepting_[static_cast<size_t>(s)] != 0) != accepting) continue;
          members[static_cast<size_t>(next)] = s;
          position[static_cast<size_t>(s)] = next++;
          block_of[static_cast<size_t>(s)] = static_cast<int32_t>(first.size());
        }
        if (next == begin) continue;
        first.push_back(begin);
        end.push_back(next);
        marked.push_back(0);
        waiting.push_back(1);
        worklist.push_back(static_cast<int32_t>(first.size()) - 1);
      }
    }
    std::vector<int32_t> splitter;
    std::vector<int32_t> touched;
    while (!worklist.empty()) {
      const int32_t a = worklist.back();
      worklist.pop_back();
      waiting[static_cast<size_t>(a)] = 0;
      splitter.assign(members.begin() + first[static_cast<size_t>(a)],
                      members.begin() + end[static_cast<size_t>(a)]);
      for (int c = 0; c < num_classes_; ++c) {
        // Move the states that enter the splitter on class c to the front of their blocks.
        touched.clear();
        for (const int32_t t : splitter) {
          const size_t slot = static_cast<size_t>(c) * static_cast<size_t>(total) + static_cast<size_t>(t);
          for (int32_t i = row[slot]; i < row[slot + 1]; ++i) {
            const int32_t s = sources[static_cast<size_t>(i)];
            const auto b = static_cast<size_t>(block_of[static_cast<size_t>(s)]);
            if (marked[b] == 0) touched.push_back(static_cast<int32_t>(b));
            const int32_t to = first[b] + marked[b]++;
            const int32_t other = members[static_cast<size_t>(to)];
            const int32_t from = position[static_cast<size_t>(s)];
            members[static_cast<size_t>(to)] = s;
            position[static_cast<size_t>(s)] = to;
            members[static_cast<size_t>(from)] = other;
            position[static_cast<size_t>(other)] = from;
          }
        }
        // Split each touched block that the splitter cuts in two: the marked front becomes new.
        for (const int32_t b32 : touched) {
          const auto b = static_cast<size_t>(b32);
          const int32_t split = first[b] + marked[b];
          marked[b] = 0;
          if (split == end[b]) continue;
          const auto z = static_cast<int32_t>(first.size());
          first.push_back(first[b]);
          end.push_back(split);
          marked.push_back(0);
          first[b] = split;
          for (int32_t i = first[static_cast<size_t>(z)]; i < split; ++i)
            block_of[static_cast<size_t>(members[static_cast<size_t>(i)])] = z;
          const bool z_smaller = split - first[static_cast<size_t>(z)] <= end[b] - first[b];
          if (waiting[b] != 0 || z_smaller) {
            waiting.push_back(1);
            worklist.push_back(z);
          } else {
            waiting.push_back(0);
            waiting[b] = 1;
            worklist.push_back(b32);
          }
        }
      }
    }

    // Number the blocks breadth first from the start's; the sink's block is kDead.
    std::vector<int32_t> new_id(first.size(), RegexDfa::kDead);
    std::vector<int32_t> order = {block_of[0]};  // blocks by new number
    new_id[static_cast<size_t>(block_of[0])] = 0;
    std::vector<int32_t> table;
    std::vector<uint8_t> accepting;
    for (size_t i = 0; i < order.size(); ++i) {
      const int32_t representative = members[static_cast<size_t>(first[static_cast<size_t>(order[i])])];
      accepting.push_back(accepting_[static_cast<size_t>(representative)]);
      for (size_t b = 0; b < 256; ++b) {
        const int32_t t = table_[static_cast<size_t>(representative) * 256 + b];
        if (t == RegexDfa::kDead) {
          table.push_back(RegexDfa::kDead);
          continue;
        }
        const auto block = static_cast<size_t>(block_of[static_cast<size_t>(t)]);
        if (new_id[block] == RegexDfa::kDead) {
          new_id[block] = static_cast<int32_t>(order.size());
          order.push_back(static_cast<int32_t>(block));
        }
        table.push_back(new_id[block]);
      }
    }
    table_ = std::move(table);
    accepting_ = std::move(accepting);
  }

  std::vector<int32_t>& table() { return table_; }
  std::vector<uint8_t>& accepting() { return accepting_; }

 private:
  // Bytes no range of the NFA tells apart share a class, so each DFA state computes one move per
  // class instead of 256. Classes are runs of consecutive bytes.
  void find_byte_classes() {
    bool boundary[257] = {};
    boundary[0] = true;
    for (const NfaState& state : nfa_) {
      if (state.next < 0) continue;
      boundary[state.lo] = true;
      boundary[state.hi + 1] = true;
    }
    num_classes_ = 0;
    for (int b = 0; b < 256; ++b) {
      if (boundary[b]) class_first_[num_classes_++] = b;
      class_of_[b] = num_classes_ - 1;
    }
    class_first_[num_classes_] = 256;
  }

  // The states reachable from `seeds` by epsilon moves (seeds included), as a StateSet.
  StateSet closure(const std::vector<int32_t>& seeds) {
    if (++generation_ == 0) {  // the marks wrapped around: clear them once
      std::fill(mark_.begin(), mark_.end(), 0);
      generation_ = 1;
    }
    StateSet out;
    stack_.clear();
    for (const int32_t s : seeds) {
      if (mark_[static_cast<size_t>(s)] == generation_) continue;
      mark_[static_cast<size_t>(s)] = generation_;
      stack_.push_back(s);
    }
    while (!stack_.empty()) {
      const int32_t s = stack_.back();
      stack_.pop_back();
      ++work_;
      const NfaState& state = nfa_[static_cast<size_t>(s)];
      if (state.next >= 0 || s == accept_) out.push_back(s);
      for (const int32_t e : state.epsilon) {
        if (e < 0 || mark_[static_cast<size_t>(e)] == generation_) continue;
        mark_[static_cast<size_t>(e)] = generation_;
        stack_.push_back(e);
      }
    }
    work_ += static_cast<int64_t>(out.size());
    if (work_ > work_budget_) {
      fail("the pattern is too costly to compile (its DFA construction took more than " +
           std::to_string(work_budget_) +
           " steps); simplify it: nested counted repeats such as (a{0,30}){0,300} cost the most");
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  int32_t intern(StateSet set) {
    const auto [it, inserted] = ids_.try_emplace(std::move(set), static_cast<int32_t>(sets_.size()));
    if (inserted) {
      if (static_cast<int>(sets_.size()) >= max_states_) {
        fail("the pattern needs more than " + std::to_string(max_states_) +
             " DFA states; simplify it: lower the counts in {n,m}, or keep a repeated part from overlapping "
             "what follows it (as in .*a.{20})");
      }
      sets_.push_back(&it->first);
      table_.resize(table_.size() + 256, RegexDfa::kDead);
      accepting_.push_back(0);
    }
    return it->second;
  }

  const std::vector<NfaState>& nfa_;
  const int32_t accept_;
  const int max_states_;
  // The construction's cost (NFA states visited and stored) is bounded too: a pattern such as
  // ([ab]{0,200}){0,200} stays under the state limit for long while each state holds thousands
  // of NFA states, and would otherwise take minutes and gigabytes before failing.
  static constexpr int64_t kWorkPerDfaState = 1000;
  static constexpr int64_t kMinWork = 1000000;
  const int64_t work_budget_;
  int64_t work_ = 0;
  int class_of_[256] = {};
  int class_first_[257] = {};  // the first byte of each class, then 256
  int num_classes_ = 0;
  std::vector<uint32_t> mark_;  // == generation_: visited by the current closure
  uint32_t generation_ = 0;
  std::vector<int32_t> stack_;
  std::unordered_map<StateSet, int32_t, StateSetHash> ids_;
  std::vector<const StateSet*> sets_;  // by DFA state: the key in ids_ (node keys do not move)
  std::vector<int32_t> table_;
  std::vector<uint8_t> accepting_;
};

void check_utf8(std::string_view pattern) {
  for (size_t i = 0; i < pattern.size();) {
    const size_t length = utf8_char_len(pattern.substr(i));
    if (length == 0) fail("invalid UTF-8" + at(i) + "; the pattern must be UTF-8 text");
    i += length;
  }
}

}  // namespace

Status RegexDfa::compile(std::string_view pattern, const RegexLimits& limits, RegexDfa* out) {
  try {
    if (pattern.size() > static_cast<size_t>(limits.max_pattern_bytes)) {
      fail("the pattern is " + std::to_string(pattern.size()) + " bytes, more than the limit of " +
           std::to_string(limits.max_pattern_bytes));
    }
    check_utf8(pattern);
    Parser parser(pattern, limits);
    const int root = parser.parse();
    NfaBuilder nfa(parser.nodes(), limits.max_nfa_states);
    const int32_t accept = nfa.build_root(root);
    DfaBuilder dfa(nfa.states(), accept, limits.max_dfa_states);
    dfa.build();
    dfa.prune_dead_ends();
    dfa.minimize();
    out->start_ = 0;  // pruning keeps the start (or fails) and numbers it first
    out->table_ = std::move(dfa.table());
    out->accepting_ = std::move(dfa.accepting());
    return Status::Ok();
  } catch (const RegexError& error) {
    return Status::InvalidArgument(error.message);
  }
}

}  // namespace kvserve
