// A Hugging Face model directory -> Model. The tensor names and shapes config.json implies are
// listed up front and every file's tensors are matched against that list (missing, misshapen,
// unexpected, duplicated) before any byte is converted, so a mismatch fails in milliseconds and
// names the tensor, not after minutes of conversion.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/model.h"
#include "engine/safetensors.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;

// Where a checkpoint tensor's rows go: `rows` of them to `destination`.
struct TensorPart {
  Tensor* destination;
  int64_t rows;
};

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::string shape_meaning;  // which config.json fields give the shape, for error messages
  // One part holding every row, or, for a fused tensor (Phi-3's qkv_proj), one part per weight,
  // each taking the rows after the previous one's.
  std::vector<TensorPart> parts;

  ExpectedTensor(std::string name, std::vector<int64_t> shape, std::string shape_meaning, Tensor* destination)
      : ExpectedTensor(std::move(name), shape, std::move(shape_meaning), {{destination, shape.at(0)}}) {}
  ExpectedTensor(std::string name, std::vector<int64_t> shape, std::string shape_meaning,
                 std::vector<TensorPart> parts)
      : name(std::move(name)),
        shape(std::move(shape)),
        shape_meaning(std::move(shape_meaning)),
        parts(std::move(parts)) {}
};

struct LocatedTensor {
  const SafetensorsTensor* tensor;
  std::shared_ptr<const SafetensorsFile> file;
};

// Where a checkpoint keeps the text model's tensors: "model." (model.embed_tokens.weight,
// model.layers.N..., model.norm.weight, and lm_head.weight), or in a multimodal checkpoint
// (Gemma3ForConditionalGeneration, Mistral3ForConditionalGeneration) "language_model.model."
// (transformers before 4.52; its lm_head language_model.lm_head.weight) or "model.language_model."
// (later ones; lm_head.weight). A base model saved on its own, as embedding models are
// (sentence-transformers' Qwen3-Embedding, gte-Qwen2), names them without "model.".
struct TensorNames {
  std::string prefix = "model.";
  std::string lm_head = "lm_head.weight";
};

// The names `by_name`, a checkpoint's tensors, use for the model `c` describes.
TensorNames tensor_names(const ModelConfig& c,
                         const std::unordered_map<std::string_view, LocatedTensor>& by_name) {
  if (c.checkpoint_architecture.empty())
    return by_name.contains("embed_tokens.weight") && !by_name.contains("model.embed_tokens.weight")
               ? TensorNames{"", "lm_head.weight"}
               : TensorNames{};
  for (const auto& [name, located] : by_name)
    if (name.starts_with("model.language_model.")) return {"model.language_model.", "lm_head.weight"};
  return {"language_model.model.", "language_model.lm_head.weight"};
}

// A mixture-of-experts layer's MLP tensors (MoeConfig), under `p` ("model.layers.N."): Qwen-MoE's
// names (mlp.gate, mlp.experts.E.gate_proj, ...) or Mixtral's (block_sparse_moe.gate,
// block_sparse_moe.experts.E.w1 / w3 / w2 for gate / up / down).
void add_moe_tensors(const ModelConfig& c, const std::string& p, int listed_experts, LayerWeights& l,
                     std::vector<ExpectedTensor>& out) {
  const MoeConfig& moe = *c.moe;
  const int64_t hidden = c.hidden_size;
  const int64_t inter = moe.expert_intermediate_size;
  const bool mixtral = c.architecture == "MixtralForCausalLM";
  const std::string block = p + (mixtral ? "block_sparse_moe." : "mlp.");
  const char* inter_name = mixtral ? "intermediate_size" : "moe_intermediate_size";
  out.push_back({block + "gate.weight",
                 {moe.num_experts, hidden},
                 std::string(mixtral ? "num_local_experts" : "num_experts") + " x hidden_size",
                 &l.router});
  l.experts.resize(static_cast<size_t>(listed_experts));
  for (int e = 0; e < listed_experts; ++e) {
    MlpWeights& expert = l.experts[static_cast<size_t>(e)];
    const std::string ep = block + "experts." + std::to_string(e) + ".";
    out.push_back({ep + (mixtral ? "w1" : "gate_proj") + ".weight",
                   {inter, hidden},
                   std::string(inter_name) + " x hidden_size",
                   &expert.gate_proj});
    out.push_back({ep + (mixtral ? "w3" : "up_proj") + ".weight",
                   {inter, hidden},
                   std::string(inter_name) + " x hidden_size",
                   &expert.up_proj});
    out.push_back({ep + (mixtral ? "w2" : "down_proj") + ".weight",
                   {hidden, inter},
                   "hidden_size x " + std::string(inter_name),
                   &expert.down_proj});
  }
  if (const int64_t shared = moe.shared_expert_intermediate_size) {
    const char* meaning = "shared_expert_intermediate_size x hidden_size";
    out.push_back(
        {block + "shared_expert.gate_proj.weight", {shared, hidden}, meaning, &l.shared_expert.gate_proj});
    out.push_back(
        {block + "shared_expert.up_proj.weight", {shared, hidden}, meaning, &l.shared_expert.up_proj});
    out.push_back({block + "shared_expert.down_proj.weight",
                   {hidden, shared},
                   "hidden_size x shared_expert_intermediate_size",
                   &l.shared_expert.down_proj});
    out.push_back(
        {block + "shared_expert_gate.weight", {1, hidden}, "1 x hidden_size", &l.shared_expert_gate});
  }
}

