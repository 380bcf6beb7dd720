// A Llama-family model as the engine sees it: the architecture's hyper-parameters (from
// config.json) and its weights, in float32 for the CPU reference backend, or still where they are
// stored (a mapped checkpoint, a random generator) for a backend that reads them itself.
//
// Supported: LlamaForCausalLM and MistralForCausalLM (RMSNorm, RoPE with rope_theta and Llama-3
// rope_scaling, grouped-query attention, SwiGLU, tied or untied embeddings), Qwen2ForCausalLM
// (the same plus a bias on q/k/v), Qwen3ForCausalLM (Llama plus an RMSNorm over each head's q and
// k before RoPE, optional q/k/v biases), Phi3ForCausalLM (Llama with q|k|v and gate|up each
// stored as one fused tensor, which the loader splits) and GraniteForCausalLM (Llama with four
// scalars: embedding, attention, residual and logit multipliers), and Google's Gemma family:
// GemmaForCausalLM, Gemma2ForCausalLM and Gemma3ForCausalLM (Llama with (1 + w) RMSNorm weights,
// scaled embeddings, a tanh-GELU MLP; Gemma 2 and 3 with norms after attention and MLP too, layers
// alternating between a sliding window and full attention, Gemma 2 with soft-capped attention
// scores and logits, Gemma 3 with q/k norms and a RoPE base of its own for the windowed layers).
// Mixture-of-experts models: MixtralForCausalLM, Qwen2MoeForCausalLM and Qwen3MoeForCausalLM (the
// Mistral, Qwen2 and Qwen3 attention with a routed MLP, MoeConfig below).
// Weights in float32, float16 or bfloat16 safetensors, or FP8 ones (Fp8Weights below).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/block_pool.h"
#include "engine/safetensors.h"
#include "engine/seeded_weights.h"

