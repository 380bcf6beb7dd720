#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "engine/model.h"

namespace kvserve {
namespace {

// Tensor bytes are reinterpreted in place, and the format stores them little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors reading assumes a little-endian host");

using nlohmann::json;

constexpr size_t kHeaderLengthBytes = 8;

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  size_t size;
};

constexpr std::array<DtypeInfo, 15> kDtypes{{
    {SafetensorsDtype::kBool, "BOOL", 1},
    {SafetensorsDtype::kU8, "U8", 1},
    {SafetensorsDtype::kI8, "I8", 1},
    {SafetensorsDtype::kF8E4M3, "F8_E4M3", 1},
    {SafetensorsDtype::kF8E5M2, "F8_E5M2", 1},
    {SafetensorsDtype::kU16, "U16", 2},
    {SafetensorsDtype::kI16, "I16", 2},
    {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},
    {SafetensorsDtype::kU32, "U32", 4},
    {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kU64, "U64", 8},
    {SafetensorsDtype::kI64, "I64", 8},
    {SafetensorsDtype::kF64, "F64", 8},
}};

const DtypeInfo& dtype_info(SafetensorsDtype dtype) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.dtype == dtype) return info;
  }
  return kDtypes[0];  // unreachable: every enumerator is in the table
}

std::string known_dtype_list() {
  std::string out;
  for (const DtypeInfo& info : kDtypes) {
    if (!out.empty()) out += ", ";
    out += info.name;
  }
  return out;
}

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& problem) {
  throw ModelLoadError(path.string() + ": " + problem);
}

// Error-message excerpt of a JSON value: long values are cut so a corrupt header cannot flood the log.
std::string excerpt(const json& value) {
  std::string text = value.dump();
  constexpr size_t kMax = 80;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

// The parser keeps only the last of two equal keys; a tensor named twice is corruption, so the
// first-level keys are collected while parsing.
json parse_header(const std::filesystem::path& path, const char* begin, const char* end) {
  std::set<std::string> names;
  std::optional<std::string> duplicate;
  const json::parser_callback_t watch_duplicates = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && parsed.is_string() && !duplicate) {
      if (!names.insert(parsed.get<std::string>()).second) duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, watch_duplicates);
  } catch (const json::exception& e) {
    fail(path, std::string("the header is not valid JSON (") + e.what() +
                   "); the file is corrupt or not a safetensors file - re-download or re-export it");
  }
  if (!header.is_object()) {
    fail(path, "the header must be a JSON object of tensors, got " + excerpt(header) +
                   "; the file is corrupt or not a safetensors file");
  }
  if (duplicate) {
    fail(path, "the header names tensor '" + *duplicate + "' twice; the file is corrupt - re-export it");
  }
  return header;
}

std::vector<int64_t> parse_shape(const std::filesystem::path& path, const std::string& name,
                                 const json& entry) {
  const auto it = entry.find("shape");
  if (it == entry.end() || !it->is_array()) {
    fail(path, "tensor '" + name + "' has no \"shape\" array in the header; the file is corrupt");
  }
  std::vector<int64_t> shape;
  for (const json& dim : *it) {
    if (!dim.is_number_unsigned() || dim.get<uint64_t>() > uint64_t{std::numeric_limits<int32_t>::max()}) {
      fail(path, "tensor '" + name + "' has shape " + excerpt(*it) +
                     "; every dimension must be a non-negative integer - the file is corrupt");
    }
    shape.push_back(dim.get<int64_t>());
  }
  return shape;
}

std::pair<uint64_t, uint64_t> parse_offsets(const std::filesystem::path& path, const std::string& name,
                                            const json& entry) {
  const auto it = entry.find("data_offsets");
  if (it == entry.end() || !it->is_array() || it->size() != 2 || !(*it)[0].is_number_unsigned() ||
      !(*it)[1].is_number_unsigned()) {
    fail(path, "tensor '" + name + "' needs \"data_offsets\": [begin, end] with non-negative integers, got " +
                   (it == entry.end() ? std::string("nothing") : excerpt(*it)) + "; the file is corrupt");
  }
  return {(*it)[0].get<uint64_t>(), (*it)[1].get<uint64_t>()};
}

// numel * element size, or nullopt when it does not fit in 64 bits (a header that claims that
// much cannot describe this file anyway).
std::optional<uint64_t> byte_size(const std::vector<int64_t>& shape, size_t element_size) {
  uint64_t bytes = element_size;
  for (int64_t d : shape) {
    const auto dim = static_cast<uint64_t>(d);
    if (dim != 0 && bytes > std::numeric_limits<uint64_t>::max() / dim) return std::nullopt;
    bytes *= dim;
  }
  return bytes;
}

