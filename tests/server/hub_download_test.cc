// Fetching models from the Hugging Face Hub (server/hub_download.h) against a fake Hub and CDN on
// loopback (tests/server/fake_hub.h): the cache layout other Hub clients share, nothing fetched
// twice, the cache serving offline or when the Hub is unreachable, tokens (sent to the Hub, never
// to the CDN), errors that say what to change, resumed downloads, checksums, and sharded weights.
#include "server/hub_download.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/model.h"
#include "tests/server/fake_hub.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;
using testing::FakeHub;
using testing::read_file;

const std::string kTinyLlama = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama";
const std::vector<std::string> kTinyLlamaFiles = {"config.json", "model.safetensors", "tokenizer.model",
                                                  "tokenizer_config.json"};

class HubDownload : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = fs::temp_directory_path() / ("kvserve-hub-test-" + std::to_string(::getpid()) + "-" +
                                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(cache_);
    hub_.add_model_dir(kTinyLlama, kTinyLlamaFiles);
    // What a real repository also holds, which kvserve does not read.
    hub_.add("README.md", "# tiny", false);
    hub_.add("pytorch_model.bin", "not read", true);
    hub_.add("consolidated.safetensors", "mistral_inference's copy", true);
    settings_.endpoint = hub_.endpoint();
    settings_.cache_dir = cache_;
  }
  void TearDown() override { fs::remove_all(cache_); }

  fs::path repo_dir() const { return cache_ / "models--kvserve-test--tiny-llama"; }
  fs::path fetch() { return fetch_hub_model(hub_.repo, "main", settings_); }
  // The message fetch() throws, or "" when it does not.
  std::string fetch_error() {
    try {
      fetch();
    } catch (const ModelLoadError& e) {
      return e.what();
    }
    return "";
  }

  FakeHub hub_;
  HubSettings settings_;
  fs::path cache_;
};

TEST_F(HubDownload, FetchesWhatKvserveReadsIntoTheSharedCacheLayout) {
  hub_.require_token("secret");
  settings_.token = "secret";
  const fs::path dir = fetch();
  EXPECT_EQ(dir, repo_dir() / "snapshots" / hub_.commit);
  std::ifstream ref(repo_dir() / "refs" / "main");
  std::string commit;
  ref >> commit;
  EXPECT_EQ(commit, hub_.commit);
  for (const std::string& name : kTinyLlamaFiles) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(fs::is_symlink(dir / name));
    const fs::path target = fs::read_symlink(dir / name);
    EXPECT_EQ(target.parent_path(), fs::path("../../blobs"));
    const std::string content = read_file(kTinyLlama + "/" + name);
    const bool large = name.ends_with(".safetensors") || name.ends_with(".model");
    EXPECT_EQ(target.filename().string(), (FakeHub::File{content, large}.etag()))
        << "blobs are named by ETag";
    EXPECT_TRUE(fs::is_regular_file(repo_dir() / "blobs" / target.filename()));
    EXPECT_EQ(read_file(dir / name), read_file(kTinyLlama + "/" + name));
  }
  for (const char* skipped : {"README.md", "pytorch_model.bin", "consolidated.safetensors"})
    EXPECT_FALSE(fs::exists(dir / skipped)) << skipped;
  for (const auto& entry : fs::directory_iterator(repo_dir() / "blobs"))
    EXPECT_FALSE(entry.path().string().ends_with(".incomplete")) << entry.path();
  EXPECT_GT(hub_.authorized_requests, 0);
  EXPECT_FALSE(hub_.cdn_got_a_token()) << "the token went to the CDN";
  // The directory loads as the original does.
  const Model model = load_model(dir);
  EXPECT_EQ(model.config.num_layers, load_model(kTinyLlama).config.num_layers);
}

TEST_F(HubDownload, NothingIsFetchedTwice) {
  fetch();
  const int fetched = hub_.content_requests;
  EXPECT_EQ(fetched, static_cast<int>(kTinyLlamaFiles.size()));
  EXPECT_EQ(fetch(), repo_dir() / "snapshots" / hub_.commit);
  EXPECT_EQ(hub_.content_requests, fetched);
  // A revision named by its commit finds the same files.
  EXPECT_EQ(fetch_hub_model(hub_.repo, hub_.commit, settings_), repo_dir() / "snapshots" / hub_.commit);
  EXPECT_EQ(hub_.content_requests, fetched);
}

