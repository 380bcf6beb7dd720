// load_model on small checkpoints written per test: tensors land in the right fields, and every
// kind of broken directory fails with a ModelLoadError that names the file and the problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "tests/engine/model_files_test_util.h"

namespace kvserve {
namespace {

using model_test::contains_all;
using model_test::f32_tensor;
using model_test::model_load_error;
using model_test::raw_bytes;
using model_test::RawTensor;
using model_test::read_file;
using model_test::safetensors_bytes;
using model_test::TempDir;
using model_test::tensor_named;
using model_test::write_file;
using nlohmann::json;

class ModelLoaderTest : public ::testing::Test {
 protected:
  // Llama, vocab 16, hidden 8, intermediate 12, 2 layers, 2 heads sharing 1 KV head (head_dim 4).
  ModelLoaderTest() {
    config_ = {{"architectures", {"LlamaForCausalLM"}},
               {"vocab_size", 16},
               {"hidden_size", 8},
               {"intermediate_size", 12},
               {"num_hidden_layers", 2},
               {"num_attention_heads", 2},
               {"num_key_value_heads", 1},
               {"tie_word_embeddings", false},
               {"torch_dtype", "float32"}};
    add("model.embed_tokens.weight", {16, 8});
    for (int i = 0; i < 2; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      add(p + "input_layernorm.weight", {8});
      add(p + "self_attn.q_proj.weight", {8, 8});
      add(p + "self_attn.k_proj.weight", {4, 8});
      add(p + "self_attn.v_proj.weight", {4, 8});
      add(p + "self_attn.o_proj.weight", {8, 8});
      add(p + "post_attention_layernorm.weight", {8});
      add(p + "mlp.gate_proj.weight", {12, 8});
      add(p + "mlp.up_proj.weight", {12, 8});
      add(p + "mlp.down_proj.weight", {8, 12});
    }
    add("model.norm.weight", {8});
    add("lm_head.weight", {16, 8});
  }

  // Each tensor starts at a distinct value, so one routed to the wrong field shows.
  void add(const std::string& name, std::vector<int64_t> shape) {
    const float first = 100.0f * static_cast<float>(first_values_.size());
    first_values_[name] = first;
    tensors_.push_back(f32_tensor(name, std::move(shape), first));
  }
  float first_value_of(const std::string& name) const {
    const auto it = first_values_.find(name);
    if (it != first_values_.end()) return it->second;
    ADD_FAILURE() << name;
    return 0;
  }
  RawTensor& tensor(const std::string& name) {
    for (RawTensor& t : tensors_) {
      if (t.name == name) return t;
    }
    throw std::runtime_error("no tensor " + name);
  }
  void remove(const std::string& name) {
    std::erase_if(tensors_, [&](const RawTensor& t) { return t.name == name; });
  }

  // config.json and the tensors, round-robin over `shards` files named as transformers shards them.
  void write(int shards = 1) {
    write_file(dir_ / "config.json", config_.dump(2));
    for (int s = 0; s < shards; ++s) {
      std::vector<RawTensor> part;
      for (size_t i = static_cast<size_t>(s); i < tensors_.size(); i += static_cast<size_t>(shards)) {
        part.push_back(tensors_[i]);
      }
      write_file(shard_path(s, shards), safetensors_bytes(part));
    }
  }
  std::filesystem::path shard_path(int index, int shards) const {
    if (shards == 1) return dir_ / "model.safetensors";
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", index + 1, shards);
    return dir_ / name;
  }

  std::string load_error() {
    return model_load_error([&] { load_model(dir_.path()); });
  }

  // Every tensor written is in its field of `model` (tensor_named), with its shape and its values.
  void expect_every_tensor_in_its_field(const Model& model) {
    for (const RawTensor& t : tensors_) {
      SCOPED_TRACE(t.name);
      const Tensor* loaded = tensor_named(model, t.name);
      ASSERT_NE(loaded, nullptr);
      EXPECT_EQ(loaded->shape, t.shape);
      ASSERT_FALSE(loaded->data.empty());
      EXPECT_EQ(loaded->data.front(), first_value_of(t.name));
      EXPECT_EQ(loaded->data.back(),
                first_value_of(t.name) + 0.25f * static_cast<float>(loaded->data.size() - 1));
    }
  }

  json config_;
  std::vector<RawTensor> tensors_;
  std::map<std::string, float> first_values_;  // by name: what add() started each tensor at
  TempDir dir_;
};

TEST_F(ModelLoaderTest, LoadsEveryTensorIntoItsField) {
  write();
  expect_every_tensor_in_its_field(load_model(dir_.path()));
}

TEST_F(ModelLoaderTest, LoadsShardedCheckpoint) {
  write(3);
  const Model model = load_model(dir_.path());
  EXPECT_EQ(model.weights.layers[1].down_proj.data.front(),
            first_value_of("model.layers.1.mlp.down_proj.weight"));
  EXPECT_EQ(model.weights.lm_head.data.front(), first_value_of("lm_head.weight"));
}

// A full download of a Mistral repository also holds consolidated.safetensors (the weights under
// mistral_inference's names), and a shard index names the files that hold the weights.
TEST_F(ModelLoaderTest, LoadsTheIndexedShardsOrAllButConsolidatedFiles) {
  write(3);
  {
    std::ofstream stray(dir_.path() / "consolidated.safetensors", std::ios::binary);
    stray << "not read";
  }
  EXPECT_EQ(load_model(dir_.path()).weights.lm_head.data.front(), first_value_of("lm_head.weight"));
  {
    std::ofstream stray(dir_.path() / "model-extra.safetensors", std::ios::binary);
    stray << "not named by the index";
  }
  EXPECT_NE(load_error(), "") << "without an index every other *.safetensors is read";
  std::vector<std::string> shards;
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path()))
    if (entry.path().extension() == ".safetensors" && entry.path().filename().string().starts_with("model-0"))
      shards.push_back(entry.path().filename().string());
  ASSERT_EQ(shards.size(), 3u);
  json index = {{"metadata", json::object()}, {"weight_map", json::object()}};
  for (size_t i = 0; i < shards.size(); ++i)
    index["weight_map"]["tensor" + std::to_string(i)] = shards[i];
  std::ofstream(dir_.path() / kShardIndexFile) << index.dump();
  EXPECT_EQ(load_model(dir_.path()).weights.lm_head.data.front(), first_value_of("lm_head.weight"));
  index["weight_map"]["missing"] = "model-99999-of-99999.safetensors";
  std::ofstream(dir_.path() / kShardIndexFile) << index.dump();
  EXPECT_NE(load_error().find("does not hold"), std::string::npos) << load_error();
}