// One header entry -> a tensor viewing its bytes in `data_region`, every field checked.
SafetensorsTensor parse_tensor(const std::filesystem::path& path, const std::string& name, const json& entry,
                               std::span<const std::byte> data_region) {
  if (!entry.is_object()) {
    fail(path, "tensor '" + name + "' must be described by a JSON object, got " + excerpt(entry) +
                   "; the file is corrupt");
  }
  SafetensorsTensor tensor;
  tensor.name = name;
  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    fail(path, "tensor '" + name + "' has no \"dtype\" string in the header; the file is corrupt");
  }
  const auto dtype = parse_safetensors_dtype(dtype_it->get<std::string>());
  if (!dtype) {
    fail(path, "tensor '" + name + "' has unknown dtype '" + dtype_it->get<std::string>() +
                   "' (known: " + known_dtype_list() + "); the file is corrupt or from a newer format");
  }
  tensor.dtype = *dtype;
  tensor.shape = parse_shape(path, name, entry);
  const auto [begin, end] = parse_offsets(path, name, entry);
  if (begin > end || end > data_region.size()) {
    fail(path, "tensor '" + name + "' has data_offsets [" + std::to_string(begin) + ", " +
                   std::to_string(end) + "] outside the data region of " +
                   std::to_string(data_region.size()) +
                   " bytes; the file is truncated or corrupt - re-download it");
  }
  const auto expected_bytes = byte_size(tensor.shape, safetensors_dtype_size(tensor.dtype));
  if (!expected_bytes || *expected_bytes != end - begin) {
    fail(path, "tensor '" + name + "' spans " + std::to_string(end - begin) + " bytes (data_offsets [" +
                   std::to_string(begin) + ", " + std::to_string(end) + "]) but its shape " +
                   shape_string(tensor.shape) + " of " + safetensors_dtype_name(tensor.dtype) + " needs " +
                   (expected_bytes ? std::to_string(*expected_bytes) : std::string("more than 2^64")) +
                   "; the file is corrupt");
  }
  // numel() multiplies the dimensions in int64. With a zero dimension after huge ones the byte
  // count above comes out 0 and passes, but the running product overflows on the way.
  int64_t count = 1;
  for (const int64_t d : tensor.shape) {
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / d) {
      fail(path, "tensor '" + name + "' has shape " + shape_string(tensor.shape) +
                     ", whose element count overflows 64 bits; the file is corrupt");
    }
    count *= d;
  }
  tensor.bytes = std::span<const std::byte>(data_region.data() + begin, static_cast<size_t>(end - begin));
  return tensor;
}

// Two tensors sharing bytes means the header was damaged; nothing legitimate writes that.
void check_no_overlap(const std::filesystem::path& path, const std::vector<SafetensorsTensor>& tensors) {
  std::vector<const SafetensorsTensor*> by_offset;
  for (const SafetensorsTensor& t : tensors) {
    if (!t.bytes.empty()) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const SafetensorsTensor* a, const SafetensorsTensor* b) {
    return a->bytes.data() < b->bytes.data();
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsTensor& prev = *by_offset[i - 1];
    if (by_offset[i]->bytes.data() < prev.bytes.data() + prev.bytes.size()) {
      fail(path, "tensors '" + prev.name + "' and '" + by_offset[i]->name +
                     "' overlap in the data region; the file is corrupt - re-export it");
    }
  }
}

}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

const char* safetensors_dtype_name(SafetensorsDtype dtype) {
  return dtype_info(dtype).name;
}

size_t safetensors_dtype_size(SafetensorsDtype dtype) {
  return dtype_info(dtype).size;
}

