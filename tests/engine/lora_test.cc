// LoRA adapters: the PEFT reader (engine/lora.h), the CPU backend applying adapters per sequence,
// and the engine keeping adapters apart in the prefix cache.
//
// Against an independent reference: each adapter under tests/data/loras (scripts/make_tiny_lora.py)
// has an expected.json from scripts/reference/llama_reference.py --lora, which merges the adapter
// into the base weights in float64 (W + scaling * B A, as PEFT's merge_and_unload) and runs the
// plain PyTorch model; the backend applies it unmerged, x W^T + scaling (x A^T) B^T, in float32.
// Tolerance as for the tiny models (cpu_backend_test.cc): 2e-3 on logits, far above float32's
// accumulated rounding here (~1e-4) and far below what a wrong scaling, a missing module or a row
// of a fused projection's B in the wrong place moves (1e-1 and more).
#include "engine/lora.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/checksum_backend.h"
#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "tests/engine/model_files_test_util.h"
#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

using model_test::contains_all;
using model_test::f32_tensor;
using model_test::model_load_error;
using model_test::RawTensor;
using model_test::safetensors_bytes;
using model_test::TempDir;
using model_test::write_file;
using nlohmann::json;

constexpr float kLogitTolerance = 2e-3f;
const std::string kData = std::string(KVSERVE_TEST_DATA);

struct Expected {
  std::vector<TokenId> prompt;
  std::vector<TokenId> greedy;
  std::vector<std::vector<float>> step_logits;
};

Expected read_expected(const std::string& path) {
  std::ifstream in(path);
  const auto j = json::parse(in);
  return {j.at("prompt_ids").get<std::vector<TokenId>>(), j.at("greedy_ids").get<std::vector<TokenId>>(),
          j.at("step_logits").get<std::vector<std::vector<float>>>()};
}

struct TinyLora {
  const char* adapter;  // under tests/data/loras
  const char* base;     // under tests/data/models
};

std::ostream& operator<<(std::ostream& os, const TinyLora& l) {
  return os << l.adapter;
}

class TinyLoraTest : public ::testing::TestWithParam<TinyLora> {
 protected:
  std::string adapter_dir() const { return kData + "/loras/" + GetParam().adapter; }
  std::shared_ptr<const Model> base() const {
    return std::make_shared<const Model>(load_model(kData + "/models/" + GetParam().base));
  }
  LoraAdapter adapter(const Model& model) const {
    return load_lora_adapter(adapter_dir(), GetParam().adapter, model.config);
  }
};

// Logits at every greedy step, the prompt whole and in 3-token chunks, beside a base-model
// sequence in the same batches (so each sequence's rows must get its own adapter, or none).
TEST_P(TinyLoraTest, LogitsMatchTheMergedReferenceBesideTheBaseModel) {
  const Expected with = read_expected(adapter_dir() + "/expected.json");
  const Expected without = read_expected(kData + "/models/" + GetParam().base + "/expected.json");
  ASSERT_EQ(with.prompt, without.prompt);
  const auto model = base();
  std::vector<LoraAdapter> adapters;
  adapters.push_back(adapter(*model));
  for (const int budget : {2048, 3}) {
    SCOPED_TRACE("token budget " + std::to_string(budget));
    SchedulerConfig cfg;
    cfg.block_size = 4;
    cfg.num_blocks = 64;
    cfg.max_num_batched_tokens = budget;
    Scheduler sched(cfg);
    CpuBackend backend(model, cfg.num_blocks, cfg.block_size, 0, adapters);
    BatchBuilder builder;
    for (const int lora : {1, 0}) {
      Request r =
          testing::make_request(lora ? "adapted" : "base", with.prompt, static_cast<int>(with.greedy.size()));
      r.lora_adapter = lora;
      ASSERT_TRUE(sched.add(std::make_unique<Sequence>(r, cfg.block_size, std::vector<TokenId>{})).ok());
    }
    std::map<std::string, int> steps;
    const int vocab = model->config.vocab_size;
    while (sched.has_unfinished()) {
      const StepPlan plan = sched.schedule();
      const auto logits = backend.forward(builder.build(plan, cfg.block_size));
      std::vector<TokenId> next(plan.seqs.size(), 0);
      for (size_t s = 0; s < plan.seqs.size(); ++s) {
        if (!plan.seqs[s].emits_token) continue;
        const std::string& id = plan.seqs[s].seq->id();
        const Expected& exp = id == "adapted" ? with : without;
        const int step = steps[id]++;
        float max_diff = 0.0f;
        for (int v = 0; v < vocab; ++v)
          max_diff = std::max(max_diff, std::abs(logits[s * vocab + v] - exp.step_logits.at(step)[v]));
        EXPECT_LT(max_diff, kLogitTolerance) << id << " step " << step;
        next[s] = exp.greedy.at(step);
      }
      sched.complete_step(plan, next);
    }
    EXPECT_EQ(steps["adapted"], static_cast<int>(with.greedy.size()));
    EXPECT_EQ(steps["base"], static_cast<int>(without.greedy.size()));
  }
}