TEST(WeightFileNames, TheIndexNamesTheShardsElseAllButConsolidatedOnes) {
  const std::vector<std::string> names = {"model-2.safetensors", "consolidated.safetensors",
                                          "model-1.safetensors"};
  EXPECT_EQ(weight_file_names(names, ""),
            (std::vector<std::string>{"model-1.safetensors", "model-2.safetensors"}));
  EXPECT_EQ(
      weight_file_names(names, R"({"weight_map": {"a": "model-2.safetensors", "b": "model-2.safetensors"}})"),
      std::vector<std::string>{"model-2.safetensors"});
  EXPECT_THROW(weight_file_names(names, R"({"metadata": {}})"), ModelLoadError);
}

TEST_F(ModelLoaderTest, TiedEmbeddingsIgnoreLmHeadAndRotaryTables) {
  config_["tie_word_embeddings"] = true;
  tensors_.push_back(f32_tensor("model.layers.0.self_attn.rotary_emb.inv_freq", {2}));
  write();  // lm_head.weight still present: some exporters keep the copy
  const Model model = load_model(dir_.path());
  EXPECT_TRUE(model.weights.lm_head.data.empty());
  EXPECT_EQ(&model.weights.output_projection(), &model.weights.embed_tokens);
}

TEST_F(ModelLoaderTest, ConvertsHalfPrecisionTensors) {
  tensor("model.norm.weight") = {
      "model.norm.weight",
      "BF16",
      {8},
      raw_bytes(std::vector<uint16_t>{0x3F80, 0xBF80, 0x4000, 0x0001, 0x8000, 0x3E80, 0x7F7F, 0x4049})};
  tensor("model.layers.0.input_layernorm.weight") = {
      "model.layers.0.input_layernorm.weight",
      "F16",
      {8},
      raw_bytes(std::vector<uint16_t>{0x3C00, 0xBC00, 0x4000, 0x0001, 0x8000, 0x3400, 0x7BFF, 0x4248})};
  write();
  const Model model = load_model(dir_.path());
  EXPECT_EQ(model.weights.final_norm.data,
            (std::vector<float>{1.0f, -1.0f, 2.0f, 0x1p-133f, -0.0f, 0.25f, 0x1.fep127f, 3.140625f}));
  EXPECT_TRUE(std::signbit(model.weights.final_norm.data[4]));
  EXPECT_EQ(model.weights.layers[0].input_norm.data,
            (std::vector<float>{1.0f, -1.0f, 2.0f, 0x1p-24f, -0.0f, 0.25f, 65504.0f, 3.140625f}));
}

// WeightLoading::kDeferred (how kvserve loads a checkpoint for the GPU): every tensor has its shape
// and a mapping of its bytes, no float32 copy, and materializing gives the host load bit for bit,
// from mixed dtypes and shards, even after the files are deleted (the mappings keep them).
TEST_F(ModelLoaderTest, DeferredLoadMapsTheFilesAndMaterializesToTheHostLoad) {
  tensor("model.norm.weight") = {
      "model.norm.weight", "BF16", {8}, raw_bytes(std::vector<uint16_t>(8, 0x3F81))};
  tensor("model.layers.1.input_layernorm.weight") = {
      "model.layers.1.input_layernorm.weight", "F16", {8}, raw_bytes(std::vector<uint16_t>(8, 0x3C01))};
  write(2);
  const Model host = load_model(dir_.path());
  Model deferred = load_model(dir_.path(), WeightLoading::kDeferred);
  EXPECT_FALSE(has_deferred_weights(host));
  EXPECT_TRUE(has_deferred_weights(deferred));
  for (const RawTensor& t : tensors_) {
    SCOPED_TRACE(t.name);
    const Tensor* h = tensor_named(host, t.name);
    const Tensor* d = tensor_named(deferred, t.name);
    EXPECT_FALSE(h->mapped) << "a host load lets its files go";
    EXPECT_EQ(d->shape, h->shape);
    EXPECT_TRUE(d->data.empty());
    ASSERT_TRUE(d->mapped);
    EXPECT_EQ(d->mapped->tensor->name, t.name);
    EXPECT_EQ(safetensors_dtype_name(d->mapped->tensor->dtype), t.dtype);
  }

  std::filesystem::remove_all(dir_.path());
  const Model copy = deferred;  // copies share the mappings
  deferred = Model{};
  Model materialized = copy;
  materialize_weights(materialized);
  EXPECT_FALSE(has_deferred_weights(materialized));
  EXPECT_TRUE(has_deferred_weights(copy)) << "materializing a copy leaves the original as it was";
  for (const RawTensor& t : tensors_) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(tensor_named(materialized, t.name)->data, tensor_named(host, t.name)->data);
  }
  EXPECT_EQ(materialized.weights.final_norm.data.front(), bf16_bits_to_float(0x3F81));
}

