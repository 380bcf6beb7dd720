// Structured output at the token level (engine/token_constraint.h): the allowed set of every state
// equals what an independent regex engine (PCRE2's partial matching) says may follow the text, and
// the engine's outputs under a constraint match the pattern, whatever the seed. Also
// Tokenizer::token_bytes, the bytes that matching reads, against each tokenizer's decode().
#include <gtest/gtest.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/response_format.h"
#include "engine/token_constraint.h"
#include "engine/tokenizer.h"
#include "engine/utf8.h"

namespace kvserve {
namespace {

// How many continuation bytes the text's last character still lacks (0 when it is complete or
// not UTF-8 at all, which PCRE2 then rejects).
int missing_utf8_bytes(const std::string& text) {
  for (size_t back = 1; back <= 3 && back <= text.size(); ++back) {
    const auto c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const int length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return std::max(0, length - static_cast<int>(back));
  }
  return 0;
}

// The reference: PCRE2 with the pattern anchored at both ends, in UTF mode (so '.' and classes
// take whole characters, as the dialect says) with ECMAScript's \uHHHH and \xHH (ALT_BSUX). A text is a
// viable prefix when it matches whole or partially (PCRE2_PARTIAL_HARD: the subject ended while a match was
// still possible).
class Pcre2Pattern {
 public:
  explicit Pcre2Pattern(const std::string& pattern) {
    // \z, not $: PCRE's $ also matches before a final newline.
    const std::string anchored = "^(?:" + pattern + ")\\z";
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(anchored.data()), anchored.size(),
                          PCRE2_UTF | PCRE2_ALT_BSUX, &error, &offset, nullptr);
    EXPECT_NE(code_, nullptr) << "PCRE2 cannot compile " << anchored;
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  ~Pcre2Pattern() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  Pcre2Pattern(const Pcre2Pattern&) = delete;
  Pcre2Pattern& operator=(const Pcre2Pattern&) = delete;

  bool full(const std::string& text) const { return run(text, 0) >= 0; }
  // PCRE2 refuses a subject that ends inside a UTF-8 character, which a token may well do ("\xC3"
  // of "é"): such a text is viable when some completion of the character is.
  bool viable_prefix(const std::string& text) const {
    if (const int missing = missing_utf8_bytes(text); missing > 0) {
      for (int b = 0x80; b <= 0xBF; ++b) {
        if (viable_prefix(text + static_cast<char>(b))) return true;
      }
      return false;
    }
    const int rc = run(text, PCRE2_PARTIAL_HARD);
    return rc >= 0 || rc == PCRE2_ERROR_PARTIAL;
  }

