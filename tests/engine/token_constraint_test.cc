// Structured output at the token level (engine/token_constraint.h): the allowed set of every state
// equals what an independent regex engine (PCRE2's partial matching) says may follow the text,
// also for vocabularies that cannot spell every byte; class-shared compiling gives the per-state
// masks; the cache; and Tokenizer::token_bytes, the bytes that matching reads, against each
// tokenizer's decode(). The engine under a constraint: tests/engine/engine_sampling_test.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/regex_dfa.h"
#include "engine/response_format.h"
#include "engine/sampler.h"
#include "engine/token_constraint.h"
#include "engine/tokenizer.h"
#include "engine/utf8.h"
#include "tests/engine/pcre2_reference.h"

namespace kvserve {
namespace {

using testing::Pcre2Reference;

bool bit(std::span<const uint32_t> mask, TokenId id) {
  return token_allowed(mask, id);
}

// A small vocabulary that has what makes token-level matching hard: tokens that span several
// pattern pieces ("\":", "123"), a token that is a prefix of another ("a", "ab", "abc"), a
// two-byte character whole and split into its bytes, and an EOS with no bytes.
std::vector<std::string> small_vocabulary() {
  std::vector<std::string> v;
  for (int c = 0x20; c < 0x7f; ++c)
    v.emplace_back(1, static_cast<char>(c));
  for (const char* t : {"ab",   "abc",          "12",   "123", "007", "{\"", "\":", "\": ",     "\",",
                        "true", "false",        "null", ", ",  "  ",  "\\u", "\\n", "\xC3\xA9", "\xC3",
                        "\xA9", "\xE2\x82\xAC", "ye",   "yes", "no",  "\n",  "-1",  ".5",       "e+"})
    v.emplace_back(t);
  v.emplace_back();  // EOS
  return v;
}

TEST(TokenConstraint, AllowedSetsEqualPcre2PartialMatchingAlongRandomWalks) {
  const std::vector<std::string> tokens = small_vocabulary();
  const TokenId eos = static_cast<TokenId>(tokens.size() - 1);
  // Padding ids past the tokenizer's (the LM head is often wider) are never allowed.
  const int vocab_size = static_cast<int>(tokens.size()) + 5;
  auto vocab = std::make_shared<const TokenVocabulary>(tokens, vocab_size, std::vector<TokenId>{eos});
  const std::vector<std::string> patterns = {
      "(yes|no)",
      "[0-9]{1,3}(\\.[0-9]+)?",
      "\\{\"a\":[ ]?(true|false|null|-?[0-9]+)(,[ ]?\"b\":[ ]?\"[^\"\\\\]{0,4}\")?\\}",
      "[a-c]*x",
      "(\\u00e9|\\u20ac|[A-Z])+",
      "[^a-z\\n]{2,5}",
      ".{0,3}",
      "abc|ab|a",
  };
  std::mt19937 rng(7);
  for (const std::string& pattern : patterns) {
    SCOPED_TRACE(pattern);
    std::shared_ptr<const TokenConstraint> c;
    const Status s = TokenConstraint::compile(pattern, vocab, ConstraintLimits{}, &c);
    ASSERT_TRUE(s.ok()) << s.message();
    const Pcre2Reference ref(pattern, Pcre2Reference::utf_alt_bsux());
    EXPECT_TRUE(ref.ok()) << ref.error();
    for (int walk = 0; walk < 40; ++walk) {
      std::string text;
      int32_t state = c->start();
      for (int step = 0; step < 12; ++step) {
        const std::span<const uint32_t> allowed = c->allowed(state);
        ASSERT_EQ(allowed.size(), static_cast<size_t>((vocab_size + 31) / 32));
        std::vector<TokenId> choices;
        for (TokenId id = 0; id < vocab_size; ++id) {
          const bool expected = id == eos  ? ref.matches(text)
                                : id < eos ? ref.viable_prefix(text + tokens[static_cast<size_t>(id)])
                                           : false;
          ASSERT_EQ(bit(allowed, id), expected) << "text '" << text << "' token " << id;
          if (expected && id != eos) choices.push_back(id);
        }
        EXPECT_EQ(c->complete(state), ref.matches(text));
        if (choices.empty()) break;
        const TokenId pick = choices[rng() % choices.size()];
        text += tokens[static_cast<size_t>(pick)];
        state = c->advance(state, pick);
        ASSERT_NE(state, TokenConstraint::kDead);
      }
    }
    EXPECT_EQ(c->advance(c->start(), eos), TokenConstraint::kDead);
  }
}

// The masks by definition, one state and one token at a time, independent of compile()'s trie
// walks and state classes: a state is token-live when it is accepting or some token leads from it
// to a token-live state; a token is allowed when it leads to a token-live state, EOS when the
// state is accepting. Indexed by the automaton's state (RegexDfa numbers its states the same way
// for the same pattern).
std::vector<std::vector<uint32_t>> reference_masks(const std::string& pattern,
                                                   const std::vector<std::string>& tokens, int vocab_size,
                                                   const std::vector<TokenId>& eos) {
  RegexDfa dfa;
  EXPECT_TRUE(RegexDfa::compile(pattern, ConstraintLimits{}.regex, &dfa).ok());
  const auto n = static_cast<size_t>(dfa.num_states());
  const size_t num_tokens = tokens.size();
  std::vector<int32_t> target(n * num_tokens);
  for (size_t s = 0; s < n; ++s) {
    for (size_t id = 0; id < num_tokens; ++id)
      target[s * num_tokens + id] =
          tokens[id].empty() ? RegexDfa::kDead : dfa.walk(static_cast<int32_t>(s), tokens[id]);
  }
  std::vector<char> live(n);
  for (size_t s = 0; s < n; ++s)
    live[s] = dfa.accepting(static_cast<int32_t>(s)) ? 1 : 0;
  // Sweeps until nothing changes (backwards: states are numbered from the start, so one sweep
  // usually carries liveness all the way back).
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t s = n; s-- > 0;) {
      if (live[s] != 0) continue;
      for (size_t id = 0; id < num_tokens; ++id) {
        const int32_t t = target[s * num_tokens + id];
        if (t != RegexDfa::kDead && live[static_cast<size_t>(t)] != 0) {
          live[s] = 1;
          changed = true;
          break;
        }
      }
    }
  }
  const size_t words = static_cast<size_t>((vocab_size + 31) / 32);
  std::vector<std::vector<uint32_t>> masks(n, std::vector<uint32_t>(words));
  for (size_t s = 0; s < n; ++s) {
    for (size_t id = 0; id < num_tokens && id < static_cast<size_t>(vocab_size); ++id) {
      const int32_t t = target[s * num_tokens + id];
      const bool is_eos = std::find(eos.begin(), eos.end(), static_cast<TokenId>(id)) != eos.end();
      const bool allowed = is_eos ? dfa.accepting(static_cast<int32_t>(s))
                                  : t != RegexDfa::kDead && live[static_cast<size_t>(t)] != 0;
      if (allowed) masks[s][id / 32] |= 1u << (id % 32);
    }
  }
  return masks;
}

