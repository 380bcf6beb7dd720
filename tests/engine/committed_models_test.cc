// The committed tiny models (tests/data/models) load with the shapes their configs imply, and every
// element equals what the file's bytes say, decoded independently of the loader.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "engine/safetensors.h"
#include "tests/engine/model_files_test_util.h"

namespace kvserve {
namespace {

using model_test::read_file;
using model_test::tensor_named;
using nlohmann::json;

const std::filesystem::path kModels = std::filesystem::path(KVSERVE_TEST_DATA) / "models";

// ---- Independent reading of the committed files: the expected values come from the bytes and the
// format definitions, decoded here with plain arithmetic rather than the loader's bit manipulation.

double decode_f16(uint16_t bits) {
  const int exponent = (bits >> 10) & 0x1F;
  const double mantissa = (bits & 0x3FF) / 1024.0;
  EXPECT_NE(exponent, 0x1F) << "random weights hold no inf or NaN";
  const double magnitude =
      exponent == 0 ? std::ldexp(mantissa, -14) : std::ldexp(1.0 + mantissa, exponent - 15);
  return (bits & 0x8000) ? -magnitude : magnitude;
}

double decode_bf16(uint16_t bits) {
  const int exponent = (bits >> 7) & 0xFF;
  const double mantissa = (bits & 0x7F) / 128.0;
  EXPECT_NE(exponent, 0xFF) << "random weights hold no inf or NaN";
  const double magnitude =
      exponent == 0 ? std::ldexp(mantissa, -126) : std::ldexp(1.0 + mantissa, exponent - 127);
  return (bits & 0x8000) ? -magnitude : magnitude;
}

struct FileTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<double> values;
};

std::map<std::string, FileTensor> read_safetensors_independently(const std::filesystem::path& path) {
  const std::string raw = read_file(path);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i)
    header_length = (header_length << 8) | static_cast<uint8_t>(raw[static_cast<size_t>(i)]);
  const json header = json::parse(raw.substr(8, header_length));
  const size_t data_start = 8 + header_length;
  std::map<std::string, FileTensor> out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    FileTensor t{entry.at("dtype").get<std::string>(), entry.at("shape").get<std::vector<int64_t>>(), {}};
    const size_t begin = data_start + entry.at("data_offsets")[0].get<size_t>();
    const size_t end = data_start + entry.at("data_offsets")[1].get<size_t>();
    const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(raw[i])); };
    const size_t width = t.dtype == "F32" ? 4 : 2;
    for (size_t at = begin; at < end; at += width) {
      if (t.dtype == "F32") {
        const uint32_t bits = byte(at) | byte(at + 1) << 8 | byte(at + 2) << 16 | byte(at + 3) << 24;
        float value;
        std::memcpy(&value, &bits, sizeof value);
        t.values.push_back(value);
      } else {
        const auto bits = static_cast<uint16_t>(byte(at) | byte(at + 1) << 8);
        t.values.push_back(t.dtype == "F16" ? decode_f16(bits) : decode_bf16(bits));
      }
    }
    out.emplace(name, std::move(t));
  }
  return out;
}

// Every tensor in the file arrives, with its shape, and every element converts exactly.
void expect_matches_file(const Model& model, const std::string& expected_dtype) {
  const auto file = read_safetensors_independently(model.dir / "model.safetensors");
  for (const auto& [name, expected] : file) {
    SCOPED_TRACE(name);
    EXPECT_EQ(expected.dtype, expected_dtype);
    const Tensor* loaded = tensor_named(model, name);
    ASSERT_NE(loaded, nullptr);
    ASSERT_EQ(loaded->shape, expected.shape);
    ASSERT_EQ(loaded->data.size(), expected.values.size());
    for (size_t i = 0; i < expected.values.size(); ++i) {
      ASSERT_EQ(static_cast<double>(loaded->data[i]), expected.values[i]) << "element " << i;
    }
  }
}

void expect_shape(const Tensor& t, std::vector<int64_t> shape) {
  EXPECT_EQ(t.shape, shape);
  EXPECT_EQ(static_cast<int64_t>(t.data.size()), t.numel());
}