// The checks come before any value is read, so a deferred load reports a broken checkpoint as a
// host load does.
TEST_F(ModelLoaderTest, DeferredLoadReportsProblemsAsTheHostLoadDoes) {
  remove("model.layers.1.mlp.up_proj.weight");
  write();
  const std::string host = load_error();
  EXPECT_EQ(model_load_error([&] { load_model(dir_.path(), WeightLoading::kDeferred); }), host);
  EXPECT_TRUE(contains_all(host, {"model.layers.1.mlp.up_proj.weight", "missing"}));
}

TEST_F(ModelLoaderTest, NotADirectory) {
  const std::filesystem::path missing = dir_ / "nope";
  const std::string message = model_load_error([&] { load_model(missing); });
  EXPECT_TRUE(contains_all(message, {missing.string(), "not a directory"}));
}

TEST_F(ModelLoaderTest, MissingConfig) {
  write();
  std::filesystem::remove(dir_ / "config.json");
  EXPECT_TRUE(contains_all(load_error(), {(dir_ / "config.json").string(), "cannot open"}));
}

TEST_F(ModelLoaderTest, InvalidConfig) {
  config_["hidden_size"] = "8";
  write();
  EXPECT_TRUE(contains_all(load_error(), {(dir_ / "config.json").string(), "'hidden_size'", "a string"}));
}

TEST_F(ModelLoaderTest, NoSafetensorsFile) {
  write();
  std::filesystem::rename(dir_ / "model.safetensors", dir_ / "pytorch_model.bin");
  EXPECT_TRUE(contains_all(load_error(), {dir_.path().string(), "no *.safetensors file"}));
}

TEST_F(ModelLoaderTest, MissingTensor) {
  remove("model.layers.1.mlp.gate_proj.weight");
  write();
  EXPECT_TRUE(contains_all(
      load_error(), {dir_.path().string(), "model.safetensors",
                     "tensor 'model.layers.1.mlp.gate_proj.weight' is missing", "num_hidden_layers is 2"}));
}

TEST_F(ModelLoaderTest, MissingLmHeadSuggestsTying) {
  remove("lm_head.weight");
  write();
  EXPECT_TRUE(contains_all(load_error(), {"'lm_head.weight' is missing", "tie_word_embeddings"}));
}

TEST_F(ModelLoaderTest, WrongShape) {
  tensor("model.layers.1.mlp.up_proj.weight").shape = {8, 12};
  write();
  EXPECT_TRUE(
      contains_all(load_error(), {(dir_ / "model.safetensors").string() +
                                  ": tensor 'model.layers.1.mlp.up_proj.weight' has shape [8, 12], "
                                  "expected [12, 8] (intermediate_size x hidden_size from config.json)"}));
}

TEST_F(ModelLoaderTest, WrongHeadCountShowsInShape) {
  config_["num_key_value_heads"] = 2;  // the file has 1 KV head: k_proj is [4, 8]
  write();
  EXPECT_TRUE(contains_all(load_error(), {"'model.layers.0.self_attn.k_proj.weight' has shape [4, 8]",
                                          "expected [8, 8] (num_key_value_heads*head_dim x hidden_size"}));
}

TEST_F(ModelLoaderTest, TensorDuplicatedAcrossShards) {
  write(2);
  const RawTensor extra = tensor("model.norm.weight");
  write_file(dir_ / "model-extra.safetensors", safetensors_bytes(std::vector<RawTensor>{extra}));
  EXPECT_TRUE(contains_all(load_error(), {"model-extra.safetensors", "tensor 'model.norm.weight' is also in",
                                          "model-0000", "exactly one shard"}));
}

TEST_F(ModelLoaderTest, UnexpectedTensor) {
  tensors_.push_back(f32_tensor("transformer.h.0.attn.c_attn.weight", {2, 2}));
  write();
  EXPECT_TRUE(contains_all(load_error(), {(dir_ / "model.safetensors").string(),
                                          "unexpected tensor 'transformer.h.0.attn.c_attn.weight'",
                                          "LlamaForCausalLM with 2 layers"}));
}

TEST_F(ModelLoaderTest, ExtraLayerPointsAtLayerCount) {
  add("model.layers.2.input_layernorm.weight", {8});
  write();
  EXPECT_TRUE(contains_all(
      load_error(), {"unexpected tensor 'model.layers.2.input_layernorm.weight'", "num_hidden_layers is 2"}));
}

TEST_F(ModelLoaderTest, ArchitectureMismatchBothWays) {
  config_["architectures"] = {"Qwen2ForCausalLM"};  // Qwen2 expects q/k/v biases the file lacks
  write();
  EXPECT_TRUE(contains_all(load_error(), {"'model.layers.0.self_attn.q_proj.bias' is missing", "Qwen2"}));

  config_["architectures"] = {"LlamaForCausalLM"};
  add("model.layers.0.self_attn.q_proj.bias", {8});
  write();
  EXPECT_TRUE(contains_all(load_error(), {"unexpected tensor 'model.layers.0.self_attn.q_proj.bias'"}));
}