namespace kvserve {

// Thrown at start-up for any problem with model files. what() names the file and the problem and
// says what to fix; the process prints it and exits non-zero.
class ModelLoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// RoPE scaling: Llama 3's frequency-dependent one ("rope_type": "llama3"), or "linear" (positions
// divided by `factor`: every inverse frequency is). Absent: plain RoPE.
struct RopeScaling {
  enum class Type { kLlama3, kLinear };
  Type type = Type::kLlama3;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
};

// The MLP's gate activation: down(act(gate(x)) * up(x)).
enum class MlpActivation {
  kSilu,      // SwiGLU (Llama and most others)
  kGeluTanh,  // GeGLU with tanh-approximated GELU (Gemma's "gelu_pytorch_tanh")
};

// How an FP8 checkpoint stores its quantized weights: each weight [rows, cols] as F8_E4M3 values q,
// beside a scale tensor `<weight name>_scale_inv` ("fp8", as Qwen3-*-FP8 and DeepSeek ship) or
// `<weight name>_scale` (llm-compressor's "compressed-tensors" float8), one scale per block of
// block_rows x block_cols (0: the whole dimension), so the weight is q[r][c] * scale[r / block_rows]
// [c / block_cols] and the scale tensor [ceil(rows / block_rows), ceil(cols / block_cols)]: per
// tensor (0 x 0), per output channel (1 x 0), per group of columns (1 x g) or per block (128 x 128).
// Which weights are quantized is what the checkpoint stores as F8_E4M3 (the LM head usually is not).
// The backends dequantize at load (the CPU one to float32, the CUDA one to bf16): activations and the
// KV cache stay unquantized, so static activation and KV scales (input_scale, k_scale, v_scale) go
// unused.
struct Fp8Weights {
  std::string method;        // quant_method: "fp8" or "compressed-tensors"
  std::string scale_suffix;  // "_scale_inv" or "_scale", appended to the weight's name
  int64_t block_rows = 0;
  int64_t block_cols = 0;
};

// A mixture-of-experts MLP (Mixtral, Qwen2-MoE, Qwen3-MoE) in the layers is_moe_layer() names: a
// router (a linear map to one logit per expert) picks, for each token, the experts_per_token experts
// with the highest softmax probabilities; the MLP's output is the sum of those experts' SwiGLU
// outputs (each an MLP of expert_intermediate_size) weighted by their probabilities, renormalized
// to sum to 1 when normalize_routing_weights (Mixtral always; Qwen's norm_topk_prob). Qwen2-MoE adds
// a shared expert every token goes through (shared_expert_intermediate_size), its output
// multiplied by sigmoid(shared_expert_gate . x). Layer i is routed when (i + 1) is a multiple of
// decoder_sparse_step and dense_layers does not list it (Qwen's decoder_sparse_step and
// mlp_only_layers; Mixtral routes every layer); the others have the dense MLP of intermediate_size.
struct MoeConfig {
  int num_experts = 0;
  int experts_per_token = 0;
  int expert_intermediate_size = 0;
  bool normalize_routing_weights = true;
  int shared_expert_intermediate_size = 0;  // 0: no shared expert
  int decoder_sparse_step = 1;
  std::vector<int> dense_layers;  // sorted
};

struct ModelConfig {
  // "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM",
  // "GraniteForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
  // "MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"
  std::string architecture;
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;  // == num_heads without GQA
  int head_dim = 0;      // hidden_size / num_heads unless config.json says otherwise
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  // Phi-3's "longrope" scaling (the 128k models), as it applies up to original_max_position_embeddings,
  // the longest sequence served with it: frequency i divided by short_factor[i], and cos and sin
  // multiplied by attention_factor (which attention_scale() folds in, squared: q and k both turn).
  // Past that length transformers switches every position of the sequence to long_factor, which a
  // KV cache cannot follow. Empty: none.
  std::vector<double> longrope_short_factor;
  double longrope_attention_factor = 1.0;
  int longrope_original_max_position_embeddings = 0;
  // Sliding-window attention: position q attends to positions k with q - window < k <= q (the last
  // `window` tokens, itself included, as Hugging Face masks it), in every layer (Mistral, Phi-3) or in
  // those sliding_layers marks (Gemma 2 and 3, whose other layers attend to everything). Absent: full
  // causal. The KV cache keeps every token (blocks are not freed as they leave the window).
  std::optional<int> sliding_window;
  std::vector<bool> sliding_layers;  // [num_layers], or empty: all layers
  // Gemma 3: the windowed layers' RoPE base (rope_local_base_freq), with no rope_scaling; the full
  // layers use rope_theta and rope_scaling. Absent: one RoPE for all layers.
  std::optional<double> sliding_rope_theta;
  int max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  // The checkpoint is a base model without an LM head (embedding models saved by
  // sentence-transformers): the server answers embedding calls and refuses generation. Set by
  // load_model (tie_word_embeddings then true: the embeddings stand in for the LM head).
  bool embedding_only = false;
  bool qkv_bias = false;  // Qwen2; Qwen3 with attention_bias
  // Qwen3: each head's q and k (after any bias) are RMS-normalized over head_dim with their own
  // weights (q_norm, k_norm) and rms_norm_eps, then rotated.
  bool qk_norm = false;
  // Phi-3: the checkpoint stores each layer's q, k and v projections as one qkv_proj tensor (their
  // rows one after another) and gate and up as one gate_up_proj; the loader splits them into the
  // LayerWeights below without copying, so the backends see the Llama layout.
  bool fused_projections = false;
  // Granite's scalars, which the other architectures fix: the embeddings are multiplied by
  // embedding_multiplier, the attention scores by attention_multiplier (absent: 1/sqrt(head_dim)),
  // each sublayer's output by residual_multiplier before it joins the residual stream, and the
  // logits are divided by logits_scaling.
  double embedding_multiplier = 1.0;
  std::optional<double> attention_multiplier;
  double residual_multiplier = 1.0;
  double logits_scaling = 1.0;
  // Gemma: every RMSNorm multiplies by (norm_weight_offset + weight), 1 there (checkpoints store the
  // offset from 1), 0 elsewhere.
  double norm_weight_offset = 0.0;
  MlpActivation activation = MlpActivation::kSilu;
  // Gemma 2 and 3 normalize each sublayer's output too before it joins the residual stream (the
  // attention's with post_attention_layernorm, the MLP's with post_feedforward_layernorm; the MLP's
  // input norm is then pre_feedforward_layernorm).
  bool sandwich_norms = false;
  // Gemma 2: attention scores (after the scale) and logits are soft-capped, x -> cap * tanh(x / cap).
  std::optional<double> attn_logit_softcapping;
  std::optional<double> final_logit_softcapping;
  // Gemma 3 4B and larger (Gemma3ForConditionalGeneration) and Mistral Small 3.1 / 3.2
  // (Mistral3ForConditionalGeneration) are multimodal checkpoints: a vision encoder beside the text
  // model, which is what kvserve serves (text in, text out). `architecture` is then the text
  // model's (Gemma3ForCausalLM, MistralForCausalLM), read from config.json's text_config; this
  // names the checkpoint's own (empty for every other model), whose text tensors sit under another
  // prefix and whose vision tensors the loader skips.
  std::string checkpoint_architecture;
  std::optional<TokenId> bos_token_id;
  std::vector<TokenId> eos_token_ids;  // config.json's eos_token_id, a number or a list
  std::string dtype;                   // storage dtype of the weights: float32, float16 or bfloat16
  // An FP8 checkpoint's linear weights (quantization_config); absent: none is quantized.
  std::optional<Fp8Weights> fp8_weights;
  // A mixture-of-experts model's routed MLP; absent: every layer's MLP is dense.
  std::optional<MoeConfig> moe;
};

// A tensor's stored values in a memory-mapped safetensors file, which this keeps mapped: elements
// [first, first + count) of the stored tensor. That is all of it, except for a weight a checkpoint
// fuses with others into one tensor (Phi-3's qkv_proj, gate_up_proj): then a block of its rows,
// which row-major storage keeps contiguous.
struct MappedTensor {
  std::shared_ptr<const SafetensorsFile> file;
  const SafetensorsTensor* tensor = nullptr;  // one of file->tensors()
  size_t first = 0;
  size_t count = 0;
  // An FP8 weight's scales (Fp8Weights): the stored values times these give the weight. Indexed by
  // the stored tensor's rows and columns, so a block of a fused tensor's rows finds its own.
  struct Fp8Scales {
    std::shared_ptr<const SafetensorsFile> file;
    const SafetensorsTensor* tensor = nullptr;  // [ceil(rows / block_rows), ceil(cols / block_cols)]
    int64_t block_rows = 1;                     // resolved: never 0 here
    int64_t block_cols = 1;
  };
  std::optional<Fp8Scales> fp8_scales;
};

// Elements [first, first + out.size()) of the weight `m` maps (relative to m.first) as float32:
// converted from F32 / F16 / BF16, or dequantized from FP8 with its scales. Throws
// std::out_of_range past m.count, ModelLoadError for a dtype that holds no weights.
void mapped_to_float32(const MappedTensor& m, size_t first, std::span<float> out);

// Row-major float32 tensor. Linear weights keep Hugging Face's [out_features, in_features] layout.
// Where its values come from may be recorded too: a random-weight model's generator (`seeded`,
// engine/random_model.h) or a checkpoint's bytes (`mapped`). A tensor loaded with
// WeightLoading::kDeferred leaves `data` empty, so a backend reads the values from there into its
// own memory in its own format (the CUDA backend: bf16 on the GPU) without a float32 host copy.
struct Tensor {
  std::vector<int64_t> shape;  // empty: the model has no such tensor (an absent bias, a tied lm_head)
  std::vector<float> data;
  std::optional<SeededFill> seeded;
  std::optional<MappedTensor> mapped;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
};

// One SwiGLU MLP: down(act(gate(x)) * up(x)).
struct MlpWeights {
  Tensor gate_proj;  // [intermediate, hidden]
  Tensor up_proj;    // [intermediate, hidden]
  Tensor down_proj;  // [hidden, intermediate]
};

struct LayerWeights {
  Tensor input_norm;              // [hidden]                      input_layernorm.weight
  Tensor q_proj;                  // [heads * head_dim, hidden]
  Tensor k_proj;                  // [kv_heads * head_dim, hidden]
  Tensor v_proj;                  // [kv_heads * head_dim, hidden]
  Tensor q_bias, k_bias, v_bias;  // Qwen2 only; empty otherwise
  Tensor q_norm, k_norm;          // [head_dim] each, Qwen3 and Gemma 3 only  self_attn.{q,k}_norm.weight
  Tensor o_proj;                  // [hidden, heads * head_dim]
  Tensor attn_output_norm;        // [hidden], Gemma 2/3 only      post_attention_layernorm.weight
  Tensor mlp_norm;                // [hidden] the MLP's input norm post_attention_layernorm.weight
                                  //          (Gemma 2/3: pre_feedforward_layernorm.weight)
  Tensor mlp_output_norm;         // [hidden], Gemma 2/3 only      post_feedforward_layernorm.weight
  Tensor gate_proj;               // [intermediate, hidden]
  Tensor up_proj;                 // [intermediate, hidden]
  Tensor down_proj;               // [hidden, intermediate]
  // A mixture-of-experts layer's MLP (MoeConfig) instead of gate/up/down above, which stay empty.
  Tensor router;  // [num_experts, hidden]   mlp.gate.weight (Mixtral: block_sparse_moe.gate)
  std::vector<MlpWeights> experts;  // [num_experts]          mlp.experts.N.{gate,up,down}_proj
                                    //                          (Mixtral: block_sparse_moe.experts.N.w1/w3/w2)
  MlpWeights shared_expert;         // Qwen2-MoE only            mlp.shared_expert.{gate,up,down}_proj
  Tensor shared_expert_gate;        // [1, hidden], Qwen2-MoE   mlp.shared_expert_gate.weight
};

struct ModelWeights {
  Tensor embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]; empty when tied to embed_tokens
  const Tensor& output_projection() const { return lm_head.shape.empty() ? embed_tokens : lm_head; }
};

