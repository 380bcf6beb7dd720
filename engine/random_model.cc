#include "engine/random_model.h"

#include <charconv>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

namespace kvserve {
namespace {

constexpr uint64_t kSpecPrefixLen = 7;  // "random:"

// The multiplier that turns seeded_centred_sum() into a value of standard deviation `std`.
float scale_for(double std) {
  return static_cast<float>(std * std::sqrt(3.0) / 65536.0);
}

ModelConfig llama3_base() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 128256;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.max_position_embeddings = 8192;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001};
  c.dtype = "bfloat16";
  return c;
}

ModelConfig llama3_8b() {
  ModelConfig c = llama3_base();
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = 32;
  c.head_dim = 128;
  c.rope_scaling = RopeScaling{.factor = 8.0,
                               .low_freq_factor = 1.0,
                               .high_freq_factor = 4.0,
                               .original_max_position_embeddings = 8192};
  c.tie_word_embeddings = false;
  return c;
}

ModelConfig llama32_1b() {
  ModelConfig c = llama3_base();
  c.hidden_size = 2048;
  c.intermediate_size = 8192;
  c.num_layers = 16;
  c.head_dim = 64;
  c.rope_scaling = RopeScaling{.factor = 32.0,
                               .low_freq_factor = 1.0,
                               .high_freq_factor = 4.0,
                               .original_max_position_embeddings = 8192};
  c.tie_word_embeddings = true;
  return c;
}

ModelConfig tiny() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.head_dim = 16;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 1024;
  c.tie_word_embeddings = true;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.dtype = "bfloat16";
  return c;
}

std::string shape_list() {
  std::string out;
  for (const std::string& name : random_model_shape_names())
    out += (out.empty() ? "" : ", ") + name;
  return out;
}

}  // namespace

std::vector<std::string> random_model_shape_names() {
  return {"llama3-8b", "llama3.2-1b", "tiny"};
}

std::optional<ModelConfig> random_model_shape(std::string_view name) {
  if (name == "llama3-8b") return llama3_8b();
  if (name == "llama3.2-1b") return llama32_1b();
  if (name == "tiny") return tiny();
  return std::nullopt;
}

int64_t parameter_count(const ModelConfig& c) {
  const int64_t hidden = c.hidden_size;
  const int64_t q = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv = int64_t{c.num_kv_heads} * c.head_dim;
  int64_t layer = 2 * hidden + hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * c.intermediate_size;
  if (c.qkv_bias) layer += q + 2 * kv;
  if (c.qk_norm) layer += 2 * int64_t{c.head_dim};
  const int64_t embed = int64_t{c.vocab_size} * hidden;
  return embed * (c.tie_word_embeddings ? 1 : 2) + hidden + layer * c.num_layers;
}

float seeded_value(const SeededFill& fill, uint64_t index) {
  const float v = static_cast<float>(seeded_centred_sum(fill.key, index)) * fill.scale;
  return fill.mean == 0.0f ? v : fill.mean + v;
}

float random_weight(uint64_t seed, uint64_t tensor_id, uint64_t index, double mean, double std) {
  return seeded_value({seeded_tensor_key(seed, tensor_id), scale_for(std), static_cast<float>(mean)}, index);
}