 private:
  int run(const std::string& text, uint32_t options) const {
    return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, options, data_,
                       nullptr);
  }
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
};

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
    const Pcre2Pattern ref(pattern);
    for (int walk = 0; walk < 40; ++walk) {
      std::string text;
      int32_t state = c->start();
      for (int step = 0; step < 12; ++step) {
        const std::span<const uint32_t> allowed = c->allowed(state);
        ASSERT_EQ(allowed.size(), static_cast<size_t>((vocab_size + 31) / 32));
        std::vector<TokenId> choices;
        for (TokenId id = 0; id < vocab_size; ++id) {
          const bool expected = id == eos  ? ref.full(text)
                                : id < eos ? ref.viable_prefix(text + tokens[static_cast<size_t>(id)])
                                           : false;
          ASSERT_EQ(bit(allowed, id), expected) << "text '" << text << "' token " << id;
          if (expected && id != eos) choices.push_back(id);
        }
        EXPECT_EQ(c->complete(state), ref.full(text));
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
  ConstraintLimits tight;
  tight.max_trie_visits = 10;
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

TEST(ResponseFormat, ChoiceListsAndSchemasBecomeRegexes) {
  std::string regex;
  ResponseFormat f;
  f.kind = ResponseFormat::Kind::kChoice;
  f.choices = {"a.b", "(x)", "é|?"};
  ASSERT_TRUE(response_format_regex(f, &regex).ok());
  const Pcre2Pattern choice(regex);
  EXPECT_TRUE(choice.full("a.b"));
  EXPECT_TRUE(choice.full("(x)"));
  EXPECT_TRUE(choice.full("é|?"));
  EXPECT_FALSE(choice.full("aXb"));
  EXPECT_FALSE(choice.full("x"));
  f.choices.clear();
  EXPECT_NE(response_format_regex(f, &regex).message().find("response_format.choice is empty"),
            std::string::npos);
  f.kind = ResponseFormat::Kind::kJsonSchema;
  f.text = "{\"type\": ";
  EXPECT_NE(response_format_regex(f, &regex).message().find("not valid JSON"), std::string::npos);
  f.text = R"({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})";
  ASSERT_TRUE(response_format_regex(f, &regex).ok());
  EXPECT_TRUE(Pcre2Pattern(regex).full(R"({"ok": true})"));
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

// The whole engine, on a real (tiny, random-weight) model: whatever the seed, an output that ends
// with EOS matches the pattern, and one cut by max_tokens is a prefix of a match.
TEST(ConstrainedGeneration, EveryOutputMatchesThePattern) {
  const std::string dir = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama3-gqa";
  auto model = std::make_shared<const Model>(load_model(dir));
  std::shared_ptr<const Tokenizer> tokenizer = Tokenizer::load(dir + "/tokenizer.model");
  auto vocab =
      TokenVocabulary::from_tokenizer(*tokenizer, model->config.vocab_size, model->config.eos_token_ids);
  EngineConfig cfg;
  cfg.scheduler.block_size = 8;
  cfg.scheduler.num_blocks = 256;
  cfg.scheduler.max_num_batched_tokens = 512;
  cfg.scheduler.max_model_len = 512;
  cfg.eos_token_ids = model->config.eos_token_ids;
  cfg.tokenizer = tokenizer;
  Engine engine(cfg, std::make_unique<CpuBackend>(model, 256, 8));

  const std::vector<std::string> patterns = {
      " ?(yes|no|maybe)",
      "[A-Z][a-z]{1,8}( [a-z]{1,8}){0,3}\\.",
      R"(\{"name":[ ]?"[a-zA-Z ]{1,12}",[ ]?"age":[ ]?(0|[1-9][0-9]{0,2})\})",
  };
  int stopped = 0;
  for (const std::string& pattern : patterns) {
    SCOPED_TRACE(pattern);
    std::shared_ptr<const TokenConstraint> c;
    const Status cs = TokenConstraint::compile(pattern, vocab, ConstraintLimits{}, &c);
    ASSERT_TRUE(cs.ok()) << cs.message();
    const Pcre2Pattern ref(pattern);
    std::vector<Request> requests;
    for (int i = 0; i < 16; ++i) {
      Request r;
      r.id = "r" + std::to_string(i);
      r.prompt = tokenizer->encode("Answer:", true);
      r.sampling.temperature = i == 0 ? 0.0f : 1.0f;  // greedy once, then draws
      r.sampling.seed = 100 + i;
      r.stop.max_tokens = 60;
      r.constraint = c;
      requests.push_back(std::move(r));
    }
    for (const GenerationResult& res : engine.generate(std::move(requests))) {
      ASSERT_TRUE(res.status.ok()) << res.status.message();
      std::string text;
      for (const TokenId t : res.output)
        text += vocab->bytes(t);
      if (res.finish == FinishReason::kStop) {
        ++stopped;
        EXPECT_TRUE(ref.full(text)) << res.id << ": '" << text << "'";
        EXPECT_EQ(res.text, text);  // the detokenizer's text is the same bytes
      } else {
        EXPECT_EQ(res.finish, FinishReason::kLength);
        EXPECT_TRUE(ref.viable_prefix(text)) << res.id << ": '" << text << "'";
      }
    }
  }
  EXPECT_GT(stopped, 24);  // most outputs complete well within 60 tokens
  EXPECT_FALSE(engine.has_unfinished());
}

TEST(ConstrainedGeneration, RulesThatHoldBackEosAreRefused) {
  const std::string dir = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama";
  auto model = std::make_shared<const Model>(load_model(dir));
  std::shared_ptr<const Tokenizer> tokenizer = Tokenizer::load(dir + "/tokenizer.model");
  auto vocab =
      TokenVocabulary::from_tokenizer(*tokenizer, model->config.vocab_size, model->config.eos_token_ids);
  EngineConfig cfg;
  cfg.scheduler.block_size = 8;
  cfg.scheduler.num_blocks = 64;
  cfg.eos_token_ids = model->config.eos_token_ids;
  Engine engine(cfg, std::make_unique<CpuBackend>(model, 64, 8));
  std::shared_ptr<const TokenConstraint> c;
  ASSERT_TRUE(TokenConstraint::compile("[a-z]+", vocab, ConstraintLimits{}, &c).ok());
  Request r;
  r.id = "a";
  r.prompt = {1, 5};
  r.constraint = c;
  r.stop.ignore_eos = true;
  Status s = engine.add_request(r);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("stop.ignore_eos"), std::string::npos) << s.message();
  r.stop.ignore_eos = false;
  r.stop.min_tokens = 3;
  s = engine.add_request(r);
  EXPECT_NE(s.message().find("stop.min_tokens"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kvserve
