// CudaBackend: the model on one GPU. bf16 weights and KV cache, fp32 accumulation and residual
// stream; the KV pool, the paged-attention kernels, cuBLAS matrix products, sampling on the device,
// and CUDA graphs for decode-only steps.
//
// One forward pass (kernels/*.h say what each piece computes):
//   upload the step's arrays -> embedding_gather -> per layer:
//     add_rms_norm -> QKV GEMM -> rope_and_kv_write (q/k/v bias, Qwen3's and Gemma 3's q/k norm,
//     RoPE, K/V to the pool) -> decode / prefill paged attention -> O GEMM [-> rms_norm]
//     -> add_rms_norm -> gate_up GEMM -> silu_and_mul (Gemma: gelu_tanh_and_mul) -> down GEMM
//     [-> rms_norm]
//     (with LoRA adapters, each GEMM's output gets its tokens' adapters' updates: lora.h)
//   -> final add_rms_norm -> gather each sequence's last token -> final norm -> LM head (fp32 logits)
//   [-> soft_cap] -> sample_rows -> token ids (and logprobs) back to the host.
// The bracketed steps are Gemma 2's and 3's sublayer output norms and Gemma 2's logit soft cap.
// A decode-only step runs as a CUDA graph captured once per batch-size bucket (step_upload.h):
// 32 layers are ~300 kernel launches, which would otherwise dominate small batches.
//
// Everything is allocated at construction for the largest step the scheduler may plan
// (max_num_batched_tokens, max_num_seqs, max_model_len), then the KV pool takes what the memory
// budget leaves. A step allocates nothing, but for the rare doubling of the buffers that carry
// penalized requests' token histories (and the suppressed lists, logit biases and structured
// output's token masks) to the sampler.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "engine/moe_routing.h"
#include "kernels/cuda_check.h"
#include "kernels/gemm.h"
#include "kernels/kv_cache_layout.h"
#include "kernels/sampling.h"
#include "kernels/step_upload.h"

namespace kvserve::cuda {

struct CudaBackendOptions {
  int device = 0;
  int block_size = 16;
  // KV pool size: num_blocks when > 0, otherwise whatever brings this process's use of the GPU to
  // gpu_memory_utilization of its total memory once weights and activations are in place.
  int num_blocks = 0;
  double gpu_memory_utilization = 0.90;
  // The largest step the scheduler plans (SchedulerConfig's limits).
  int max_num_batched_tokens = 8192;
  int max_num_seqs = 256;
  int max_model_len = 8192;
  // Speculative decoding (SchedulerConfig::speculative.max_draft_tokens): a step then computes and
  // samples logits for one row per sequence plus one per draft token, up to max_num_seqs +
  // min(max_num_seqs * max_draft_tokens, the step's tokens); each row costs logits and sampler
  // scratch (16 bytes per vocabulary entry) before the KV pool is sized.
  int max_draft_tokens = 0;
  bool cuda_graphs = true;  // false: every step launches its kernels one by one (debugging)
  // LoRA adapters requests may name (adapter i + 1 is (*lora_adapters)[i]), loaded for this model;
  // uploaded as bf16, stacked per projection (lora.h), and counted with the weights. Shared, so that
  // copies of the options do not copy a large model's float32 adapters (null: none).
  std::shared_ptr<const std::vector<LoraAdapter>> lora_adapters;
};

class CudaBackend : public Backend {
 public:
  // Uploads the model's weights as bf16 (generating a random model's deferred tensors on the GPU)
  // and sizes the KV pool. Keeps no reference to `model`: once the caller drops its own, the host
  // copy of the weights is freed (32 GB for an 8B model). Throws
  // std::runtime_error when there is no GPU, the model does not fit, or the pool would hold less than one
  // max_model_len sequence.
  CudaBackend(std::shared_ptr<const Model> model, const CudaBackendOptions& options);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  int vocab_size() const override { return config_.vocab_size; }
  int num_lora_adapters() const override { return num_lora_adapters_; }
  // The logits, copied to the host (tests and tools; serving uses forward_and_sample).
  std::span<const float> forward(const StepBatch& batch) override;
  void forward_and_sample(const StepBatch& batch, std::span<const SamplingTask> tasks,
                          std::span<SampledToken> out) override;
  // Prompt logprobs from the residual stream the last pass left on the device, max_num_seqs
  // positions at a time: LM head, then sample_rows with each row's token forced (sampling.h).
  bool scores_tokens() const override { return true; }
  std::span<const float> token_logits(const StepBatch& batch, std::span<const int> token_indices) override;
  // The final norm's bf16 output at those tokens (what the LM head reads), max_num_seqs at a time.
  std::span<const float> hidden_states(const StepBatch& batch, std::span<const int> token_indices) override;
  void score_tokens(const StepBatch& batch, std::span<const ScoringTask> tasks,
                    std::span<SampledToken> out) override;