TEST_F(ModelLoaderTest, Qwen3NeedsItsHeadNormsAndSaysWhich) {
  config_["architectures"] = {"Qwen3ForCausalLM"};
  config_["head_dim"] = 4;
  write();  // a Llama checkpoint: no q_norm / k_norm
  EXPECT_TRUE(contains_all(load_error(), {"'model.layers.0.self_attn.q_norm.weight' is missing",
                                          "Qwen3ForCausalLM", "q_norm/k_norm"}));
  for (int i = 0; i < 2; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "self_attn.q_norm.weight", {4});
    add(p + "self_attn.k_norm.weight", {4});
  }
  write();
  const Model model = load_model(dir_.path());
  EXPECT_EQ(model.weights.layers[1].k_norm.shape, std::vector<int64_t>{4});
  EXPECT_EQ(model.weights.layers[1].k_norm.data[0], first_value_of("model.layers.1.self_attn.k_norm.weight"));

  config_["attention_bias"] = true;  // then the q/k/v biases are required too
  write();
  EXPECT_TRUE(
      contains_all(load_error(), {"'model.layers.0.self_attn.q_proj.bias' is missing", "attention_bias"}));
}

// Gemma 2 and 3 have four norms a layer: post_attention_layernorm then normalizes the attention's
// output and pre_feedforward_layernorm is the MLP's input norm; a two-norm checkpoint says so.
TEST_F(ModelLoaderTest, Gemma2SandwichNormsGoToTheirFields) {
  config_["architectures"] = {"Gemma2ForCausalLM"};
  config_["head_dim"] = 4;
  write();  // a Llama checkpoint: two norms a layer
  EXPECT_TRUE(contains_all(load_error(), {"'model.layers.0.pre_feedforward_layernorm.weight' is missing",
                                          "Gemma2ForCausalLM", "four norms"}));
  for (int i = 0; i < 2; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "pre_feedforward_layernorm.weight", {8});
    add(p + "post_feedforward_layernorm.weight", {8});
  }
  write();
  const Model model = load_model(dir_.path());
  const LayerWeights& l = model.weights.layers[1];
  EXPECT_EQ(l.attn_output_norm.data.at(0), first_value_of("model.layers.1.post_attention_layernorm.weight"));
  EXPECT_EQ(l.mlp_norm.data.at(0), first_value_of("model.layers.1.pre_feedforward_layernorm.weight"));
  EXPECT_EQ(l.mlp_output_norm.data.at(0), first_value_of("model.layers.1.post_feedforward_layernorm.weight"));
  EXPECT_EQ(&model.weights.output_projection(), &model.weights.lm_head) << "tie_word_embeddings false";
}

// A mixture-of-experts layer (Qwen-MoE's names): the router, each expert's three projections and
// the shared expert land in their fields; dense layers (mlp_only_layers) keep the plain MLP; a
// missing or surplus expert names the experts setting.
TEST_F(ModelLoaderTest, QwenMoeLayersLoadTheirRouterExpertsAndSharedExpert) {
  config_["architectures"] = {"Qwen2MoeForCausalLM"};
  config_.update({{"qkv_bias", false},
                  {"num_experts", 3},
                  {"num_experts_per_tok", 2},
                  {"moe_intermediate_size", 6},
                  {"shared_expert_intermediate_size", 10},
                  {"mlp_only_layers", {0}}});
  write();  // the Llama checkpoint: a dense MLP in layer 1 too
  EXPECT_TRUE(
      contains_all(load_error(), {"'model.layers.1.mlp.gate.weight' is missing", "3 experts (num_experts)"}));

  const std::string p = "model.layers.1.mlp.";
  for (const char* dense : {"gate_proj", "up_proj", "down_proj"})
    remove(p + dense + ".weight");
  add(p + "gate.weight", {3, 8});
  for (int e = 0; e < 3; ++e) {
    const std::string ep = p + "experts." + std::to_string(e) + ".";
    add(ep + "gate_proj.weight", {6, 8});
    add(ep + "up_proj.weight", {6, 8});
    add(ep + "down_proj.weight", {8, 6});
  }
  add(p + "shared_expert.gate_proj.weight", {10, 8});
  add(p + "shared_expert.up_proj.weight", {10, 8});
  add(p + "shared_expert.down_proj.weight", {8, 10});
  add(p + "shared_expert_gate.weight", {1, 8});
  write();
  const Model model = load_model(dir_.path());
  expect_every_tensor_in_its_field(model);
  EXPECT_TRUE(model.weights.layers[1].gate_proj.shape.empty()) << "a routed layer has no dense MLP";
  EXPECT_EQ(model.weights.layers[0].experts.size(), 0u) << "mlp_only_layers";

  // The deferred load maps the same tensors, and materializes to the host load.
  Model deferred = load_model(dir_.path(), WeightLoading::kDeferred);
  EXPECT_TRUE(deferred.weights.layers[1].experts[2].down_proj.mapped.has_value());
  materialize_weights(deferred);
  EXPECT_EQ(deferred.weights.layers[1].experts[2].down_proj.data,
            model.weights.layers[1].experts[2].down_proj.data);
  EXPECT_EQ(deferred.weights.layers[1].shared_expert_gate.data,
            model.weights.layers[1].shared_expert_gate.data);

  add(p + "experts.3.gate_proj.weight", {6, 8});
  write();
  EXPECT_TRUE(contains_all(load_error(), {"unexpected tensor 'model.layers.1.mlp.experts.3.gate_proj.weight'",
                                          "3 experts (num_experts)"}));
  remove(p + "experts.3.gate_proj.weight");
  remove(p + "experts.2.down_proj.weight");
  write();
  EXPECT_TRUE(contains_all(load_error(), {"'model.layers.1.mlp.experts.2.down_proj.weight' is missing",
                                          "3 experts (num_experts) in each routed layer"}));
  add(p + "experts.2.down_proj.weight", {8, 7});
  write();
  EXPECT_TRUE(contains_all(load_error(), {"'model.layers.1.mlp.experts.2.down_proj.weight' has shape [8, 7]",
                                          "expected [8, 6]", "moe_intermediate_size"}));
  remove(p + "experts.2.down_proj.weight");
  add(p + "experts.2.down_proj.weight", {8, 6});

  // A corrupt expert count is the router's shape, as config.json says it, whatever the files hold.
  config_["num_experts"] = 2000000000;
  config_["num_experts_per_tok"] = 2;
  write();
  EXPECT_TRUE(contains_all(load_error(), {"'model.layers.1.mlp.gate.weight' has shape [3, 8]",
                                          "expected [2000000000, 8]", "num_experts x hidden_size"}));
  // A routed layer that config.json makes dense names the fields that decide it.
  config_["num_experts"] = 3;
  config_["mlp_only_layers"] = {0, 1};
  write();
  EXPECT_TRUE(contains_all(load_error(), {"'model.layers.1.mlp.gate_proj.weight' is missing", "dense",
                                          "decoder_sparse_step 1, mlp_only_layers"}));
}