// Calls f(tensor) on every tensor of `w` (const or not), absent ones included, in a fixed order.
template <typename Weights, typename F>
void for_each_tensor(Weights& w, F&& f) {
  f(w.embed_tokens);
  for (auto& l : w.layers) {
    for (auto* t : {&l.input_norm,
                    &l.q_proj,
                    &l.k_proj,
                    &l.v_proj,
                    &l.q_bias,
                    &l.k_bias,
                    &l.v_bias,
                    &l.q_norm,
                    &l.k_norm,
                    &l.o_proj,
                    &l.attn_output_norm,
                    &l.mlp_norm,
                    &l.mlp_output_norm,
                    &l.gate_proj,
                    &l.up_proj,
                    &l.down_proj,
                    &l.router,
                    &l.shared_expert.gate_proj,
                    &l.shared_expert.up_proj,
                    &l.shared_expert.down_proj,
                    &l.shared_expert_gate})
      f(*t);
    for (auto& e : l.experts)
      for (auto* t : {&e.gate_proj, &e.up_proj, &e.down_proj})
        f(*t);
  }
  f(w.final_norm);
  f(w.lm_head);
}

struct Model {
  std::filesystem::path dir;
  ModelConfig config;
  ModelWeights weights;
};

// The longest sequence (prompt + output) the engine serves for this model: its trained length,
// and no more than a longrope model's original length (see longrope_short_factor).
inline int max_supported_len(const ModelConfig& c) {
  int len = c.max_position_embeddings;
  if (!c.longrope_short_factor.empty()) len = std::min(len, c.longrope_original_max_position_embeddings);
  return len;
}