// The highest number N any tensor name has right after `marker` ("model.layers." N ".", ".experts."
// N "."), or -1 when none has one.
int64_t highest_index_after(const std::unordered_map<std::string_view, LocatedTensor>& by_name,
                            std::string_view marker) {
  int64_t highest = -1;
  for (const auto& [name, located] : by_name) {
    const size_t at = name.find(marker);
    if (at == std::string_view::npos) continue;
    int64_t index = 0;
    size_t digits = 0;
    for (size_t i = at + marker.size(); i < name.size() && name[i] >= '0' && name[i] <= '9' && digits < 10;
         ++i, ++digits)
      index = index * 10 + (name[i] - '0');
    if (digits > 0) highest = std::max(highest, index);
  }
  return highest;
}

// Every tensor a checkpoint of `c` holds, listing the first `listed_experts` experts of each routed
// layer (the router's shape still says num_experts).
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c, const TensorNames& n, int listed_experts,
                                             ModelWeights& w) {
  const int64_t hidden = c.hidden_size;
  const int64_t q_rows = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv_rows = int64_t{c.num_kv_heads} * c.head_dim;
  const int64_t inter = c.intermediate_size;
  const char* q_meaning = "num_attention_heads*head_dim x hidden_size";
  const char* kv_meaning = "num_key_value_heads*head_dim x hidden_size";

  std::vector<ExpectedTensor> out;
  out.push_back({n.prefix + "embed_tokens.weight",
                 {c.vocab_size, hidden},
                 "vocab_size x hidden_size",
                 &w.embed_tokens});
  w.layers.resize(static_cast<size_t>(c.num_layers));
  for (int i = 0; i < c.num_layers; ++i) {
    LayerWeights& l = w.layers[static_cast<size_t>(i)];
    const std::string p = n.prefix + "layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {hidden}, "hidden_size", &l.input_norm});
    if (c.fused_projections) {
      out.push_back({p + "self_attn.qkv_proj.weight",
                     {q_rows + 2 * kv_rows, hidden},
                     "(num_attention_heads + 2*num_key_value_heads)*head_dim x hidden_size",
                     {{&l.q_proj, q_rows}, {&l.k_proj, kv_rows}, {&l.v_proj, kv_rows}}});
    } else {
      out.push_back({p + "self_attn.q_proj.weight", {q_rows, hidden}, q_meaning, &l.q_proj});
      out.push_back({p + "self_attn.k_proj.weight", {kv_rows, hidden}, kv_meaning, &l.k_proj});
      out.push_back({p + "self_attn.v_proj.weight", {kv_rows, hidden}, kv_meaning, &l.v_proj});
    }
    if (c.qkv_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q_rows}, "num_attention_heads*head_dim", &l.q_bias});
      out.push_back({p + "self_attn.k_proj.bias", {kv_rows}, "num_key_value_heads*head_dim", &l.k_bias});
      out.push_back({p + "self_attn.v_proj.bias", {kv_rows}, "num_key_value_heads*head_dim", &l.v_bias});
    }
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, "head_dim", &l.q_norm});
      out.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, "head_dim", &l.k_norm});
    }
    out.push_back({p + "self_attn.o_proj.weight",
                   {hidden, q_rows},
                   "hidden_size x num_attention_heads*head_dim",
                   &l.o_proj});
    if (c.sandwich_norms) {  // Gemma 2/3: post_attention_layernorm normalizes the attention's output
      out.push_back({p + "post_attention_layernorm.weight", {hidden}, "hidden_size", &l.attn_output_norm});
      out.push_back({p + "pre_feedforward_layernorm.weight", {hidden}, "hidden_size", &l.mlp_norm});
      out.push_back({p + "post_feedforward_layernorm.weight", {hidden}, "hidden_size", &l.mlp_output_norm});
    } else {
      out.push_back({p + "post_attention_layernorm.weight", {hidden}, "hidden_size", &l.mlp_norm});
    }
    if (is_moe_layer(c, i)) {
      add_moe_tensors(c, p, listed_experts, l, out);
    } else if (c.fused_projections) {
      out.push_back({p + "mlp.gate_up_proj.weight",
                     {2 * inter, hidden},
                     "2*intermediate_size x hidden_size",
                     {{&l.gate_proj, inter}, {&l.up_proj, inter}}});
    } else {
      out.push_back(
          {p + "mlp.gate_proj.weight", {inter, hidden}, "intermediate_size x hidden_size", &l.gate_proj});
      out.push_back(
          {p + "mlp.up_proj.weight", {inter, hidden}, "intermediate_size x hidden_size", &l.up_proj});
    }
    if (!is_moe_layer(c, i))
      out.push_back(
          {p + "mlp.down_proj.weight", {hidden, inter}, "hidden_size x intermediate_size", &l.down_proj});
  }
  out.push_back({n.prefix + "norm.weight", {hidden}, "hidden_size", &w.final_norm});
  if (!c.tie_word_embeddings) {
    out.push_back({n.lm_head, {c.vocab_size, hidden}, "vocab_size x hidden_size", &w.lm_head});
  }
  return out;
}

