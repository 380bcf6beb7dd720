// CpuBackend: the reference forward pass of a Llama-family (or Gemma) model over the paged KV cache, in
// float32, with OpenBLAS for the matrix products and OpenMP across the cores for attention.
// Slow is fine, wrong is not: every GPU kernel is checked against this.
//
// KV cache layout, per layer: k_cache[slot][kv_head][head_dim] (and v_cache alike), where
// slot = block * block_size + offset, so one block is block_size consecutive token rows.
#pragma once

#include <cmath>
#include <memory>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "engine/moe_routing.h"

namespace kvserve {

class CpuBackend : public Backend {
 public:
  // num_threads 0 = all cores. Every weight must have its data on the host (a model loaded with
  // WeightLoading::kDeferred must be materialized first): std::invalid_argument otherwise.
  // `lora_adapters` are the adapters requests may name (adapter i + 1 is lora_adapters[i]), each
  // loaded for this model (load_lora_adapter).
  CpuBackend(std::shared_ptr<const Model> model, int num_blocks, int block_size, int num_threads = 0,
             std::vector<LoraAdapter> lora_adapters = {});

  std::string name() const override { return "cpu"; }
  int vocab_size() const override { return model_->config.vocab_size; }
  int num_lora_adapters() const override { return static_cast<int>(lora_adapters_.size()); }
  // Rows of sequences whose emits_token is 0 are left at zero: their logits are never used.
  std::span<const float> forward(const StepBatch& batch) override;
  // From every token's final hidden state, which forward() keeps.
  bool scores_tokens() const override { return true; }
  std::span<const float> token_logits(const StepBatch& batch, std::span<const int> token_indices) override;
  std::span<const float> hidden_states(const StepBatch& batch, std::span<const int> token_indices) override;
  // A mixture-of-experts model's closest routing call in the last forward pass, over its tokens and
  // layers (MoeRouting::smallest_margin; infinity for a dense model): a test comparing a backend
  // that computes in lower precision knows where the two may rightly route differently.
  double smallest_routing_margin() const { return smallest_routing_margin_; }

  // Bytes of KV cache one token takes across all layers (K and V).
  static size_t kv_bytes_per_token(const ModelConfig& config);

 private:
  void attention(const StepBatch& batch, int layer);
  // y += each sequence's adapter's update of `target` in `layer`, over its rows of x.
  void add_lora(const StepBatch& batch, int layer, LoraTarget target, const std::vector<float>& x,
                std::vector<float>& y);
  // out = mlp(x) for `rows` rows of x (SwiGLU or GeGLU), through gate_ and up_.
  void mlp(const MlpWeights& mlp, const std::vector<float>& x, int rows, std::vector<float>& out);
  // h_ = the mixture-of-experts MLP of layer `lw` (MoeConfig) applied to h_'s `tokens` rows.
  void moe_mlp(const LayerWeights& lw, int tokens);
  // h_ = the final norm of the kept hidden states at the given tokens of the last pass.
  void final_hidden(const StepBatch& batch, std::span<const int> token_indices);

  std::shared_ptr<const Model> model_;
  int num_blocks_;
  int block_size_;
  int kv_row_;  // floats per slot in one layer's cache: kv_heads * head_dim
  // [layer][slot * kv_row_]. Left uninitialized: a slot is written before any step reads it, and
  // untouched pages cost no memory (or start-up time) until the pool fills.
  std::vector<std::unique_ptr<float[]>> k_cache_, v_cache_;
  std::vector<float> inv_freq_;          // [head_dim / 2], rope_scaling applied
  std::vector<float> sliding_inv_freq_;  // Gemma 3's windowed layers' own; empty for other models
  std::vector<LoraAdapter> lora_adapters_;
  std::vector<float> lora_scratch_;

  // Activations, resized per step: [tokens x width].
  std::vector<float> x_, h_, q_, k_, v_, attn_, gate_, up_, last_, logits_;
  // The mixture-of-experts MLP's: router logits, one expert's input and output rows, the sum.
  std::vector<float> router_logits_, expert_in_, expert_out_, moe_out_;
  MoeRouting routing_;
  double smallest_routing_margin_ = INFINITY;
};

}  // namespace kvserve
