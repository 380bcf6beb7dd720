// Builders for model files written at test time: temporary directories, safetensors bytes written
// by hand (independently of engine/safetensors.cc, so the reader is checked against the format,
// not against itself), and error-message checks. Own namespace: other suites keep helpers of the
// same names in kvserve::testing, and inline functions that collide across files break silently.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model.h"

namespace kvserve::model_test {

// A fresh directory under the system temp folder, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kvserve-model-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <typename T>
std::string raw_bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

inline std::string u64_le(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[static_cast<size_t>(i)] = static_cast<char>((value >> (8 * i)) & 0xFF);
  return out;
}

// 8-byte length, the header text padded with spaces to a multiple of 8, then `data` as given.
inline std::string safetensors_bytes(const std::string& header_text, std::string_view data) {
  std::string header = header_text;
  header.append((8 - header.size() % 8) % 8, ' ');
  return u64_le(header.size()) + header + std::string(data);
}

struct RawTensor {
  std::string name;
  std::string dtype;  // as the header spells it: "F32", "F16", "BF16", "I32", ...
  std::vector<int64_t> shape;
  std::string bytes;
};

// A well-formed file: tensors laid out back to back in the order given.
inline std::string safetensors_bytes(const std::vector<RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  return safetensors_bytes(header.dump(), data);
}

inline RawTensor f32_tensor(std::string name, std::vector<int64_t> shape, float first = 0.0f) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  std::vector<float> values(static_cast<size_t>(n));
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = first + 0.25f * static_cast<float>(i);
  return {std::move(name), "F32", std::move(shape), raw_bytes(values)};
}

// Runs `load`, which must throw ModelLoadError, and returns its message (empty after a failure).
template <typename Load>
std::string model_load_error(Load&& load) {
  try {
    load();
  } catch (const ModelLoadError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a kvserve::ModelLoadError, nothing was thrown";
  return "";
}

inline ::testing::AssertionResult contains_all(const std::string& message,
                                               std::initializer_list<std::string> parts) {
  for (const std::string& part : parts) {
    if (message.find(part) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks \"" << part << "\":\n  " << message;
    }
  }
  return ::testing::AssertionSuccess();
}

// Hugging Face tensor name -> the loaded tensor, spelled out here rather than taken from the loader.
inline const Tensor* tensor_named(const Model& model, const std::string& name) {
  const ModelWeights& w = model.weights;
  if (name == "model.embed_tokens.weight") return &w.embed_tokens;
  if (name == "model.norm.weight") return &w.final_norm;
  if (name == "lm_head.weight") return &w.lm_head;
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return nullptr;
  const size_t dot = name.find('.', prefix.size());
  const LayerWeights& l = w.layers.at(std::stoul(name.substr(prefix.size(), dot - prefix.size())));
  const std::map<std::string, const Tensor*> by_suffix = {
      {"input_layernorm.weight", &l.input_norm},
      {"self_attn.q_proj.weight", &l.q_proj},
      {"self_attn.k_proj.weight", &l.k_proj},
      {"self_attn.v_proj.weight", &l.v_proj},
      {"self_attn.q_proj.bias", &l.q_bias},
      {"self_attn.k_proj.bias", &l.k_bias},
      {"self_attn.v_proj.bias", &l.v_bias},
      {"self_attn.q_norm.weight", &l.q_norm},
      {"self_attn.k_norm.weight", &l.k_norm},
      {"self_attn.o_proj.weight", &l.o_proj},
      // Gemma 2/3 ("sandwich" norms): post_attention_layernorm normalizes the attention's output.
      {"post_attention_layernorm.weight", model.config.sandwich_norms ? &l.attn_output_norm : &l.mlp_norm},
      {"pre_feedforward_layernorm.weight", &l.mlp_norm},
      {"post_feedforward_layernorm.weight", &l.mlp_output_norm},
      {"mlp.gate_proj.weight", &l.gate_proj},
      {"mlp.up_proj.weight", &l.up_proj},
      {"mlp.down_proj.weight", &l.down_proj},
  };
  const std::string suffix = name.substr(dot + 1);
  if (const auto it = by_suffix.find(suffix); it != by_suffix.end()) return it->second;
  // A mixture-of-experts layer: Qwen-MoE's names under mlp., Mixtral's under block_sparse_moe.
  const std::map<std::string, const Tensor*> moe_by_suffix = {
      {"mlp.gate.weight", &l.router},
      {"block_sparse_moe.gate.weight", &l.router},
      {"mlp.shared_expert.gate_proj.weight", &l.shared_expert.gate_proj},
      {"mlp.shared_expert.up_proj.weight", &l.shared_expert.up_proj},
      {"mlp.shared_expert.down_proj.weight", &l.shared_expert.down_proj},
      {"mlp.shared_expert_gate.weight", &l.shared_expert_gate},
  };
  if (const auto it = moe_by_suffix.find(suffix); it != moe_by_suffix.end()) return it->second;
  for (const std::string block : {"mlp.experts.", "block_sparse_moe.experts."}) {
    if (suffix.rfind(block, 0) != 0) continue;
    const size_t expert_dot = suffix.find('.', block.size());
    const MlpWeights& e = l.experts.at(std::stoul(suffix.substr(block.size(), expert_dot - block.size())));
    const std::map<std::string, const Tensor*> expert_by_suffix = {
        {"gate_proj.weight", &e.gate_proj}, {"up_proj.weight", &e.up_proj},
        {"down_proj.weight", &e.down_proj}, {"w1.weight", &e.gate_proj},
        {"w3.weight", &e.up_proj},          {"w2.weight", &e.down_proj}};
    const auto it = expert_by_suffix.find(suffix.substr(expert_dot + 1));
    return it == expert_by_suffix.end() ? nullptr : it->second;
  }
  return nullptr;
}

}  // namespace kvserve::model_test
