// build_backend (server/backend_factory.h): what kvserve and kvserve-offline run on. A model loaded
// with deferred weights (as kvserve loads random:<shape> and checkpoints) must serve on the CPU
// backend exactly as the host-loaded model does; the pool follows the size flags; bad choices say
// what to change.
#include "server/backend_factory.h"

#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/random_model.h"
#include "engine/scheduler.h"
#include "engine/step_batch.h"
#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

SchedulerConfig small_scheduler() {
  SchedulerConfig cfg;
  cfg.block_size = 8;
  cfg.max_model_len = 256;
  return cfg;
}

// Logits of every token-emitting row of a two-request workload, run to completion on `backend`.
std::vector<float> run_logits(Backend& backend, int num_blocks, int vocab) {
  SchedulerConfig cfg = small_scheduler();
  cfg.num_blocks = num_blocks;
  Scheduler sched(cfg);
  BatchBuilder builder;
  EXPECT_TRUE(sched.add(testing::make_seq("a", testing::iota_prompt(13, 3), 4, cfg.block_size)).ok());
  EXPECT_TRUE(sched.add(testing::make_seq("b", testing::iota_prompt(21, 40), 4, cfg.block_size)).ok());
  std::vector<float> all;
  while (sched.has_unfinished()) {
    const StepPlan plan = sched.schedule();
    const auto logits = backend.forward(builder.build(plan, cfg.block_size));
    std::vector<TokenId> next(plan.seqs.size(), 0);
    for (size_t s = 0; s < plan.seqs.size(); ++s) {
      if (!plan.seqs[s].emits_token) continue;
      const float* row = logits.data() + s * vocab;
      all.insert(all.end(), row, row + vocab);
      next[s] = static_cast<TokenId>((s * 31 + all.size()) % vocab);  // any valid token
    }
    sched.complete_step(plan, next);
  }
  return all;
}

void expect_cpu_serves_deferred_as_host(std::shared_ptr<const Model> deferred,
                                        std::shared_ptr<const Model> host) {
  ASSERT_TRUE(has_deferred_weights(*deferred));
  BackendChoice choice;
  choice.kind = "cpu";
  choice.num_kv_blocks = 64;
  choice.cpu_threads = 1;
  BuiltBackend built = build_backend(choice, deferred, small_scheduler());
  ASSERT_EQ(built.num_blocks, 64);
  EXPECT_EQ(built.backend->name(), "cpu");
  EXPECT_TRUE(has_deferred_weights(*deferred)) << "the caller's model is not changed";

  CpuBackend reference(host, 64, 8, 1);
  const int vocab = host->config.vocab_size;
  const std::vector<float> got = run_logits(*built.backend, 64, vocab);
  const std::vector<float> want = run_logits(reference, 64, vocab);
  ASSERT_EQ(got.size(), want.size());
  ASSERT_FALSE(got.empty());
  // Same weights, same arithmetic, one thread each: bit for bit.
  EXPECT_EQ(got, want);
}

TEST(BuildBackend, TheCpuBackendServesADeferredRandomModelAsTheHostGeneratedOne) {
  expect_cpu_serves_deferred_as_host(
      std::make_shared<const Model>(load_random_model_spec("random:tiny:4", WeightLoading::kDeferred)),
      std::make_shared<const Model>(load_random_model_spec("random:tiny:4")));
}

TEST(BuildBackend, TheCpuBackendServesAMappedCheckpointAsTheHostLoadedOne) {
  const std::string dir = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama";
  expect_cpu_serves_deferred_as_host(std::make_shared<const Model>(load_model(dir, WeightLoading::kDeferred)),
                                     std::make_shared<const Model>(load_model(dir)));
}

TEST(BuildBackend, SizesTheCpuPoolFromTheMemoryBudget) {
  auto model = std::make_shared<const Model>(load_random_model_spec("random:tiny"));
  BackendChoice choice;
  choice.kind = "cpu";
  choice.kv_cache_gib = 1.0 / 1024;  // 1 MiB
  choice.cpu_threads = 1;
  const BuiltBackend built = build_backend(choice, model, small_scheduler());
  const size_t per_block = CpuBackend::kv_bytes_per_token(model->config) * 8;
  EXPECT_EQ(built.num_blocks, static_cast<int>((size_t{1} << 20) / per_block));
  EXPECT_NE(built.description.find("backend cpu"), std::string::npos) << built.description;
}

// "auto" does not pick the CUDA backend for a mixture-of-experts model until that path has run on a
// GPU: the CPU backend serves it, and the log line says why.
TEST(BuildBackend, AutoServesAMixtureOfExpertsModelOnTheCpu) {
  const std::string dir = std::string(KVSERVE_TEST_DATA) + "/models/tiny-qwen2-moe";
  auto model = std::make_shared<const Model>(load_model(dir, WeightLoading::kDeferred));
  EXPECT_EQ(resolve_backend_kind("auto", model->config), "cpu");
  EXPECT_EQ(resolve_backend_kind("cuda", model->config), "cuda")
      << "asked for by name: refused by the backend";
  BackendChoice choice;
  choice.kind = "auto";
  choice.num_kv_blocks = 64;
  choice.cpu_threads = 1;
  const BuiltBackend built = build_backend(choice, model, small_scheduler());
  EXPECT_EQ(built.backend->name(), "cpu");
  EXPECT_NE(built.description.find("mixture-of-experts model, whose CUDA path has not yet been checked"),
            std::string::npos)
      << built.description;
}

TEST(BuildBackend, AnUnknownKindSaysWhatToUse) {
  auto model = std::make_shared<const Model>(load_random_model_spec("random:tiny", WeightLoading::kDeferred));
  BackendChoice choice;
  choice.kind = "tpu";
  try {
    build_backend(choice, model, small_scheduler());
    FAIL() << "an unknown backend must be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("use auto, cpu or cuda"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvserve
