// config.json -> ModelConfig. Hugging Face configs are loosely typed and have changed keys over
// the years (torch_dtype -> dtype, rope_theta/rope_scaling -> rope_parameters), so every field is
// checked for presence, type and range here, and every failure names the file and the field.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <numbers>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model.h"

namespace kvserve {
namespace {

using nlohmann::json;

constexpr const char* kSupportedArchitectures =
    "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, "
    "GraniteForCausalLM, GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, MixtralForCausalLM, "
    "Qwen2MoeForCausalLM, Qwen3MoeForCausalLM (and the text models of "
    "Gemma3ForConditionalGeneration and Mistral3ForConditionalGeneration, and each one's base model, "
    "e.g. MistralModel, as embedding models are saved)";

bool is_gemma(const std::string& arch) {
  return arch == "GemmaForCausalLM" || arch == "Gemma2ForCausalLM" || arch == "Gemma3ForCausalLM";
}

// The mixture-of-experts models share their attention with a dense architecture: Mixtral's is
// Mistral's, Qwen2-MoE's Qwen2's, Qwen3-MoE's Qwen3's.
bool is_mistral(const std::string& arch) {
  return arch == "MistralForCausalLM" || arch == "MixtralForCausalLM";
}
bool is_qwen2(const std::string& arch) {
  return arch == "Qwen2ForCausalLM" || arch == "Qwen2MoeForCausalLM";
}
bool is_qwen3(const std::string& arch) {
  return arch == "Qwen3ForCausalLM" || arch == "Qwen3MoeForCausalLM";
}

std::string excerpt(const json& value) {
  std::string text = value.dump();
  constexpr size_t kMax = 60;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

std::string described(const json& value) {
  return excerpt(value) + " (a " + value.type_name() + ")";
}

// Typed access to one JSON object of config.json; `prefix` places nested objects in messages
// ("rope_scaling.factor").
class Fields {
 public:
  Fields(const std::filesystem::path& path, const json& object, std::string prefix)
      : path_(path), object_(object), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& problem) const {
    throw ModelLoadError(path_.string() + ": " + problem);
  }

  // Null counts as absent: Hugging Face writes null for "use the default".
  const json* find(const char* key) const {
    const auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  std::string name(const char* key) const { return "'" + prefix_ + key + "'"; }

  int positive_int(const char* key, const json& value) const {
    if (!value.is_number_integer()) {
      fail("field " + name(key) + " must be a positive integer, got " + described(value) +
           "; fix config.json");
    }
    constexpr int64_t kMax = std::numeric_limits<int>::max();
    const bool in_range = value.is_number_unsigned()
                              ? value.get<uint64_t>() >= 1 && value.get<uint64_t>() <= uint64_t{kMax}
                              : value.get<int64_t>() >= 1 && value.get<int64_t>() <= kMax;
    if (!in_range) {
      fail("field " + name(key) + " must be a positive integer below 2^31, got " + excerpt(value) +
           "; fix config.json");
    }
    return value.get<int>();
  }

  int required_positive_int(const char* key) const {
    const json* value = find(key);
    if (!value) fail("required field " + name(key) + " is missing; add it to config.json");
    return positive_int(key, *value);
  }

  std::optional<int> optional_positive_int(const char* key) const {
    const json* value = find(key);
    if (!value) return std::nullopt;
    return positive_int(key, *value);
  }

  double positive_number(const char* key, const json& value) const {
    if (!value.is_number()) {
      fail("field " + name(key) + " must be a positive number, got " + described(value) +
           "; fix config.json");
    }
    const double x = value.get<double>();
    if (!(x > 0) || !std::isfinite(x)) {
      fail("field " + name(key) + " must be a positive number, got " + excerpt(value) + "; fix config.json");
    }
    return x;
  }

  double positive_number_or(const char* key, double fallback) const {
    const json* value = find(key);
    return value ? positive_number(key, *value) : fallback;
  }

  double required_positive_number(const char* key) const {
    const json* value = find(key);
    if (!value) fail("required field " + name(key) + " is missing; add it to config.json");
    return positive_number(key, *value);
  }

  // A key written as null, which for a few fields means "none" rather than "the default".
  bool is_null(const char* key) const {
    const auto it = object_.find(key);
    return it != object_.end() && it->is_null();
  }

  bool boolean_or(const char* key, bool fallback) const {
    const json* value = find(key);
    if (!value) return fallback;
    if (!value->is_boolean()) {
      fail("field " + name(key) + " must be true or false, got " + described(*value) + "; fix config.json");
    }
    return value->get<bool>();
  }

  std::optional<std::string> optional_string(const char* key) const {
    const json* value = find(key);
    if (!value) return std::nullopt;
    if (!value->is_string()) {
      fail("field " + name(key) + " must be a string, got " + described(*value) + "; fix config.json");
    }
    return value->get<std::string>();
  }

  // A token id: a non-negative integer inside the vocabulary.
  TokenId token_id(const char* key, const json& value, int vocab_size) const {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= vocab_size) {
      fail("field " + name(key) + " must hold token ids in [0, vocab_size " + std::to_string(vocab_size) +
           "), got " + described(value) + "; fix config.json");
    }
    return value.get<TokenId>();
  }

 private:
  const std::filesystem::path& path_;
  const json& object_;
  std::string prefix_;
};

json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ModelLoadError(path.string() + ": cannot open (" + std::strerror(errno) +
                         "); a Hugging Face model directory must contain config.json next to its "
                         "*.safetensors files");
  }
  std::stringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::exception& e) {
    throw ModelLoadError(path.string() + ": not valid JSON (" + e.what() + "); fix or re-download it");
  }
}

