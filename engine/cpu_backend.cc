#include "engine/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace kvserve {
namespace {

// y[rows x out] = x[rows x in] * w[out x in]^T (+ bias): Hugging Face linear layout.
void linear(const std::vector<float>& x, int rows, const Tensor& w, const Tensor& bias,
            std::vector<float>& y) {
  const int out = static_cast<int>(w.shape[0]);
  const int in = static_cast<int>(w.shape[1]);
  y.resize(static_cast<size_t>(rows) * out);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x.data(), in, w.data.data(), in,
              0.0f, y.data(), out);
  if (bias.data.empty()) return;
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o)
      y[static_cast<size_t>(r) * out + o] += bias.data[o];
}

// x -> cap * tanh(x / cap), Gemma 2's soft cap on attention scores and logits.
float soft_cap(float x, float cap) {
  return cap * std::tanh(x / cap);
}

// The output projection's last steps: Granite's logits_scaling (1 elsewhere: dividing by 1 changes
// no bit) and Gemma 2's final soft cap.
void finish_logits(std::vector<float>& logits, const ModelConfig& c) {
  const auto divisor = static_cast<float>(c.logits_scaling);
  for (float& x : logits)
    x /= divisor;
  if (!c.final_logit_softcapping) return;
  const auto cap = static_cast<float>(*c.final_logit_softcapping);
  for (float& x : logits)
    x = soft_cap(x, cap);
}

// y = x * rsqrt(mean(x^2) + eps) * (weight + offset) for one row (offset 1 for Gemma, 0 otherwise);
// y may be x.
void rms_norm_row(const float* x, int width, const Tensor& weight, double eps, double offset, float* y) {
  float sum = 0.0f;
  for (int i = 0; i < width; ++i)
    sum += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(sum / static_cast<float>(width) + static_cast<float>(eps));
  const auto off = static_cast<float>(offset);
  for (int i = 0; i < width; ++i)
    y[i] = x[i] * scale * (weight.data[i] + off);
}

// out = x * rsqrt(mean(x^2) + eps) * (weight + offset), row by row; out may be x.
void rms_norm(const std::vector<float>& x, int rows, int width, const Tensor& weight, const ModelConfig& c,
              std::vector<float>& out) {
  out.resize(static_cast<size_t>(rows) * width);
  for (int r = 0; r < rows; ++r)
    rms_norm_row(&x[static_cast<size_t>(r) * width], width, weight, c.rms_norm_eps, c.norm_weight_offset,
                 &out[static_cast<size_t>(r) * width]);
}

// The MLP's gate activation, in place: gate = act(gate) * up.
void gated_activation(std::vector<float>& gate, const std::vector<float>& up, MlpActivation activation) {
  if (activation == MlpActivation::kSilu) {
    for (size_t i = 0; i < gate.size(); ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];  // SiLU(gate) * up
    }
    return;
  }
  // GELU, tanh approximation: 0.5 g (1 + tanh(z)), z = sqrt(2 / pi) (g + 0.044715 g^3), computed as
  // g * sigmoid(2 z), the same function without 1 + tanh(z)'s cancellation for very negative z.
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (size_t i = 0; i < gate.size(); ++i) {
    const float g = gate[i];
    const float z = kSqrt2OverPi * (g + 0.044715f * g * g * g);
    gate[i] = g / (1.0f + std::exp(-2.0f * z)) * up[i];
  }
}

// Hugging Face's rotate-half RoPE: dimension i pairs with i + head_dim / 2.
void apply_rope(float* vec, int head_dim, int position, const std::vector<float>& inv_freq) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const double angle = static_cast<double>(position) * inv_freq[i];
    const float c = static_cast<float>(std::cos(angle));
    const float s = static_cast<float>(std::sin(angle));
    const float a = vec[i], b = vec[i + half];
    vec[i] = a * c - b * s;
    vec[i + half] = b * c + a * s;
  }
}

}  // namespace

size_t CpuBackend::kv_bytes_per_token(const ModelConfig& c) {
  return 2ull * c.num_layers * c.num_kv_heads * c.head_dim * sizeof(float);
}

