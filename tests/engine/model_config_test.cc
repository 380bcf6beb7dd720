#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "tests/engine/model_files_test_util.h"

namespace kvserve {
namespace {

using model_test::contains_all;
using model_test::model_load_error;
using model_test::TempDir;
using model_test::write_file;
using nlohmann::json;

const std::filesystem::path kModels = std::filesystem::path(KVSERVE_TEST_DATA) / "models";

TEST(ModelConfigCommitted, TinyLlama) {
  const ModelConfig c = load_model_config(kModels / "tiny-llama" / "config.json");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 128);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.max_position_embeddings, 1024);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.bos_token_id, std::optional<TokenId>(1));
  EXPECT_EQ(c.eos_token_ids, std::vector<TokenId>{2});
  EXPECT_EQ(c.dtype, "float16");
}

TEST(ModelConfigCommitted, TinyLlama3Gqa) {
  const ModelConfig c = load_model_config(kModels / "tiny-llama3-gqa" / "config.json");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 160);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);  // from config.json: hidden / heads would be 8
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling->low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling->high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 128);
  EXPECT_EQ(c.max_position_embeddings, 1024);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.dtype, "bfloat16");
}

TEST(ModelConfigCommitted, TinyQwen2Gqa) {
  const ModelConfig c = load_model_config(kModels / "tiny-qwen2-gqa" / "config.json");
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1000000.0);
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.dtype, "float32");
}

TEST(ModelConfigCommitted, TinyQwen3) {
  const ModelConfig c = load_model_config(kModels / "tiny-qwen3" / "config.json");
  EXPECT_EQ(c.architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.qkv_bias);  // attention_bias: true
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.dtype, "bfloat16");
}

TEST(ModelConfigCommitted, TinyPhi3) {
  const ModelConfig c = load_model_config(kModels / "tiny-phi3" / "config.json");
  EXPECT_EQ(c.architecture, "Phi3ForCausalLM");
  EXPECT_TRUE(c.fused_projections);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.sliding_window, std::optional<int>(8));
  EXPECT_EQ(attention_window(c, 0), 8);
  ASSERT_EQ(c.longrope_short_factor.size(), 8u);  // head_dim / 2
  EXPECT_EQ(c.longrope_short_factor[0], 1.1597);
  EXPECT_EQ(c.longrope_original_max_position_embeddings, 256);
  EXPECT_DOUBLE_EQ(c.longrope_attention_factor, std::sqrt(1.25)) << "sqrt(1 + ln(1024/256) / ln(256))";
  EXPECT_EQ(max_supported_len(c), 256) << "longrope's original length (the window does not bound it)";
  EXPECT_EQ(c.dtype, "bfloat16");
}

TEST(ModelConfigCommitted, TinyGranite) {
  const ModelConfig c = load_model_config(kModels / "tiny-granite" / "config.json");
  EXPECT_EQ(c.architecture, "GraniteForCausalLM");
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_DOUBLE_EQ(c.embedding_multiplier, 12.0);
  EXPECT_EQ(c.attention_multiplier, std::optional<double>(0.125));
  EXPECT_EQ(attention_scale(c), 0.125f) << "not 1/sqrt(head_dim) = 0.25";
  EXPECT_DOUBLE_EQ(c.residual_multiplier, 0.22);
  EXPECT_DOUBLE_EQ(c.logits_scaling, 2.0);
  EXPECT_FALSE(c.fused_projections);
  EXPECT_EQ(c.dtype, "float16");
}

// Writes config.json variants into a temporary directory.
class ModelConfigTest : public ::testing::Test {
 protected:
  static json minimal(const std::string& architecture = "LlamaForCausalLM") {
    return {{"architectures", {architecture}}, {"vocab_size", 100},      {"hidden_size", 32},
            {"intermediate_size", 48},         {"num_hidden_layers", 3}, {"num_attention_heads", 4}};
  }

  ModelConfig load(const json& config) { return load_text(config.dump(2)); }
  ModelConfig load_text(const std::string& text) {
    write_file(path(), text);
    return load_model_config(path());
  }

  // The ModelLoadError message for `config`; it must start with the file's path.
  std::string error(const json& config) { return error_text(config.dump(2)); }
  std::string error_text(const std::string& text) {
    const std::string message = model_load_error([&] { load_text(text); });
    EXPECT_TRUE(contains_all(message, {path().string() + ": "}));
    return message;
  }

  std::filesystem::path path() const { return dir_ / "config.json"; }

  TempDir dir_;
};

TEST(ModelConfigCommitted, TinyGemma3) {
  const ModelConfig c = load_model_config(kModels / "tiny-gemma3" / "config.json");
  EXPECT_EQ(c.architecture, "Gemma3ForCausalLM");
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.sliding_window, std::optional<int>(6));
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{true, false}));
  EXPECT_EQ(c.sliding_rope_theta, std::optional<double>(10000.0));
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->type, RopeScaling::Type::kLinear);
  EXPECT_FLOAT_EQ(attention_scale(c), 1.0f / std::sqrt(24.0f));
  EXPECT_DOUBLE_EQ(c.embedding_multiplier, 8.0);
  EXPECT_DOUBLE_EQ(c.norm_weight_offset, 1.0);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.sandwich_norms);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_ids, std::vector<TokenId>{2});
}

TEST_F(ModelConfigTest, DefaultsForAbsentFields) {
  const ModelConfig c = load(minimal());
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_EQ(c.dtype, "float32");
  EXPECT_FALSE(c.sliding_window.has_value());
}

TEST_F(ModelConfigTest, NullMeansDefault) {
  json config = minimal();
  config["num_key_value_heads"] = nullptr;
  config["head_dim"] = nullptr;
  config["rope_scaling"] = nullptr;
  config["bos_token_id"] = nullptr;
  const ModelConfig c = load(config);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_FALSE(c.bos_token_id.has_value());
}

TEST_F(ModelConfigTest, EosListAndBos) {
  json config = minimal();
  config["eos_token_id"] = {2, 7, 99};
  config["bos_token_id"] = 0;
  const ModelConfig c = load(config);
  EXPECT_EQ(c.eos_token_ids, (std::vector<TokenId>{2, 7, 99}));
  EXPECT_EQ(c.bos_token_id, std::optional<TokenId>(0));
}

TEST_F(ModelConfigTest, GenerationConfigAddsEndOfTurnTokens) {
  json config = minimal();
  config["eos_token_id"] = 2;
  write_file(dir_ / "generation_config.json", R"({"eos_token_id": [7, 2, 9], "temperature": 0.6})");
  EXPECT_EQ(load(config).eos_token_ids, (std::vector<TokenId>{2, 7, 9}));
  write_file(dir_ / "generation_config.json", R"({"eos_token_id": 5})");
  EXPECT_EQ(load(config).eos_token_ids, (std::vector<TokenId>{2, 5}));
  write_file(dir_ / "generation_config.json", R"({"do_sample": true})");
  EXPECT_EQ(load(config).eos_token_ids, (std::vector<TokenId>{2}));
  const auto gen_error = [&](const std::string& text) {
    write_file(dir_ / "generation_config.json", text);
    return model_load_error([&] { load(config); });
  };
  EXPECT_TRUE(contains_all(gen_error(R"({"eos_token_id": [2, 100]})"),
                           {"generation_config.json", "'eos_token_id'", "[0, vocab_size 100)"}));
  EXPECT_TRUE(contains_all(gen_error("{not json"), {"generation_config.json", "not valid JSON"}));
  EXPECT_TRUE(contains_all(gen_error("[1]"), {"generation_config.json", "JSON object"}));
}

TEST_F(ModelConfigTest, MistralSlidingWindow) {
  json config = minimal("MistralForCausalLM");
  config["sliding_window"] = 4096;  // Mistral-7B-v0.1: a window of 4096 over 32768 positions
  config["max_position_embeddings"] = 32768;
  EXPECT_EQ(load(config).sliding_window, std::optional<int>(4096));
  EXPECT_EQ(attention_window(load(config), 0), 4096);
  EXPECT_EQ(max_supported_len(load(config)), 32768) << "windowed attention serves the trained length";
  config["sliding_window"] = nullptr;
  EXPECT_FALSE(load(config).sliding_window.has_value());
  EXPECT_EQ(attention_window(load(config), 0), 0);
  config["sliding_window"] = "4096";
  EXPECT_TRUE(contains_all(error(config), {"'sliding_window'", "positive integer", "string"}));
}

// Phi-3 configs as published: the 4k models window their attention (2047 tokens), Phi-4 does not;
// the 128k models' "longrope" scaling is read for the original length; Phi-4-mini's partial rotary
// factor is refused by name.
TEST_F(ModelConfigTest, Phi3FusedProjectionsWindowAndRefusedOptions) {
  json config = minimal("Phi3ForCausalLM");
  const ModelConfig defaults = load(config);  // Phi3Config's defaults, not the Llama family's
  EXPECT_DOUBLE_EQ(defaults.rms_norm_eps, 1e-5);
  EXPECT_EQ(defaults.max_position_embeddings, 4096);
  config["sliding_window"] = 2047;
  config["max_position_embeddings"] = 4096;
  config["original_max_position_embeddings"] = 4096;
  config["rope_scaling"] = nullptr;
  ModelConfig c = load(config);
  EXPECT_TRUE(c.fused_projections);
  EXPECT_EQ(attention_window(c, 1), 2047);
  EXPECT_EQ(max_supported_len(c), 4096);
  config["sliding_window"] = nullptr;
  c = load(config);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(max_supported_len(c), 4096);
  EXPECT_FALSE(load(minimal()).fused_projections) << "Llama checkpoints keep q, k, v apart";

  // Phi-3-mini-128k's shape: 131072 positions stretched from 4096, head_dim 8 here (4 factors each).
  config["max_position_embeddings"] = 131072;
  config["sliding_window"] = 2047;
  config["rope_scaling"] = {
      {"type", "longrope"}, {"short_factor", {1.0, 1.5, 2.0, 3.0}}, {"long_factor", {2.0, 4.0, 8.0, 16.0}}};
  c = load(config);
  EXPECT_EQ(c.longrope_short_factor, (std::vector<double>{1.0, 1.5, 2.0, 3.0}));
  EXPECT_EQ(c.longrope_original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.longrope_attention_factor, std::sqrt(1.0 + std::log(32.0) / std::log(4096.0)));
  EXPECT_FALSE(c.rope_scaling.has_value()) << "not Llama 3's";
  EXPECT_EQ(max_supported_len(c), 4096) << "past the original length the long factors apply";
  config["sliding_window"] = 262144;  // as the 128k models have it
  EXPECT_EQ(max_supported_len(load(config)), 4096);
  const std::vector<float> inv = rope_inv_freq(load(config));
  ASSERT_EQ(inv.size(), 4u);
  for (int i = 0; i < 4; ++i)
    EXPECT_FLOAT_EQ(inv[i], static_cast<float>(1.0 / ((std::vector<double>{1.0, 1.5, 2.0, 3.0})[i] *
                                                      std::pow(10000.0, 2.0 * i / 8))));
  EXPECT_FLOAT_EQ(attention_scale(load(config)),
                  1.0f / std::sqrt(8.0f) * static_cast<float>(1.0 + std::log(32.0) / std::log(4096.0)));
  config["rope_scaling"]["type"] = "su";  // its older name
  EXPECT_EQ(load(config).longrope_original_max_position_embeddings, 4096);
  config["original_max_position_embeddings"] = 8192;
  EXPECT_EQ(max_supported_len(load(config)), 8192) << "the config's original length";
  config.erase("original_max_position_embeddings");
  EXPECT_EQ(max_supported_len(load(config)), 4096) << "Phi3Config's default original length";
  config["architectures"] = {"LlamaForCausalLM"};
  EXPECT_TRUE(contains_all(error(config), {"\"su\"", "unsupported for LlamaForCausalLM", "Phi3ForCausalLM"}));
  config["architectures"] = {"Phi3ForCausalLM"};
  config["rope_scaling"]["attention_factor"] = 1.5;
  EXPECT_DOUBLE_EQ(load(config).longrope_attention_factor, 1.5);
  config["rope_scaling"]["short_factor"] = {1.0, 2.0};
  EXPECT_TRUE(contains_all(error(config), {"'rope_scaling.short_factor'", "head_dim / 2 = 4"}));
  config["rope_scaling"]["short_factor"] = {1.0, 2.0, 0.0, 1.0};
  EXPECT_TRUE(contains_all(error(config), {"'rope_scaling.short_factor'", "positive number"}));
  config["rope_scaling"].erase("long_factor");
  config["rope_scaling"]["short_factor"] = {1.0, 1.5, 2.0, 3.0};
  EXPECT_TRUE(contains_all(error(config), {"longrope", "'rope_scaling.long_factor'"}));
  config["rope_scaling"] = nullptr;
  config["max_position_embeddings"] = 4096;
  config["sliding_window"] = nullptr;
  config["partial_rotary_factor"] = 0.75;
  EXPECT_TRUE(contains_all(error(config), {"partial_rotary_factor 0.75", "unsupported", "1.0"}));
  config["partial_rotary_factor"] = 1.0;
  EXPECT_TRUE(load(config).fused_projections) << "a factor of 1 rotates every dimension";
}

// Granite's four scalars: read where given, transformers' defaults (1.0 each, the attention
// multiplier too) where not; the other architectures keep 1 and 1/sqrt(head_dim) whatever their
// config.json says; biases are refused as for Llama.
TEST_F(ModelConfigTest, GraniteMultipliersAndTheirDefaults) {
  json config = minimal("GraniteForCausalLM");  // head_dim 8
  ModelConfig c = load(config);
  EXPECT_EQ(c.embedding_multiplier, 1.0);
  EXPECT_EQ(c.attention_multiplier, std::optional<double>(1.0));
  EXPECT_EQ(attention_scale(c), 1.0f);
  EXPECT_EQ(c.residual_multiplier, 1.0);
  EXPECT_EQ(c.logits_scaling, 1.0);

  config["embedding_multiplier"] = 12.0;  // Granite 3.x 8B's values
  config["attention_multiplier"] = 0.0078125;
  config["residual_multiplier"] = 0.22;
  config["logits_scaling"] = 16.0;
  c = load(config);
  EXPECT_EQ(c.embedding_multiplier, 12.0);
  EXPECT_EQ(attention_scale(c), 0.0078125f);
  EXPECT_EQ(c.residual_multiplier, 0.22);
  EXPECT_EQ(c.logits_scaling, 16.0);

  config["architectures"] = {"LlamaForCausalLM"};
  c = load(config);
  EXPECT_EQ(c.embedding_multiplier, 1.0);
  EXPECT_FALSE(c.attention_multiplier.has_value());
  EXPECT_EQ(attention_scale(c), 1.0f / std::sqrt(8.0f));
  EXPECT_EQ(c.logits_scaling, 1.0);

  config = minimal("GraniteForCausalLM");
  config["logits_scaling"] = 0;
  EXPECT_TRUE(contains_all(error(config), {"'logits_scaling'", "positive number"}));
  config = minimal("GraniteForCausalLM");
  config["residual_multiplier"] = "0.22";
  EXPECT_TRUE(contains_all(error(config), {"'residual_multiplier'", "positive number", "string"}));
  config = minimal("GraniteForCausalLM");
  config["mlp_bias"] = true;
  EXPECT_TRUE(contains_all(error(config), {"'mlp_bias'", "GraniteForCausalLM", "bias-free"}));
}

TEST_F(ModelConfigTest, Qwen2HasQkvBiasAndIgnoresAnUnusedWindow) {
  json config = minimal("Qwen2ForCausalLM");
  config["use_sliding_window"] = false;
  config["sliding_window"] = 32768;  // Qwen2 configs carry it even when it is off
  const ModelConfig c = load(config);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.sliding_window.has_value());
}

TEST_F(ModelConfigTest, Qwen3NormalizesHeadsDefaultsHeadDimTo128AndBiasToOff) {
  json config = minimal("Qwen3ForCausalLM");
  config["use_sliding_window"] = false;
  config["sliding_window"] = 4096;
  config["layer_types"] = {"full_attention", "full_attention", "full_attention"};
  ModelConfig c = load(config);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.head_dim, 128) << "Qwen3Config's default, not hidden_size / heads (8)";
  EXPECT_FALSE(c.sliding_window.has_value());
  config["attention_bias"] = true;
  config["head_dim"] = 16;
  c = load(config);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_EQ(c.head_dim, 16);
}

TEST_F(ModelConfigTest, RopeScalingDefaultAndOlderTypeKey) {
  json config = minimal();
  config["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_FALSE(load(config).rope_scaling.has_value());
  config["rope_scaling"] = {{"type", "llama3"},
                            {"factor", 32.0},
                            {"low_freq_factor", 1},
                            {"high_freq_factor", 4},
                            {"original_max_position_embeddings", 8192}};
  const ModelConfig c = load(config);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 32.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 8192);
}

TEST_F(ModelConfigTest, Transformers5Keys) {
  json config = minimal();
  config["dtype"] = "bfloat16";
  config["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                               {"factor", 8.0},           {"low_freq_factor", 1.0},
                               {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const ModelConfig c = load(config);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 8.0);

  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  const ModelConfig plain = load(config);
  EXPECT_DOUBLE_EQ(plain.rope_theta, 1e6);
  EXPECT_FALSE(plain.rope_scaling.has_value());
}

TEST_F(ModelConfigTest, MissingFile) {
  const std::string message = model_load_error([&] { load_model_config(path()); });
  EXPECT_TRUE(contains_all(message, {path().string(), "cannot open", "config.json"}));
}

TEST_F(ModelConfigTest, InvalidJson) {
  EXPECT_TRUE(contains_all(error_text("{\"vocab_size\": 100,"), {"not valid JSON"}));
  EXPECT_TRUE(contains_all(error_text("[1, 2]"), {"must hold a JSON object"}));
}

TEST_F(ModelConfigTest, MissingRequiredField) {
  for (const char* field :
       {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
    json config = minimal();
    config.erase(field);
    EXPECT_TRUE(contains_all(error(config), {"required field '" + std::string(field) + "' is missing"}));
  }
  json config = minimal();
  config.erase("architectures");
  EXPECT_TRUE(contains_all(error(config), {"'architectures' is missing", "LlamaForCausalLM"}));
}

TEST_F(ModelConfigTest, FieldOfWrongType) {
  const auto error_with = [&](const char* field, const json& value) {
    json config = minimal();
    config[field] = value;
    return error(config);
  };
  EXPECT_TRUE(contains_all(error_with("hidden_size", "32"),
                           {"'hidden_size'", "positive integer", "\"32\" (a string)"}));
  EXPECT_TRUE(contains_all(error_with("hidden_size", 32.5), {"'hidden_size'", "positive integer"}));
  EXPECT_TRUE(
      contains_all(error_with("num_hidden_layers", 0), {"'num_hidden_layers'", "positive integer", "got 0"}));
  EXPECT_TRUE(contains_all(error_with("vocab_size", -5), {"'vocab_size'", "got -5"}));
  EXPECT_TRUE(contains_all(error_with("vocab_size", 1LL << 40), {"'vocab_size'", "below 2^31"}));
  EXPECT_TRUE(contains_all(error_with("rms_norm_eps", "1e-6"), {"'rms_norm_eps'", "positive number"}));
  EXPECT_TRUE(contains_all(error_with("rope_theta", 0), {"'rope_theta'", "positive number"}));
  EXPECT_TRUE(
      contains_all(error_with("tie_word_embeddings", "true"), {"'tie_word_embeddings'", "true or false"}));
  EXPECT_TRUE(
      contains_all(error_with("architectures", "LlamaForCausalLM"), {"'architectures'", "list of strings"}));
  EXPECT_TRUE(contains_all(error_with("eos_token_id", "2"), {"'eos_token_id'", "token ids"}));
  EXPECT_TRUE(
      contains_all(error_with("eos_token_id", json{2, 100}), {"'eos_token_id'", "[0, vocab_size 100)"}));
  EXPECT_TRUE(contains_all(error_with("bos_token_id", -1), {"'bos_token_id'"}));
  EXPECT_TRUE(contains_all(error_with("rope_scaling", "llama3"), {"'rope_scaling'", "object or null"}));
  EXPECT_TRUE(contains_all(error_with("torch_dtype", 16), {"'torch_dtype'", "must be a string"}));
}

TEST_F(ModelConfigTest, UnknownArchitecture) {
  EXPECT_TRUE(contains_all(
      error(minimal("GPT2LMHeadModel")),
      {"architecture 'GPT2LMHeadModel' is not supported", "LlamaForCausalLM", "MistralForCausalLM",
       "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM", "GraniteForCausalLM"}));
}

// Embedding models saved as their base model (e5-mistral's "MistralModel") are that architecture;
// a bidirectional one (is_causal false) is refused, since causal attention would embed otherwise.
TEST_F(ModelConfigTest, BaseModelArchitecturesAndBidirectionalOnes) {
  json config = minimal("MistralModel");
  config["sliding_window"] = 4096;
  EXPECT_EQ(load(config).architecture, "MistralForCausalLM");
  EXPECT_EQ(load(config).sliding_window, std::optional<int>(4096));
  EXPECT_EQ(load(minimal("Qwen3Model")).architecture, "Qwen3ForCausalLM");
  EXPECT_TRUE(contains_all(error(minimal("BertModel")), {"architecture 'BertModel' is not supported"}));
  config["is_causal"] = false;
  EXPECT_TRUE(contains_all(error(config), {"is_causal is false", "causal"}));
  config["is_causal"] = true;
  EXPECT_NO_THROW(load(config));
}

// sentence-transformers' modules.json and Pooling config: last-token pooling (and Normalize) is
// what kvserve's embeddings are; any other pooling, or a module after it, is refused naming it.
TEST_F(ModelConfigTest, SentenceTransformersPoolingMustBeTheLastToken) {
  const json config = minimal("Qwen3Model");
  const json modules = json::array(
      {{{"idx", 0}, {"name", "0"}, {"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
       {{"idx", 1}, {"name", "1"}, {"path", "1_Pooling"}, {"type", "sentence_transformers.models.Pooling"}},
       {{"idx", 2},
        {"name", "2"},
        {"path", "2_Normalize"},
        {"type", "sentence_transformers.models.Normalize"}}});
  write_file(dir_ / "modules.json", modules.dump());
  const auto message = [&] { return model_load_error([&] { load(config); }); };
  EXPECT_TRUE(
      contains_all(message(), {(dir_ / "1_Pooling" / "config.json").string(), "missing", "Pooling module"}));

  std::filesystem::create_directories(dir_ / "1_Pooling");
  json pooling = {{"word_embedding_dimension", 64},
                  {"pooling_mode_cls_token", false},
                  {"pooling_mode_mean_tokens", false},
                  {"pooling_mode_max_tokens", false},
                  {"pooling_mode_mean_sqrt_len_tokens", false},
                  {"pooling_mode_weightedmean_tokens", false},
                  {"pooling_mode_lasttoken", true},
                  {"include_prompt", true}};
  write_file(dir_ / "1_Pooling" / "config.json", pooling.dump());
  EXPECT_EQ(load(config).architecture, "Qwen3ForCausalLM") << "Qwen3-Embedding's own modules";

  pooling["pooling_mode_lasttoken"] = false;
  pooling["pooling_mode_mean_tokens"] = true;
  write_file(dir_ / "1_Pooling" / "config.json", pooling.dump());
  EXPECT_TRUE(contains_all(message(), {(dir_ / "1_Pooling" / "config.json").string(),
                                       "pools by pooling_mode_mean_tokens", "last token only"}));
  pooling["pooling_mode_lasttoken"] = true;
  write_file(dir_ / "1_Pooling" / "config.json", pooling.dump());
  EXPECT_TRUE(contains_all(message(), {"pools by pooling_mode_lasttoken, pooling_mode_mean_tokens"}));
  pooling["pooling_mode_mean_tokens"] = false;
  write_file(dir_ / "1_Pooling" / "config.json", pooling.dump());

  json with_dense = modules;
  with_dense[2] = {
      {"idx", 2}, {"name", "2"}, {"path", "2_Dense"}, {"type", "sentence_transformers.models.Dense"}};
  write_file(dir_ / "modules.json", with_dense.dump());
  EXPECT_TRUE(contains_all(message(), {(dir_ / "modules.json").string(), "2_Dense", "no Dense module"}));
  json escaping = modules;
  escaping[1]["path"] = "../elsewhere";
  write_file(dir_ / "modules.json", escaping.dump());
  EXPECT_TRUE(contains_all(message(), {"is not a folder of the model"}));
  write_file(dir_ / "modules.json", "{\"not\": \"a list\"}");
  EXPECT_TRUE(contains_all(message(), {"must hold a JSON array of modules"}));
  write_file(dir_ / "modules.json", "[");
  EXPECT_TRUE(contains_all(message(), {"modules.json: not valid JSON"}));
}

TEST_F(ModelConfigTest, UnsupportedDtype) {
  json config = minimal();
  config["torch_dtype"] = "float8_e4m3fn";
  EXPECT_TRUE(contains_all(error(config), {"dtype \"float8_e4m3fn\" is not supported", "bfloat16"}));
  config["torch_dtype"] = "float16";
  config["dtype"] = "bfloat16";
  EXPECT_TRUE(contains_all(error(config), {"'dtype'", "'torch_dtype'", "disagree"}));
}

TEST_F(ModelConfigTest, UnsupportedRopeScaling) {
  json config = minimal();
  config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_TRUE(contains_all(error(config), {"\"yarn\"", "unsupported", "llama3"}));
  config["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  EXPECT_TRUE(contains_all(error(config), {"\"dynamic\"", "unsupported", "\"linear\""}));
  config["rope_scaling"] = {{"type", "linear"}};
  EXPECT_TRUE(contains_all(error(config), {"'rope_scaling.factor' is missing"}));
  config["rope_scaling"] = {{"factor", 2.0}};
  EXPECT_TRUE(contains_all(error(config), {"'rope_scaling.rope_type' is missing"}));
  config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}};
  EXPECT_TRUE(contains_all(error(config), {"'rope_scaling.high_freq_factor' is missing"}));
  config["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 4.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 8192}};
  EXPECT_TRUE(contains_all(error(config), {"high_freq_factor", "> 'rope_scaling.low_freq_factor'"}));
  config.erase("rope_scaling");
  config["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 10000.0}};
  EXPECT_TRUE(contains_all(error(config), {"\"dynamic\"", "unsupported"}));
}

TEST_F(ModelConfigTest, InconsistentHeads) {
  json config = minimal();
  config["num_key_value_heads"] = 3;
  EXPECT_TRUE(
      contains_all(error(config), {"num_attention_heads (4)", "multiple of num_key_value_heads (3)"}));
  config = minimal();
  config["num_attention_heads"] = 5;
  EXPECT_TRUE(contains_all(error(config), {"hidden_size (32)", "not divisible", "head_dim"}));
  config["head_dim"] = 8;  // an explicit head_dim needs no divisibility
  EXPECT_EQ(load(config).head_dim, 8);
  config["head_dim"] = 7;
  EXPECT_TRUE(contains_all(error(config), {"head_dim 7", "even"}));
}

TEST_F(ModelConfigTest, UnimplementedOptionsAreRefused) {
  json config = minimal();
  config["hidden_act"] = "gelu";
  EXPECT_TRUE(contains_all(error(config), {"hidden_act \"gelu\"", "unsupported"}));
  config = minimal();
  config["attention_bias"] = true;
  EXPECT_TRUE(contains_all(error(config), {"'attention_bias'", "not support"}));
  // Quantized checkpoints are refused from config.json, before any weight file is opened (or, for
  // a Hub model, fetched).
  config = minimal();
  config["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}};
  EXPECT_TRUE(
      contains_all(error(config), {"quantized", "quant_method \"awq\"", "unquantized or FP8 release"}));
  config["quantization_config"] = "fp8";
  EXPECT_TRUE(contains_all(error(config), {"'quantization_config' must be an object", "\"fp8\""}));
}

// FP8 checkpoints: which scale tensor each method names and how many weights one scale covers
// (Fp8Weights; 0 is the whole dimension). Every other quantization is refused naming what to change.
TEST_F(ModelConfigTest, Fp8QuantizationConfigsAndTheOnesRefused) {
  json config = minimal();
  EXPECT_FALSE(load(config).fp8_weights.has_value());
  const auto scheme = [&](const json& quantization) {
    config["quantization_config"] = quantization;
    const ModelConfig c = load(config);
    EXPECT_TRUE(c.fp8_weights.has_value());
    return c.fp8_weights.value_or(Fp8Weights{});
  };
  const auto expect_scheme = [](const Fp8Weights& w, const std::string& method, const std::string& suffix,
                                int64_t rows, int64_t cols) {
    EXPECT_EQ(w.method, method);
    EXPECT_EQ(w.scale_suffix, suffix);
    EXPECT_EQ(w.block_rows, rows) << method;
    EXPECT_EQ(w.block_cols, cols) << method;
  };
  // As Qwen3-8B-FP8 ships it: 128 x 128 blocks, weight_scale_inv.
  expect_scheme(scheme({{"quant_method", "fp8"},
                        {"fmt", "e4m3"},
                        {"activation_scheme", "dynamic"},
                        {"weight_block_size", {128, 128}}}),
                "fp8", "_scale_inv", 128, 128);
  expect_scheme(scheme({{"quant_method", "fp8"}, {"activation_scheme", "static"}}), "fp8", "_scale", 0, 0);
  expect_scheme(scheme({{"quant_method", "fbgemm_fp8"}, {"activation_scale_ub", 1200.0}}), "fbgemm_fp8",
                "_scale", 1, 0);
  // llm-compressor's FP8-dynamic export (per output channel), and its other float8 strategies.
  json weights = {
      {"num_bits", 8},         {"type", "float"},  {"strategy", "channel"},     {"symmetric", true},
      {"group_size", nullptr}, {"dynamic", false}, {"block_structure", nullptr}};
  json compressed = {
      {"quant_method", "compressed-tensors"},
      {"format", "float-quantized"},
      {"ignore", {"lm_head"}},
      {"kv_cache_scheme", nullptr},
      {"config_groups",
       {{"group_0",
         {{"targets", {"Linear"}},
          {"weights", weights},
          {"input_activations",
           {{"num_bits", 8}, {"type", "float"}, {"strategy", "token"}, {"dynamic", true}}}}}}}};
  expect_scheme(scheme(compressed), "compressed-tensors", "_scale", 1, 0);
  const auto with_weights = [&](const json& changes) {
    json q = compressed;
    for (const auto& [key, value] : changes.items())
      q["config_groups"]["group_0"]["weights"][key] = value;
    return q;
  };
  expect_scheme(scheme(with_weights({{"strategy", "tensor"}})), "compressed-tensors", "_scale", 0, 0);
  expect_scheme(scheme(with_weights({{"strategy", "group"}, {"group_size", 128}})), "compressed-tensors",
                "_scale", 1, 128);
  expect_scheme(scheme(with_weights({{"strategy", "block"}, {"block_structure", {128, 64}}})),
                "compressed-tensors", "_scale", 128, 64);
  expect_scheme(scheme(with_weights({{"strategy", "block"}, {"block_structure", "64x32"}})),
                "compressed-tensors", "_scale", 64, 32);
  json two_groups = compressed;
  two_groups["config_groups"]["group_1"] = two_groups["config_groups"]["group_0"];
  expect_scheme(scheme(two_groups), "compressed-tensors", "_scale", 1, 0);

  const auto refused = [&](const json& quantization, std::initializer_list<std::string> parts) {
    config["quantization_config"] = quantization;
    const std::string message = error(config);
    EXPECT_TRUE(contains_all(message, parts)) << message;
  };
  refused({{"quant_method", "fp8"}, {"fmt", "e5m2"}}, {"fmt \"e5m2\"", "E4M3"});
  refused({{"quant_method", "fp8"}, {"weight_block_size", {128, 0}}},
          {"'quantization_config.weight_block_size'", "two positive block sizes"});
  refused({{"quant_method", "gptq"}, {"bits", 4}}, {"quant_method \"gptq\"", "FP8 checkpoints"});
  json int4 = with_weights({{"num_bits", 4}, {"type", "int"}, {"strategy", "group"}, {"group_size", 128}});
  int4["format"] = "pack-quantized";
  refused(int4, {"format \"pack-quantized\"", "not supported"});
  refused(with_weights({{"type", "int"}}), {"config_groups.group_0.weights", "8-bit int", "not supported"});
  refused(with_weights({{"symmetric", false}}), {"asymmetric"});
  refused(with_weights({{"strategy", "group"}}), {"\"group\" but no group_size"});
  refused(with_weights({{"strategy", "block"}}), {"\"block\" but no block_structure"});
  refused(with_weights({{"strategy", "attn_head"}}),
          {"strategy \"attn_head\"", "tensor, channel, group and block"});
  json mixed = two_groups;
  mixed["config_groups"]["group_1"]["weights"]["strategy"] = "tensor";
  refused(mixed, {"different weight strategies"});
  json sparse = compressed;
  sparse["sparsity_config"] = {{"format", "sparse-24-bitmask"}};
  refused(sparse, {"sparsity_config", "sparse-24-bitmask"});
  sparse["sparsity_config"] = {{"format", "dense"}};
  expect_scheme(scheme(sparse), "compressed-tensors", "_scale", 1, 0);

  // compressed-tensors' first releases named the object compression_config.
  config.erase("quantization_config");
  config["compression_config"] = compressed;
  EXPECT_EQ(load(config).fp8_weights.value_or(Fp8Weights{}).method, "compressed-tensors");
  config.erase("compression_config");

  // Fields of the wrong JSON type are named, never a crash or a JSON library's message.
  refused({{"quant_method", 5}}, {"'quantization_config.quant_method' must be a string"});
  refused({{"quant_method", "fp8"}, {"weight_block_size", "128x"}}, {"two positive block sizes"});
  json groups_list = compressed;
  groups_list["config_groups"] = json::array({1});
  refused(groups_list, {"needs a config_groups object"});
  json weights_string = compressed;
  weights_string["config_groups"]["group_0"]["weights"] = "fp8";
  refused(weights_string, {"config_groups.group_0.weights must be an object"});
  refused(with_weights({{"num_bits", "8"}}), {"\"8\"-bit float", "not supported"});
  refused(with_weights({{"strategy", 5}}),
          {"'quantization_config.config_groups.group_0.weights.strategy' must be a string"});
  refused(with_weights({{"symmetric", "yes"}}), {"weights.symmetric' must be true or false"});
  refused(with_weights({{"strategy", "group"}, {"group_size", "128"}}),
          {"weights.group_size' must be a positive integer"});
  json sparse_string = compressed;
  sparse_string["sparsity_config"] = "x";
  refused(sparse_string, {"sparsity_config is not supported"});
}

// Linear RoPE scaling divides every inverse frequency by the factor (positions by the factor).
TEST_F(ModelConfigTest, LinearRopeScalingDividesEveryFrequency) {
  json config = minimal();
  const std::vector<float> plain = rope_inv_freq(load(config));
  config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  const ModelConfig c = load(config);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->type, RopeScaling::Type::kLinear);
  const std::vector<float> scaled = rope_inv_freq(c);
  ASSERT_EQ(scaled.size(), plain.size());
  for (size_t i = 0; i < plain.size(); ++i)
    EXPECT_EQ(scaled[i], plain[i] / 8.0f) << i;
}

// Qwen2/Qwen3 with use_sliding_window: the layers from max_window_layers on are windowed, or those
// layer_types names; without use_sliding_window nothing is, whatever layer_types says.
TEST_F(ModelConfigTest, QwenSlidingWindowLayers) {
  json config = minimal("Qwen2ForCausalLM");
  config["use_sliding_window"] = true;
  config["sliding_window"] = 16;
  config["max_window_layers"] = 1;
  ModelConfig c = load(config);
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(attention_window(c, 0), 0);
  EXPECT_EQ(attention_window(c, 1), 16);
  EXPECT_EQ(attention_window(c, 2), 16);
  EXPECT_EQ(max_attended_len(c, 100), 100) << "layer 0 sees everything";
  EXPECT_EQ(max_supported_len(c), 32768) << "Qwen2Config's default";
  config["max_window_layers"] = 0;
  c = load(config);
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{true, true, true}));
  EXPECT_EQ(max_attended_len(c, 100), 16) << "every layer windowed";
  EXPECT_EQ(max_attended_len(c, 10), 10);
  config.erase("max_window_layers");  // Qwen2Config's default, 28: no layer of three
  EXPECT_EQ(load(config).sliding_layers, (std::vector<bool>{false, false, false}));
  config["max_window_layers"] = 0;
  config["sliding_window"] = nullptr;  // transformers windows no layer then
  EXPECT_EQ(max_attended_len(load(config), 100), 100);

  config = minimal("Qwen3ForCausalLM");
  config["use_sliding_window"] = true;
  config["sliding_window"] = 8;
  config["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention"};
  c = load(config);
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{true, false, true}));
  EXPECT_EQ(attention_window(c, 2), 8);
  config["layer_types"] = {"sliding_attention", "full_attention"};
  EXPECT_TRUE(contains_all(error(config), {"'layer_types'", "num_hidden_layers = 3"}));
  config["layer_types"] = {"sliding_attention", "full_attention", "chunked_attention"};
  EXPECT_TRUE(contains_all(error(config), {"'layer_types' entry 2", "chunked_attention"}));
  config["use_sliding_window"] = false;
  config["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention"};
  c = load(config);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(attention_window(c, 0), 0);
}