// A sentence-transformers checkpoint (embedding models saved by that library) lists in modules.json
// what follows the transformer: a Pooling module (its folder's config.json says how token states
// become one vector), Normalize, or others such as Dense projections. kvserve embeds as the
// transformer's last token's final hidden state, L2-normalized unless asked not to: a model that
// pools another way, or projects after pooling, would get embeddings unlike its own, so it is
// refused here, naming the setting, rather than served wrong.
void check_sentence_transformers_modules(const std::filesystem::path& dir) {
  const std::filesystem::path modules_path = dir / "modules.json";
  std::error_code ec;
  if (!std::filesystem::exists(modules_path, ec)) return;
  const json modules = read_json_file(modules_path);
  if (!modules.is_array())
    throw ModelLoadError(modules_path.string() + ": must hold a JSON array of modules, got " +
                         described(modules) + "; fix or remove it");
  for (const json& module : modules) {
    const std::string type = module.is_object() && module.contains("type") && module["type"].is_string()
                                 ? module["type"].get<std::string>()
                                 : "";
    const std::string folder = module.is_object() && module.contains("path") && module["path"].is_string()
                                   ? module["path"].get<std::string>()
                                   : "";
    const std::string kind = type.substr(type.rfind('.') == std::string::npos ? 0 : type.rfind('.') + 1);
    if (kind == "Transformer" || kind == "Normalize") continue;
    if (kind != "Pooling")
      throw ModelLoadError(modules_path.string() + ": module " + excerpt(module) +
                           " follows the transformer; kvserve embeds as the last token's hidden state "
                           "(pooled, then normalized) and applies no " +
                           (kind.empty() ? std::string("other module") : kind + " module") +
                           ", so its embeddings would not be this model's");
    if (folder.empty() || folder.find("..") != std::string::npos || folder.front() == '/')
      throw ModelLoadError(modules_path.string() + ": the Pooling module's path " + excerpt(module) +
                           " is not a folder of the model; fix modules.json");
    const std::filesystem::path pooling_path = dir / folder / "config.json";
    if (!std::filesystem::exists(pooling_path, ec))
      throw ModelLoadError(pooling_path.string() +
                           ": missing; modules.json names a Pooling module there, whose config says how the "
                           "model pools: download the whole model");
    const json pooling = read_json_file(pooling_path);
    if (!pooling.is_object())
      throw ModelLoadError(pooling_path.string() + ": must hold a JSON object, got " + described(pooling));
    std::vector<std::string> modes;
    for (const auto& [key, value] : pooling.items())
      if (key.starts_with("pooling_mode_") && value.is_boolean() && value.get<bool>()) modes.push_back(key);
    if (modes != std::vector<std::string>{"pooling_mode_lasttoken"}) {
      std::string listed;
      for (const std::string& m : modes)
        listed += (listed.empty() ? "" : ", ") + m;
      throw ModelLoadError(pooling_path.string() + ": the model pools by " +
                           (listed.empty() ? std::string("no mode set") : listed) +
                           "; kvserve pools the last token only (pooling_mode_lasttoken, as Qwen3-Embedding "
                           "and e5-mistral do), so its embeddings would not be this model's");
    }
  }
}

// generation_config.json's eos_token_id joins config.json's: instruct models end a turn with a
// token config.json may not list (Qwen2 <|im_end|>, Llama 3 <|eot_id|>), and transformers and
// the other servers stop on either.
void read_generation_eos(const std::filesystem::path& dir, ModelConfig& config) {
  const std::filesystem::path path = dir / "generation_config.json";
  if (!std::filesystem::exists(path)) return;
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  json root;
  try {
    root = json::parse(text.str());
  } catch (const json::exception& e) {
    throw ModelLoadError(path.string() + ": not valid JSON (" + e.what() + "); fix or remove it");
  }
  if (!root.is_object())
    throw ModelLoadError(path.string() + ": must hold a JSON object, got " + described(root) +
                         "; fix or remove it");
  const Fields fields(path, root, "");
  const json* eos = fields.find("eos_token_id");
  if (!eos) return;
  const auto add = [&](const json& value) {
    const TokenId id = fields.token_id("eos_token_id", value, config.vocab_size);
    if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) == config.eos_token_ids.end())
      config.eos_token_ids.push_back(id);
  };
  if (eos->is_array()) {
    for (const json& id : *eos)
      add(id);
  } else {
    add(*eos);
  }
}

std::string read_architecture(const Fields& fields) {
  const json* list = fields.find("architectures");
  if (!list) {
    fields.fail("required field 'architectures' is missing; it must name one of " +
                std::string(kSupportedArchitectures));
  }
  if (!list->is_array() || list->empty() || !(*list)[0].is_string()) {
    fields.fail("field 'architectures' must be a non-empty list of strings, got " + described(*list) +
                "; fix config.json");
  }
  const std::string named = (*list)[0].get<std::string>();
  // A base model without its LM head, as embedding models are saved (e5-mistral's MistralModel):
  // the same architecture; the loader finds its tensors without the "model." prefix.
  const std::string arch =
      named.ends_with("Model") ? named.substr(0, named.size() - 5) + "ForCausalLM" : named;
  if (arch != "LlamaForCausalLM" && !is_mistral(arch) && !is_qwen2(arch) && !is_qwen3(arch) &&
      arch != "Phi3ForCausalLM" && arch != "GraniteForCausalLM" && !is_gemma(arch)) {
    fields.fail("architecture '" + named + "' is not supported; kvserve runs " + kSupportedArchitectures);
  }
  return arch;
}

std::string read_dtype(const Fields& fields) {
  // transformers 5 renamed torch_dtype to dtype; exporters in between write both.
  const std::optional<std::string> dtype = fields.optional_string("dtype");
  const std::optional<std::string> torch_dtype = fields.optional_string("torch_dtype");
  if (dtype && torch_dtype && *dtype != *torch_dtype) {
    fields.fail("fields 'dtype' (\"" + *dtype + "\") and 'torch_dtype' (\"" + *torch_dtype +
                "\") disagree; make them equal in config.json");
  }
  // transformers loads a config without either as float32.
  const std::string value = dtype ? *dtype : torch_dtype.value_or("float32");
  if (value != "float32" && value != "float16" && value != "bfloat16") {
    fields.fail("dtype \"" + value + "\" is not supported; the weights must be float32, float16 or bfloat16");
  }
  return value;
}

// A longrope factor list: one positive number per rotated pair of dimensions.
std::vector<double> read_longrope_factors(const Fields& scaling, const char* key, int head_dim) {
  const json* list = scaling.find(key);
  if (!list) scaling.fail("longrope RoPE scaling needs " + scaling.name(key) + "; fix config.json");
  if (!list->is_array() || list->size() != static_cast<size_t>(head_dim / 2)) {
    scaling.fail("field " + scaling.name(key) + " must list head_dim / 2 = " + std::to_string(head_dim / 2) +
                 " numbers, got " + described(*list) + "; fix config.json");
  }
  std::vector<double> factors;
  for (const json& value : *list)
    factors.push_back(scaling.positive_number(key, value));
  return factors;
}

