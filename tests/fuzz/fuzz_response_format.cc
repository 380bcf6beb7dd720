// Structured output: a client's response_format (a regex, a JSON schema, or a list of choices)
// turned into a regex (engine/response_format.h, engine/json_schema_regex.h), compiled to a byte
// automaton (engine/regex_dfa.h) and lifted to the tokens of tests/data/models/tiny-llama
// (engine/token_constraint.h). Properties: every failure is a non-OK Status; nothing crashes,
// hangs or exhausts memory (the compile limits bound the time and the tables); and a compiled
// constraint is exact and consistent with the automaton:
//   - the token automaton is the regex's automaton (the same canonical numbering), and that one is
//     deterministic and pruned: every move stays in the table, every live state can still accept;
//   - along random walks from the start that draw allowed tokens, a token other than EOS is allowed
//     exactly when advance() leads to a live state, and EOS exactly when the state is complete();
//     no state reached so has an empty mask (the model has an EOS), and exhausted() agrees;
//   - the text spelled along a walk matches the regex exactly when the state is accepting, and a
//     whole match is valid UTF-8 (one of the choices, for a list; JSON, for a schema with no
//     pattern keyword).
//
// Input layout: byte 0 picks the kind (modulo 3: regex, json_schema, choice); the rest is the
// regex, the schema's JSON text, or the choices separated by '\n'. The walks draw from a PRNG
// seeded with a hash of the input, so a reproducer replays the same walks.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/model.h"
#include "engine/regex_dfa.h"
#include "engine/response_format.h"
#include "engine/token_constraint.h"
#include "engine/tokenizer.h"
#include "engine/utf8.h"

namespace {

using kvserve::RegexDfa;
using kvserve::ResponseFormat;
using kvserve::Status;
using kvserve::TokenConstraint;
using kvserve::TokenId;
using kvserve::TokenVocabulary;

constexpr const char* kModelDir = KVSERVE_TEST_DATA "/models/tiny-llama";
constexpr int kWalks = 4;
constexpr int kStepsPerWalk = 64;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_response_format: property violated: %s\n", what);
    std::abort();
  }
}

// The served model's vocabulary, as GenerationService builds it: the tokenizer's bytes for every
// id of the model's vocab_size, and the config's EOS ids.
std::shared_ptr<const TokenVocabulary> load_vocabulary() {
  const kvserve::ModelConfig config = kvserve::load_model_config(std::string(kModelDir) + "/config.json");
  const std::unique_ptr<kvserve::Tokenizer> tokenizer =
      kvserve::Tokenizer::load(std::string(kModelDir) + "/tokenizer.model");
  if (config.eos_token_ids.empty()) {
    std::fprintf(stderr, "fuzz_response_format: %s/config.json names no EOS\n", kModelDir);
    std::abort();
  }
  return TokenVocabulary::from_tokenizer(*tokenizer, config.vocab_size, config.eos_token_ids);
}

// SplitMix64: small, and good enough to pick among the allowed tokens.
struct Prng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

uint64_t hash_bytes(const uint8_t* data, size_t size) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 1099511628211ull;
  }
  return h;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = kvserve::utf8_char_len(s.substr(i));
    if (n == 0) return false;
    i += n;
  }
  return true;
}

bool is_eos(const TokenVocabulary& vocab, TokenId id) {
  for (const TokenId e : vocab.eos_ids()) {
    if (e == id) return true;
  }
  return false;
}

// Every move of `dfa` stays in its table, and every state can still reach an accepting one.
void check_pruned(const RegexDfa& dfa) {
  const auto n = static_cast<size_t>(dfa.num_states());
  check(n > 0 && dfa.start() == 0, "the automaton has no start state 0");
  std::vector<std::vector<int32_t>> into(n);
  for (size_t s = 0; s < n; ++s) {
    int32_t last = RegexDfa::kDead;
    for (int b = 0; b < 256; ++b) {
      const int32_t t = dfa.next(static_cast<int32_t>(s), static_cast<uint8_t>(b));
      if (t == RegexDfa::kDead) continue;
      check(t >= 0 && static_cast<size_t>(t) < n, "a move leads outside the automaton's table");
      if (t != last) into[static_cast<size_t>(t)].push_back(static_cast<int32_t>(s));
      last = t;
    }
  }
  std::vector<uint8_t> live(n, 0);
  std::vector<int32_t> queue;
  for (size_t s = 0; s < n; ++s) {
    if (dfa.accepting(static_cast<int32_t>(s))) {
      live[s] = 1;
      queue.push_back(static_cast<int32_t>(s));
    }
  }
  for (size_t i = 0; i < queue.size(); ++i) {
    for (const int32_t from : into[static_cast<size_t>(queue[i])]) {
      if (live[static_cast<size_t>(from)] == 0) {
        live[static_cast<size_t>(from)] = 1;
        queue.push_back(from);
      }
    }
  }
  check(queue.size() == n, "a state of the automaton cannot reach an accepting state (not pruned)");
}

