// Inputs found by the fuzz targets in tests/fuzz that once crashed, leaked or misbehaved, kept as
// plain tests so that every build checks them, not only the clang fuzz build.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "engine/safetensors.h"
#include "tests/engine/model_files_test_util.h"

namespace kvserve {
namespace {

using model_test::contains_all;
using model_test::f32_tensor;
using model_test::model_load_error;
using model_test::RawTensor;
using model_test::safetensors_bytes;
using model_test::TempDir;
using model_test::write_file;

// A complete one-layer checkpoint (vocab 4, hidden 2, one head of dim 2, intermediate 2, tied).
std::vector<RawTensor> one_layer_tensors() {
  std::vector<RawTensor> t;
  t.push_back(f32_tensor("model.embed_tokens.weight", {4, 2}));
  const std::string p = "model.layers.0.";
  t.push_back(f32_tensor(p + "input_layernorm.weight", {2}));
  t.push_back(f32_tensor(p + "self_attn.q_proj.weight", {2, 2}));
  t.push_back(f32_tensor(p + "self_attn.k_proj.weight", {2, 2}));
  t.push_back(f32_tensor(p + "self_attn.v_proj.weight", {2, 2}));
  t.push_back(f32_tensor(p + "self_attn.o_proj.weight", {2, 2}));
  t.push_back(f32_tensor(p + "post_attention_layernorm.weight", {2}));
  t.push_back(f32_tensor(p + "mlp.gate_proj.weight", {2, 2}));
  t.push_back(f32_tensor(p + "mlp.up_proj.weight", {2, 2}));
  t.push_back(f32_tensor(p + "mlp.down_proj.weight", {2, 2}));
  t.push_back(f32_tensor("model.norm.weight", {2}));
  return t;
}

nlohmann::json one_layer_config(long long num_layers) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", 4},
          {"hidden_size", 2},
          {"intermediate_size", 2},
          {"num_hidden_layers", num_layers},
          {"num_attention_heads", 1},
          {"tie_word_embeddings", true},
          {"torch_dtype", "float32"}};
}

// fuzz_model_files: num_hidden_layers near 2^31 in an otherwise valid 3 KB directory made the
// loader size its layer vector and expected-tensor list from it (hundreds of gigabytes: bad_alloc
// or the OOM killer instead of a message). It must fail at once, naming the first missing tensor.
TEST(FuzzRegression, HugeLayerCountIsAMissingTensorNotAnAllocation) {
  for (const long long layers : {2LL, 1000000LL, static_cast<long long>(std::numeric_limits<int>::max())}) {
    SCOPED_TRACE(layers);
    TempDir dir;
    write_file(dir / "config.json", one_layer_config(layers).dump());
    write_file(dir / "model.safetensors", safetensors_bytes(one_layer_tensors()));
    EXPECT_TRUE(contains_all(model_load_error([&] { load_model(dir.path()); }),
                             {"tensor 'model.layers.1.input_layernorm.weight' is missing",
                              "num_hidden_layers is " + std::to_string(layers)}));
  }
}

// fuzz_model_files: a 1-byte dtype with a zero dimension after huge ones spans 0 bytes, so the
// header passed every check, but SafetensorsTensor::numel() overflowed int64 on the way to 0
// (undefined behaviour; UBSan reported it). Such a shape is refused; ones whose running product
// fits still open, with numel() 0.
TEST(FuzzRegression, ShapeWhoseElementCountOverflowsIsRefused) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  write_file(path, safetensors_bytes(R"({"t":{"dtype":"U8","shape":[2147483647,2147483647,3,0],)"
                                     R"("data_offsets":[0,0]}})",
                                     ""));
  EXPECT_TRUE(contains_all(model_load_error([&] { SafetensorsFile file(path); }),
                           {path.string(), "'t'", "[2147483647, 2147483647, 3, 0]", "overflows 64 bits"}));

  write_file(path, safetensors_bytes(R"({"t":{"dtype":"U8","shape":[2147483647,2147483647,0],)"
                                     R"("data_offsets":[0,0]}})",
                                     ""));
  const SafetensorsFile file(path);
  ASSERT_NE(file.find("t"), nullptr);
  EXPECT_EQ(file.find("t")->numel(), 0);
}

TEST(FuzzRegression, TheOneLayerCheckpointOfTheseTestsLoads) {
  TempDir dir;
  write_file(dir / "config.json", one_layer_config(1).dump());
  write_file(dir / "model.safetensors", safetensors_bytes(one_layer_tensors()));
  const Model model = load_model(dir.path());
  EXPECT_EQ(model.weights.layers.size(), 1u);
  EXPECT_EQ(model.weights.embed_tokens.shape, (std::vector<int64_t>{4, 2}));
}

}  // namespace
}  // namespace kvserve