// Phi-3's longrope, as it applies up to the original length (ModelConfig::longrope_short_factor):
// the short factors, and the attention factor transformers derives from how far
// max_position_embeddings stretches that length.
void read_longrope(const Fields& scaling, const Fields& top, ModelConfig& config) {
  config.longrope_short_factor = read_longrope_factors(scaling, "short_factor", config.head_dim);
  read_longrope_factors(scaling, "long_factor", config.head_dim);  // checked, used past the length served
  // Phi3Config's default, 4096, where config.json is silent (the published configs say it).
  const int original = top.optional_positive_int("original_max_position_embeddings").value_or(4096);
  config.longrope_original_max_position_embeddings = original;
  const double factor = static_cast<double>(config.max_position_embeddings) / original;
  config.longrope_attention_factor = scaling.positive_number_or(
      "attention_factor", factor <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(factor) / std::log(original)));
}

// rope_type "default" (or no scaling) -> nullopt; "llama3" -> its four parameters; "linear" -> its
// factor; "longrope" (or its older name "su") -> config's longrope fields, and nullopt.
std::optional<RopeScaling> read_rope_scaling(const Fields& scaling, const Fields& top, ModelConfig& config) {
  std::optional<std::string> type = scaling.optional_string("rope_type");
  if (!type) type = scaling.optional_string("type");  // the key before transformers 4.45
  if (!type) {
    scaling.fail("field " + scaling.name("rope_type") +
                 " is missing; it must be \"default\", \"linear\", \"llama3\" or \"longrope\" (or drop "
                 "the scaling entry)");
  }
  if (*type == "default") return std::nullopt;
  if (*type == "linear") {
    RopeScaling rope;
    rope.type = RopeScaling::Type::kLinear;
    rope.factor = scaling.required_positive_number("factor");
    return rope;
  }
  if ((*type == "longrope" || *type == "su") && config.architecture == "Phi3ForCausalLM") {
    read_longrope(scaling, top, config);
    return std::nullopt;
  }
  if (*type != "llama3") {
    scaling.fail("RoPE scaling type \"" + *type + "\" is unsupported for " + config.architecture +
                 "; kvserve supports plain RoPE (\"default\"), \"linear\", \"llama3\" and, for "
                 "Phi3ForCausalLM, \"longrope\"");
  }
  RopeScaling rope;
  rope.factor = scaling.required_positive_number("factor");
  rope.low_freq_factor = scaling.required_positive_number("low_freq_factor");
  rope.high_freq_factor = scaling.required_positive_number("high_freq_factor");
  rope.original_max_position_embeddings = scaling.required_positive_int("original_max_position_embeddings");
  // The smoothing between the two bands divides by their difference.
  if (!(rope.high_freq_factor > rope.low_freq_factor)) {
    scaling.fail("llama3 RoPE scaling needs " + scaling.name("high_freq_factor") + " > " +
                 scaling.name("low_freq_factor") + ", got " + std::to_string(rope.high_freq_factor) +
                 " and " + std::to_string(rope.low_freq_factor) + "; fix config.json");
  }
  return rope;
}

// Gemma 3's second RoPE, for its windowed layers, as transformers 5 writes it
// (rope_parameters.sliding_attention): a base of its own, never scaled.
void read_sliding_rope(const Fields& rope, ModelConfig& config) {
  config.sliding_rope_theta = rope.positive_number_or("rope_theta", 10000.0);  // Gemma3TextConfig's default
  std::optional<std::string> type = rope.optional_string("rope_type");
  if (!type) type = rope.optional_string("type");
  if (type && *type != "default") {
    rope.fail("the sliding-window layers' RoPE scaling \"" + *type +
              "\" is unsupported; kvserve scales only the full-attention layers' RoPE");
  }
}

void read_rope(const std::filesystem::path& path, const Fields& fields, ModelConfig& config) {
  const bool gemma3 = config.architecture == "Gemma3ForCausalLM";
  const double default_theta = gemma3 || config.architecture == "MixtralForCausalLM" ? 1000000.0 : 10000.0;
  // transformers 5 moved rope_theta and the scaling into one "rope_parameters" object (for Gemma 3,
  // one per layer type).
  if (const json* parameters = fields.find("rope_parameters")) {
    if (!parameters->is_object()) {
      fields.fail("field 'rope_parameters' must be an object, got " + described(*parameters) +
                  "; fix config.json");
    }
    const Fields all(path, *parameters, "rope_parameters.");
    const json* full = gemma3 ? all.find("full_attention") : nullptr;
    const bool per_type = full && full->is_object();
    if (per_type) {
      if (const json* sliding = all.find("sliding_attention"); sliding && sliding->is_object())
        read_sliding_rope(Fields(path, *sliding, "rope_parameters.sliding_attention."), config);
      parameters = full;
    }
    const Fields rope(path, *parameters, per_type ? "rope_parameters.full_attention." : "rope_parameters.");
    config.rope_theta =
        rope.positive_number_or("rope_theta", fields.positive_number_or("rope_theta", default_theta));
    if (rope.find("rope_type") || rope.find("type"))
      config.rope_scaling = read_rope_scaling(rope, fields, config);
    if (gemma3 && !config.sliding_rope_theta)
      config.sliding_rope_theta = fields.positive_number_or("rope_local_base_freq", 10000.0);
    return;
  }
  config.rope_theta = fields.positive_number_or("rope_theta", default_theta);
  // Before transformers 5: the windowed layers' base beside the full layers' rope_theta.
  if (gemma3) config.sliding_rope_theta = fields.positive_number_or("rope_local_base_freq", 10000.0);
  if (const json* scaling = fields.find("rope_scaling")) {
    if (!scaling->is_object()) {
      fields.fail("field 'rope_scaling' must be an object or null, got " + described(*scaling) +
                  "; fix config.json");
    }
    config.rope_scaling = read_rope_scaling(Fields(path, *scaling, "rope_scaling."), fields, config);
  }
}

// A [rows, cols] block size from config.json: [128, 128], or "128x128" as some exporters write it.
std::pair<int64_t, int64_t> read_block_size(const Fields& q, const char* key, const json& value) {
  std::vector<int64_t> dims;
  if (value.is_array()) {
    for (const json& d : value)
      dims.push_back(d.is_number_integer() && d.get<int64_t>() > 0 ? d.get<int64_t>() : 0);
  } else if (value.is_string()) {
    const std::string text = value.get<std::string>();
    const size_t x = text.find('x');
    if (x != std::string::npos) {
      char* end = nullptr;
      dims.push_back(std::strtoll(text.c_str(), &end, 10));
      dims.push_back(end == text.c_str() + x ? std::strtoll(text.c_str() + x + 1, &end, 10) : 0);
      if (*end != '\0') dims.back() = 0;
    }
  }
  if (dims.size() != 2 || dims[0] <= 0 || dims[1] <= 0 || dims[0] > (1 << 20) || dims[1] > (1 << 20))
    q.fail("field " + q.name(key) + " must be two positive block sizes [rows, columns], got " +
           described(value) + "; fix config.json");
  return {dims[0], dims[1]};
}

// compressed-tensors (llm-compressor's format): one or more config_groups, each quantizing some
// modules' weights with a scheme; kvserve reads the float8 ones (format "float-quantized").
Fp8Weights read_compressed_tensors(const std::filesystem::path& path, const Fields& q) {
  const std::string refusal_tail =
      "; kvserve loads FP8 (E4M3) weights - use the model's unquantized or FP8 release";
  const auto format = q.optional_string("format").value_or("float-quantized");
  if (format != "float-quantized" && format != "naive-quantized")
    q.fail("quantization_config.format \"" + format + "\" (compressed-tensors) is not supported" +
           refusal_tail);
  for (const char* key : {"sparsity_config", "transform_config"}) {
    const json* extra = q.find(key);
    if (extra && !(extra->is_object() && (extra->empty() || extra->value("format", json()) == "dense")))
      q.fail("quantization_config." + std::string(key) + " is not supported (" + excerpt(*extra) + ")" +
             refusal_tail);
  }
  const json* groups = q.find("config_groups");
  if (!groups || !groups->is_object() || groups->empty())
    q.fail("quantization_config (compressed-tensors) needs a config_groups object naming the weight scheme");
  std::optional<Fp8Weights> scheme;
  for (const auto& [group_name, group] : groups->items()) {
    const std::string where = "quantization_config.config_groups." + group_name + ".weights";
    if (!group.is_object() || !group.contains("weights") || !group["weights"].is_object())
      q.fail(where + " must be an object describing the weights' quantization; fix config.json");
    const json& w = group["weights"];
    const Fields weights(path, w, where + ".");
    const std::string type = weights.optional_string("type").value_or("int");
    const json* bits = weights.find("num_bits");
    if (type != "float" || !bits || *bits != 8)
      q.fail(where + " quantizes to " + (bits ? excerpt(*bits) : std::string("?")) + "-bit " + type +
             " values, which is not supported" + refusal_tail);
    if (!weights.boolean_or("symmetric", true))
      q.fail(where + " is asymmetric (zero points), which FP8 checkpoints are not; not supported");
    Fp8Weights group_scheme{"compressed-tensors", "_scale", 0, 0};
    const std::string strategy = weights.optional_string("strategy").value_or("tensor");
    if (strategy == "tensor") {
    } else if (strategy == "channel") {
      group_scheme.block_rows = 1;
    } else if (strategy == "group") {
      const json* size = weights.find("group_size");
      if (!size) q.fail(where + " has strategy \"group\" but no group_size; fix config.json");
      group_scheme.block_rows = 1;
      group_scheme.block_cols = weights.positive_int("group_size", *size);
    } else if (strategy == "block") {
      const json* block = weights.find("block_structure");
      if (!block) q.fail(where + " has strategy \"block\" but no block_structure; fix config.json");
      std::tie(group_scheme.block_rows, group_scheme.block_cols) =
          read_block_size(weights, "block_structure", *block);
    } else {
      q.fail(where + ".strategy \"" + strategy +
             "\" is not supported; kvserve reads tensor, channel, group and block scales");
    }
    if (scheme &&
        (scheme->block_rows != group_scheme.block_rows || scheme->block_cols != group_scheme.block_cols))
      q.fail(
          "quantization_config.config_groups quantize modules with different weight strategies, which is "
          "not supported");
    scheme = group_scheme;
  }
  return *scheme;
}

// An FP8 checkpoint's quantization_config (Fp8Weights); any other quantization is refused, naming it,
// before a weight is read.
Fp8Weights read_quantization(const std::filesystem::path& path, const Fields& fields,
                             const json& quantization) {
  if (!quantization.is_object())
    fields.fail("field 'quantization_config' must be an object, got " + described(quantization) +
                "; fix config.json");
  const Fields q(path, quantization, "quantization_config.");
  const std::string method = q.optional_string("quant_method").value_or("");
  if (method == "fp8") {
    // Fine-grained (per block, weight_scale_inv) as Qwen3-*-FP8 and DeepSeek-V3 ship, or one scale
    // per tensor (weight_scale) as older FP8 exports and vLLM's own write.
    if (const auto fmt = q.optional_string("fmt"); fmt && *fmt != "e4m3")
      q.fail("quantization_config.fmt \"" + *fmt + "\" is not supported; kvserve loads E4M3 FP8 weights");
    if (const json* block = q.find("weight_block_size")) {
      const auto [rows, cols] = read_block_size(q, "weight_block_size", *block);
      return {"fp8", "_scale_inv", rows, cols};
    }
    return {"fp8", "_scale", 0, 0};
  }
  if (method == "fbgemm_fp8") return {"fbgemm_fp8", "_scale", 1, 0};  // one scale per output row
  if (method == "compressed-tensors") return read_compressed_tensors(path, q);
  q.fail("the checkpoint is quantized (quant_method \"" + method +
         "\"), which kvserve does not load; it loads weights stored as float32, float16 or bfloat16, and "
         "FP8 checkpoints (quant_method fp8, fbgemm_fp8, or compressed-tensors' float8): use the model's "
         "unquantized or FP8 release");
}