// Gemma (1): (1 + w) norms, sqrt(hidden) embedding scale rounded to the weights' dtype, the
// tanh-GELU MLP, tied embeddings and head_dim 256 by default; its first configs' hidden_act "gelu"
// means the approximation too.
TEST_F(ModelConfigTest, GemmaDefaultsAndEmbeddingScale) {
  json config = minimal("GemmaForCausalLM");
  config["hidden_size"] = 3072;  // Gemma 7B: sqrt(3072) = 55.4256...
  config["hidden_act"] = "gelu";
  config["torch_dtype"] = "bfloat16";
  ModelConfig c = load(config);
  EXPECT_DOUBLE_EQ(c.norm_weight_offset, 1.0);
  EXPECT_EQ(c.activation, MlpActivation::kGeluTanh);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 256) << "GemmaConfig's default, not hidden / heads";
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.embedding_multiplier, 55.5) << "bfloat16 keeps 8 significant bits";
  EXPECT_FALSE(c.sandwich_norms);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_FALSE(c.attention_multiplier.has_value()) << "Gemma 1 scales by 1/sqrt(head_dim)";
  config["torch_dtype"] = "float16";
  EXPECT_DOUBLE_EQ(load(config).embedding_multiplier, 55.4375) << "float16 keeps 11";
  config["torch_dtype"] = "float32";
  EXPECT_DOUBLE_EQ(load(config).embedding_multiplier, static_cast<double>(std::sqrt(3072.0f)));
  config["hidden_size"] = 2048;  // Gemma 2B: sqrt(2048) = 45.2548...
  config["torch_dtype"] = "bfloat16";
  EXPECT_DOUBLE_EQ(load(config).embedding_multiplier, 45.25);
  config["hidden_activation"] = "gelu_pytorch_tanh";
  EXPECT_EQ(load(config).activation, MlpActivation::kGeluTanh);
  config["hidden_activation"] = "relu";
  EXPECT_TRUE(contains_all(error(config), {"hidden_activation \"relu\"", "gelu_pytorch_tanh"}));
  config.erase("hidden_activation");
  config["attention_bias"] = true;
  EXPECT_TRUE(contains_all(error(config), {"'attention_bias'", "GemmaForCausalLM"}));
  config["attention_bias"] = false;
  config["tie_word_embeddings"] = false;
  EXPECT_FALSE(load(config).tie_word_embeddings);
}

