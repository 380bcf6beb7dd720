#include "server/hub_download.h"

#include <fcntl.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "engine/model.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kMaxRedirects = 10;
constexpr auto kProgressEvery = std::chrono::seconds(10);
// What kvserve reads besides the weights (engine/model_loader.cc, engine/tokenizer.cc,
// engine/chat_template.cc, engine/config_added_tokens.cc, and sentence-transformers' modules.json
// in engine/model_config.cc, with the Pooling config it names: pooling_config_files); those a
// repository lacks are skipped.
constexpr std::array<std::string_view, 10> kModelFiles = {"config.json",        "generation_config.json",
                                                          "tokenizer.json",     "tokenizer_config.json",
                                                          "tokenizer.model",    "special_tokens_map.json",
                                                          "added_tokens.json",  "chat_template.jinja",
                                                          "chat_template.json", "modules.json"};
constexpr std::string_view kShardIndex = kShardIndexFile;

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

bool is_hex(std::string_view s, size_t size) {
  return s.size() == size &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isxdigit(c); });
}
bool is_commit_hash(std::string_view s) {
  return is_hex(s, 40);
}

// A name the Hub gave that becomes a path here (a file, an ETag, a commit): one plain component.
bool is_safe_name(std::string_view s) {
  static const std::regex kSafe("[A-Za-z0-9_][A-Za-z0-9._-]*");
  return s.size() <= 255 && std::regex_match(s.begin(), s.end(), kSafe);
}

// A file of the repository kvserve writes into a snapshot: a safe name, or a folder's (at most
// 1_Pooling/config.json deep), never one that climbs out.
bool is_safe_file_path(std::string_view s) {
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos) return is_safe_name(s);
  return s.find('/', slash + 1) == std::string_view::npos && is_safe_name(s.substr(0, slash)) &&
         is_safe_name(s.substr(slash + 1));
}

// W/"abc" -> abc
std::string normalize_etag(std::string etag) {
  if (etag.starts_with("W/")) etag.erase(0, 2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
  return etag;
}

// A revision such as "refs/pr/1" is one segment of the API's path.
std::string encode_segment(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

std::string mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// A name beside `path` that no other process writes: replicas sharing the cache each run as PID 1
// in their containers, so the PID alone would collide.
fs::path unique_sibling(const fs::path& path) {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(::getpid()));
  return path.string() + ".tmp" + std::to_string(rng());
}

// SIGINT or SIGTERM arrived (the server blocks both until it serves, then drains on them): a
// download stops at once and resumes on the next start.
bool interrupted() {
  sigset_t pending;
  return sigpending(&pending) == 0 &&
         (sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Whether a snapshot holds config.json and every weight file: one a fetch left unfinished, or that
// another tool filled only with the tokenizer or the config, is not a model.
bool snapshot_complete(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir / "config.json", ec)) return false;
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".safetensors" && fs::exists(entry.path(), ec))
      names.push_back(entry.path().filename().string());
  const std::string index = fs::exists(dir / kShardIndexFile, ec) ? read_text(dir / kShardIndexFile) : "";
  std::vector<std::string> weights;
  try {
    weights = weight_file_names(names, index);
  } catch (const ModelLoadError&) {
    return false;
  }
  const auto present = [&](const std::string& name) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  if (weights.empty() || !std::all_of(weights.begin(), weights.end(), present)) return false;
  // Without an index, shards named "<stem>-00002-of-00004.safetensors" say how many there are.
  static const std::regex kShard("(.*)-([0-9]{5})-of-([0-9]{5})\\.safetensors");
  std::smatch m;
  for (const std::string& name : weights) {
    if (!std::regex_match(name, m, kShard)) continue;
    const int total = std::stoi(m[3].str());
    for (int i = 1; i <= total; ++i) {
      char shard[48];
      std::snprintf(shard, sizeof shard, "-%05d-of-%05d.safetensors", i, total);
      if (!present(m[1].str() + shard)) return false;
    }
  }
  return true;
}

// What went wrong below HTTP, in words an operator can act on.
std::string describe(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "no connection";
    case httplib::Error::ConnectionTimeout:
      return "the connection timed out";
    case httplib::Error::Read:
      return "reading timed out or failed";
    case httplib::Error::SSLConnection:
      return "the TLS handshake failed";
    case httplib::Error::SSLLoadingCerts:
    case httplib::Error::SSLServerVerification:
      return "the server's certificate could not be verified (are the CA certificates, Debian's "
             "ca-certificates, installed?)";
    default:
      return httplib::to_string(error);
  }
}

// scheme://host[:port] and the path with its query.
struct Url {
  std::string origin;
  std::string target;
};