// Options these architectures have in transformers that the engine does not implement: refusing
// them beats generating from a silently different model.
void reject_unsupported_options(const Fields& fields, const ModelConfig& config) {
  // Gemma's activation is read with its other fields (read_gemma).
  if (const auto act = fields.optional_string("hidden_act");
      act && *act != "silu" && !is_gemma(config.architecture)) {
    fields.fail("hidden_act \"" + *act + "\" is unsupported; kvserve implements SwiGLU with \"silu\"");
  }
  // Rotary embedding over part of each head (Phi-4-mini rotates 3/4 of it, GPT-NeoX models 1/4).
  if (const json* partial = fields.find("partial_rotary_factor")) {
    if (!partial->is_number() || partial->get<double>() != 1.0)
      fields.fail("partial_rotary_factor " + excerpt(*partial) +
                  " is unsupported; kvserve rotates the whole of each head (partial_rotary_factor 1.0)");
  }
  if (is_gemma(config.architecture) && fields.boolean_or("use_bidirectional_attention", false)) {
    fields.fail(
        "use_bidirectional_attention is true (an embedding model such as EmbeddingGemma); kvserve "
        "generates text with causal attention only");
  }
  if (config.architecture == "LlamaForCausalLM" || config.architecture == "GraniteForCausalLM" ||
      is_gemma(config.architecture)) {
    for (const char* key : {"attention_bias", "mlp_bias"}) {
      if (fields.boolean_or(key, false)) {
        fields.fail("field '" + std::string(key) + "' is true, which kvserve does not support for " +
                    config.architecture + "; only bias-free projections load");
      }
    }
  }
}

// A multimodal checkpoint whose text model kvserve serves (text in, text out): a vision encoder
// and projector beside a text model of an architecture kvserve runs, configured by text_config.
struct MultimodalCheckpoint {
  const char* architecture;       // the checkpoint's, in config.json
  const char* text_model_type;    // text_config.model_type it takes (none given: this one)
  const char* text_architecture;  // what the text model is served as
  // The text model's config class's defaults, for the fields text_config leaves out.
  json text_defaults;
};

const std::vector<MultimodalCheckpoint>& multimodal_checkpoints() {
  static const std::vector<MultimodalCheckpoint> table = {
      // Gemma 3 4B, 12B, 27B. Gemma3TextConfig's defaults: the released configs leave out
      // vocab_size and the head counts.
      {"Gemma3ForConditionalGeneration",
       "gemma3_text",
       "Gemma3ForCausalLM",
       {{"vocab_size", 262208},
        {"hidden_size", 2304},
        {"intermediate_size", 9216},
        {"num_hidden_layers", 26},
        {"num_attention_heads", 8},
        {"num_key_value_heads", 4},
        {"head_dim", 256}}},
      // Mistral Small 3.1 and 3.2 (24B), Magistral Small 2509. MistralConfig's defaults, which also
      // give the token ids when neither config level does (and a window where text_config has no
      // sliding_window; the released configs say null: none).
      {"Mistral3ForConditionalGeneration",
       "mistral",
       "MistralForCausalLM",
       {{"vocab_size", 32000},
        {"hidden_size", 4096},
        {"intermediate_size", 14336},
        {"num_hidden_layers", 32},
        {"num_attention_heads", 32},
        {"num_key_value_heads", 8},
        {"max_position_embeddings", 131072},
        {"sliding_window", 4096},
        {"bos_token_id", 1},
        {"eos_token_id", 2}}},
  };
  return table;
}

// For a multimodal checkpoint (multimodal_checkpoints()), its text model's config: the config
// class's defaults, then text_config, then the token ids and dtype of the top level (the
// checkpoint's own: transformers' generation config takes the top level's token ids first); as a
// config of the text architecture (and sets `checkpoint_architecture`). `root` itself for any other
// model.
json text_model_config(const std::filesystem::path& path, const json& root,
                       std::string& checkpoint_architecture) {
  const auto arch = root.find("architectures");
  if (arch == root.end() || !arch->is_array() || arch->empty()) return root;
  const auto& table = multimodal_checkpoints();
  const auto kind = std::find_if(table.begin(), table.end(),
                                 [&](const MultimodalCheckpoint& m) { return (*arch)[0] == m.architecture; });
  if (kind == table.end()) return root;
  const auto text_config = root.find("text_config");
  if (text_config == root.end() || !text_config->is_object()) {
    throw ModelLoadError(path.string() + ": " + kind->architecture +
                         " needs a 'text_config' object (its text model's configuration); fix or "
                         "re-download config.json");
  }
  if (const auto type = text_config->find("model_type");
      type != text_config->end() && *type != kind->text_model_type) {
    throw ModelLoadError(path.string() + ": a " + kind->architecture + " whose text model is '" +
                         (type->is_string() ? type->get<std::string>() : type->dump()) +
                         "' (text_config.model_type) is not supported; kvserve serves its '" +
                         kind->text_model_type + "' text model");
  }
  json text = kind->text_defaults;
  for (const auto& [key, value] : text_config->items())
    text[key] = value;
  for (const char* key :
       {"bos_token_id", "eos_token_id", "dtype", "torch_dtype", "quantization_config", "compression_config"})
    if (root.contains(key) && !root[key].is_null()) text[key] = root[key];
  text["architectures"] = {kind->text_architecture};
  checkpoint_architecture = kind->architecture;
  return text;
}

// x rounded to `dtype` (float32, float16 or bfloat16) through float32, as torch rounds a Python
// float it turns into a tensor of that dtype; x is a normal number of those formats.
double round_to_dtype(double x, const std::string& dtype) {
  const int significant_bits = dtype == "bfloat16" ? 8 : dtype == "float16" ? 11 : 24;
  const auto round_bits = [](double v, int bits) {
    int exponent = 0;
    const double mantissa = std::frexp(v, &exponent);                                // [0.5, 1)
    return std::ldexp(std::nearbyint(std::ldexp(mantissa, bits)), exponent - bits);  // ties to even
  };
  return round_bits(round_bits(x, 24), significant_bits);
}