// Through the engine: the same prompt under the adapter and the base model, at once and again
// later, keeps each its own reference's greedy tokens: the prefix cache serves each from its own
// blocks (a repeat hits the cache), never from the other's.
TEST_P(TinyLoraTest, TheSamePromptUnderTheAdapterAndTheBaseKeepsItsOwnTokensAndCache) {
  const Expected with = read_expected(adapter_dir() + "/expected.json");
  const Expected without = read_expected(kData + "/models/" + GetParam().base + "/expected.json");
  const auto model = base();
  std::vector<LoraAdapter> adapters;
  adapters.push_back(adapter(*model));
  EngineConfig cfg;
  cfg.scheduler.block_size = 4;
  cfg.scheduler.num_blocks = 64;
  cfg.scheduler.max_model_len = 512;
  Engine engine(cfg, std::make_unique<CpuBackend>(model, 64, 4, 0, std::move(adapters)));
  const auto request = [&](std::string id, int lora) {
    Request r = testing::make_request(std::move(id), with.prompt, static_cast<int>(with.greedy.size()));
    r.lora_adapter = lora;
    return r;
  };
  const auto first = engine.generate({request("a", 1), request("b", 0)});
  EXPECT_EQ(first[0].output, with.greedy);
  EXPECT_EQ(first[1].output, without.greedy);
  const auto again = engine.generate({request("b2", 0), request("a2", 1)});
  EXPECT_EQ(again[0].output, without.greedy);
  EXPECT_EQ(again[1].output, with.greedy);
  const int cacheable = (static_cast<int>(with.prompt.size()) - 1) / 4 * 4;
  EXPECT_EQ(again[0].num_cached_prompt_tokens, cacheable) << "the base model's own blocks";
  EXPECT_EQ(again[1].num_cached_prompt_tokens, cacheable) << "the adapter's own blocks";
  EXPECT_EQ(engine.scheduler().pool().num_free_blocks(), 64);

  // An embedding under the adapter: the merged reference's final hidden state (float32 against
  // float64, as TinyModel's embedding test: 1e-3).
  std::ifstream in(adapter_dir() + "/expected.json");
  const auto hidden = json::parse(in).at("prompt_final_hidden").get<std::vector<float>>();
  Request embed = request("e", 1);
  embed.stop.max_tokens = 1;
  embed.embedding = {true, 0, false};
  const auto embedded = engine.generate({embed});
  ASSERT_EQ(embedded[0].embedding.size(), hidden.size());
  for (size_t i = 0; i < hidden.size(); ++i)
    EXPECT_NEAR(embedded[0].embedding[i], hidden[i], 1e-3) << i;

  Request unknown = request("c", 2);
  const auto refused = engine.generate({unknown});
  EXPECT_EQ(refused[0].status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains_all(refused[0].status.message(), {"LoRA adapter 2 is not served", "has 1"}));
}