bool all_zero(std::span<const uint32_t> mask) {
  return std::all_of(mask.begin(), mask.end(), [](uint32_t w) { return w == 0; });
}

// c's masks are the reference's, exhausted() says which are all zero, advance() gives kDead for
// exactly the tokens that are not allowed, and an allowed token never leads where nothing may
// follow mid-pattern.
void expect_reference_masks(const TokenConstraint& c, const std::vector<std::vector<uint32_t>>& ref) {
  ASSERT_EQ(c.num_states(), ref.size());
  const TokenVocabulary& vocab = c.vocab();
  const std::span<const TokenId> eos = vocab.eos_ids();
  for (size_t s = 0; s < ref.size(); ++s) {
    const auto state = static_cast<int32_t>(s);
    const std::span<const uint32_t> mask = c.allowed(state);
    ASSERT_EQ(mask.size(), ref[s].size());
    for (TokenId id = 0; id < vocab.vocab_size(); ++id) {
      const bool expected = bit(ref[s], id);
      ASSERT_EQ(bit(mask, id), expected)
          << "state " << s << " token " << id << " '" << vocab.bytes(id) << "'";
      if (std::find(eos.begin(), eos.end(), id) != eos.end()) continue;
      const int32_t next = c.advance(state, id);
      ASSERT_EQ(next != TokenConstraint::kDead, expected) << "state " << s << " token " << id;
      if (expected) {
        ASSERT_TRUE(c.complete(next) || !c.exhausted(next)) << "state " << s << " token " << id;
      }
    }
    ASSERT_EQ(c.exhausted(state), all_zero(mask)) << "state " << s;
  }
  EXPECT_TRUE(c.exhausted(TokenConstraint::kDead));
}

