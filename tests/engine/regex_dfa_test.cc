// RegexDfa against an independent reference: PCRE2, which reads the dialect the same way once \s,
// \S and \v are spelt out (engine/regex_dfa.h). Each pattern is run on seeded random strings built
// from its own characters, multibyte characters and stray bytes, on strings the DFA itself
// generates (which PCRE2 must accept too) and on mutations of those, which sit right at the edge
// of the language where mistakes show. Then: error messages, dead-end pruning, UTF-8 validity
// of everything accepted, and the limits.
#include "engine/regex_dfa.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "engine/utf8.h"
#include "tests/engine/pcre2_reference.h"

namespace kvserve {
namespace {

using testing::Pcre2Reference;

RegexDfa compile_ok(std::string_view pattern, const RegexLimits& limits = {}) {
  RegexDfa dfa;
  const Status status = RegexDfa::compile(pattern, limits, &dfa);
  EXPECT_TRUE(status.ok()) << "pattern " << pattern << ": " << status.message();
  return dfa;
}

std::string compile_error(std::string_view pattern, const RegexLimits& limits = {}) {
  RegexDfa dfa;
  const Status status = RegexDfa::compile(pattern, limits, &dfa);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << "pattern " << pattern << " compiled";
  return status.message();
}

std::string utf8(char32_t c) {
  std::string s;
  append_utf8(c, s);
  return s;
}

// ---- Generating strings.

// Characters every pattern is tried with beyond its own: the edges of each UTF-8 length, the
// neighbours of the surrogates, Unicode spaces that \s takes and '.' and [^...] must too, and
// bytes that are no character at all (a stray continuation, a lead without its tail, an overlong
// form, an encoded surrogate, a code point above U+10FFFF).
std::vector<std::string> extra_pieces() {
  std::vector<std::string> pieces = {"a",  "z",  "A",  "0",  "9", "_", "-", " ", "\t", "\n",
                                     "\r", "\v", "\"", "\\", "{", "}", ",", ":", ".",  "x"};
  for (const char32_t c : {0x7FU, 0x80U, 0xA0U, 0xE9U, 0x7FFU, 0x800U, 0x1680U, 0x2028U, 0x20ACU, 0x3000U,
                           0xD7FFU, 0xE000U, 0xFEFFU, 0xFFFFU, 0x10000U, 0x1F600U, 0x10FFFFU}) {
    pieces.push_back(utf8(c));
  }
  for (const char* bad :
       {"\x80", "\xBF", "\xC3", "\xE2\x82", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xFF"})
    pieces.emplace_back(bad);
  return pieces;
}

// The pattern's own characters (the bytes of its escapes too: "\d" gives '\' and 'd'), so that
// random strings hit its literals often.
std::vector<std::string> pattern_pieces(std::string_view pattern) {
  std::vector<std::string> pieces;
  for (size_t i = 0; i < pattern.size();) {
    const size_t n = std::max<size_t>(1, utf8_char_len(pattern.substr(i)));
    pieces.emplace_back(pattern.substr(i, n));
    i += n;
  }
  return pieces;
}

// Shortest number of bytes from each state to an accepting one (a reverse breadth-first search).
std::vector<int> distance_to_accept(const RegexDfa& dfa) {
  const int n = dfa.num_states();
  std::vector<std::vector<int>> reverse(static_cast<size_t>(n));
  for (int s = 0; s < n; ++s) {
    for (int b = 0; b < 256; ++b) {
      const int32_t t = dfa.next(s, static_cast<uint8_t>(b));
      if (t != RegexDfa::kDead) reverse[static_cast<size_t>(t)].push_back(s);
    }
  }
  std::vector<int> distance(static_cast<size_t>(n), -1);
  std::vector<int> queue;
  for (int s = 0; s < n; ++s) {
    if (dfa.accepting(s)) {
      distance[static_cast<size_t>(s)] = 0;
      queue.push_back(s);
    }
  }
  for (size_t i = 0; i < queue.size(); ++i) {
    for (const int from : reverse[static_cast<size_t>(queue[i])]) {
      if (distance[static_cast<size_t>(from)] >= 0) continue;
      distance[static_cast<size_t>(from)] = distance[static_cast<size_t>(queue[i])] + 1;
      queue.push_back(from);
    }
  }
  return distance;
}

// A random text the DFA accepts: random live bytes, then the shortest way to acceptance once the
// text is long enough (every live state has one: that is what pruning promises).
std::string random_walk(const RegexDfa& dfa, const std::vector<int>& distance, std::mt19937& rng) {
  std::string text;
  int32_t state = dfa.start();
  const size_t soft_limit = std::uniform_int_distribution<size_t>(0, 40)(rng);
  while (true) {
    if (dfa.accepting(state) && (text.size() >= soft_limit || rng() % 4 == 0)) return text;
    std::vector<uint8_t> choices;
    for (int b = 0; b < 256; ++b) {
      const int32_t t = dfa.next(state, static_cast<uint8_t>(b));
      if (t == RegexDfa::kDead) continue;
      if (text.size() < soft_limit ||
          distance[static_cast<size_t>(t)] < distance[static_cast<size_t>(state)]) {
        choices.push_back(static_cast<uint8_t>(b));
      }
    }
    if (choices.empty()) {
      EXPECT_TRUE(dfa.accepting(state)) << "a live state with no way on";
      return text;
    }
    const uint8_t b = choices[rng() % choices.size()];
    text += static_cast<char>(b);
    state = dfa.next(state, b);
  }
}

std::string random_text(const std::vector<std::string>& own, const std::vector<std::string>& extra,
                        std::mt19937& rng) {
  std::string text;
  const int length = std::uniform_int_distribution<int>(0, 10)(rng);
  for (int i = 0; i < length; ++i) {
    const unsigned pick = rng() % 10;
    if (pick < 6 && !own.empty()) {
      text += own[rng() % own.size()];
    } else if (pick < 9) {
      text += extra[rng() % extra.size()];
    } else {
      text += static_cast<char>(rng() % 256);
    }
  }
  return text;
}

// One small edit of `text`: a byte dropped, replaced or inserted, a piece inserted, a cut, a
// repeat of a stretch. Edits of a matching text probe the boundary of the language.
std::string mutate(std::string text, const std::vector<std::string>& pieces, std::mt19937& rng) {
  const auto position = [&](size_t size) { return size == 0 ? 0 : rng() % (size + 1); };
  switch (rng() % 6) {
    case 0:
      if (!text.empty()) text.erase(rng() % text.size(), 1);
      break;
    case 1:
      if (!text.empty()) text[rng() % text.size()] = static_cast<char>(rng() % 256);
      break;
    case 2:
      text.insert(position(text.size()), 1, static_cast<char>(rng() % 128));
      break;
    case 3:
      text.insert(position(text.size()), pieces[rng() % pieces.size()]);
      break;
    case 4:
      text.resize(position(text.size()));
      break;
    default: {
      const size_t from = position(text.size());
      const size_t length = std::min<size_t>(rng() % 6, text.size() - std::min(from, text.size()));
      text.insert(from, text.substr(from, length));
    }
  }
  return text;
}

std::string printable(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b < 0x7F && b != '\\') {
      out += c;
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[b >> 4];
      out += kHex[b & 15];
    }
  }
  return out;
}

// The patterns every property test runs on. Each line says what it exercises.
const std::vector<std::string>& corpus() {
  static const std::vector<std::string> patterns = {
      // Concatenation, alternation, the quantifiers, empty pieces, nesting.
      "abc",
      "a|b|c",
      "ab*c",
      "a+b?",
      "(ab|cd)*e",
      "(?:a|bc){2,4}d",
      "x{3}",
      "x{2,}",
      "x{0,2}y{1,3}",
      "((a|b)c?){0,3}",
      "",
      "()",
      "a||b",
      "(|a)+",
      "(a*)*b",
      "(a|ab)(c|bcd)(d*)",
      "((ab)*|c)+d?",
      "(a(b(c|d)*)+)?e",
      "a{0}b",
      "(?:a{2}){3}",
      // The classic subset blow-up, small enough to build: the fourth symbol from the end.
      "(a|b)*a(a|b){3}",
      // A leading ^ and a trailing $ change nothing.
      "^abc$",
      "^(a|b)+$",
      "^",
      "$",
      // Escapes of every kind.
      "\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$\\/\\-\\\\",
      "\\n\\r\\t\\f\\v\\0",
      "\\x41\\x7e\\x0a",
      "\\u00e9\\u20ac",
      "\\d+\\.\\d*",
      "\\w+@\\w+",
      "\\s*x\\s*",
      "\\D\\W\\S",
      "\\\"\\:\\#",
      // Classes: ranges, negation, escapes inside, literal '-' at either end, specials as literals.
      "[abc]+",
      "[a-z0-9_]{1,5}",
      "[^abc]*",
      "[^a-z]",
      "[-a]",
      "[a-]",
      "[\\d\\s]+",
      "[^\\d\\w]",
      "[\\]\\[\\-\\\\]",
      "[.*+?(){}|$]",
      "[a^]",
      "[a-c-e]",
      // Unicode: literals, ranges within and across UTF-8 lengths (7F/80, 7FF/800, FFFF/10000),
      // around the surrogates, negated classes against multibyte text, and '.'.
      "é+",
      "[à-ÿ]+",
      "[\\u0100-\\u017f]{2}",
      "[^é]",
      "[^\\u0000-\\u007f]+",
      "[€-\\uffff]",
      "[😀-😏]+",
      "[^😀]",
      "[\\u007f-\\u0081]",
      "[\\u07ff-\\u0801]",
      "[\\uffff𐀀]",
      "[\\ud7ff\\ue000]",
      "[\\ud000-\\ue0ff]+",
      "[\\u0080-\\u07ff]",
      "[^\\u0800-\\uffff]",
      "[^\\u0080-\\u10ffff]",
      "[\\u1000-\\u1fff]",
      ".",
      ".*",
      ".{2,3}",
      "[^\\n]*\\n",
      "a.c",
      "a(bc[^\\d\\D]|d)e|x[^\\d\\D]*",
      "[^\"\\\\]*",
      "[^\\s]+",
      "[^\\w\\d]",
      // \s with the Unicode spaces, and its negation.
      "\\s+",
      "a\\sb",
      "[\\sx]+",
      "\\S+",
      "\\S\\s\\S",
      // What JSON schemas turn into.
      "\"([^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4})*\"",
      "-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?",
      "(true|false|null)",
      "\\[(\\d+(,\\s?\\d+)*)?\\]",
      "\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?(Z|[+-]\\d{2}:\\d{2})",
      "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
      "\\{\"name\":[ ]?\"([^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4}){0,40}\",[ ]?\"age\":[ "
      "]?-?(0|[1-"
      "9][0-9]{0,15})\\}",
  };
  return patterns;
}

// ---- Agreement with PCRE2.

TEST(RegexDfaReference, AgreesWithPcre2OnRandomWalkedAndMutatedTexts) {
  const std::vector<std::string> extra = extra_pieces();
  uint32_t seed = 1;
  for (const std::string& pattern : corpus()) {
    SCOPED_TRACE("pattern " + pattern);
    const RegexDfa dfa = compile_ok(pattern);
    const Pcre2Reference pcre(pattern, Pcre2Reference::dialect());
    ASSERT_TRUE(pcre.ok()) << pcre.error();
    std::mt19937 rng(seed++);
    const std::vector<std::string> own = pattern_pieces(pattern);
    std::vector<std::string> pieces = own;
    pieces.insert(pieces.end(), extra.begin(), extra.end());
    int mismatches = 0;
    const auto check = [&](const std::string& text) {
      const bool expected = pcre.matches(text);
      if (dfa.matches(text) != expected && ++mismatches <= 5) {
        ADD_FAILURE() << "text \"" << printable(text) << "\": PCRE2 says " << expected;
      }
    };
    // Random texts from the pattern's own characters and the extra pieces: mostly non-matches,
    // which catch the DFA accepting too much, and the odd match where literals line up.
    for (int i = 0; i < 300; ++i)
      check(random_text(own, extra, rng));
    // Texts the DFA generates must match in PCRE2 too; their mutations sit on the language's edge
    // and catch the DFA accepting too little as much as too much.
    const std::vector<int> distance = distance_to_accept(dfa);
    for (int i = 0; i < 60; ++i) {
      const std::string text = random_walk(dfa, distance, rng);
      EXPECT_TRUE(dfa.matches(text));
      check(text);
      std::string mutated = text;
      for (int k = 0; k < 8; ++k) {
        mutated = mutate(k % 3 == 0 ? text : mutated, pieces, rng);
        check(mutated);
      }
      check(text + random_walk(dfa, distance, rng));
    }
  }
}

// Every string up to a length over a small alphabet: for ASCII patterns this leaves no gap for
// a wrong state to hide in.
TEST(RegexDfaReference, AgreesWithPcre2OnEveryShortTextOverSmallAlphabets) {
  const struct {
    std::string pattern;
    std::string alphabet;
    int max_length;
  } cases[] = {
      {"(a|b)*a(a|b){3}", "ab", 9},
      {"(ab|cd)*e", "abcde", 6},
      {"(?:a|bc){2,4}d", "abcd", 7},
      {"((a|b)c?){0,3}", "abc", 7},
      {"(|a)+b*", "ab", 8},
      {"(a|ab)(c|bcd)(d*)", "abcd", 7},
      {"x{2,4}y?", "xy", 8},
      {"[^ab]{1,3}", "abc\n", 5},
      {"a.b", "ab\n\r", 5},
      {"[a-c]+-?[b-d]*", "abcd-", 6},
      {"(a(b(c|d)*)+)?e", "abcde", 6},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("pattern " + c.pattern);
    const RegexDfa dfa = compile_ok(c.pattern);
    const Pcre2Reference pcre(c.pattern, Pcre2Reference::dialect());
    ASSERT_TRUE(pcre.ok()) << pcre.error();
    std::vector<std::string> layer = {""};
    int mismatches = 0;
    for (int length = 0; length <= c.max_length; ++length) {
      std::vector<std::string> longer;
      for (const std::string& text : layer) {
        if (dfa.matches(text) != pcre.matches(text) && ++mismatches <= 5) {
          ADD_FAILURE() << "text \"" << printable(text) << "\": PCRE2 says " << pcre.matches(text);
        }
        for (const char a : c.alphabet)
          longer.push_back(text + a);
      }
      layer = std::move(longer);
    }
  }
}

TEST(RegexDfaReference, CharacterClassesAgreeWithPcre2OnEveryCodePoint) {
  // Each class against all 1.1 million code points, one at a time: the UTF-8 split of the ranges
  // is where an off-by-one at a length or surrogate boundary would hide.
  for (const std::string pattern : {".", "[^é]", "\\S", "\\s", "\\W", "[^\\u0080-\\u07ff]",
                                    "[\\u07ff-\\u0801𐀀-😀]", "[^\\ud7ff\\ue000]", "[^\\n-\\uffff]"}) {
    SCOPED_TRACE("pattern " + pattern);
    const RegexDfa dfa = compile_ok(pattern);
    const Pcre2Reference pcre(pattern, Pcre2Reference::dialect());
    ASSERT_TRUE(pcre.ok()) << pcre.error();
    int mismatches = 0;
    for (char32_t c = 0; c <= 0x10FFFF; ++c) {
      if (c >= 0xD800 && c <= 0xDFFF) continue;
      const std::string text = utf8(c);
      if (dfa.matches(text) != pcre.matches(text) && ++mismatches <= 5) {
        ADD_FAILURE() << "U+" << std::hex << static_cast<uint32_t>(c) << ": PCRE2 says "
                      << pcre.matches(text);
      }
    }
  }
}

// ---- Dialect details PCRE2 cannot check.

TEST(RegexDfaDialect, SurrogatePairEscapeIsOneCharacter) {
  const RegexDfa dfa = compile_ok("\\uD83D\\uDE00+");
  EXPECT_TRUE(dfa.matches("😀"));
  EXPECT_TRUE(dfa.matches("😀😀"));
  EXPECT_FALSE(dfa.matches(""));
  EXPECT_FALSE(dfa.matches("\xED\xA0\xBD\xED\xB8\x80"));  // the halves as CESU-8: not UTF-8
}

TEST(RegexDfaDialect, NegatedSpaceInsideAClassIsTheComplementOfEcmaScriptSpace) {
  const RegexDfa dfa = compile_ok("[\\S\\n]+");
  EXPECT_TRUE(dfa.matches("ab\n"));
  EXPECT_TRUE(dfa.matches("é😀"));
  EXPECT_FALSE(dfa.matches("a b"));
  EXPECT_FALSE(dfa.matches("a\u3000b"));
  EXPECT_FALSE(dfa.matches("a\u00a0"));
  EXPECT_FALSE(dfa.matches("\t"));
}

TEST(RegexDfaDialect, AnchorsAtTheEndsChangeNothingAndEscapedOnesAreLiterals) {
  EXPECT_TRUE(compile_ok("^").matches(""));
  EXPECT_TRUE(compile_ok("$").matches(""));
  EXPECT_TRUE(compile_ok("^$").matches(""));
  EXPECT_TRUE(compile_ok("^ab$").matches("ab"));
  EXPECT_TRUE(compile_ok("\\^a\\$").matches("^a$"));
  EXPECT_TRUE(compile_ok("[$^]+").matches("$^"));
}

TEST(RegexDfaDialect, StateNumbersAreDeterministic) {
  const std::string pattern = corpus().back();
  const RegexDfa a = compile_ok(pattern);
  const RegexDfa b = compile_ok(pattern);
  ASSERT_EQ(a.num_states(), b.num_states());
  EXPECT_EQ(a.start(), 0);
  for (int s = 0; s < a.num_states(); ++s) {
    ASSERT_EQ(a.accepting(s), b.accepting(s));
    for (int byte = 0; byte < 256; ++byte)
      ASSERT_EQ(a.next(s, static_cast<uint8_t>(byte)), b.next(s, static_cast<uint8_t>(byte)));
  }
}

// Moore's refinement, the plain way: split states by acceptance, then by the blocks their 256
// moves lead to, until nothing changes. A DFA is minimal when no two states end up together.
int count_distinguishable_states(const RegexDfa& dfa) {
  const int n = dfa.num_states();
  std::vector<int> block(static_cast<size_t>(n));
  for (int s = 0; s < n; ++s)
    block[static_cast<size_t>(s)] = dfa.accepting(s) ? 1 : 0;
  int count = 0;
  while (true) {
    std::map<std::vector<int>, int> ids;
    std::vector<int> next(static_cast<size_t>(n));
    for (int s = 0; s < n; ++s) {
      std::vector<int> signature = {block[static_cast<size_t>(s)]};
      for (int b = 0; b < 256; ++b) {
        const int32_t t = dfa.next(s, static_cast<uint8_t>(b));
        signature.push_back(t == RegexDfa::kDead ? -1 : block[static_cast<size_t>(t)]);
      }
      next[static_cast<size_t>(s)] = ids.emplace(signature, static_cast<int>(ids.size())).first->second;
    }
    if (static_cast<int>(ids.size()) == count) return count;
    count = static_cast<int>(ids.size());
    block = std::move(next);
  }
}

TEST(RegexDfaDialect, TheAutomatonIsMinimal) {
  for (const std::string& pattern : corpus()) {
    SCOPED_TRACE("pattern " + pattern);
    const RegexDfa dfa = compile_ok(pattern);
    if (dfa.num_states() > 600) continue;
    EXPECT_EQ(count_distinguishable_states(dfa), dfa.num_states());
  }
  // Equal languages, equal automata.
  EXPECT_EQ(compile_ok("(a|b)*").num_states(), 1);
  EXPECT_EQ(compile_ok("[\\u0080-\\u07ff]{3}").num_states(),
            compile_ok("[\\u0080-\\u07ff][\\u0080-\\u07ff]{2}").num_states());
}

// ---- Errors.

TEST(RegexDfaErrors, NameTheConstructAndItsByteOffset) {
  const struct {
    std::string pattern;
    std::string message;  // a part of the message
  } cases[] = {
      // Constructs other engines have and an automaton cannot express (or the dialect leaves out).
      {"ab(?=c)", "lookahead (?=...) at byte 2 is not supported"},
      {"(?!a)b", "negative lookahead (?!...) at byte 0"},
      {"x(?<=a)b", "lookbehind (?<=...) at byte 1"},
      {"(?<!a)b", "negative lookbehind (?<!...) at byte 0"},
      {"(?<n>a)", "named group (?<name>...) at byte 0"},
      {"(?P<n>a)", "named group (?<name>...) at byte 0"},
      {"a(?'n'a)", "named group (?<name>...) at byte 1"},
      {"(?i)abc", "inline flags (?i...) at byte 0"},
      {"(?>a)", "atomic group (?>...) at byte 0"},
      {"(?#x)a", "comment (?#...) at byte 0"},
      {"(?", "group syntax '(?' at byte 0"},
      {"(a)\\1", "backreference \\1 at byte 3"},
      {"\\k<n>", "named backreference \\k at byte 0"},
      {"a\\b", "word boundary \\b at byte 1"},
      {"\\Bx", "non-boundary \\B at byte 0"},
      {"x\\z", "anchor \\z at byte 1"},
      {"\\p{L}", "Unicode property \\p at byte 0"},
      {"a\\cA", "control escape \\c at byte 1"},
      {"\\Qa\\E", "quoting \\Q at byte 0"},
      {"a^b", "'^' at byte 1 is not supported"},
      {"(^a)", "'^' at byte 1"},
      {"a$b", "'$' at byte 1 is not supported"},
      {"a*?", "lazy quantifier '*?' at byte 1"},
      {"a{2,3}?", "lazy quantifier '{2,3}?' at byte 1"},
      {"ab++", "possessive quantifier '++' at byte 2"},
      // Unbalanced groups and classes, stray closers.
      {"(ab", "'(' at byte 0 is never closed"},
      {"a(b(c)", "'(' at byte 1 is never closed"},
      {"ab)", "unbalanced ')' at byte 2"},
      {"[abc", "'[' at byte 0 is never closed"},
      {"x[^", "'[' at byte 1 is never closed"},
      {"a]", "unbalanced ']' at byte 1"},
      {"a}", "unbalanced '}' at byte 1"},
      // Quantifiers with nothing to repeat, malformed or out of order.
      {"*a", "quantifier '*' at byte 0 has nothing to repeat"},
      {"a|+b", "quantifier '+' at byte 2 has nothing to repeat"},
      {"(?:?a)", "quantifier '?' at byte 3 has nothing to repeat"},
      {"^*", "quantifier '*' at byte 1 has nothing to repeat"},
      {"{2}a", "repeat {2} at byte 0 has nothing to repeat"},
      {"a{3,2}", "repeat {3,2} at byte 1 has its minimum above its maximum"},
      {"a{1001}", "repeat count 1001 at byte 1 is above the limit of 1000"},
      {"a{2,99999999999999999999}", "repeat count 99999999999999999999 at byte 1 is above the limit"},
      {"a{,3}", "'{' at byte 1 does not start a repeat {n}, {n,} or {n,m}"},
      {"a{x}", "'{' at byte 1 does not start a repeat"},
      {"a{2", "'{' at byte 1 does not start a repeat"},
      {"a**", "quantifier at byte 2 follows another quantifier"},
      {"a{2}{3}", "quantifier at byte 4 follows another quantifier"},
      // Classes.
      {"[]a]", "']' first in a class at byte 1"},
      {"[^]a]", "']' first in a class at byte 2"},
      {"[z-a]", "class range z-a at byte 1 is out of order"},
      {"x[b-a]", "class range b-a at byte 2 is out of order"},
      {"[\\d-z]", "a class escape as a range end at byte 1"},
      {"[a-\\w]", "a class escape as a range end at byte 3"},
      {"[[:alpha:]]", "unescaped '[' in a class at byte 1"},
      {"[\\b]", "backspace \\b in a class at byte 1"},
      // Escapes.
      {"\\q", "unknown escape \\q at byte 0"},
      {"a\\é", "unknown escape \\é at byte 1"},
      {"abc\\", "trailing backslash at byte 3"},
      {"\\x4", "\\x must be followed by two hex digits (\\xHH) at byte 0"},
      {"\\x{41}", "\\x{...} at byte 0 is not supported"},
      {"ab\\u12", "\\u must be followed by four hex digits (\\uHHHH) at byte 2"},
      {"\\u{1F600}", "\\u{...} at byte 0 is not supported"},
      {"\\ud800", "a lone surrogate \\ud800 at byte 0"},
      {"\\uDE00\\uD83D", "a lone surrogate \\uDE00 at byte 0"},
      {"[\\ud83d\\ude00]", "a surrogate in a class \\ud83d at byte 1"},
      {"\\01", "octal escape \\01 at byte 0"},
      // The pattern must be UTF-8.
      {"ab\xFF", "invalid UTF-8 at byte 2"},
      {"a\xC3(", "invalid UTF-8 at byte 1"},
      {"\xED\xA0\x80", "invalid UTF-8 at byte 0"},
      // Nothing matches.
      {"[^\\s\\S]", "matches no text"},
      {"a[^\\d\\D]b|c[^\\w\\W]", "matches no text"},
      {std::string(300, '(') + std::string(300, ')'), "groups nest more than 200 deep at byte 200"},
  };
  for (const auto& c : cases) {
    const std::string message = compile_error(c.pattern);
    EXPECT_NE(message.find(c.message), std::string::npos)
        << "pattern " << c.pattern << "\n  message: " << message << "\n  expected: " << c.message;
    EXPECT_EQ(message.rfind("regex: ", 0), 0U) << message;
  }
}

TEST(RegexDfaErrors, LeaveTheOutputUntouched) {
  RegexDfa dfa = compile_ok("abc");
  EXPECT_FALSE(RegexDfa::compile("a(", {}, &dfa).ok());
  EXPECT_FALSE(RegexDfa::compile("[^\\s\\S]", {}, &dfa).ok());
  EXPECT_TRUE(dfa.matches("abc"));
  EXPECT_FALSE(dfa.matches("ab"));
}

// ---- Dead ends and UTF-8.

// A UTF-8 validator as an automaton: the state says what the next byte must be (Unicode table
// 3-7). kBoundary: between characters; kCont1..3: that many continuation bytes (80-BF) to go;
// the others: the one restricted second byte after E0, ED, F0, F4, then continuations.
enum Utf8State { kBoundary, kCont1, kCont2, kCont3, kAfterE0, kAfterED, kAfterF0, kAfterF4, kInvalid };

Utf8State utf8_step(Utf8State state, uint8_t b) {
  const bool cont = b >= 0x80 && b <= 0xBF;
  switch (state) {
    case kBoundary:
      if (b < 0x80) return kBoundary;
      if (b >= 0xC2 && b <= 0xDF) return kCont1;
      if (b == 0xE0) return kAfterE0;
      if (b == 0xED) return kAfterED;
      if (b >= 0xE1 && b <= 0xEF) return kCont2;
      if (b == 0xF0) return kAfterF0;
      if (b >= 0xF1 && b <= 0xF3) return kCont3;
      if (b == 0xF4) return kAfterF4;
      return kInvalid;
    case kCont1:
      return cont ? kBoundary : kInvalid;
    case kCont2:
      return cont ? kCont1 : kInvalid;
    case kCont3:
      return cont ? kCont2 : kInvalid;
    case kAfterE0:
      return b >= 0xA0 && b <= 0xBF ? kCont1 : kInvalid;
    case kAfterED:
      return b >= 0x80 && b <= 0x9F ? kCont1 : kInvalid;
    case kAfterF0:
      return b >= 0x90 && b <= 0xBF ? kCont2 : kInvalid;
    case kAfterF4:
      return b >= 0x80 && b <= 0x8F ? kCont2 : kInvalid;
    default:
      return kInvalid;
  }
}

// Walks the DFA and the validator together over every reachable pair: no live move may take an
// invalid byte, and no accepting state may sit inside a character. Since every live state can
// finish, this proves the DFA accepts only UTF-8.
void expect_only_utf8(const RegexDfa& dfa) {
  std::set<std::pair<int32_t, Utf8State>> seen = {{dfa.start(), kBoundary}};
  std::vector<std::pair<int32_t, Utf8State>> queue(seen.begin(), seen.end());
  for (size_t i = 0; i < queue.size(); ++i) {
    const auto [state, u] = queue[i];
    ASSERT_TRUE(!dfa.accepting(state) || u == kBoundary) << "accepts in the middle of a character";
    for (int b = 0; b < 256; ++b) {
      const int32_t next = dfa.next(state, static_cast<uint8_t>(b));
      if (next == RegexDfa::kDead) continue;
      const Utf8State next_u = utf8_step(u, static_cast<uint8_t>(b));
      ASSERT_NE(next_u, kInvalid) << "state " << state << " takes byte " << b << " where UTF-8 cannot";
      if (seen.insert({next, next_u}).second) queue.emplace_back(next, next_u);
    }
  }
}

TEST(RegexDfaDeadEnds, EveryStateIsReachableAndCanStillFinish) {
  std::mt19937 rng(7);
  for (const std::string& pattern : corpus()) {
    SCOPED_TRACE("pattern " + pattern);
    const RegexDfa dfa = compile_ok(pattern);
    const int n = dfa.num_states();
    ASSERT_GT(n, 0);
    ASSERT_EQ(dfa.start(), 0);
    // Every entry is a state or kDead, and every state is reachable from the start.
    std::vector<bool> reached(static_cast<size_t>(n), false);
    std::vector<int32_t> queue = {dfa.start()};
    reached[0] = true;
    for (size_t i = 0; i < queue.size(); ++i) {
      for (int b = 0; b < 256; ++b) {
        const int32_t t = dfa.next(queue[i], static_cast<uint8_t>(b));
        if (t == RegexDfa::kDead) continue;
        ASSERT_TRUE(t >= 0 && t < n) << t;
        if (!reached[static_cast<size_t>(t)]) {
          reached[static_cast<size_t>(t)] = true;
          queue.push_back(t);
        }
      }
    }
    EXPECT_EQ(queue.size(), static_cast<size_t>(n)) << "unreachable states";
    // From random live states, a forward search finds an accepting state.
    for (int k = 0; k < 20; ++k) {
      const int32_t from = static_cast<int32_t>(rng() % static_cast<unsigned>(n));
      std::vector<bool> seen(static_cast<size_t>(n), false);
      std::vector<int32_t> frontier = {from};
      seen[static_cast<size_t>(from)] = true;
      bool finished = false;
      for (size_t i = 0; i < frontier.size() && !finished; ++i) {
        finished = dfa.accepting(frontier[i]);
        for (int b = 0; b < 256 && !finished; ++b) {
          const int32_t t = dfa.next(frontier[i], static_cast<uint8_t>(b));
          if (t == RegexDfa::kDead || seen[static_cast<size_t>(t)]) continue;
          seen[static_cast<size_t>(t)] = true;
          frontier.push_back(t);
        }
      }
      EXPECT_TRUE(finished) << "state " << from << " cannot reach acceptance";
    }
  }
}

TEST(RegexDfaDeadEnds, BranchesThatCannotMatchAreCutAtTheirFirstByte) {
  // After "a", the branch "bc[^\s\S]" can never finish, so 'b' must be dead right away, not
  // after "bc".
  const RegexDfa dfa = compile_ok("a(bc[^\\s\\S]|d)");
  const int32_t after_a = dfa.next(dfa.start(), 'a');
  ASSERT_NE(after_a, RegexDfa::kDead);
  EXPECT_EQ(dfa.next(after_a, 'b'), RegexDfa::kDead);
  EXPECT_NE(dfa.next(after_a, 'd'), RegexDfa::kDead);
  EXPECT_EQ(dfa.num_states(), 3);
  // A loop whose body cannot finish leaves only what follows it.
  const RegexDfa loop = compile_ok("(xy[^\\d\\D])*z");
  EXPECT_EQ(loop.next(loop.start(), 'x'), RegexDfa::kDead);
  EXPECT_EQ(loop.num_states(), 2);
  // A character class whose only members are cut off halfway: no lead byte of a 4-byte
  // character may survive when what follows cannot match.
  const RegexDfa astral = compile_ok("a|😀[^\\w\\W]");
  EXPECT_EQ(astral.next(astral.start(), 0xF0), RegexDfa::kDead);
  EXPECT_EQ(astral.num_states(), 2);
}

TEST(RegexDfaDeadEnds, AcceptsOnlyUtf8) {
  std::vector<std::string> patterns = corpus();
  for (const char* p : {".", ".*", "[^a]*", "\\uD83D\\uDE00?x", "\\D*", "\\W+", "\\S*", "[^\\u0080-\\u07ff]*",
                        "[^😀]+x", "(.|\\n)*"})
    patterns.emplace_back(p);
  for (const std::string& pattern : patterns) {
    SCOPED_TRACE("pattern " + pattern);
    expect_only_utf8(compile_ok(pattern));
  }
}

TEST(RegexDfaDeadEnds, DotTakesEveryWholeCharacterButNewlineAndNothingElse) {
  const RegexDfa dot = compile_ok(".");
  // All one- and two-byte texts: exactly the characters other than \n.
  for (int a = 0; a < 256; ++a) {
    const std::string one(1, static_cast<char>(a));
    EXPECT_EQ(dot.matches(one), a < 0x80 && a != '\n') << a;
    for (int b = 0; b < 256; ++b) {
      const std::string two = one + static_cast<char>(b);
      ASSERT_EQ(dot.matches(two), utf8_char_len(two) == 2) << a << " " << b;
    }
  }
  // Three- and four-byte texts after the leads with restricted second bytes, and random ones.
  for (const int lead : {0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF4, 0xF5}) {
    for (int b = 0; b < 256; ++b) {
      for (int c = 0; c < 256; ++c) {
        const std::string three = {static_cast<char>(lead), static_cast<char>(b), static_cast<char>(c)};
        ASSERT_EQ(dot.matches(three), utf8_char_len(three) == 3) << lead << " " << b << " " << c;
      }
    }
  }
  std::mt19937 rng(3);
  for (int i = 0; i < 200000; ++i) {
    // A lead from EE to F5, then bytes that are continuations half the time.
    std::string four(1, static_cast<char>(0xEE + rng() % 8));
    for (int k = 0; k < 3; ++k)
      four += static_cast<char>(rng() % 2 ? rng() % 256 : 0x80 + rng() % 64);
    ASSERT_EQ(dot.matches(four), utf8_char_len(four) == 4) << printable(four);
  }
}

// ---- Limits.

TEST(RegexDfaLimits, TooManyDfaStatesIsAnErrorAndComesQuickly) {
  // The n-th symbol from the end needs 2^n states: with n = 20, far more than 10000.
  const auto start = std::chrono::steady_clock::now();
  const std::string message = compile_error("(a|b)*a(a|b){20}");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(message.find("needs more than 10000 DFA states; simplify"), std::string::npos) << message;
  EXPECT_LT(seconds, 10.0);
  // The same blow-up over whole Unicode characters.
  EXPECT_NE(compile_error(".*é.{16}").find("more than 10000 DFA states"), std::string::npos);

  // The limit is exact: "abc" needs 4 states (before a, b, c and after), "abcd" 5.
  RegexLimits limits;
  limits.max_dfa_states = 4;
  EXPECT_EQ(compile_ok("abc", limits).num_states(), 4);
  EXPECT_NE(compile_error("abcd", limits).find("needs more than 4 DFA states"), std::string::npos);
}

TEST(RegexDfaLimits, RepeatCountsAboveTheLimitAreErrors) {
  EXPECT_TRUE(compile_ok("a{1000}").matches(std::string(1000, 'a')));
  EXPECT_NE(compile_error("a{1001}").find("above the limit of 1000"), std::string::npos);
  RegexLimits limits;
  limits.max_repeat = 5;
  EXPECT_TRUE(compile_ok("a{2,5}", limits).matches("aaaaa"));
  EXPECT_NE(compile_error("a{6}", limits).find("repeat count 6 at byte 1 is above the limit of 5"),
            std::string::npos);
  EXPECT_NE(compile_error("a{2,6}", limits).find("repeat count 6 at byte 1"), std::string::npos);
  EXPECT_NE(compile_error("a{7,}", limits).find("repeat count 7 at byte 1"), std::string::npos);
}

TEST(RegexDfaLimits, NestedRepeatsStopAtTheNfaLimitQuickly) {
  const auto start = std::chrono::steady_clock::now();
  const std::string message = compile_error("((a{1000}){1000}){1000}");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(message.find("needs more than 200000 NFA states"), std::string::npos) << message;
  EXPECT_LT(seconds, 10.0);
  RegexLimits limits;
  limits.max_nfa_states = 50;
  EXPECT_NE(compile_error("[a-z]{60}", limits).find("more than 50 NFA states"), std::string::npos);
}

TEST(RegexDfaLimits, CostlyConstructionsAreRefusedQuickly) {
  // Under the state limit for a long while, yet every DFA state stands for thousands of NFA
  // states: without a bound on the work this takes half a minute and gigabytes.
  const auto start = std::chrono::steady_clock::now();
  const std::string message = compile_error("([ab]{0,200}){0,200}b");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(message.find("too costly to compile"), std::string::npos) << message;
  EXPECT_LT(seconds, 10.0);
}

TEST(RegexDfaLimits, RepeatsOfTheEmptyTextCostNothing) {
  // A hang found with a hand-made input to fuzz_response_format: a counted repeat of an empty group
  // was expanded copy by copy without adding an NFA state, so the state limit never stopped nested
  // counts; this pattern took 10^12 steps. A repeat of the empty text is now the empty text, and
  // empty items of a sequence are left out.
  const auto start = std::chrono::steady_clock::now();
  const RegexDfa empty = compile_ok("((((){1000}){1000}){1000}){1000}");
  EXPECT_EQ(empty.num_states(), 1);
  EXPECT_TRUE(empty.matches(""));
  EXPECT_FALSE(empty.matches("a"));
  const RegexDfa mixed = compile_ok("(?:a(?:)()((){9}){7}b{0}){1000}x((){1000}|()){3}");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 10.0);
  EXPECT_TRUE(mixed.matches(std::string(1000, 'a') + "x"));
  EXPECT_FALSE(mixed.matches(std::string(999, 'a') + "x"));
  EXPECT_FALSE(mixed.matches(std::string(1000, 'a') + "bx"));
  // What is not empty still counts toward the limits.
  EXPECT_NE(compile_error("((()a()){1000}){1000}").find("needs more than 200000 NFA states"),
            std::string::npos);
}

TEST(RegexDfaLimits, GroupsNestUpTo200Deep) {
  const std::string deep = std::string(200, '(') + "a" + std::string(200, ')');
  EXPECT_TRUE(compile_ok(deep).matches("a"));
  EXPECT_NE(compile_error("(" + deep + ")").find("groups nest more than 200 deep at byte 200"),
            std::string::npos);
}

TEST(RegexDfaLimits, PatternLengthIsLimited) {
  RegexLimits limits;
  limits.max_pattern_bytes = 10;
  compile_ok("abcdefghij", limits);
  EXPECT_NE(compile_error("abcdefghijk", limits).find("11 bytes, more than the limit of 10"),
            std::string::npos);
}

TEST(RegexDfaLimits, AJsonSchemaSizedPatternCompiles) {
  // An object with several string and number properties, as json_schema_to_regex writes them:
  // a few KB of pattern, thousands of states.
  std::string pattern = "\\{";
  const std::string string_value = "\"([^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4}){0,40}\"";
  const std::string number_value = "-?(0|[1-9][0-9]{0,15})(\\.[0-9]{1,16})?";
  for (int i = 0; i < 8; ++i) {
    if (i > 0) pattern += ",[ ]?";
    pattern += "\"field" + std::to_string(i) + "\":[ ]?" + (i % 2 == 0 ? string_value : number_value);
  }
  pattern += "\\}";
  const RegexDfa dfa = compile_ok(pattern);
  EXPECT_GT(dfa.num_states(), 500);
  EXPECT_TRUE(
      dfa.matches("{\"field0\": \"caf\xC3\xA9 \\u00e9\",\"field1\":-12.5, \"field2\":\"\", \"field3\":0, "
                  "\"field4\":\"x\", "
                  "\"field5\":1, \"field6\":\"\\n\", \"field7\":7}"));
  EXPECT_FALSE(dfa.matches("{\"field0\": \"\n\"}"));
}

}  // namespace
}  // namespace kvserve
