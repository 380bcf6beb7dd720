#include "engine/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/model.h"
#include "tests/engine/model_files_test_util.h"

namespace kvserve {
namespace {

using model_test::contains_all;
using model_test::f32_tensor;
using model_test::model_load_error;
using model_test::raw_bytes;
using model_test::RawTensor;
using model_test::safetensors_bytes;
using model_test::TempDir;
using model_test::write_file;

struct BitPattern {
  uint16_t bits;
  float expected;  // written down from the format definition, not computed by the code under test
};

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
const std::vector<BitPattern> kF16Patterns = {
    {0x3C00, 1.0f},
    {0xC000, -2.0f},
    {0x3555, 0x1.554p-2f},                                 // 0.333251953125, nearest to 1/3
    {0x7BFF, 65504.0f},                                    // largest finite
    {0x0400, 0x1p-14f},                                    // smallest normal
    {0x0001, 0x1p-24f},                                    // smallest subnormal
    {0x03FF, 0x1.ff8p-15f},                                // largest subnormal: 1023 * 2^-24
    {0x8001, -0x1p-24f},                                   // negative subnormal
    {0x0000, 0.0f},                                        //
    {0x8000, -0.0f},                                       // sign kept
    {0x7C00, std::numeric_limits<float>::infinity()},      //
    {0xFC00, -std::numeric_limits<float>::infinity()},     //
    {0x7E00, std::bit_cast<float>(uint32_t{0x7FC00000})},  // quiet NaN
    {0x7D01, std::bit_cast<float>(uint32_t{0x7FA02000})},  // NaN payload moves up 13 bits
    {0xFE00, std::bit_cast<float>(uint32_t{0xFFC00000})},  // negative NaN
};

// bfloat16: the top 16 bits of a binary32 (8 exponent bits, bias 127, 7 mantissa bits).
const std::vector<BitPattern> kBf16Patterns = {
    {0x3F80, 1.0f},
    {0xC040, -3.0f},
    {0x3EAB, 0x1.56p-2f},                                  // 0.333984375
    {0x7F7F, 0x1.fep127f},                                 // largest finite
    {0x0080, 0x1p-126f},                                   // smallest normal
    {0x0001, 0x1p-133f},                                   // smallest subnormal
    {0x007F, 0x1.fcp-127f},                                // largest subnormal: 127 * 2^-133
    {0x8000, -0.0f},                                       //
    {0x7F80, std::numeric_limits<float>::infinity()},      //
    {0xFF80, -std::numeric_limits<float>::infinity()},     //
    {0x7FC0, std::bit_cast<float>(uint32_t{0x7FC00000})},  //
    {0x7F81, std::bit_cast<float>(uint32_t{0x7F810000})},  // signalling NaN keeps its payload
};

std::vector<uint16_t> bits_of(const std::vector<BitPattern>& patterns) {
  std::vector<uint16_t> out;
  for (const BitPattern& p : patterns)
    out.push_back(p.bits);
  return out;
}

// Bitwise, so -0 vs +0 and NaN payloads count.
void expect_same_bits(float actual, float expected, uint16_t source_bits) {
  EXPECT_EQ(std::bit_cast<uint32_t>(actual), std::bit_cast<uint32_t>(expected))
      << "source bits 0x" << std::hex << source_bits << ": got " << actual << ", expected " << expected;
}

TEST(SafetensorsConversion, F16BitPatternsWidenExactly) {
  for (const BitPattern& p : kF16Patterns)
    expect_same_bits(f16_bits_to_float(p.bits), p.expected, p.bits);
}

TEST(SafetensorsConversion, Bf16BitPatternsWidenExactly) {
  for (const BitPattern& p : kBf16Patterns)
    expect_same_bits(bf16_bits_to_float(p.bits), p.expected, p.bits);
}

TEST(SafetensorsConversion, EveryF16PatternMatchesTheFormula) {
  // (-1)^s * 2^(e-15) * (1 + m/1024) for normals, (-1)^s * 2^-14 * m/1024 for subnormals.
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const uint32_t exponent = (bits >> 10) & 0x1F;
    if (exponent == 0x1F) continue;  // inf and NaN are covered by the table above
    const double mantissa = static_cast<double>(bits & 0x3FF) / 1024.0;
    const double magnitude = exponent == 0 ? std::ldexp(mantissa, -14)
                                           : std::ldexp(1.0 + mantissa, static_cast<int>(exponent) - 15);
    const float expected = static_cast<float>((bits & 0x8000) ? -magnitude : magnitude);
    const auto source = static_cast<uint16_t>(bits);
    ASSERT_EQ(std::bit_cast<uint32_t>(f16_bits_to_float(source)), std::bit_cast<uint32_t>(expected))
        << "bits 0x" << std::hex << bits;
  }
}

class SafetensorsFileTest : public ::testing::Test {
 protected:
  std::filesystem::path write(const std::string& bytes, const std::string& name = "model.safetensors") {
    const std::filesystem::path path = dir_ / name;
    write_file(path, bytes);
    return path;
  }