// From every state that allowed tokens reach from the start, allowed tokens can still reach a
// complete one: no walk is ever stuck or doomed.
void expect_every_walk_can_complete(const TokenConstraint& c) {
  const TokenVocabulary& vocab = c.vocab();
  const size_t n = c.num_states();
  std::vector<std::vector<int32_t>> from(n);  // allowed edges, reversed
  std::vector<char> reached(n);
  std::vector<int32_t> queue{c.start()};
  reached[static_cast<size_t>(c.start())] = 1;
  for (size_t i = 0; i < queue.size(); ++i) {
    const int32_t s = queue[i];
    const std::span<const uint32_t> mask = c.allowed(s);
    for (TokenId id = 0; id < vocab.vocab_size(); ++id) {
      if (!bit(mask, id)) continue;
      const int32_t t = c.advance(s, id);
      if (t == TokenConstraint::kDead) continue;  // EOS
      from[static_cast<size_t>(t)].push_back(s);
      if (reached[static_cast<size_t>(t)] == 0) {
        reached[static_cast<size_t>(t)] = 1;
        queue.push_back(t);
      }
    }
  }
  std::vector<char> finishes(n);
  std::vector<int32_t> back;
  for (const int32_t s : queue) {
    if (c.complete(s)) {
      finishes[static_cast<size_t>(s)] = 1;
      back.push_back(s);
    }
  }
  for (size_t i = 0; i < back.size(); ++i) {
    for (const int32_t s : from[static_cast<size_t>(back[i])]) {
      if (finishes[static_cast<size_t>(s)] == 0) {
        finishes[static_cast<size_t>(s)] = 1;
        back.push_back(s);
      }
    }
  }
  for (const int32_t s : queue)
    ASSERT_TRUE(finishes[static_cast<size_t>(s)]) << "state " << s << " is reached but cannot complete";
}

std::vector<TokenId> allowed_ids(std::span<const uint32_t> mask, int vocab_size) {
  std::vector<TokenId> ids;
  for (TokenId id = 0; id < vocab_size; ++id) {
    if (bit(mask, id)) ids.push_back(id);
  }
  return ids;
}

