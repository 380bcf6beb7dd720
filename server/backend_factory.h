// Picks and builds the engine's backend from the command line's choice: the CUDA backend when the
// binary has it and a GPU is present (or when asked for), otherwise the CPU reference backend.
// Both kvserve and kvserve-offline use this, so they size the KV pool and report it the same way.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "engine/model.h"
#include "engine/scheduler.h"

namespace kvserve {

struct BackendChoice {
  std::string kind = "auto";  // "auto", "cpu" or "cuda"
  int num_kv_blocks = 0;      // > 0: exactly this many blocks, whatever the memory settings
  // CPU backend.
  int cpu_threads = 0;  // 0 = all cores
  double kv_cache_gib = 0.5;
  // CUDA backend.
  int cuda_device = 0;
  double gpu_memory_utilization = 0.90;
  bool cuda_graphs = true;
  // LoRA adapters to serve (--lora-modules), by the name requests use: adapter i + 1 is
  // lora_modules[i]. Both backends apply them.
  std::vector<std::pair<std::string, std::filesystem::path>> lora_modules;
};

struct BuiltBackend {
  std::unique_ptr<Backend> backend;
  int num_blocks = 0;       // the KV pool's size: the scheduler must use exactly this
  std::string device;       // "CPU, 16 threads" or the GPU's name, for GetModelInfo
  std::string description;  // one log line: backend, device, weights and KV pool sizes
};

// "auto" resolves to "cuda" when this build has CUDA and a device is present, unless `model` is a
// mixture-of-experts model (whose CUDA path has not yet run on a GPU), else to "cpu".
std::string resolve_backend_kind(const std::string& kind, const ModelConfig& model);

// Builds the backend for a scheduler configured as `scheduler` (its block size and step limits;
// num_blocks is ignored and comes back in the result). A random model whose weights were deferred
// (engine/random_model.h) is generated on the GPU by the CUDA backend and on the host for the CPU. Throws
// std::runtime_error with a message that says what to change (no GPU, model too big, pool too small, unknown
// kind).
BuiltBackend build_backend(const BackendChoice& choice, std::shared_ptr<const Model> model,
                           const SchedulerConfig& scheduler);

// Testing only (kvserve --debug-fail-after-steps, and the runner's tests): `inner` for
// healthy_steps steps, then a std::runtime_error from every step, which is how a CUDA error
// reaches the engine.
std::unique_ptr<Backend> fail_after_steps(std::unique_ptr<Backend> inner, int healthy_steps);

}  // namespace kvserve