CpuBackend::CpuBackend(std::shared_ptr<const Model> model, int num_blocks, int block_size, int num_threads,
                       std::vector<LoraAdapter> lora_adapters)
    : model_(std::move(model)),
      num_blocks_(num_blocks),
      block_size_(block_size),
      lora_adapters_(std::move(lora_adapters)) {
  if (!model_) throw std::invalid_argument("CpuBackend: no model");
  const ModelConfig& c = model_->config;
  if (c.head_dim % 2 != 0) throw std::invalid_argument("CpuBackend: head_dim must be even for RoPE");
  kv_row_ = c.num_kv_heads * c.head_dim;
  const size_t floats = static_cast<size_t>(num_blocks) * block_size * kv_row_;
  if (has_deferred_weights(*model_))
    throw std::invalid_argument(
        "CpuBackend: the model's weights are not on the host (loaded with WeightLoading::kDeferred: call "
        "materialize_weights() first)");
  for (const LoraAdapter& a : lora_adapters_)
    if (a.layers.size() != static_cast<size_t>(c.num_layers))
      throw std::invalid_argument("CpuBackend: LoRA adapter '" + a.name + "' was loaded for another model");
  for (int l = 0; l < c.num_layers; ++l) {
    k_cache_.emplace_back(new float[floats]);  // default-initialized: no page is touched yet
    v_cache_.emplace_back(new float[floats]);
  }
  inv_freq_ = rope_inv_freq(c);
  if (c.sliding_rope_theta) sliding_inv_freq_ = rope_inv_freq(c, /*sliding_rope=*/true);
  if (num_threads > 0) {
    openblas_set_num_threads(num_threads);
    omp_set_num_threads(num_threads);
  }
}

void CpuBackend::add_lora(const StepBatch& batch, int layer, LoraTarget target, const std::vector<float>& x,
                          std::vector<float>& y) {
  if (lora_adapters_.empty()) return;
  for (int s = 0; s < batch.num_seqs; ++s) {
    const int adapter = batch.lora_adapter(s);
    if (adapter == 0) continue;
    const LoraAdapter& a = lora_adapters_[static_cast<size_t>(adapter - 1)];
    const LoraPair& pair = a.layers[static_cast<size_t>(layer)][target];
    const int first = batch.query_start_loc[s];
    apply_lora(pair, a.scaling, x.data() + static_cast<size_t>(first) * pair.in, batch.query_len(s),
               y.data() + static_cast<size_t>(first) * pair.out, lora_scratch_);
  }
}