// A vocabulary that lacks single bytes: a state the automaton could go on from may have no token
// that goes on from it. Here "b" leads into the middle of "bxy" and "bx" to just before its "y",
// and no token starts with 'x' or 'y'; "zz" leads into "zzzzq", whose 'q' no token has (two steps
// of liveness: "zz" twice, then nothing).
TEST(TokenConstraint, TokensIntoStatesNoTokenCanFinishAreNotAllowed) {
  const std::vector<std::string> tokens = {"a", "b", "c", "ab", "bx", "zz", ""};
  enum : TokenId { kA, kB, kC, kAB, kBX, kZZ, kEos };
  const int vocab_size = static_cast<int>(tokens.size());
  auto vocab = std::make_shared<const TokenVocabulary>(tokens, vocab_size, std::vector<TokenId>{kEos});
  const std::string pattern = "(a|bxy)*c|zzzzq";
  std::shared_ptr<const TokenConstraint> c;
  const Status s = TokenConstraint::compile(pattern, vocab, ConstraintLimits{}, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(allowed_ids(c->allowed(c->start()), vocab_size), (std::vector<TokenId>{kA, kC}));
  for (const TokenId id : {kB, kAB, kBX, kZZ})
    EXPECT_EQ(c->advance(c->start(), id), TokenConstraint::kDead) << tokens[static_cast<size_t>(id)];
  const int32_t after_a = c->advance(c->start(), kA);
  EXPECT_EQ(allowed_ids(c->allowed(after_a), vocab_size), (std::vector<TokenId>{kA, kC}));
  const int32_t done = c->advance(after_a, kC);
  EXPECT_TRUE(c->complete(done));
  EXPECT_EQ(allowed_ids(c->allowed(done), vocab_size), (std::vector<TokenId>{kEos}));
  EXPECT_FALSE(c->exhausted(done));
  expect_reference_masks(*c, reference_masks(pattern, tokens, vocab_size, {kEos}));
  expect_every_walk_can_complete(*c);

  // Random walks never get stuck: every allowed token leads where something may follow, up to EOS.
  std::mt19937 rng(5);
  for (int walk = 0; walk < 50; ++walk) {
    int32_t state = c->start();
    for (int step = 0; step < 30; ++step) {
      ASSERT_FALSE(c->exhausted(state));
      const std::vector<TokenId> ids = allowed_ids(c->allowed(state), vocab_size);
      const TokenId pick = ids[rng() % ids.size()];
      if (pick == kEos) break;
      state = c->advance(state, pick);
      ASSERT_NE(state, TokenConstraint::kDead);
    }
  }

  // Without the loop, no token of this vocabulary can begin a match.
  Status refused = TokenConstraint::compile("zzzzq|bxy", vocab, ConstraintLimits{}, &c);
  EXPECT_NE(refused.message().find("no token of this model"), std::string::npos) << refused.message();
  // Tokens that can go on forever but never finish: refused too, rather than left to run to
  // max_tokens.
  refused = TokenConstraint::compile("(ab)*y", vocab, ConstraintLimits{}, &c);
  EXPECT_NE(refused.message().find("no token of this model"), std::string::npos) << refused.message();
}

// SentencePiece without byte fallback: whole characters are tokens, their single bytes mostly are
// not. A lone lead byte, or two of the three bytes of '€', lead into a character that no token
// finishes.
std::vector<std::string> sparse_vocabulary() {
  std::vector<std::string> v;
  for (int c = 0x20; c < 0x7f; ++c)
    v.emplace_back(1, static_cast<char>(c));
  for (const char* t : {"\xC3\xA9", "\xE2\x82\xAC", "\xE6\x97\xA5\xE6\x9C\xAC", "\xC3", "\xE2\x82", "ab",
                        "abc", "\": ", " the", "\\u00", "12"})
    v.emplace_back(t);
  v.emplace_back();  // EOS
  return v;
}

TEST(TokenConstraint, PartialCharactersThatNoTokenFinishesAreNotAllowed) {
  const std::vector<std::string> tokens = sparse_vocabulary();
  const TokenId eos = static_cast<TokenId>(tokens.size() - 1);
  const int vocab_size = static_cast<int>(tokens.size());
  auto vocab = std::make_shared<const TokenVocabulary>(tokens, vocab_size, std::vector<TokenId>{eos});
  const std::string pattern = "\"[^\"]{0,8}\"";
  std::shared_ptr<const TokenConstraint> c;
  ASSERT_TRUE(TokenConstraint::compile(pattern, vocab, ConstraintLimits{}, &c).ok());
  const int32_t inside = c->advance(c->start(), '"' - 0x20);
  const auto id_of = [&](const std::string& t) {
    return static_cast<TokenId>(std::find(tokens.begin(), tokens.end(), t) - tokens.begin());
  };
  EXPECT_TRUE(bit(c->allowed(inside), id_of("\xC3\xA9")));
  EXPECT_TRUE(bit(c->allowed(inside), id_of("\xE2\x82\xAC")));
  EXPECT_FALSE(bit(c->allowed(inside), id_of("\xC3")));
  EXPECT_FALSE(bit(c->allowed(inside), id_of("\xE2\x82")));
  EXPECT_EQ(c->advance(inside, id_of("\xC3")), TokenConstraint::kDead);
  expect_reference_masks(*c, reference_masks(pattern, tokens, vocab_size, {eos}));
  expect_every_walk_can_complete(*c);
}

// A vocabulary of random pieces of JSON-ish text (UTF-8 characters whole and split) and a few long
// tokens, with every single byte or only the printable ASCII ones.
std::vector<std::string> random_vocabulary(bool every_byte, size_t size) {
  std::vector<std::string> v;
  std::set<std::string> seen;
  const auto add = [&](std::string t) {
    if (!t.empty() && seen.insert(t).second) v.push_back(std::move(t));
  };
  for (int b = every_byte ? 0 : 0x20; b < (every_byte ? 256 : 0x7f); ++b)
    add(std::string(1, static_cast<char>(b)));
  const std::vector<std::string> pieces = {
      "a",        "e",        "t",    " ",    "\"",  "\\",  "{", "}",  ":",           ",",
      "0",        "1",        "9",    "-",    ".",   "u",   "x", "yz", "true",        "null",
      "\xC3\xA9", "\xE2\x82", "\xAC", "\xC3", "\\u", "\\n", "[", "]",  "\xE6\x97\xA5"};
  // A few tokens longer than TokenVocabulary::kShortTokenBytes, as real vocabularies have (runs of
  // spaces, long words): compile() treats them apart.
  for (const std::string& t :
       {std::string(17, ' '), std::string(33, ' '), std::string(40, 'a'), std::string(20, 'x') + "\"",
        std::string("\"ab\": 123, \"ab\": 45, \"ab\": 6")})
    add(t);
  std::mt19937 rng(11);
  while (v.size() < size) {
    std::string t;
    for (unsigned k = 1 + rng() % 4; k > 0; --k)
      t += pieces[rng() % pieces.size()];
    add(t);
  }
  v.emplace_back();  // EOS
  return v;
}

std::string schema_regex(const std::string& schema) {
  ResponseFormat f;
  f.kind = ResponseFormat::Kind::kJsonSchema;
  f.text = schema;
  std::string regex;
  const Status s = response_format_regex(f, &regex);
  EXPECT_TRUE(s.ok()) << s.message();
  return regex;
}

// compile() walks the trie once per class of states that no string as long as the longest token
// tells apart; the masks are exactly those of one walk per state and of the definition, with
// every byte in the vocabulary (every state token-live) and without (token-dead states).
TEST(TokenConstraint, ClassSharingGivesThePerStateMasks) {
  const std::vector<std::string> patterns = {
      "[ab]{0,200}",
      "\"[^\"\\\\]{0,200}\"",
      schema_regex(R"({"type": "string", "maxLength": 200})"),
      schema_regex(R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
          "n": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["x", "yz"]}, "maxItems": 3}},
          "required": ["name", "n"]})"),
      "(a|bxy)*c|zzzzq|\\{(\"ab\": [0-9]{1,3},?){0,5}\\}",
      ".{0,50}\\u00e9",
  };
  const std::vector<std::pair<const char*, std::vector<std::string>>> vocabularies = {
      {"small", small_vocabulary()},
      {"sparse", sparse_vocabulary()},
      {"random, every byte", random_vocabulary(true, 3000)},
      {"random, ASCII bytes", random_vocabulary(false, 3000)},
  };
  for (const auto& [name, tokens] : vocabularies) {
    SCOPED_TRACE(name);
    const TokenId eos = static_cast<TokenId>(tokens.size() - 1);
    const int vocab_size = static_cast<int>(tokens.size()) + 3;  // and padding ids
    auto vocab = std::make_shared<const TokenVocabulary>(tokens, vocab_size, std::vector<TokenId>{eos});
    for (const std::string& pattern : patterns) {
      SCOPED_TRACE(pattern);
      std::shared_ptr<const TokenConstraint> shared, per_state;
      const Status s = TokenConstraint::compile(pattern, vocab, ConstraintLimits{}, &shared);
      ASSERT_TRUE(s.ok()) << s.message();
      ASSERT_TRUE(TokenConstraint::compile_per_state(pattern, vocab, ConstraintLimits{}, &per_state).ok());
      ASSERT_EQ(shared->num_states(), per_state->num_states());
      EXPECT_EQ(shared->num_distinct_masks(), per_state->num_distinct_masks());
      for (size_t st = 0; st < shared->num_states(); ++st) {
        const std::span<const uint32_t> a = shared->allowed(static_cast<int32_t>(st));
        const std::span<const uint32_t> b = per_state->allowed(static_cast<int32_t>(st));
        ASSERT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << "state " << st;
      }
      expect_reference_masks(*shared, reference_masks(pattern, tokens, vocab_size, {eos}));
      expect_every_walk_can_complete(*shared);
    }
  }
}

