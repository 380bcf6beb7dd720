// Structured output's host-side costs (engine/token_constraint.h), on a vocabulary the size of
// Llama 3's (128,256 tokens): building the token trie (once per server start), compiling a
// response_format (once per distinct pattern, on the gRPC thread, then cached; also the way with a
// trie walk per automaton state, BM_CompilePerState, for comparison), and what a step
// adds per constrained sequence (looking up the mask, advancing by the drawn token). The
// vocabulary is synthetic but shaped like a byte-level BPE one: every byte, then pieces of the
// committed English corpus and made-up words, with and without a leading space, and pieces of
// other scripts, so that
// a state inside a JSON string allows most of it, as with a real model. See docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/response_format.h"
#include "engine/token_constraint.h"

namespace kvserve {
namespace {

constexpr int kVocabSize = 128256;

std::vector<std::string> synthetic_vocabulary() {
  std::ifstream in(KVSERVE_TEST_DATA "/tokenizer/corpus.txt");
  std::stringstream corpus;
  corpus << in.rdbuf();
  const std::string text = corpus.str();
  std::set<std::string> seen;
  std::vector<std::string> tokens;
  const auto add = [&](std::string t) {
    if (!t.empty() && seen.insert(t).second) tokens.push_back(std::move(t));
  };
  for (int b = 0; b < 256; ++b)
    add(std::string(1, static_cast<char>(b)));
  std::mt19937 rng(3);
  const std::vector<std::string> scripts = {"é",  "ü",  "ñ",  "я",  "д", "ж", "日", "本",
                                            "語", "中", "한", "글", "ا", "ل", "€"};
  while (tokens.size() < kVocabSize - 8) {
    if (rng() % 8 == 0) {  // another script: 1-3 characters
      std::string t = rng() % 2 ? " " : "";
      for (unsigned n = 1 + rng() % 3; n > 0; --n)
        t += scripts[rng() % scripts.size()];
      add(t);
      continue;
    }
    if (rng() % 2 == 0) {  // a piece of the corpus of 1-12 bytes (a space included or not)
      const size_t at = rng() % (text.size() - 16);
      add(text.substr(at, 1 + rng() % 12));
      continue;
    }
    // The corpus alone has too few distinct pieces: made-up words of 2-10 letters fill the rest.
    std::string word = rng() % 2 ? " " : "";
    for (unsigned n = 2 + rng() % 9; n > 0; --n)
      word += static_cast<char>('a' + rng() % 26);
    add(word);
  }
  return tokens;
}

std::shared_ptr<const TokenVocabulary> vocabulary() {
  static const auto v = [] {
    std::vector<std::string> tokens = synthetic_vocabulary();
    tokens.resize(kVocabSize);  // the last few are control tokens (EOS, ...): no bytes
    return std::make_shared<const TokenVocabulary>(tokens, kVocabSize, std::vector<TokenId>{kVocabSize - 1});
  }();
  return v;
}

// The same with a few dozen tokens longer than TokenVocabulary::kShortTokenBytes in place of
// made-up words: runs of 17-128 spaces or punctuation, as real BPE vocabularies have.
std::shared_ptr<const TokenVocabulary> vocabulary_with_long_tokens() {
  static const auto v = [] {
    std::vector<std::string> tokens = synthetic_vocabulary();
    tokens.resize(kVocabSize);
    size_t id = kVocabSize - 8;
    for (const char c : std::string(" =-#/*"))
      for (const size_t length : {17, 24, 32, 48, 64, 96, 128})
        tokens[--id] = std::string(length, c);
    return std::make_shared<const TokenVocabulary>(tokens, kVocabSize, std::vector<TokenId>{kVocabSize - 1});
  }();
  return v;
}

std::string schema_regex(const char* schema) {
  ResponseFormat f;
  f.kind = ResponseFormat::Kind::kJsonSchema;
  f.text = schema;
  std::string regex;
  if (!response_format_regex(f, &regex).ok()) std::abort();
  return regex;
}

// An order with nested items: what an API client would send.
const char* const kOrderSchema = R"({
  "type": "object",
  "properties": {
    "order_id": {"type": "string", "format": "uuid"},
    "customer": {"type": "string", "minLength": 1, "maxLength": 40},
    "status": {"enum": ["pending", "shipped", "delivered", "cancelled"]},
    "total": {"type": "number"},
    "paid": {"type": "boolean"},
    "items": {"type": "array", "minItems": 1, "maxItems": 10, "items": {
      "type": "object",
      "properties": {"sku": {"type": "string", "pattern": "[A-Z]{3}-[0-9]{4}"}, "quantity": {"type": "integer"}},
      "required": ["sku", "quantity"]}}
  },
  "required": ["order_id", "customer", "status", "items"]
})";