// Gemma 2: sandwich norms, query_pre_attn_scalar, every other layer windowed (layer 0 first), and
// both soft caps, with Gemma2Config's defaults (50 and 30) when absent and none when null.
TEST_F(ModelConfigTest, Gemma2WindowsSoftCapsAndScale) {
  json config = minimal("Gemma2ForCausalLM");
  config["num_hidden_layers"] = 4;
  config["head_dim"] = 16;
  config["query_pre_attn_scalar"] = 144;
  config["sliding_window"] = 4096;
  ModelConfig c = load(config);
  EXPECT_TRUE(c.sandwich_norms);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FLOAT_EQ(attention_scale(c), 1.0f / 12.0f);
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(attention_window(c, 0), 4096);
  EXPECT_EQ(attention_window(c, 1), 0);
  EXPECT_EQ(c.attn_logit_softcapping, std::optional<double>(50.0));
  EXPECT_EQ(c.final_logit_softcapping, std::optional<double>(30.0));
  EXPECT_FALSE(c.sliding_rope_theta.has_value());
  config["attn_logit_softcapping"] = nullptr;
  config["final_logit_softcapping"] = 2.5;
  c = load(config);
  EXPECT_FALSE(c.attn_logit_softcapping.has_value());
  EXPECT_EQ(c.final_logit_softcapping, std::optional<double>(2.5));
  config["final_logit_softcapping"] = -1.0;
  EXPECT_TRUE(contains_all(error(config), {"'final_logit_softcapping'", "positive number"}));
  config.erase("final_logit_softcapping");
  config.erase("query_pre_attn_scalar");
  EXPECT_FLOAT_EQ(attention_scale(load(config)), 1.0f / 16.0f) << "Gemma2Config's default scalar, 256";
  config["layer_types"] = {"full_attention", "full_attention", "sliding_attention", "full_attention"};
  EXPECT_EQ(load(config).sliding_layers, (std::vector<bool>{false, false, true, false}));
  config["sliding_window"] = nullptr;  // no window at all, as transformers reads it
  EXPECT_EQ(attention_window(load(config), 2), 0);
  config["sliding_window"] = 4096;
  config["hidden_act"] = "gelu";  // Gemma 2 reads hidden_activation only (absent: the tanh GELU)
  EXPECT_EQ(load(config).activation, MlpActivation::kGeluTanh);
  config["hidden_activation"] = "gelu";
  EXPECT_TRUE(
      contains_all(error(config), {"hidden_activation \"gelu\"", "unsupported", "Gemma2ForCausalLM"}));
  config.erase("hidden_activation");
  config["use_bidirectional_attention"] = true;
  EXPECT_TRUE(contains_all(error(config), {"use_bidirectional_attention", "causal"}));
}