Model make_random_model(const ModelConfig& c, uint64_t seed, WeightLoading loading) {
  // The shapes below are Llama's (with Qwen's biases and q/k norms); Gemma 2/3's four norms a layer
  // are not generated.
  if (c.sandwich_norms) throw std::invalid_argument("make_random_model: Gemma 2/3 layers are not generated");
  if (c.moe) throw std::invalid_argument("make_random_model: mixture-of-experts layers are not generated");
  Model model;
  model.config = c;
  ModelWeights& w = model.weights;
  const int64_t hidden = c.hidden_size;
  const int64_t q = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv = int64_t{c.num_kv_heads} * c.head_dim;
  const int64_t inter = c.intermediate_size;
  constexpr double kSmall = 0.02;

  auto fill = [&](Tensor& t, uint64_t id, std::vector<int64_t> shape, double mean, double std) {
    t.shape = std::move(shape);
    t.seeded = SeededFill{seeded_tensor_key(seed, id), scale_for(std), static_cast<float>(mean)};
  };
  auto linear = [&](Tensor& t, uint64_t id, int64_t out, int64_t in) {
    fill(t, id, {out, in}, 0.0, 1.0 / std::sqrt(static_cast<double>(in)));
  };
  auto vector = [&](Tensor& t, uint64_t id, int64_t n, double mean) { fill(t, id, {n}, mean, kSmall); };
  fill(w.embed_tokens, 0, {c.vocab_size, hidden}, 0.0, kSmall);
  vector(w.final_norm, 1, hidden, 1.0);
  if (!c.tie_word_embeddings) linear(w.lm_head, 2, c.vocab_size, hidden);
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& L = w.layers[l];
    const uint64_t base = 16 + 16 * static_cast<uint64_t>(l);
    vector(L.input_norm, base + 0, hidden, 1.0);
    linear(L.q_proj, base + 1, q, hidden);
    linear(L.k_proj, base + 2, kv, hidden);
    linear(L.v_proj, base + 3, kv, hidden);
    linear(L.o_proj, base + 4, hidden, q);
    vector(L.mlp_norm, base + 5, hidden, 1.0);
    linear(L.gate_proj, base + 6, inter, hidden);
    linear(L.up_proj, base + 7, inter, hidden);
    linear(L.down_proj, base + 8, hidden, inter);
    if (c.qkv_bias) {
      vector(L.q_bias, base + 9, q, 0.0);
      vector(L.k_bias, base + 10, kv, 0.0);
      vector(L.v_bias, base + 11, kv, 0.0);
    }
    if (c.qk_norm) {
      vector(L.q_norm, base + 12, c.head_dim, 1.0);
      vector(L.k_norm, base + 13, c.head_dim, 1.0);
    }
  }
  if (loading == WeightLoading::kHost) materialize_weights(model);
  return model;
}

void seeded_values(const SeededFill& fill, std::span<float> out) {
  float* data = out.data();
  const auto n = static_cast<std::ptrdiff_t>(out.size());
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::ptrdiff_t i = 0; i < n; ++i)
    data[i] = seeded_value(fill, static_cast<uint64_t>(i));
}

bool is_random_model_spec(std::string_view spec) {
  return spec.starts_with("random:");
}

Model load_random_model_spec(std::string_view spec, WeightLoading loading) {
  const std::string quoted = "model spec '" + std::string(spec) + "'";
  if (!is_random_model_spec(spec)) {
    throw ModelLoadError(quoted +
                         ": a random-weight model is named random:<shape>[:seed]; shapes: " + shape_list());
  }
  const std::string_view rest = spec.substr(kSpecPrefixLen);
  const size_t colon = rest.find(':');
  const std::string_view name = rest.substr(0, colon);
  const std::optional<ModelConfig> config = random_model_shape(name);
  if (!config) {
    throw ModelLoadError(quoted + ": unknown shape '" + std::string(name) +
                         "'; valid shapes: " + shape_list() + " (as random:<shape>[:seed])");
  }
  uint64_t seed = 0;
  if (colon != std::string_view::npos) {
    const std::string_view digits = rest.substr(colon + 1);
    const char* end = digits.data() + digits.size();
    const auto [ptr, ec] = std::from_chars(digits.data(), end, seed);
    if (digits.empty() || ec != std::errc() || ptr != end) {
      throw ModelLoadError(quoted + ": seed '" + std::string(digits) +
                           "' is not a non-negative decimal integer below 2^64; write random:" +
                           std::string(name) + ":<seed>");
    }
  }
  Model model = make_random_model(*config, seed, loading);
  model.dir = std::string(spec);
  return model;
}

}  // namespace kvserve