TEST(ModelLoaderCommitted, TinyLlamaTiedFloat16) {
  const Model model = load_model(kModels / "tiny-llama");
  EXPECT_EQ(model.dir, kModels / "tiny-llama");
  EXPECT_EQ(model.config.architecture, "LlamaForCausalLM");
  const ModelWeights& w = model.weights;
  ASSERT_EQ(w.layers.size(), 2u);
  expect_shape(w.embed_tokens, {512, 64});
  EXPECT_TRUE(w.lm_head.data.empty());
  EXPECT_EQ(&w.output_projection(), &w.embed_tokens);
  for (const LayerWeights& l : w.layers) {
    expect_shape(l.q_proj, {64, 64});
    expect_shape(l.k_proj, {64, 64});
    expect_shape(l.o_proj, {64, 64});
    expect_shape(l.gate_proj, {128, 64});
    expect_shape(l.down_proj, {64, 128});
    EXPECT_TRUE(l.q_bias.data.empty());
  }
  expect_matches_file(model, "F16");
}

TEST(ModelLoaderCommitted, TinyLlama3GqaUntiedBfloat16) {
  const Model model = load_model(kModels / "tiny-llama3-gqa");
  const ModelWeights& w = model.weights;
  ASSERT_EQ(w.layers.size(), 2u);
  expect_shape(w.lm_head, {512, 64});
  EXPECT_EQ(&w.output_projection(), &w.lm_head);
  for (const LayerWeights& l : w.layers) {
    expect_shape(l.q_proj, {128, 64});  // 8 heads x head_dim 16, wider than hidden
    expect_shape(l.k_proj, {32, 64});
    expect_shape(l.v_proj, {32, 64});
    expect_shape(l.o_proj, {64, 128});
    expect_shape(l.up_proj, {160, 64});
    expect_shape(l.down_proj, {64, 160});
  }
  expect_matches_file(model, "BF16");
}

TEST(ModelLoaderCommitted, TinyQwen2GqaFloat32WithBiases) {
  const Model model = load_model(kModels / "tiny-qwen2-gqa");
  const ModelWeights& w = model.weights;
  ASSERT_EQ(w.layers.size(), 2u);
  for (const LayerWeights& l : w.layers) {
    expect_shape(l.q_bias, {64});
    expect_shape(l.k_bias, {32});
    expect_shape(l.v_bias, {32});
    expect_shape(l.k_proj, {32, 64});
  }
  expect_shape(w.lm_head, {512, 64});
  expect_matches_file(model, "F32");
}

TEST(ModelLoaderCommitted, TinyQwen3TiedBfloat16WithHeadNormsAndBiases) {
  const Model model = load_model(kModels / "tiny-qwen3");
  EXPECT_EQ(model.config.architecture, "Qwen3ForCausalLM");
  const ModelWeights& w = model.weights;
  ASSERT_EQ(w.layers.size(), 2u);
  EXPECT_EQ(&w.output_projection(), &w.embed_tokens);
  for (const LayerWeights& l : w.layers) {
    expect_shape(l.q_proj, {128, 64});  // 8 heads x head_dim 16
    expect_shape(l.k_proj, {32, 64});
    expect_shape(l.q_bias, {128});
    expect_shape(l.q_norm, {16});  // one weight per head dimension, shared by the heads
    expect_shape(l.k_norm, {16});
  }
  expect_matches_file(model, "BF16");
}