// Whether layer `layer` attends through the sliding window.
inline bool is_sliding_layer(const ModelConfig& c, int layer) {
  return c.sliding_window && (c.sliding_layers.empty() || c.sliding_layers.at(static_cast<size_t>(layer)));
}

// How many of the latest positions (itself included) a query of layer `layer` attends to: the
// sliding window, or 0 for all of them (full causal attention). The backends' attention takes it as is.
inline int attention_window(const ModelConfig& c, int layer) {
  return is_sliding_layer(c, layer) ? *c.sliding_window : 0;
}

// The most positions a query of any layer attends to, for a sequence of `len` tokens.
inline int max_attended_len(const ModelConfig& c, int len) {
  for (int layer = 0; layer < c.num_layers; ++layer)
    if (!is_sliding_layer(c, layer)) return len;
  return c.sliding_window ? std::min(len, *c.sliding_window) : len;
}

// Whether layer `layer`'s MLP is a mixture of experts (MoeConfig).
inline bool is_moe_layer(const ModelConfig& c, int layer) {
  return c.moe && (layer + 1) % c.moe->decoder_sparse_step == 0 &&
         !std::binary_search(c.moe->dense_layers.begin(), c.moe->dense_layers.end(), layer);
}

// Whether layer `layer` rotates with the windowed layers' RoPE (sliding_rope_theta).
inline bool uses_sliding_rope(const ModelConfig& c, int layer) {
  return c.sliding_rope_theta && is_sliding_layer(c, layer);
}