// Which layers use the sliding window: the config's layer_types, else transformers' rule for the
// architecture, `sliding(i)`.
template <typename Rule>
std::vector<bool> read_sliding_layers(const Fields& fields, const ModelConfig& config, Rule sliding_rule) {
  std::vector<bool> sliding(static_cast<size_t>(config.num_layers));
  if (const json* types = fields.find("layer_types")) {
    if (!types->is_array() || types->size() != sliding.size()) {
      fields.fail("field 'layer_types' must list num_hidden_layers = " + std::to_string(config.num_layers) +
                  " entries, got " + described(*types) + "; fix config.json");
    }
    for (size_t i = 0; i < sliding.size(); ++i) {
      const json& type = (*types)[i];
      if (type == "sliding_attention") {
        sliding[i] = true;
      } else if (type != "full_attention") {
        fields.fail("field 'layer_types' entry " + std::to_string(i) + " is " + described(type) +
                    "; it must be \"sliding_attention\" or \"full_attention\"");
      }
    }
    return sliding;
  }
  for (int i = 0; i < config.num_layers; ++i)
    sliding[static_cast<size_t>(i)] = sliding_rule(i);
  return sliding;
}

// A mixture-of-experts model's routed MLP, with transformers' defaults (MixtralConfig,
// Qwen2MoeConfig, Qwen3MoeConfig; the released configs set every field).
MoeConfig read_moe(const Fields& fields, const ModelConfig& config) {
  const bool mixtral = config.architecture == "MixtralForCausalLM";
  const bool qwen2 = config.architecture == "Qwen2MoeForCausalLM";
  MoeConfig moe;
  // Mixtral names the count num_local_experts, the Qwens num_experts; transformers 5 maps either
  // name to the other, so a config it saves may use the other one.
  const char* experts_key = mixtral ? "num_local_experts" : "num_experts";
  const char* alias = mixtral ? "num_experts" : "num_local_experts";
  const std::optional<int> named = fields.optional_positive_int(experts_key);
  const std::optional<int> aliased = fields.optional_positive_int(alias);
  if (named && aliased && *named != *aliased)
    fields.fail(std::string("fields '") + experts_key + "' (" + std::to_string(*named) + ") and '" + alias +
                "' (" + std::to_string(*aliased) + ") disagree on the number of experts; keep one");
  moe.num_experts = named.value_or(aliased.value_or(mixtral ? 8 : qwen2 ? 60 : 128));
  const int default_per_token = mixtral ? 2 : qwen2 ? 4 : 8;
  moe.experts_per_token = fields.optional_positive_int("num_experts_per_tok").value_or(default_per_token);
  if (moe.experts_per_token > moe.num_experts)
    fields.fail("num_experts_per_tok (" + std::to_string(moe.experts_per_token) + ") is more than " +
                experts_key + " (" + std::to_string(moe.num_experts) + "); fix config.json");
  if (mixtral) {  // every layer routed; each expert is an MLP of intermediate_size
    moe.expert_intermediate_size = config.intermediate_size;
    return moe;
  }
  // transformers windows Qwen-MoE layers by rules of their own (Qwen3-MoE has no
  // max_window_layers), and no released model turns the window on.
  if (fields.boolean_or("use_sliding_window", false))
    fields.fail("use_sliding_window is true, which kvserve does not support for " + config.architecture +
                "; set it to false (no released model sets it)");
  moe.expert_intermediate_size =
      fields.optional_positive_int("moe_intermediate_size").value_or(qwen2 ? 1408 : 768);
  moe.normalize_routing_weights = fields.boolean_or("norm_topk_prob", false);
  if (qwen2)
    moe.shared_expert_intermediate_size =
        fields.optional_positive_int("shared_expert_intermediate_size").value_or(5632);
  // Layer i is routed when (i + 1) is a multiple of decoder_sparse_step and mlp_only_layers does not
  // list it; the others have the dense MLP of intermediate_size (is_moe_layer).
  moe.decoder_sparse_step = fields.optional_positive_int("decoder_sparse_step").value_or(1);
  if (const json* dense = fields.find("mlp_only_layers")) {
    if (!dense->is_array())
      fields.fail("field 'mlp_only_layers' must be a list of layer indices, got " + described(*dense) +
                  "; fix config.json");
    for (const json& layer : *dense) {
      if (!layer.is_number_integer() || layer.get<int64_t>() < 0 || layer.get<int64_t>() >= config.num_layers)
        fields.fail("field 'mlp_only_layers' must hold layer indices in [0, num_hidden_layers " +
                    std::to_string(config.num_layers) + "), got " + described(layer) + "; fix config.json");
      moe.dense_layers.push_back(layer.get<int>());
    }
    std::sort(moe.dense_layers.begin(), moe.dense_layers.end());
  }
  return moe;
}

// A soft cap: absent means transformers' default for the architecture, null means none.
std::optional<double> read_softcap(const Fields& fields, const char* key, std::optional<double> fallback) {
  if (fields.is_null(key)) return std::nullopt;
  if (fields.find(key)) return fields.positive_number_or(key, 1.0);
  return fallback;
}