// Phi-3's fused tensors arrive as the separate weights, each its block of rows (q, k, v; gate, up).
TEST(ModelLoaderCommitted, TinyPhi3UntiedBfloat16WithFusedProjections) {
  const Model model = load_model(kModels / "tiny-phi3");
  EXPECT_EQ(model.config.architecture, "Phi3ForCausalLM");
  const ModelWeights& w = model.weights;
  ASSERT_EQ(w.layers.size(), 2u);
  EXPECT_EQ(&w.output_projection(), &w.lm_head);
  const auto file = read_safetensors_independently(model.dir / "model.safetensors");
  for (size_t i = 0; i < w.layers.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i));
    const LayerWeights& l = w.layers[i];
    expect_shape(l.q_proj, {64, 64});  // 4 heads x head_dim 16
    expect_shape(l.k_proj, {32, 64});  // 2 KV heads
    expect_shape(l.v_proj, {32, 64});
    expect_shape(l.gate_proj, {96, 64});
    expect_shape(l.up_proj, {96, 64});
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const auto expect_concatenation = [&](const std::string& fused, std::vector<const Tensor*> parts) {
      SCOPED_TRACE(fused);
      const FileTensor& stored = file.at(p + fused);
      EXPECT_EQ(stored.dtype, "BF16");
      std::vector<double> loaded;
      for (const Tensor* part : parts)
        loaded.insert(loaded.end(), part->data.begin(), part->data.end());
      ASSERT_EQ(loaded.size(), stored.values.size());
      for (size_t k = 0; k < loaded.size(); ++k)
        ASSERT_EQ(loaded[k], stored.values[k]) << "element " << k;
    };
    expect_concatenation("self_attn.qkv_proj.weight", {&l.q_proj, &l.k_proj, &l.v_proj});
    expect_concatenation("mlp.gate_up_proj.weight", {&l.gate_proj, &l.up_proj});
  }
  for (const auto& [name, expected] : file) {
    if (name.ends_with("qkv_proj.weight") || name.ends_with("gate_up_proj.weight")) continue;
    SCOPED_TRACE(name);
    const Tensor* loaded = tensor_named(model, name);
    ASSERT_NE(loaded, nullptr);
    ASSERT_EQ(loaded->shape, expected.shape);
    for (size_t i = 0; i < expected.values.size(); ++i)
      ASSERT_EQ(static_cast<double>(loaded->data[i]), expected.values[i]) << "element " << i;
  }
}

// Gemma: norm weights loaded as stored (offsets from 1: the backends add the 1), untied here.
TEST(ModelLoaderCommitted, TinyGemmaFloat32) {
  const Model model = load_model(kModels / "tiny-gemma");
  EXPECT_EQ(model.config.architecture, "GemmaForCausalLM");
  const ModelWeights& w = model.weights;
  ASSERT_EQ(w.layers.size(), 2u);
  EXPECT_EQ(&w.output_projection(), &w.lm_head);
  for (const LayerWeights& l : w.layers) {
    expect_shape(l.q_proj, {64, 64});  // 4 heads x head_dim 16
    expect_shape(l.k_proj, {16, 64});  // one KV head
    EXPECT_TRUE(l.attn_output_norm.shape.empty()) << "Gemma 1 has two norms a layer";
    EXPECT_TRUE(l.mlp_output_norm.shape.empty());
  }
  expect_matches_file(model, "F32");
}

// Gemma 2: four norms a layer, each in its field.
TEST(ModelLoaderCommitted, TinyGemma2SandwichNormsFloat16) {
  const Model model = load_model(kModels / "tiny-gemma2");
  const ModelWeights& w = model.weights;
  ASSERT_EQ(w.layers.size(), 2u);
  for (const LayerWeights& l : w.layers) {
    expect_shape(l.attn_output_norm, {64});
    expect_shape(l.mlp_norm, {64});
    expect_shape(l.mlp_output_norm, {64});
  }
  expect_matches_file(model, "F16");
}

// Gemma 3: q/k norms over head_dim 32 (heads x head_dim = 128, wider than hidden), tied.
TEST(ModelLoaderCommitted, TinyGemma3TiedBfloat16WithHeadNorms) {
  const Model model = load_model(kModels / "tiny-gemma3");
  const ModelWeights& w = model.weights;
  ASSERT_EQ(w.layers.size(), 2u);
  EXPECT_EQ(&w.output_projection(), &w.embed_tokens);
  for (const LayerWeights& l : w.layers) {
    expect_shape(l.q_proj, {128, 64});
    expect_shape(l.q_norm, {32});
    expect_shape(l.k_norm, {32});
    expect_shape(l.mlp_output_norm, {64});
  }
  expect_matches_file(model, "BF16");
}