std::optional<SafetensorsDtype> parse_safetensors_dtype(std::string_view name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return info.dtype;
  }
  return std::nullopt;
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file; a safetensors checkpoint must be a plain file");
  }
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kHeaderLengthBytes) {
    ::close(fd);
    fail(path, "the file is " + std::to_string(file_size) +
                   " bytes, shorter than the 8-byte header length every safetensors file starts with; "
                   "it is truncated or not a safetensors file - re-download it");
  }
  void* mapped = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file's pages reachable on its own
  if (mapped == MAP_FAILED) fail(path, std::string("cannot memory-map: ") + std::strerror(mmap_errno));
  mapping_ = static_cast<std::byte*>(mapped);
  mapping_size_ = file_size;

  // From here on the mapping must be released if validation throws.
  try {
    uint64_t header_length = 0;
    std::memcpy(&header_length, mapping_, sizeof header_length);
    if (header_length > file_size - kHeaderLengthBytes) {
      fail(path, "the header length in the first 8 bytes is " + std::to_string(header_length) + " but only " +
                     std::to_string(file_size - kHeaderLengthBytes) +
                     " bytes follow; the file is truncated or not a safetensors file - re-download it");
    }
    const auto* header_begin = reinterpret_cast<const char*>(mapping_ + kHeaderLengthBytes);
    const json header = parse_header(path, header_begin, header_begin + header_length);

    const std::span<const std::byte> data_region(mapping_ + kHeaderLengthBytes + header_length,
                                                 file_size - kHeaderLengthBytes - header_length);
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        if (!entry.is_object()) fail(path, "\"__metadata__\" must be a JSON object; the file is corrupt");
        for (const auto& [key, value] : entry.items()) {
          metadata_[key] = value.is_string() ? value.get<std::string>() : value.dump();
        }
        continue;
      }
      tensors_.push_back(parse_tensor(path, name, entry, data_region));
    }

    check_no_overlap(path, tensors_);
    std::sort(tensors_.begin(), tensors_.end(),
              [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.name < b.name; });
    ::madvise(mapping_, mapping_size_,
              MADV_WILLNEED);  // every byte is about to be read, converted or uploaded
  } catch (...) {
    unmap();
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  unmap();
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_size_(std::exchange(other.mapping_size_, 0)),
      tensors_(std::move(other.tensors_)),
      metadata_(std::move(other.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_size_ = std::exchange(other.mapping_size_, 0);
    tensors_ = std::move(other.tensors_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

void SafetensorsFile::unmap() noexcept {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
  mapping_ = nullptr;
  mapping_size_ = 0;
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  const auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                                   [](const SafetensorsTensor& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

float f16_bits_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1Fu;
  const uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in binary32, which has bits to spare.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
  return std::bit_cast<float>(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

float bf16_bits_to_float(uint16_t bits) {
  // bfloat16 is the top half of a binary32, so widening is exact for every pattern.
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

float f8e4m3_bits_to_float(uint8_t bits) {
  // OCP FP8 E4M3 ("e4m3fn"): sign, 4 exponent bits biased by 7, 3 mantissa bits; no infinities, and
  // only S.1111.111 is NaN, so the top exponent holds normal numbers up to 448.
  const float sign = (bits & 0x80) ? -1.0f : 1.0f;
  const int exponent = (bits >> 3) & 0xF;
  const int mantissa = bits & 0x7;
  if (exponent == 0xF && mantissa == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);  // subnormal: m/8 * 2^-6
  return sign * std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);      // (1 + m/8) * 2^(e-7)
}

void safetensors_to_float32(const SafetensorsTensor& tensor, const std::filesystem::path& file, size_t first,
                            std::span<float> out) {
  if (first > static_cast<size_t>(tensor.numel()) || out.size() > static_cast<size_t>(tensor.numel()) - first)
    throw std::out_of_range("safetensors_to_float32: elements [" + std::to_string(first) + ", " +
                            std::to_string(first + out.size()) + ") of tensor '" + tensor.name + "' with " +
                            std::to_string(tensor.numel()));
  const size_t n = out.size();
  switch (tensor.dtype) {
    case SafetensorsDtype::kF32:
      if (n) std::memcpy(out.data(), tensor.bytes.data() + first * sizeof(float), n * sizeof(float));
      return;
    case SafetensorsDtype::kF16:
    case SafetensorsDtype::kBF16: {
      const std::byte* src = tensor.bytes.data() + first * sizeof(uint16_t);
      const auto widen = tensor.dtype == SafetensorsDtype::kF16 ? f16_bits_to_float : bf16_bits_to_float;
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, sizeof bits);  // the data region need not be 2-byte aligned
        out[i] = widen(bits);
      }
      return;
    }
    case SafetensorsDtype::kF8E4M3: {
      // Every value of a byte, decoded once: a checkpoint has billions of them.
      static const std::array<float, 256> kValues = [] {
        std::array<float, 256> values{};
        for (int b = 0; b < 256; ++b)
          values[static_cast<size_t>(b)] = f8e4m3_bits_to_float(static_cast<uint8_t>(b));
        return values;
      }();
      const std::byte* src = tensor.bytes.data() + first;
      for (size_t i = 0; i < n; ++i)
        out[i] = kValues[std::to_integer<uint8_t>(src[i])];
      return;
    }
    default:
      fail(file, "tensor '" + tensor.name + "' has dtype " + safetensors_dtype_name(tensor.dtype) +
                     "; kvserve loads weights stored as F32, F16 or BF16, or F8_E4M3 with their scales - "
                     "convert the checkpoint to one of those");
  }
}

std::vector<float> safetensors_to_float32(const SafetensorsTensor& tensor,
                                          const std::filesystem::path& file) {
  std::vector<float> out(static_cast<size_t>(tensor.numel()));
  safetensors_to_float32(tensor, file, 0, out);
  return out;
}

}  // namespace kvserve
