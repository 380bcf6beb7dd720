// Generation from a real small model, when one is provided under ../shared/models/ (each model a
// Hugging Face directory). The expected greedy continuation comes from the independent reference
// (scripts/reference/llama_reference.py MODEL_DIR --out tests/data/real_models/NAME.json); the test
// skips with a message where the folder or the expected file is absent.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;

TEST(RealModel, GreedyContinuationMatchesTheReference) {
  const fs::path shared_models = fs::path(KVSERVE_SHARED_DIR) / "models";
  if (!fs::is_directory(shared_models))
    GTEST_SKIP() << shared_models
                 << " is absent: no real model to test (expected on CI machines with shared/)";
  int tested = 0;
  std::string skipped;
  for (const auto& entry : fs::directory_iterator(shared_models)) {
    const fs::path dir = entry.path();
    if (!fs::exists(dir / "config.json") ||
        !(fs::exists(dir / "tokenizer.model") || fs::exists(dir / "tokenizer.json")))
      continue;
    const fs::path fixture =
        fs::path(KVSERVE_TEST_DATA) / "real_models" / (dir.filename().string() + ".json");
    if (!fs::exists(fixture)) {
      skipped += " " + dir.filename().string();
      continue;
    }
    SCOPED_TRACE(dir.string());
    std::ifstream in(fixture);
    const auto expected = nlohmann::json::parse(in);
    const auto prompt = expected.at("prompt_ids").get<std::vector<TokenId>>();
    const auto greedy = expected.at("greedy_ids").get<std::vector<TokenId>>();

    auto model = std::make_shared<const Model>(load_model(dir));
    std::shared_ptr<const Tokenizer> tokenizer = Tokenizer::load_from_model_dir(dir);
    EngineConfig cfg;
    cfg.scheduler.num_blocks = 64;
    cfg.eos_token_ids = model->config.eos_token_ids;
    cfg.tokenizer = tokenizer;
    Engine engine(cfg,
                  std::make_unique<CpuBackend>(model, cfg.scheduler.num_blocks, cfg.scheduler.block_size));
    Request r;
    r.id = "real";
    r.prompt = prompt;
    r.stop.max_tokens = static_cast<int>(greedy.size());
    r.stop.ignore_eos = true;
    const auto result = engine.generate({r})[0];
    ASSERT_TRUE(result.status.ok()) << result.status.message();
    EXPECT_EQ(result.output, greedy);
    std::printf("%s: \"%s\" -> \"%s\"\n", dir.filename().c_str(), expected.value("prompt", "").c_str(),
                result.text.c_str());
    ++tested;
  }
  if (tested == 0)
    GTEST_SKIP() << "no expected output for the model(s) in " << shared_models << ":" << skipped
                 << "; make one with scripts/reference/llama_reference.py MODEL_DIR --out "
                    "tests/data/real_models/NAME.json";
}

}  // namespace
}  // namespace kvserve