const char* const kFreeStringSchema = R"({"type": "object", "properties": {"answer": {"type": "string"}},
  "required": ["answer"]})";

void BM_BuildVocabulary(benchmark::State& state) {
  const std::vector<std::string> tokens = synthetic_vocabulary();
  for (auto _ : state) {
    TokenVocabulary v(tokens, kVocabSize, {kVocabSize - 1});
    benchmark::DoNotOptimize(&v);
  }
}

// A bounded string: ~9000 automaton states (UTF-8 characters, each up to 4 bytes, counted to 700).
const char* const kLongStringSchema = R"({"type": "string", "maxLength": 700})";

using CompileFn = Status (*)(std::string_view, std::shared_ptr<const TokenVocabulary>,
                             const ConstraintLimits&, std::shared_ptr<const TokenConstraint>*);

void compile_loop(benchmark::State& state, const std::string& pattern, bool long_tokens, CompileFn compile) {
  const auto vocab = long_tokens ? vocabulary_with_long_tokens() : vocabulary();
  std::shared_ptr<const TokenConstraint> c;
  for (auto _ : state) {
    if (const Status s = compile(pattern, vocab, ConstraintLimits{}, &c); !s.ok()) {
      state.SkipWithError(s.message().c_str());
      return;
    }
  }
  state.counters["states"] = static_cast<double>(c->num_states());
  state.counters["masks"] = static_cast<double>(c->num_distinct_masks());
  state.counters["MiB"] = static_cast<double>(c->memory_bytes()) / (1 << 20);
}

// What the server does: one trie walk per class of states that no token can tell apart.
void BM_Compile(benchmark::State& state, const std::string& pattern, bool long_tokens = false) {
  compile_loop(state, pattern, long_tokens, &TokenConstraint::compile);
}

// The same constraint with one trie walk per state (how compile() worked before the classes): the
// baseline for the docs' ratio.
void BM_CompilePerState(benchmark::State& state, const std::string& pattern, bool long_tokens = false) {
  compile_loop(state, pattern, long_tokens, &TokenConstraint::compile_per_state);
}

// Per token of a constrained sequence: the mask the sampler gets, and the advance by the token
// drawn (here the first allowed one, walking a whole JSON string).
void BM_StepMaskAndAdvance(benchmark::State& state) {
  std::shared_ptr<const TokenConstraint> c;
  if (!TokenConstraint::compile(schema_regex(kFreeStringSchema), vocabulary(), ConstraintLimits{}, &c).ok()) {
    state.SkipWithError("the pattern did not compile");
    return;
  }
  // The state inside the string, after {"answer":" (ids 0-255 are the single bytes).
  int32_t inside = c->start();
  for (const char ch : std::string("{\"answer\":\""))
    inside = c->advance(inside, static_cast<unsigned char>(ch));
  const TokenId letter = 'a';
  for (auto _ : state) {
    benchmark::DoNotOptimize(c->allowed(inside).data());
    benchmark::DoNotOptimize(c->advance(inside, letter));
  }
}

BENCHMARK(BM_BuildVocabulary)->Unit(benchmark::kMillisecond);
#define COMPILE_BENCHMARKS(name, ...)                                              \
  BENCHMARK_CAPTURE(BM_Compile, name, __VA_ARGS__)->Unit(benchmark::kMillisecond); \
  BENCHMARK_CAPTURE(BM_CompilePerState, name, __VA_ARGS__)->Unit(benchmark::kMillisecond)
COMPILE_BENCHMARKS(choice_of_4, std::string("(?:red|green|blue|light blue)"));
COMPILE_BENCHMARKS(date_regex, std::string("[0-9]{4}-[0-9]{2}-[0-9]{2}"));
COMPILE_BENCHMARKS(schema_free_string, schema_regex(kFreeStringSchema));
COMPILE_BENCHMARKS(schema_order, schema_regex(kOrderSchema));
COMPILE_BENCHMARKS(schema_string_max700, schema_regex(kLongStringSchema));
COMPILE_BENCHMARKS(printable_0_1000, std::string("[ -~]{0,1000}"));
COMPILE_BENCHMARKS(schema_string_max700_long_tokens, schema_regex(kLongStringSchema), true);
BENCHMARK(BM_StepMaskAndAdvance);

}  // namespace
}  // namespace kvserve

BENCHMARK_MAIN();