// A multimodal checkpoint (Gemma 3 4B and larger, Mistral Small 3.1 / 3.2): the committed tiny
// model `name` rewritten as a `checkpoint` one (its config nested in text_config of model type
// `text_model_type`, with the token ids and dtype at the top; its tensors under the text model's
// prefix of either transformers era, a vision tower and projector beside them) loads as the same
// text model, every value equal, the vision tensors skipped.
void expect_multimodal_checkpoint_loads_text_model(const std::string& name, const std::string& checkpoint,
                                                   const std::string& text_model_type,
                                                   const std::string& text_architecture) {
  const Model text_only = load_model(kModels / name);
  json text_config = json::parse(read_file(kModels / name / "config.json"));
  json config = {{"architectures", {checkpoint}},
                 {"eos_token_id", text_config["eos_token_id"]},
                 {"bos_token_id", text_config["bos_token_id"]},
                 {"torch_dtype", text_config["torch_dtype"]},
                 {"image_token_index", 511},
                 {"vision_config", {{"hidden_size", 16}, {"model_type", "siglip_vision_model"}}}};
  for (const char* key : {"architectures", "eos_token_id", "bos_token_id", "torch_dtype", "dtype"})
    text_config.erase(key);
  text_config["model_type"] = text_model_type;
  if (!text_config.contains("sliding_window")) text_config["sliding_window"] = nullptr;  // as released
  config["text_config"] = text_config;
  const SafetensorsFile file(kModels / name / "model.safetensors");
  struct Layout {
    std::string prefix, lm_head, vision_prefix;
  };
  for (const Layout& layout : {Layout{"language_model.model.", "language_model.lm_head.weight", ""},
                               Layout{"model.language_model.", "lm_head.weight", "model."}}) {
    const std::string& prefix = layout.prefix;
    const std::string& vision_prefix = layout.vision_prefix;
    SCOPED_TRACE(prefix);
    std::vector<model_test::RawTensor> tensors;
    for (const SafetensorsTensor& t : file.tensors()) {
      ASSERT_TRUE(t.name.starts_with("model.") || t.name == "lm_head.weight") << t.name;
      tensors.push_back({t.name == "lm_head.weight" ? layout.lm_head : prefix + t.name.substr(6),
                         safetensors_dtype_name(t.dtype), t.shape,
                         std::string(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size())});
    }
    tensors.push_back({vision_prefix + "vision_tower.vision_model.post_layernorm.weight",
                       "BF16",
                       {16},
                       std::string(32, '\0')});
    tensors.push_back({vision_prefix + "multi_modal_projector.mm_input_projection_weight",
                       "BF16",
                       {16, 64},
                       std::string(2048, '\0')});
    const model_test::TempDir dir;
    model_test::write_file(dir / "config.json", config.dump(2));
    model_test::write_file(dir / "tokenizer.model", read_file(kModels / name / "tokenizer.model"));
    model_test::write_file(dir / "model.safetensors", model_test::safetensors_bytes(tensors));

    const Model multimodal = load_model(dir.path());
    EXPECT_EQ(multimodal.config.architecture, text_architecture);
    EXPECT_EQ(multimodal.config.checkpoint_architecture, checkpoint);
    EXPECT_EQ(multimodal.config.sliding_layers, text_only.config.sliding_layers);
    EXPECT_EQ(multimodal.config.eos_token_ids, text_only.config.eos_token_ids);
    EXPECT_EQ(multimodal.config.dtype, text_only.config.dtype);
    EXPECT_EQ(multimodal.config.sliding_window, text_only.config.sliding_window);
    EXPECT_EQ(multimodal.config.tie_word_embeddings, text_only.config.tie_word_embeddings);
    EXPECT_DOUBLE_EQ(multimodal.config.rope_theta, text_only.config.rope_theta);
    EXPECT_DOUBLE_EQ(multimodal.config.embedding_multiplier, text_only.config.embedding_multiplier);
    std::vector<const Tensor*> a, b;
    for_each_tensor(text_only.weights, [&](const Tensor& t) { a.push_back(&t); });
    for_each_tensor(multimodal.weights, [&](const Tensor& t) { b.push_back(&t); });
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i]->shape, b[i]->shape) << "tensor " << i;
      EXPECT_EQ(a[i]->data, b[i]->data) << "tensor " << i;
    }

    // A missing text tensor is named as the checkpoint names it.
    // (The first is the embedding or, untied, the output projection; either is required.)
    const std::string missing = tensors.front().name;
    ASSERT_TRUE(missing.starts_with(prefix) || missing == layout.lm_head) << missing;
    tensors.erase(tensors.begin());
    model_test::write_file(dir / "model.safetensors", model_test::safetensors_bytes(tensors));
    EXPECT_TRUE(model_test::contains_all(model_test::model_load_error([&] { load_model(dir.path()); }),
                                         {"'" + missing + "' is missing"}));
  }
}

TEST(ModelLoaderCommitted, TinyGemma3InAMultimodalCheckpointLoadsItsTextModel) {
  expect_multimodal_checkpoint_loads_text_model("tiny-gemma3", "Gemma3ForConditionalGeneration",
                                                "gemma3_text", "Gemma3ForCausalLM");
}

