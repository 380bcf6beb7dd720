#include "server/embedded_model.h"

#include <stdlib.h>

#include <cstddef>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

// The files go into .rodata with the assembler's .incbin: no generated source, no size limit, and
// the build re-runs when a file changes (OBJECT_DEPENDS in server/CMakeLists.txt).
#define KVSERVE_EMBED(symbol, file)                                                                     \
  asm(".section .rodata\n.balign 16\n.global " #symbol "_begin\n" #symbol                               \
      "_begin:\n.incbin \"" KVSERVE_EMBEDDED_MODEL_DIR "/" file "\"\n.global " #symbol "_end\n" #symbol \
      "_end:\n.previous\n")

KVSERVE_EMBED(kvserve_embedded_config, "config.json");
KVSERVE_EMBED(kvserve_embedded_weights, "model.safetensors");
KVSERVE_EMBED(kvserve_embedded_tokenizer, "tokenizer.model");
KVSERVE_EMBED(kvserve_embedded_tokenizer_config, "tokenizer_config.json");  // the chat template

extern "C" {
extern const char kvserve_embedded_config_begin[], kvserve_embedded_config_end[];
extern const char kvserve_embedded_weights_begin[], kvserve_embedded_weights_end[];
extern const char kvserve_embedded_tokenizer_begin[], kvserve_embedded_tokenizer_end[];
extern const char kvserve_embedded_tokenizer_config_begin[], kvserve_embedded_tokenizer_config_end[];
}

namespace kvserve {
namespace {

void write_file(const std::filesystem::path& path, const char* begin, const char* end) {
  std::ofstream out(path, std::ios::binary);
  out.write(begin, end - begin);
  if (!out) throw std::runtime_error("cannot write the embedded model to " + path.string());
}

}  // namespace

std::filesystem::path write_embedded_model() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "kvserve-model-XXXXXX").string();
  if (!mkdtemp(tmpl.data()))
    throw std::system_error(errno, std::generic_category(),
                            "cannot create a directory for the embedded model");
  const std::filesystem::path dir(tmpl);
  write_file(dir / "config.json", kvserve_embedded_config_begin, kvserve_embedded_config_end);
  write_file(dir / "model.safetensors", kvserve_embedded_weights_begin, kvserve_embedded_weights_end);
  write_file(dir / "tokenizer.model", kvserve_embedded_tokenizer_begin, kvserve_embedded_tokenizer_end);
  write_file(dir / "tokenizer_config.json", kvserve_embedded_tokenizer_config_begin,
             kvserve_embedded_tokenizer_config_end);
  return dir;
}

}  // namespace kvserve