std::span<const float> CpuBackend::forward(const StepBatch& batch) {
  const ModelConfig& c = model_->config;
  const ModelWeights& w = model_->weights;
  validate_step_batch(batch, num_blocks_, block_size_, c.vocab_size, num_lora_adapters());
  smallest_routing_margin_ = INFINITY;
  const int tokens = batch.num_tokens;
  const int hidden = c.hidden_size;
  const int q_width = c.num_heads * c.head_dim;

  // Granite's multipliers are 1 elsewhere, and multiplying by 1 changes no bit.
  const auto embedding_multiplier = static_cast<float>(c.embedding_multiplier);
  const auto residual_multiplier = static_cast<float>(c.residual_multiplier);
  x_.resize(static_cast<size_t>(tokens) * hidden);
  for (int t = 0; t < tokens; ++t)
    std::transform(&w.embed_tokens.data[static_cast<size_t>(batch.token_ids[t]) * hidden],
                   &w.embed_tokens.data[static_cast<size_t>(batch.token_ids[t] + 1) * hidden],
                   &x_[static_cast<size_t>(t) * hidden], [&](float e) { return e * embedding_multiplier; });

  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& lw = w.layers[layer];
    const std::vector<float>& inv_freq = uses_sliding_rope(c, layer) ? sliding_inv_freq_ : inv_freq_;
    rms_norm(x_, tokens, hidden, lw.input_norm, c, h_);
    linear(h_, tokens, lw.q_proj, lw.q_bias, q_);
    linear(h_, tokens, lw.k_proj, lw.k_bias, k_);
    linear(h_, tokens, lw.v_proj, lw.v_bias, v_);
    add_lora(batch, layer, kLoraQ, h_, q_);
    add_lora(batch, layer, kLoraK, h_, k_);
    add_lora(batch, layer, kLoraV, h_, v_);

    // (Qwen3, Gemma 3: each head's q and k normalized,) RoPE, then every new token's K/V go to their slots
    // before any attention reads (the Backend contract that lets sequences of one batch share blocks).
    float* kc = k_cache_[layer].get();
    float* vc = v_cache_[layer].get();
    for (int t = 0; t < tokens; ++t) {
      const int pos = batch.positions[t];
      for (int hd = 0; hd < c.num_heads; ++hd) {
        float* q = &q_[static_cast<size_t>(t) * q_width + hd * c.head_dim];
        if (c.qk_norm) rms_norm_row(q, c.head_dim, lw.q_norm, c.rms_norm_eps, c.norm_weight_offset, q);
        apply_rope(q, c.head_dim, pos, inv_freq);
      }
      for (int hd = 0; hd < c.num_kv_heads; ++hd) {
        float* k = &k_[static_cast<size_t>(t) * kv_row_ + hd * c.head_dim];
        if (c.qk_norm) rms_norm_row(k, c.head_dim, lw.k_norm, c.rms_norm_eps, c.norm_weight_offset, k);
        apply_rope(k, c.head_dim, pos, inv_freq);
      }
      const int64_t slot = batch.slot_mapping[t];
      std::copy_n(&k_[static_cast<size_t>(t) * kv_row_], kv_row_, &kc[static_cast<size_t>(slot) * kv_row_]);
      std::copy_n(&v_[static_cast<size_t>(t) * kv_row_], kv_row_, &vc[static_cast<size_t>(slot) * kv_row_]);
    }

    attention(batch, layer);
    linear(attn_, tokens, lw.o_proj, Tensor{}, h_);
    add_lora(batch, layer, kLoraO, attn_, h_);
    if (c.sandwich_norms) rms_norm(h_, tokens, hidden, lw.attn_output_norm, c, h_);
    for (size_t i = 0; i < x_.size(); ++i)
      x_[i] += h_[i] * residual_multiplier;

    rms_norm(x_, tokens, hidden, lw.mlp_norm, c, h_);
    if (is_moe_layer(c, layer)) {
      moe_mlp(lw, tokens);  // (LoRA adapters of MoE models adapt attention only: load_lora_adapter)
    } else {
      linear(h_, tokens, lw.gate_proj, Tensor{}, gate_);
      linear(h_, tokens, lw.up_proj, Tensor{}, up_);
      add_lora(batch, layer, kLoraGate, h_, gate_);
      add_lora(batch, layer, kLoraUp, h_, up_);
      gated_activation(gate_, up_, c.activation);
      linear(gate_, tokens, lw.down_proj, Tensor{}, h_);
      add_lora(batch, layer, kLoraDown, gate_, h_);
    }
    if (c.sandwich_norms) rms_norm(h_, tokens, hidden, lw.mlp_output_norm, c, h_);
    for (size_t i = 0; i < x_.size(); ++i)
      x_[i] += h_[i] * residual_multiplier;
  }

  // Final norm and logits only for the tokens whose next token is sampled: the last of each
  // sequence that emits one, and those that check a draft.
  const int seqs = batch.num_seqs;
  const int rows = static_cast<int>(batch.logits_indices.size());
  const auto sampled = [&](int r) { return r >= seqs || batch.emits_token[r]; };
  last_.assign(static_cast<size_t>(rows) * hidden, 0.0f);
  for (int r = 0; r < rows; ++r) {
    if (!sampled(r)) continue;
    const int t = batch.logits_indices[r];
    std::copy_n(&x_[static_cast<size_t>(t) * hidden], hidden, &last_[static_cast<size_t>(r) * hidden]);
  }
  rms_norm(last_, rows, hidden, w.final_norm, c, h_);
  linear(h_, rows, w.output_projection(), Tensor{}, logits_);
  finish_logits(logits_, c);
  for (int r = 0; r < rows; ++r)
    if (!sampled(r)) std::fill_n(&logits_[static_cast<size_t>(r) * c.vocab_size], c.vocab_size, 0.0f);
  return logits_;
}