TEST(TokenConstraint, ExhaustedMeansNothingMayFollow) {
  const std::vector<std::string> tokens = {"a", "b", "ab", ""};
  for (const bool with_eos : {true, false}) {
    SCOPED_TRACE(with_eos);
    auto vocab = std::make_shared<const TokenVocabulary>(
        tokens, 4, with_eos ? std::vector<TokenId>{3} : std::vector<TokenId>{});
    std::shared_ptr<const TokenConstraint> c;
    ASSERT_TRUE(TokenConstraint::compile("ab(ab)?", vocab, ConstraintLimits{}, &c).ok());
    EXPECT_TRUE(c->exhausted(TokenConstraint::kDead));
    EXPECT_FALSE(c->exhausted(c->start()));
    const int32_t once = c->advance(c->start(), 2);
    EXPECT_TRUE(c->complete(once));
    EXPECT_FALSE(c->exhausted(once));  // "ab" may follow, then EOS
    const int32_t twice = c->advance(once, 2);
    EXPECT_TRUE(c->complete(twice));
    EXPECT_EQ(c->exhausted(twice), !with_eos);  // EOS, or nothing at all
    for (size_t s = 0; s < c->num_states(); ++s)
      EXPECT_EQ(c->exhausted(static_cast<int32_t>(s)), all_zero(c->allowed(static_cast<int32_t>(s)))) << s;
  }
}

