// kvserve-offline: offline generation through the engine loop, no server: the quick way to
// measure the engine's throughput without gRPC in the way, and to try a model.
//
//   kvserve-offline                                  the default tiny model, a few prompts
//   kvserve-offline --model DIR --prompt "..." -n 16 a Hugging Face model directory
//   kvserve-offline --model org/name                 a Hub model, fetched into the Hub cache as
//                                                    kvserve fetches it (server/hub_download.h)
//   kvserve-offline --model builtin:checksum         the checksum model; every output verified
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/checksum_backend.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "server/backend_factory.h"
#include "server/hub_download.h"
#ifdef KVSERVE_WITH_CUDA
#include "kernels/cuda_device.h"
#endif

namespace {

using kvserve::TokenId;

struct Options {
  std::string model = KVSERVE_DEFAULT_MODEL_DIR;
  std::string revision = "main";  // of a Hub model id
  std::vector<std::string> prompts = {"Once upon a time", "The server streams tokens to", "Le café est prêt",
                                      "Blocks of keys and values"};
  int num_requests = 4;
  int max_tokens = 32;
  float temperature = 0.0f;
  uint64_t seed = 1;
  int threads = 0;
  std::string backend = "auto";
  bool quiet = false;
  bool ignore_eos = false;
  // Checksum model only.
  int prompt_len = 96, shared_prefix = 48, vocab = 32000;
};

std::vector<TokenId> checksum_reference(std::vector<TokenId> context, int max_tokens, int vocab,
                                        TokenId eos) {
  std::vector<TokenId> out;
  while (static_cast<int>(out.size()) < max_tokens) {
    const TokenId t = kvserve::ChecksumBackend::reference_next_token(context, vocab);
    out.push_back(t);
    context.push_back(t);
    if (t == eos) break;
  }
  return out;
}

void print_summary(const kvserve::Engine& engine, const std::vector<kvserve::GenerationResult>& results,
                   double seconds) {
  long long generated = 0, cached = 0;
  int rejected = 0;
  for (const auto& r : results) {
    if (!r.status.ok()) {
      std::printf("%s rejected: %s\n", r.id.c_str(), r.status.message().c_str());
      ++rejected;
    }
    generated += static_cast<long long>(r.output.size());
    cached += r.num_cached_prompt_tokens;
  }
  const auto stats = engine.scheduler().stats();
  std::printf(
      "requests=%zu rejected=%d steps=%llu generated_tokens=%lld cached_prompt_tokens=%lld preemptions=%llu "
      "draft_tokens=%llu accepted_draft_tokens=%llu free_blocks=%d/%d time=%.3fs throughput=%.1f tokens/s\n",
      results.size(), rejected, static_cast<unsigned long long>(engine.num_steps()), generated, cached,
      static_cast<unsigned long long>(stats.num_preemptions),
      static_cast<unsigned long long>(stats.num_draft_tokens),
      static_cast<unsigned long long>(stats.num_accepted_draft_tokens), stats.num_free_blocks,
      stats.num_total_blocks, seconds, seconds > 0 ? static_cast<double>(generated) / seconds : 0.0);
}

int run_checksum(const Options& o, kvserve::EngineConfig config) {
  const TokenId eos = 0;
  config.eos_token_ids = {eos};
  kvserve::Engine engine(config, std::make_unique<kvserve::ChecksumBackend>(
                                     config.scheduler.num_blocks, config.scheduler.block_size, o.vocab));
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<TokenId> token(1, o.vocab - 1);
  std::vector<TokenId> prefix(std::min(o.shared_prefix, o.prompt_len));
  for (TokenId& t : prefix)
    t = token(rng);
  std::vector<kvserve::Request> requests(o.num_requests);
  for (int i = 0; i < o.num_requests; ++i) {
    requests[i].id = "req-" + std::to_string(i);
    requests[i].prompt = prefix;
    while (static_cast<int>(requests[i].prompt.size()) < o.prompt_len)
      requests[i].prompt.push_back(token(rng));
    requests[i].stop.max_tokens = o.max_tokens;
  }
  const std::vector<kvserve::Request> sent = requests;
  const auto start = std::chrono::steady_clock::now();
  const auto results = engine.generate(std::move(requests));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int wrong = 0, checked = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    if (!results[i].status.ok()) continue;
    ++checked;
    if (results[i].output != checksum_reference(sent[i].prompt, o.max_tokens, o.vocab, eos)) {
      std::printf("%s: output differs from the reference\n", results[i].id.c_str());
      ++wrong;
    }
  }
  print_summary(engine, results, seconds);
  std::printf("%s: %d of %d outputs equal the cache-free reference\n", wrong ? "FAIL" : "OK", checked - wrong,
              checked);
  return wrong ? 1 : 0;
}