  int num_blocks() const { return layout_.num_blocks; }
  // "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)"
  const std::string& device_description() const { return device_description_; }
  size_t weight_bytes() const { return weight_bytes_; }
  size_t kv_pool_bytes() const { return kv_pool_.bytes(); }
  double device_seconds() const override { return device_seconds_; }
  // Bytes of KV cache one token takes across all layers (K and V, bf16).
  static size_t kv_bytes_per_token(const ModelConfig& config);

 private:
  struct LayerWeights {
    DeviceBuffer<__nv_bfloat16> input_norm, qkv, qkv_bias, o, mlp_norm, gate_up, down;
    DeviceBuffer<__nv_bfloat16> q_norm, k_norm;  // [head_dim] each, Qwen3 and Gemma 3 only (empty otherwise)
    DeviceBuffer<__nv_bfloat16> attn_output_norm, mlp_output_norm;  // Gemma 2/3 only (empty otherwise)
    // A mixture-of-experts layer's (empty otherwise; gate_up and down are then empty): the router
    // [experts][hidden], every expert's gate|up stacked [experts][2 inter][hidden] and down
    // [experts][hidden][inter], and Qwen2-MoE's shared expert (gate|up, down, its gate [1][hidden]).
    DeviceBuffer<__nv_bfloat16> router, experts_gate_up, experts_down;
    DeviceBuffer<__nv_bfloat16> shared_gate_up, shared_down, shared_gate;
  };

  // One projection's LoRA adapters, stacked (lora.h): a [adapters][rank][in], b [adapters][out][rank].
  // Empty when no adapter adapts it.
  struct LoraProjection {
    DeviceBuffer<__nv_bfloat16> a, b;
    int in = 0;
    int out = 0;
  };

  void upload_weights(const Model& model);
  void upload_lora_adapters(const std::vector<LoraAdapter>& adapters);
  // Adds the step's tokens' adapter updates of `target` in `layer` to y (lora.h): x is the
  // projection's input, y its output's columns for the target.
  void enqueue_lora(int layer, LoraTarget target, const __nv_bfloat16* x, int64_t x_row_stride, int tokens,
                    __nv_bfloat16* y, int64_t y_row_stride, float multiplier);
  // The mixture-of-experts MLP of `layer` over normed_'s `tokens` rows into delta_ (times
  // `multiplier`): the router's logits come to the host, which routes (route_tokens, as the CPU
  // backend does), then each expert's GEMMs run over its block of gathered rows and moe_combine
  // sums them back per token. The host waits for the logits, so a pass with MoE layers is never
  // captured in a CUDA graph.
  void enqueue_moe(int layer, int tokens, float multiplier);
  void allocate_activations();
  void size_kv_pool(const CudaBackendOptions& options);
  // Copies the step's arrays to the device; returns the sizes the device pass runs at.
  PackedStep upload_step(const StepBatch& batch, int padded_seqs);
  // Enqueues the whole pass on stream_ for a packed step (padding included); decode_splits is the
  // split-KV bound for the decode part.
  void enqueue_forward(const PackedStep& step, int num_decodes, int max_query_len, int decode_splits);
  // Runs the device pass for `batch`: through a CUDA graph when it is decode-only and graphs are on.
  void run_forward(const StepBatch& batch);
  // Waits for the step's device work and adds its span (run_forward's first copy to now) to
  // device_seconds_.
  void finish_step();
  // Gathers `rows` rows of the pass's residual stream, picked by the device array token_index, and
  // applies the final norm (into last_normed_).
  void enqueue_final_norm(const int32_t* token_index, int rows);
  // That, then the LM head: fp32 logits in logits_'s first rows.
  void enqueue_lm_head(const int32_t* token_index, int rows);
  // Checks each scored position's token index against the batch and stages them all in
  // host_score_indices_.
  void stage_score_indices(const StepBatch& batch, std::span<const int> token_indices);
  // The final norm (last_normed_'s first rows) and, with lm_head, the LM head (logits_'s first
  // rows) for staged positions [first, first + count), count <= max_num_seqs.
  void enqueue_staged_rows(size_t first, size_t count, bool lm_head);
  // Fills out[i] from the sampler's row i (copied back) and its parameters.
  static void read_sampled(const SampledRow* sampled, const SamplingRow* rows, size_t count,
                           std::span<SampledToken> out);
  __nv_bfloat16* k_cache(int layer) const;
  __nv_bfloat16* v_cache(int layer) const;

  ModelConfig config_;
  CudaBackendOptions options_;
  std::string device_description_;
  int num_sms_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Gemm> gemm_;

  // Weights.
  DeviceBuffer<__nv_bfloat16> embed_, final_norm_, lm_head_;  // lm_head_ empty when tied
  std::vector<LayerWeights> layers_;
  DeviceBuffer<float> inv_freq_;
  DeviceBuffer<float> sliding_inv_freq_;  // Gemma 3's windowed layers' RoPE (empty otherwise)
  size_t weight_bytes_ = 0;
  // LoRA adapters: [layer][LoraTarget], each adapter's scaling, the largest rank (every stack is
  // padded to it) and the shrink's output, [max tokens][rank].
  std::vector<std::array<LoraProjection, kNumLoraTargets>> lora_layers_;
  int num_lora_adapters_ = 0;
  int lora_rank_ = 0;
  DeviceBuffer<float> lora_scaling_;
  DeviceBuffer<float> lora_tmp_;