std::string file_list(const std::vector<std::shared_ptr<const SafetensorsFile>>& files) {
  std::string out;
  for (const auto& f : files) {
    if (!out.empty()) out += ", ";
    out += f->path().filename().string();
  }
  return out;
}

std::string architecture_summary(const ModelConfig& c) {
  return c.architecture + " with " + std::to_string(c.num_layers) + " layers" +
         (c.tie_word_embeddings ? ", tied embeddings" : ", untied embeddings");
}

// Why a tensor may be missing, in the terms of config.json.
std::string missing_hint(const ModelConfig& c, const TensorNames& n, const std::string& name) {
  if (name == n.lm_head) {
    return "if the model reuses embed_tokens as its output projection, set tie_word_embeddings to true in "
           "config.json";
  }
  if (name.find("_proj.bias") != std::string::npos) {
    if (c.architecture == "Qwen3ForCausalLM" || c.architecture == "Qwen3MoeForCausalLM")
      return "config.json sets attention_bias to true; if this checkpoint has no q/k/v biases, set it to "
             "false";
    if (c.architecture == "Qwen2MoeForCausalLM")
      return "qkv_bias is true unless config.json sets it false; if this checkpoint has no q/k/v biases, set "
             "it to false";
    return "Qwen2ForCausalLM has biases on q/k/v; if this checkpoint has none, config.json names the wrong "
           "architecture";
  }
  if (name.ends_with(".qkv_proj.weight") || name.ends_with(".gate_up_proj.weight")) {
    return "Phi3ForCausalLM stores q, k and v as one qkv_proj and gate and up as one gate_up_proj; if this "
           "checkpoint has them separate, config.json names the wrong architecture";
  }
  if (name.find("_norm.weight") != std::string::npos && name.find("self_attn.") != std::string::npos) {
    return c.architecture +
           " normalizes each head's q and k; if this checkpoint has no q_norm/k_norm, config.json names the "
           "wrong architecture";
  }
  if (name.ends_with("feedforward_layernorm.weight")) {
    return c.architecture +
           " normalizes each sublayer's input and output (four norms a layer); if this checkpoint has two, "
           "config.json names the wrong architecture";
  }
  if (c.moe &&
      (name.find(".experts.") != std::string::npos || name.find(".shared_expert") != std::string::npos ||
       name.ends_with("mlp.gate.weight") || name.ends_with("block_sparse_moe.gate.weight"))) {
    const bool mixtral = c.architecture == "MixtralForCausalLM";
    return "config.json says " + std::to_string(c.moe->num_experts) + " experts (" +
           (mixtral ? "num_local_experts) in every layer"
                    : "num_experts) in each routed layer (decoder_sparse_step, mlp_only_layers)") +
           "; the checkpoint is incomplete (a shard missing?) or config.json does not match it (kvserve "
           "reads each expert's own tensors, experts.N.*, not transformers 5's fused experts.gate_up_proj)";
  }
  if (c.moe && (name.ends_with("mlp.gate_proj.weight") || name.ends_with("mlp.up_proj.weight") ||
                name.ends_with("mlp.down_proj.weight"))) {
    return "config.json makes this layer's MLP dense (decoder_sparse_step " +
           std::to_string(c.moe->decoder_sparse_step) +
           ", mlp_only_layers); if the checkpoint routes it through experts, fix those fields";
  }
  if (name.starts_with(n.prefix + "layers.")) {
    return "config.json says num_hidden_layers is " + std::to_string(c.num_layers) +
           "; the checkpoint is incomplete (a shard missing?) or config.json does not match it";
  }
  return "the checkpoint is incomplete (a shard missing?) or config.json does not match it";
}