// What attention scores are multiplied by before the softmax.
inline float attention_scale(const ModelConfig& c) {
  const float base = c.attention_multiplier ? static_cast<float>(*c.attention_multiplier)
                                            : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  if (c.longrope_short_factor.empty()) return base;
  return static_cast<float>(base * c.longrope_attention_factor * c.longrope_attention_factor);
}

// RoPE's inverse frequencies [head_dim / 2], with the config's rope_scaling applied: in float32, as
// the published implementations compute them, so positions map to the same angles. `sliding_rope`:
// those of the windowed layers' RoPE (Gemma 3's sliding_rope_theta, unscaled) instead.
std::vector<float> rope_inv_freq(const ModelConfig& config, bool sliding_rope = false);

// How the checkpoint's weights are quantized, for logs and GetModelInfo: "" when they are not, else
// e.g. "fp8 (E4M3 weights, one scale per 128x128 block)".
std::string quantization_summary(const ModelConfig& config);

// A mixture-of-experts model's routing, for logs: "" for a dense model, else e.g. "8 experts, 2 per
// token, in 32 of 32 layers (each expert's MLP 14336 wide)".
std::string moe_summary(const ModelConfig& config);

// Reads and checks config.json, and generation_config.json beside it when there is one (its
// eos_token_id adds to config.json's). Throws ModelLoadError naming the file and the field.
ModelConfig load_model_config(const std::filesystem::path& config_json);

// Whether a loader fills every tensor's float32 `data` or leaves the values where they are.
enum class WeightLoading {
  kHost,      // float32 host copies: what the CPU backend reads
  kDeferred,  // shapes and sources only (mapped or seeded), for a backend that reads them itself
};

// Which of a model directory's safetensors files hold its weights: those the shard index
// (model.safetensors.index.json, whose text `index_json` is, or empty without one) names in its
// weight_map, else all of `safetensors_names` but Mistral's consolidated*.safetensors (the same
// weights under mistral_inference's names, which full downloads of Mistral's repositories hold).
// Sorted; throws ModelLoadError for an index without a weight_map.
inline constexpr char kShardIndexFile[] = "model.safetensors.index.json";
std::vector<std::string> weight_file_names(const std::vector<std::string>& safetensors_names,
                                           std::string_view index_json);

// Loads a Hugging Face model directory: config.json and the safetensors files weight_file_names()
// picks (tokenizer.model is the Tokenizer's business). Every expected tensor must be present with the
// expected shape; anything wrong throws ModelLoadError naming the file and the problem, with either
// `loading` (the checks come before any value is read). kDeferred keeps the files mapped read-only:
// a bf16 Llama-3-8B then costs no host memory beyond the page cache, not 32 GB of float32.
Model load_model(const std::filesystem::path& dir, WeightLoading loading = WeightLoading::kHost);

// True when some tensor's values are not in `data` yet (loaded with WeightLoading::kDeferred).
bool has_deferred_weights(const Model& model);

// Reads every deferred tensor's values into `data` (float32): the model becomes what
// WeightLoading::kHost would have loaded, bit for bit.
void materialize_weights(Model& model);

}  // namespace kvserve
