// LoRA adapters (PEFT's format): low-rank updates to a base model's linear weights, one adapter per
// request. A projection W [out x in] that an adapter targets computes x W^T + scaling (x A^T) B^T,
// with A [rank x in] and B [out x rank] from adapter_model.safetensors and scaling = lora_alpha /
// rank (lora_alpha / sqrt(rank) with use_rslora), as PEFT's LoraLayer does; the base weights stay
// shared, so many adapters serve from one copy of the model. Served adapters are named at start-up
// (--lora-modules NAME=DIR); a request names one, or none for the base model.
#pragma once

#include <array>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/model.h"

namespace kvserve {

// The projections of a layer an adapter may target, in LayerWeights' terms (Phi-3's fused qkv_proj
// and gate_up_proj are split into these as the base weights are).
enum LoraTarget { kLoraQ, kLoraK, kLoraV, kLoraO, kLoraGate, kLoraUp, kLoraDown, kNumLoraTargets };

// The largest rank read (the GPU kernels keep a token's rank values in 4 KiB of shared memory).
inline constexpr int kMaxLoraRank = 1024;

// One projection's low-rank pair, float32 row-major; empty (rank 0) when the adapter leaves the
// projection as it is.
struct LoraPair {
  int rank = 0;
  int in = 0;
  int out = 0;
  std::vector<float> a;  // [rank x in]
  std::vector<float> b;  // [out x rank]
};

struct LoraAdapter {
  std::string name;  // what requests call it
  std::filesystem::path dir;
  int rank = 0;
  float scaling = 1.0f;                                       // lora_alpha / rank, or / sqrt(rank)
  std::vector<std::array<LoraPair, kNumLoraTargets>> layers;  // [num_layers]
};

// Reads a PEFT LoRA directory (adapter_config.json, adapter_model.safetensors) for the base model
// `base`, checking every tensor's name and shape against it first. What kvserve does not apply is
// refused, naming it: DoRA, biases, modules_to_save, per-module rank or alpha patterns, adapters on
// the embeddings or the LM head, fan_in_fan_out. Throws ModelLoadError naming the file and the fix.
LoraAdapter load_lora_adapter(const std::filesystem::path& dir, std::string name, const ModelConfig& base);

// y[rows x out] += scaling * (x[rows x in] A^T) B^T for one pair, over `rows` consecutive rows (one
// sequence's tokens); `scratch` is resized as needed.
void apply_lora(const LoraPair& pair, float scaling, const float* x, int rows, float* y,
                std::vector<float>& scratch);

}  // namespace kvserve
