// Reader for the safetensors format: an 8-byte little-endian header length N, N bytes of JSON that
// describe every tensor (dtype, shape, byte range), then the raw tensor bytes. The file is
// memory-mapped read-only, so opening a multi-gigabyte checkpoint costs no copy; only the
// conversion to float32 touches the data.
//
// Everything in the header is checked when the file is opened, so a corrupt or truncated file is
// reported once, up front, with the file name and what is wrong (kvserve::ModelLoadError from
// engine/model.h), never discovered later as garbage weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvserve {

// The dtypes the format defines (and that this reader can therefore size and skip over). F32, F16,
// BF16 and F8_E4M3 convert to float32.
enum class SafetensorsDtype {
  kBool,
  kU8,
  kI8,
  kF8E4M3,
  kF8E5M2,
  kU16,
  kI16,
  kF16,
  kBF16,
  kU32,
  kI32,
  kF32,
  kU64,
  kI64,
  kF64,
};

// "F16", "BF16", ... exactly as the header spells it.
const char* safetensors_dtype_name(SafetensorsDtype dtype);
std::optional<SafetensorsDtype> parse_safetensors_dtype(std::string_view name);
size_t safetensors_dtype_size(SafetensorsDtype dtype);
// "[128, 64]": how error messages show a tensor shape.
std::string shape_string(const std::vector<int64_t>& shape);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  // Points into the owning SafetensorsFile's mapping; valid as long as that file object lives.
  std::span<const std::byte> bytes;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
};

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws ModelLoadError naming the file and the problem.
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Sorted by name.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(std::string_view name) const;
  // The header's "__metadata__" (free-form; non-string values kept as their JSON text).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  void unmap() noexcept;

  std::filesystem::path path_;
  std::byte* mapping_ = nullptr;  // mapped PROT_READ
  size_t mapping_size_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Exact IEEE 754 binary16 / bfloat16 -> binary32 (subnormals, infinities, NaN payloads, -0).
float f16_bits_to_float(uint16_t bits);
float bf16_bits_to_float(uint16_t bits);
// Exact OCP FP8 E4M3 (the "e4m3fn" variant FP8 checkpoints store) -> binary32: subnormals, -0, and
// NaN for S.1111.111 (the format has no infinities; its largest value is 448).
float f8e4m3_bits_to_float(uint8_t bits);

// The tensor's values as float32, for F32, F16, BF16 and F8_E4M3 tensors (the stored FP8 values,
// before any scale: engine/model.h's mapped_to_float32 applies those); any other dtype throws
// ModelLoadError naming `file` and the tensor.
std::vector<float> safetensors_to_float32(const SafetensorsTensor& tensor, const std::filesystem::path& file);
// Elements [first, first + out.size()) of it, into `out`: a backend converting a mapped checkpoint
// through a bounded staging buffer. A range past the tensor's end throws std::out_of_range.
void safetensors_to_float32(const SafetensorsTensor& tensor, const std::filesystem::path& file, size_t first,
                            std::span<float> out);

}  // namespace kvserve