// RFC 8259's grammar, written here rather than borrowed from a parser (the schema regexes must
// give JSON by the standard's own rules, whatever a parser adds). The text is
// valid UTF-8 (checked first), so strings need only their escapes and control characters checked.
class JsonGrammar {
 public:
  explicit JsonGrammar(std::string_view text) : s_(text) {}
  bool accept() { return value() && i_ == s_.size(); }

 private:
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void spaces() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool digits() {
    const size_t from = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9')
      ++i_;
    return i_ > from;
  }
  bool word(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool number() {
    eat('-');
    if (!eat('0') && !digits()) return false;
    if (eat('.') && !digits()) return false;
    if (eat('e') || eat('E')) {
      if (!eat('+')) eat('-');
      if (!digits()) return false;
    }
    return true;
  }
  bool string() {
    if (!eat('"')) return false;
    while (i_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"') return true;
      if (c < 0x20) return false;
      if (c != '\\') continue;
      if (i_ >= s_.size()) return false;
      const char e = s_[i_++];
      if (e == 'u') {
        for (int k = 0; k < 4; ++k, ++i_) {
          if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) return false;
        }
      } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
        return false;
      }
    }
    return false;
  }
  // Recursion is bounded by the text's length, which the walks keep short.
  bool value() {
    spaces();
    bool ok;
    if (eat('{')) {
      spaces();
      ok = eat('}');
      while (!ok) {
        spaces();
        if (!string()) return false;
        spaces();
        if (!eat(':') || !value()) return false;
        if (eat('}')) break;
        if (!eat(',')) return false;
      }
      ok = true;
    } else if (eat('[')) {
      spaces();
      ok = eat(']');
      while (!ok) {
        if (!value()) return false;
        if (eat(']')) break;
        if (!eat(',')) return false;
      }
      ok = true;
    } else if (i_ < s_.size() && s_[i_] == '"') {
      ok = string();
    } else {
      ok = word("true") || word("false") || word("null") || number();
    }
    spaces();
    return ok;
  }

  std::string_view s_;
  size_t i_ = 0;
};

struct Expectations {
  const ResponseFormat* format;
  bool json = false;  // a whole match parses as JSON
};

void check_match(const std::string& text, const Expectations& expect) {
  check(valid_utf8(text), "a whole match is not valid UTF-8");
  if (expect.format->kind == ResponseFormat::Kind::kChoice) {
    bool found = false;
    for (const std::string& choice : expect.format->choices)
      found = found || choice == text;
    check(found, "a whole match of a choice list is none of the choices");
  }
  if (expect.json) {
    check(JsonGrammar(text).accept(), "a whole match of a JSON schema is not JSON");
  }
}

// True when some object in `schema` has a key "pattern" (however the text spells it). Iterative:
// the schema may nest as deep as the input is long.
bool has_pattern_key(const nlohmann::ordered_json& schema) {
  std::vector<const nlohmann::ordered_json*> stack{&schema};
  while (!stack.empty()) {
    const nlohmann::ordered_json* node = stack.back();
    stack.pop_back();
    if (node->is_object() && node->contains("pattern")) return true;
    if (node->is_structured()) {
      for (const auto& child : *node)
        stack.push_back(&child);
    }
  }
  return false;
}

