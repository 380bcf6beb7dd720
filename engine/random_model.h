// Models of a published shape with seeded random weights and no files: performance depends on a
// model's shape, not on its weight values, so benchmarks (issue 6) serve these instead of real
// checkpoints. The server takes them as the model spec "random:<shape>[:seed]".
//
// Weights are a pure function of (seed, tensor, element index): each element hashes its counter
// with splitmix64, so the result is the same whatever the thread count, and any other
// implementation (bench/peer_transformers.py does it in PyTorch) can reproduce them bit for bit.
// Every element of a tensor is float(N) * c, N = (sum of the hash's four 16-bit fields) - 131070,
// which is zero-mean with standard deviation 65536 / sqrt(3), and c sets the tensor's scale:
//   linear weights [out, in]   N(0, 1) / sqrt(in)   (bounded at +-2 sqrt(3) sd, a sum of uniforms)
//   embeddings                 std 0.02
//   RMSNorm weights            1 + 0.02 * z
//   Qwen2 q/k/v biases         std 0.02
// Tensor ids (the hash's second key): embed_tokens 0, final norm 1, lm_head 2; layer l's tensors
// 16 + 16 * l + {input_norm 0, q 1, k 2, v 3, o 4, post_attention_norm 5, gate 6, up 7, down 8,
// q_bias 9, k_bias 10, v_bias 11}.
//
// Memory: the Model holds float32 on the host, 4 bytes a parameter: Llama-3-8B is 32.1 GB
// (8.03 G parameters), Llama-3.2-1B 4.9 GB. Generation is parallel (OpenMP) and takes seconds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/model.h"

namespace kvserve {

// The shapes random_model_shape() knows, in the order error messages list them.
std::vector<std::string> random_model_shape_names();

// "llama3-8b" (Llama-3.1-8B's config, max_position_embeddings cut to 8192), "llama3.2-1b" (also
// cut to 8192 positions) and "tiny" (the tiny-llama test shape: hidden 64, 2 layers, vocab 512).
// All LlamaForCausalLM, dtype bfloat16. Unknown name: nullopt.
std::optional<ModelConfig> random_model_shape(std::string_view name);

// Parameters of a model of this shape (tied embeddings counted once).
int64_t parameter_count(const ModelConfig& config);

// A model of this shape with the weights described above. `config` must be a valid shape (as
// random_model_shape() returns or load_model_config() reads).
Model make_random_model(const ModelConfig& config, uint64_t seed);

// The value make_random_model() puts at element `index` of tensor `tensor_id`, whose elements have
// standard deviation `std` around `mean`: the single-element definition, for tests and peers.
float random_weight(uint64_t seed, uint64_t tensor_id, uint64_t index, double mean, double std);

// True for specs that start with "random:" (whether or not the rest is valid).
bool is_random_model_spec(std::string_view spec);

// "random:<shape>" or "random:<shape>:<seed>" (seed a decimal uint64, default 0) -> the model, with
// Model::dir set to the spec. Anything else throws ModelLoadError saying what is wrong and listing
// the valid shapes. These models have no tokenizer: requests must send token ids.
Model load_random_model_spec(std::string_view spec);

}  // namespace kvserve
