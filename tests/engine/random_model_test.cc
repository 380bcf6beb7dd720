// Random-weight models (engine/random_model.h): the shapes are the published ones, the weights are the
// documented function of (seed, tensor, index) whatever the thread count, their statistics are what
// the scales say, the tiny shape runs through the CPU backend, and bad specs say what to write.
#include "engine/random_model.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "engine/scheduler.h"
#include "engine/step_batch.h"
#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

// Big enough that every linear layer is filled by several threads (more than 65536 elements).
ModelConfig mid_shape() {
  ModelConfig c = *random_model_shape("tiny");
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.vocab_size = 2048;
  c.tie_word_embeddings = false;
  return c;
}

void hash_tensor(uint64_t& h, const Tensor& t) {
  for (float v : t.data) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    h = (h ^ bits) * 0x100000001B3ull;  // FNV-1a over 32-bit words
  }
}

uint64_t weights_hash(const Model& m) {
  uint64_t h = 0xCBF29CE484222325ull;
  const ModelWeights& w = m.weights;
  hash_tensor(h, w.embed_tokens);
  hash_tensor(h, w.final_norm);
  hash_tensor(h, w.lm_head);
  for (const LayerWeights& L : w.layers) {
    for (const Tensor* t : {&L.input_norm, &L.q_proj, &L.k_proj, &L.v_proj, &L.o_proj, &L.mlp_norm,
                            &L.gate_proj, &L.up_proj, &L.down_proj})
      hash_tensor(h, *t);
  }
  return h;
}

struct Moments {
  double mean, sd, max_abs_dev;
};

Moments moments(const Tensor& t) {
  double sum = 0, sq = 0;
  for (float v : t.data)
    sum += v;
  const double mean = sum / static_cast<double>(t.data.size());
  double max_dev = 0;
  for (float v : t.data) {
    sq += (v - mean) * (v - mean);
    max_dev = std::max(max_dev, std::abs(v - mean));
  }
  return {mean, std::sqrt(sq / static_cast<double>(t.data.size())), max_dev};
}