// The Gemma family's fields (after the common ones and the dtype), with transformers' defaults.
void read_gemma(const Fields& fields, ModelConfig& config) {
  const bool gemma2 = config.architecture == "Gemma2ForCausalLM";
  const bool gemma3 = config.architecture == "Gemma3ForCausalLM";
  config.norm_weight_offset = 1.0;
  // The embeddings are scaled by sqrt(hidden_size), which transformers rounds to the weights' dtype
  // (Gemma 7B's sqrt(3072) = 55.43 becomes 55.5 in bfloat16); the checkpoints were trained so.
  config.embedding_multiplier =
      round_to_dtype(std::sqrt(static_cast<double>(config.hidden_size)), config.dtype);
  // Gemma's MLP is GeGLU with the tanh approximation of GELU, which is what hidden_activation names
  // (Gemma 2 and 3 read nothing else). Gemma 1's first configs say only hidden_act "gelu", and the
  // models were trained with the approximation all the same (transformers 4.39 to 4.4x ran them so).
  std::optional<std::string> act = fields.optional_string("hidden_activation");
  if (!act && config.architecture == "GemmaForCausalLM") {
    act = fields.optional_string("hidden_act");
    if (act == "gelu") act = "gelu_pytorch_tanh";
  }
  if (act && *act != "gelu_pytorch_tanh") {
    fields.fail("hidden_activation \"" + *act + "\" is unsupported for " + config.architecture +
                "; kvserve implements Gemma's \"gelu_pytorch_tanh\"");
  }
  config.activation = MlpActivation::kGeluTanh;
  if (!gemma2 && !gemma3) return;

  config.sandwich_norms = true;
  config.attention_multiplier = 1.0 / std::sqrt(fields.positive_number_or("query_pre_attn_scalar", 256.0));
  // A null window means none (transformers then windows no layer); absent, the configs' default.
  if (!fields.is_null("sliding_window"))
    config.sliding_window = fields.optional_positive_int("sliding_window").value_or(4096);
  // Every pattern-th layer, counting from 1, attends to everything: Gemma 2 alternates, Gemma 3 has
  // five windowed layers to one full.
  const int pattern = gemma2 ? 2 : fields.optional_positive_int("sliding_window_pattern").value_or(6);
  config.sliding_layers =
      read_sliding_layers(fields, config, [pattern](int i) { return (i + 1) % pattern != 0; });
  // Gemma 3 configs carry attn_logit_softcapping (null in the released ones), but its attention never
  // applies it: only Gemma 2 caps scores.
  if (gemma2) config.attn_logit_softcapping = read_softcap(fields, "attn_logit_softcapping", 50.0);
  config.final_logit_softcapping =
      read_softcap(fields, "final_logit_softcapping", gemma2 ? std::optional<double>(30.0) : std::nullopt);
  config.qk_norm = gemma3;
}

}  // namespace

ModelConfig load_model_config(const std::filesystem::path& config_json) {
  const json root = read_json_file(config_json);
  if (!root.is_object()) {
    throw ModelLoadError(config_json.string() + ": must hold a JSON object, got " + described(root) +
                         "; fix or re-download config.json");
  }
  ModelConfig config;
  const json text = text_model_config(config_json, root, config.checkpoint_architecture);
  const Fields fields(config_json, text, config.checkpoint_architecture.empty() ? "" : "text_config.");
  config.architecture = read_architecture(fields);
  // Bidirectional embedding models (their config's is_causal false) attend to later tokens too.
  if (const json* causal = fields.find("is_causal"); causal && causal->is_boolean() && !causal->get<bool>())
    fields.fail(
        "is_causal is false (bidirectional attention, as some embedding models use); kvserve's "
        "attention is causal, which would give other embeddings");
  config.vocab_size = fields.required_positive_int("vocab_size");
  config.hidden_size = fields.required_positive_int("hidden_size");
  config.intermediate_size = fields.required_positive_int("intermediate_size");
  config.num_layers = fields.required_positive_int("num_hidden_layers");
  config.num_heads = fields.required_positive_int("num_attention_heads");
  config.num_kv_heads = fields.optional_positive_int("num_key_value_heads").value_or(config.num_heads);
  if (config.num_heads % config.num_kv_heads != 0) {
    fields.fail("num_attention_heads (" + std::to_string(config.num_heads) +
                ") must be a multiple of num_key_value_heads (" + std::to_string(config.num_kv_heads) +
                "); fix config.json");
  }
  if (const auto head_dim = fields.optional_positive_int("head_dim")) {
    config.head_dim = *head_dim;
  } else if (config.architecture == "Qwen3ForCausalLM") {
    config.head_dim = 128;  // transformers' Qwen3Config default, whatever hidden_size / heads is
                            // (Qwen3MoeConfig has none: hidden_size / heads, below)
  } else if (is_gemma(config.architecture)) {
    config.head_dim = 256;  // the Gemma configs' default, likewise
  } else {
    if (config.hidden_size % config.num_heads != 0) {
      fields.fail("hidden_size (" + std::to_string(config.hidden_size) +
                  ") is not divisible by num_attention_heads (" + std::to_string(config.num_heads) +
                  "); set head_dim in config.json");
    }
    config.head_dim = config.hidden_size / config.num_heads;
  }
  if (config.head_dim % 2 != 0) {
    fields.fail("head_dim " + std::to_string(config.head_dim) +
                " is odd; rotary embeddings rotate pairs of dimensions, so it must be even");
  }
  // transformers' defaults where config.json is silent: Phi3Config's differ from the Llama family's.
  const bool phi3 = config.architecture == "Phi3ForCausalLM";
  const bool mixtral = config.architecture == "MixtralForCausalLM";
  const bool gemma = is_gemma(config.architecture);
  config.rms_norm_eps = fields.positive_number_or("rms_norm_eps", phi3 || mixtral ? 1e-5 : 1e-6);
  const bool qwen = is_qwen2(config.architecture) || is_qwen3(config.architecture);
  int default_max_positions = 2048;  // LlamaConfig's and GraniteConfig's
  if (phi3)
    default_max_positions = 4096;
  else if (config.architecture == "Gemma3ForCausalLM" || mixtral)
    default_max_positions = 131072;
  else if (qwen)
    default_max_positions = 32768;
  else if (gemma)
    default_max_positions = 8192;
  config.max_position_embeddings =
      fields.optional_positive_int("max_position_embeddings").value_or(default_max_positions);
  read_rope(config_json, fields, config);  // after max_position_embeddings: longrope reads it
  config.tie_word_embeddings = fields.boolean_or("tie_word_embeddings", gemma);  // Gemma's default: tied
  // Qwen2-MoE's q/k/v biases are a setting (qkv_bias, on unless set false); Qwen2's always there.
  config.qkv_bias = config.architecture == "Qwen2ForCausalLM" ||
                    (config.architecture == "Qwen2MoeForCausalLM" && fields.boolean_or("qkv_bias", true)) ||
                    (is_qwen3(config.architecture) && fields.boolean_or("attention_bias", false));
  config.qk_norm = is_qwen3(config.architecture);
  config.fused_projections = config.architecture == "Phi3ForCausalLM";
  if (config.architecture == "GraniteForCausalLM") {
    // transformers' GraniteConfig defaults, 1.0 each (the attention multiplier too, not
    // 1/sqrt(head_dim)); published Granite configs set all four.
    config.embedding_multiplier = fields.positive_number_or("embedding_multiplier", 1.0);
    config.attention_multiplier = fields.positive_number_or("attention_multiplier", 1.0);
    config.residual_multiplier = fields.positive_number_or("residual_multiplier", 1.0);
    config.logits_scaling = fields.positive_number_or("logits_scaling", 1.0);
  }

  if (is_mistral(config.architecture) || config.architecture == "Phi3ForCausalLM") {
    config.sliding_window = fields.optional_positive_int("sliding_window");
  } else if ((config.architecture == "Qwen2ForCausalLM" || config.architecture == "Qwen3ForCausalLM") &&
             fields.boolean_or("use_sliding_window", false)) {  // (the MoE ones refuse it: read_moe)
    // Qwen windows the layers layer_types names, else those from max_window_layers on (the released
    // models leave use_sliding_window false: without it no layer is windowed, whatever layer_types says).
    if (!fields.is_null("sliding_window"))  // null: no window, as transformers reads it
      config.sliding_window = fields.optional_positive_int("sliding_window").value_or(4096);
    const json* max_window_layers = fields.find("max_window_layers");
    const int first_windowed = max_window_layers && *max_window_layers == 0
                                   ? 0
                                   : fields.optional_positive_int("max_window_layers").value_or(28);
    config.sliding_layers =
        read_sliding_layers(fields, config, [first_windowed](int i) { return i >= first_windowed; });
  }

  if (const json* bos = fields.find("bos_token_id")) {
    config.bos_token_id = fields.token_id("bos_token_id", *bos, config.vocab_size);
  }
  if (const json* eos = fields.find("eos_token_id")) {
    if (eos->is_array()) {
      for (const json& id : *eos)
        config.eos_token_ids.push_back(fields.token_id("eos_token_id", id, config.vocab_size));
    } else {
      config.eos_token_ids.push_back(fields.token_id("eos_token_id", *eos, config.vocab_size));
    }
  }
  read_generation_eos(config_json.parent_path(), config);
  check_sentence_transformers_modules(config_json.parent_path());
  config.dtype = read_dtype(fields);
  if (gemma) read_gemma(fields, config);  // after the dtype, which the embedding scale is rounded to
  reject_unsupported_options(fields, config);
  if (mixtral || config.architecture == "Qwen2MoeForCausalLM" || config.architecture == "Qwen3MoeForCausalLM")
    config.moe = read_moe(fields, config);
  // (compressed-tensors' first releases wrote the same object as compression_config.)
  if (const json* quantization = fields.find("quantization_config"))
    config.fp8_weights = read_quantization(config_json, fields, *quantization);
  else if (const json* compression = fields.find("compression_config"))
    config.fp8_weights = read_quantization(config_json, fields, *compression);
  return config;
}

