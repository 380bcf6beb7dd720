// Model files from the user's disk: config.json and a safetensors checkpoint. Whatever the bytes,
// the loader must either succeed or throw ModelLoadError; any other exception, crash, leak or
// sanitizer report is a bug.
//
// Input layout: a 2-byte little-endian length n, n bytes of config.json, then the bytes of
// model.safetensors (a length past the end takes everything as config.json). The reader mmaps
// real files, so both are written into one scratch directory reused for every input.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "engine/model.h"
#include "engine/safetensors.h"

namespace {

namespace fs = std::filesystem;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "fuzz_model_files: %s\n", why.c_str());
  std::abort();
}

void check(bool ok, const std::string& what) {
  if (!ok) die("property violated: " + what);
}

// KVSERVE_FUZZ_VERBOSE=1 says why each input was refused: for reading a reproducer or a seed.
const bool verbose = std::getenv("KVSERVE_FUZZ_VERBOSE") != nullptr;

void refused(const char* stage, const kvserve::ModelLoadError& e) {
  if (verbose) std::fprintf(stderr, "%s: ModelLoadError: %s\n", stage, e.what());
}

void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) die("cannot write " + path.string());
}

const fs::path& scratch_dir() {
  // Leaked, so that it outlives the atexit handler that removes the directory (a run killed by a
  // crash leaves it behind in the temp folder).
  static const fs::path* const dir = [] {
    std::string pattern = (fs::temp_directory_path() / "kvserve-fuzz-model-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) die("mkdtemp failed for " + pattern);
    std::atexit([] {
      std::error_code ignored;
      fs::remove_all(scratch_dir(), ignored);
    });
    return new fs::path(pattern);
  }();
  return *dir;
}

void read_safetensors(const fs::path& path) {
  kvserve::SafetensorsFile file(path);
  for (const kvserve::SafetensorsTensor& t : file.tensors()) {
    check(file.find(t.name) == &t, "find() returns the listed tensor '" + t.name + "'");
    const size_t element = kvserve::safetensors_dtype_size(t.dtype);
    check(static_cast<uint64_t>(t.numel()) * element == t.bytes.size(),
          "tensor '" + t.name + "' spans numel * element size bytes");
    try {
      const std::vector<float> values = kvserve::safetensors_to_float32(t, path);
      check(values.size() == static_cast<size_t>(t.numel()), "conversion yields numel values");
    } catch (const kvserve::ModelLoadError&) {
      // Integer and 8-bit dtypes do not convert to float32.
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (input.size() < 2) return -1;  // not worth keeping in the corpus
  const size_t config_len =
      static_cast<uint8_t>(input[0]) | static_cast<size_t>(static_cast<uint8_t>(input[1])) << 8;
  const std::string_view rest = input.substr(2);
  const std::string_view config = rest.substr(0, config_len);
  const std::string_view weights = rest.substr(config.size());

  const fs::path& dir = scratch_dir();
  write_file(dir / "config.json", config);
  write_file(dir / "model.safetensors", weights);

  try {
    read_safetensors(dir / "model.safetensors");
  } catch (const kvserve::ModelLoadError& e) {
    refused("SafetensorsFile", e);
  }
  try {
    kvserve::load_model_config(dir / "config.json");
  } catch (const kvserve::ModelLoadError& e) {
    refused("load_model_config", e);
  }
  try {
    const kvserve::Model model = kvserve::load_model(dir);
    const kvserve::ModelConfig& c = model.config;
    check(model.weights.layers.size() == static_cast<size_t>(c.num_layers), "one LayerWeights per layer");
    check(model.weights.embed_tokens.numel() == int64_t{c.vocab_size} * c.hidden_size, "embed_tokens shape");
    check(model.weights.embed_tokens.data.size() == static_cast<size_t>(model.weights.embed_tokens.numel()),
          "embed_tokens holds numel values");
    check(c.tie_word_embeddings == model.weights.lm_head.data.empty(), "lm_head present iff untied");
    check(c.num_heads % c.num_kv_heads == 0 && c.head_dim % 2 == 0, "head counts checked");
    if (verbose) std::fprintf(stderr, "load_model: loaded %s\n", c.architecture.c_str());
  } catch (const kvserve::ModelLoadError& e) {
    refused("load_model", e);
  }
  return 0;
}
