#include "kernels/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda_device.h"
#include "kernels/layers.h"
#include "kernels/lora.h"
#include "kernels/moe.h"
#include "kernels/paged_attention.h"
#include "kernels/seeded_fill.h"

namespace kvserve::cuda {
namespace {

using bf16 = __nv_bfloat16;

// CUDA loads some kernels' code and cuBLAS some state lazily, on first use; the pool leaves this much
// of the budget for them rather than fail on the first step.
constexpr size_t kLazyAllocationHeadroom = size_t{512} << 20;

// Converts float32 values to bf16 (round to nearest even) and copies them to `device`.
void upload_as_bf16(std::span<const float> values, std::vector<bf16>& staging, bf16* device) {
  if (values.empty()) return;
  staging.resize(values.size());
  std::transform(values.begin(), values.end(), staging.begin(), [](float x) { return __float2bfloat16(x); });
  // From pageable memory cudaMemcpy returns once the bytes are staged, so `staging` may be reused.
  CUDA_CHECK(cudaMemcpy(device, staging.data(), values.size() * sizeof(bf16), cudaMemcpyHostToDevice));
}

// Copies a mapped checkpoint tensor (its elements [m.first, m.first + m.count)) to `device` as
// bf16. BF16 bytes go straight from the mapping; F16 and F32 are converted, and FP8 dequantized with
// its scales, through a bounded staging buffer, rounding as the float32 host path does, so both give
// the same bits. (FP8 weights thus take bf16's memory on the GPU: no FP8 matrix product yet.)
void upload_mapped(const MappedTensor& m, bf16* device) {
  const SafetensorsTensor& t = *m.tensor;
  const size_t n = m.count;
  if (m.first + n > static_cast<size_t>(t.numel()))
    throw std::logic_error("upload_mapped: elements past the end of '" + t.name + "'");
  if (t.dtype == SafetensorsDtype::kBF16 && !m.fp8_scales) {
    if (n > 0)
      CUDA_CHECK(cudaMemcpy(device, t.bytes.data() + m.first * sizeof(bf16), n * sizeof(bf16),
                            cudaMemcpyHostToDevice));
    return;
  }
  constexpr size_t kChunk = size_t{1} << 22;  // 16 MiB of float32 at a time
  std::vector<float> values(std::min(n, kChunk));
  std::vector<bf16> staging;
  for (size_t first = 0; first < n; first += kChunk) {
    const size_t count = std::min(kChunk, n - first);
    mapped_to_float32(m, first, std::span<float>(values.data(), count));
    upload_as_bf16(std::span<const float>(values.data(), count), staging, device + first);
  }
}

// Uploads tensors end to end as one bf16 device array: fused projections (q|k|v, gate|up) are
// their weights' rows one after another. Each tensor comes from wherever its values are: float32
// host data, a mapped checkpoint (WeightLoading::kDeferred), or a random generator, run in place on
// the GPU.
DeviceBuffer<bf16> upload_bf16(std::span<const Tensor* const> tensors, size_t* total_bytes) {
  // An absent tensor (no shape) contributes nothing; numel() of no dimensions would be 1.
  auto elements = [](const Tensor* t) {
    return t->shape.empty() ? size_t{0} : static_cast<size_t>(t->numel());
  };
  size_t count = 0;
  for (const Tensor* t : tensors)
    count += elements(t);
  DeviceBuffer<bf16> d(count);
  std::vector<bf16> staging;
  size_t offset = 0;
  for (const Tensor* t : tensors) {
    const size_t n = elements(t);
    if (t->data.size() == n) {
      upload_as_bf16(t->data, staging, d.get() + offset);
    } else if (t->data.empty() && t->mapped) {
      if (t->mapped->count != n)  // the loader sizes both; a mismatch would overrun the next tensor
        throw std::logic_error("upload_bf16: a tensor of " + std::to_string(n) + " elements maps " +
                               std::to_string(t->mapped->count));
      upload_mapped(*t->mapped, d.get() + offset);
    } else if (t->data.empty() && t->seeded) {
      // The legacy stream, like the copies: the constructor's device synchronization covers both.
      seeded_fill_bf16(d.get() + offset, static_cast<int64_t>(n), *t->seeded, nullptr);
    } else {
      throw std::invalid_argument("CudaBackend: a weight tensor has " + std::to_string(t->data.size()) +
                                  " values for " + std::to_string(n) + " elements and no source");
    }
    offset += n;
  }
  *total_bytes += d.bytes();
  return d;
}

DeviceBuffer<bf16> upload_bf16(std::initializer_list<const Tensor*> tensors, size_t* total_bytes) {
  return upload_bf16(std::span<const Tensor* const>(tensors.begin(), tensors.size()), total_bytes);
}

template <typename T>
T* device_array(const DeviceBuffer<std::byte>& buffer, size_t offset) {
  return reinterpret_cast<T*>(buffer.get() + offset);
}

// Grows a per-step device buffer geometrically: a penalized request's history gains a token every
// step, and a reallocation (cudaFree waits for the device) each step would stall the pipeline.
template <typename T>
void grow(DeviceBuffer<T>& buffer, size_t count) {
  if (count > buffer.size()) buffer.resize(std::max(count, 2 * buffer.size()));
}

bool has_penalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}

// The words of a token mask that travel to the device: those past the vocabulary's last word name
// no token (and a shorter mask disallows the ids past its end on the device as on the host).
size_t allowed_words(std::span<const uint32_t> allowed, int vocab) {
  return std::min(allowed.size(), (static_cast<size_t>(vocab) + 31) / 32);
}

}  // namespace

size_t CudaBackend::kv_bytes_per_token(const ModelConfig& c) {
  return 2ull * c.num_layers * c.num_kv_heads * c.head_dim * sizeof(bf16);
}