  // Opens `bytes` as a file and returns the ModelLoadError message, which must name the file.
  std::string open_error(const std::string& bytes) {
    const std::filesystem::path path = write(bytes);
    const std::string message = model_load_error([&] { SafetensorsFile file(path); });
    EXPECT_TRUE(contains_all(message, {path.string() + ": "}));
    return message;
  }

  TempDir dir_;
};

TEST_F(SafetensorsFileTest, ReadsHeaderAndDataSortedByName) {
  const std::vector<float> weights = {1.5f, -2.0f, 0.25f, 3.0f, 4.0f, -0.5f};
  const std::vector<int32_t> ids = {7, -1};
  const auto path = write(safetensors_bytes(std::vector<RawTensor>{
      {"z.weight", "F32", {2, 3}, raw_bytes(weights)},
      {"a.ids", "I32", {2}, raw_bytes(ids)},
      {"empty", "F16", {0, 4}, ""},
  }));
  const SafetensorsFile file(path);
  EXPECT_EQ(file.path(), path);
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.tensors()[0].name, "a.ids");
  EXPECT_EQ(file.tensors()[1].name, "empty");
  EXPECT_EQ(file.tensors()[2].name, "z.weight");
  EXPECT_EQ(file.metadata().at("format"), "pt");

  const SafetensorsTensor* z = file.find("z.weight");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->dtype, SafetensorsDtype::kF32);
  EXPECT_EQ(z->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(z->numel(), 6);
  EXPECT_EQ(safetensors_to_float32(*z, path), weights);

  const SafetensorsTensor* a = file.find("a.ids");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, SafetensorsDtype::kI32);
  ASSERT_EQ(a->bytes.size(), 8u);
  int32_t first = 0;
  std::memcpy(&first, a->bytes.data(), sizeof first);
  EXPECT_EQ(first, 7);

  EXPECT_EQ(file.find("empty")->numel(), 0);
  EXPECT_TRUE(safetensors_to_float32(*file.find("empty"), path).empty());
  EXPECT_EQ(file.find("missing"), nullptr);
}

TEST_F(SafetensorsFileTest, ConvertsF16AndBf16TensorsExactly) {
  const auto path = write(safetensors_bytes(std::vector<RawTensor>{
      {"half", "F16", {static_cast<int64_t>(kF16Patterns.size())}, raw_bytes(bits_of(kF16Patterns))},
      {"brain", "BF16", {static_cast<int64_t>(kBf16Patterns.size())}, raw_bytes(bits_of(kBf16Patterns))},
  }));
  const SafetensorsFile file(path);
  const std::vector<float> half = safetensors_to_float32(*file.find("half"), path);
  ASSERT_EQ(half.size(), kF16Patterns.size());
  for (size_t i = 0; i < half.size(); ++i)
    expect_same_bits(half[i], kF16Patterns[i].expected, kF16Patterns[i].bits);
  const std::vector<float> brain = safetensors_to_float32(*file.find("brain"), path);
  ASSERT_EQ(brain.size(), kBf16Patterns.size());
  for (size_t i = 0; i < brain.size(); ++i) {
    expect_same_bits(brain[i], kBf16Patterns[i].expected, kBf16Patterns[i].bits);
  }
}

// A backend converting a mapped tensor through a bounded staging buffer asks for ranges: any
// split of the tensor into ranges must give the whole conversion, for each float dtype.
TEST_F(SafetensorsFileTest, RangesConvertAsTheWholeTensorDoes) {
  std::vector<uint16_t> halves(37);
  for (size_t i = 0; i < halves.size(); ++i)
    halves[i] = static_cast<uint16_t>(0x3C00 + 97 * i);  // varied exponents and mantissas
  const auto path = write(safetensors_bytes(std::vector<RawTensor>{
      {"flag", "BOOL", {1}, std::string(1, '\1')},  // leaves the others misaligned
      {"f16", "F16", {37}, raw_bytes(halves)},
      {"bf16", "BF16", {37}, raw_bytes(halves)},
      f32_tensor("f32", {37}, -3.0f),
  }));
  const SafetensorsFile file(path);
  for (const char* name : {"f16", "bf16", "f32"}) {
    SCOPED_TRACE(name);
    const SafetensorsTensor& t = *file.find(name);
    const std::vector<float> whole = safetensors_to_float32(t, path);
    for (size_t chunk : {1, 5, 16, 37}) {
      std::vector<float> pieces(whole.size(), -1.0f);
      for (size_t first = 0; first < pieces.size(); first += chunk) {
        const size_t count = std::min(chunk, pieces.size() - first);
        safetensors_to_float32(t, path, first, std::span<float>(pieces.data() + first, count));
      }
      EXPECT_EQ(pieces, whole) << "chunks of " << chunk;
    }
    std::vector<float> out(2);
    EXPECT_THROW(safetensors_to_float32(t, path, 36, out), std::out_of_range) << "one past the end";
    EXPECT_THROW(safetensors_to_float32(t, path, 38, std::span<float>()), std::out_of_range);
    EXPECT_NO_THROW(safetensors_to_float32(t, path, 37, std::span<float>())) << "an empty range at the end";
  }
}

