// tokenizer.model from the user's disk: the SentencePiece ModelProto reader and the tokenizer
// built from it. Garbage must end in ModelLoadError; a model that loads must tokenize without
// crashing and stay inside its own vocabulary.
#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "engine/model.h"
#include "engine/tokenizer.h"

namespace {

namespace fs = std::filesystem;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "fuzz_tokenizer_model: %s\n", why.c_str());
  std::abort();
}

const fs::path& model_path() {
  // Leaked, so that it outlives the atexit handler that removes its directory.
  static const fs::path* const path = [] {
    std::string pattern = (fs::temp_directory_path() / "kvserve-fuzz-spm-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) die("mkdtemp failed for " + pattern);
    std::atexit([] {
      std::error_code ignored;
      fs::remove_all(model_path().parent_path(), ignored);
    });
    return new fs::path(fs::path(pattern) / "tokenizer.model");
  }();
  return *path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream out(model_path(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) die("cannot write " + model_path().string());
  }
  std::unique_ptr<kvserve::Tokenizer> tok;
  try {
    tok = kvserve::Tokenizer::load(model_path());
  } catch (const kvserve::ModelLoadError& e) {
    // KVSERVE_FUZZ_VERBOSE=1 says why: for reading a reproducer or a seed.
    if (std::getenv("KVSERVE_FUZZ_VERBOSE")) std::fprintf(stderr, "ModelLoadError: %s\n", e.what());
    return 0;
  }
  const int vocab = tok->vocab_size();
  if (vocab <= 0) die("a loaded model has an empty vocabulary");
  // A fixed mix of ASCII, spaces, multi-byte and malformed text, so that every merge and fallback
  // path of the fuzzed model gets used.
  static const std::string kText = "Hello  world\n\t caf\xC3\xA9 \xE6\x97\xA5\xF0\x9F\x98\x80 \xFF<s></s> x";
  for (const bool bos : {false, true}) {
    for (const kvserve::TokenId id : tok->encode(kText, bos)) {
      if (id < 0 || id >= vocab) die("encode yields an id outside the vocabulary");
    }
  }
  std::vector<kvserve::TokenId> all;
  for (kvserve::TokenId id = -2; id < vocab + 2 && id < 4096; ++id)
    all.push_back(id);
  (void)tok->decode(all);
  return 0;
}
