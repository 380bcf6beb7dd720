// Helpers shared by the tokenizer's file and differential tests: files and temporary directories,
// shell quoting, and hand-made ModelProto bytes (protobuf wire format written field by field).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "engine/model.h"
#include "engine/tokenizer.h"

namespace kvserve::tokenizer_test {

namespace fs = std::filesystem;

inline const std::string kDataDir = std::string(KVSERVE_TEST_DATA) + "/tokenizer";
inline const std::string kModelPath = kDataDir + "/tokenizer.model";

// The committed tokenizer.model, loaded once for every test that reads it.
inline const Tokenizer& committed_tokenizer() {
  static const std::unique_ptr<Tokenizer> tok = Tokenizer::load(kModelPath);
  return *tok;
}

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

inline std::string shell_quote(const fs::path& p) {
  return "'" + p.string() + "'";
}

inline bool have_spm_tools() {
  return std::system(
             "command -v spm_encode >/dev/null 2>&1 && command -v spm_decode >/dev/null 2>&1 && "
             "command -v spm_train >/dev/null 2>&1") == 0;
}

// Shows bytes unambiguously in failure messages.
inline std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

template <typename T>
inline std::string join(const std::vector<T>& v) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i)
    s << (i ? " " : "") << v[i];
  return s.str();
}

// A temporary directory for this process, removed at the end.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("kvserve_tok_" + std::to_string(::getpid()) + "_" + std::to_string(std::random_device{}()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline std::string load_error(const fs::path& path) {
  try {
    Tokenizer::load(path);
  } catch (const ModelLoadError& e) {
    return e.what();
  }
  return "(no exception)";
}

// Protobuf wire format, for crafting model files.
inline std::string varint(uint64_t v) {
  std::string s;
  for (; v >= 0x80; v >>= 7)
    s += static_cast<char>(0x80 | (v & 0x7F));
  return s + static_cast<char>(v);
}
inline std::string key(uint32_t field, uint32_t wire_type) {
  return varint(field << 3 | wire_type);
}
inline std::string bytes_field(uint32_t field, const std::string& data) {
  return key(field, 2) + varint(data.size()) + data;
}
inline std::string varint_field(uint32_t field, int64_t v) {
  return key(field, 0) + varint(static_cast<uint64_t>(v));
}
inline std::string float_field(uint32_t field, float f) {
  uint32_t bits = 0;
  std::memcpy(&bits, &f, 4);
  std::string s = key(field, 5);
  for (int i = 0; i < 4; ++i)
    s += static_cast<char>(bits >> (8 * i) & 0xFF);
  return s;
}
inline std::string piece(const std::string& text, float score, int type) {
  std::string s = bytes_field(1, text) + float_field(2, score);
  return type == 1 ? s : s + varint_field(3, type);  // NORMAL is the default
}

}  // namespace kvserve::tokenizer_test
