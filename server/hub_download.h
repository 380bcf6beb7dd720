// Models from the Hugging Face Hub: `kvserve --model org/name` fetches the files kvserve reads into
// the Hub's local cache and serves the snapshot directory like any model directory.
//
// The cache is the one huggingface_hub, transformers and vLLM share, in the same layout
// (<cache>/models--org--name/ with blobs/<etag>, snapshots/<commit>/<file> linking to its blob, and
// refs/<branch> holding the commit), so a model they downloaded is found here and the other way
// round. A blob already in the cache, from any revision, is linked instead of fetched; a download
// cut short resumes where it stopped; a weight file is checked against its SHA-256 (the Hub's ETag
// for large files) before it enters the cache; a transfer that breaks off resumes, within the run
// (a few times, after a pause) and on the next start; and two servers sharing the cache (replicas
// on one volume) take turns on a file instead of writing it together.
//
// Only the files kvserve reads are fetched: config.json, generation_config.json, the tokenizer and
// chat template files, and the safetensors weights (the shards model.safetensors.index.json names,
// else the top-level *.safetensors files but Mistral's consolidated ones).
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

#include "server/http_proxy.h"

namespace kvserve {

// Where and how to reach the Hub, as huggingface_hub reads it from the environment.
struct HubSettings {
  std::string endpoint = "https://huggingface.co";  // HF_ENDPOINT (a mirror, or a test's server)
  std::filesystem::path cache_dir;  // HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
  std::string token;                // HF_TOKEN, else the file $HF_HOME/token (`huggingface-cli login`)
  bool offline = false;             // HF_HUB_OFFLINE=1: use the cache, never the network
  ProxyEnvironment proxies;         // https_proxy, http_proxy, no_proxy (server/http_proxy.h)
  // CA certificates to trust instead of the system's (a TLS-inspecting proxy's): REQUESTS_CA_BUNDLE,
  // else CURL_CA_BUNDLE, as huggingface_hub's requests reads them. (SSL_CERT_FILE works as for
  // any OpenSSL program.)
  std::string ca_bundle;
  // A transfer that breaks off is resumed after this, doubling, up to kHubFetchAttempts in all.
  std::chrono::milliseconds retry_delay{1000};

  static HubSettings from_environment();
};

inline constexpr int kHubFetchAttempts = 5;

// Whether a --model value has the shape of a Hub repository id, "org/name" (one slash, each part
// letters, digits, '.', '_' and '-'). The caller checks first that no local path of that name exists.
bool is_hub_model_id(std::string_view spec);

// The directory of `repo_id` at `revision` (a branch, tag or commit) in the cache, after fetching
// what it lacks. Offline, or when the Hub cannot be reached, a snapshot already in the cache serves.
// Throws ModelLoadError saying what to change (the name, the token, the network).
std::filesystem::path fetch_hub_model(const std::string& repo_id, const std::string& revision,
                                      const HubSettings& settings);

}  // namespace kvserve