TEST(TokenConstraint, StatesInsideAStringShareOneMask) {
  const std::vector<std::string> tokens = small_vocabulary();
  auto vocab = std::make_shared<const TokenVocabulary>(tokens, static_cast<int>(tokens.size()),
                                                       std::vector<TokenId>{});
  std::shared_ptr<const TokenConstraint> c;
  ASSERT_TRUE(TokenConstraint::compile("\"[a-z]{0,50}\"", vocab, ConstraintLimits{}, &c).ok());
  // The states inside the string allow the same tokens (letters, the longer words, the closing
  // quote) until the last five, where "false", then "true", ... no longer fit; with the states
  // before and after the string, 8 masks serve over 50 states.
  EXPECT_GE(c->num_states(), 50u);
  EXPECT_LE(c->num_distinct_masks(), 8u);
}

TEST(TokenConstraint, RefusesWhatNoTokenCanBeginAndWhatIsTooLarge) {
  auto vocab = std::make_shared<const TokenVocabulary>(std::vector<std::string>{"a", "b", ""}, 3,
                                                       std::vector<TokenId>{2});
  std::shared_ptr<const TokenConstraint> c;
  Status s = TokenConstraint::compile("x+", vocab, ConstraintLimits{}, &c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no token of this model"), std::string::npos) << s.message();
  // compile() walks the trie once per class of states: here two, the states before the bound
  // (its root, "a" and "b": 3 nodes) and the last one (the root alone, as no byte may follow).
  // Every walk counts.
  ConstraintLimits tight;
  tight.max_trie_visits = 4;
  ASSERT_TRUE(TokenConstraint::compile("[ab]{0,100}", vocab, tight, &c).ok());
  tight.max_trie_visits = 3;
  s = TokenConstraint::compile("[ab]{0,100}", vocab, tight, &c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("too large"), std::string::npos) << s.message();
  s = TokenConstraint::compile("(a", vocab, ConstraintLimits{}, &c);  // the regex compiler's own error
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  // The empty pattern matches only the empty text: EOS is the one token allowed.
  ASSERT_TRUE(TokenConstraint::compile("", vocab, ConstraintLimits{}, &c).ok());
  EXPECT_TRUE(bit(c->allowed(c->start()), 2));
  EXPECT_FALSE(bit(c->allowed(c->start()), 0));
}

TEST(ConstraintCache, CompilesAPatternOnceAndDropsTheLeastRecentlyUsed) {
  auto vocab = std::make_shared<const TokenVocabulary>(small_vocabulary(), 130, std::vector<TokenId>{});
  ConstraintCache cache(vocab, ConstraintLimits{}, /*max_bytes=*/1);  // room for one entry only
  std::shared_ptr<const TokenConstraint> a1, a2, b;
  ASSERT_TRUE(cache.get("a+", &a1).ok());
  ASSERT_TRUE(cache.get("a+", &a2).ok());
  EXPECT_EQ(a1.get(), a2.get());
  ASSERT_TRUE(cache.get("b+", &b).ok());
  EXPECT_EQ(cache.size(), 1u);
  ASSERT_TRUE(cache.get("a+", &a2).ok());
  EXPECT_NE(a1.get(), a2.get());  // dropped, compiled again; a1 stays valid for whoever holds it
  EXPECT_TRUE(bit(a1->allowed(a1->start()), 'a' - 0x20));
  EXPECT_FALSE(cache.get("(", &b).ok());
}

TEST(ConstraintCache, KeepsFailuresWithTheirStatus) {
  auto vocab = std::make_shared<const TokenVocabulary>(small_vocabulary(), 130, std::vector<TokenId>{});
  ConstraintLimits tight;
  tight.max_trie_visits = 50;  // "[a-z]{0,100}" needs several walks of most of the trie
  ConstraintCache cache(vocab, tight);
  std::shared_ptr<const TokenConstraint> out;
  // A regex error, the compile budget, and a character no token spells ('\u0100').
  for (const auto& [pattern, why] : std::vector<std::pair<std::string, std::string>>{
           {"(", "at byte 0"}, {"[a-z]{0,100}", "too large"}, {"\\u0100+", "no token of this model"}}) {
    SCOPED_TRACE(pattern);
    const size_t before = cache.size();
    const Status first = cache.get(pattern, &out);
    ASSERT_FALSE(first.ok());
    EXPECT_NE(first.message().find(why), std::string::npos) << first.message();
    EXPECT_EQ(out, nullptr);  // untouched
    EXPECT_EQ(cache.size(), before + 1);
    const Status again = cache.get(pattern, &out);  // from the cache: the same status
    EXPECT_EQ(again.code(), first.code());
    EXPECT_EQ(again.message(), first.message());
    EXPECT_EQ(cache.size(), before + 1);
  }
  ASSERT_TRUE(cache.get("a", &out).ok());
  EXPECT_EQ(cache.size(), 4u);

  // Failures count toward max_bytes: room for two of these.
  ConstraintCache small(vocab, ConstraintLimits{}, 2 * (ConstraintCache::kFailureBytes + 2 * 2));
  EXPECT_FALSE(small.get("(a", &out).ok());
  EXPECT_FALSE(small.get("(b", &out).ok());
  EXPECT_EQ(small.size(), 2u);
  EXPECT_FALSE(small.get("(c", &out).ok());
  EXPECT_EQ(small.size(), 2u);
}

TEST(ConstraintCache, IsSafeToShareBetweenThreads) {
  auto vocab = std::make_shared<const TokenVocabulary>(small_vocabulary(), 130, std::vector<TokenId>{});
  ConstraintCache cache(vocab, ConstraintLimits{}, /*max_bytes=*/200'000);  // a few entries: evictions too
  const std::vector<std::string> patterns = {"a+", "(", "[0-9]{1,3}", "(a", "(yes|no)", "\\{\"a\":[0-9]+\\}"};
  std::vector<std::thread> threads;
  std::vector<int> failures(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string& pattern = patterns[static_cast<size_t>(i * (t + 1)) % patterns.size()];
        std::shared_ptr<const TokenConstraint> c;
        const Status s = cache.get(pattern, &c);
        if (s.ok() != (c != nullptr) || s.ok() == (pattern == "(" || pattern == "(a"))
          ++failures[static_cast<size_t>(t)];
      }
    });
  }
  for (std::thread& t : threads)
    t.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

