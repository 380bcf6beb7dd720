// kvserve-offline: runs a batch of generated requests through the engine loop on the built-in
// checksum model and checks every output against the model's cache-free reference. It is the main
// job until the gRPC server lands: it shows continuous batching, chunked prefill, prefix caching and
// preemption working together, and exits non-zero if any output is wrong.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/checksum_backend.h"
#include "engine/engine.h"
#ifdef KVSERVE_WITH_CUDA
#include "kernels/cuda_device.h"
#endif

namespace {

using kvserve::TokenId;

std::vector<TokenId> reference_output(std::vector<TokenId> context, int max_tokens, int vocab, TokenId eos) {
  std::vector<TokenId> out;
  while (static_cast<int>(out.size()) < max_tokens) {
    const TokenId t = kvserve::ChecksumBackend::reference_next_token(context, vocab);
    out.push_back(t);
    context.push_back(t);
    if (t == eos) break;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvserve-offline: offline generation on the built-in checksum model"};
  int num_requests = 64, prompt_len = 96, shared_prefix = 48, max_tokens = 64, vocab = 32000;
  uint64_t seed = 1;
  kvserve::EngineConfig config;
  config.scheduler.num_blocks = 256;
  app.add_option("--requests", num_requests, "number of requests")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--prompt-len", prompt_len, "prompt tokens per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--shared-prefix", shared_prefix,
                 "leading prompt tokens common to all requests (prefix cache)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "tokens to generate per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--vocab", vocab, "vocabulary size of the built-in model")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  app.add_option("--seed", seed, "seed for the prompts")->capture_default_str();
  app.add_option("--block-size", config.scheduler.block_size, "KV block size in tokens")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--num-blocks", config.scheduler.num_blocks, "KV blocks in the pool")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-num-seqs", config.scheduler.max_num_seqs, "running sequences at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-num-batched-tokens", config.scheduler.max_num_batched_tokens, "token budget per step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-model-len", config.scheduler.max_model_len, "prompt + output tokens at most")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (shared_prefix > prompt_len) shared_prefix = prompt_len;

  const TokenId eos = 0;
  config.eos_token_ids = {eos};
  std::printf(
      "kvserve-offline: model=checksum vocab=%d block_size=%d num_blocks=%d (%d tokens) max_num_seqs=%d "
      "max_num_batched_tokens=%d max_model_len=%d\n",
      vocab, config.scheduler.block_size, config.scheduler.num_blocks,
      config.scheduler.num_blocks * config.scheduler.block_size, config.scheduler.max_num_seqs,
      config.scheduler.max_num_batched_tokens, config.scheduler.max_model_len);
#ifdef KVSERVE_WITH_CUDA
  const int gpus = kvserve::cuda::device_count();
  std::printf("CUDA devices: %d%s%s\n", gpus, gpus ? ", device 0: " : "",
              gpus ? kvserve::cuda::device_description(0).c_str() : "");
#endif

  kvserve::Engine engine(config, std::make_unique<kvserve::ChecksumBackend>(
                                     config.scheduler.num_blocks, config.scheduler.block_size, vocab));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<TokenId> token(1, vocab - 1);
  std::vector<TokenId> prefix(shared_prefix);
  for (TokenId& t : prefix)
    t = token(rng);
  std::vector<kvserve::Request> requests(num_requests);
  for (int i = 0; i < num_requests; ++i) {
    requests[i].id = "req-" + std::to_string(i);
    requests[i].prompt = prefix;
    while (static_cast<int>(requests[i].prompt.size()) < prompt_len)
      requests[i].prompt.push_back(token(rng));
    requests[i].stop.max_tokens = max_tokens;
  }
  const std::vector<kvserve::Request> sent = requests;

  const auto start = std::chrono::steady_clock::now();
  const auto results = engine.generate(std::move(requests));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  int wrong = 0, rejected = 0;
  long long generated = 0, cached = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    if (!r.status.ok()) {
      std::printf("%s rejected: %s\n", r.id.c_str(), r.status.message().c_str());
      ++rejected;
      continue;
    }
    generated += static_cast<long long>(r.output.size());
    cached += r.num_cached_prompt_tokens;
    if (r.output != reference_output(sent[i].prompt, max_tokens, vocab, eos)) {
      std::printf("%s: output differs from the reference\n", r.id.c_str());
      ++wrong;
    }
    if (i < 3)
      std::printf("%s: %zu tokens, finish=%s, cached prompt tokens=%d, first tokens:", r.id.c_str(),
                  r.output.size(), kvserve::finish_reason_name(r.finish), r.num_cached_prompt_tokens);
    for (size_t k = 0; i < 3 && k < std::min<size_t>(8, r.output.size()); ++k)
      std::printf(" %d", r.output[k]);
    if (i < 3) std::printf("\n");
  }
  const auto stats = engine.scheduler().stats();
  std::printf(
      "requests=%d rejected=%d steps=%llu generated_tokens=%lld cached_prompt_tokens=%lld "
      "preemptions=%llu free_blocks=%d/%d time=%.3fs\n",
      num_requests, rejected, static_cast<unsigned long long>(engine.num_steps()), generated, cached,
      static_cast<unsigned long long>(stats.num_preemptions), stats.num_free_blocks, stats.num_total_blocks,
      seconds);
  std::printf("%s: %d of %d outputs equal the cache-free reference\n", wrong ? "FAIL" : "OK",
              num_requests - rejected - wrong, num_requests - rejected);
  return wrong ? 1 : 0;
}