// An absolute URL, or one relative to `base` (a redirect's "/path").
std::optional<Url> split_url(const std::string& url, const std::string& base_origin) {
  if (url.starts_with("/")) return Url{base_origin, url};
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return std::nullopt;
  const size_t slash = url.find('/', scheme + 3);
  if (slash == std::string::npos) return Url{url, "/"};
  return Url{url.substr(0, slash), url.substr(slash)};
}

class Digest {
 public:
  explicit Digest(const EVP_MD* md) : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, md, nullptr); }
  ~Digest() { EVP_MD_CTX_free(ctx_); }
  Digest(const Digest&) = delete;
  Digest& operator=(const Digest&) = delete;
  void update(const void* data, size_t size) { EVP_DigestUpdate(ctx_, data, size); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx_, md, &size);
    std::string out;
    char buf[3];
    for (unsigned int i = 0; i < size; ++i) {
      std::snprintf(buf, sizeof buf, "%02x", md[i]);
      out += buf;
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// Feeds the first `size` bytes of a file to `digest`.
bool digest_file(const fs::path& path, uint64_t size, Digest& digest) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(1 << 20);
  while (size > 0 && in) {
    in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(size, buf.size())));
    digest.update(buf.data(), static_cast<size_t>(in.gcount()));
    size -= static_cast<uint64_t>(in.gcount());
  }
  return size == 0;
}

// The ETag of a file the Hub keeps in git: the git blob id, SHA-1 of "blob <size>\0" + content.
std::string git_blob_id(const fs::path& path) {
  Digest sha1(EVP_sha1());
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  const std::string header = "blob " + std::to_string(size) + '\0';
  sha1.update(header.data(), header.size());
  if (ec || !digest_file(path, size, sha1)) return {};
  return sha1.hex();
}