std::string unexpected_hint(const ModelConfig& c, const TensorNames& n, const std::string& name) {
  if (c.moe && name.find(".experts.") != std::string::npos)
    return "config.json says " + std::to_string(c.moe->num_experts) + " experts (" +
           (c.architecture == "MixtralForCausalLM" ? "num_local_experts" : "num_experts") +
           ") and which layers route through them (decoder_sparse_step, mlp_only_layers); fix it to match "
           "the checkpoint";
  const std::string layer_prefix = n.prefix + "layers.";
  if (name.starts_with(layer_prefix)) {
    const std::string index =
        name.substr(layer_prefix.size(), name.find('.', layer_prefix.size()) - layer_prefix.size());
    if (!index.empty() &&
        std::all_of(index.begin(), index.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) &&
        (index.size() > 9 || std::stoi(index) >= c.num_layers)) {
      return "config.json says num_hidden_layers is " + std::to_string(c.num_layers) +
             "; fix it to match the checkpoint";
    }
  }
  return "config.json describes a " + architecture_summary(c) +
         ", which has no such tensor: the checkpoint is another architecture or config.json does not match "
         "it";
}

bool ignored(const ModelConfig& c, const TensorNames& n, const std::string& name) {
  // Old exports carry the RoPE frequency table, which the engine recomputes from rope_theta.
  if (name.ends_with(".rotary_emb.inv_freq")) return true;
  // An FP8 checkpoint's scales for quantizing activations and the KV cache: kvserve keeps both
  // unquantized (Fp8Weights). (Older llm-compressor exports store the KV cache's as the k and v
  // projections' output_scale.)
  if (c.fp8_weights) {
    for (const char* suffix : {".input_scale", ".input_scale_ub", ".k_scale", ".v_scale", ".kv_scale",
                               "_proj.output_scale", ".prob_output_scale"})
      if (name.ends_with(suffix)) return true;
  }
  // A multimodal checkpoint's vision encoder and projector: kvserve serves the text model alone.
  if (!c.checkpoint_architecture.empty() &&
      (name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector.") ||
       name.starts_with("model.vision_tower.") || name.starts_with("model.multi_modal_projector.")))
    return true;
  // Some exporters keep a copy of the tied embedding; the embedding is the one used.
  return c.tie_word_embeddings && name == n.lm_head;
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// The scales of `weight`, an F8_E4M3 tensor the config's Fp8Weights describes: found beside it,
// floating-point, one per block. Throws ModelLoadError saying what is wrong.
MappedTensor::Fp8Scales fp8_scales(const ModelConfig& c, const std::string& weight_name,
                                   const LocatedTensor& weight,
                                   const std::unordered_map<std::string_view, LocatedTensor>& by_name) {
  const std::string where = weight.file->path().string() + ": tensor '" + weight_name + "'";
  if (!c.fp8_weights)
    throw ModelLoadError(where +
                         " is stored as F8_E4M3 but config.json has no quantization_config saying how it is "
                         "scaled; re-download config.json");
  const std::vector<int64_t>& shape = weight.tensor->shape;
  if (shape.size() != 2)
    throw ModelLoadError(where +
                         " is stored as F8_E4M3 but is not a matrix; only linear weights are "
                         "quantized in FP8 checkpoints");
  const Fp8Weights& scheme = *c.fp8_weights;
  const int64_t block_rows = scheme.block_rows ? scheme.block_rows : shape[0];
  const int64_t block_cols = scheme.block_cols ? scheme.block_cols : shape[1];
  const std::string scale_name = weight_name + scheme.scale_suffix;
  const auto it = by_name.find(scale_name);
  if (it == by_name.end())
    throw ModelLoadError(
        where + " is stored as F8_E4M3 but its scale '" + scale_name +
        "' is missing; the checkpoint is incomplete or its quantization_config (quant_method \"" +
        scheme.method + "\") does not match it");
  const SafetensorsTensor& scale = *it->second.tensor;
  const int64_t rows = ceil_div(shape[0], block_rows);
  const int64_t cols = ceil_div(shape[1], block_cols);
  // Per-tensor scales are saved as [] or [1], per-channel ones as [rows, 1] or [rows].
  const bool shape_fits = scale.shape == std::vector<int64_t>{rows, cols} ||
                          (cols == 1 && scale.shape == std::vector<int64_t>{rows}) ||
                          (rows * cols == 1 && scale.numel() == 1 && scale.shape.size() <= 1);
  if (!shape_fits)
    throw ModelLoadError(it->second.file->path().string() + ": scale '" + scale_name + "' has shape " +
                         shape_string(scale.shape) + ", expected " + shape_string({rows, cols}) +
                         " (one per " + std::to_string(block_rows) + " x " + std::to_string(block_cols) +
                         " block of the weight's " + shape_string(shape) + ", as quantization_config says)");
  if (scale.dtype != SafetensorsDtype::kF32 && scale.dtype != SafetensorsDtype::kF16 &&
      scale.dtype != SafetensorsDtype::kBF16)
    throw ModelLoadError(it->second.file->path().string() + ": scale '" + scale_name + "' has dtype " +
                         safetensors_dtype_name(scale.dtype) + "; FP8 scales are F32, F16 or BF16");
  return {it->second.file, it->second.tensor, block_rows, block_cols};
}

}  // namespace

