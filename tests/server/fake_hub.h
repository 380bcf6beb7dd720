// A Hugging Face Hub and its CDN on loopback, for the tests of fetching models
// (server/hub_download.h): the model API's file list, the resolve URLs (small files served
// directly with their git blob id as ETag, large ones redirected to the CDN with their SHA-256 as
// X-Linked-Etag), and a CDN on another port that serves byte ranges. It records what it was asked,
// and can ask for a token or corrupt a file.
#pragma once

#include <httplib.h>
#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace kvserve::testing {

inline std::string hex_digest(const EVP_MD* md, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), out, &size, md, nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < size; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", out[i]);
    hex += buf;
  }
  return hex;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class FakeHub {
 public:
  struct File {
    std::string content;
    bool large = false;  // stored in LFS: redirected to the CDN, ETag = SHA-256
    std::string etag() const {
      return large ? hex_digest(EVP_sha256(), content)
                   : hex_digest(EVP_sha1(), "blob " + std::to_string(content.size()) + '\0' + content);
    }
  };

  std::string repo = "kvserve-test/tiny-llama";
  std::string commit = "0123456789abcdef0123456789abcdef01234567";

  // Served over HTTPS when given a certificate and its key (PEM files).
  explicit FakeHub(const std::string& tls_cert = "", const std::string& tls_key = "")
      : scheme_(tls_cert.empty() ? "http" : "https") {
    for (std::unique_ptr<httplib::Server>* server : {&hub_, &cdn_}) {
      if (tls_cert.empty())
        *server = std::make_unique<httplib::Server>();
      else
        *server = std::make_unique<httplib::SSLServer>(tls_cert.c_str(), tls_key.c_str());
      (*server)->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response&) {
        if (req.has_header("Proxy-Authorization")) {
          std::lock_guard lock(mu_);
          proxy_authorizations_.insert(req.get_header_value("Proxy-Authorization"));
        }
        return httplib::Server::HandlerResponse::Unhandled;
      });
    }
    hub_->Get("/api/models/([^/]+)/([^/]+)/revision/(.+)", [this](const httplib::Request& req,
                                                                  httplib::Response& res) {
      if (!authorized(req, res)) return;
      std::lock_guard lock(mu_);
      if (api_status_ != 200) {
        res.status = api_status_;
        return;
      }
      if (req.matches[1].str() + "/" + req.matches[2].str() != repo || !known_revision(req.matches[3])) {
        res.status = 404;
        return;
      }
      nlohmann::json siblings = nlohmann::json::array();
      for (const auto& [name, file] : files_)
        siblings.push_back({{"rfilename", name}});
      res.set_content(nlohmann::json{{"sha", commit}, {"siblings", siblings}}.dump(), "application/json");
    });
    hub_->Get("/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)",
              [this](const httplib::Request& req, httplib::Response& res) {
                if (!authorized(req, res)) return;
                std::lock_guard lock(mu_);
                auto it = files_.find(req.matches[4]);
                if (req.matches[1].str() + "/" + req.matches[2].str() != repo ||
                    !known_revision(req.matches[3]) || it == files_.end()) {
                  res.status = 404;
                  return;
                }
                const File& file = it->second;
                if (req.method == "HEAD") ++head_requests;
                res.set_header("X-Repo-Commit", commit);
                if (file.large) {
                  res.status = 302;
                  res.set_header("X-Linked-Etag", "\"" + file.etag() + "\"");
                  res.set_header("X-Linked-Size", std::to_string(file.content.size()));
                  res.set_header("Location", cdn_origin() + "/blobs/" + file.etag() + "?signature=abc%2Fdef");
                  return;
                }
                res.set_header("ETag", "W/\"" + file.etag() + "\"");
                if (req.method == "GET") ++content_requests;
                res.set_content(file.content, "application/octet-stream");
              });
    cdn_->Get("/blobs/([0-9a-f]+)", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lock(mu_);
      if (req.has_header("Authorization")) cdn_saw_authorization_ = true;
      if (req.get_param_value("signature") != "abc/def") {
        res.status = 403;  // the presigned query must arrive as it was sent
        return;
      }
      for (const auto& [name, file] : files_) {
        if (file.etag() != req.matches[1]) continue;
        if (req.method == "GET") ++content_requests;
        if (req.has_header("Range")) ranges_.push_back(req.get_header_value("Range"));
        std::string content = file.content;
        if (name == corrupt_) content[content.size() / 2] ^= 1;
        if (name == drop_name_ && drops_left_ > 0) {
          // Sends the first drop_after_ bytes, then drops the connection.
          --drops_left_;
          auto data = std::make_shared<std::string>(std::move(content));
          res.set_content_provider(
              data->size(), "application/octet-stream",
              [data, limit = drop_after_](size_t offset, size_t length, httplib::DataSink& sink) {
                const size_t end = std::min(offset + length, limit);
                if (offset < end) sink.write(data->data() + offset, end - offset);
                return end == offset + length;
              });
          return;
        }
        res.set_content(content, "application/octet-stream");  // httplib answers ranges with 206
        return;
      }
      res.status = 404;
    });
    hub_port_ = hub_->bind_to_any_port("127.0.0.1");
    cdn_port_ = cdn_->bind_to_any_port("127.0.0.1");
    hub_thread_ = std::thread([this] { hub_->listen_after_bind(); });
    cdn_thread_ = std::thread([this] { cdn_->listen_after_bind(); });
    // Bound and listening already, but stop() is lost on a server whose thread has not started.
    while (!hub_->is_running() || !cdn_->is_running())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  ~FakeHub() {
    hub_->stop();
    cdn_->stop();
    hub_thread_.join();
    cdn_thread_.join();
  }

  std::string endpoint() const { return scheme_ + "://127.0.0.1:" + std::to_string(hub_port_); }
  std::string cdn_origin() const { return scheme_ + "://127.0.0.1:" + std::to_string(cdn_port_); }

  // The repository holds a model directory's files, weights and tokenizer model as large files.
  void add_model_dir(const std::string& dir, const std::vector<std::string>& names) {
    std::lock_guard lock(mu_);
    for (const std::string& name : names)
      files_[name] =
          File{read_file(dir + "/" + name), name.ends_with(".safetensors") || name.ends_with(".model")};
  }
  void add(const std::string& name, std::string content, bool large) {
    std::lock_guard lock(mu_);
    files_[name] = File{std::move(content), large};
  }
  // The CDN drops the connection `times` times after `bytes` bytes of `name`.
  void drop(const std::string& name, size_t bytes, int times) {
    std::lock_guard lock(mu_);
    drop_name_ = name;
    drop_after_ = bytes;
    drops_left_ = times;
  }
  void set_corrupt(const std::string& name) {
    std::lock_guard lock(mu_);
    corrupt_ = name;
  }
  // The model API answers every request with this status (200: as usual).
  void set_api_status(int status) {
    std::lock_guard lock(mu_);
    api_status_ = status;
  }
  void require_token(const std::string& token) {
    std::lock_guard lock(mu_);
    required_token_ = token;
  }
  std::vector<std::string> ranges_seen() {
    std::lock_guard lock(mu_);
    return ranges_;
  }
  bool cdn_got_a_token() {
    std::lock_guard lock(mu_);
    return cdn_saw_authorization_;
  }

  // Proxy-Authorization values that reached the Hub or the CDN (inside CONNECT tunnels).
  std::set<std::string> proxy_authorizations() {
    std::lock_guard lock(mu_);
    return proxy_authorizations_;
  }

  std::atomic<int> content_requests{0};  // GETs answered with a file's content
  std::atomic<int> head_requests{0};     // HEADs of a file's resolve URL
  std::atomic<int> authorized_requests{0};

 private:
  bool known_revision(const std::string& revision) const { return revision == "main" || revision == commit; }

  bool authorized(const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(mu_);
    if (required_token_.empty()) return true;
    const std::string got = req.get_header_value("Authorization");
    if (got.empty()) {
      res.status = 401;
      return false;
    }
    if (got != "Bearer " + required_token_) {
      res.status = 401;
      return false;
    }
    ++authorized_requests;
    return true;
  }

  std::mutex mu_;
  std::map<std::string, File> files_;
  std::string corrupt_;
  std::string drop_name_;
  size_t drop_after_ = 0;
  int drops_left_ = 0;
  int api_status_ = 200;
  std::string required_token_;
  std::vector<std::string> ranges_;
  bool cdn_saw_authorization_ = false;
  std::set<std::string> proxy_authorizations_;
  const std::string scheme_;
  std::unique_ptr<httplib::Server> hub_, cdn_;
  int hub_port_ = 0, cdn_port_ = 0;
  std::thread hub_thread_, cdn_thread_;
};

}  // namespace kvserve::testing