  // KV pool: [layer][K, V][layout_.layer_elements()].
  KvCacheLayout layout_;
  DeviceBuffer<__nv_bfloat16> kv_pool_;

  // Step arrays: pinned host staging and its device mirror; block tables at a fixed width. Every
  // host-to-device copy of a step comes from pinned memory (PinnedBuffer says why); each staging
  // buffer is rewritten only after finish_step() has waited for the previous step's copies.
  StepArraysLayout arrays_;
  int table_width_ = 0;
  PinnedBuffer<std::byte> host_arrays_;  // arrays_.total_bytes
  DeviceBuffer<std::byte> device_arrays_;
  PinnedBuffer<int32_t> host_block_tables_;  // this step's [num_seqs][max_blocks_per_seq]
  DeviceBuffer<int32_t> block_tables_;       // [max_seqs][table_width_]

  // Activations, sized for arrays_.max_tokens tokens / max_seqs sequences.
  DeviceBuffer<float> residual_;         // [tokens][hidden]
  DeviceBuffer<__nv_bfloat16> normed_;   // [tokens][hidden]
  DeviceBuffer<__nv_bfloat16> qkv_;      // [tokens][(heads + 2 kv_heads) head_dim]
  DeviceBuffer<__nv_bfloat16> attn_;     // [tokens][heads head_dim]
  DeviceBuffer<__nv_bfloat16> delta_;    // [tokens][hidden]: a sublayer's output
  DeviceBuffer<__nv_bfloat16> gate_up_;  // [tokens][2 intermediate]
  DeviceBuffer<__nv_bfloat16> act_;      // [tokens][intermediate]
  DeviceBuffer<float> last_;             // [seqs][hidden]
  DeviceBuffer<__nv_bfloat16> last_normed_;
  DeviceBuffer<float> logits_;  // [seqs][vocab]
  // The mixture-of-experts layers' (empty for a dense model), rows = tokens x experts_per_token:
  // router logits [tokens][experts] (and their host copy), the routing's arrays (MoeRouting),
  // gathered rows [rows][hidden], the experts' gate|up [rows][2 inter], activations [rows][inter]
  // and outputs [rows][hidden]; the shared expert's gate|up, activations, output and gate logit.
  DeviceBuffer<float> router_logits_;
  PinnedBuffer<float> host_router_logits_;
  MoeRouting routing_;
  PinnedBuffer<int32_t> host_moe_token_, host_moe_token_rows_;
  PinnedBuffer<float> host_moe_weight_;
  DeviceBuffer<int32_t> moe_token_, moe_token_rows_;
  DeviceBuffer<float> moe_weight_;
  DeviceBuffer<__nv_bfloat16> moe_rows_, moe_gate_up_, moe_act_, moe_out_;
  DeviceBuffer<__nv_bfloat16> shared_gate_up_, shared_act_, shared_out_;
  DeviceBuffer<float> shared_gate_logit_;
  bool routes_on_host_ = false;  // some layer is a mixture of experts: passes wait for the host
  DeviceBuffer<std::byte> decode_workspace_;
  int max_decode_splits_ = 1;
  std::vector<float> host_logits_;
  std::vector<__nv_bfloat16> host_hidden_bf16_;  // hidden_states(): as copied, then as floats
  std::vector<float> host_hidden_;

  // Sampling.
  DeviceBuffer<std::byte> sampling_workspace_;
  DeviceBuffer<SamplingRow> sampling_rows_;
  DeviceBuffer<SampledRow> sampled_;
  DeviceBuffer<int32_t> history_, suppressed_, bias_ids_;
  DeviceBuffer<float> bias_values_;
  DeviceBuffer<uint32_t> allowed_;  // the token masks, SamplingRow::allowed_offset
  PinnedBuffer<SamplingRow> host_rows_;
  PinnedBuffer<int32_t> host_history_, host_suppressed_, host_bias_ids_;
  PinnedBuffer<float> host_bias_values_;
  PinnedBuffer<uint32_t> host_allowed_;
  PinnedBuffer<SampledRow> host_sampled_;
  // Prompt logprobs: every scored position's token index, sampler row and result (grown to the
  // most positions a step has scored), and one group's indices on the device.
  PinnedBuffer<int32_t> host_score_indices_;
  PinnedBuffer<SamplingRow> host_score_rows_;
  PinnedBuffer<SampledRow> host_scored_;
  DeviceBuffer<int32_t> score_indices_;

  // Decode graphs by padded batch size.
  std::map<int, cudaGraphExec_t> graphs_;

  // Device time of steps: events at the start and end of each step's work on stream_.
  cudaEvent_t step_start_ = nullptr, step_end_ = nullptr;
  double device_seconds_ = 0.0;
};

}  // namespace kvserve::cuda