// A Llama is a Mistral without a sliding window: tiny-llama3-gqa (untied, as Mistral Small is)
// stands in for Mistral Small 3.1's text model.
TEST(ModelLoaderCommitted, TinyLlamaAsAMistral3CheckpointLoadsItsTextModel) {
  expect_multimodal_checkpoint_loads_text_model("tiny-llama3-gqa", "Mistral3ForConditionalGeneration",
                                                "mistral", "MistralForCausalLM");
}

// An embedding model's checkpoint (as sentence-transformers saves Qwen3-Embedding, or e5-mistral
// with its architecture named as the base model, "MistralModel"): the base model's tensors without
// "model." and no lm_head. Tied (tiny-qwen3) it is the same model; untied (tiny-llama3-gqa, named
// "LlamaModel") it loads every other tensor as the original has it, with the embeddings standing
// in for the missing LM head, and is marked embedding_only.
TEST(ModelLoaderCommitted, ABaseModelSavedWithoutItsLmHeadLoadsForEmbeddings) {
  for (const std::string name : {"tiny-qwen3", "tiny-llama3-gqa"}) {
    SCOPED_TRACE(name);
    const Model original = load_model(kModels / name);
    const SafetensorsFile file(kModels / name / "model.safetensors");
    std::vector<model_test::RawTensor> tensors;
    for (const SafetensorsTensor& t : file.tensors()) {
      if (t.name == "lm_head.weight") continue;
      ASSERT_TRUE(t.name.starts_with("model.")) << t.name;
      tensors.push_back({t.name.substr(6), safetensors_dtype_name(t.dtype), t.shape,
                         std::string(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size())});
    }
    const model_test::TempDir dir;
    const bool untied = !original.config.tie_word_embeddings;
    json config = json::parse(read_file(kModels / name / "config.json"));
    if (untied) config["architectures"] = {"LlamaModel"};
    model_test::write_file(dir / "config.json", config.dump(2));
    model_test::write_file(dir / "model.safetensors", model_test::safetensors_bytes(tensors));
    const Model bare = load_model(dir.path());
    EXPECT_EQ(bare.config.architecture, original.config.architecture);
    EXPECT_EQ(bare.config.embedding_only, untied);
    EXPECT_TRUE(bare.config.tie_word_embeddings);
    EXPECT_EQ(bare.weights.embed_tokens.data, original.weights.embed_tokens.data);
    EXPECT_EQ(bare.weights.final_norm.data, original.weights.final_norm.data);
    ASSERT_EQ(bare.weights.layers.size(), original.weights.layers.size());
    EXPECT_EQ(bare.weights.layers.back().down_proj.data, original.weights.layers.back().down_proj.data);
    EXPECT_TRUE(bare.weights.lm_head.shape.empty());
  }
}

// The FP8 copies (scripts/make_fp8_model.py) hold their sources' weights within E4M3's rounding:
// each stored value q is w / scale rounded to 3 mantissa bits, so q * scale is within 2^-4 of w
// relative (half a unit in the last place), or 2^-10 * scale absolute below E4M3's smallest normal
// (2^-6). Their quantization configs are read as the format each copy was written in.
TEST(ModelLoaderCommitted, Fp8CopiesHoldTheirSourcesWeightsWithinE4M3Rounding) {
  struct Copy {
    const char* fp8;
    const char* source;
    const char* method;
    int64_t block_rows, block_cols;
  };
  for (const Copy& copy : {Copy{"tiny-qwen3-fp8", "tiny-qwen3", "fp8", 32, 32},
                           Copy{"tiny-phi3-fp8", "tiny-phi3", "compressed-tensors", 24, 40},
                           Copy{"tiny-llama3-gqa-fp8", "tiny-llama3-gqa", "compressed-tensors", 1, 0}}) {
    SCOPED_TRACE(copy.fp8);
    const Model fp8 = load_model(kModels / copy.fp8, WeightLoading::kDeferred);
    const Model source = load_model(kModels / copy.source);
    ASSERT_TRUE(fp8.config.fp8_weights);
    EXPECT_EQ(fp8.config.fp8_weights->method, copy.method);
    EXPECT_EQ(fp8.config.fp8_weights->block_rows, copy.block_rows);
    EXPECT_EQ(fp8.config.fp8_weights->block_cols, copy.block_cols);
    int quantized = 0;
    for_each_tensor(fp8.weights, [&](const Tensor& t) {
      if (t.shape.empty() || !t.mapped->fp8_scales) return;
      ++quantized;
    });
    EXPECT_EQ(quantized, 2 * 7) << "every layer's q, k, v, o, gate, up and down projections";
    Model host = fp8;
    materialize_weights(host);
    for (size_t layer = 0; layer < 2; ++layer) {
      const LayerWeights& got = host.weights.layers[layer];
      const LayerWeights& want = source.weights.layers[layer];
      for (auto weight :
           {&LayerWeights::q_proj, &LayerWeights::k_proj, &LayerWeights::v_proj, &LayerWeights::o_proj,
            &LayerWeights::gate_proj, &LayerWeights::up_proj, &LayerWeights::down_proj}) {
        const Tensor& g = got.*weight;
        const Tensor& w = want.*weight;
        ASSERT_EQ(g.data.size(), w.data.size());
        // The largest scale of the tensor bounds the subnormal term for every block.
        float max_abs = 0;
        for (float x : w.data)
          max_abs = std::max(max_abs, std::fabs(x));
        const double max_scale = max_abs / 448.0 * 1.01;  // BF16-stored scales round up to 2^-8
        int changed = 0;
        for (size_t i = 0; i < g.data.size(); ++i) {
          const double error = std::fabs(static_cast<double>(g.data[i]) - w.data[i]);
          ASSERT_LE(error, std::max(std::fabs(w.data[i]) * 0x1p-4, max_scale * 0x1p-10) * 1.01)
              << "layer " << layer << " element " << i << ": " << g.data[i] << " for " << w.data[i];
          changed += g.data[i] != w.data[i];
        }
        EXPECT_GT(changed, 0) << "quantization rounds some weights";
      }
    }
    // The rest is copied as it was.
    EXPECT_EQ(host.weights.embed_tokens.data, source.weights.embed_tokens.data);
    EXPECT_EQ(host.weights.layers[1].input_norm.data, source.weights.layers[1].input_norm.data);
    EXPECT_EQ(host.weights.output_projection().data, source.weights.output_projection().data);
  }
}

// The FP8 copy of tiny-qwen3-moe quantizes every expert's projections (and the dense layer's, and
// the attention's), not the routers, as the published Qwen3-*-A*B-FP8 checkpoints; each expert's
// weights are its source's within E4M3's rounding (relative 2^-4, or the subnormal step).
TEST(ModelLoaderCommitted, TheMoeFp8CopyQuantizesTheExpertsNotTheRouters) {
  const Model fp8 = load_model(kModels / "tiny-qwen3-moe-fp8", WeightLoading::kDeferred);
  const Model source = load_model(kModels / "tiny-qwen3-moe");
  ASSERT_TRUE(fp8.config.moe);
  int quantized = 0;
  for_each_tensor(fp8.weights, [&](const Tensor& t) {
    if (!t.shape.empty() && t.mapped->fp8_scales) ++quantized;
  });
  // 3 layers' q, k, v, o; 2 routed layers' 8 experts' gate, up, down; the dense layer's gate, up, down.
  EXPECT_EQ(quantized, 3 * 4 + 2 * 8 * 3 + 3);
  EXPECT_FALSE(fp8.weights.layers[0].router.mapped->fp8_scales) << "the router stays unquantized";
  Model host = fp8;
  materialize_weights(host);
  EXPECT_EQ(host.weights.layers[2].router.data, source.weights.layers[2].router.data);
  const MlpWeights& got = host.weights.layers[2].experts.at(7);
  const MlpWeights& want = source.weights.layers[2].experts.at(7);
  for (auto weight : {&MlpWeights::gate_proj, &MlpWeights::up_proj, &MlpWeights::down_proj}) {
    const std::vector<float>& g = (got.*weight).data;
    const std::vector<float>& w = (want.*weight).data;
    ASSERT_EQ(g.size(), w.size());
    float max_abs = 0;
    for (float x : w)
      max_abs = std::max(max_abs, std::fabs(x));
    for (size_t i = 0; i < g.size(); ++i)
      ASSERT_LE(std::fabs(g[i] - w[i]),
                std::max(std::fabs(w[i]) * 0x1p-4, max_abs / 448.0 * 1.01 * 0x1p-10) * 1.01)
          << "element " << i;
  }
}

}  // namespace
}  // namespace kvserve