std::vector<std::string> weight_file_names(const std::vector<std::string>& safetensors_names,
                                           std::string_view index_json) {
  std::set<std::string> files;
  if (!index_json.empty()) {
    const nlohmann::json index = nlohmann::json::parse(index_json, nullptr, /*allow_exceptions=*/false);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw ModelLoadError(std::string(kShardIndexFile) + " has no weight_map object");
    for (const auto& [tensor, file] : index["weight_map"].items())
      if (file.is_string()) files.insert(file.get<std::string>());
    return {files.begin(), files.end()};
  }
  for (const std::string& name : safetensors_names)
    if (name.ends_with(".safetensors") && !name.starts_with("consolidated")) files.insert(name);
  return {files.begin(), files.end()};
}

Model load_model(const fs::path& dir, WeightLoading loading) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw ModelLoadError(dir.string() +
                         ": not a directory; pass a Hugging Face model directory holding config.json and "
                         "*.safetensors files");
  }
  Model model;
  model.dir = dir;
  model.config = load_model_config(dir / "config.json");
  const ModelConfig& config = model.config;

  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".safetensors" && entry.is_regular_file())
      names.push_back(entry.path().filename().string());
  }
  if (ec) throw ModelLoadError(dir.string() + ": cannot list the directory: " + ec.message());
  std::string index;
  if (std::ifstream in(dir / kShardIndexFile, std::ios::binary); in) {
    std::ostringstream text;
    text << in.rdbuf();
    index = text.str();
  }
  std::vector<fs::path> paths;
  for (const std::string& name : weight_file_names(names, index)) {
    if (std::find(names.begin(), names.end(), name) == names.end())
      throw ModelLoadError((dir / kShardIndexFile).string() + " names " + name +
                           ", which the directory does not hold: download the whole model");
    paths.push_back(dir / name);
  }
  if (paths.empty()) {
    throw ModelLoadError(dir.string() +
                         ": no *.safetensors file; kvserve loads weights only from safetensors (convert "
                         "pytorch_model.bin or other formats with transformers' save_pretrained)");
  }
  std::sort(paths.begin(), paths.end());  // deterministic "first file" in duplicate reports

  // Shared: a deferred load's tensors keep their file mapped (MappedTensor) after this returns.
  std::vector<std::shared_ptr<const SafetensorsFile>> files;
  std::unordered_map<std::string_view, LocatedTensor> by_name;
  for (const fs::path& path : paths) {
    const auto& file = files.emplace_back(std::make_shared<const SafetensorsFile>(path));
    for (const SafetensorsTensor& tensor : file->tensors()) {
      const auto [it, inserted] = by_name.try_emplace(tensor.name, LocatedTensor{&tensor, file});
      if (!inserted) {
        throw ModelLoadError(
            path.string() + ": tensor '" + tensor.name + "' is also in " + it->second.file->path().string() +
            "; each tensor must be in exactly one shard - remove the stray or outdated file");
      }
    }
  }

  // The expected list and the layer vector grow with num_hidden_layers (and with num_experts in each
  // routed layer), which a corrupt config.json can set to 2^31 - 1 (terabytes). One more layer
  // (expert) than the highest the files name is sure to lack its tensors, so listing no further
  // still throws the same first error.
  const TensorNames tensor_naming = tensor_names(config, by_name);
  ModelConfig listed = config;
  listed.num_layers = static_cast<int>(std::min<int64_t>(
      config.num_layers, highest_index_after(by_name, tensor_naming.prefix + "layers.") + 2));
  const int listed_experts =
      listed.moe ? static_cast<int>(std::min<int64_t>(listed.moe->num_experts,
                                                      highest_index_after(by_name, ".experts.") + 2))
                 : 0;
  if (tensor_naming.prefix.empty() && !config.tie_word_embeddings &&
      !by_name.contains(tensor_naming.lm_head)) {
    // A base model saved without its LM head (an embedding model's checkpoint): it serves
    // embeddings only, and the embedding matrix stands in for the output projection that the
    // engine still applies to the one token an embedding request draws.
    model.config.embedding_only = true;
    model.config.tie_word_embeddings = listed.tie_word_embeddings = true;
  }
  const std::vector<ExpectedTensor> expected =
      expected_tensors(listed, tensor_naming, listed_experts, model.weights);
  std::unordered_set<std::string> expected_names;
  std::vector<std::optional<MappedTensor::Fp8Scales>> scales(expected.size());  // [i]: expected[i]'s
  for (size_t i = 0; i < expected.size(); ++i) {
    const ExpectedTensor& want = expected[i];
    expected_names.insert(want.name);
    const auto it = by_name.find(want.name);
    if (it == by_name.end()) {
      throw ModelLoadError(dir.string() + ": tensor '" + want.name + "' is missing (looked in " +
                           file_list(files) + "); " + missing_hint(config, tensor_naming, want.name));
    }
    const auto& [tensor, file] = it->second;
    if (tensor->shape != want.shape) {
      throw ModelLoadError(file->path().string() + ": tensor '" + want.name + "' has shape " +
                           shape_string(tensor->shape) + ", expected " + shape_string(want.shape) + " (" +
                           want.shape_meaning +
                           " from config.json); config.json does not match the checkpoint");
    }
    const SafetensorsDtype dtype = tensor->dtype;
    if (dtype == SafetensorsDtype::kF8E4M3) {
      scales[i] = fp8_scales(config, want.name, it->second, by_name);
      expected_names.insert(scales[i]->tensor->name);
    } else if (dtype != SafetensorsDtype::kF32 && dtype != SafetensorsDtype::kF16 &&
               dtype != SafetensorsDtype::kBF16) {
      throw ModelLoadError(file->path().string() + ": tensor '" + want.name + "' has dtype " +
                           safetensors_dtype_name(dtype) +
                           "; kvserve loads weights stored as F32, F16 or BF16, or F8_E4M3 with their scales "
                           "in an FP8 checkpoint - convert the checkpoint");
    }
  }
  for (const auto& file : files) {
    for (const SafetensorsTensor& tensor : file->tensors()) {
      if (expected_names.contains(tensor.name) || ignored(config, tensor_naming, tensor.name)) continue;
      throw ModelLoadError(file->path().string() + ": unexpected tensor '" + tensor.name + "'; " +
                           unexpected_hint(config, tensor_naming, tensor.name));
    }
  }

  for (size_t i = 0; i < expected.size(); ++i) {
    const ExpectedTensor& want = expected[i];
    const LocatedTensor& found = by_name.at(want.name);
    int64_t row_elements = 1;
    for (size_t d = 1; d < want.shape.size(); ++d)
      row_elements *= want.shape[d];
    int64_t row = 0;
    for (const TensorPart& part : want.parts) {
      part.destination->shape = want.shape;
      part.destination->shape[0] = part.rows;
      part.destination->mapped =
          MappedTensor{found.file, found.tensor, static_cast<size_t>(row * row_elements),
                       static_cast<size_t>(part.rows * row_elements), scales[i]};
      row += part.rows;
    }
  }
  // kHost reads the values now and lets the mappings go; kDeferred leaves them to the backend.
  if (loading == WeightLoading::kHost) {
    materialize_weights(model);
    for_each_tensor(model.weights, [](Tensor& t) { t.mapped.reset(); });
  }
  return model;
}

}  // namespace kvserve