TEST(RandomModel, ShapesMatchThePublishedConfigs) {
  const auto l8 = random_model_shape("llama3-8b");
  ASSERT_TRUE(l8);
  EXPECT_EQ(l8->architecture, "LlamaForCausalLM");
  EXPECT_EQ(l8->num_layers, 32);
  EXPECT_EQ(l8->hidden_size, 4096);
  EXPECT_EQ(l8->num_heads, 32);
  EXPECT_EQ(l8->num_kv_heads, 8);
  EXPECT_EQ(l8->head_dim, 128);
  EXPECT_EQ(l8->intermediate_size, 14336);
  EXPECT_EQ(l8->vocab_size, 128256);
  EXPECT_FALSE(l8->tie_word_embeddings);
  EXPECT_EQ(l8->rope_theta, 500000.0);
  ASSERT_TRUE(l8->rope_scaling);
  EXPECT_EQ(l8->rope_scaling->factor, 8.0);
  EXPECT_EQ(l8->rope_scaling->low_freq_factor, 1.0);
  EXPECT_EQ(l8->rope_scaling->high_freq_factor, 4.0);
  EXPECT_EQ(l8->rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_EQ(l8->max_position_embeddings, 8192);
  EXPECT_EQ(l8->bos_token_id, 128000);
  EXPECT_EQ(l8->eos_token_ids, std::vector<TokenId>{128001});
  EXPECT_EQ(l8->dtype, "bfloat16");
  // Meta-Llama-3-8B's model card / safetensors index: 8,030,261,248 parameters.
  EXPECT_EQ(parameter_count(*l8), 8'030'261'248);

  const auto l1 = random_model_shape("llama3.2-1b");
  ASSERT_TRUE(l1);
  EXPECT_EQ(l1->num_layers, 16);
  EXPECT_EQ(l1->hidden_size, 2048);
  EXPECT_EQ(l1->num_heads, 32);
  EXPECT_EQ(l1->num_kv_heads, 8);
  EXPECT_EQ(l1->head_dim, 64);
  EXPECT_EQ(l1->intermediate_size, 8192);
  EXPECT_EQ(l1->vocab_size, 128256);
  EXPECT_TRUE(l1->tie_word_embeddings);
  ASSERT_TRUE(l1->rope_scaling);
  EXPECT_EQ(l1->rope_scaling->factor, 32.0);
  // Llama-3.2-1B: 1,235,814,400 parameters (embeddings tied).
  EXPECT_EQ(parameter_count(*l1), 1'235'814'400);

  const auto tiny = random_model_shape("tiny");
  ASSERT_TRUE(tiny);
  EXPECT_EQ(tiny->hidden_size, 64);
  EXPECT_EQ(tiny->num_layers, 2);
  EXPECT_EQ(tiny->vocab_size, 512);
  EXPECT_EQ(tiny->num_heads * tiny->head_dim, tiny->hidden_size);

  EXPECT_FALSE(random_model_shape("llama3-70b"));
  EXPECT_FALSE(random_model_shape(""));
}

// Expected values from an independent implementation of the documented definition: Python integers
// for splitmix64 and numpy-free float32 rounding via struct (see docs/performance.md).
TEST(RandomModel, WeightsAreTheDocumentedFunctionOfSeedTensorAndIndex) {
  const Model m = make_random_model(*random_model_shape("tiny"), 42);
  EXPECT_EQ(m.weights.embed_tokens.data[0], 0x1.a660bep-7f);
  EXPECT_EQ(m.weights.embed_tokens.data[1], 0x1.71b93cp-8f);
  EXPECT_EQ(m.weights.layers[0].q_proj.data[1000], -0x1.0bd18p-5f);
  EXPECT_EQ(m.weights.layers[0].input_norm.data[5], 0x1.faff1ep-1f);
  EXPECT_EQ(random_weight(0, 32, 12345, 0.0, 1.0 / std::sqrt(128.0)), -0x1.7a7e78p-3f);
  EXPECT_EQ(random_weight(7, 2, 99, 0.0, 1.0 / 64.0), -0x1.a227aap-8f);
  // Every element of every tensor follows the same definition.
  EXPECT_EQ(m.weights.layers[1].down_proj.data[77],
            random_weight(42, 16 + 16 + 8, 77, 0.0, 1.0 / std::sqrt(128.0)));
  EXPECT_EQ(m.weights.final_norm.data[63], random_weight(42, 1, 63, 1.0, 0.02));
}

TEST(RandomModel, SameWeightsWhateverTheThreadCount) {
  const int saved = omp_get_max_threads();
  const ModelConfig c = mid_shape();
  omp_set_num_threads(1);
  const uint64_t one = weights_hash(make_random_model(c, 5));
  omp_set_num_threads(2);
  const uint64_t two = weights_hash(make_random_model(c, 5));
  omp_set_num_threads(3);
  const uint64_t three = weights_hash(make_random_model(c, 5));
  omp_set_num_threads(saved);
  EXPECT_EQ(one, two);
  EXPECT_EQ(one, three);
  EXPECT_NE(one, weights_hash(make_random_model(c, 6))) << "the seed must change the weights";
}

TEST(RandomModel, StatisticsFollowTheScales) {
  const ModelConfig c = mid_shape();
  const Model m = make_random_model(c, 11);
  const LayerWeights& L = m.weights.layers[1];
  ASSERT_EQ(L.gate_proj.shape, (std::vector<int64_t>{512, 256}));
  ASSERT_EQ(L.down_proj.shape, (std::vector<int64_t>{256, 512}));
  ASSERT_EQ(L.k_proj.shape, (std::vector<int64_t>{64, 256}));
  ASSERT_EQ(m.weights.lm_head.shape, (std::vector<int64_t>{2048, 256}));
  struct Case {
    const Tensor* t;
    double mean, sd;
    const char* name;
  };
  for (const Case& k :
       {Case{&L.gate_proj, 0.0, 1.0 / 16.0, "gate_proj"},
        Case{&L.down_proj, 0.0, 1.0 / std::sqrt(512.0), "down_proj"},
        Case{&L.q_proj, 0.0, 1.0 / 16.0, "q_proj"}, Case{&m.weights.lm_head, 0.0, 1.0 / 16.0, "lm_head"},
        Case{&m.weights.embed_tokens, 0.0, 0.02, "embed_tokens"}}) {
    SCOPED_TRACE(k.name);
    const Moments mo = moments(*k.t);
    const double n = static_cast<double>(k.t->data.size());
    // The mean of n samples has sd sd/sqrt(n): 5 of those; the sd itself within 2% (n >= 65536).
    EXPECT_LT(std::abs(mo.mean - k.mean), 5 * k.sd / std::sqrt(n));
    EXPECT_NEAR(mo.sd, k.sd, 0.02 * k.sd);
    // A sum of four uniforms never leaves +-2 sqrt(3) sd, and reaches past 2 sd in large tensors.
    EXPECT_LE(mo.max_abs_dev, 2 * std::sqrt(3.0) * k.sd * 1.0001);
    EXPECT_GT(mo.max_abs_dev, 2.0 * k.sd);
  }
  for (const Tensor* norm : {&L.input_norm, &L.mlp_norm, &m.weights.final_norm}) {
    const Moments mo = moments(*norm);
    EXPECT_NEAR(mo.mean, 1.0, 0.01);
    EXPECT_NEAR(mo.sd, 0.02, 0.005);
  }
}

TEST(RandomModel, DeferredWeightsHaveShapesAndGeneratorsAndMaterializeToTheHostModel) {
  const ModelConfig c = mid_shape();
  const Model host = make_random_model(c, 9);
  Model deferred = make_random_model(c, 9, WeightLoading::kDeferred);
  EXPECT_FALSE(has_deferred_weights(host));
  EXPECT_TRUE(has_deferred_weights(deferred));

  // Tensor by tensor: the same shapes and generators; no values yet on the deferred side.
  std::vector<const Tensor*> host_tensors, deferred_tensors;
  for_each_tensor(host.weights, [&](const Tensor& t) { host_tensors.push_back(&t); });
  for_each_tensor(deferred.weights, [&](const Tensor& t) { deferred_tensors.push_back(&t); });
  ASSERT_EQ(host_tensors.size(), deferred_tensors.size());
  int present = 0;
  for (size_t i = 0; i < host_tensors.size(); ++i) {
    const Tensor& h = *host_tensors[i];
    const Tensor& d = *deferred_tensors[i];
    SCOPED_TRACE(::testing::Message() << "tensor " << i);
    EXPECT_EQ(h.shape, d.shape);
    EXPECT_TRUE(d.data.empty());
    ASSERT_EQ(h.seeded.has_value(), d.seeded.has_value());
    if (h.shape.empty()) {
      EXPECT_FALSE(h.seeded) << "an absent tensor (bias, tied lm_head) has no generator";
      continue;
    }
    ++present;
    ASSERT_TRUE(h.seeded);
    EXPECT_EQ(h.seeded->key, d.seeded->key);
    EXPECT_EQ(h.seeded->scale, d.seeded->scale);
    EXPECT_EQ(h.seeded->mean, d.seeded->mean);
    // The generator is what the host data holds (first, a middle and the last element).
    for (int64_t idx : {int64_t{0}, h.numel() / 2, h.numel() - 1})
      EXPECT_EQ(seeded_value(*h.seeded, static_cast<uint64_t>(idx)), h.data[static_cast<size_t>(idx)]);
  }
  EXPECT_EQ(present, 2 + 1 + 9 * c.num_layers) << "embed, final norm, lm_head and 9 per layer";

  materialize_weights(deferred);
  EXPECT_FALSE(has_deferred_weights(deferred));
  EXPECT_EQ(weights_hash(deferred), weights_hash(host))
      << "materializing must give the host model bit for bit";
}

TEST(RandomModel, CpuBackendRefusesWeightsThatAreNotOnTheHost) {
  auto deferred =
      std::make_shared<const Model>(load_random_model_spec("random:tiny", WeightLoading::kDeferred));
  try {
    CpuBackend backend(deferred, 8, 8, 1);
    FAIL() << "a model without host weights must be refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("materialize_weights"), std::string::npos) << e.what();
  }
}

TEST(RandomModel, TinyShapeGivesFiniteVariedLogitsThroughTheCpuBackend) {
  auto model = std::make_shared<const Model>(load_random_model_spec("random:tiny:3"));
  SchedulerConfig cfg;
  cfg.block_size = 8;
  cfg.num_blocks = 32;
  Scheduler sched(cfg);
  CpuBackend backend(model, cfg.num_blocks, cfg.block_size, 1);
  BatchBuilder builder;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(sched
                    .add(testing::make_seq("r" + std::to_string(i), testing::iota_prompt(10 + 7 * i, 3 + i),
                                           5, cfg.block_size))
                    .ok());
  }
  const int vocab = model->config.vocab_size;
  int rows = 0;
  while (sched.has_unfinished()) {
    const StepPlan plan = sched.schedule();
    const auto logits = backend.forward(builder.build(plan, cfg.block_size));
    std::vector<TokenId> next(plan.seqs.size(), 0);
    for (size_t s = 0; s < plan.seqs.size(); ++s) {
      if (!plan.seqs[s].emits_token) continue;
      const float* row = logits.data() + s * vocab;
      double sum = 0, sq = 0;
      int best = 0;
      for (int v = 0; v < vocab; ++v) {
        ASSERT_TRUE(std::isfinite(row[v])) << "row " << rows << " token " << v;
        sum += row[v];
        sq += static_cast<double>(row[v]) * row[v];
        if (row[v] > row[best]) best = v;
      }
      const double sd = std::sqrt(sq / vocab - (sum / vocab) * (sum / vocab));
      // Tied embeddings of sd 0.02 against a unit-RMS hidden state of width 64: logits of sd ~0.16.
      EXPECT_GT(sd, 0.02) << "row " << rows;
      EXPECT_LT(sd, 5.0) << "row " << rows;
      next[s] = best;
      ++rows;
    }
    sched.complete_step(plan, next);
  }
  EXPECT_EQ(rows, 15);
}

TEST(RandomModel, EngineServesTheTinyShapeWithoutATokenizer) {
  auto model = std::make_shared<const Model>(load_random_model_spec("random:tiny"));
  EngineConfig cfg;
  cfg.scheduler.block_size = 8;
  cfg.scheduler.num_blocks = 32;
  cfg.scheduler.max_model_len = 256;
  cfg.eos_token_ids = model->config.eos_token_ids;
  Engine engine(cfg,
                std::make_unique<CpuBackend>(model, cfg.scheduler.num_blocks, cfg.scheduler.block_size, 1));
  const auto results = engine.generate({testing::make_request("a", testing::iota_prompt(20, 5), 12)});
  ASSERT_TRUE(results[0].status.ok()) << results[0].status.message();
  EXPECT_EQ(results[0].output.size(), 12u);
}

TEST(RandomModel, SpecsParseAndBadOnesSayWhatToWrite) {
  EXPECT_TRUE(is_random_model_spec("random:tiny"));
  EXPECT_TRUE(is_random_model_spec("random:"));
  EXPECT_FALSE(is_random_model_spec("embedded:tiny-llama"));
  EXPECT_FALSE(is_random_model_spec("/models/random:tiny"));

  const Model m = load_random_model_spec("random:tiny:7");
  EXPECT_EQ(m.dir, "random:tiny:7");
  EXPECT_EQ(weights_hash(m), weights_hash(make_random_model(*random_model_shape("tiny"), 7)));
  EXPECT_EQ(weights_hash(load_random_model_spec("random:tiny")),
            weights_hash(make_random_model(*random_model_shape("tiny"), 0)));

  auto message = [](const std::string& spec) -> std::string {
    try {
      load_random_model_spec(spec);
    } catch (const ModelLoadError& e) {
      return e.what();
    }
    return "(no error)";
  };
  for (const std::string spec : {"random:llama3-70b", "random:", "random::3", "tiny"}) {
    SCOPED_TRACE(spec);
    const std::string msg = message(spec);
    EXPECT_NE(msg.find("'" + spec + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("llama3-8b, llama3.2-1b, tiny"), std::string::npos) << msg;
  }
  for (const std::string spec : {"random:tiny:", "random:tiny:x1", "random:tiny:-1", "random:tiny:1:2",
                                 "random:tiny:99999999999999999999999"}) {
    SCOPED_TRACE(spec);
    const std::string msg = message(spec);
    EXPECT_NE(msg.find("seed"), std::string::npos) << msg;
    EXPECT_NE(msg.find("random:tiny:<seed>"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace kvserve