CudaBackend::CudaBackend(std::shared_ptr<const Model> model, const CudaBackendOptions& options)
    : options_(options) {
  if (!model) throw std::invalid_argument("CudaBackend: no model");
  config_ = model->config;
  const ModelConfig& c = config_;
  for (int l = 0; l < c.num_layers; ++l)
    routes_on_host_ = routes_on_host_ || is_moe_layer(c, l);
  // The O and down projections take Granite's residual multiplier as their GEMM's alpha, which a
  // sandwich norm after them (Gemma 2/3) would cancel; no architecture has both.
  if (c.sandwich_norms && c.residual_multiplier != 1.0)
    throw std::runtime_error("CUDA backend: a residual multiplier with sandwich norms is not supported");
  if (device_count() == 0) throw std::runtime_error("no CUDA device is usable here (run with --backend cpu)");
  const int hd = c.head_dim;
  if (hd != 16 && hd != 32 && hd != 64 && hd != 128 && hd != 256)
    throw std::runtime_error("CUDA backend: head_dim " + std::to_string(hd) +
                             " is not supported (16..256, powers of 2); serve this model with --backend cpu");
  if (c.hidden_size % 8 != 0 || c.intermediate_size % 8 != 0)
    throw std::runtime_error("CUDA backend: hidden_size and intermediate_size must be multiples of 8");
  // The MoE layer writes its output as the layer's last step (no architecture has both).
  if (c.moe && c.sandwich_norms)
    throw std::runtime_error("CUDA backend: mixture-of-experts layers with sandwich norms are not supported");
  if (c.moe && (c.moe->expert_intermediate_size % 8 != 0 || c.moe->shared_expert_intermediate_size % 8 != 0))
    throw std::runtime_error(
        "CUDA backend: the experts' intermediate sizes (moe_intermediate_size, "
        "shared_expert_intermediate_size) must be multiples of 8; serve this model with --backend cpu");
  if (options.block_size <= 0 || options.block_size % 8 != 0)
    throw std::runtime_error("CUDA backend: block size " + std::to_string(options.block_size) +
                             " is not a positive multiple of 8");
  if (options.max_num_seqs <= 0 || options.max_num_batched_tokens <= 0 || options.max_model_len <= 0 ||
      options.max_draft_tokens < 0)
    throw std::invalid_argument(
        "CudaBackend: max_num_seqs, max_num_batched_tokens and max_model_len must be "
        "positive, max_draft_tokens not negative");

  CUDA_CHECK(cudaSetDevice(options.device));
  device_description_ = ::kvserve::cuda::device_description(options.device);
  CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, options.device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  try {
    CUDA_CHECK(cudaEventCreate(&step_start_));
    CUDA_CHECK(cudaEventCreate(&step_end_));
    gemm_ = std::make_unique<Gemm>(stream_);
    // cudaMalloc's own "out of memory" names neither what did not fit nor what to change.
    try {
      upload_weights(*model);
      if (options.lora_adapters) upload_lora_adapters(*options.lora_adapters);
      options_.lora_adapters.reset();  // on the device now
    } catch (const OutOfDeviceMemory& e) {
      throw std::runtime_error(
          "CUDA backend: the model's bf16 weights (and LoRA adapters) do not fit in GPU memory (" +
          gib_string(double(weight_bytes_)) + " uploaded, then " + e.what() +
          "); serve it on a GPU with more memory");
    }
    try {
      allocate_activations();
    } catch (const OutOfDeviceMemory& e) {
      throw std::runtime_error(
          "CUDA backend: the activations of the largest step (" + std::to_string(arrays_.max_tokens) +
          " tokens, " + std::to_string(arrays_.max_logits_rows) + " logits rows of " +
          std::to_string(c.vocab_size) + " entries) do not fit in GPU memory next to the " +
          gib_string(double(weight_bytes_)) + " of weights (" + e.what() +
          "); lower --max-num-batched-tokens, --max-num-seqs or --num-speculative-tokens");
    }
    size_kv_pool(options);
    // cudaMemcpy from pageable memory may return before its DMA lands, and stream_ does not wait
    // for the legacy stream it ran on: the first step must not read half-uploaded weights.
    CUDA_CHECK(cudaDeviceSynchronize());
  } catch (...) {
    gemm_.reset();
    if (step_start_) cudaEventDestroy(step_start_);
    if (step_end_) cudaEventDestroy(step_end_);
    cudaStreamDestroy(stream_);
    throw;
  }
}

CudaBackend::~CudaBackend() {
  // May run on a thread that never selected our device (the engine's owner at shutdown): the frees
  // below must not land on, or create a context for, another device.
  cudaSetDevice(options_.device);
  cudaStreamSynchronize(stream_);
  for (auto& [size, exec] : graphs_)
    cudaGraphExecDestroy(exec);
  gemm_.reset();
  cudaEventDestroy(step_start_);
  cudaEventDestroy(step_end_);
  cudaStreamDestroy(stream_);
}

void CudaBackend::upload_weights(const Model& model) {
  const ModelWeights& w = model.weights;
  embed_ = upload_bf16({&w.embed_tokens}, &weight_bytes_);
  final_norm_ = upload_bf16({&w.final_norm}, &weight_bytes_);
  if (!w.lm_head.shape.empty()) lm_head_ = upload_bf16({&w.lm_head}, &weight_bytes_);
  layers_.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const kvserve::LayerWeights& lw = w.layers[i];
    LayerWeights& d = layers_[i];
    d.input_norm = upload_bf16({&lw.input_norm}, &weight_bytes_);
    d.qkv = upload_bf16({&lw.q_proj, &lw.k_proj, &lw.v_proj}, &weight_bytes_);
    if (config_.qkv_bias) d.qkv_bias = upload_bf16({&lw.q_bias, &lw.k_bias, &lw.v_bias}, &weight_bytes_);
    if (config_.qk_norm) {
      d.q_norm = upload_bf16({&lw.q_norm}, &weight_bytes_);
      d.k_norm = upload_bf16({&lw.k_norm}, &weight_bytes_);
      // rope_and_kv_write reads head_dim values of each (and takes two nulls for "no norm").
      if (d.q_norm.size() != static_cast<size_t>(config_.head_dim) ||
          d.k_norm.size() != static_cast<size_t>(config_.head_dim))
        throw std::invalid_argument("CudaBackend: layer " + std::to_string(i) +
                                    "'s q_norm / k_norm weights are not head_dim (" +
                                    std::to_string(config_.head_dim) + ") values each");
    }
    d.o = upload_bf16({&lw.o_proj}, &weight_bytes_);
    if (config_.sandwich_norms) {
      d.attn_output_norm = upload_bf16({&lw.attn_output_norm}, &weight_bytes_);
      d.mlp_output_norm = upload_bf16({&lw.mlp_output_norm}, &weight_bytes_);
    }
    d.mlp_norm = upload_bf16({&lw.mlp_norm}, &weight_bytes_);
    if (is_moe_layer(config_, static_cast<int>(i))) {
      d.router = upload_bf16({&lw.router}, &weight_bytes_);
      std::vector<const Tensor*> gate_up, down;
      for (const MlpWeights& e : lw.experts) {
        gate_up.insert(gate_up.end(), {&e.gate_proj, &e.up_proj});
        down.push_back(&e.down_proj);
      }
      if (lw.experts.size() != static_cast<size_t>(config_.moe->num_experts))
        throw std::invalid_argument("CudaBackend: layer " + std::to_string(i) + " has " +
                                    std::to_string(lw.experts.size()) + " experts, not num_experts");
      d.experts_gate_up = upload_bf16(gate_up, &weight_bytes_);
      d.experts_down = upload_bf16(down, &weight_bytes_);
      if (config_.moe->shared_expert_intermediate_size > 0) {
        d.shared_gate_up =
            upload_bf16({&lw.shared_expert.gate_proj, &lw.shared_expert.up_proj}, &weight_bytes_);
        d.shared_down = upload_bf16({&lw.shared_expert.down_proj}, &weight_bytes_);
        d.shared_gate = upload_bf16({&lw.shared_expert_gate}, &weight_bytes_);
      }
    } else {
      d.gate_up = upload_bf16({&lw.gate_proj, &lw.up_proj}, &weight_bytes_);
      d.down = upload_bf16({&lw.down_proj}, &weight_bytes_);
    }
  }
  const auto upload_inv_freq = [](const std::vector<float>& inv_freq, DeviceBuffer<float>& device) {
    device.resize(inv_freq.size());
    CUDA_CHECK(
        cudaMemcpy(device.get(), inv_freq.data(), inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice));
  };
  upload_inv_freq(rope_inv_freq(config_), inv_freq_);
  if (config_.sliding_rope_theta)
    upload_inv_freq(rope_inv_freq(config_, /*sliding_rope=*/true), sliding_inv_freq_);
}