int run_model(const Options& o, kvserve::EngineConfig config) {
  // As kvserve does: a name that is no local path but has a Hub id's shape comes from the Hub cache.
  std::error_code ec;
  const std::string dir =
      !std::filesystem::exists(o.model, ec) && kvserve::is_hub_model_id(o.model)
          ? kvserve::fetch_hub_model(o.model, o.revision, kvserve::HubSettings::from_environment()).string()
          : o.model;
  auto model = std::make_shared<const kvserve::Model>(
      kvserve::load_model(dir, kvserve::WeightLoading::kDeferred));  // read by the backend
  if (model->config.embedding_only)
    throw kvserve::ModelLoadError(dir +
                                  ": the checkpoint has no LM head (an embedding model) and "
                                  "kvserve-offline generates text; serve it with kvserve for embeddings");
  std::shared_ptr<const kvserve::Tokenizer> tokenizer = kvserve::Tokenizer::load_from_model_dir(model->dir);
  const auto& mc = model->config;
  std::printf("model: %s (%s, %d layers, hidden %d, %d heads / %d kv heads, vocab %d, weights %s)\n",
              o.model.c_str(), mc.architecture.c_str(), mc.num_layers, mc.hidden_size, mc.num_heads,
              mc.num_kv_heads, mc.vocab_size, mc.dtype.c_str());
  if (mc.fp8_weights)
    std::printf("quantized: %s, dequantized at load\n", kvserve::quantization_summary(mc).c_str());
  if (mc.moe) std::printf("mixture of experts: %s\n", kvserve::moe_summary(mc).c_str());
  if (config.scheduler.max_model_len > kvserve::max_supported_len(mc)) {
    std::printf("max_model_len lowered from %d to the model's %d\n", config.scheduler.max_model_len,
                kvserve::max_supported_len(mc));
    config.scheduler.max_model_len = kvserve::max_supported_len(mc);
  }
  config.eos_token_ids = mc.eos_token_ids;
  config.tokenizer = tokenizer;
  kvserve::BackendChoice choice;
  choice.kind = o.backend;
  choice.num_kv_blocks = config.scheduler.num_blocks;
  choice.cpu_threads = o.threads;
  kvserve::BuiltBackend built = kvserve::build_backend(choice, model, config.scheduler);
  config.scheduler.num_blocks = built.num_blocks;  // the pool the backend has (the CUDA one may clamp)
  std::printf("%s\n", built.description.c_str());
  kvserve::Engine engine(config, std::move(built.backend));
  std::vector<kvserve::Request> requests(o.num_requests);
  for (int i = 0; i < o.num_requests; ++i) {
    kvserve::Request& r = requests[i];
    r.id = "req-" + std::to_string(i);
    r.prompt = tokenizer->encode(o.prompts[i % o.prompts.size()], /*add_bos=*/true);
    r.stop.max_tokens = o.max_tokens;
    r.stop.ignore_eos = o.ignore_eos;
    r.sampling.temperature = o.temperature;
    r.sampling.seed = o.seed + static_cast<uint64_t>(i);
  }
  const auto start = std::chrono::steady_clock::now();
  const auto results = engine.generate(requests);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (size_t i = 0; !o.quiet && i < results.size(); ++i)
    std::printf("[%s] %s|%s  (%zu tokens, %s)\n", results[i].id.c_str(),
                o.prompts[i % o.prompts.size()].c_str(), results[i].text.c_str(), results[i].output.size(),
                kvserve::finish_reason_name(results[i].finish));
  print_summary(engine, results, seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvserve-offline: offline generation through the kvserve engine"};
  Options o;
  kvserve::EngineConfig config;
  config.scheduler.num_blocks = 256;
  app.add_option(
         "--model", o.model,
         "model directory (Hugging Face layout), Hugging Face Hub model id (org/name; HF_TOKEN, HF_HOME, "
         "HF_HUB_OFFLINE and https_proxy as for kvserve), or builtin:checksum")
      ->capture_default_str();
  app.add_option("--revision", o.revision, "of a Hub model id: the branch, tag or commit")
      ->capture_default_str();
  app.add_option("--prompt", o.prompts, "prompt text (repeatable); requests cycle through them");
  app.add_option("-n,--requests", o.num_requests, "number of requests")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-tokens", o.max_tokens, "tokens to generate per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "0 = greedy")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--seed", o.seed, "base seed (request i uses seed + i)")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.add_option("--backend", o.backend, "model backend: auto (CUDA when a GPU is present), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}))
      ->capture_default_str();
  app.add_flag("--quiet", o.quiet, "print only the summary");
  app.add_flag("--ignore-eos", o.ignore_eos, "always generate --max-tokens tokens (for measurements)");
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
  app.add_option("--num-speculative-tokens", config.scheduler.speculative.max_draft_tokens,
                 "speculative decoding by prompt lookup: draft tokens per decode step at most (0 = off)")
      ->capture_default_str();
  app.add_option("--prompt-lookup-min", config.scheduler.speculative.min_ngram,
                 "fewest last tokens matched to find a draft")
      ->capture_default_str();
  app.add_option("--prompt-lookup-max", config.scheduler.speculative.max_ngram,
                 "most last tokens matched to find a draft")
      ->capture_default_str();
  app.add_option("--prompt-len", o.prompt_len, "checksum model: prompt tokens per request")
      ->capture_default_str();
  app.add_option("--shared-prefix", o.shared_prefix,
                 "checksum model: leading prompt tokens common to all requests")
      ->capture_default_str();
  app.add_option("--vocab", o.vocab, "checksum model: vocabulary size")->check(CLI::Range(2, 1 << 20));
  CLI11_PARSE(app, argc, argv);

  std::printf(
      "kvserve-offline: block_size=%d num_blocks=%d (%d tokens) max_num_seqs=%d max_num_batched_tokens=%d "
      "max_model_len=%d\n",
      config.scheduler.block_size, config.scheduler.num_blocks,
      config.scheduler.num_blocks * config.scheduler.block_size, config.scheduler.max_num_seqs,
      config.scheduler.max_num_batched_tokens, config.scheduler.max_model_len);
#ifdef KVSERVE_WITH_CUDA
  const int gpus = kvserve::cuda::device_count();
  std::printf("CUDA devices: %d%s%s\n", gpus, gpus ? ", device 0: " : "",
              gpus ? kvserve::cuda::device_description(0).c_str() : "");
#endif
  try {
    return o.model == "builtin:checksum" ? run_checksum(o, config) : run_model(o, config);
  } catch (const kvserve::ModelLoadError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