void walk(const TokenConstraint& c, const RegexDfa& dfa, const Expectations& expect, Prng& rng) {
  const TokenVocabulary& vocab = c.vocab();
  const int vocab_size = vocab.vocab_size();
  std::string text;
  int32_t state = c.start();
  std::vector<TokenId> allowed;
  for (int step = 0; step < kStepsPerWalk; ++step) {
    check(state != TokenConstraint::kDead, "the walk reached kDead");
    check(dfa.walk(dfa.start(), text) == state, "the token automaton and the regex's disagree on the state");
    check(c.complete(state) == dfa.accepting(state),
          "complete() differs from the regex automaton's accepting");
    check(dfa.matches(text) == c.complete(state), "matches() of the text differs from complete()");
    if (c.complete(state)) check_match(text, expect);
    const std::span<const uint32_t> mask = c.allowed(state);
    check(mask.size() == static_cast<size_t>(vocab.mask_words()), "a mask has the wrong number of words");
    allowed.clear();
    for (TokenId id = 0; id < vocab.mask_words() * 32; ++id) {
      const bool bit = (mask[static_cast<size_t>(id) / 32] >> (id % 32) & 1u) != 0;
      if (id >= vocab_size) {
        check(!bit, "a mask allows an id past the vocabulary");
        continue;
      }
      if (bit) allowed.push_back(id);
      if (is_eos(vocab, id)) {
        check(bit == c.complete(state), "EOS is allowed but the state is not complete, or the reverse");
        check(c.advance(state, id) == TokenConstraint::kDead, "advance() of EOS is not kDead");
        continue;
      }
      const int32_t next = c.advance(state, id);
      check(bit == (next != TokenConstraint::kDead),
            bit ? "an allowed token advances to kDead" : "a token that leads to a live state is not allowed");
      if (next != TokenConstraint::kDead) {
        check(next == dfa.walk(state, vocab.bytes(id)), "advance() differs from walking the token's bytes");
      }
    }
    check(c.exhausted(state) == allowed.empty(), "exhausted() differs from an all-zero mask");
    // Tokens are allowed only into states from which tokens can finish a match (token-level
    // liveness), so with an EOS in the vocabulary a state reached this way always has a way on.
    check(!allowed.empty(), "a state reached by allowed tokens allows nothing, not even EOS");
    const TokenId pick = allowed[rng.below(allowed.size())];
    if (is_eos(vocab, pick)) return;  // checked above: the text is a whole match
    text += vocab.bytes(pick);
    state = c.advance(state, pick);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<const TokenVocabulary> vocab = load_vocabulary();
  // KVSERVE_FUZZ_VERBOSE=1 says why each input was refused: for reading a reproducer or a seed.
  static const bool verbose = std::getenv("KVSERVE_FUZZ_VERBOSE") != nullptr;
  if (size == 0) return 0;
  static constexpr ResponseFormat::Kind kKinds[] = {
      ResponseFormat::Kind::kRegex, ResponseFormat::Kind::kJsonSchema, ResponseFormat::Kind::kChoice};
  ResponseFormat format;
  format.kind = kKinds[data[0] % 3];
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (format.kind == ResponseFormat::Kind::kChoice) {
    size_t from = 0;
    while (true) {
      const size_t end = rest.find('\n', from);
      format.choices.emplace_back(
          rest.substr(from, end == std::string_view::npos ? std::string_view::npos : end - from));
      if (end == std::string_view::npos) break;
      from = end + 1;
    }
  } else {
    format.text = std::string(rest);
  }

  std::string regex;
  if (const Status s = kvserve::response_format_regex(format, &regex); !s.ok()) {
    if (verbose) std::fprintf(stderr, "response_format_regex: %s\n", s.message().c_str());
    return 0;
  }
  std::shared_ptr<const TokenConstraint> constraint;
  const Status cs = TokenConstraint::compile(regex, vocab, kvserve::ConstraintLimits{}, &constraint);
  RegexDfa dfa;
  const Status ds = RegexDfa::compile(regex, kvserve::ConstraintLimits{}.regex, &dfa);
  if (!ds.ok()) {
    // The token compiler runs the same regex compiler first, so it fails the same way.
    check(!cs.ok() && cs.message() == ds.message(), "RegexDfa and TokenConstraint disagree on a regex error");
    if (verbose) std::fprintf(stderr, "RegexDfa::compile: %s\n", ds.message().c_str());
    return 0;
  }
  check_pruned(dfa);
  if (!cs.ok()) {
    if (verbose) std::fprintf(stderr, "TokenConstraint::compile: %s\n", cs.message().c_str());
    return 0;
  }
  check(constraint != nullptr, "TokenConstraint::compile succeeded without a constraint");
  check(constraint->num_states() == static_cast<size_t>(dfa.num_states()),
        "the token automaton and the regex's have different sizes");
  if (verbose) {
    std::fprintf(stderr, "compiled: %d states, %zu distinct masks\n", dfa.num_states(),
                 constraint->num_distinct_masks());
  }

  Expectations expect;
  expect.format = &format;
  // A schema's pattern keyword is inserted as written and may allow text that is not JSON
  // (engine/json_schema_regex.h); every other schema yields only JSON.
  expect.json = format.kind == ResponseFormat::Kind::kJsonSchema &&
                !has_pattern_key(nlohmann::ordered_json::parse(format.text));
  Prng rng{hash_bytes(data, size)};
  for (int i = 0; i < kWalks; ++i)
    walk(*constraint, dfa, expect, rng);
  return 0;
}