TEST_F(HubDownload, TheCacheServesOfflineAndWhenTheHubIsUnreachable) {
  settings_.offline = true;
  EXPECT_NE(fetch_error().find("HF_HUB_OFFLINE"), std::string::npos) << fetch_error();
  settings_.offline = false;
  const fs::path dir = fetch();

  const int fetched = hub_.content_requests;
  settings_.offline = true;
  EXPECT_EQ(fetch(), dir);
  settings_.offline = false;
  settings_.endpoint = "http://127.0.0.1:1";  // nothing listens there
  EXPECT_EQ(fetch(), dir);
  EXPECT_EQ(hub_.content_requests, fetched);

  // The Hub failing on its side serves the cache too; a snapshot missing its weights does not.
  settings_.endpoint = hub_.endpoint();
  hub_.set_api_status(503);
  EXPECT_EQ(fetch(), dir);
  fs::remove(dir / "model.safetensors");
  EXPECT_NE(fetch_error().find("HTTP 503"), std::string::npos) << fetch_error();
  settings_.offline = true;
  EXPECT_NE(fetch_error().find("not in the Hub cache"), std::string::npos) << fetch_error();
  // Numbered shards without an index count as whole only when every one is there.
  for (const char* shard : {"model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors"})
    std::ofstream(dir / shard) << "x";
  EXPECT_NE(fetch_error().find("not in the Hub cache"), std::string::npos) << fetch_error();
  std::ofstream(dir / "model-00002-of-00003.safetensors") << "x";
  EXPECT_EQ(fetch(), dir);
  settings_.offline = false;
  hub_.set_api_status(200);

  fs::remove_all(cache_);
  settings_.endpoint = "http://127.0.0.1:1";
  const std::string error = fetch_error();
  EXPECT_NE(error.find("cannot reach http://127.0.0.1:1"), std::string::npos) << error;
}