std::string quantization_summary(const ModelConfig& config) {
  if (!config.fp8_weights) return "";
  const Fp8Weights& w = *config.fp8_weights;
  std::string granularity;
  if (w.block_rows == 0 && w.block_cols == 0)
    granularity = "one scale per tensor";
  else if (w.block_rows == 1 && w.block_cols == 0)
    granularity = "one scale per output channel";
  else if (w.block_rows == 1)
    granularity = "one scale per group of " + std::to_string(w.block_cols) + " columns";
  else
    granularity =
        "one scale per " + std::to_string(w.block_rows) + "x" + std::to_string(w.block_cols) + " block";
  return w.method + " (E4M3 weights, " + granularity + ")";
}

std::string moe_summary(const ModelConfig& config) {
  if (!config.moe) return "";
  const MoeConfig& moe = *config.moe;
  int routed = 0;
  for (int layer = 0; layer < config.num_layers; ++layer)
    routed += is_moe_layer(config, layer);
  std::string out = std::to_string(moe.num_experts) + " experts, " + std::to_string(moe.experts_per_token) +
                    " per token" + (moe.normalize_routing_weights ? "" : " (weights not renormalized)") +
                    ", in " + std::to_string(routed) + " of " + std::to_string(config.num_layers) +
                    " layers (each expert's MLP " + std::to_string(moe.expert_intermediate_size) + " wide";
  if (moe.shared_expert_intermediate_size > 0)
    out += ", a shared expert's " + std::to_string(moe.shared_expert_intermediate_size);
  return out + ")";
}

std::vector<float> rope_inv_freq(const ModelConfig& cfg, bool sliding_rope) {
  const int half = cfg.head_dim / 2;
  std::vector<float> inv(half);
  if (sliding_rope) {
    if (!cfg.sliding_rope_theta)
      throw std::logic_error("rope_inv_freq: the model has one RoPE for all layers");
    for (int i = 0; i < half; ++i)
      inv[i] = static_cast<float>(1.0 / std::pow(*cfg.sliding_rope_theta, (2.0 * i) / cfg.head_dim));
    return inv;
  }
  for (int i = 0; i < half; ++i) {
    // float32 like the published implementations, so positions map to the same angles.
    float f = static_cast<float>(1.0 / std::pow(cfg.rope_theta, (2.0 * i) / cfg.head_dim));
    if (!cfg.longrope_short_factor.empty())
      f = static_cast<float>(
          1.0 / (cfg.longrope_short_factor[i] * std::pow(cfg.rope_theta, (2.0 * i) / cfg.head_dim)));
    if (cfg.rope_scaling && cfg.rope_scaling->type == RopeScaling::Type::kLinear) {
      f = static_cast<float>(f / cfg.rope_scaling->factor);  // positions divided by the factor
    } else if (cfg.rope_scaling) {
      // Llama 3: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
      const RopeScaling& rs = *cfg.rope_scaling;
      const double old_len = rs.original_max_position_embeddings;
      const double wavelen = 2.0 * std::numbers::pi / f;
      const double low_freq_wavelen = old_len / rs.low_freq_factor;
      const double high_freq_wavelen = old_len / rs.high_freq_factor;
      if (wavelen > low_freq_wavelen) {
        f = static_cast<float>(f / rs.factor);
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth =
            (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / rs.factor + smooth * f);
      }
    }
    inv[i] = f;
  }
  return inv;
}

}  // namespace kvserve
