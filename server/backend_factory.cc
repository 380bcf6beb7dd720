#include "server/backend_factory.h"

#include <cstdio>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "engine/cpu_backend.h"
#include "engine/random_model.h"
#ifdef KVSERVE_WITH_CUDA
#include "kernels/cuda_backend.h"
#include "kernels/cuda_device.h"
#endif

namespace kvserve {
namespace {

std::string pool_summary(int blocks, int block_size, size_t bytes_per_token) {
  char buf[200];
  const double tokens = static_cast<double>(blocks) * block_size;
  std::snprintf(buf, sizeof(buf), "KV cache %d blocks x %d tokens = %.0f tokens (%.2f GiB, %.1f KiB/token)",
                blocks, block_size, tokens, tokens * static_cast<double>(bytes_per_token) / (1 << 30),
                static_cast<double>(bytes_per_token) / 1024.0);
  return buf;
}

class FailAfterSteps : public Backend {
 public:
  FailAfterSteps(std::unique_ptr<Backend> inner, int healthy_steps)
      : inner_(std::move(inner)), healthy_steps_(healthy_steps) {}
  std::string name() const override { return inner_->name(); }
  int vocab_size() const override { return inner_->vocab_size(); }
  int num_lora_adapters() const override { return inner_->num_lora_adapters(); }
  std::span<const float> forward(const StepBatch& batch) override {
    count_step();
    return inner_->forward(batch);
  }
  void forward_and_sample(const StepBatch& batch, std::span<const SamplingTask> tasks,
                          std::span<SampledToken> out) override {
    count_step();
    inner_->forward_and_sample(batch, tasks, out);
  }
  bool scores_tokens() const override { return inner_->scores_tokens(); }
  std::span<const float> token_logits(const StepBatch& batch, std::span<const int> token_indices) override {
    return inner_->token_logits(batch, token_indices);
  }
  void score_tokens(const StepBatch& batch, std::span<const ScoringTask> tasks,
                    std::span<SampledToken> out) override {
    inner_->score_tokens(batch, tasks, out);
  }
  std::span<const float> hidden_states(const StepBatch& batch, std::span<const int> token_indices) override {
    return inner_->hidden_states(batch, token_indices);
  }
  double device_seconds() const override { return inner_->device_seconds(); }

 private:
  void count_step() {
    if (steps_++ >= healthy_steps_)
      throw std::runtime_error("injected failure after " + std::to_string(healthy_steps_) +
                               " steps (--debug-fail-after-steps)");
  }
  std::unique_ptr<Backend> inner_;
  int healthy_steps_;
  int steps_ = 0;
};

}  // namespace

std::unique_ptr<Backend> fail_after_steps(std::unique_ptr<Backend> inner, int healthy_steps) {
  return std::make_unique<FailAfterSteps>(std::move(inner), healthy_steps);
}

std::string resolve_backend_kind(const std::string& kind, const ModelConfig& model) {
  if (kind != "auto") return kind;
#ifdef KVSERVE_WITH_CUDA
  // (A mixture-of-experts model stays on the CPU until its CUDA path has run on a GPU: docs/models.md.)
  if (cuda::device_count() > 0 && !model.moe) return "cuda";
#endif
  (void)model;
  return "cpu";
}

BuiltBackend build_backend(const BackendChoice& choice, std::shared_ptr<const Model> model,
                           const SchedulerConfig& scheduler) {
  const ModelConfig& mc = model->config;
  const std::string kind = resolve_backend_kind(choice.kind, mc);
  BuiltBackend built;
  if (kind == "cpu") {
    if (has_deferred_weights(*model)) {
      // Weights loaded for the GPU to read (mapped or generated): the CPU backend needs float32
      // host copies. The copy starts with empty data, so it costs only what it materializes.
      auto host = std::make_shared<Model>(*model);
      materialize_weights(*host);
      model = std::move(host);
    }
    const size_t per_token = CpuBackend::kv_bytes_per_token(mc);
    built.num_blocks =
        choice.num_kv_blocks > 0
            ? choice.num_kv_blocks
            : static_cast<int>(choice.kv_cache_gib * (1ull << 30) / (per_token * scheduler.block_size));
    const int threads =
        choice.cpu_threads > 0 ? choice.cpu_threads : static_cast<int>(std::thread::hardware_concurrency());
    std::vector<LoraAdapter> adapters;
    for (const auto& [name, dir] : choice.lora_modules)
      adapters.push_back(load_lora_adapter(dir, name, mc));
    built.backend = std::make_unique<CpuBackend>(model, built.num_blocks, scheduler.block_size,
                                                 choice.cpu_threads, std::move(adapters));
    built.device = "CPU, " + std::to_string(threads) + " threads";
    built.description = "backend cpu (" + std::to_string(threads) + " threads, fp32); " +
                        pool_summary(built.num_blocks, scheduler.block_size, per_token);
    if (choice.kind == "auto" && mc.moe)
      built.description +=
          "; chosen for a mixture-of-experts model, whose CUDA path has not yet been checked on a GPU "
          "(--backend cuda runs it)";
    return built;
  }
  if (kind == "cuda") {
#ifdef KVSERVE_WITH_CUDA
    cuda::CudaBackendOptions opt;
    opt.device = choice.cuda_device;
    opt.block_size = scheduler.block_size;
    opt.num_blocks = choice.num_kv_blocks;
    opt.gpu_memory_utilization = choice.gpu_memory_utilization;
    opt.max_num_batched_tokens = scheduler.max_num_batched_tokens;
    opt.max_num_seqs = scheduler.max_num_seqs;
    opt.max_model_len = scheduler.max_model_len;
    opt.max_draft_tokens = scheduler.speculative.max_draft_tokens;
    opt.cuda_graphs = choice.cuda_graphs;
    if (!choice.lora_modules.empty()) {
      auto adapters = std::make_shared<std::vector<LoraAdapter>>();
      for (const auto& [name, dir] : choice.lora_modules)
        adapters->push_back(load_lora_adapter(dir, name, mc));
      opt.lora_adapters = std::move(adapters);
    }
    auto backend = std::make_unique<cuda::CudaBackend>(model, opt);
    built.num_blocks = backend->num_blocks();
    built.device = backend->device_description();
    char weights[64];
    std::snprintf(weights, sizeof(weights), "%.2f GiB",
                  static_cast<double>(backend->weight_bytes()) / (1 << 30));
    built.description =
        "backend cuda on " + built.device + " (bf16 weights " + weights + ", CUDA graphs " +
        (opt.cuda_graphs ? "on" : "off") + "); " +
        pool_summary(built.num_blocks, scheduler.block_size, cuda::CudaBackend::kv_bytes_per_token(mc));
    built.backend = std::move(backend);
    return built;
#else
    throw std::runtime_error(
        "this kvserve was built without CUDA (configure with -DKVSERVE_CUDA=ON); use --backend cpu");
#endif
  }
  throw std::runtime_error("unknown backend '" + kind + "': use auto, cpu or cuda");
}

}  // namespace kvserve