// OCP FP8 E4M3 ("e4m3fn"): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, NaN only at
// S.1111.111. Values written down from the format's definition.
TEST(F8E4M3, BitPatternsFromTheFormatDefinition) {
  const std::vector<std::pair<uint8_t, float>> patterns = {
      {0x38, 1.0f},
      {0x40, 2.0f},
      {0x3C, 1.5f},
      {0xC4, -3.0f},
      {0x7E, 448.0f},
      {0xFE, -448.0f},
      {0x77, 240.0f},
      {0x08, 0x1p-6f},    // smallest normal
      {0x01, 0x1p-9f},    // smallest subnormal
      {0x07, 0x1.cp-7f},  // largest: 7 * 2^-9
      {0x81, -0x1p-9f},
      {0x00, 0.0f},
      {0x80, -0.0f},
      {0x7F, std::numeric_limits<float>::quiet_NaN()},
      {0xFF, -std::numeric_limits<float>::quiet_NaN()},
  };
  for (const auto& [bits, expected] : patterns) {
    const float got = f8e4m3_bits_to_float(bits);
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(got)) << "0x" << std::hex << int{bits};
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(expected))
          << "0x" << std::hex << int{bits} << ": got " << got << ", expected " << expected;
    }
  }
  // Every other pattern: the positive ones strictly increase (0x00 .. 0x7E, then 0x7F is NaN), each
  // step from 0x08 up being 1/8 of its binade, and a set sign bit negates.
  for (int b = 1; b <= 0x7E; ++b) {
    const float below = f8e4m3_bits_to_float(static_cast<uint8_t>(b - 1));
    const float at = f8e4m3_bits_to_float(static_cast<uint8_t>(b));
    EXPECT_GT(at, below) << b;
    EXPECT_EQ(f8e4m3_bits_to_float(static_cast<uint8_t>(b | 0x80)), -at) << b;
  }
}

TEST_F(SafetensorsFileTest, F8E4M3TensorsConvertToTheirStoredValues) {
  const auto path = write(safetensors_bytes(std::vector<RawTensor>{
      {"flag", "BOOL", {1}, std::string(1, '\1')},
      {"q", "F8_E4M3", {2, 3}, std::string("\x38\xC4\x7E\x01\x00\x40", 6)},
  }));
  const SafetensorsFile file(path);
  EXPECT_EQ(safetensors_to_float32(*file.find("q"), path),
            (std::vector<float>{1.0f, -3.0f, 448.0f, 0x1p-9f, 0.0f, 2.0f}));
  std::vector<float> middle(3);
  safetensors_to_float32(*file.find("q"), path, 2, middle);
  EXPECT_EQ(middle, (std::vector<float>{448.0f, 0x1p-9f, 0.0f}));
}

TEST_F(SafetensorsFileTest, OddDataOffsetsStillConvert) {
  // A 1-byte tensor first leaves the F16 data misaligned; the reader must not assume alignment.
  const auto path = write(safetensors_bytes(std::vector<RawTensor>{
      {"flag", "BOOL", {1}, std::string(1, '\1')},
      {"half", "F16", {2}, raw_bytes(std::vector<uint16_t>{0x3C00, 0xC000})},
  }));
  const SafetensorsFile file(path);
  EXPECT_EQ(safetensors_to_float32(*file.find("half"), path), (std::vector<float>{1.0f, -2.0f}));
}

TEST_F(SafetensorsFileTest, MovedFileKeepsItsData) {
  const auto path = write(safetensors_bytes(std::vector<RawTensor>{f32_tensor("w", {4}, 1.0f)}));
  SafetensorsFile original(path);
  const SafetensorsFile moved(std::move(original));
  EXPECT_EQ(safetensors_to_float32(*moved.find("w"), path), (std::vector<float>{1.0f, 1.25f, 1.5f, 1.75f}));
}