// Gemma 3: q/k norms, five windowed layers to one full by default, the windowed layers' own RoPE
// base (unscaled) beside the full layers' scaled one, in both config formats.
TEST_F(ModelConfigTest, Gemma3LayerPatternAndTwoRopes) {
  json config = minimal("Gemma3ForCausalLM");
  config["num_hidden_layers"] = 7;
  config["head_dim"] = 16;
  config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  ModelConfig c = load(config);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.sandwich_norms);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_FALSE(c.attn_logit_softcapping.has_value());
  EXPECT_FALSE(c.final_logit_softcapping.has_value());
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{true, true, true, true, true, false, true}));
  EXPECT_EQ(attention_window(c, 5), 0);
  EXPECT_EQ(attention_window(c, 6), 4096);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1000000.0);
  EXPECT_EQ(c.sliding_rope_theta, std::optional<double>(10000.0));
  EXPECT_TRUE(uses_sliding_rope(c, 0));
  EXPECT_FALSE(uses_sliding_rope(c, 5));
  const std::vector<float> full = rope_inv_freq(c);
  const std::vector<float> local = rope_inv_freq(c, /*sliding_rope=*/true);
  ASSERT_EQ(full.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(full[i], static_cast<float>(static_cast<float>(1.0 / std::pow(1e6, i / 8.0)) / 8.0)) << i;
    EXPECT_EQ(local[i], static_cast<float>(1.0 / std::pow(1e4, i / 8.0))) << i;
  }
  config["attn_logit_softcapping"] = 50.0;   // Gemma 3's attention never applies it
  config["final_logit_softcapping"] = 30.0;  // but the logits' cap, when given, applies
  c = load(config);
  EXPECT_FALSE(c.attn_logit_softcapping.has_value());
  EXPECT_EQ(c.final_logit_softcapping, std::optional<double>(30.0));
  config.erase("attn_logit_softcapping");
  config.erase("final_logit_softcapping");
  config["sliding_window_pattern"] = 2;
  config["rope_local_base_freq"] = 5000.0;
  c = load(config);
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{true, false, true, false, true, false, true}));
  EXPECT_EQ(c.sliding_rope_theta, std::optional<double>(5000.0));

  // transformers 5 writes one set of RoPE parameters per layer type.
  config.erase("rope_scaling");
  config.erase("rope_local_base_freq");
  config["rope_parameters"] = {
      {"full_attention", {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 500000.0}}},
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 20000.0}}}};
  c = load(config);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 4.0);
  EXPECT_EQ(c.sliding_rope_theta, std::optional<double>(20000.0));
  config["rope_parameters"]["sliding_attention"]["rope_type"] = "linear";
  EXPECT_TRUE(contains_all(error(config), {"sliding-window layers' RoPE scaling \"linear\"", "unsupported"}));
}

// Gemma 3 4B and larger: Gemma3ForConditionalGeneration, whose text model is served. Its config as
// released (gemma-3-4b-it's): text_config leaves vocab_size, the head counts and head_dim at
// Gemma3TextConfig's defaults, and the token ids and dtype sit at the top level.
TEST_F(ModelConfigTest, Gemma3ConditionalGenerationServesItsTextModel) {
  json config = {{"architectures", {"Gemma3ForConditionalGeneration"}},
                 {"model_type", "gemma3"},
                 {"eos_token_id", {1, 106}},
                 {"torch_dtype", "bfloat16"},
                 {"mm_tokens_per_image", 256},
                 {"text_config",
                  {{"hidden_size", 2560},
                   {"intermediate_size", 10240},
                   {"model_type", "gemma3_text"},
                   {"num_hidden_layers", 34},
                   {"rope_scaling", {{"factor", 8.0}, {"rope_type", "linear"}}},
                   {"sliding_window", 1024}}},
                 {"vision_config", {{"hidden_size", 1152}, {"model_type", "siglip_vision_model"}}}};
  const ModelConfig c = load(config);
  EXPECT_EQ(c.architecture, "Gemma3ForCausalLM");
  EXPECT_EQ(c.checkpoint_architecture, "Gemma3ForConditionalGeneration");
  EXPECT_EQ(c.vocab_size, 262208);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.hidden_size, 2560);
  EXPECT_EQ(c.num_layers, 34);
  EXPECT_EQ(c.sliding_window, std::optional<int>(1024));
  EXPECT_EQ(c.eos_token_ids, (std::vector<TokenId>{1, 106}));
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_DOUBLE_EQ(c.embedding_multiplier, 50.5) << "sqrt(2560) = 50.596 in bfloat16";
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 8.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(load(minimal("Gemma3ForCausalLM")).checkpoint_architecture, "");

  config["text_config"]["hidden_size"] = "2560";
  EXPECT_TRUE(contains_all(error(config), {"'text_config.hidden_size'", "positive integer"}));
  config.erase("text_config");
  EXPECT_TRUE(contains_all(error(config), {"Gemma3ForConditionalGeneration", "'text_config'"}));
}