void CpuBackend::mlp(const MlpWeights& w, const std::vector<float>& x, int rows, std::vector<float>& out) {
  linear(x, rows, w.gate_proj, Tensor{}, gate_);
  linear(x, rows, w.up_proj, Tensor{}, up_);
  gated_activation(gate_, up_, model_->config.activation);
  linear(gate_, rows, w.down_proj, Tensor{}, out);
}

void CpuBackend::moe_mlp(const LayerWeights& lw, int tokens) {
  const ModelConfig& c = model_->config;
  const MoeConfig& moe = *c.moe;
  const size_t hidden = static_cast<size_t>(c.hidden_size);
  const int experts = moe.num_experts;

  // Route (route_tokens), then run each expert once over the rows of the tokens routed to it, its
  // output added in weighted.
  linear(h_, tokens, lw.router, Tensor{}, router_logits_);
  route_tokens(router_logits_, tokens, moe, routing_);
  smallest_routing_margin_ = std::min(smallest_routing_margin_, routing_.smallest_margin);
  moe_out_.assign(static_cast<size_t>(tokens) * hidden, 0.0f);
  for (int e = 0; e < experts; ++e) {
    const size_t first = static_cast<size_t>(routing_.expert_start[static_cast<size_t>(e)]);
    const size_t rows = static_cast<size_t>(routing_.expert_start[static_cast<size_t>(e) + 1]) - first;
    if (rows == 0) continue;
    expert_in_.resize(rows * hidden);
    for (size_t r = 0; r < rows; ++r)
      std::copy_n(&h_[static_cast<size_t>(routing_.token[first + r]) * hidden], hidden,
                  &expert_in_[r * hidden]);
    mlp(lw.experts[static_cast<size_t>(e)], expert_in_, static_cast<int>(rows), expert_out_);
    for (size_t r = 0; r < rows; ++r) {
      float* out = &moe_out_[static_cast<size_t>(routing_.token[first + r]) * hidden];
      const float weight = routing_.weight[first + r];
      for (size_t i = 0; i < hidden; ++i)
        out[i] += weight * expert_out_[r * hidden + i];
    }
  }

  // Qwen2-MoE's shared expert sees every token, its output scaled by sigmoid(shared_expert_gate . x).
  if (moe.shared_expert_intermediate_size > 0) {
    mlp(lw.shared_expert, h_, tokens, expert_out_);
    for (int t = 0; t < tokens; ++t) {
      const float* x = &h_[static_cast<size_t>(t) * hidden];
      float dot = 0.0f;
      for (size_t i = 0; i < hidden; ++i)
        dot += x[i] * lw.shared_expert_gate.data[i];
      const float gate = 1.0f / (1.0f + std::exp(-dot));
      float* out = &moe_out_[static_cast<size_t>(t) * hidden];
      for (size_t i = 0; i < hidden; ++i)
        out[i] += gate * expert_out_[static_cast<size_t>(t) * hidden + i];
    }
  }
  h_.swap(moe_out_);
}

void CpuBackend::final_hidden(const StepBatch& batch, std::span<const int> token_indices) {
  const ModelConfig& c = model_->config;
  const size_t hidden = static_cast<size_t>(c.hidden_size);
  if (x_.size() != static_cast<size_t>(batch.num_tokens) * hidden)
    throw std::logic_error("CpuBackend: the last forward pass did not run this batch");
  const int rows = static_cast<int>(token_indices.size());
  last_.resize(static_cast<size_t>(rows) * hidden);
  for (int r = 0; r < rows; ++r) {
    const int t = token_indices[static_cast<size_t>(r)];
    if (t < 0 || t >= batch.num_tokens)
      throw std::logic_error("CpuBackend: token index " + std::to_string(t) + " outside the batch");
    std::copy_n(&x_[static_cast<size_t>(t) * hidden], hidden, &last_[static_cast<size_t>(r) * hidden]);
  }
  rms_norm(last_, rows, c.hidden_size, model_->weights.final_norm, c, h_);
}