// An exclusive lock on a file of the cache's .locks folder, held while this object lives.
class FileLock {
 public:
  explicit FileLock(const fs::path& path) {
    fs::create_directories(path.parent_path());
    fd_ = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw ModelLoadError("cannot create the lock file " + path.string() +
                           ": check the cache's permissions");
    // Polled rather than waited for, so that Ctrl-C or SIGTERM (blocked, see interrupted()) still
    // stops a server that waits on another replica's download.
    for (bool told = false; ::flock(fd_, LOCK_EX | LOCK_NB) != 0;) {
      if (errno != EWOULDBLOCK && errno != EINTR) {
        ::close(fd_);
        throw ModelLoadError(
            "cannot lock " + path.string() +
            " (the cache's filesystem may not support locks): put HF_HOME on a local or NFSv4 "
            "filesystem");
      }
      if (!told) spdlog::info("waiting for another process fetching the same file ({})", path.string());
      told = true;
      if (interrupted()) {
        ::close(fd_);
        throw ModelLoadError("interrupted while waiting for another process's download: run kvserve again");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~FileLock() { ::close(fd_); }  // closing releases the lock
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// A transfer that broke off: worth resuming.
class TransferBroken : public ModelLoadError {
 public:
  using ModelLoadError::ModelLoadError;
};

class HubFetcher {
 public:
  HubFetcher(const HubSettings& settings, std::string repo_id, std::string revision)
      : settings_(settings), repo_id_(std::move(repo_id)), revision_(std::move(revision)) {
    endpoint_ = settings_.endpoint;
    while (endpoint_.ends_with("/"))
      endpoint_.pop_back();
    const std::optional<Url> url = split_url(endpoint_, "");
    if (!url) throw ModelLoadError("HF_ENDPOINT " + endpoint_ + " is not a URL: set it as https://host");
    endpoint_origin_ = url->origin;
    endpoint_path_ = url->target == "/" ? "" : url->target;
    std::string folder = "models--" + repo_id_;
    folder.replace(folder.find('/'), 1, "--");
    repo_dir_ = settings_.cache_dir / folder;
    locks_dir_ = settings_.cache_dir / ".locks" / folder;
    proxy_of(endpoint_origin_);  // a proxy variable that cannot be used fails now, before any fetch
    std::error_code ec;
    if (!settings_.ca_bundle.empty() &&
        (!fs::is_regular_file(settings_.ca_bundle, ec) || ::access(settings_.ca_bundle.c_str(), R_OK) != 0))
      throw ModelLoadError(
          "REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) names " + settings_.ca_bundle +
          ", which is not a readable file: point it at a PEM file of CA certificates, or unset it");
  }

  fs::path fetch() {
    if (settings_.offline) {
      if (std::optional<fs::path> dir = cached_snapshot()) return *dir;
      throw ModelLoadError(
          "model " + repo_id_ + " (revision " + revision_ + ") is not in the Hub cache " +
          settings_.cache_dir.string() +
          " and HF_HUB_OFFLINE forbids fetching it: unset HF_HUB_OFFLINE, or pass a model directory");
    }
    std::optional<fs::path> cached;
    std::optional<Json> info = revision_info(cached);
    if (!info) return *cached;
    const std::string commit =
        info->contains("sha") && (*info)["sha"].is_string() ? (*info)["sha"].get<std::string>() : "";
    if (!is_commit_hash(commit))
      throw ModelLoadError(endpoint_ + " gave no commit for " + repo_id_ + " at " + revision_);
    std::set<std::string> listed;
    for (const Json& sibling : info->value("siblings", Json::array()))
      if (sibling.is_object() && sibling.contains("rfilename") && sibling["rfilename"].is_string())
        listed.insert(sibling["rfilename"].get<std::string>());
    if (!listed.contains("config.json"))
      throw ModelLoadError(repo_id_ + " has no config.json: it is not a transformers model kvserve can load");

    const fs::path snapshot = repo_dir_ / "snapshots" / commit;
    spdlog::info("model {} at {} (commit {}): fetching what {} lacks", repo_id_, revision_,
                 commit.substr(0, 12), snapshot.string());
    // config.json first (kModelFiles' first), read as the loader reads it: a model kvserve cannot
    // serve (another architecture, a quantized checkpoint) is refused before gigabytes of weights
    // are fetched.
    fetch_file(commit, "config.json", snapshot);
    try {
      load_model_config(snapshot / "config.json");
    } catch (const ModelLoadError& e) {
      throw ModelLoadError(repo_id_ + " cannot be served, so its weights were not fetched: " + e.what());
    }
    for (std::string_view name : kModelFiles)
      if (listed.contains(std::string(name))) fetch_file(commit, std::string(name), snapshot);
    if (listed.contains("modules.json")) {
      // An embedding model's pooling, which the loader checks: refused here too, before the weights.
      for (const std::string& name : pooling_config_files(listed, snapshot))
        fetch_file(commit, name, snapshot);
      try {
        load_model_config(snapshot / "config.json");
      } catch (const ModelLoadError& e) {
        throw ModelLoadError(repo_id_ + " cannot be served, so its weights were not fetched: " + e.what());
      }
    }
    for (const std::string& name : weight_files(listed, commit, snapshot))
      fetch_file(commit, name, snapshot);
    if (revision_ != commit) write_ref(commit);
    return snapshot;
  }

 private:
  // The cached snapshot for the revision: a commit's folder, or the one its ref names.
  std::optional<fs::path> cached_snapshot() const {
    std::string commit = revision_;
    if (!is_commit_hash(revision_)) {
      std::ifstream ref(repo_dir_ / "refs" / revision_);
      if (!(ref >> commit) || !is_commit_hash(commit)) return std::nullopt;
    }
    const fs::path dir = repo_dir_ / "snapshots" / commit;
    std::error_code ec;
    if (!fs::exists(dir, ec) || !snapshot_complete(dir)) return std::nullopt;
    return dir;
  }

  httplib::Headers headers_for(const std::string& origin) const {
    // identity: sizes, ranges and checksums are the file's own bytes, never a compressed stream's.
    httplib::Headers headers{{"User-Agent", "kvserve"}, {"Accept-Encoding", "identity"}};
    // The token is the Hub's: a redirect to a CDN's presigned URL must not carry it.
    if (!settings_.token.empty() && origin == endpoint_origin_)
      headers.emplace("Authorization", "Bearer " + settings_.token);
    return headers;
  }

  // The proxy requests to `origin` go through, if any.
  std::optional<HttpProxy> proxy_of(const std::string& origin) const {
    try {
      return proxy_for(origin, settings_.proxies);
    } catch (const std::invalid_argument& e) {
      throw ModelLoadError("the proxy that " + proxy_variable(origin) + " names cannot be used: " + e.what());
    }
  }

  // The environment variable that names the proxy for `origin`, for messages.
  const std::string& proxy_variable(const std::string& origin) const {
    return settings_.proxies.variable_for(origin.starts_with("https:") ? "https" : "http");
  }

  // " through the proxy host:port" when requests to `origin` go through one: for messages.
  std::string through(const std::string& origin) const {
    const std::optional<HttpProxy> proxy = proxy_of(origin);
    return proxy ? " through the proxy " + proxy->address() : "";
  }

  // The forwarder in front of the proxy requests to `origin` go through, or null for none
  // (server/http_proxy.h says why httplib never speaks to a proxy directly).
  ProxyForwarder* forwarder_for(const std::string& origin) const {
    const std::optional<HttpProxy> proxy = proxy_of(origin);
    if (!proxy) return nullptr;
    std::unique_ptr<ProxyForwarder>& forwarder =
        forwarders_[proxy->address() + " " + proxy->user + ":" + proxy->password];
    if (!forwarder) forwarder = std::make_unique<ProxyForwarder>(*proxy);
    return forwarder.get();
  }

  std::unique_ptr<httplib::Client> client_for(const std::string& origin) const {
    auto client = std::make_unique<httplib::Client>(origin);
    client->set_connection_timeout(10);
    client->set_read_timeout(60);  // a stalled transfer fails within a minute, and resumes on the next start
    client->set_follow_location(false);
    client->set_url_encode(false);  // paths are encoded here; presigned URLs must pass as they are
    if (!settings_.ca_bundle.empty()) client->set_ca_cert_path(settings_.ca_bundle);
    if (ProxyForwarder* forwarder = forwarder_for(origin)) {
      client->set_proxy("127.0.0.1", forwarder->port());
      client->set_proxy_basic_auth(forwarder->local_user(), forwarder->local_password());
      forwarder->take_failure();  // an earlier request's
    }
    return client;
  }

  // Why the proxy in front of `origin` failed the latest request (it could not be reached, or
  // refused the CONNECT), or "".
  std::string proxy_failure(const std::string& origin) const {
    ProxyForwarder* forwarder = forwarder_for(origin);
    return forwarder ? forwarder->take_failure() : "";
  }

  // Why a request to `origin` got no answer from it: the proxy's reason when it failed the request,
  // else what went wrong below HTTP; "" when it was answered.
  std::string why_unanswered(const httplib::Result& res, const std::string& origin) const {
    if (std::string failure = proxy_failure(origin); !failure.empty()) return failure;
    if (res) return "";
    std::string why = describe(res.error());
    if (!settings_.ca_bundle.empty() && (res.error() == httplib::Error::SSLLoadingCerts ||
                                         res.error() == httplib::Error::SSLServerVerification))
      why += "; the CA certificates are those of " + settings_.ca_bundle +
             " (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE), not the system's";
    return why;
  }

  // The message for a 407: the proxy wants credentials it was not given, or refused them.
  std::string proxy_refused(const std::string& origin, const std::string& what,
                            const httplib::Result& res) const {
    const std::optional<HttpProxy> proxy = proxy_of(origin);
    std::string reason = proxy_failure(origin);
    if (reason.empty() && res) {
      const std::string scheme = res->get_header_value("Proxy-Authenticate");
      if (!scheme.empty()) reason = "it asks for " + scheme.substr(0, scheme.find(' ')) + " authentication";
    }
    const std::string& variable = proxy_variable(origin);
    return "the proxy " + (proxy ? proxy->address() + " " : std::string()) + "refused " + what +
           (proxy && (!proxy->user.empty() || !proxy->password.empty()) ? " with the credentials given"
                                                                        : " without credentials") +
           (reason.empty() ? "" : " (" + reason + ")") + ": give them in its URL, " + variable +
           "=http://user:password@host:port (Basic authentication)";
  }

  std::string http_problem(int status, const std::string& what) const {
    const std::string token_hint =
        "for a gated model accept its terms on its Hub page; a private one needs a token that may read "
        "it (set HF_TOKEN, or run `huggingface-cli login`)";
    if (status == 401)
      return settings_.token.empty()
                 ? "the Hub refused " + what +
                       " without a token: check the name (org/name; no local directory has that name "
                       "either); " +
                       token_hint
                 : "the Hub refused the token for " + what + ": check that HF_TOKEN is valid";
    if (status == 403) return "the token may not read " + what + ": " + token_hint;
    if (status == 404)
      return "the Hub has no " + what +
             ": check the model's name (org/name) and --revision; no local directory " +
             "has that name either";
    return endpoint_ + through(endpoint_origin_) + " answered HTTP " + std::to_string(status) + " for " +
           what;
  }

  // The revision's commit and file list, or nullopt when the Hub cannot be reached (or fails on
  // its side) and the cache holds the revision whole (then that serves, with a warning: `cached`).
  std::optional<Json> revision_info(std::optional<fs::path>& cached) const {
    std::string target =
        endpoint_path_ + "/api/models/" + repo_id_ + "/revision/" + encode_segment(revision_);
    const auto serve_cached = [&](const std::string& why) {
      cached = cached_snapshot();
      if (!cached) return false;
      spdlog::warn("{} ({}): serving {} at {} from the cache as it is", endpoint_, why, repo_id_, revision_);
      return true;
    };
    for (int hop = 0; hop < kMaxRedirects; ++hop) {
      httplib::Result res = client_for(endpoint_origin_)->Get(target, headers_for(endpoint_origin_));
      if (res && res->status == 407)
        throw ModelLoadError(proxy_refused(endpoint_origin_, "model " + repo_id_ + "'s file list", res));
      if (const std::string why = why_unanswered(res, endpoint_origin_); !why.empty()) {
        if (serve_cached("cannot reach it: " + why)) return std::nullopt;
        throw ModelLoadError("cannot reach " + endpoint_ + through(endpoint_origin_) + " to fetch " +
                             repo_id_ + " (" + why +
                             "), and the Hub cache has no whole copy: check the network (or HF_ENDPOINT, "
                             "https_proxy), or download the model elsewhere and pass its directory");
      }
      const std::string location = res->get_header_value("Location");
      if (res->status >= 300 && res->status < 400 && location.starts_with("/")) {  // a renamed repository
        target = location;
        continue;
      }
      if ((res->status >= 500 || res->status == 429) &&
          serve_cached("it answered HTTP " + std::to_string(res->status)))
        return std::nullopt;
      if (res->status != 200)
        throw ModelLoadError(http_problem(res->status, "model " + repo_id_ + " at revision " + revision_));
      Json info = Json::parse(res->body, nullptr, /*allow_exceptions=*/false);
      if (!info.is_object())
        throw ModelLoadError(endpoint_ + " answered " + repo_id_ + "'s file list with something not JSON");
      return info;
    }
    throw ModelLoadError(endpoint_ + " redirected " + repo_id_ + "'s file list too often");
  }

  // The Pooling module's config.json that a sentence-transformers modules.json names (fetched),
  // where the repository has it; a missing one the loader reports.
  std::vector<std::string> pooling_config_files(const std::set<std::string>& listed,
                                                const fs::path& snapshot) {
    const Json modules =
        Json::parse(read_text(snapshot / "modules.json"), nullptr, /*allow_exceptions=*/false);
    std::vector<std::string> names;
    if (!modules.is_array()) return names;  // the loader says what is wrong with it
    for (const Json& module : modules) {
      if (!module.is_object() || !module.contains("type") || !module["type"].is_string() ||
          !module["type"].get<std::string>().ends_with("Pooling") || !module.contains("path") ||
          !module["path"].is_string())
        continue;
      const std::string name = module["path"].get<std::string>() + "/config.json";
      if (listed.contains(name) && is_safe_file_path(name)) names.push_back(name);
    }
    return names;
  }

  // The safetensors files the model's weights are in, as the loader picks them.
  std::vector<std::string> weight_files(const std::set<std::string>& listed, const std::string& commit,
                                        const fs::path& snapshot) {
    std::string index;
    if (listed.contains(std::string(kShardIndex))) {
      fetch_file(commit, std::string(kShardIndex), snapshot);
      index = read_text(snapshot / kShardIndex);
    }
    std::vector<std::string> top_level;
    for (const std::string& name : listed)
      if (name.find('/') == std::string::npos) top_level.push_back(name);
    std::vector<std::string> shards = weight_file_names(top_level, index);
    for (const std::string& shard : shards)
      if (!listed.contains(shard))
        throw ModelLoadError(repo_id_ + "'s " + std::string(kShardIndex) + " names " + shard +
                             ", which the repository does not hold");
    if (shards.empty())
      throw ModelLoadError(repo_id_ +
                           " has no safetensors weights: kvserve reads only safetensors; convert the weights "
                           "(transformers' save_pretrained writes them) and pass the directory");
    return shards;
  }

  struct FileMeta {
    std::string etag;
    std::string url;  // where the content is (a CDN's, for large files)
    std::optional<uint64_t> size;
  };

  // What the resolve URL says of a file: its ETag, size, and where its content is.
  FileMeta file_meta(const std::string& commit, const std::string& name) const {
    std::string url = endpoint_ + "/" + repo_id_ + "/resolve/" + commit + "/" + encode_segment(name);
    for (int hop = 0; hop < kMaxRedirects; ++hop) {
      const Url u = *split_url(url, endpoint_origin_);
      httplib::Result res = client_for(u.origin)->Head(u.target, headers_for(u.origin));
      if (res && res->status == 407)
        throw ModelLoadError(proxy_refused(u.origin, repo_id_ + "/" + name + " at " + u.origin, res));
      if (const std::string why = why_unanswered(res, u.origin); !why.empty())
        throw ModelLoadError("cannot reach " + u.origin + through(u.origin) + " for " + repo_id_ + "/" +
                             name + " (" + why + "): run kvserve again once the network is back");
      auto header = [&](const char* key) { return res->get_header_value(key); };
      std::string etag = header("X-Linked-Etag");
      if (etag.empty()) etag = header("ETag");
      const bool redirect = res->status >= 300 && res->status < 400;
      // A redirect's own Content-Length is its body's: the file's size is X-Linked-Size there.
      const std::string size_text = !header("X-Linked-Size").empty() ? header("X-Linked-Size")
                                    : redirect                       ? ""
                                                                     : header("Content-Length");
      std::optional<uint64_t> size;
      if (!size_text.empty()) size = std::strtoull(size_text.c_str(), nullptr, 10);
      if (redirect) {
        const std::string location = header("Location");
        if (location.empty())
          throw ModelLoadError(endpoint_ + " redirected " + repo_id_ + "/" + name +
                               " to nowhere (no Location)");
        if (location.starts_with("/")) {  // a renamed repository: the same host, ask again
          url = u.origin + location;
          continue;
        }
        return {normalize_etag(etag), location, size};
      }
      if (res->status != 200)
        throw ModelLoadError(http_problem(res->status, "file " + name + " of " + repo_id_));
      return {normalize_etag(etag), url, size};
    }
    throw ModelLoadError(endpoint_ + " redirected " + repo_id_ + "/" + name + " too often");
  }

  void fetch_file(const std::string& commit, const std::string& name, const fs::path& snapshot) {
    if (!is_safe_file_path(name))
      throw ModelLoadError(repo_id_ + " lists a file named '" + name + "', which kvserve will not write");
    const fs::path link = snapshot / name;
    std::error_code ec;
    if (fs::exists(link, ec)) return;  // the link and its blob are there
    if (interrupted())
      throw ModelLoadError("interrupted while fetching " + repo_id_ + ": run kvserve again to resume");
    FileMeta meta = file_meta(commit, name);
    if (!is_safe_name(meta.etag))
      throw ModelLoadError(endpoint_ + " gave " + repo_id_ + "/" + name + " no usable ETag ('" + meta.etag +
                           "')");
    const fs::path blob = repo_dir_ / "blobs" / meta.etag;
    if (!fs::exists(blob, ec)) {
      const FileLock lock(locks_dir_ / (meta.etag + ".lock"));
      // Unless another process just did; a transfer that breaks off resumes after a pause, from a
      // fresh link (the storage's expire).
      for (int attempt = 1; !fs::exists(blob, ec); ++attempt) {
        try {
          fetch_blob(name, meta, blob);
        } catch (const TransferBroken& e) {
          if (attempt == kHubFetchAttempts) throw;
          const auto pause = settings_.retry_delay * (1 << (attempt - 1));
          spdlog::warn("{}; trying again in {} ms", e.what(), pause.count());
          for (auto waited = std::chrono::milliseconds(0); waited < pause;
               waited += std::chrono::milliseconds(50)) {
            if (interrupted())
              throw ModelLoadError("interrupted while fetching " + repo_id_ +
                                   ": run kvserve again to resume");
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
          meta.url = file_meta(commit, name).url;
        }
      }
    }
    // The link (or, on a filesystem without them, a copy) is made beside it and renamed over it, so
    // that another process reading the snapshot never finds the file missing.
    fs::create_directories(link.parent_path());
    const fs::path temp = unique_sibling(link);
    // From snapshots/<commit>/[folder/]name up to the repository's blobs/.
    fs::path to_blobs = fs::path("..") / "..";
    if (name.find('/') != std::string::npos) to_blobs = fs::path("..") / to_blobs;
    fs::create_symlink(to_blobs / "blobs" / meta.etag, temp, ec);
    if (ec) fs::copy_file(blob, temp, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(temp, link, ec);
    if (ec) {
      const std::string why = ec.message();
      fs::remove(temp, ec);
      throw ModelLoadError("cannot link " + link.string() + " to its blob (" + why +
                           "): check that the Hub cache (HF_HOME or HF_HUB_CACHE) is writable and has room");
    }
  }

  // Downloads a file's content into its blob: into <blob>.incomplete first, resuming what an earlier
  // run left there, then checked against the ETag and renamed.
  void fetch_blob(const std::string& name, const FileMeta& meta, const fs::path& blob) const {
    fs::create_directories(blob.parent_path());
    const fs::path partial = blob.string() + ".incomplete";
    std::error_code ec;
    uint64_t have = fs::exists(partial, ec) ? fs::file_size(partial, ec) : 0;
    if (ec || (meta.size && have >= *meta.size)) have = 0;
    const bool sha256_etag = is_hex(meta.etag, 64);  // large files: the ETag is the content's SHA-256
    std::unique_ptr<Digest> sha256;
    std::string url = meta.url;
    uint64_t received = 0;
    auto last_report = Clock::now();
    auto last_check = last_report;
    bool stopped = false;
    const auto start = last_report;
    if (have > 0) spdlog::info("{}: resuming after {}", name, mib(have));
    for (int hop = 0;; ++hop) {
      if (hop == kMaxRedirects) throw ModelLoadError("too many redirects fetching " + repo_id_ + "/" + name);
      const std::optional<Url> u = split_url(url, endpoint_origin_);
      if (!u) throw ModelLoadError("the Hub redirected " + name + " to '" + url + "', which is not a URL");
      httplib::Headers headers = headers_for(u->origin);
      if (have > 0) headers.emplace("Range", "bytes=" + std::to_string(have) + "-");
      int status = 0;
      std::string location;
      std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(nullptr, &std::fclose);
      bool write_failed = false;
      httplib::Result res = client_for(u->origin)->Get(
          u->target, headers,
          [&](const httplib::Response& response) {
            status = response.status;
            if (status >= 300 && status < 400) location = response.get_header_value("Location");
            if (status != 200 && (status != 206 || have == 0))
              return true;                // no content: the body is ignored
            if (status == 200) have = 0;  // the server sends it all
            sha256 = sha256_etag ? std::make_unique<Digest>(EVP_sha256()) : nullptr;
            if (sha256 && have > 0 && !digest_file(partial, have, *sha256)) write_failed = true;
            if (!write_failed) out.reset(std::fopen(partial.c_str(), have > 0 ? "ab" : "wb"));
            write_failed = out == nullptr;
            return !write_failed;
          },
          [&](const char* data, size_t size) {
            if (!out) return true;
            if (std::fwrite(data, 1, size, out.get()) != size) {
              write_failed = true;
              return false;
            }
            if (sha256) sha256->update(data, size);
            received += size;
            if (Clock::now() - last_check >= std::chrono::milliseconds(200)) {
              last_check = Clock::now();
              if (interrupted()) {
                stopped = true;
                return false;
              }
            }
            if (Clock::now() - last_report >= kProgressEvery) {
              last_report = Clock::now();
              spdlog::info("{}: {} of {}", name, mib(have + received), meta.size ? mib(*meta.size) : "?");
            }
            return true;
          });
      const bool wrote = out != nullptr;
      // On disk before the rename below: a blob under its final name is never checked again.
      if (out && (std::fflush(out.get()) != 0 || ::fsync(::fileno(out.get())) != 0)) write_failed = true;
      if (out && std::fclose(out.release()) != 0) write_failed = true;
      if (stopped)
        throw ModelLoadError("interrupted while fetching " + repo_id_ + "/" + name + " (" +
                             mib(have + received) + " kept): run kvserve again to resume");
      if (write_failed)
        throw ModelLoadError("cannot read or write " + partial.string() +
                             ": check the free space and permissions of " + settings_.cache_dir.string() +
                             " (HF_HOME / HF_HUB_CACHE)");
      if (status == 0 && res) status = res->status;  // a CONNECT refused with 407 runs no handler
      if (status == 407)
        throw ModelLoadError(proxy_refused(u->origin, repo_id_ + "/" + name + " at " + u->origin, res));
      // The proxy refusing the storage's host is no broken transfer: trying again would not help.
      if (const std::string failure = proxy_failure(u->origin); !failure.empty())
        throw ModelLoadError("cannot reach " + u->origin + through(u->origin) + " for " + repo_id_ + "/" +
                             name + " (" + failure + "): the proxy must let kvserve reach " + u->origin);
      if (!res)
        throw TransferBroken("fetching " + repo_id_ + "/" + name + " broke off (" +
                             why_unanswered(res, u->origin) + ") after " + mib(received) +
                             ": run kvserve again to resume");
      if (status >= 300 && status < 400 && !location.empty()) {
        url = location.starts_with("/") ? u->origin + location : location;
        continue;
      }
      if (status == 416 && have > 0) {  // what was kept is not a prefix of this file: start over
        have = 0;
        continue;
      }
      if (!wrote && u->origin != endpoint_origin_)
        throw ModelLoadError("the storage that " + endpoint_ + " sent " + repo_id_ + "/" + name + " to (" +
                             u->origin + ") answered HTTP " + std::to_string(status) +
                             ": run kvserve again (its links expire)");
      if (!wrote) throw ModelLoadError(http_problem(status, "file " + name + " of " + repo_id_));
      break;
    }
    const uint64_t size = fs::file_size(partial, ec);
    std::string problem;
    if (meta.size && size != *meta.size)
      problem = "is " + std::to_string(size) + " bytes, not " + std::to_string(*meta.size);
    else if (sha256 && sha256->hex() != meta.etag)
      problem = "does not match its SHA-256";
    else if (is_hex(meta.etag, 40) && git_blob_id(partial) != meta.etag)
      problem = "does not match its git blob id";
    if (!problem.empty()) {
      fs::remove(partial, ec);
      throw ModelLoadError("the download of " + repo_id_ + "/" + name + " " + problem +
                           ": run kvserve again");
    }
    fs::rename(partial, blob);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    spdlog::info("{}: {} fetched in {:.1f} s", name, mib(size), seconds);
  }

  // refs/<revision> names the commit, for offline starts and other tools. Written only when it
  // changes, and only a warning when it cannot be (a read-only cache that holds the model whole).
  void write_ref(const std::string& commit) const {
    const fs::path ref = repo_dir_ / "refs" / revision_;
    if (read_text(ref) == commit) return;
    std::error_code ec;
    fs::create_directories(ref.parent_path(), ec);
    const fs::path temp = unique_sibling(ref);
    bool written = false;
    if (!ec) {
      std::ofstream out(temp);
      out << commit;
      out.flush();
      written = out.good();
    }
    if (written) fs::rename(temp, ref, ec);
    if (!written || ec) {
      fs::remove(temp, ec);
      spdlog::warn("could not record {} as {}'s {} in {}: offline starts will not find it by that name",
                   commit, repo_id_, revision_, ref.string());
    }
  }

  const HubSettings& settings_;
  const std::string repo_id_;
  const std::string revision_;
  std::string endpoint_;
  std::string endpoint_origin_;
  std::string endpoint_path_;  // a mirror's path prefix, or empty
  fs::path repo_dir_;
  fs::path locks_dir_;
  // One per proxy, made on first use (forwarder_for).
  mutable std::map<std::string, std::unique_ptr<ProxyForwarder>> forwarders_;
};

}  // namespace

HubSettings HubSettings::from_environment() {
  HubSettings s;
  if (const std::string endpoint = env("HF_ENDPOINT"); !endpoint.empty()) s.endpoint = endpoint;
  // As huggingface_hub resolves them: HF_HOME, else $XDG_CACHE_HOME/huggingface, else
  // ~/.cache/huggingface; the cache HF_HUB_CACHE (or its older name), else $HF_HOME/hub.
  std::string home = env("HOME");
  if (home.empty())
    if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir) home = pw->pw_dir;
  const fs::path cache_home =
      !env("XDG_CACHE_HOME").empty() ? fs::path(env("XDG_CACHE_HOME")) : fs::path(home) / ".cache";
  const fs::path hf_home = !env("HF_HOME").empty() ? fs::path(env("HF_HOME")) : cache_home / "huggingface";
  s.cache_dir = !env("HF_HUB_CACHE").empty()            ? fs::path(env("HF_HUB_CACHE"))
                : !env("HUGGINGFACE_HUB_CACHE").empty() ? fs::path(env("HUGGINGFACE_HUB_CACHE"))
                                                        : hf_home / "hub";
  s.token = env("HF_TOKEN");
  if (s.token.empty()) s.token = env("HUGGING_FACE_HUB_TOKEN");
  if (s.token.empty()) {
    std::ifstream file(!env("HF_TOKEN_PATH").empty() ? fs::path(env("HF_TOKEN_PATH")) : hf_home / "token");
    std::getline(file, s.token);
    while (!s.token.empty() && std::isspace(static_cast<unsigned char>(s.token.back())))
      s.token.pop_back();
  }
  std::string offline = env("HF_HUB_OFFLINE");
  std::transform(offline.begin(), offline.end(), offline.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  s.offline = offline == "1" || offline == "on" || offline == "yes" || offline == "true";
  s.proxies = ProxyEnvironment::from_environment();
  s.ca_bundle = !env("REQUESTS_CA_BUNDLE").empty() ? env("REQUESTS_CA_BUNDLE") : env("CURL_CA_BUNDLE");
  return s;
}

bool is_hub_model_id(std::string_view spec) {
  static const std::regex kRepoId("[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}");
  return std::regex_match(spec.begin(), spec.end(), kRepoId) && spec.find("--") == std::string_view::npos &&
         spec.find("..") == std::string_view::npos && !spec.ends_with(".");
}

fs::path fetch_hub_model(const std::string& repo_id, const std::string& revision,
                         const HubSettings& settings) {
  if (!is_hub_model_id(repo_id))
    throw ModelLoadError("'" + repo_id + "' is neither a model directory nor a Hub model id (org/name)");
  static const std::regex kRevision("[A-Za-z0-9_][A-Za-z0-9._/-]*");
  if (!std::regex_match(revision, kRevision) || revision.find("..") != std::string::npos ||
      revision.find("//") != std::string::npos || revision.ends_with("/"))
    throw ModelLoadError("--revision '" + revision + "' is not a branch, tag or commit");
  try {
    return HubFetcher(settings, repo_id, revision).fetch();
  } catch (const fs::filesystem_error& e) {
    throw ModelLoadError("the Hub cache " + settings.cache_dir.string() + ": " + e.what() +
                         ": check that it is writable and has room (HF_HOME or HF_HUB_CACHE chooses it)");
  }
}

}  // namespace kvserve