// Mixtral-8x7B-Instruct-v0.1's config as released: every layer routes through 8 experts, 2 a token,
// each an MLP of intermediate_size, with Mistral's attention; MixtralConfig's defaults where absent.
TEST_F(ModelConfigTest, MixtralRoutesEveryLayerThroughItsExperts) {
  json config = {{"architectures", {"MixtralForCausalLM"}},
                 {"attention_dropout", 0.0},
                 {"bos_token_id", 1},
                 {"eos_token_id", 2},
                 {"hidden_act", "silu"},
                 {"hidden_size", 4096},
                 {"initializer_range", 0.02},
                 {"intermediate_size", 14336},
                 {"max_position_embeddings", 32768},
                 {"model_type", "mixtral"},
                 {"num_attention_heads", 32},
                 {"num_experts_per_tok", 2},
                 {"num_hidden_layers", 32},
                 {"num_key_value_heads", 8},
                 {"num_local_experts", 8},
                 {"output_router_logits", false},
                 {"rms_norm_eps", 1e-05},
                 {"rope_theta", 1000000.0},
                 {"router_aux_loss_coef", 0.02},
                 {"sliding_window", nullptr},
                 {"tie_word_embeddings", false},
                 {"torch_dtype", "bfloat16"},
                 {"transformers_version", "4.36.0.dev0"},
                 {"use_cache", true},
                 {"vocab_size", 32000}};
  const ModelConfig c = load(config);
  EXPECT_EQ(c.architecture, "MixtralForCausalLM");
  ASSERT_TRUE(c.moe.has_value());
  EXPECT_EQ(c.moe->num_experts, 8);
  EXPECT_EQ(c.moe->experts_per_token, 2);
  EXPECT_EQ(c.moe->expert_intermediate_size, 14336);
  EXPECT_TRUE(c.moe->normalize_routing_weights);
  EXPECT_EQ(c.moe->shared_expert_intermediate_size, 0);
  for (int layer : {0, 1, 30, 31})
    EXPECT_TRUE(is_moe_layer(c, layer)) << layer;
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(moe_summary(c), "8 experts, 2 per token, in 32 of 32 layers (each expert's MLP 14336 wide)");

  // MixtralConfig's defaults: 8 experts, 2 a token, RoPE base 1e6, eps 1e-5, 131072 positions.
  const ModelConfig d = load(minimal("MixtralForCausalLM"));
  EXPECT_EQ(d.moe->num_experts, 8);
  EXPECT_EQ(d.moe->experts_per_token, 2);
  EXPECT_EQ(d.moe->expert_intermediate_size, 48);
  EXPECT_DOUBLE_EQ(d.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(d.rms_norm_eps, 1e-5);
  EXPECT_EQ(d.max_position_embeddings, 131072);
  EXPECT_FALSE(load(minimal()).moe.has_value()) << "a dense model";
  EXPECT_EQ(moe_summary(load(minimal())), "");
  EXPECT_EQ(load(minimal("MixtralModel")).architecture, "MixtralForCausalLM");

  config["sliding_window"] = 4096;  // the first Mixtral release's window
  EXPECT_EQ(load(config).sliding_window, std::optional<int>(4096));
  // transformers 5 maps num_experts to num_local_experts: either name counts, and two that disagree
  // are refused.
  config["num_experts"] = 8;
  EXPECT_EQ(load(config).moe->num_experts, 8);
  config.erase("num_local_experts");
  EXPECT_EQ(load(config).moe->num_experts, 8);
  config["num_local_experts"] = 4;
  EXPECT_TRUE(contains_all(error(config), {"'num_local_experts' (4)", "'num_experts' (8)", "disagree"}));
  config.erase("num_experts");
  config["num_local_experts"] = 8;
  config["num_experts_per_tok"] = 9;
  EXPECT_TRUE(contains_all(error(config), {"num_experts_per_tok (9)", "num_local_experts (8)"}));
  config["num_experts_per_tok"] = 0;
  EXPECT_TRUE(contains_all(error(config), {"'num_experts_per_tok'", "positive integer"}));
  config["num_experts_per_tok"] = 2;
  config["num_local_experts"] = "8";
  EXPECT_TRUE(contains_all(error(config), {"'num_local_experts'", "positive integer"}));
}

// Qwen3-30B-A3B's config as released: 128 experts, 8 a token (weights renormalized: norm_topk_prob),
// in every layer, with Qwen3's attention (q/k norms, head_dim 128 of hidden 2048 / 32 heads = 64).
// Qwen3MoeConfig's defaults, decoder_sparse_step and mlp_only_layers.
TEST_F(ModelConfigTest, Qwen3MoeRoutesTheLayersItsSettingsName) {
  json config = {{"architectures", {"Qwen3MoeForCausalLM"}},
                 {"attention_bias", false},
                 {"attention_dropout", 0.0},
                 {"bos_token_id", 151643},
                 {"decoder_sparse_step", 1},
                 {"eos_token_id", 151645},
                 {"head_dim", 128},
                 {"hidden_act", "silu"},
                 {"hidden_size", 2048},
                 {"initializer_range", 0.02},
                 {"intermediate_size", 6144},
                 {"max_position_embeddings", 40960},
                 {"max_window_layers", 48},
                 {"mlp_only_layers", json::array()},
                 {"model_type", "qwen3_moe"},
                 {"moe_intermediate_size", 768},
                 {"norm_topk_prob", true},
                 {"num_attention_heads", 32},
                 {"num_experts", 128},
                 {"num_experts_per_tok", 8},
                 {"num_hidden_layers", 48},
                 {"num_key_value_heads", 4},
                 {"output_router_logits", false},
                 {"rms_norm_eps", 1e-06},
                 {"rope_scaling", nullptr},
                 {"rope_theta", 1000000.0},
                 {"router_aux_loss_coef", 0.001},
                 {"sliding_window", nullptr},
                 {"tie_word_embeddings", false},
                 {"torch_dtype", "bfloat16"},
                 {"transformers_version", "4.51.0"},
                 {"use_cache", true},
                 {"use_sliding_window", false},
                 {"vocab_size", 151936}};
  const ModelConfig c = load(config);
  EXPECT_EQ(c.architecture, "Qwen3MoeForCausalLM");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.sliding_window.has_value());
  ASSERT_TRUE(c.moe.has_value());
  EXPECT_EQ(c.moe->num_experts, 128);
  EXPECT_EQ(c.moe->experts_per_token, 8);
  EXPECT_EQ(c.moe->expert_intermediate_size, 768);
  EXPECT_TRUE(c.moe->normalize_routing_weights);
  EXPECT_TRUE(is_moe_layer(c, 0));
  EXPECT_TRUE(is_moe_layer(c, 47));
  EXPECT_EQ(moe_summary(c), "128 experts, 8 per token, in 48 of 48 layers (each expert's MLP 768 wide)");

  // Qwen3MoeConfig's defaults (no head_dim default: hidden_size / heads).
  const ModelConfig d = load(minimal("Qwen3MoeForCausalLM"));
  EXPECT_EQ(d.moe->num_experts, 128);
  EXPECT_EQ(d.moe->experts_per_token, 8);
  EXPECT_EQ(d.moe->expert_intermediate_size, 768);
  EXPECT_FALSE(d.moe->normalize_routing_weights);
  EXPECT_EQ(d.head_dim, 8);
  EXPECT_EQ(d.max_position_embeddings, 32768);

  // Layer i routes when (i + 1) % decoder_sparse_step == 0 and mlp_only_layers leaves it out.
  config["num_hidden_layers"] = 6;
  config["decoder_sparse_step"] = 2;
  config["mlp_only_layers"] = {3};
  const ModelConfig s = load(config);
  std::vector<bool> routed;
  for (int layer = 0; layer < 6; ++layer)
    routed.push_back(is_moe_layer(s, layer));
  EXPECT_EQ(routed, (std::vector<bool>{false, true, false, false, false, true}));
  EXPECT_EQ(moe_summary(s), "128 experts, 8 per token, in 2 of 6 layers (each expert's MLP 768 wide)");
  config["norm_topk_prob"] = false;
  EXPECT_EQ(
      moe_summary(load(config)),
      "128 experts, 8 per token (weights not renormalized), in 2 of 6 layers (each expert's MLP 768 wide)");

  config["mlp_only_layers"] = {6};
  EXPECT_TRUE(contains_all(error(config), {"'mlp_only_layers'", "[0, num_hidden_layers 6)", "6"}));
  config["mlp_only_layers"] = 1;
  EXPECT_TRUE(contains_all(error(config), {"'mlp_only_layers'", "list of layer indices"}));
  config["mlp_only_layers"] = {"1"};
  EXPECT_TRUE(contains_all(error(config), {"'mlp_only_layers'", "\"1\""}));
  config["mlp_only_layers"] = json::array();
  config["num_experts_per_tok"] = 129;
  EXPECT_TRUE(contains_all(error(config), {"num_experts_per_tok (129)", "num_experts (128)"}));
  config["num_experts_per_tok"] = 8;
  config["decoder_sparse_step"] = 0;
  EXPECT_TRUE(contains_all(error(config), {"'decoder_sparse_step'", "positive integer"}));
  config["decoder_sparse_step"] = 1;
  config["norm_topk_prob"] = "yes";
  EXPECT_TRUE(contains_all(error(config), {"'norm_topk_prob'", "true or false"}));
  config["norm_topk_prob"] = true;
  config["use_sliding_window"] = true;  // windowed by rules of transformers' own; no release sets it
  EXPECT_TRUE(
      contains_all(error(config), {"use_sliding_window is true", "Qwen3MoeForCausalLM", "set it to false"}));
  config["use_sliding_window"] = false;
  config["num_local_experts"] = 64;
  EXPECT_TRUE(contains_all(error(config), {"'num_experts' (128)", "'num_local_experts' (64)", "disagree"}));
}

