// Fetching models from the Hugging Face Hub (server/hub_download.h) against a fake Hub and CDN on
// loopback (tests/server/fake_hub.h): the cache layout other Hub clients share, nothing fetched
// twice, the cache serving offline or when the Hub is unreachable, tokens (sent to the Hub, never
// to the CDN), errors that say what to change, resumed downloads, checksums, sharded weights, and
// fetching through an HTTP proxy (http_proxy, and https_proxy with CONNECT to a Hub over HTTPS).
#include "server/hub_download.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/model.h"
#include "tests/server/fake_hub.h"
#include "tests/server/fake_proxy.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;
using testing::FakeHub;
using testing::FakeProxy;
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

// A model kvserve cannot serve is refused from its config.json, before its weights are fetched.
TEST_F(HubDownload, AModelThatCannotBeServedIsRefusedBeforeItsWeightsAreFetched) {
  nlohmann::json config = nlohmann::json::parse(read_file(kTinyLlama + "/config.json"));
  config["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}};
  hub_.add("config.json", config.dump(), false);
  std::string error = fetch_error();
  EXPECT_NE(error.find("kvserve-test/tiny-llama cannot be served, so its weights were not fetched"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("quant_method \"awq\""), std::string::npos) << error;
  EXPECT_EQ(hub_.content_requests, 1) << "config.json alone";

  config.erase("quantization_config");
  config["architectures"] = {"DeepseekV3ForCausalLM"};
  hub_.add("config.json", config.dump(), false);
  fs::remove_all(cache_);
  error = fetch_error();
  EXPECT_NE(error.find("architecture 'DeepseekV3ForCausalLM' is not supported"), std::string::npos) << error;
  EXPECT_EQ(hub_.content_requests, 2);
}

// An embedding model saved by sentence-transformers: modules.json and the Pooling config it names (in
// a folder of the repository) are fetched beside the rest, and a pooling kvserve does not do is
// refused before the weights are fetched.
TEST_F(HubDownload, AnEmbeddingModelsPoolingConfigIsFetchedAndChecked) {
  const nlohmann::json modules = nlohmann::json::array(
      {{{"idx", 0}, {"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
       {{"idx", 1}, {"path", "1_Pooling"}, {"type", "sentence_transformers.models.Pooling"}},
       {{"idx", 2}, {"path", "2_Normalize"}, {"type", "sentence_transformers.models.Normalize"}}});
  nlohmann::json pooling = {{"pooling_mode_lasttoken", true}, {"pooling_mode_mean_tokens", false}};
  hub_.add("modules.json", modules.dump(), false);
  hub_.add("1_Pooling/config.json", pooling.dump(), false);
  hub_.add("config_sentence_transformers.json", "{}", false);  // not read
  const fs::path dir = fetch();
  ASSERT_TRUE(fs::is_symlink(dir / "1_Pooling" / "config.json"));
  EXPECT_EQ(fs::read_symlink(dir / "1_Pooling" / "config.json").parent_path(), fs::path("../../../blobs"));
  EXPECT_EQ(read_file(dir / "1_Pooling" / "config.json"), pooling.dump());
  EXPECT_EQ(read_file(dir / "modules.json"), modules.dump());
  EXPECT_FALSE(fs::exists(dir / "config_sentence_transformers.json"));
  EXPECT_NO_THROW(load_model(dir));

  pooling = {{"pooling_mode_lasttoken", false}, {"pooling_mode_mean_tokens", true}};
  hub_.add("1_Pooling/config.json", pooling.dump(), false);
  fs::remove_all(cache_);
  const int before = hub_.content_requests;
  const std::string error = fetch_error();
  EXPECT_NE(error.find("kvserve-test/tiny-llama cannot be served, so its weights were not fetched"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("pools by pooling_mode_mean_tokens"), std::string::npos) << error;
  EXPECT_EQ(hub_.content_requests - before, 5)
      << "config.json, tokenizer files, modules.json, the pooling config";

  // A path that would climb out of the snapshot is never written.
  hub_.add("1_Pooling/config.json", nlohmann::json{{"pooling_mode_lasttoken", true}}.dump(), false);
  nlohmann::json climbing = modules;
  climbing[1]["path"] = "..";
  hub_.add("modules.json", climbing.dump(), false);
  hub_.add("../config.json", "{}", false);
  fs::remove_all(cache_);
  EXPECT_NE(fetch_error().find("is not a folder of the model"), std::string::npos) << fetch_error();
  EXPECT_FALSE(fs::exists(repo_dir() / "snapshots" / "config.json"));
}

// kvserve blocks SIGINT and SIGTERM until it serves, and polls for them while it fetches: also while
// it waits for another replica's download of the same file.
TEST_F(HubDownload, WaitingForAnotherProcesssDownloadStopsOnCtrlC) {
  const std::string etag = FakeHub::File{read_file(kTinyLlama + "/config.json"), false}.etag();
  const fs::path lock = cache_ / ".locks" / "models--kvserve-test--tiny-llama" / (etag + ".lock");
  fs::create_directories(lock.parent_path());
  const int fd = ::open(lock.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0) << "another replica is fetching config.json";
  sigset_t sigint, old_mask;
  sigemptyset(&sigint);
  sigaddset(&sigint, SIGINT);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &sigint, &old_mask), 0);
  const pthread_t self = pthread_self();
  std::thread ctrl_c([this, self] {
    // Once config.json's HEAD is answered the fetch goes straight to the lock: well within 300 ms.
    while (hub_.head_requests == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    pthread_kill(self, SIGINT);  // pending for this thread only, while it waits for the lock
  });
  const std::string error = fetch_error();
  ctrl_c.join();
  const timespec now{};
  sigtimedwait(&sigint, nullptr, &now);  // taken back, so that unblocking it ends nothing
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::close(fd);
  EXPECT_NE(error.find("interrupted while waiting for another process's download"), std::string::npos)
      << error;
}

// Through an HTTP proxy (http_proxy for an http endpoint): every request, the Hub's and the CDN's,
// goes to the proxy in absolute form, and the files are the same.
TEST_F(HubDownload, FetchesThroughAnHttpProxy) {
  FakeProxy proxy;
  settings_.proxies.http_proxy = proxy.url();
  settings_.proxies.https_proxy = "http://127.0.0.1:1";  // not this endpoint's scheme: never used
  const fs::path dir = fetch();
  for (const std::string& name : kTinyLlamaFiles)
    EXPECT_EQ(read_file(dir / name), read_file(kTinyLlama + "/" + name)) << name;
  bool hub_seen = false, cdn_seen = false;
  for (const FakeProxy::Request& request : proxy.requests()) {
    hub_seen |= request.line.find(" " + hub_.endpoint() + "/api/models/") != std::string::npos;
    cdn_seen |= request.line.find(" " + hub_.cdn_origin() + "/blobs/") != std::string::npos;
    EXPECT_EQ(request.authorization, "") << request.line;
  }
  EXPECT_TRUE(hub_seen);
  EXPECT_TRUE(cdn_seen);
  EXPECT_FALSE(hub_.cdn_got_a_token());
}

TEST_F(HubDownload, NoProxyExemptsTheHub) {
  FakeProxy proxy;
  settings_.proxies.http_proxy = proxy.url();
  settings_.proxies.no_proxy = "localhost,127.0.0.1";
  fetch();
  EXPECT_TRUE(proxy.requests().empty());
}

// The proxy's credentials reach the proxy with every request. (That they never reach the Hub is
// for HTTPS to show, below: a proxy takes them off a plain request it passes on.)
TEST_F(HubDownload, ProxyCredentialsReachTheProxyWithEveryRequest) {
  FakeProxy proxy;
  proxy.require("Basic YWxpY2U6czNjcjp0IEA=");  // alice:s3cr:t @
  settings_.proxies.http_proxy = proxy.url("alice:s3cr%3At%20%40");
  fetch();
  EXPECT_FALSE(proxy.requests().empty());
  for (const FakeProxy::Request& request : proxy.requests())
    EXPECT_EQ(request.authorization, "Basic YWxpY2U6czNjcjp0IEA=") << request.line;
}

TEST_F(HubDownload, ProxyRefusalsSayWhatToChange) {
  FakeProxy proxy;
  proxy.require("Basic YWxpY2U6czNjcjp0IEA=");
  settings_.proxies.http_proxy = proxy.url();
  std::string error = fetch_error();
  EXPECT_NE(error.find("the proxy 127.0.0.1:" + std::to_string(proxy.port()) + " refused"), std::string::npos)
      << error;
  EXPECT_NE(error.find("without credentials (it asks for Basic authentication)"), std::string::npos) << error;
  EXPECT_NE(error.find("http_proxy=http://user:password@host:port"), std::string::npos) << error;
  settings_.proxies.http_proxy = proxy.url("alice:wrong");
  error = fetch_error();
  EXPECT_NE(error.find("refused model kvserve-test/tiny-llama's file list with the credentials given"),
            std::string::npos)
      << error;
  EXPECT_EQ(error.find("wrong"), std::string::npos) << "the message shows no password: " << error;
  settings_.proxies.http_proxy_variable = "all_proxy";  // the message names the variable it came from
  error = fetch_error();
  EXPECT_NE(error.find("all_proxy=http://user:password@host:port"), std::string::npos) << error;
  settings_.proxies.http_proxy_variable = "http_proxy";

  settings_.proxies.http_proxy = "http://127.0.0.1:1";  // nothing listens there
  error = fetch_error();
  EXPECT_NE(error.find("through the proxy 127.0.0.1:1"), std::string::npos) << error;
  EXPECT_NE(error.find("cannot connect to the proxy 127.0.0.1:1: Connection refused"), std::string::npos)
      << error;
  settings_.proxies.http_proxy = "http://alice:secret@127.0.0.1:1";
  error = fetch_error();
  EXPECT_NE(error.find("through the proxy 127.0.0.1:1"), std::string::npos) << error;
  EXPECT_NE(error.find("cannot connect to the proxy 127.0.0.1:1: Connection refused"), std::string::npos)
      << error;
  EXPECT_EQ(error.find("secret"), std::string::npos) << error;

  settings_.proxies.http_proxy = "socks5://127.0.0.1:1080";
  error = fetch_error();
  EXPECT_NE(error.find("http_proxy"), std::string::npos) << error;
  EXPECT_NE(error.find("SOCKS proxies are not supported"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(repo_dir())) << "refused before anything was fetched";
}

// The Hub and its CDN over HTTPS, with certificates made at test time by the openssl command-line
// tool (a throwaway CA, and a certificate for 127.0.0.1 it signed), reached through a proxy by
// CONNECT: the tunnels carry the proxy's credentials, and the Hub never sees them.
class HubDownloadOverTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("kvserve-hub-tls-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "cd " + dir_.string() + " && openssl req -x509 " + key +
        " -keyout ca.key -out ca.crt -days 1 -subj '/CN=kvserve test CA' && openssl req " + key +
        " -keyout hub.key -out hub.csr -subj '/CN=localhost' && printf 'subjectAltName=IP:127.0.0.1' > "
        "san.ext"
        " && openssl x509 -req -in hub.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out hub.crt -days 1"
        " -extfile san.ext";
    openssl_ok_ = std::system(("(" + script + ") > /dev/null 2>&1").c_str()) == 0;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  void SetUp() override {
    if (!openssl_ok_) GTEST_SKIP() << "the openssl command is missing or failed: HTTPS tests skipped";
    hub_ = std::make_unique<FakeHub>((dir_ / "hub.crt").string(), (dir_ / "hub.key").string());
    hub_->add_model_dir(kTinyLlama, kTinyLlamaFiles);
    cache_ = dir_ / "cache";
    fs::remove_all(cache_);
    settings_.endpoint = hub_->endpoint();
    settings_.cache_dir = cache_;
    settings_.ca_bundle = (dir_ / "ca.crt").string();
  }

  std::string fetch_error() {
    try {
      fetch_hub_model(hub_->repo, "main", settings_);
    } catch (const ModelLoadError& e) {
      return e.what();
    }
    return "";
  }

  static inline fs::path dir_;
  static inline bool openssl_ok_ = false;
  std::unique_ptr<FakeHub> hub_;
  HubSettings settings_;
  fs::path cache_;
};

TEST_F(HubDownloadOverTls, FetchesThroughAProxyByConnectAndTheCredentialsStayWithTheProxy) {
  FakeProxy proxy;
  proxy.require("Basic YWxpY2U6czNjcjp0IEA=");
  settings_.proxies.https_proxy = proxy.url("alice:s3cr%3At%20%40");
  settings_.proxies.http_proxy = "http://127.0.0.1:1";  // not this endpoint's scheme: never used
  settings_.token = "hub-token";
  const fs::path dir = fetch_hub_model(hub_->repo, "main", settings_);
  for (const std::string& name : kTinyLlamaFiles)
    EXPECT_EQ(read_file(dir / name), read_file(kTinyLlama + "/" + name)) << name;
  std::set<std::string> tunnels;
  for (const FakeProxy::Request& request : proxy.requests()) {
    EXPECT_EQ(request.authorization, "Basic YWxpY2U6czNjcjp0IEA=") << request.line;
    tunnels.insert(request.line);
  }
  const auto connect_line = [](const std::string& origin) {
    return "CONNECT " + origin.substr(std::string("https://").size()) + " HTTP/1.1";
  };
  EXPECT_EQ(tunnels,
            (std::set<std::string>{connect_line(hub_->endpoint()), connect_line(hub_->cdn_origin())}));
  EXPECT_FALSE(hub_->proxy_authorizations().contains("Basic YWxpY2U6czNjcjp0IEA="))
      << "the proxy's credentials went into a tunnel, to the Hub";
  EXPECT_FALSE(hub_->cdn_got_a_token());
}

// A proxy that will not let the storage's host through, or wants credentials, says so: not a
// failed TLS handshake (what httplib reports for a refused CONNECT), and not tried again.
TEST_F(HubDownloadOverTls, AProxysRefusalToTunnelIsReportedAsItsOwn) {
  FakeProxy proxy;
  proxy.block(std::stoi(hub_->cdn_origin().substr(hub_->cdn_origin().rfind(':') + 1)));
  settings_.proxies.https_proxy = proxy.url();
  const auto start = std::chrono::steady_clock::now();
  std::string error = fetch_error();
  EXPECT_NE(error.find("cannot reach " + hub_->cdn_origin() +
                       " through the proxy 127.0.0.1:" + std::to_string(proxy.port())),
            std::string::npos)
      << error;
  EXPECT_NE(
      error.find("answered HTTP/1.1 403 Forbidden): the proxy must let kvserve reach " + hub_->cdn_origin()),
      std::string::npos)
      << error;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1)) << "retried: " << error;

  proxy.block(-1);
  proxy.require("Basic YWxpY2U6czNjcjp0IEA=");
  error = fetch_error();
  EXPECT_NE(error.find("the proxy 127.0.0.1:" + std::to_string(proxy.port()) + " refused"), std::string::npos)
      << error;
  EXPECT_NE(error.find("https_proxy=http://user:password@host:port"), std::string::npos) << error;
}

TEST_F(HubDownloadOverTls, ACertificateNotTrustedIsRefusedAndTheBundleSaysWhomToTrust) {
  settings_.ca_bundle = "";  // the system's CAs do not know the test CA
  std::string error = fetch_error();
  EXPECT_NE(error.find("certificate could not be verified"), std::string::npos) << error;
  settings_.ca_bundle = (dir_ / "nowhere.crt").string();
  error = fetch_error();
  EXPECT_NE(error.find("REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) names " + settings_.ca_bundle),
            std::string::npos)
      << error;
  settings_.ca_bundle = (dir_ / "hub.crt").string();  // a bundle without the CA that signed it
  error = fetch_error();
  EXPECT_NE(error.find("the CA certificates are those of " + settings_.ca_bundle), std::string::npos)
      << error;
  settings_.ca_bundle = (dir_ / "ca.crt").string();
  EXPECT_EQ(fetch_error(), "");
}

}  // namespace
}  // namespace kvserve