INSTANTIATE_TEST_SUITE_P(Adapters, TinyLoraTest,
                         ::testing::Values(TinyLora{"tiny-llama3-gqa-lora", "tiny-llama3-gqa"},
                                           TinyLora{"tiny-llama3-gqa-lora-qv", "tiny-llama3-gqa"},
                                           TinyLora{"tiny-phi3-lora", "tiny-phi3"},
                                           TinyLora{"tiny-qwen3-lora", "tiny-qwen3"},
                                           TinyLora{"tiny-gemma2-lora", "tiny-gemma2"},
                                           TinyLora{"tiny-granite-lora", "tiny-granite"},
                                           TinyLora{"tiny-qwen3-moe-lora", "tiny-qwen3-moe"}),
                         [](const auto& info) {
                           std::string name = info.param.adapter;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// Two adapters of one base model and the base itself, in one engine: 30 requests over a handful of
// prompts, each under one of the three, give each its own reference's tokens.
TEST(TwoLoraAdapters, ServeTogetherWithTheBaseModel) {
  const auto model = std::make_shared<const Model>(load_model(kData + "/models/tiny-llama3-gqa"));
  std::vector<LoraAdapter> adapters;
  for (const char* name : {"tiny-llama3-gqa-lora", "tiny-llama3-gqa-lora-qv"})
    adapters.push_back(load_lora_adapter(kData + "/loras/" + name, name, model->config));
  const std::vector<Expected> expected = {
      read_expected(kData + "/models/tiny-llama3-gqa/expected.json"),
      read_expected(kData + "/loras/tiny-llama3-gqa-lora/expected.json"),
      read_expected(kData + "/loras/tiny-llama3-gqa-lora-qv/expected.json")};
  EngineConfig cfg;
  cfg.scheduler.block_size = 4;
  cfg.scheduler.num_blocks = 40;  // 30 requests of 26 tokens need more: some are preempted
  cfg.scheduler.max_num_batched_tokens = 24;
  cfg.scheduler.max_model_len = 512;
  Engine engine(cfg, std::make_unique<CpuBackend>(model, 40, 4, 0, std::move(adapters)));
  std::vector<Request> requests;
  for (int i = 0; i < 30; ++i) {
    Request r = testing::make_request("r" + std::to_string(i), expected[0].prompt,
                                      static_cast<int>(expected[0].greedy.size()));
    r.lora_adapter = (i * 7) % 3;
    requests.push_back(r);
  }
  const auto results = engine.generate(requests);
  for (int i = 0; i < 30; ++i)
    EXPECT_EQ(results[i].output, expected[static_cast<size_t>(requests[i].lora_adapter)].greedy)
        << "request " << i;
  EXPECT_GT(engine.scheduler().stats().num_preemptions, 0u);
  EXPECT_EQ(engine.scheduler().pool().num_free_blocks(), 40);
}

// The checksum model's adapters are other hashes of the context, and its cache entries remember the
// adapter that wrote them (reading another's throws): random prompts sharing prefixes across three
// adapters and the base, chunked and preempted, each keep their own reference tokens.
TEST(LoraPrefixCache, NoBlockIsSharedAcrossAdapters) {
  constexpr int kVocab = 1000, kBlocks = 48, kBlockSize = 4;
  EngineConfig cfg;
  cfg.scheduler.block_size = kBlockSize;
  cfg.scheduler.num_blocks = kBlocks;
  cfg.scheduler.max_num_batched_tokens = 32;
  cfg.scheduler.max_model_len = 256;
  Engine engine(cfg, std::make_unique<ChecksumBackend>(kBlocks, kBlockSize, kVocab, /*num_lora_adapters=*/3));
  std::mt19937 rng(5);
  const std::vector<TokenId> shared = testing::iota_prompt(13, 200);
  std::vector<Request> requests;
  for (int i = 0; i < 40; ++i) {
    std::vector<TokenId> prompt(shared.begin(), shared.begin() + 5 + static_cast<int>(rng() % 9));
    for (int k = static_cast<int>(rng() % 4); k > 0; --k)
      prompt.push_back(static_cast<TokenId>(300 + rng() % 500));
    Request r = testing::make_request("r" + std::to_string(i), prompt, 6);
    r.lora_adapter = static_cast<int>(rng() % 4);
    requests.push_back(r);
  }
  // Twice: the second round finds the first's blocks in the cache.
  for (int round = 0; round < 2; ++round) {
    const auto results = engine.generate(requests);
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(results[i].status.ok()) << results[i].status.message();
      std::vector<TokenId> context = requests[i].prompt;
      std::vector<TokenId> want;
      for (int k = 0; k < 6; ++k) {
        want.push_back(ChecksumBackend::reference_next_token(context, kVocab, requests[i].lora_adapter));
        context.push_back(want.back());
      }
      EXPECT_EQ(results[i].output, want) << "round " << round << " request " << i;
      if (round == 1) {
        EXPECT_GT(results[i].num_cached_prompt_tokens, 0) << "request " << i;
      }
    }
  }
  EXPECT_EQ(engine.scheduler().pool().num_free_blocks(), kBlocks);
}

// At block size 1 a block is one token: an adapter's first block must not be found as the base
// model's block after a token equal to the adapter's number (or any other), nor the other way round.
TEST(LoraPrefixCache, OneTokenBlocksStayApartToo) {
  constexpr int kVocab = 1000, kBlocks = 64;
  EngineConfig cfg;
  cfg.scheduler.block_size = 1;
  cfg.scheduler.num_blocks = kBlocks;
  cfg.scheduler.max_model_len = 32;
  Engine engine(cfg, std::make_unique<ChecksumBackend>(kBlocks, 1, kVocab, /*num_lora_adapters=*/2));
  const std::vector<TokenId> p = {5, 7, 9, 11};
  std::vector<Request> requests;
  for (int round = 0; round < 2; ++round)
    for (const int adapter : {1, 2, 0}) {
      Request under = testing::make_request("a" + std::to_string(adapter), p, 3);
      under.lora_adapter = adapter;
      std::vector<TokenId> shifted = {adapter};  // the base model after the adapter's number
      shifted.insert(shifted.end(), p.begin(), p.end());
      Request base = testing::make_request("b" + std::to_string(adapter), shifted, 3);
      for (const Request& r : {under, base}) {
        const auto result = engine.generate({r});
        ASSERT_TRUE(result[0].status.ok()) << result[0].status.message();
        std::vector<TokenId> context = r.prompt, want;
        for (int k = 0; k < 3; ++k) {
          want.push_back(ChecksumBackend::reference_next_token(context, kVocab, r.lora_adapter));
          context.push_back(want.back());
        }
        EXPECT_EQ(result[0].output, want) << r.id << " round " << round;
        if (round == 1) {
          EXPECT_EQ(result[0].num_cached_prompt_tokens, static_cast<int>(r.prompt.size()) - 1) << r.id;
        }
      }
    }
  EXPECT_EQ(engine.scheduler().pool().num_free_blocks(), kBlocks);
}

// ---- The reader, on adapters written here.

class LoraFilesTest : public ::testing::Test {
 protected:
  LoraFilesTest() : model_(load_model(kData + "/models/tiny-llama3-gqa")) {
    config_ = {{"peft_type", "LORA"},
               {"r", 2},
               {"lora_alpha", 6},
               {"target_modules", {"q_proj", "down_proj"}},
               {"bias", "none"},
               {"use_rslora", false},
               {"modules_to_save", nullptr},
               {"fan_in_fan_out", false}};
    // tiny-llama3-gqa: hidden 64, q 8 x 16 = 128 rows, intermediate 160.
    tensors_ = {f32_tensor("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", {2, 64}, 0.5f),
                f32_tensor("base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight", {128, 2}, -1.0f),
                f32_tensor("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", {2, 160}, 0.25f),
                f32_tensor("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight", {64, 2}, 2.0f)};
  }
  void write() {
    write_file(dir_ / "adapter_config.json", config_.dump());
    write_file(dir_ / "adapter_model.safetensors", safetensors_bytes(tensors_));
  }
  LoraAdapter load() { return load_lora_adapter(dir_.path(), "mine", model_.config); }
  std::string error() {
    return model_load_error([&] { load(); });
  }

  Model model_;
  json config_;
  std::vector<RawTensor> tensors_;
  TempDir dir_;
};

TEST_F(LoraFilesTest, ReadsEachPairIntoItsLayerAndProjection) {
  write();
  const LoraAdapter a = load();
  EXPECT_EQ(a.name, "mine");
  EXPECT_EQ(a.rank, 2);
  EXPECT_FLOAT_EQ(a.scaling, 3.0f);  // lora_alpha / r
  ASSERT_EQ(a.layers.size(), 2u);
  const LoraPair& q = a.layers[1][kLoraQ];
  EXPECT_EQ(q.rank, 2);
  EXPECT_EQ(q.in, 64);
  EXPECT_EQ(q.out, 128);
  EXPECT_EQ(q.a.front(), 0.5f);
  EXPECT_EQ(q.b.back(), -1.0f + 0.25f * 255);
  const LoraPair& down = a.layers[0][kLoraDown];
  EXPECT_EQ(down.in, 160);
  EXPECT_EQ(down.out, 64);
  for (const auto target : {kLoraK, kLoraV, kLoraO, kLoraGate, kLoraUp})
    EXPECT_EQ(a.layers[1][target].rank, 0) << "untargeted: left alone";
  EXPECT_EQ(a.layers[0][kLoraQ].rank, 0);

  config_["use_rslora"] = true;
  write();
  EXPECT_FLOAT_EQ(load().scaling, static_cast<float>(6.0 / std::sqrt(2.0)));
}

TEST_F(LoraFilesTest, ApplyAddsTheScaledLowRankProduct) {
  // y += s * (x A^T) B^T on two rows, against the sum written out.
  LoraPair p;
  p.rank = 2;
  p.in = 3;
  p.out = 2;
  p.a = {1, 0, 2, 0, 1, -1};  // [2 x 3]
  p.b = {1, 2, -1, 0.5f};     // [2 x 2]
  const std::vector<float> x = {1, 2, 3, -1, 0, 1};
  std::vector<float> y = {10, 20, 30, 40};
  std::vector<float> scratch;
  apply_lora(p, 0.5f, x.data(), 2, y.data(), scratch);
  // Row 0: x A^T = (1 + 6, 2 - 3) = (7, -1); times B^T = (7 - 2, -7 - 0.5) = (5, -7.5); halved.
  // Row 1: x A^T = (-1 + 2, 0 - 1) = (1, -1); times B^T = (1 - 2, -1 - 0.5) = (-1, -1.5); halved.
  EXPECT_EQ(y, (std::vector<float>{12.5f, 16.25f, 29.5f, 39.25f}));
}

TEST_F(LoraFilesTest, WhatIsNotAppliedIsRefusedNamingIt) {
  const auto refused = [&](const char* key, json value, std::initializer_list<std::string> parts) {
    json saved = config_;
    config_[key] = std::move(value);
    write();
    const std::string message = error();
    EXPECT_TRUE(contains_all(message, parts)) << message;
    config_ = saved;
  };
  refused("use_dora", true, {"DoRA", "'use_dora'"});
  refused("modules_to_save", {"lm_head"}, {"modules_to_save"});
  refused("rank_pattern", {{"q_proj", 4}}, {"per-module ranks"});
  refused("bias", "lora_only", {"train biases", "\"lora_only\""});
  refused("fan_in_fan_out", true, {"fan_in_fan_out"});
  refused("peft_type", "IA3", {"peft_type \"IA3\"", "LoRA"});
  refused("r", 0, {"'r'", "[1, 1024]"});
  refused("r", 2048, {"'r'", "[1, 1024]"});
  refused("lora_alpha", "8", {"'lora_alpha' must be a positive number"});
  refused("lora_alpha", 1e300, {"beyond float range"});
  refused("lora_bias", true, {"lora_bias"});
  refused("use_rslora", "yes", {"'use_rslora' must be true or false"});
  write_file(dir_ / "adapter_config.json", "[1, 2]");
  EXPECT_TRUE(contains_all(error(), {"adapter_config.json: not a JSON object"}));
  write();
  EXPECT_NO_THROW(load());
}

// A mixture-of-experts model's adapters adapt its attention: an adapter of an expert, or of the dense
// MLP some of its layers keep, is refused naming the limit.
TEST(LoraMoe, AdaptersOfTheMlpAreRefused) {
  const Model moe = load_model(kData + "/models/tiny-qwen3-moe");
  TempDir dir;
  write_file(
      dir / "adapter_config.json",
      json{{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 2}, {"target_modules", {"gate_proj"}}}.dump());
  for (const std::string module : {"mlp.experts.0.gate_proj", "mlp.gate_proj"}) {
    SCOPED_TRACE(module);
    const std::string layer = module == "mlp.gate_proj" ? "1" : "0";  // layer 1 is dense (mlp_only_layers)
    const std::string name = "base_model.model.model.layers." + layer + "." + module;
    write_file(dir / "adapter_model.safetensors",
               safetensors_bytes({f32_tensor(name + ".lora_A.weight", {2, 64}),
                                  f32_tensor(name + ".lora_B.weight", {32, 2})}));
    const std::string message = model_load_error([&] { load_lora_adapter(dir.path(), "moe", moe.config); });
    EXPECT_TRUE(contains_all(message, {"adapts '" + module + "'", "Qwen3MoeForCausalLM",
                                       "mixture-of-experts model's attention only"}))
        << message;
  }
}

TEST_F(LoraFilesTest, TensorsThatDoNotFitTheBaseModelAreNamed) {
  const auto refused = [&](std::vector<RawTensor> tensors, std::initializer_list<std::string> parts) {
    const auto saved = tensors_;
    tensors_ = std::move(tensors);
    write();
    const std::string message = error();
    EXPECT_TRUE(contains_all(message, parts)) << message;
    tensors_ = saved;
  };
  auto wrong_rank = tensors_;
  wrong_rank[0] = f32_tensor(wrong_rank[0].name, {4, 64});
  refused(wrong_rank, {"q_proj.lora_A.weight' has shape [4, 64], expected [2, 64]", "r = 2"});
  auto wrong_width = tensors_;
  wrong_width[1] = f32_tensor(wrong_width[1].name, {64, 2});
  refused(wrong_width, {"lora_B.weight' has shape [64, 2], expected [128, 2]", "another model"});
  auto past_layers = tensors_;
  past_layers.push_back(f32_tensor("base_model.model.model.layers.7.mlp.up_proj.lora_A.weight", {2, 64}));
  refused(past_layers, {"adapts layer 7, but the base model has 2"});
  auto half = tensors_;
  half.pop_back();
  refused(half, {"mlp.down_proj has lora_A but no lora_B"});
  auto fused = tensors_;
  fused.push_back(f32_tensor("base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight", {2, 64}));
  refused(fused, {"adapts 'self_attn.qkv_proj', which a LlamaForCausalLM layer does not have"});
  auto embedding = tensors_;
  embedding.push_back(f32_tensor("base_model.model.model.embed_tokens.lora_embedding_A", {2, 512}));
  refused(embedding, {"embeddings or the LM head"});
  auto stray = tensors_;
  stray.push_back(f32_tensor("something_else", {1}));
  refused(stray, {"unexpected tensor 'something_else'"});
  refused({}, {"holds no LoRA weights"});
  auto twice = tensors_;  // the same pair under a base model's own prefix too
  twice.push_back(f32_tensor("base_model.model.layers.1.self_attn.q_proj.lora_A.weight", {2, 64}));
  refused(twice, {"both adapt layer 1's self_attn.q_proj", "keep one"});
  // A base model saved on its own (embedding models): its adapters name the layers without "model.".
  auto bare = tensors_;
  for (RawTensor& t : bare)
    t.name.replace(0, std::string("base_model.model.model.").size(), "base_model.model.");
  tensors_.swap(bare);
  write();
  EXPECT_EQ(load().layers[1][kLoraQ].rank, 2);
  tensors_.swap(bare);

  std::filesystem::remove(dir_ / "adapter_model.safetensors");
  write_file(dir_ / "adapter_model.bin", "pickle");
  EXPECT_TRUE(contains_all(error(), {"adapter_model.safetensors: missing", "adapter_model.bin"}));
  std::filesystem::remove(dir_ / "adapter_config.json");
  EXPECT_TRUE(contains_all(error(), {"adapter_config.json: cannot open", "PEFT's save_pretrained"}));
}

}  // namespace
}  // namespace kvserve
