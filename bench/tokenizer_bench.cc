// Tokenizer throughput on the host: encode (what a text prompt costs before it is admitted, on a
// gRPC thread) and decode, for the SentencePiece model and the tokenizer.json fixtures, over the
// committed English corpus repeated to 256 KiB (about a 60k-token prompt). Bytes per second are
// of the text. See docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer.h"

namespace kvserve {
namespace {

const std::string kData = KVSERVE_TEST_DATA "/tokenizer/";

const std::string& text() {
  static const std::string t = [] {
    std::ifstream in(kData + "corpus.txt");
    std::stringstream corpus;
    corpus << in.rdbuf();
    std::string s;
    while (s.size() < (256u << 10))
      s += corpus.str();
    return s;
  }();
  return t;
}

void BM_Encode(benchmark::State& state, const std::string& file) {
  const auto tok = Tokenizer::load(kData + file);
  size_t ids = 0;
  for (auto _ : state) {
    const std::vector<TokenId> out = tok->encode(text(), /*add_bos=*/true);
    ids = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text().size()));
  state.counters["ids"] = static_cast<double>(ids);
}

void BM_Decode(benchmark::State& state, const std::string& file) {
  const auto tok = Tokenizer::load(kData + file);
  const std::vector<TokenId> ids = tok->encode(text(), /*add_bos=*/false);
  for (auto _ : state) {
    const std::string out = tok->decode(ids);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text().size()));
}

BENCHMARK_CAPTURE(BM_Encode, sentencepiece, std::string("tokenizer.model"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, json_llama3, std::string("bytelevel/llama3/tokenizer.json"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, json_qwen2, std::string("bytelevel/qwen2/tokenizer.json"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Decode, sentencepiece, std::string("tokenizer.model"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Decode, json_llama3, std::string("bytelevel/llama3/tokenizer.json"))
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvserve

BENCHMARK_MAIN();
