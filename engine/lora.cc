#include "engine/lora.h"

#include <cblas.h>

#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";

// Where a checkpoint module's rows go: `rows` rows of it to `target`, after the rows of the parts
// before it (Phi-3's fused projections are several targets).
struct ModulePart {
  LoraTarget target;
  int64_t rows;
};

// The modules of a layer an adapter may name, with their output rows in the base model. A
// mixture-of-experts model's (MoeConfig) are its attention's: adapters of its experts are refused.
std::map<std::string, std::vector<ModulePart>> adaptable_modules(const ModelConfig& c) {
  const int64_t q = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv = int64_t{c.num_kv_heads} * c.head_dim;
  const int64_t inter = c.intermediate_size;
  std::map<std::string, std::vector<ModulePart>> m = {
      {"self_attn.o_proj", {{kLoraO, c.hidden_size}}},
      {"mlp.down_proj", {{kLoraDown, c.hidden_size}}},
  };
  if (c.fused_projections) {
    m["self_attn.qkv_proj"] = {{kLoraQ, q}, {kLoraK, kv}, {kLoraV, kv}};
    m["mlp.gate_up_proj"] = {{kLoraGate, inter}, {kLoraUp, inter}};
  } else {
    m["self_attn.q_proj"] = {{kLoraQ, q}};
    m["self_attn.k_proj"] = {{kLoraK, kv}};
    m["self_attn.v_proj"] = {{kLoraV, kv}};
    m["mlp.gate_proj"] = {{kLoraGate, inter}};
    m["mlp.up_proj"] = {{kLoraUp, inter}};
  }
  if (c.moe) std::erase_if(m, [](const auto& entry) { return entry.first.starts_with("mlp."); });
  return m;
}

int64_t input_width(const ModelConfig& c, LoraTarget t) {
  if (t == kLoraO) return int64_t{c.num_heads} * c.head_dim;
  if (t == kLoraDown) return c.intermediate_size;
  return c.hidden_size;
}

json read_config(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw ModelLoadError(path.string() +
                         ": cannot open; a LoRA adapter directory holds adapter_config.json and "
                         "adapter_model.safetensors, as PEFT's save_pretrained writes them");
  std::stringstream text;
  text << in.rdbuf();
  json config = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) throw ModelLoadError(path.string() + ": not a JSON object; fix or re-download it");
  return config;
}

// An unset option: absent, null, false, an empty list or object, or the given default string.
bool unset(const json& config, const char* key, const char* default_string = nullptr) {
  if (!config.contains(key)) return true;
  const json& v = config[key];
  if (v.is_null() || (v.is_boolean() && !v.get<bool>())) return true;
  if ((v.is_array() || v.is_object()) && v.empty()) return true;
  return default_string && v.is_string() && v.get<std::string>() == default_string;
}

// The layer index and module of a PEFT tensor name ("base_model.model.model.layers.3.self_attn.q_proj
// .lora_A.weight" -> 3, "self_attn.q_proj", 'A'), or nullopt for a name of another shape.
struct TensorRole {
  int layer;
  std::string module;
  char matrix;  // 'A' or 'B'
};
std::optional<TensorRole> tensor_role(const std::string& name) {
  // The text model's layers, as PEFT names them for causal LMs and for multimodal checkpoints.
  // (And of a base model saved on its own, as embedding models are: base_model.model.layers.)
  static const std::vector<std::string> kPrefixes = {
      "base_model.model.model.layers.", "base_model.model.model.language_model.layers.",
      "base_model.model.language_model.model.layers.", "base_model.model.layers."};
  for (const std::string& prefix : kPrefixes) {
    if (!name.starts_with(prefix)) continue;
    const size_t dot = name.find('.', prefix.size());
    if (dot == std::string::npos) return std::nullopt;
    const std::string index = name.substr(prefix.size(), dot - prefix.size());
    if (index.empty() || index.size() > 6 || index.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    for (const char matrix : {'A', 'B'}) {
      const std::string suffix = std::string(".lora_") + matrix + ".weight";
      if (name.ends_with(suffix) && name.size() > dot + 1 + suffix.size())
        return TensorRole{std::stoi(index), name.substr(dot + 1, name.size() - dot - 1 - suffix.size()),
                          matrix};
    }
  }
  return std::nullopt;
}

}  // namespace