TEST(ResponseFormat, ChoiceListsAndSchemasBecomeRegexes) {
  std::string regex;
  ResponseFormat f;
  f.kind = ResponseFormat::Kind::kChoice;
  f.choices = {"a.b", "(x)", "é|?"};
  ASSERT_TRUE(response_format_regex(f, &regex).ok());
  const Pcre2Reference choice(regex, Pcre2Reference::utf_alt_bsux());
  EXPECT_TRUE(choice.ok()) << choice.error();
  EXPECT_TRUE(choice.matches("a.b"));
  EXPECT_TRUE(choice.matches("(x)"));
  EXPECT_TRUE(choice.matches("é|?"));
  EXPECT_FALSE(choice.matches("aXb"));
  EXPECT_FALSE(choice.matches("x"));
  f.choices.clear();
  EXPECT_NE(response_format_regex(f, &regex).message().find("response_format.choice is empty"),
            std::string::npos);
  f.kind = ResponseFormat::Kind::kJsonSchema;
  f.text = "{\"type\": ";
  EXPECT_NE(response_format_regex(f, &regex).message().find("not valid JSON"), std::string::npos);
  // Bounded before the (ordered, so quadratic in an object's members) parse: engine/json_limits.h.
  f.text = "{\"enum\": " + std::string(300, '[') + std::string(300, ']') + "}";
  EXPECT_EQ(response_format_regex(f, &regex).message(),
            "response_format.json_schema: nested deeper than 256 levels");
  f.text = R"({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})";
  ASSERT_TRUE(response_format_regex(f, &regex).ok());
  const Pcre2Reference object(regex, Pcre2Reference::utf_alt_bsux());
  EXPECT_TRUE(object.ok()) << object.error();
  EXPECT_TRUE(object.matches(R"({"ok": true})"));
  f.kind = ResponseFormat::Kind::kRegex;
  f.text.clear();
  EXPECT_NE(response_format_regex(f, &regex).message().find("response_format.regex is empty"),
            std::string::npos);
}