TEST_F(HubDownload, RefusalsSayWhatToChange) {
  hub_.require_token("secret");
  std::string error = fetch_error();
  EXPECT_NE(error.find("HF_TOKEN"), std::string::npos) << error;
  EXPECT_NE(error.find("gated"), std::string::npos) << error;
  settings_.token = "wrong";
  error = fetch_error();
  EXPECT_NE(error.find("check that HF_TOKEN is valid"), std::string::npos) << error;
  settings_.token = "secret";
  try {
    fetch_hub_model("kvserve-test/no-such-model", "main", settings_);
    ADD_FAILURE() << "no error";
  } catch (const ModelLoadError& e) {
    EXPECT_NE(std::string(e.what()).find("check the model's name"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fetch_hub_model(hub_.repo, "../../etc", settings_), ModelLoadError);
  EXPECT_FALSE(fs::exists(cache_ / "models--kvserve-test--no-such-model" / "snapshots"));
}

TEST_F(HubDownload, AnInterruptedDownloadResumesWhereItStopped) {
  const std::string weights = read_file(kTinyLlama + "/model.safetensors");
  const std::string etag = FakeHub::File{weights, true}.etag();
  fs::create_directories(repo_dir() / "blobs");
  {
    std::ofstream partial(repo_dir() / "blobs" / (etag + ".incomplete"), std::ios::binary);
    partial << weights.substr(0, weights.size() / 3);
  }
  const fs::path dir = fetch();
  EXPECT_EQ(read_file(dir / "model.safetensors"), weights);
  EXPECT_EQ(hub_.ranges_seen(),
            std::vector<std::string>{"bytes=" + std::to_string(weights.size() / 3) + "-"});
}

TEST_F(HubDownload, ATransferThatBreaksOffResumesWithinTheRun) {
  settings_.retry_delay = std::chrono::milliseconds(10);
  const std::string weights = read_file(kTinyLlama + "/model.safetensors");
  hub_.drop("model.safetensors", weights.size() / 2, 2);
  EXPECT_EQ(read_file(fetch() / "model.safetensors"), weights);
  const std::vector<std::string> ranges = hub_.ranges_seen();
  ASSERT_EQ(ranges.size(), 2u) << "two resumptions";
  for (const std::string& range : ranges)
    EXPECT_EQ(range, "bytes=" + std::to_string(weights.size() / 2) + "-");

  // Breaking off every time: after kHubFetchAttempts tries it fails, and the part stays for the next run.
  fs::remove_all(cache_);
  hub_.drop("model.safetensors", weights.size() / 2, kHubFetchAttempts + 10);
  const std::string error = fetch_error();
  EXPECT_NE(error.find("broke off"), std::string::npos) << error;
  EXPECT_NE(error.find("run kvserve again to resume"), std::string::npos) << error;
  hub_.drop("model.safetensors", 0, 0);
  EXPECT_EQ(read_file(fetch() / "model.safetensors"), weights);
}

TEST_F(HubDownload, ACorruptDownloadNeverEntersTheCache) {
  hub_.set_corrupt("model.safetensors");
  const std::string error = fetch_error();
  EXPECT_NE(error.find("does not match its SHA-256"), std::string::npos) << error;
  for (const auto& entry : fs::directory_iterator(repo_dir() / "blobs"))
    EXPECT_EQ(entry.path().filename().string().find(
                  FakeHub::File{read_file(kTinyLlama + "/model.safetensors"), true}.etag()),
              std::string::npos)
        << entry.path();
  EXPECT_FALSE(fs::exists(repo_dir() / "refs" / "main"))
      << "an incomplete snapshot must not be the revision's";
  hub_.set_corrupt("");
  EXPECT_EQ(read_file(fetch() / "model.safetensors"), read_file(kTinyLlama + "/model.safetensors"));
}

TEST_F(HubDownload, ShardedWeightsAreTheOnesTheIndexNames) {
  hub_.add("model-00001-of-00002.safetensors", "shard one", true);
  hub_.add("model-00002-of-00002.safetensors", "shard two", true);
  hub_.add("model-unused.safetensors", "not in the index", true);
  hub_.add("model.safetensors.index.json",
           R"({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
               "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}})",
           false);
  const fs::path dir = fetch();
  EXPECT_EQ(read_file(dir / "model-00001-of-00002.safetensors"), "shard one");
  EXPECT_EQ(read_file(dir / "model-00002-of-00002.safetensors"), "shard two");
  EXPECT_FALSE(fs::exists(dir / "model-unused.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"))
      << "the index, not every *.safetensors, names the weights";

  hub_.add("model.safetensors.index.json", R"({"weight_map": {"a": "../../evil.safetensors"}})", false);
  hub_.add("../../evil.safetensors", "x", true);
  fs::remove_all(cache_);
  const std::string error = fetch_error();
  EXPECT_NE(error.find("will not write"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(cache_ / "evil.safetensors"));
}

TEST_F(HubDownload, ARepositoryWithoutSafetensorsIsRefused) {
  FakeHub bin_only;
  bin_only.add_model_dir(kTinyLlama, {"config.json", "tokenizer.model"});
  bin_only.add("pytorch_model.bin", "pickled", true);
  settings_.endpoint = bin_only.endpoint();
  const std::string error = fetch_error();
  EXPECT_NE(error.find("no safetensors weights"), std::string::npos) << error;
}

TEST(HubModelId, OnlyOrgSlashNameIsTakenForAHubModel) {
  for (const char* id :
       {"meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "a/b", "org_1/model.v2"})
    EXPECT_TRUE(is_hub_model_id(id)) << id;
  for (const char* id :
       {"gpt2", "/models/llama", "./org/name", "org/name/", "org//name", "org/name/extra", "org/../name",
        "org/na--me", "org/name.", "", "embedded:tiny-llama", "random:llama3-8b"})
    EXPECT_FALSE(is_hub_model_id(id)) << id;
}

}  // namespace
}  // namespace kvserve