// Qwen1.5-MoE-A2.7B's config as released: 60 experts, 4 a token, weights not renormalized, and a
// shared expert every token goes through; Qwen2's q/k/v biases (qkv_bias, on unless set false).
TEST_F(ModelConfigTest, Qwen2MoeHasASharedExpertAndQkvBiases) {
  json config = {{"architectures", {"Qwen2MoeForCausalLM"}},
                 {"attention_dropout", 0.0},
                 {"bos_token_id", 151643},
                 {"eos_token_id", 151643},
                 {"hidden_act", "silu"},
                 {"hidden_size", 2048},
                 {"initializer_range", 0.02},
                 {"intermediate_size", 5632},
                 {"max_position_embeddings", 8192},
                 {"max_window_layers", 21},
                 {"model_type", "qwen2_moe"},
                 {"num_attention_heads", 16},
                 {"num_hidden_layers", 24},
                 {"num_key_value_heads", 16},
                 {"rms_norm_eps", 1e-06},
                 {"rope_theta", 1000000.0},
                 {"sliding_window", 32768},
                 {"tie_word_embeddings", false},
                 {"torch_dtype", "bfloat16"},
                 {"transformers_version", "4.36.0.dev0"},
                 {"use_cache", true},
                 {"use_sliding_window", false},
                 {"vocab_size", 151936},
                 {"decoder_sparse_step", 1},
                 {"moe_intermediate_size", 1408},
                 {"shared_expert_intermediate_size", 5632},
                 {"num_experts_per_tok", 4},
                 {"num_experts", 60},
                 {"norm_topk_prob", false},
                 {"output_router_logits", false},
                 {"router_aux_loss_coef", 0.001}};
  const ModelConfig c = load(config);
  EXPECT_EQ(c.architecture, "Qwen2MoeForCausalLM");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.sliding_window.has_value()) << "use_sliding_window is false";
  ASSERT_TRUE(c.moe.has_value());
  EXPECT_EQ(c.moe->num_experts, 60);
  EXPECT_EQ(c.moe->experts_per_token, 4);
  EXPECT_EQ(c.moe->expert_intermediate_size, 1408);
  EXPECT_FALSE(c.moe->normalize_routing_weights);
  EXPECT_EQ(c.moe->shared_expert_intermediate_size, 5632);
  EXPECT_EQ(moe_summary(c),
            "60 experts, 4 per token (weights not renormalized), in 24 of 24 layers (each expert's MLP 1408 "
            "wide, a shared expert's 5632)");
  config["qkv_bias"] = false;
  EXPECT_FALSE(load(config).qkv_bias);

  const ModelConfig d = load(minimal("Qwen2MoeForCausalLM"));  // Qwen2MoeConfig's defaults
  EXPECT_EQ(d.moe->num_experts, 60);
  EXPECT_EQ(d.moe->experts_per_token, 4);
  EXPECT_EQ(d.moe->expert_intermediate_size, 1408);
  EXPECT_EQ(d.moe->shared_expert_intermediate_size, 5632);
}

// Mistral Small 3.1 and 3.2 (24B): Mistral3ForConditionalGeneration, whose text model is served as
// a MistralForCausalLM. Mistral-Small-3.1-24B-Instruct-2503's config, its vision fields cut short;
// the token ids are nowhere in it (MistralConfig's 1 and 2 apply, as transformers reads it).
TEST_F(ModelConfigTest, Mistral3ConditionalGenerationServesItsTextModel) {
  json config = {{"architectures", {"Mistral3ForConditionalGeneration"}},
                 {"image_token_index", 10},
                 {"model_type", "mistral3"},
                 {"multimodal_projector_bias", false},
                 {"projector_hidden_act", "gelu"},
                 {"spatial_merge_size", 2},
                 {"text_config",
                  {{"head_dim", 128},
                   {"hidden_act", "silu"},
                   {"hidden_size", 5120},
                   {"intermediate_size", 32768},
                   {"max_position_embeddings", 131072},
                   {"model_type", "mistral"},
                   {"num_attention_heads", 32},
                   {"num_hidden_layers", 40},
                   {"num_key_value_heads", 8},
                   {"rms_norm_eps", 1e-05},
                   {"rope_theta", 1000000000.0},
                   {"sliding_window", nullptr},
                   {"use_cache", true},
                   {"vocab_size", 131072}}},
                 {"torch_dtype", "bfloat16"},
                 {"vision_config", {{"hidden_size", 1024}, {"model_type", "pixtral"}}},
                 {"vision_feature_layer", -1}};
  const ModelConfig c = load(config);
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_EQ(c.checkpoint_architecture, "Mistral3ForConditionalGeneration");
  EXPECT_EQ(c.vocab_size, 131072);
  EXPECT_EQ(c.hidden_size, 5120);
  EXPECT_EQ(c.intermediate_size, 32768);
  EXPECT_EQ(c.num_layers, 40);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);  // not hidden_size / heads (160)
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e9);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, std::optional<TokenId>(1));
  EXPECT_EQ(c.eos_token_ids, (std::vector<TokenId>{2}));
  EXPECT_EQ(c.dtype, "bfloat16");

  // Token ids in text_config win over the defaults, and the top level's over both (as transformers'
  // generation config reads a composite config).
  config["text_config"]["eos_token_id"] = 9;
  EXPECT_EQ(load(config).eos_token_ids, (std::vector<TokenId>{9}));
  config["eos_token_id"] = 7;
  EXPECT_EQ(load(config).eos_token_ids, (std::vector<TokenId>{7}));
  // MistralConfig's window where text_config says nothing of one.
  config["text_config"].erase("sliding_window");
  EXPECT_EQ(load(config).sliding_window, std::optional<int>(4096));

  // Another text model inside (the newer Ministral 3's) is named, not misread.
  config["text_config"]["model_type"] = "ministral3";
  EXPECT_TRUE(contains_all(error(config), {"Mistral3ForConditionalGeneration", "'ministral3'",
                                           "text_config.model_type", "'mistral'"}));
  config.erase("text_config");
  EXPECT_TRUE(contains_all(error(config), {"Mistral3ForConditionalGeneration", "'text_config'"}));
}

}  // namespace
}  // namespace kvserve