LoraAdapter load_lora_adapter(const fs::path& dir, std::string name, const ModelConfig& base) {
  const fs::path config_path = dir / kConfigFile;
  const json config = read_config(config_path);
  const auto fail = [&](const std::string& problem) {
    throw ModelLoadError(config_path.string() + ": " + problem);
  };
  if (config.contains("peft_type") && config["peft_type"] != "LORA")
    fail("peft_type " + config["peft_type"].dump() + " is not a LoRA adapter; kvserve serves LoRA adapters");
  if (!config.contains("r") || !config["r"].is_number_integer() || config["r"].get<int64_t>() < 1 ||
      config["r"].get<int64_t>() > kMaxLoraRank)
    fail("'r' (the adapter's rank) must be an integer in [1, " + std::to_string(kMaxLoraRank) + "]");
  if (!config.contains("lora_alpha") || !config["lora_alpha"].is_number() ||
      !(config["lora_alpha"].get<double>() > 0))
    fail("'lora_alpha' must be a positive number");
  const int rank = config["r"].get<int>();
  const double alpha = config["lora_alpha"].get<double>();
  if (config.contains("use_rslora") && !config["use_rslora"].is_boolean() && !config["use_rslora"].is_null())
    fail("'use_rslora' must be true or false");
  const bool rslora = !unset(config, "use_rslora");
  // What PEFT can save that changes the computation in ways kvserve does not apply.
  const std::vector<std::pair<const char*, const char*>> refused = {
      {"use_dora", "DoRA (weight-decomposed LoRA) adapters"},
      {"modules_to_save", "adapters that replace whole modules (modules_to_save)"},
      {"rank_pattern", "per-module ranks (rank_pattern)"},
      {"alpha_pattern", "per-module alphas (alpha_pattern)"},
      {"fan_in_fan_out", "fan_in_fan_out (transposed, GPT-2-style) weights"},
      {"layer_replication", "layer_replication"},
      {"lora_bias", "adapters with a bias on lora_B (lora_bias)"},
  };
  for (const auto& [key, what] : refused)
    if (!unset(config, key)) fail(std::string(what) + " are not supported ('" + key + "' is set)");
  if (!unset(config, "bias", "none"))
    fail("adapters that train biases ('bias' " + config["bias"].dump() +
         ") are not supported; use bias \"none\"");

  LoraAdapter adapter;
  adapter.name = std::move(name);
  adapter.dir = dir;
  adapter.rank = rank;
  adapter.scaling = static_cast<float>(rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / rank);
  if (!std::isfinite(adapter.scaling))
    fail("'lora_alpha' " + config["lora_alpha"].dump() + " gives a scaling beyond float range");
  adapter.layers.resize(static_cast<size_t>(base.num_layers));

  const fs::path weights_path = dir / kWeightsFile;
  std::error_code ec;
  if (!fs::exists(weights_path, ec))
    throw ModelLoadError(
        weights_path.string() + ": missing" +
        (fs::exists(dir / "adapter_model.bin", ec)
             ? std::string("; the adapter is saved as adapter_model.bin, which kvserve does not read: "
                           "save it with safe_serialization (PEFT's default)")
             : std::string("; save the adapter with PEFT's save_pretrained")));
  const SafetensorsFile file(weights_path);
  const auto modules = adaptable_modules(base);
  const auto file_fail = [&](const std::string& problem) {
    throw ModelLoadError(weights_path.string() + ": " + problem);
  };
  // Pairs by (layer, module), each tensor checked before any is converted.
  std::map<std::pair<int, std::string>, std::pair<const SafetensorsTensor*, const SafetensorsTensor*>> pairs;
  for (const SafetensorsTensor& t : file.tensors()) {
    const std::optional<TensorRole> role = tensor_role(t.name);
    if (!role) {
      if (t.name.find("embed") != std::string::npos || t.name.find("lm_head") != std::string::npos)
        file_fail("tensor '" + t.name +
                  "' adapts the embeddings or the LM head, which kvserve does not support");
      if (t.name.find("lora_magnitude_vector") != std::string::npos)
        file_fail("tensor '" + t.name + "' is DoRA's, which kvserve does not support");
      file_fail(
          "unexpected tensor '" + t.name +
          "'; a LoRA adapter for a causal LM names base_model.model.model.layers.N.<module>.lora_A.weight "
          "and lora_B.weight");
    }
    if (role->layer >= base.num_layers)
      file_fail("tensor '" + t.name + "' adapts layer " + std::to_string(role->layer) +
                ", but the base model has " + std::to_string(base.num_layers) +
                ": the adapter was trained for another model");
    const auto module = modules.find(role->module);
    if (module == modules.end()) {
      std::string known;
      for (const auto& [m, parts] : modules)
        known += (known.empty() ? "" : ", ") + m;
      file_fail(
          "tensor '" + t.name + "' adapts '" + role->module + "', which a " + base.architecture +
          " layer does not have as a linear projection (it has " + known + ")" +
          (base.moe ? "; kvserve adapts a mixture-of-experts model's attention only, not its experts" : ""));
    }
    int64_t rows = 0;
    for (const ModulePart& part : module->second)
      rows += part.rows;
    const int64_t in = input_width(base, module->second.front().target);
    const std::vector<int64_t> want =
        role->matrix == 'A' ? std::vector<int64_t>{rank, in} : std::vector<int64_t>{rows, rank};
    if (t.shape != want)
      file_fail("tensor '" + t.name + "' has shape " + shape_string(t.shape) + ", expected " +
                shape_string(want) + " (" + (role->matrix == 'A' ? "r x in_features" : "out_features x r") +
                ", r = " + std::to_string(rank) +
                " from adapter_config.json): the adapter was trained for another model, or "
                "its config does not match it");
    if (t.dtype != SafetensorsDtype::kF32 && t.dtype != SafetensorsDtype::kF16 &&
        t.dtype != SafetensorsDtype::kBF16)
      file_fail("tensor '" + t.name + "' has dtype " + safetensors_dtype_name(t.dtype) +
                "; LoRA weights must be F32, F16 or BF16");
    auto& pair = pairs[{role->layer, role->module}];
    const SafetensorsTensor*& slot = role->matrix == 'A' ? pair.first : pair.second;
    if (slot)
      file_fail("tensors '" + slot->name + "' and '" + t.name + "' both adapt layer " +
                std::to_string(role->layer) + "'s " + role->module + ": keep one");
    slot = &t;
  }
  if (pairs.empty()) file_fail("holds no LoRA weights");
  for (const auto& [where, pair] : pairs) {
    const auto& [layer, module] = where;
    if (!pair.first || !pair.second)
      file_fail("layer " + std::to_string(layer) + "'s " + module + " has lora_" + (pair.first ? "A" : "B") +
                " but no lora_" + (pair.first ? "B" : "A") + ": the file is incomplete");
    const std::vector<float> a = safetensors_to_float32(*pair.first, weights_path);
    const std::vector<float> b = safetensors_to_float32(*pair.second, weights_path);
    int64_t row = 0;
    for (const ModulePart& part : modules.at(module)) {
      LoraPair& p = adapter.layers[static_cast<size_t>(layer)][part.target];
      p.rank = rank;
      p.in = static_cast<int>(input_width(base, part.target));
      p.out = static_cast<int>(part.rows);
      p.a = a;  // a fused module's parts share A
      p.b.assign(b.begin() + row * rank, b.begin() + (row + part.rows) * rank);
      row += part.rows;
    }
  }
  return adapter;
}

void apply_lora(const LoraPair& pair, float scaling, const float* x, int rows, float* y,
                std::vector<float>& scratch) {
  if (pair.rank == 0 || rows == 0) return;
  scratch.resize(static_cast<size_t>(rows) * pair.rank);
  // scratch = x A^T, then y += scaling * scratch B^T.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, pair.rank, pair.in, 1.0f, x, pair.in,
              pair.a.data(), pair.in, 0.0f, scratch.data(), pair.rank);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, pair.out, pair.rank, scaling, scratch.data(),
              pair.rank, pair.b.data(), pair.rank, 1.0f, y, pair.out);
}

}  // namespace kvserve