// Every tokenizer's token_bytes(id) is what id adds to decoded text after other text.
TEST(TokenBytes, AgreesWithDecodeAfterOtherText) {
  const std::string data = KVSERVE_TEST_DATA;
  for (const std::string& file :
       {data + "/models/tiny-llama/tokenizer.model", data + "/tokenizer/tokenizer.model",
        data + "/tokenizer/bytelevel/llama3/tokenizer.json",
        data + "/tokenizer/bytelevel/qwen2/tokenizer.json",
        data + "/tokenizer/bytelevel/gpt2/tokenizer.json"}) {
    SCOPED_TRACE(file);
    const auto tok = Tokenizer::load(file);
    const std::vector<TokenId> x = tok->encode("x", false);
    ASSERT_FALSE(x.empty());
    const std::string before = tok->decode(x);
    int checked = 0;
    for (TokenId id = 0; id < tok->vocab_size(); ++id) {
      const std::string bytes = tok->token_bytes(id);
      if (tok->is_control(id)) {
        EXPECT_EQ(bytes, "") << id;
        continue;
      }
      if (utf8_lossy(bytes) != bytes)
        continue;  // a lone byte decodes to U+FFFD; the bytes are what matching needs
      std::vector<TokenId> ids = x;
      ids.push_back(id);
      EXPECT_EQ(tok->decode(ids), before + bytes) << "token " << id << " '" << tok->token_spelling(id) << "'";
      ++checked;
    }
    EXPECT_GT(checked, tok->vocab_size() / 2);
  }
}

}  // namespace
}  // namespace kvserve