// Mixtral names its experts' gate, down and up projections w1, w2 and w3, under block_sparse_moe,
// in every layer.
TEST_F(ModelLoaderTest, MixtralExpertsAreW1W3W2UnderBlockSparseMoe) {
  config_["architectures"] = {"MixtralForCausalLM"};
  config_.update({{"num_local_experts", 2}, {"num_experts_per_tok", 1}});
  for (int i = 0; i < 2; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* dense : {"gate_proj", "up_proj", "down_proj"})
      remove(p + "mlp." + dense + ".weight");
    add(p + "block_sparse_moe.gate.weight", {2, 8});
    for (int e = 0; e < 2; ++e) {
      const std::string ep = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      add(ep + "w1.weight", {12, 8});
      add(ep + "w2.weight", {8, 12});
      add(ep + "w3.weight", {12, 8});
    }
  }
  write();
  const Model model = load_model(dir_.path());
  const MlpWeights& e = model.weights.layers[1].experts.at(1);
  const std::string ep = "model.layers.1.block_sparse_moe.experts.1.";
  EXPECT_EQ(e.gate_proj.data.at(0), first_value_of(ep + "w1.weight"));
  EXPECT_EQ(e.up_proj.data.at(0), first_value_of(ep + "w3.weight"));
  EXPECT_EQ(e.down_proj.data.at(0), first_value_of(ep + "w2.weight"));
  EXPECT_EQ(e.down_proj.shape, (std::vector<int64_t>{8, 12})) << "intermediate_size wide";
  EXPECT_EQ(model.weights.layers[0].router.data.at(0),
            first_value_of("model.layers.0.block_sparse_moe.gate.weight"));
  EXPECT_TRUE(model.weights.layers[0].shared_expert_gate.shape.empty()) << "no shared expert";
}

// Phi-3 stores q|k|v as one qkv_proj and gate|up as one gate_up_proj, rows one after another: each
// weight is its block of rows, in the host load and in the deferred one (where it is a range of
// the mapped tensor, for the GPU to copy), and a checkpoint with the projections apart, or fused
// for another head count, says what is wrong.
TEST_F(ModelLoaderTest, Phi3SplitsItsFusedProjectionsIntoRowBlocks) {
  config_["architectures"] = {"Phi3ForCausalLM"};
  write();  // the Llama checkpoint: separate projections
  EXPECT_TRUE(contains_all(load_error(), {"'model.layers.0.self_attn.qkv_proj.weight' is missing",
                                          "Phi3ForCausalLM stores q, k and v as one qkv_proj"}));

  for (int i = 0; i < 2; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* name : {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                             "mlp.gate_proj.weight", "mlp.up_proj.weight"})
      remove(p + name);
    add(p + "self_attn.qkv_proj.weight", {8 + 4 + 4, 8});  // 2 heads + 2 x 1 KV head, head_dim 4
    add(p + "mlp.gate_up_proj.weight", {2 * 12, 8});
  }
  // One fused tensor in BF16, so a range starts at a 2-byte element offset, not a 4-byte one.
  std::vector<uint16_t> bf16(24 * 8);
  for (size_t i = 0; i < bf16.size(); ++i)
    bf16[i] = static_cast<uint16_t>(0x3F80 + i);  // 1.0 and up, each element distinct
  tensor("model.layers.1.mlp.gate_up_proj.weight") = {
      "model.layers.1.mlp.gate_up_proj.weight", "BF16", {24, 8}, raw_bytes(bf16)};
  write();

  const Model host = load_model(dir_.path());
  Model deferred = load_model(dir_.path(), WeightLoading::kDeferred);
  const auto expect_rows = [&](int layer, const Tensor LayerWeights::*weight, const char* fused,
                               std::vector<int64_t> shape, int64_t first_row) {
    SCOPED_TRACE(std::string(fused) + " layer " + std::to_string(layer) + " from row " +
                 std::to_string(first_row));
    const Tensor& h = host.weights.layers[static_cast<size_t>(layer)].*weight;
    const Tensor& d = deferred.weights.layers[static_cast<size_t>(layer)].*weight;
    EXPECT_EQ(h.shape, shape);
    EXPECT_EQ(d.shape, shape);
    ASSERT_TRUE(d.mapped);
    EXPECT_EQ(d.mapped->tensor->name, "model.layers." + std::to_string(layer) + "." + fused);
    EXPECT_EQ(d.mapped->first, static_cast<size_t>(first_row * 8));
    EXPECT_EQ(d.mapped->count, static_cast<size_t>(shape[0] * 8));
    ASSERT_EQ(h.data.size(), static_cast<size_t>(shape[0] * 8));
    // The expected values straight from the bytes written.
    const RawTensor& stored = tensor("model.layers." + std::to_string(layer) + "." + fused);
    for (size_t i = 0; i < h.data.size(); ++i) {
      const size_t element = static_cast<size_t>(first_row * 8) + i;
      float want;
      if (stored.dtype == "BF16") {
        want = bf16_bits_to_float(bf16[element]);
      } else {
        std::memcpy(&want, stored.bytes.data() + element * sizeof(float), sizeof(float));
      }
      ASSERT_EQ(h.data[i], want) << "element " << i;
    }
  };
  for (int layer = 0; layer < 2; ++layer) {
    expect_rows(layer, &LayerWeights::q_proj, "self_attn.qkv_proj.weight", {8, 8}, 0);
    expect_rows(layer, &LayerWeights::k_proj, "self_attn.qkv_proj.weight", {4, 8}, 8);
    expect_rows(layer, &LayerWeights::v_proj, "self_attn.qkv_proj.weight", {4, 8}, 12);
    expect_rows(layer, &LayerWeights::gate_proj, "mlp.gate_up_proj.weight", {12, 8}, 0);
    expect_rows(layer, &LayerWeights::up_proj, "mlp.gate_up_proj.weight", {12, 8}, 12);
  }
  materialize_weights(deferred);
  for (size_t layer = 0; layer < 2; ++layer) {
    const LayerWeights& h = host.weights.layers[layer];
    const LayerWeights& d = deferred.weights.layers[layer];
    for (auto weight : {&LayerWeights::q_proj, &LayerWeights::k_proj, &LayerWeights::v_proj,
                        &LayerWeights::gate_proj, &LayerWeights::up_proj, &LayerWeights::down_proj})
      EXPECT_EQ((d.*weight).data, (h.*weight).data) << "layer " << layer;
  }

  config_["num_key_value_heads"] = 2;  // q|k|v would then be 8 + 8 + 8 rows
  write();
  EXPECT_TRUE(
      contains_all(load_error(), {"'model.layers.0.self_attn.qkv_proj.weight' has shape [16, 8]",
                                  "expected [24, 8]", "(num_attention_heads + 2*num_key_value_heads)"}));
}

// The linear weights as an FP8 checkpoint stores them: E4M3 bytes and one scale per block of
// block_rows x block_cols. Blocks of 3 x 5 divide none of the 8/4/12-row, 8/12-column weights, so
// edge blocks are partial; half the layers keep F32 scales, the other half BF16.
class Fp8LoaderTest : public ModelLoaderTest {
 protected:
  static constexpr int64_t kBlockRows = 3, kBlockCols = 5;

  Fp8LoaderTest() {
    config_["quantization_config"] = {
        {"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {kBlockRows, kBlockCols}}};
    for (int i = 0; i < 2; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      for (const char* w :
           {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"})
        quantize(p + w, /*bf16_scales=*/i == 1);
    }
  }

  // Replaces the F32 tensor `name` by E4M3 bytes (every finite pattern, in a scrambled order) and
  // adds its scales.
  void quantize(const std::string& name, bool bf16_scales) {
    RawTensor& t = tensor(name);
    const int64_t rows = t.shape[0], cols = t.shape[1];
    std::string bytes(static_cast<size_t>(rows * cols), '\0');
    for (size_t i = 0; i < bytes.size(); ++i) {
      uint8_t b = static_cast<uint8_t>((i * 37 + name.size()) % 0xFE);
      if ((b & 0x7F) == 0x7F) b ^= 1;  // not NaN
      bytes[i] = static_cast<char>(b);
    }
    t = {name, "F8_E4M3", {rows, cols}, bytes};
    const int64_t scale_rows = (rows + kBlockRows - 1) / kBlockRows;
    const int64_t scale_cols = (cols + kBlockCols - 1) / kBlockCols;
    std::vector<float> scales(static_cast<size_t>(scale_rows * scale_cols));
    for (size_t j = 0; j < scales.size(); ++j)
      scales[j] = 0.5f + 0.125f * static_cast<float>(j);  // exact in BF16 too
    std::vector<uint16_t> bf16(scales.size());
    for (size_t j = 0; j < scales.size(); ++j)
      bf16[j] = static_cast<uint16_t>(std::bit_cast<uint32_t>(scales[j]) >> 16);
    tensors_.push_back({name + "_scale_inv",
                        bf16_scales ? "BF16" : "F32",
                        {scale_rows, scale_cols},
                        bf16_scales ? raw_bytes(bf16) : raw_bytes(scales)});
  }

  // The weight `name` as written: stored value times its block's scale, from the bytes written.
  std::vector<float> dequantized(const std::string& name) {
    const RawTensor& t = tensor(name);
    const int64_t cols = t.shape[1];
    const int64_t scale_cols = (cols + kBlockCols - 1) / kBlockCols;
    std::vector<float> out(t.bytes.size());
    for (size_t i = 0; i < out.size(); ++i) {
      const int64_t r = static_cast<int64_t>(i) / cols, c = static_cast<int64_t>(i) % cols;
      const float scale = 0.5f + 0.125f * static_cast<float>((r / kBlockRows) * scale_cols + c / kBlockCols);
      out[i] = f8e4m3_bits_to_float(static_cast<uint8_t>(t.bytes[i])) * scale;
    }
    return out;
  }
};

TEST_F(Fp8LoaderTest, WeightsAreTheStoredValuesTimesTheirBlocksScales) {
  write(2);
  const Model host = load_model(dir_.path());
  ASSERT_TRUE(host.config.fp8_weights);
  const Model deferred = load_model(dir_.path(), WeightLoading::kDeferred);
  int quantized = 0;
  for (const RawTensor& t : tensors_) {
    if (t.dtype != "F8_E4M3") continue;
    SCOPED_TRACE(t.name);
    ++quantized;
    const std::vector<float> want = dequantized(t.name);
    EXPECT_EQ(tensor_named(host, t.name)->data, want);
    // What a backend reading the mapping in chunks (the CUDA upload) gets.
    const Tensor& d = *tensor_named(deferred, t.name);
    ASSERT_TRUE(d.mapped && d.mapped->fp8_scales);
    EXPECT_EQ(d.mapped->fp8_scales->tensor->name, t.name + "_scale_inv");
    for (size_t chunk : {size_t{1}, size_t{7}, want.size()}) {
      std::vector<float> pieces(want.size(), -1.0f);
      for (size_t first = 0; first < want.size(); first += chunk) {
        const size_t count = std::min(chunk, want.size() - first);
        mapped_to_float32(*d.mapped, first, std::span<float>(pieces.data() + first, count));
      }
      EXPECT_EQ(pieces, want) << "chunks of " << chunk;
    }
    std::vector<float> past(2);
    EXPECT_THROW(mapped_to_float32(*d.mapped, want.size() - 1, past), std::out_of_range);
  }
  EXPECT_EQ(quantized, 14);
  // Unquantized tensors beside them (norms, embeddings, LM head) load as before.
  EXPECT_EQ(host.weights.lm_head.data.front(), first_value_of("lm_head.weight"));
  EXPECT_FALSE(tensor_named(deferred, "lm_head.weight")->mapped->fp8_scales);
}

// Phi-3's fused q|k|v: each weight's rows find their own scales, even where a block straddles two
// weights (rows 6..8 hold q's last two rows and k's first).
TEST_F(Fp8LoaderTest, FusedProjectionsTakeTheirRowsScales) {
  config_["architectures"] = {"Phi3ForCausalLM"};
  for (int i = 0; i < 2; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* name : {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                             "mlp.gate_proj.weight", "mlp.up_proj.weight"}) {
      remove(p + name);
      remove(p + name + "_scale_inv");
    }
    add(p + "self_attn.qkv_proj.weight", {8 + 4 + 4, 8});
    quantize(p + "self_attn.qkv_proj.weight", i == 1);
    add(p + "mlp.gate_up_proj.weight", {2 * 12, 8});
    quantize(p + "mlp.gate_up_proj.weight", i == 0);
  }
  write();
  const Model host = load_model(dir_.path());
  for (size_t layer = 0; layer < 2; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    const LayerWeights& l = host.weights.layers[layer];
    std::vector<float> qkv = l.q_proj.data;
    qkv.insert(qkv.end(), l.k_proj.data.begin(), l.k_proj.data.end());
    qkv.insert(qkv.end(), l.v_proj.data.begin(), l.v_proj.data.end());
    EXPECT_EQ(qkv, dequantized(p + "self_attn.qkv_proj.weight")) << layer;
    std::vector<float> gate_up = l.gate_proj.data;
    gate_up.insert(gate_up.end(), l.up_proj.data.begin(), l.up_proj.data.end());
    EXPECT_EQ(gate_up, dequantized(p + "mlp.gate_up_proj.weight")) << layer;
  }
}

TEST_F(Fp8LoaderTest, ActivationAndKvScalesAreUnused) {
  // Static activation scales and FP8 KV-cache scales: kvserve computes both unquantized.
  for (const char* name :
       {"self_attn.q_proj.input_scale", "mlp.down_proj.input_scale_ub", "self_attn.k_scale",
        "self_attn.v_scale", "self_attn.kv_scale", "self_attn.k_proj.output_scale",
        "self_attn.v_proj.output_scale", "self_attn.prob_output_scale"})
    add(std::string("model.layers.0.") + name, {1});
  write();
  EXPECT_EQ(tensor_named(load_model(dir_.path()), "model.layers.0.self_attn.q_proj.weight")->data,
            dequantized("model.layers.0.self_attn.q_proj.weight"));
}

TEST_F(Fp8LoaderTest, BrokenScalesAreNamed) {
  const std::string q = "model.layers.1.self_attn.q_proj.weight";
  remove(q + "_scale_inv");
  write();
  EXPECT_TRUE(
      contains_all(load_error(), {"'" + q + "' is stored as F8_E4M3", "its scale '" + q + "_scale_inv'",
                                  "missing", "quant_method \"fp8\""}));

  tensors_.push_back(f32_tensor(q + "_scale_inv", {2, 3}));  // q is 8 x 8: 3 x 2 blocks of 3 x 5
  write();
  EXPECT_TRUE(contains_all(load_error(), {"scale '" + q + "_scale_inv' has shape [2, 3]", "expected [3, 2]",
                                          "3 x 5 block of the weight's [8, 8]"}));

  tensor(q + "_scale_inv") = {q + "_scale_inv", "I32", {3, 2}, raw_bytes(std::vector<int32_t>(6, 1))};
  write();
  EXPECT_TRUE(contains_all(load_error(), {"scale '" + q + "_scale_inv' has dtype I32", "F32, F16 or BF16"}));

  tensor(q + "_scale_inv") = f32_tensor(q + "_scale_inv", {3, 2});
  config_["quantization_config"]["weight_block_size"] = {4, 4};  // the file's scales are 3 x 5 blocks'
  write();
  EXPECT_TRUE(contains_all(load_error(), {"has shape [3, 2]", "expected [2, 2]"}));

  config_.erase("quantization_config");
  write();
  EXPECT_TRUE(
      contains_all(load_error(), {"is stored as F8_E4M3 but config.json has no quantization_config"}));
}

TEST_F(Fp8LoaderTest, AScaleOfAnUnquantizedWeightIsUnexpected) {
  // Applying it would change the weight; ignoring it might be wrong: either way the checkpoint and
  // its config disagree.
  tensors_.push_back(f32_tensor("lm_head.weight_scale_inv", {6, 2}));
  write();
  EXPECT_TRUE(contains_all(load_error(), {"unexpected tensor 'lm_head.weight_scale_inv'"}));
  remove("lm_head.weight_scale_inv");
  tensor("model.norm.weight") = {"model.norm.weight", "F8_E4M3", {8}, std::string(8, '\x38')};
  write();
  EXPECT_TRUE(contains_all(load_error(), {"'model.norm.weight' is stored as F8_E4M3 but is not a matrix"}));
}

// compressed-tensors' strategies, loaded end to end: per channel (scales [rows, 1] or [rows]), per
// group of columns ([rows, ceil(cols / g)]) and per tensor ([], [1] or [1, 1]).
TEST_F(Fp8LoaderTest, ChannelGroupAndTensorScalesLoadEndToEnd) {
  config_["quantization_config"] = {
      {"quant_method", "compressed-tensors"},
      {"format", "float-quantized"},
      {"config_groups",
       {{"group_0", {{"weights", {{"num_bits", 8}, {"type", "float"}, {"strategy", "channel"}}}}}}}};
  std::vector<std::string> weights;
  for (const RawTensor& t : tensors_)
    if (t.dtype == "F8_E4M3") weights.push_back(t.name);
  ASSERT_EQ(weights.size(), 14u);
  // Replaces every weight's scales by `shape` of them, 0.5, 0.75, 1, ... (none 0, which would hide a
  // wrong index), and checks each loaded weight against scale(row, col) of those.
  const auto check = [&](const std::string& what, auto shape_of, auto scale_index) {
    SCOPED_TRACE(what);
    for (const std::string& w : weights) {
      remove(w + "_scale_inv");
      remove(w + "_scale");
      tensors_.push_back(f32_tensor(w + "_scale", shape_of(w, tensor(w).shape[0], tensor(w).shape[1]), 0.5f));
    }
    write();
    const Model model = load_model(dir_.path());
    for (const std::string& w : weights) {
      const RawTensor& stored = tensor(w);
      const int64_t cols = stored.shape[1];
      const std::vector<float>& loaded = tensor_named(model, w)->data;
      ASSERT_EQ(loaded.size(), stored.bytes.size());
      for (size_t i = 0; i < loaded.size(); ++i) {
        const int64_t index =
            scale_index(static_cast<int64_t>(i) / cols, static_cast<int64_t>(i) % cols, cols);
        ASSERT_EQ(loaded[i], f8e4m3_bits_to_float(static_cast<uint8_t>(stored.bytes[i])) *
                                 (0.5f + 0.25f * static_cast<float>(index)))
            << w << " element " << i;
      }
    }
  };
  using Shape = std::vector<int64_t>;
  const auto layer0 = [](const std::string& w) { return w.find("layers.0.") != std::string::npos; };
  check(
      "per channel",
      [&](const std::string& w, int64_t rows, int64_t) {
        return layer0(w) ? Shape{rows, 1} : Shape{rows};
      },
      [](int64_t r, int64_t, int64_t) { return r; });
  config_["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "group";
  config_["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = 5;
  check(
      "per group of 5",
      [](const std::string&, int64_t rows, int64_t cols) {
        return Shape{rows, (cols + 4) / 5};
      },
      [](int64_t r, int64_t c, int64_t cols) { return r * ((cols + 4) / 5) + c / 5; });
  config_["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "tensor";
  check(
      "per tensor",
      [&](const std::string& w, int64_t, int64_t) {
        return w.find("q_proj") != std::string::npos ? Shape{} : layer0(w) ? Shape{1} : Shape{1, 1};
      },
      [](int64_t, int64_t, int64_t) { return 0; });
}

TEST_F(ModelLoaderTest, UnsupportedTensorDtype) {
  tensor("model.layers.0.post_attention_layernorm.weight") = {
      "model.layers.0.post_attention_layernorm.weight", "I32", {8}, raw_bytes(std::vector<int32_t>(8, 1))};
  write();
  EXPECT_TRUE(contains_all(load_error(), {(dir_ / "model.safetensors").string(),
                                          "'model.layers.0.post_attention_layernorm.weight' has dtype I32",
                                          "F32, F16 or BF16, or F8_E4M3 with their scales"}));
}

TEST_F(ModelLoaderTest, TruncatedFile) {
  write(2);
  const std::filesystem::path shard = shard_path(1, 2);
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) - 3);
  EXPECT_TRUE(contains_all(load_error(), {shard.string(), "outside the data region", "truncated"}));
}

TEST_F(ModelLoaderTest, CorruptHeader) {
  write();
  std::string bytes = read_file(dir_ / "model.safetensors");
  bytes[8] = '!';  // first character of the JSON header
  write_file(dir_ / "model.safetensors", bytes);
  EXPECT_TRUE(contains_all(load_error(), {(dir_ / "model.safetensors").string(), "not valid JSON"}));
}

}  // namespace
}  // namespace kvserve