std::span<const float> CpuBackend::token_logits(const StepBatch& batch, std::span<const int> token_indices) {
  final_hidden(batch, token_indices);
  const ModelConfig& c = model_->config;
  const int rows = static_cast<int>(token_indices.size());
  linear(h_, rows, model_->weights.output_projection(), Tensor{}, logits_);
  finish_logits(logits_, c);
  return std::span<const float>(logits_.data(), static_cast<size_t>(rows) * c.vocab_size);
}

std::span<const float> CpuBackend::hidden_states(const StepBatch& batch, std::span<const int> token_indices) {
  final_hidden(batch, token_indices);
  return std::span<const float>(h_.data(),
                                token_indices.size() * static_cast<size_t>(model_->config.hidden_size));
}

void CpuBackend::attention(const StepBatch& batch, int layer) {
  const ModelConfig& c = model_->config;
  const int head_dim = c.head_dim;
  const int q_width = c.num_heads * head_dim;
  const int group = c.num_heads / c.num_kv_heads;
  const float scale = attention_scale(c);
  const float* kc = k_cache_[layer].get();
  const float* vc = v_cache_[layer].get();
  attn_.assign(static_cast<size_t>(batch.num_tokens) * q_width, 0.0f);

  // One work item per (sequence, query token, head); the token's position bounds what it sees:
  // positions first ..= pos, where first is 0 or, under a sliding window, the window's oldest.
  // Threads only pay off for real work: below ~1M multiply-adds a parallel region costs more than
  // it saves, and its idle spinning threads compete with OpenBLAS's on a small machine.
  const int window = attention_window(c, layer);
  const bool capped = c.attn_logit_softcapping.has_value();
  const float cap = static_cast<float>(c.attn_logit_softcapping.value_or(1.0));
  auto first_visible = [window](int pos) { return window > 0 ? std::max(0, pos - window + 1) : 0; };
  const int items = batch.num_tokens * c.num_heads;
  int64_t work = 0;
  for (int t = 0; t < batch.num_tokens; ++t)
    work += batch.positions[t] + 1 - first_visible(batch.positions[t]);
  work *= static_cast<int64_t>(c.num_heads) * head_dim * 2;
#pragma omp parallel if (work > (int64_t{1} << 20))
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 4)
    for (int item = 0; item < items; ++item) {
      const int t = item / c.num_heads;
      const int head = item % c.num_heads;
      const int s =
          static_cast<int>(std::upper_bound(batch.query_start_loc.begin(), batch.query_start_loc.end(), t) -
                           batch.query_start_loc.begin() - 1);
      const BlockId* table = batch.block_table(s);
      const int first = first_visible(batch.positions[t]);
      const int visible = batch.positions[t] + 1 - first;  // positions first ..= pos
      const float* q = &q_[static_cast<size_t>(t) * q_width + head * head_dim];
      const int kv_offset = (head / group) * head_dim;

      scores.resize(visible);
      float max_score = -INFINITY;
      for (int i = 0; i < visible; ++i) {
        const int p = first + i;
        const int64_t slot = static_cast<int64_t>(table[p / block_size_]) * block_size_ + p % block_size_;
        const float* k = &kc[static_cast<size_t>(slot) * kv_row_ + kv_offset];
        float dot = 0.0f;
        for (int d = 0; d < head_dim; ++d)
          dot += q[d] * k[d];
        scores[i] = capped ? soft_cap(dot * scale, cap) : dot * scale;
        max_score = std::max(max_score, scores[i]);
      }
      float denom = 0.0f;
      for (int i = 0; i < visible; ++i) {
        scores[i] = std::exp(scores[i] - max_score);
        denom += scores[i];
      }
      float* out = &attn_[static_cast<size_t>(t) * q_width + head * head_dim];
      for (int i = 0; i < visible; ++i) {
        const int p = first + i;
        const int64_t slot = static_cast<int64_t>(table[p / block_size_]) * block_size_ + p % block_size_;
        const float* v = &vc[static_cast<size_t>(slot) * kv_row_ + kv_offset];
        const float weight = scores[i] / denom;
        for (int d = 0; d < head_dim; ++d)
          out[d] += weight * v[d];
      }
    }
  }
}

}  // namespace kvserve