TEST_F(SafetensorsFileTest, NonFloatTensorCannotConvert) {
  const auto path = write(
      safetensors_bytes(std::vector<RawTensor>{{"step", "I64", {1}, raw_bytes(std::vector<int64_t>{3})}}));
  const SafetensorsFile file(path);
  const std::string message = model_load_error([&] { safetensors_to_float32(*file.find("step"), path); });
  EXPECT_TRUE(contains_all(message, {path.string(), "'step'", "dtype I64", "F32, F16 or BF16, or F8_E4M3"}));
}

TEST_F(SafetensorsFileTest, MissingFile) {
  const std::filesystem::path path = dir_ / "absent.safetensors";
  const std::string message = model_load_error([&] { SafetensorsFile file(path); });
  EXPECT_TRUE(contains_all(message, {path.string(), "cannot open", "No such file"}));
}

TEST_F(SafetensorsFileTest, FileShorterThanTheLengthPrefix) {
  EXPECT_TRUE(contains_all(open_error("abc"), {"3 bytes", "8-byte header length", "truncated"}));
}

TEST_F(SafetensorsFileTest, HeaderLengthBeyondTheFile) {
  const std::string message = open_error(model_test::u64_le(1000) + "{}");
  EXPECT_TRUE(contains_all(message, {"header length", "1000", "only 2 bytes follow", "truncated"}));
}

TEST_F(SafetensorsFileTest, HeaderNotJson) {
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes("{\"w\": {\"dtype\": ", "")), {"not valid JSON"}));
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes("PK\x03\x04 zip", "")), {"not valid JSON"}));
}

TEST_F(SafetensorsFileTest, HeaderNotAnObject) {
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes("[1, 2]", "")), {"must be a JSON object"}));
}

TEST_F(SafetensorsFileTest, TensorNamedTwiceInOneHeader) {
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes(header, std::string(8, '\0'))), {"'w' twice"}));
}

TEST_F(SafetensorsFileTest, UnknownDtype) {
  const std::string header = R"({"w":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,1]}})";
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes(header, std::string(1, '\0'))),
                           {"tensor 'w'", "unknown dtype 'Q4_K'", "BF16"}));
}

TEST_F(SafetensorsFileTest, MissingOrMalformedFields) {
  EXPECT_TRUE(
      contains_all(open_error(safetensors_bytes(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "xxxx")),
                   {"'w'", "\"dtype\""}));
  EXPECT_TRUE(
      contains_all(open_error(safetensors_bytes(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "xxxx")),
                   {"'w'", "\"shape\""}));
  EXPECT_TRUE(contains_all(
      open_error(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "xxxx")),
      {"'w'", "shape [-1]", "non-negative"}));
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[1]}})", "xxxx")),
                           {"'w'", "data_offsets"}));
  EXPECT_TRUE(contains_all(
      open_error(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", "xxxx")),
      {"'w'", "data_offsets"}));
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes(R"({"w":[1,2]})", "")), {"'w'", "JSON object"}));
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes(R"({"__metadata__":"pt"})", "")), {"__metadata__"}));
}

TEST_F(SafetensorsFileTest, DataOffsetsOutOfRange) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes(header, std::string(8, '\0'))),
                           {"'w'", "data_offsets [0, 16]", "outside the data region of 8 bytes"}));
  const std::string reversed = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})";
  EXPECT_TRUE(
      contains_all(open_error(safetensors_bytes(reversed, std::string(8, '\0'))), {"data_offsets [4, 0]"}));
}

TEST_F(SafetensorsFileTest, DataOffsetsInconsistentWithShape) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})";
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes(header, std::string(16, '\0'))),
                           {"'w'", "spans 12 bytes", "shape [2, 2] of F32 needs 16"}));
  const std::string huge =
      R"({"w":{"dtype":"F64","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,8]}})";
  EXPECT_TRUE(contains_all(open_error(safetensors_bytes(huge, std::string(8, '\0'))),
                           {"'w'", "needs more than 2^64"}));
}

TEST_F(SafetensorsFileTest, OverlappingTensors) {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_TRUE(
      contains_all(open_error(safetensors_bytes(header, std::string(12, '\0'))), {"'a' and 'b' overlap"}));
}

TEST_F(SafetensorsFileTest, TruncatedData) {
  std::string bytes = safetensors_bytes(std::vector<RawTensor>{f32_tensor("a", {4}), f32_tensor("b", {8})});
  bytes.resize(bytes.size() - 5);
  EXPECT_TRUE(contains_all(open_error(bytes), {"'b'", "outside the data region", "truncated"}));
}

}  // namespace
}  // namespace kvserve