void CudaBackend::upload_lora_adapters(const std::vector<LoraAdapter>& adapters) {
  num_lora_adapters_ = static_cast<int>(adapters.size());
  if (adapters.empty()) return;
  const size_t n = adapters.size();
  std::vector<float> scaling;
  const ModelConfig& c = config_;
  const int q_width = c.num_heads * c.head_dim, kv_width = c.num_kv_heads * c.head_dim;
  // Each target's input and output widths in this model: the stacks and kernels assume them.
  const int in_width[kNumLoraTargets] = {c.hidden_size, c.hidden_size, c.hidden_size,      q_width,
                                         c.hidden_size, c.hidden_size, c.intermediate_size};
  const int out_width[kNumLoraTargets] = {
      q_width, kv_width, kv_width, c.hidden_size, c.intermediate_size, c.intermediate_size, c.hidden_size};
  static_assert(kMaxLoraRank <= kLoraKernelMaxRank, "the loader reads ranks the kernels cannot take");
  for (const LoraAdapter& a : adapters) {
    const auto refuse = [&](const std::string& what) {
      throw std::invalid_argument("CudaBackend: LoRA adapter '" + a.name + "' " + what);
    };
    if (a.layers.size() != static_cast<size_t>(c.num_layers)) refuse("was loaded for another model");
    if (a.rank < 1 || a.rank > kLoraKernelMaxRank) refuse("has rank " + std::to_string(a.rank));
    for (const auto& layer : a.layers)
      for (int target = 0; target < kNumLoraTargets; ++target) {
        const LoraPair& p = layer[static_cast<size_t>(target)];
        if (p.rank == 0) continue;
        if (p.rank != a.rank || p.in != in_width[target] || p.out != out_width[target] ||
            p.a.size() != static_cast<size_t>(p.rank) * p.in ||
            p.b.size() != static_cast<size_t>(p.out) * p.rank)
          refuse("has a pair whose shape does not fit the model");
      }
    lora_rank_ = std::max(lora_rank_, a.rank);
    scaling.push_back(a.scaling);
  }
  lora_scaling_.resize(n);
  CUDA_CHECK(cudaMemcpy(lora_scaling_.get(), scaling.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  const auto r = static_cast<size_t>(lora_rank_);
  lora_layers_.resize(static_cast<size_t>(config_.num_layers));
  for (size_t layer = 0; layer < lora_layers_.size(); ++layer) {
    for (int target = 0; target < kNumLoraTargets; ++target) {
      LoraProjection& p = lora_layers_[layer][static_cast<size_t>(target)];
      for (const LoraAdapter& a : adapters)
        if (a.layers[layer][static_cast<size_t>(target)].rank > 0) {
          p.in = in_width[target];
          p.out = out_width[target];
        }
      if (p.in == 0) continue;  // no adapter adapts it
      // Stacked and zero-padded: an adapter of a smaller rank, or that leaves this projection
      // alone, adds zeros.
      std::vector<bf16> a(n * r * static_cast<size_t>(p.in), __float2bfloat16(0.0f));
      std::vector<bf16> b(n * static_cast<size_t>(p.out) * r, __float2bfloat16(0.0f));
      for (size_t i = 0; i < n; ++i) {
        const LoraPair& pair = adapters[i].layers[layer][static_cast<size_t>(target)];
        const auto rank = static_cast<size_t>(pair.rank);
        for (size_t k = 0; k < rank * static_cast<size_t>(p.in); ++k)
          a[i * r * p.in + k] = __float2bfloat16(pair.a[k]);
        for (size_t o = 0; o < static_cast<size_t>(p.out) && rank > 0; ++o)
          for (size_t k = 0; k < rank; ++k)
            b[(i * p.out + o) * r + k] = __float2bfloat16(pair.b[o * rank + k]);
      }
      p.a.resize(a.size());
      p.b.resize(b.size());
      CUDA_CHECK(cudaMemcpy(p.a.get(), a.data(), a.size() * sizeof(bf16), cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(p.b.get(), b.data(), b.size() * sizeof(bf16), cudaMemcpyHostToDevice));
      weight_bytes_ += p.a.bytes() + p.b.bytes();
    }
  }
}

void CudaBackend::enqueue_lora(int layer, LoraTarget target, const bf16* x, int64_t x_row_stride, int tokens,
                               bf16* y, int64_t y_row_stride, float multiplier) {
  if (num_lora_adapters_ == 0) return;
  const LoraProjection& p = lora_layers_[static_cast<size_t>(layer)][static_cast<size_t>(target)];
  if (p.in == 0) return;
  const auto* lora_index = device_array<int32_t>(device_arrays_, arrays_.lora_index);
  lora_shrink(x, x_row_stride, p.in, tokens, lora_index, p.a.get(), lora_rank_, lora_tmp_.get(), stream_);
  lora_expand(lora_tmp_.get(), lora_rank_, tokens, lora_index, p.b.get(), p.out, lora_scaling_.get(),
              multiplier, y, y_row_stride, stream_);
}

void CudaBackend::allocate_activations() {
  const ModelConfig& c = config_;
  const int max_tokens = std::max(options_.max_num_batched_tokens, options_.max_num_seqs);
  const int max_seqs = options_.max_num_seqs;
  // Each draft token is an input token too, so a step checks at most max_tokens of them.
  const int max_rows = max_seqs + static_cast<int>(std::min<int64_t>(
                                      int64_t{max_seqs} * options_.max_draft_tokens, max_tokens));
  arrays_ = StepArraysLayout::make(max_tokens, max_seqs, max_rows);
  host_arrays_.reserve(arrays_.total_bytes);
  device_arrays_.resize(arrays_.total_bytes);
  table_width_ = (options_.max_model_len + options_.block_size - 1) / options_.block_size;
  host_block_tables_.reserve(static_cast<size_t>(max_seqs) * table_width_);
  block_tables_.resize(static_cast<size_t>(max_seqs) * table_width_);

  const size_t t = static_cast<size_t>(max_tokens);
  const size_t qkv_width = static_cast<size_t>(c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  residual_.resize(t * c.hidden_size);
  normed_.resize(t * c.hidden_size);
  qkv_.resize(t * qkv_width);
  attn_.resize(t * c.num_heads * c.head_dim);
  delta_.resize(t * c.hidden_size);
  bool dense_mlp = false;  // some layer's MLP is not routed (every layer's in a dense model)
  for (int l = 0; l < c.num_layers; ++l)
    dense_mlp = dense_mlp || !is_moe_layer(c, l);
  if (dense_mlp) {
    gate_up_.resize(t * 2 * c.intermediate_size);
    act_.resize(t * c.intermediate_size);
  }
  if (num_lora_adapters_ > 0) lora_tmp_.resize(t * static_cast<size_t>(lora_rank_));
  if (c.moe) {
    const MoeConfig& moe = *c.moe;
    const size_t rows = t * static_cast<size_t>(moe.experts_per_token);
    const auto inter = static_cast<size_t>(moe.expert_intermediate_size);
    router_logits_.resize(t * static_cast<size_t>(moe.num_experts));
    host_router_logits_.reserve(t * static_cast<size_t>(moe.num_experts));
    for (auto* host : {&host_moe_token_, &host_moe_token_rows_})
      host->reserve(rows);
    host_moe_weight_.reserve(rows);
    moe_token_.resize(rows);
    moe_token_rows_.resize(rows);
    moe_weight_.resize(rows);
    moe_rows_.resize(rows * c.hidden_size);
    moe_gate_up_.resize(rows * 2 * inter);
    moe_act_.resize(rows * inter);
    moe_out_.resize(rows * c.hidden_size);
    if (const auto shared = static_cast<size_t>(moe.shared_expert_intermediate_size)) {
      shared_gate_up_.resize(t * 2 * shared);
      shared_act_.resize(t * shared);
      shared_out_.resize(t * c.hidden_size);
      shared_gate_logit_.resize(t);
    }
  }
  last_.resize(static_cast<size_t>(max_rows) * c.hidden_size);
  last_normed_.resize(static_cast<size_t>(max_rows) * c.hidden_size);
  logits_.resize(static_cast<size_t>(max_rows) * c.vocab_size);

  // The split-KV scratch for the largest (sequences x splits) any step can ask for.
  size_t workspace = 0;
  for (int n = 1; n <= max_seqs; ++n) {
    const int splits = choose_decode_splits(n, c.num_heads, c.num_kv_heads,
                                            max_attended_len(c, options_.max_model_len), num_sms_);
    max_decode_splits_ = std::max(max_decode_splits_, splits);
    workspace = std::max(workspace, decode_workspace_bytes(n, c.num_heads, c.head_dim, splits));
  }
  decode_workspace_.resize(std::max<size_t>(workspace, 1));

  sampling_workspace_.resize(std::max<size_t>(sampling_workspace_bytes(max_rows, c.vocab_size), 1));
  sampling_rows_.resize(max_rows);
  sampled_.resize(max_rows);
  host_rows_.reserve(max_rows);
  host_sampled_.reserve(max_rows);
  host_score_indices_.reserve(max_seqs);
  score_indices_.resize(max_seqs);
  history_.resize(1);
  suppressed_.resize(1);
  bias_ids_.resize(1);
  bias_values_.resize(1);
}

void CudaBackend::size_kv_pool(const CudaBackendOptions& options) {
  const ModelConfig& c = config_;
  const size_t block_bytes = kv_bytes_per_token(c) * static_cast<size_t>(options.block_size);
  size_t blocks = static_cast<size_t>(std::max(options.num_blocks, 0));
  if (blocks == 0) {
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const double budget = options.gpu_memory_utilization * static_cast<double>(total_bytes);
    const double used = static_cast<double>(total_bytes - free_bytes) + kLazyAllocationHeadroom;
    if (budget <= used)
      throw std::runtime_error(
          "CUDA backend: weights and activations already use " + std::to_string(used / (1 << 30)) +
          " GiB of the " + std::to_string(budget / (1 << 30)) +
          " GiB budget; raise --gpu-memory-utilization or lower --max-num-batched-tokens");
    blocks = static_cast<size_t>((budget - used) / static_cast<double>(block_bytes));
  }
  if (blocks * options.block_size < static_cast<size_t>(options.max_model_len))
    throw std::runtime_error(
        "CUDA backend: the KV pool holds only " + std::to_string(blocks * options.block_size) +
        " tokens, less than one sequence of max_model_len " + std::to_string(options.max_model_len) +
        "; lower --max-model-len or give the cache more memory");
  if (blocks > static_cast<size_t>(INT32_MAX / options.block_size)) blocks = INT32_MAX / options.block_size;
  layout_ = KvCacheLayout{static_cast<int>(blocks), options.block_size, c.num_kv_heads, c.head_dim};
  try {
    kv_pool_.resize(static_cast<size_t>(c.num_layers) * 2 * static_cast<size_t>(layout_.layer_elements()));
  } catch (const OutOfDeviceMemory& e) {
    throw std::runtime_error("CUDA backend: a KV pool of " + std::to_string(blocks) + " blocks (" +
                             gib_string(double(blocks) * double(block_bytes)) +
                             ") does not fit in GPU memory (" + e.what() + "); " +
                             (options.num_blocks > 0
                                  ? "lower --num-kv-blocks, or leave it 0 to size the pool from "
                                    "--gpu-memory-utilization"
                                  : "lower --gpu-memory-utilization"));
  }
}

bf16* CudaBackend::k_cache(int layer) const {
  return kv_pool_.get() + static_cast<size_t>(2 * layer) * static_cast<size_t>(layout_.layer_elements());
}
bf16* CudaBackend::v_cache(int layer) const {
  return kv_pool_.get() + static_cast<size_t>(2 * layer + 1) * static_cast<size_t>(layout_.layer_elements());
}

PackedStep CudaBackend::upload_step(const StepBatch& batch, int padded_seqs) {
  if (batch.max_blocks_per_seq > table_width_)
    throw std::logic_error("CudaBackend: a sequence has " + std::to_string(batch.max_blocks_per_seq) +
                           " blocks, more than max_model_len allows");
  validate_step_batch(batch, layout_.num_blocks, layout_.block_size, config_.vocab_size, num_lora_adapters_);
  const PackedStep step = pack_step_arrays(batch, padded_seqs, arrays_,
                                           std::span<std::byte>(host_arrays_.get(), arrays_.total_bytes));
  CUDA_CHECK(
      cudaMemcpyAsync(device_arrays_.get(), host_arrays_.get(), step.bytes, cudaMemcpyHostToDevice, stream_));
  if (batch.num_seqs > 0 && batch.max_blocks_per_seq > 0) {
    // Staged as the batch has them (rows of max_blocks_per_seq), widened to table_width_ by the copy.
    const size_t row_bytes = sizeof(int32_t) * static_cast<size_t>(batch.max_blocks_per_seq);
    std::memcpy(host_block_tables_.get(), batch.block_tables.data(), row_bytes * batch.num_seqs);
    CUDA_CHECK(cudaMemcpy2DAsync(block_tables_.get(), sizeof(int32_t) * table_width_,
                                 host_block_tables_.get(), row_bytes, row_bytes, batch.num_seqs,
                                 cudaMemcpyHostToDevice, stream_));
  }
  return step;
}

void CudaBackend::enqueue_forward(const PackedStep& step, int num_decodes, int max_query_len,
                                  int decode_splits) {
  const ModelConfig& c = config_;
  const int tokens = step.num_tokens;
  const int seqs = step.num_seqs;
  const int hidden = c.hidden_size;
  const int q_width = c.num_heads * c.head_dim;
  const int qkv_width = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  const int inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const auto* token_ids = device_array<int32_t>(device_arrays_, arrays_.token_ids);
  const auto* positions = device_array<int32_t>(device_arrays_, arrays_.positions);
  const auto* slots = device_array<int64_t>(device_arrays_, arrays_.slot_mapping);
  const auto* query_start = device_array<int32_t>(device_arrays_, arrays_.query_start_loc);
  const auto* context_lens = device_array<int32_t>(device_arrays_, arrays_.context_lens);
  const auto* logits_indices = device_array<int32_t>(device_arrays_, arrays_.logits_indices);

  embedding_gather(embed_.get(), token_ids, tokens, hidden, static_cast<float>(c.embedding_multiplier),
                   residual_.get(), stream_);
  // Granite scales each sublayer's output before it joins the residual stream (1 elsewhere).
  const auto residual_multiplier = static_cast<float>(c.residual_multiplier);
  const auto norm_offset = static_cast<float>(c.norm_weight_offset);  // Gemma's (1 + w) norms
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    // The previous layer's MLP output joins the residual stream here, fused with this norm.
    add_rms_norm(residual_.get(), l == 0 ? nullptr : delta_.get(), w.input_norm.get(), eps, tokens, hidden,
                 normed_.get(), stream_, norm_offset);
    gemm_->linear(normed_.get(), tokens, hidden, w.qkv.get(), qkv_width, qkv_.get(), qkv_width);
    const int kv_width = c.num_kv_heads * c.head_dim;
    enqueue_lora(l, kLoraQ, normed_.get(), hidden, tokens, qkv_.get(), qkv_width, 1.0f);
    enqueue_lora(l, kLoraK, normed_.get(), hidden, tokens, qkv_.get() + q_width, qkv_width, 1.0f);
    enqueue_lora(l, kLoraV, normed_.get(), hidden, tokens, qkv_.get() + q_width + kv_width, qkv_width, 1.0f);

    RopeKvWriteArgs rope;
    rope.qkv = qkv_.get();
    rope.qkv_row_stride = qkv_width;
    rope.qkv_bias = w.qkv_bias.size() > 0 ? w.qkv_bias.get() : nullptr;
    rope.positions = positions;
    rope.slot_mapping = slots;
    rope.inv_freq = uses_sliding_rope(c, l) ? sliding_inv_freq_.get() : inv_freq_.get();
    rope.k_cache = k_cache(l);
    rope.v_cache = v_cache(l);
    rope.layout = layout_;
    rope.num_tokens = tokens;
    rope.num_heads = c.num_heads;
    if (c.qk_norm) {
      rope.q_norm = w.q_norm.get();
      rope.k_norm = w.k_norm.get();
      rope.norm_eps = eps;
      rope.norm_weight_offset = norm_offset;
    }
    rope_and_kv_write(rope, stream_);

    PagedAttentionArgs attn;
    attn.q = qkv_.get();
    attn.q_row_stride = qkv_width;
    attn.k_cache = k_cache(l);
    attn.v_cache = v_cache(l);
    attn.layout = layout_;
    attn.out = attn_.get();
    attn.out_row_stride = q_width;
    attn.query_start_loc = query_start;
    attn.context_lens = context_lens;
    attn.block_tables = block_tables_.get();
    attn.max_blocks_per_seq = table_width_;
    attn.num_heads = c.num_heads;
    attn.scale = attention_scale(c);
    attn.sliding_window = attention_window(c, l);
    attn.softcap = static_cast<float>(c.attn_logit_softcapping.value_or(0.0));
    if (num_decodes > 0) {
      PagedAttentionArgs decode = attn;
      decode.num_seqs = num_decodes;
      decode.max_query_len = 1;
      paged_decode_attention(decode, decode_splits, decode_workspace_.get(), decode_workspace_.bytes(),
                             stream_);
    }
    if (seqs > num_decodes) {
      PagedAttentionArgs prefill = attn;
      prefill.query_start_loc = query_start + num_decodes;
      prefill.context_lens = context_lens + num_decodes;
      prefill.block_tables = block_tables_.get() + static_cast<size_t>(num_decodes) * table_width_;
      prefill.num_seqs = seqs - num_decodes;
      prefill.max_query_len = max_query_len;
      paged_prefill_attention(prefill, stream_);
    }
    gemm_->linear(attn_.get(), tokens, q_width, w.o.get(), hidden, delta_.get(), hidden, residual_multiplier);
    enqueue_lora(l, kLoraO, attn_.get(), q_width, tokens, delta_.get(), hidden, residual_multiplier);
    // Gemma 2/3 normalize each sublayer's output before it joins the stream.
    if (c.sandwich_norms)
      rms_norm(delta_.get(), w.attn_output_norm.get(), eps, norm_offset, tokens, hidden, delta_.get(),
               stream_);

    add_rms_norm(residual_.get(), delta_.get(), w.mlp_norm.get(), eps, tokens, hidden, normed_.get(), stream_,
                 norm_offset);
    if (is_moe_layer(c, l)) {
      enqueue_moe(l, tokens, residual_multiplier);
      continue;  // (no MoE architecture has sandwich norms)
    }
    gemm_->linear(normed_.get(), tokens, hidden, w.gate_up.get(), 2 * inter, gate_up_.get(), 2 * inter);
    enqueue_lora(l, kLoraGate, normed_.get(), hidden, tokens, gate_up_.get(), 2 * inter, 1.0f);
    enqueue_lora(l, kLoraUp, normed_.get(), hidden, tokens, gate_up_.get() + inter, 2 * inter, 1.0f);
    if (c.activation == MlpActivation::kGeluTanh)
      gelu_tanh_and_mul(gate_up_.get(), tokens, inter, act_.get(), stream_);
    else
      silu_and_mul(gate_up_.get(), tokens, inter, act_.get(), stream_);
    gemm_->linear(act_.get(), tokens, inter, w.down.get(), hidden, delta_.get(), hidden, residual_multiplier);
    enqueue_lora(l, kLoraDown, act_.get(), inter, tokens, delta_.get(), hidden, residual_multiplier);
    if (c.sandwich_norms)
      rms_norm(delta_.get(), w.mlp_output_norm.get(), eps, norm_offset, tokens, hidden, delta_.get(),
               stream_);
  }
  // The last MLP output joins the stream (this norm's output is not needed: only the tokens whose
  // logits the step computes, each sequence's last and those that check a draft, are normalized,
  // below, after the gather).
  add_rms_norm(residual_.get(), delta_.get(), final_norm_.get(), eps, tokens, hidden, normed_.get(), stream_,
               norm_offset);
  enqueue_lm_head(logits_indices, step.num_logits_rows);
}

void CudaBackend::enqueue_moe(int layer, int tokens, float multiplier) {
  const ModelConfig& c = config_;
  const MoeConfig& moe = *c.moe;
  const LayerWeights& w = layers_[static_cast<size_t>(layer)];
  const int hidden = c.hidden_size;
  const int experts = moe.num_experts;
  const int k = moe.experts_per_token;
  const int inter = moe.expert_intermediate_size;

  // Route on the host, from fp32 logits of the bf16 normed input (transformers' bf16 router rounds
  // them to bf16 before its fp32 softmax; fp32 keeps the GPU's choices closer to the CPU backend's).
  const size_t logits = static_cast<size_t>(tokens) * experts;
  gemm_->linear(normed_.get(), tokens, hidden, w.router.get(), experts, router_logits_.get(), experts);
  CUDA_CHECK(cudaMemcpyAsync(host_router_logits_.get(), router_logits_.get(), logits * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // (also: the last layer's copies below have landed)
  route_tokens(std::span<const float>(host_router_logits_.get(), logits), tokens, moe, routing_);
  const size_t rows = static_cast<size_t>(tokens) * k;
  std::copy(routing_.token.begin(), routing_.token.end(), host_moe_token_.get());
  std::copy(routing_.token_rows.begin(), routing_.token_rows.end(), host_moe_token_rows_.get());
  std::copy(routing_.weight.begin(), routing_.weight.end(), host_moe_weight_.get());
  CUDA_CHECK(cudaMemcpyAsync(moe_token_.get(), host_moe_token_.get(), rows * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(moe_token_rows_.get(), host_moe_token_rows_.get(), rows * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(moe_weight_.get(), host_moe_weight_.get(), rows * sizeof(float),
                             cudaMemcpyHostToDevice, stream_));

  // Each expert's MLP over its block of rows (rows grouped by expert), the activation over all.
  moe_gather(normed_.get(), moe_token_.get(), static_cast<int>(rows), hidden, moe_rows_.get(), stream_);
  const auto block = [&](int e) {
    const int first = routing_.expert_start[static_cast<size_t>(e)];
    return std::pair<size_t, int>(static_cast<size_t>(first),
                                  routing_.expert_start[static_cast<size_t>(e) + 1] - first);
  };
  for (int e = 0; e < experts; ++e) {
    const auto [first, count] = block(e);
    if (count == 0) continue;
    gemm_->linear(moe_rows_.get() + first * hidden, count, hidden,
                  w.experts_gate_up.get() + static_cast<size_t>(e) * 2 * inter * hidden, 2 * inter,
                  moe_gate_up_.get() + first * 2 * inter, 2 * inter);
  }
  silu_and_mul(moe_gate_up_.get(), static_cast<int>(rows), inter, moe_act_.get(), stream_);
  for (int e = 0; e < experts; ++e) {
    const auto [first, count] = block(e);
    if (count == 0) continue;
    gemm_->linear(moe_act_.get() + first * inter, count, inter,
                  w.experts_down.get() + static_cast<size_t>(e) * hidden * inter, hidden,
                  moe_out_.get() + first * hidden, hidden);
  }

  // Qwen2-MoE's shared expert, over every token, and its gate's logit.
  const bf16* shared_out = nullptr;
  const float* shared_gate = nullptr;
  if (const int shared = moe.shared_expert_intermediate_size) {
    gemm_->linear(normed_.get(), tokens, hidden, w.shared_gate_up.get(), 2 * shared, shared_gate_up_.get(),
                  2 * shared);
    silu_and_mul(shared_gate_up_.get(), tokens, shared, shared_act_.get(), stream_);
    gemm_->linear(shared_act_.get(), tokens, shared, w.shared_down.get(), hidden, shared_out_.get(), hidden);
    gemm_->linear(normed_.get(), tokens, hidden, w.shared_gate.get(), 1, shared_gate_logit_.get(), 1);
    shared_out = shared_out_.get();
    shared_gate = shared_gate_logit_.get();
  }
  moe_combine(moe_out_.get(), moe_token_rows_.get(), moe_weight_.get(), tokens, k, hidden, shared_out,
              shared_gate, multiplier, delta_.get(), stream_);
}

void CudaBackend::enqueue_final_norm(const int32_t* token_index, int rows) {
  const ModelConfig& c = config_;
  gather_rows(residual_.get(), token_index, rows, c.hidden_size, last_.get(), stream_);
  add_rms_norm(last_.get(), nullptr, final_norm_.get(), static_cast<float>(c.rms_norm_eps), rows,
               c.hidden_size, last_normed_.get(), stream_, static_cast<float>(c.norm_weight_offset));
}

void CudaBackend::enqueue_lm_head(const int32_t* token_index, int rows) {
  const ModelConfig& c = config_;
  const int hidden = c.hidden_size;
  enqueue_final_norm(token_index, rows);
  const bf16* lm_head = lm_head_.size() > 0 ? lm_head_.get() : embed_.get();
  // Granite divides the logits by logits_scaling (1 elsewhere): folded into the product.
  gemm_->linear(last_normed_.get(), rows, hidden, lm_head, c.vocab_size, logits_.get(), c.vocab_size,
                static_cast<float>(1.0 / c.logits_scaling));
  if (c.final_logit_softcapping)
    soft_cap(logits_.get(), static_cast<int64_t>(rows) * c.vocab_size,
             static_cast<float>(*c.final_logit_softcapping), stream_);
}

void CudaBackend::run_forward(const StepBatch& batch) {
  CUDA_CHECK(cudaSetDevice(options_.device));  // the engine thread is not the one that built us
  CUDA_CHECK(cudaEventRecord(step_start_, stream_));
  const bool decode_only = batch.num_decodes == batch.num_seqs;
  // A mixture-of-experts pass waits on the host for each layer's routing: no graph can hold it.
  const int bucket = options_.cuda_graphs && decode_only && !routes_on_host_
                         ? graph_bucket(batch.num_seqs, options_.max_num_seqs)
                         : 0;
  if (bucket == 0) {
    const PackedStep step = upload_step(batch, batch.num_seqs);
    const int splits =
        choose_decode_splits(std::max(batch.num_decodes, 1), config_.num_heads, config_.num_kv_heads,
                             max_attended_len(config_, batch.max_context_len), num_sms_);
    enqueue_forward(step, batch.num_decodes, batch.max_query_len, std::min(splits, max_decode_splits_));
    return;
  }
  const PackedStep step = upload_step(batch, bucket);
  if (const auto it = graphs_.find(bucket); it != graphs_.end()) {
    CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
    return;
  }
  // The graph serves every later decode step of this size, whatever its contexts: its split-KV
  // bound is the one for the longest context, and each sequence uses what its own needs.
  const int splits =
      std::min(choose_decode_splits(bucket, config_.num_heads, config_.num_kv_heads,
                                    max_attended_len(config_, options_.max_model_len), num_sms_),
               max_decode_splits_);
  // The bucket's first step runs eagerly: this step's results come from it, and it loads every
  // kernel the graph uses (lazy module loading) and lets cuBLAS pick and initialize its kernels for
  // these shapes outside the capture, where neither may happen. Capturing only records, so the
  // graph first runs at the bucket's next step.
  enqueue_forward(step, bucket, 1, splits);
  CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    enqueue_forward(step, bucket, 1, splits);
  } catch (...) {
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_CHECK(err);
  graphs_.emplace(bucket, exec);
}

void CudaBackend::finish_step() {
  CUDA_CHECK(cudaEventRecord(step_end_, stream_));
  CUDA_CHECK(cudaEventSynchronize(step_end_));
  float ms = 0.0f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, step_start_, step_end_));
  device_seconds_ += ms / 1e3;
}

std::span<const float> CudaBackend::forward(const StepBatch& batch) {
  run_forward(batch);
  const size_t n = batch.logits_indices.size() * config_.vocab_size;
  host_logits_.resize(n);
  CUDA_CHECK(cudaMemcpyAsync(host_logits_.data(), logits_.get(), n * sizeof(float), cudaMemcpyDeviceToHost,
                             stream_));
  finish_step();
  return host_logits_;
}

void CudaBackend::forward_and_sample(const StepBatch& batch, std::span<const SamplingTask> tasks,
                                     std::span<SampledToken> out) {
  if (out.size() != tasks.size()) throw std::logic_error("forward_and_sample: one output per task");
  if (tasks.size() > host_rows_.size())
    throw std::logic_error("forward_and_sample: more sampling tasks than logits rows");
  // A row past the step's would sample stale logits, or read past the buffer and lose the context.
  for (const SamplingTask& t : tasks)
    if (t.row < 0 || static_cast<size_t>(t.row) >= batch.logits_indices.size())
      throw std::logic_error("forward_and_sample: sampling task for logits row " + std::to_string(t.row) +
                             " of a step with " + std::to_string(batch.logits_indices.size()));
  run_forward(batch);
  if (tasks.empty()) {
    finish_step();
    return;
  }
  // The histories, suppressed lists, logit biases and token masks are concatenated into pinned
  // buffers sized first, so that the rows can point into them by offset.
  size_t history_count = 0, suppressed_count = 0, bias_count = 0, allowed_count = 0;
  for (const SamplingTask& t : tasks) {
    if (has_penalties(*t.params)) history_count += t.prompt.size() + t.output.size();
    suppressed_count += t.suppressed.size();
    bias_count += t.params->logit_bias.size();
    allowed_count += allowed_words(t.allowed, config_.vocab_size);
  }
  host_history_.reserve(history_count);
  host_suppressed_.reserve(suppressed_count);
  host_bias_ids_.reserve(bias_count);
  host_bias_values_.reserve(bias_count);
  host_allowed_.reserve(allowed_count);
  // Growing a device buffer frees the old one, which waits for the forward pass just enqueued: it
  // happens only when the longest history (or the most biases, or masks) so far doubles.
  grow(history_, history_count);
  grow(suppressed_, suppressed_count);
  grow(bias_ids_, bias_count);
  grow(bias_values_, bias_count);
  grow(allowed_, allowed_count);
  size_t history_size = 0, suppressed_size = 0, bias_size = 0, allowed_size = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const SamplingTask& t = tasks[i];
    const SamplingParams& p = *t.params;
    SamplingRow& r = host_rows_.get()[i];
    r = SamplingRow{};
    r.logits_row = t.row;
    r.temperature = p.temperature;
    r.top_k = p.top_k;
    r.top_p = p.top_p;
    r.min_p = p.min_p;
    r.repetition_penalty = p.repetition_penalty;
    r.presence_penalty = p.presence_penalty;
    r.frequency_penalty = p.frequency_penalty;
    // The host Sampler reports min(top_logprobs, vocab) alternatives; so must we.
    r.num_top_logprobs = std::min({p.top_logprobs, kMaxGpuTopLogprobs, config_.vocab_size});
    r.seed = t.seed;
    r.draw_index = t.output.size();
    if (has_penalties(p)) {  // the history only travels when a penalty needs it
      r.history_offset = static_cast<int32_t>(history_size);
      r.num_prompt_tokens = static_cast<int32_t>(t.prompt.size());
      r.num_output_tokens = static_cast<int32_t>(t.output.size());
      int32_t* dst = host_history_.get() + history_size;
      dst = std::copy(t.prompt.begin(), t.prompt.end(), dst);
      std::copy(t.output.begin(), t.output.end(), dst);
      history_size += t.prompt.size() + t.output.size();
    }
    r.suppressed_offset = static_cast<int32_t>(suppressed_size);
    r.num_suppressed = static_cast<int32_t>(t.suppressed.size());
    std::copy(t.suppressed.begin(), t.suppressed.end(), host_suppressed_.get() + suppressed_size);
    suppressed_size += t.suppressed.size();
    r.bias_offset = static_cast<int32_t>(bias_size);
    r.num_bias = static_cast<int32_t>(p.logit_bias.size());
    for (const auto& [id, bias] : p.logit_bias) {
      host_bias_ids_.get()[bias_size] = id;
      host_bias_values_.get()[bias_size] = bias;
      ++bias_size;
    }
    // An empty mask allows every id, as on the host: the row gets none (allowed_offset stays -1).
    if (!t.allowed.empty()) {
      const size_t words = allowed_words(t.allowed, config_.vocab_size);
      r.allowed_offset = static_cast<int32_t>(allowed_size);
      r.num_allowed_words = static_cast<int32_t>(words);
      std::copy_n(t.allowed.begin(), words, host_allowed_.get() + allowed_size);
      allowed_size += words;
    }
  }
  CUDA_CHECK(cudaMemcpyAsync(sampling_rows_.get(), host_rows_.get(), tasks.size() * sizeof(SamplingRow),
                             cudaMemcpyHostToDevice, stream_));
  if (history_size > 0)
    CUDA_CHECK(cudaMemcpyAsync(history_.get(), host_history_.get(), history_size * sizeof(int32_t),
                               cudaMemcpyHostToDevice, stream_));
  if (suppressed_size > 0)
    CUDA_CHECK(cudaMemcpyAsync(suppressed_.get(), host_suppressed_.get(), suppressed_size * sizeof(int32_t),
                               cudaMemcpyHostToDevice, stream_));
  if (bias_size > 0) {
    CUDA_CHECK(cudaMemcpyAsync(bias_ids_.get(), host_bias_ids_.get(), bias_size * sizeof(int32_t),
                               cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaMemcpyAsync(bias_values_.get(), host_bias_values_.get(), bias_size * sizeof(float),
                               cudaMemcpyHostToDevice, stream_));
  }
  if (allowed_size > 0)
    CUDA_CHECK(cudaMemcpyAsync(allowed_.get(), host_allowed_.get(), allowed_size * sizeof(uint32_t),
                               cudaMemcpyHostToDevice, stream_));
  const int rows = static_cast<int>(tasks.size());
  sample_rows(logits_.get(), config_.vocab_size, sampling_rows_.get(), rows, history_.get(),
              suppressed_.get(), bias_ids_.get(), bias_values_.get(),
              allowed_size > 0 ? allowed_.get() : nullptr, sampling_workspace_.get(),
              sampling_workspace_.bytes(), sampled_.get(), stream_);
  CUDA_CHECK(cudaMemcpyAsync(host_sampled_.get(), sampled_.get(), rows * sizeof(SampledRow),
                             cudaMemcpyDeviceToHost, stream_));
  finish_step();
  read_sampled(host_sampled_.get(), host_rows_.get(), tasks.size(), out);
}

void CudaBackend::read_sampled(const SampledRow* sampled, const SamplingRow* rows, size_t count,
                               std::span<SampledToken> out) {
  for (size_t i = 0; i < count; ++i) {
    const SampledRow& s = sampled[i];
    SampledToken& o = out[i];
    o.token = s.token;
    o.logprob = s.logprob;
    o.top_logprobs.clear();
    for (int k = 0; k < rows[i].num_top_logprobs; ++k)
      o.top_logprobs.emplace_back(s.top_ids[k], s.top_logprobs[k]);
  }
}

void CudaBackend::stage_score_indices(const StepBatch& batch, std::span<const int> token_indices) {
  host_score_indices_.reserve(token_indices.size());  // no copy from it is in flight: steps end synced
  for (size_t i = 0; i < token_indices.size(); ++i) {
    const int t = token_indices[i];
    // An index past the pass's tokens would read a stale (or padding) row of the residual stream.
    if (t < 0 || t >= batch.num_tokens)
      throw std::logic_error("CudaBackend: scored token index " + std::to_string(t) + " outside the batch");
    host_score_indices_.get()[i] = t;
  }
}

void CudaBackend::enqueue_staged_rows(size_t first, size_t count, bool lm_head) {
  CUDA_CHECK(cudaMemcpyAsync(score_indices_.get(), host_score_indices_.get() + first, count * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  if (lm_head)
    enqueue_lm_head(score_indices_.get(), static_cast<int>(count));
  else
    enqueue_final_norm(score_indices_.get(), static_cast<int>(count));
}

std::span<const float> CudaBackend::token_logits(const StepBatch& batch, std::span<const int> token_indices) {
  CUDA_CHECK(cudaSetDevice(options_.device));
  CUDA_CHECK(cudaEventRecord(step_start_, stream_));
  stage_score_indices(batch, token_indices);
  const size_t vocab = static_cast<size_t>(config_.vocab_size);
  host_logits_.resize(token_indices.size() * vocab);
  const size_t group = static_cast<size_t>(options_.max_num_seqs);  // logits_'s rows
  for (size_t first = 0; first < token_indices.size(); first += group) {
    const size_t count = std::min(group, token_indices.size() - first);
    enqueue_staged_rows(first, count, /*lm_head=*/true);
    CUDA_CHECK(cudaMemcpyAsync(host_logits_.data() + first * vocab, logits_.get(),
                               count * vocab * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  }
  finish_step();
  return host_logits_;
}

std::span<const float> CudaBackend::hidden_states(const StepBatch& batch,
                                                  std::span<const int> token_indices) {
  CUDA_CHECK(cudaSetDevice(options_.device));
  CUDA_CHECK(cudaEventRecord(step_start_, stream_));
  stage_score_indices(batch, token_indices);
  const size_t hidden = static_cast<size_t>(config_.hidden_size);
  host_hidden_bf16_.resize(token_indices.size() * hidden);
  const size_t group = static_cast<size_t>(options_.max_num_seqs);  // last_normed_'s rows
  for (size_t first = 0; first < token_indices.size(); first += group) {
    const size_t count = std::min(group, token_indices.size() - first);
    enqueue_staged_rows(first, count, /*lm_head=*/false);
    CUDA_CHECK(cudaMemcpyAsync(host_hidden_bf16_.data() + first * hidden, last_normed_.get(),
                               count * hidden * sizeof(bf16), cudaMemcpyDeviceToHost, stream_));
  }
  finish_step();
  // bf16, as the LM head reads it.
  host_hidden_.resize(host_hidden_bf16_.size());
  std::transform(host_hidden_bf16_.begin(), host_hidden_bf16_.end(), host_hidden_.begin(),
                 [](bf16 x) { return __bfloat162float(x); });
  return host_hidden_;
}

void CudaBackend::score_tokens(const StepBatch& batch, std::span<const ScoringTask> tasks,
                               std::span<SampledToken> out) {
  if (out.size() != tasks.size()) throw std::logic_error("score_tokens: one output per task");
  if (tasks.empty()) return;
  CUDA_CHECK(cudaSetDevice(options_.device));
  CUDA_CHECK(cudaEventRecord(step_start_, stream_));
  // Every group's inputs and results have pinned slots of their own, so that the groups run back to
  // back on the stream and the host waits once, at the end.
  std::vector<int> indices(tasks.size());
  host_score_rows_.reserve(tasks.size());
  host_scored_.reserve(tasks.size());
  const size_t group = static_cast<size_t>(options_.max_num_seqs);  // logits_'s and the sampler's rows
  for (size_t i = 0; i < tasks.size(); ++i) {
    const ScoringTask& t = tasks[i];
    // The engine validates prompt ids; the kernel would score an id outside the vocabulary as the
    // greedy token, where the host's Sampler::score gives nothing.
    if (t.target < 0 || t.target >= config_.vocab_size)
      throw std::out_of_range("score_tokens: token " + std::to_string(t.target) +
                              " is outside the vocabulary");
    indices[i] = t.token_index;
    SamplingRow& r = host_score_rows_.get()[i];
    r = SamplingRow{};  // greedy, nothing suppressed, biased or penalized: the raw logits
    r.logits_row = static_cast<int32_t>(i % group);
    r.num_top_logprobs = std::min({t.num_top_logprobs, kMaxGpuTopLogprobs, config_.vocab_size});
    r.forced_token = t.target;
  }
  stage_score_indices(batch, indices);
  for (size_t first = 0; first < tasks.size(); first += group) {
    const size_t count = std::min(group, tasks.size() - first);
    enqueue_staged_rows(first, count, /*lm_head=*/true);
    CUDA_CHECK(cudaMemcpyAsync(sampling_rows_.get(), host_score_rows_.get() + first,
                               count * sizeof(SamplingRow), cudaMemcpyHostToDevice, stream_));
    sample_rows(logits_.get(), config_.vocab_size, sampling_rows_.get(), static_cast<int>(count), nullptr,
                nullptr, nullptr, nullptr, nullptr, sampling_workspace_.get(), sampling_workspace_.bytes(),
                sampled_.get(), stream_);
    CUDA_CHECK(cudaMemcpyAsync(host_scored_.get() + first, sampled_.get(), count * sizeof(SampledRow),
                               cudaMemcpyDeviceToHost, stream_));
  }
  finish_step();
  read_sampled(host_scored_.get(), host_score_rows_.get(), tasks.size(), out);
}

}  // namespace kvserve::cuda
