// The layer kernels (kernels/layers.h) against plain CPU references computed in double, on seeded
// random inputs. Output buffers start poisoned (NaN / -1 bytes), so an element a kernel forgets to
// write fails the comparison.
//
// Tolerances:
//   - Copies (embedding gather, gather_rows, V without bias, untouched memory) are exact: bf16 -> fp32
//     is exact and nothing else happens to the bits.
//   - The fp32 residual after `residual += delta` is one IEEE fp32 addition on both sides, so the
//     kernel's value equals the host's float addition bit for bit.
//   - A bf16 output is one round-to-nearest of an fp32 value: at most half a bf16 ulp, 2^-8 of its
//     magnitude (8 significant bits). The fp32 arithmetic before the rounding adds ~1e-6 relative
//     (fp32 sums over <= 32768 terms, rsqrtf's 2 ulp, __expf's 2 + 1.2|x| ulp for |x| <= 30), so
//     kBf16Rel = 2^-8 + 1e-5 relative to the double reference.
//   - RoPE outputs a * c - b * s can cancel, so fp32 errors there are relative to |a| + |b|, not to
//     the output: bound 2^-8 |want| + 1e-6 (|a| + |b|) (the fp32 products, the sum and the float
//     cos/sin are each 2^-24 relative; 1e-6 is ~16 of those). The angle itself is computed in double
//     on both sides, so positions up to 100k lose nothing (an fp32 angle would be off by up to
//     2^-7 rad there and fail this bound).
//   - With Qwen3's per-head q/k RMSNorm before RoPE, a and b are the normalized values and the bound
//     is 2^-8 |want| + 4e-6 (|a| + |b|). The norm adds fp32 error relative to each value, with no
//     cancellation: the sum of squares (non-negative terms, at most 8 sequential adds per lane then
//     5 shuffle levels: <= 13 * 2^-24 relative, half of it in the inverse square root), the division
//     and the epsilon (2 * 2^-24), rsqrtf's 2 ulp (4 * 2^-24), the biased x and the two products
//     x * inv_rms * weight (3 * 2^-24): ~16 * 2^-24 ~ 1e-6 on top of RoPE's, so 4e-6 leaves a 2x
//     margin over the ~2e-6 sum. A wrong head's inv_rms (heads are scaled by 2^-10 .. 2^4) or a
//     swapped q/k weight (1 + 0.1 z each) is off by percents or more.
#include "kernels/layers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tests/kernels/gpu_test_util.h"

namespace kvserve::cuda {
namespace {

using testing::download;
using testing::expect_invalid;
using testing::fake_pointer;
using testing::max_relative_error;
using testing::poisoned;
using testing::random_bf16_values;
using testing::to_bf16;
using testing::to_float;
using testing::upload;

constexpr double kBf16Rel = 1.0 / 256 + 1e-5;
constexpr double kTinyFloor = 1e-30;  // relative error floor: only guards a division by zero

std::vector<float> random_floats(size_t n, uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v)
    x = dist(rng);
  return v;
}

uint16_t bits_of(bf16 x) {
  uint16_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

// Exact comparison (NaN never matches), reporting the count and the first mismatch.
void expect_equal_floats(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!(got[i] == want[i]) && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << "first at " << first << ": got " << got[first] << ", want " << want[first];
}

// The error measure every kernel test uses (runs without a GPU): a NaN, which is what a poisoned
// element the kernel never wrote reads as, fails any bound wherever it stands, and a large error
// before a NaN is not lost either.
TEST(GpuTestUtil, ANanFailsTheBoundWhereverItStands) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<double> want = {0.3, 0.0, 1.0};
  for (size_t at = 0; at < want.size(); ++at) {
    std::vector<float> got = {0.3f, 0.0f, 1.0f};
    got[at] = nan;
    EXPECT_TRUE(std::isnan(max_relative_error(got, want))) << "NaN at " << at;
  }
  EXPECT_DOUBLE_EQ(max_relative_error({0.3f, 0.0f, 3.0f}, want), 2.0);
  EXPECT_DOUBLE_EQ(max_relative_error({0.3f, 0.5f, 1.0f}, want, 0.25), 2.0);
  EXPECT_EQ(testing::worse_error(5.0, 1.0), 5.0);
  EXPECT_EQ(testing::worse_error(1.0, 5.0), 5.0);
}

// ---- embedding_gather ----

// Each row is the table's, times the multiplier (Granite's embedding multiplier; 1 elsewhere),
// with the one float rounding of the product, as the CPU backend computes it.
TEST(EmbeddingGather, CopiesTheRowsOfTheIdsTimesTheMultiplierExactly) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (const int hidden : {8, 64, 4096}) {
    for (const int tokens : {1, 37}) {
      const uint64_t seed = 1000 + hidden + tokens;
      const float multiplier = tokens == 1 ? 1.0f : 12.0f;
      SCOPED_TRACE("hidden " + std::to_string(hidden) + " tokens " + std::to_string(tokens) + " seed " +
                   std::to_string(seed) + " multiplier " + std::to_string(multiplier));
      const int vocab = 50;
      const std::vector<float> table = random_bf16_values(static_cast<size_t>(vocab) * hidden, seed);
      std::mt19937_64 rng(seed);
      std::vector<int32_t> ids(tokens);
      for (int32_t& id : ids)
        id = static_cast<int32_t>(rng() % vocab);
      ids.front() = vocab - 1;  // both ends of the table
      ids.back() = 0;

      auto d_table = upload(to_bf16(table));
      auto d_ids = upload(ids);
      auto d_res = poisoned<float>(static_cast<size_t>(tokens) * hidden);
      embedding_gather(d_table.get(), d_ids.get(), tokens, hidden, multiplier, d_res.get(), nullptr);

      std::vector<float> want(static_cast<size_t>(tokens) * hidden);
      for (int t = 0; t < tokens; ++t)
        for (int i = 0; i < hidden; ++i)
          want[static_cast<size_t>(t) * hidden + i] =
              table[static_cast<size_t>(ids[t]) * hidden + i] * multiplier;
      expect_equal_floats(download(d_res), want);
    }
  }
}

// ---- add_rms_norm ----

TEST(AddRmsNorm, MatchesTheDoubleReferenceAtManyWidths) {
  KVSERVE_SKIP_WITHOUT_GPU();
  const float eps = 1e-5f;
  // 8 and 264: partial warps; 4096 / 8192 / 16384: one, two and four vectors per thread; 5120: a
  // partial last pass; 32768: the widest supported.
  for (const int width : {8, 64, 264, 4096, 5120, 8192, 16384, 32768}) {
    // Without and with delta, and (Gemma) with the norm weight's offset of 1 added by the kernel.
    for (const auto& [with_delta, offset] :
         {std::pair{false, 0.0f}, std::pair{true, 0.0f}, std::pair{true, 1.0f}}) {
      const int rows = width <= 264 ? 33 : 5;
      const uint64_t seed = 2000 + width + (with_delta ? 1 : 0) + (offset != 0.0f ? 2 : 0);
      SCOPED_TRACE("width " + std::to_string(width) + (with_delta ? " with" : " without") +
                   " delta, offset " + std::to_string(offset) + ", seed " + std::to_string(seed));
      const size_t n = static_cast<size_t>(rows) * width;
      std::vector<float> residual = random_floats(n, seed, 3.0f);
      const std::vector<float> delta = random_bf16_values(n, seed + 1);
      const std::vector<float> weight = random_bf16_values(width, seed + 2);

      // The residual the kernel must leave: one fp32 addition, as on the host.
      std::vector<float> want_residual = residual;
      if (with_delta)
        for (size_t i = 0; i < n; ++i)
          want_residual[i] = residual[i] + delta[i];
      std::vector<double> want_out(n);
      for (int r = 0; r < rows; ++r) {
        const float* x = &want_residual[static_cast<size_t>(r) * width];
        double sum = 0.0;
        for (int i = 0; i < width; ++i)
          sum += static_cast<double>(x[i]) * x[i];
        const double scale = 1.0 / std::sqrt(sum / width + static_cast<double>(eps));
        for (int i = 0; i < width; ++i)
          want_out[static_cast<size_t>(r) * width + i] =
              x[i] * scale * (weight[i] + static_cast<double>(offset));
      }

      auto d_res = upload(residual);
      auto d_delta = upload(to_bf16(delta));
      auto d_weight = upload(to_bf16(weight));
      auto d_out = poisoned<bf16>(n);
      add_rms_norm(d_res.get(), with_delta ? d_delta.get() : nullptr, d_weight.get(), eps, rows, width,
                   d_out.get(), nullptr, offset);

      expect_equal_floats(download(d_res), want_residual);
      EXPECT_LE(max_relative_error(to_float(download(d_out)), want_out, kTinyFloor), kBf16Rel);
    }
  }
}

// ---- rms_norm (bf16 rows: Gemma's sublayer output norms) ----

TEST(RmsNorm, MatchesTheDoubleReferenceInPlaceAndNot) {
  KVSERVE_SKIP_WITHOUT_GPU();
  const float eps = 1e-6f;
  for (const int width : {8, 264, 2304, 5120, 32768}) {
    for (const bool in_place : {false, true}) {
      for (const float offset : {0.0f, 1.0f}) {
        const int rows = width <= 264 ? 33 : 5;
        const uint64_t seed = 2500 + width + (in_place ? 1 : 0) + (offset != 0.0f ? 2 : 0);
        SCOPED_TRACE("width " + std::to_string(width) + (in_place ? " in place" : "") + " offset " +
                     std::to_string(offset) + ", seed " + std::to_string(seed));
        const size_t n = static_cast<size_t>(rows) * width;
        const std::vector<float> in = random_bf16_values(n, seed, 3.0f);
        const std::vector<float> weight = random_bf16_values(width, seed + 1, 0.5f);
        std::vector<double> want(n);
        for (int r = 0; r < rows; ++r) {
          const float* x = &in[static_cast<size_t>(r) * width];
          double sum = 0.0;
          for (int i = 0; i < width; ++i)
            sum += static_cast<double>(x[i]) * x[i];
          const double scale = 1.0 / std::sqrt(sum / width + static_cast<double>(eps));
          for (int i = 0; i < width; ++i)
            want[static_cast<size_t>(r) * width + i] =
                x[i] * scale * (weight[i] + static_cast<double>(offset));
        }
        auto d_in = upload(to_bf16(in));
        auto d_weight = upload(to_bf16(weight));
        auto d_out = poisoned<bf16>(n);
        bf16* out = in_place ? d_in.get() : d_out.get();
        rms_norm(d_in.get(), d_weight.get(), eps, offset, rows, width, out, nullptr);
        const std::vector<float> got = to_float(download(in_place ? d_in : d_out));
        EXPECT_LE(max_relative_error(got, want, kTinyFloor), kBf16Rel);
      }
    }
  }
}

// ---- rope_and_kv_write ----

struct RopeCase {
  int head_dim, num_heads, num_kv_heads, block_size;
  int stride_pad;  // qkv_row_stride - row width; not a multiple of 8 forces the scalar path
  double theta;
};

// Qwen3's q/k norm for a rope case: off, or on with 16-byte aligned weights or with one of the two
// weights at an odd element offset (which must force the scalar path, not a misaligned 16-byte load).
// kOffsetWeights is Gemma 3's: weights stored around 0 and used as (1 + weight).
enum class QkNorm { kOff, kOn, kQNormMisaligned, kKNormMisaligned, kOffsetWeights };

std::string describe(const RopeCase& c, bool bias, QkNorm norm, uint64_t seed) {
  static const char* const kNormNames[] = {"", ", q/k norm", ", q/k norm (q_norm misaligned)",
                                           ", q/k norm (k_norm misaligned)", ", q/k norm (1 + weight)"};
  return "head_dim " + std::to_string(c.head_dim) + " heads " + std::to_string(c.num_heads) + "/" +
         std::to_string(c.num_kv_heads) + " block " + std::to_string(c.block_size) + " pad " +
         std::to_string(c.stride_pad) + (bias ? " with" : " without") + " bias" +
         kNormNames[static_cast<int>(norm)] + ", seed " + std::to_string(seed);
}

// Collects failures of one comparison kind and reports the count and the first.
struct Failures {
  size_t count = 0;
  std::string first;
  void add(const std::string& what) {
    if (count++ == 0) first = what;
  }
};

void run_rope_case(const RopeCase& c, bool with_bias, uint64_t seed, QkNorm norm = QkNorm::kOff) {
  SCOPED_TRACE(describe(c, with_bias, norm, seed));
  const bool with_norm = norm != QkNorm::kOff;
  const float weight_offset = norm == QkNorm::kOffsetWeights ? 1.0f : 0.0f;
  const float eps = 1e-6f;  // Qwen3's rms_norm_eps
  const int tokens = 45;
  const int hd = c.head_dim, half = hd / 2, nh = c.num_heads, nkv = c.num_kv_heads;
  const int width = (nh + 2 * nkv) * hd;
  const int64_t stride = width + c.stride_pad;
  KvCacheLayout layout;
  layout.block_size = c.block_size;
  layout.num_blocks = (2 * tokens + c.block_size - 1) / c.block_size + 1;
  layout.num_kv_heads = nkv;
  layout.head_dim = hd;
  const int64_t num_slots = static_cast<int64_t>(layout.num_blocks) * layout.block_size;

  std::mt19937_64 rng(seed);
  std::vector<float> qkv = random_bf16_values(static_cast<size_t>(tokens * stride), seed + 1);
  const std::vector<float> bias =
      with_bias ? random_bf16_values(width, seed + 2, 0.5f) : std::vector<float>();
  // The norm's weights, 1 + 0.1 z in bf16 (0.1 z with the offset of 1 added by the kernel); and q/k heads of
  // very different sizes (2^-10 .. 2^4 times N(0, 1): still exact in bf16), so that each head's inverse RMS
  // differs, and for the smallest the epsilon matters (mean(x^2) ~ 1e-6).
  std::vector<float> q_norm, k_norm;
  if (with_norm) {
    q_norm = random_floats(hd, seed + 3, 0.1f);
    k_norm = random_floats(hd, seed + 4, 0.1f);
    for (std::vector<float>* w : {&q_norm, &k_norm})
      for (float& x : *w)
        x = testing::round_to_bf16(1.0f - weight_offset + x);
    for (int t = 0; t < tokens; ++t)
      for (int h = 0; h < nh + nkv; ++h) {
        const int exponent = (5 * t + 3 * h) % 15 - 10;
        for (int d = 0; d < hd; ++d) {
          float& x = qkv[static_cast<size_t>(t) * stride + static_cast<size_t>(h) * hd + d];
          x = std::ldexp(x, exponent);
        }
      }
  }
  std::vector<int32_t> positions(tokens);
  for (int32_t& p : positions)
    p = static_cast<int32_t>(rng() % 100001);
  positions[0] = 0;
  positions[1] = 100000;
  positions[2] = 1;
  // Slots: distinct, shuffled over the whole pool (every block, every offset); some tokens are
  // padding with a negative slot and must not be written anywhere.
  std::vector<int64_t> perm(num_slots);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int64_t> slots(perm.begin(), perm.begin() + tokens);
  for (int t = 3; t < tokens; t += 7)
    slots[t] = -1;
  slots[tokens - 1] = -100;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i)
    inv_freq[i] = static_cast<float>(1.0 / std::pow(c.theta, (2.0 * i) / hd));

  auto d_qkv = upload(to_bf16(qkv));
  auto d_bias = upload(to_bf16(bias));
  auto d_pos = upload(positions);
  auto d_slots = upload(slots);
  auto d_inv = upload(inv_freq);
  auto d_k = poisoned<bf16>(layout.layer_elements());
  auto d_v = poisoned<bf16>(layout.layer_elements());
  // Each weight after one element of padding when it is to be misaligned (cudaMalloc is 256-aligned).
  auto padded = [](const std::vector<float>& w, bool misalign) {
    std::vector<float> out(misalign ? 1 : 0, 0.0f);
    out.insert(out.end(), w.begin(), w.end());
    return out;
  };
  const bool q_misaligned = norm == QkNorm::kQNormMisaligned, k_misaligned = norm == QkNorm::kKNormMisaligned;
  auto d_q_norm = upload(to_bf16(padded(q_norm, q_misaligned)));
  auto d_k_norm = upload(to_bf16(padded(k_norm, k_misaligned)));
  RopeKvWriteArgs args;
  args.qkv = d_qkv.get();
  args.qkv_row_stride = stride;
  args.qkv_bias = with_bias ? d_bias.get() : nullptr;
  args.positions = d_pos.get();
  args.slot_mapping = d_slots.get();
  args.inv_freq = d_inv.get();
  args.k_cache = d_k.get();
  args.v_cache = d_v.get();
  args.layout = layout;
  args.num_tokens = tokens;
  args.num_heads = nh;
  if (with_norm) {
    args.q_norm = d_q_norm.get() + (q_misaligned ? 1 : 0);
    args.k_norm = d_k_norm.get() + (k_misaligned ? 1 : 0);
    args.norm_eps = eps;
    args.norm_weight_offset = weight_offset;
  }
  rope_and_kv_write(args, nullptr);

  const std::vector<bf16> got_qkv = download(d_qkv);
  const std::vector<bf16> got_k = download(d_k);
  const std::vector<bf16> got_v = download(d_v);
  const std::vector<bf16> qkv_bf16 = to_bf16(qkv);
  std::vector<bool> k_written(got_k.size(), false), v_written(got_v.size(), false);
  Failures q_fail, k_fail, v_fail, kept_fail, pool_fail;
  auto b = [&](int i) { return with_bias ? static_cast<double>(bias[i]) : 0.0; };
  auto check = [](Failures& f, float got, double want, double slack, const std::string& where) {
    if (!(std::abs(got - want) <= std::ldexp(std::abs(want), -8) + slack))
      f.add(where + ": got " + std::to_string(got) + ", want " + std::to_string(want));
  };

  const double slack_rel = with_norm ? 4e-6 : 1e-6;
  std::vector<double> xs(hd);  // one head's input to RoPE
  for (int t = 0; t < tokens; ++t) {
    const size_t row = static_cast<size_t>(t) * stride;
    const int64_t slot = slots[t];
    for (int h = 0; h < nh + nkv; ++h) {
      // The head's input to RoPE: biased, then (Qwen3) RMS-normalized with its q or k weight.
      for (int d = 0; d < hd; ++d)
        xs[d] = qkv[row + h * hd + d] + b(h * hd + d);
      if (with_norm) {
        double sumsq = 0.0;
        for (int d = 0; d < hd; ++d)
          sumsq += xs[d] * xs[d];
        const double inv_rms = 1.0 / std::sqrt(sumsq / hd + static_cast<double>(eps));
        const std::vector<float>& w = h < nh ? q_norm : k_norm;
        for (int d = 0; d < hd; ++d)
          xs[d] = xs[d] * inv_rms * (w[d] + static_cast<double>(weight_offset));
      }
      for (int i = 0; i < half; ++i) {
        const int off = h * hd + i;
        const double x1 = xs[i], x2 = xs[i + half];
        const double angle = static_cast<double>(positions[t]) * inv_freq[i];
        const double co = std::cos(angle), si = std::sin(angle);
        const double y1 = x1 * co - x2 * si, y2 = x2 * co + x1 * si;
        const double slack = slack_rel * (std::abs(x1) + std::abs(x2));
        const std::string where =
            "t " + std::to_string(t) + " head " + std::to_string(h) + " i " + std::to_string(i);
        if (h < nh) {
          check(q_fail, __bfloat162float(got_qkv[row + off]), y1, slack, where);
          check(q_fail, __bfloat162float(got_qkv[row + off + half]), y2, slack, where + " + half");
        } else if (slot >= 0) {
          const int64_t k0 = layout.slot_row(slot, h - nh);
          check(k_fail, __bfloat162float(got_k[k0 + i]), y1, slack, where);
          check(k_fail, __bfloat162float(got_k[k0 + i + half]), y2, slack, where + " + half");
          k_written[k0 + i] = k_written[k0 + i + half] = true;
        }
      }
    }
    if (slot >= 0) {
      for (int h = 0; h < nkv; ++h) {
        const int64_t v0 = layout.slot_row(slot, h);
        for (int d = 0; d < hd; ++d) {
          const int off = (nh + nkv + h) * hd + d;
          const std::string where =
              "t " + std::to_string(t) + " v head " + std::to_string(h) + " d " + std::to_string(d);
          if (with_bias) {
            const double x = qkv[row + off], bb = b(off);
            check(v_fail, __bfloat162float(got_v[v0 + d]), x + bb, 1e-6 * (std::abs(x) + std::abs(bb)),
                  where);
          } else if (bits_of(got_v[v0 + d]) != bits_of(qkv_bf16[row + off])) {
            v_fail.add(where + ": not a copy");
          }
          v_written[v0 + d] = true;
        }
      }
    }
    // k, v and the padding of the qkv row stay as they were.
    for (int64_t e = static_cast<int64_t>(nh) * hd; e < stride; ++e)
      if (bits_of(got_qkv[row + e]) != bits_of(qkv_bf16[row + e]))
        kept_fail.add("qkv t " + std::to_string(t) + " element " + std::to_string(e) + " changed");
  }
  // Pool rows no valid slot maps to keep their poison: negative slots wrote nothing.
  for (size_t e = 0; e < got_k.size(); ++e) {
    if (!k_written[e] && bits_of(got_k[e]) != 0xFFFF) pool_fail.add("k_cache element " + std::to_string(e));
    if (!v_written[e] && bits_of(got_v[e]) != 0xFFFF) pool_fail.add("v_cache element " + std::to_string(e));
  }
  EXPECT_EQ(q_fail.count, 0u) << "q: " << q_fail.first;
  EXPECT_EQ(k_fail.count, 0u) << "k: " << k_fail.first;
  EXPECT_EQ(v_fail.count, 0u) << "v: " << v_fail.first;
  EXPECT_EQ(kept_fail.count, 0u) << kept_fail.first;
  EXPECT_EQ(pool_fail.count, 0u) << "written though no slot maps there: " << pool_fail.first;
}

TEST(RopeAndKvWrite, MatchesTheDoubleReferenceAndWritesOnlyValidSlots) {
  KVSERVE_SKIP_WITHOUT_GPU();
  const RopeCase cases[] = {
      {16, 4, 4, 8, 0, 10000.0},      // small model, MHA
      {64, 8, 2, 16, 8, 10000.0},     // GQA 4:1, padded row stride
      {128, 32, 8, 32, 0, 500000.0},  // Llama 3 8B
      {128, 8, 2, 16, 2, 500000.0},   // row stride not a multiple of 8: scalar path
      {24, 4, 2, 8, 0, 10000.0},      // head_dim / 2 not a multiple of 8: scalar path
      {256, 4, 1, 16, 0, 1000000.0},  // widest head
  };
  uint64_t seed = 3000;
  for (const RopeCase& c : cases)
    for (const bool bias : {false, true})
      run_rope_case(c, bias, seed++);
}

// Qwen3: each q and k head RMS-normalized (biased values, fp32) with its weight, then rotated.
TEST(RopeAndKvWrite, NormalizesEachQAndKHeadBeforeRope) {
  KVSERVE_SKIP_WITHOUT_GPU();
  const RopeCase cases[] = {
      {64, 8, 8, 16, 0, 1000000.0},     // MHA, head_dim 64
      {64, 8, 2, 16, 8, 1000000.0},     // GQA 4:1, padded row stride
      {128, 16, 16, 16, 0, 1000000.0},  // MHA, head_dim 128
      {128, 32, 8, 16, 0, 1000000.0},   // Qwen3-8B: GQA 4:1, more heads than warps
      {128, 64, 8, 32, 0, 1000000.0},   // Qwen3-32B: 72 heads, 9 per warp
      {128, 8, 2, 16, 2, 1000000.0},    // row stride not a multiple of 8: scalar path
      {16, 4, 4, 8, 0, 10000.0},        // head_dim 16: two lanes of a warp sum a head
      {24, 4, 2, 8, 0, 10000.0},        // head_dim / 2 not a multiple of 8: scalar path
      {256, 4, 1, 16, 0, 1000000.0},    // widest head: every lane of the warp sums
  };
  uint64_t seed = 3500;
  for (const RopeCase& c : cases)
    for (const bool bias : {false, true})
      run_rope_case(c, bias, seed++, QkNorm::kOn);
  // An unaligned norm weight must take the scalar path (a 16-byte load there would fault).
  run_rope_case(cases[1], true, seed++, QkNorm::kQNormMisaligned);
  run_rope_case(cases[3], false, seed++, QkNorm::kKNormMisaligned);
  // Gemma 3: the same with (1 + weight).
  for (const RopeCase& c : {cases[1], cases[8]})
    run_rope_case(c, false, seed++, QkNorm::kOffsetWeights);
}

// ---- silu_and_mul ----

TEST(SiluAndMul, MatchesTheDoubleReference) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (const int inter : {8, 64, 11008, 14336}) {
    for (const int rows : {1, 7, 64}) {
      const uint64_t seed = 4000 + inter + rows;
      SCOPED_TRACE("intermediate " + std::to_string(inter) + " rows " + std::to_string(rows) + " seed " +
                   std::to_string(seed));
      const size_t n = static_cast<size_t>(rows) * inter;
      std::vector<float> gate_up = random_bf16_values(2 * n, seed, 2.0f);
      // Saturation: silu(-100) underflows (exp overflows to inf), silu(100) = 100; and silu(0) = 0.
      const float extremes[] = {-100.0f, -30.0f, -5.0f, 0.0f, 5.0f, 30.0f, 100.0f, -0.0f};
      std::copy(std::begin(extremes), std::end(extremes), gate_up.begin());
      std::vector<double> want(n);
      for (int r = 0; r < rows; ++r)
        for (int i = 0; i < inter; ++i) {
          const double g = gate_up[static_cast<size_t>(r) * 2 * inter + i];
          const double u = gate_up[static_cast<size_t>(r) * 2 * inter + inter + i];
          want[static_cast<size_t>(r) * inter + i] = g / (1.0 + std::exp(-g)) * u;
        }
      auto d_in = upload(to_bf16(gate_up));
      auto d_out = poisoned<bf16>(n);
      silu_and_mul(d_in.get(), rows, inter, d_out.get(), nullptr);
      EXPECT_LE(max_relative_error(to_float(download(d_out)), want, kTinyFloor), kBf16Rel);
    }
  }
}

// ---- gelu_tanh_and_mul (Gemma's GeGLU) ----

TEST(GeluTanhAndMul, MatchesTheDoubleReference) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (const int inter : {8, 64, 9216, 14336}) {
    for (const int rows : {1, 7, 64}) {
      const uint64_t seed = 4500 + inter + rows;
      SCOPED_TRACE("intermediate " + std::to_string(inter) + " rows " + std::to_string(rows) + " seed " +
                   std::to_string(seed));
      const size_t n = static_cast<size_t>(rows) * inter;
      std::vector<float> gate_up = random_bf16_values(2 * n, seed, 2.0f);
      // Saturation both ways (gelu(-100) = -0, gelu(100) = 100), the far negative tail where
      // 1 + tanh(z) would cancel, and 0: gate values of row 0.
      const float extremes[] = {-100.0f, -30.0f, -8.0f, -5.0f, 0.0f, 5.0f, 30.0f, -0.0f};
      std::copy_n(std::begin(extremes), std::min<size_t>(std::size(extremes), inter), gate_up.begin());
      std::vector<double> want(n);
      for (int r = 0; r < rows; ++r)
        for (int i = 0; i < inter; ++i) {
          const double g = gate_up[static_cast<size_t>(r) * 2 * inter + i];
          const double u = gate_up[static_cast<size_t>(r) * 2 * inter + inter + i];
          // 0.5 g (1 + tanh z) = g sigmoid(2 z), in the form that keeps its precision where
          // tanh(z) rounds to -1 (the kernel's form too; z ~ -25 at g = -8).
          const double z = std::sqrt(2.0 / M_PI) * (g + 0.044715 * g * g * g);
          want[static_cast<size_t>(r) * inter + i] = g / (1.0 + std::exp(-2.0 * z)) * u;
        }
      auto d_in = upload(to_bf16(gate_up));
      auto d_out = poisoned<bf16>(n);
      gelu_tanh_and_mul(d_in.get(), rows, inter, d_out.get(), nullptr);
      EXPECT_LE(max_relative_error(to_float(download(d_out)), want, kTinyFloor), kBf16Rel);
    }
  }
}

// ---- soft_cap (Gemma 2's logits) ----

TEST(SoftCap, MatchesTheDoubleReference) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (const int64_t count : {int64_t{1}, int64_t{1000}, int64_t{256000 * 3 + 5}}) {
    const uint64_t seed = 4700 + static_cast<uint64_t>(count);
    SCOPED_TRACE("count " + std::to_string(count));
    std::vector<float> values = random_floats(static_cast<size_t>(count), seed, 40.0f);
    const float cap = 30.0f;
    std::vector<double> want(values.size());
    for (size_t i = 0; i < values.size(); ++i)
      want[i] = cap * std::tanh(static_cast<double>(values[i]) / cap);
    auto d = upload(values);
    soft_cap(d.get(), count, cap, nullptr);
    // fp32 throughout: tanhf's couple of ulp and two roundings, far below 1e-5.
    EXPECT_LE(max_relative_error(download(d), want, 1e-6), 1e-5);
  }
}

// ---- gather_rows ----

TEST(GatherRows, CopiesTheIndexedRowsExactly) {
  KVSERVE_SKIP_WITHOUT_GPU();
  const int in_rows = 20;
  for (const int width : {8, 64, 4096}) {
    for (const int rows : {1, 5, 20}) {
      const uint64_t seed = 5000 + width + rows;
      SCOPED_TRACE("width " + std::to_string(width) + " rows " + std::to_string(rows) + " seed " +
                   std::to_string(seed));
      const std::vector<float> in = random_floats(static_cast<size_t>(in_rows) * width, seed, 1.0f);
      std::mt19937_64 rng(seed);
      std::vector<int32_t> index(rows);
      for (int32_t& i : index)
        i = static_cast<int32_t>(rng() % in_rows);  // repeats allowed
      index.back() = in_rows - 1;
      auto d_in = upload(in);
      auto d_index = upload(index);
      auto d_out = poisoned<float>(static_cast<size_t>(rows) * width);
      gather_rows(d_in.get(), d_index.get(), rows, width, d_out.get(), nullptr);
      std::vector<float> want(static_cast<size_t>(rows) * width);
      for (int r = 0; r < rows; ++r)
        std::copy_n(&in[static_cast<size_t>(index[r]) * width], width, &want[static_cast<size_t>(r) * width]);
      expect_equal_floats(download(d_out), want);
    }
  }
}

// ---- Argument validation: happens before any CUDA call, so these run without a GPU. ----

TEST(LayerKernelValidation, RejectsUnsupportedWidthsAndAlignments) {
  float* res = fake_pointer<float>(0x1000);
  bf16* bf = fake_pointer<bf16>(0x2000);
  const int32_t* ids = fake_pointer<const int32_t>(0x3000);

  expect_invalid([&] { embedding_gather(bf, ids, 4, 12, 1.0f, res, nullptr); }, "hidden");
  expect_invalid([&] { embedding_gather(bf, ids, -1, 64, 1.0f, res, nullptr); }, "num_tokens");
  expect_invalid([&] { embedding_gather(fake_pointer<bf16>(0x2002), ids, 4, 64, 1.0f, res, nullptr); },
                 "table must");

  expect_invalid([&] { add_rms_norm(res, bf, bf, 1e-5f, 4, 100, bf, nullptr); }, "width");
  expect_invalid([&] { add_rms_norm(res, bf, bf, 1e-5f, 4, 0, bf, nullptr); }, "width");
  expect_invalid([&] { add_rms_norm(res, bf, bf, 1e-5f, 4, 32768 + 8, bf, nullptr); }, "width");
  expect_invalid([&] { add_rms_norm(res, bf, bf, 1e-5f, -1, 64, bf, nullptr); }, "rows");
  expect_invalid([&] { add_rms_norm(res, bf, fake_pointer<bf16>(0x2008), 1e-5f, 4, 64, bf, nullptr); },
                 "weight must");
  expect_invalid([&] { add_rms_norm(res, bf, bf, 1e-5f, 4, 64, fake_pointer<bf16>(0x1000), nullptr); },
                 "aliases");
  expect_invalid([&] { add_rms_norm(res, bf, bf, 1e-5f, 4, 64, nullptr, nullptr); }, "out is null");

  RopeKvWriteArgs rope;
  rope.qkv = bf;
  rope.qkv_row_stride = (8 + 2 * 2) * 64;
  rope.positions = ids;
  rope.slot_mapping = fake_pointer<const int64_t>(0x4000);
  rope.inv_freq = res;
  rope.k_cache = bf;
  rope.v_cache = bf;
  rope.layout = KvCacheLayout{4, 16, 2, 64};
  rope.num_tokens = 3;
  rope.num_heads = 8;
  auto with = [&](auto change) {
    RopeKvWriteArgs a = rope;
    change(a);
    return [a] { rope_and_kv_write(a, nullptr); };
  };
  expect_invalid(with([](RopeKvWriteArgs& a) { a.layout.head_dim = 7; }), "head_dim");
  expect_invalid(with([](RopeKvWriteArgs& a) { a.layout.head_dim = 258; }), "head_dim");
  expect_invalid(with([](RopeKvWriteArgs& a) { a.layout.head_dim = 0; }), "head_dim");
  expect_invalid(with([](RopeKvWriteArgs& a) { a.qkv_row_stride -= 1; }), "qkv_row_stride");
  expect_invalid(with([](RopeKvWriteArgs& a) { a.num_heads = 0; }), "num_heads");
  expect_invalid(with([](RopeKvWriteArgs& a) { a.layout.num_kv_heads = 0; }), "num_kv_heads");
  expect_invalid(with([](RopeKvWriteArgs& a) { a.layout.block_size = 0; }), "block_size");
  expect_invalid(with([](RopeKvWriteArgs& a) { a.num_tokens = -2; }), "num_tokens");
  expect_invalid(with([](RopeKvWriteArgs& a) { a.slot_mapping = nullptr; }), "slot_mapping");
  // Qwen3's q/k norm: both weights or neither; a bounded number of heads; a sane epsilon.
  const bf16* norm = fake_pointer<const bf16>(0x5000);
  auto with_norm = [&](auto change) {
    return with([&](RopeKvWriteArgs& a) {
      a.q_norm = norm;
      a.k_norm = norm;
      a.norm_eps = 1e-6f;
      change(a);
    });
  };
  expect_invalid(with([&](RopeKvWriteArgs& a) { a.q_norm = norm; }), "k_norm is null");
  expect_invalid(with([&](RopeKvWriteArgs& a) { a.k_norm = norm; }), "q_norm is null");
  expect_invalid(with_norm([](RopeKvWriteArgs& a) { a.k_norm = nullptr; }), "k_norm is null");
  expect_invalid(with_norm([](RopeKvWriteArgs& a) { a.q_norm = nullptr; }), "q_norm is null");
  expect_invalid(with_norm([](RopeKvWriteArgs& a) {
                   a.q_norm = nullptr;
                   a.num_tokens = 0;  // checked before the early return of an empty step
                 }),
                 "q_norm is null");
  expect_invalid(with_norm([](RopeKvWriteArgs& a) {
                   a.num_heads = 1023;
                   a.qkv_row_stride = (1023 + 2 * 2) * 64;
                 }),
                 "num_heads + num_kv_heads");
  expect_invalid(with_norm([](RopeKvWriteArgs& a) { a.norm_eps = -1e-6f; }), "norm_eps");
  expect_invalid(with_norm([](RopeKvWriteArgs& a) { a.norm_eps = std::nanf(""); }), "norm_eps");

  expect_invalid([&] { silu_and_mul(bf, 4, 12, bf, nullptr); }, "intermediate");
  expect_invalid([&] { gelu_tanh_and_mul(bf, 4, 12, bf, nullptr); }, "intermediate");
  expect_invalid([&] { rms_norm(bf, bf, 1e-6f, 1.0f, 4, 100, bf, nullptr); }, "width");
  expect_invalid([&] { rms_norm(bf, bf, 1e-6f, 1.0f, 4, 64, nullptr, nullptr); }, "out is null");
  expect_invalid([&] { soft_cap(nullptr, 4, 0.0f, nullptr); }, "cap");
  expect_invalid([&] { soft_cap(nullptr, -1, 30.0f, nullptr); }, "count");
  expect_invalid([&] { silu_and_mul(bf, 4, 64, fake_pointer<bf16>(0x2004), nullptr); }, "out must");
  expect_invalid([&] { gather_rows(res, ids, 4, 4, res, nullptr); }, "width");
  expect_invalid([&] { gather_rows(fake_pointer<float>(0x1004), ids, 4, 64, res, nullptr); }, "in must");
}

TEST(LayerKernelValidation, ZeroRowsLaunchNothing) {
  // Null pointers everywhere: a launch or any device access would fail (or throw without a GPU).
  EXPECT_NO_THROW(embedding_gather(nullptr, nullptr, 0, 64, 1.0f, nullptr, nullptr));
  EXPECT_NO_THROW(add_rms_norm(nullptr, nullptr, nullptr, 1e-5f, 0, 4096, nullptr, nullptr));
  EXPECT_NO_THROW(silu_and_mul(nullptr, 0, 64, nullptr, nullptr));
  EXPECT_NO_THROW(gelu_tanh_and_mul(nullptr, 0, 64, nullptr, nullptr));
  EXPECT_NO_THROW(rms_norm(nullptr, nullptr, 1e-6f, 1.0f, 0, 64, nullptr, nullptr));
  EXPECT_NO_THROW(soft_cap(nullptr, 0, 30.0f, nullptr));
  EXPECT_NO_THROW(gather_rows(nullptr, nullptr, 0, 64, nullptr, nullptr));
  RopeKvWriteArgs rope;
  rope.qkv_row_stride = (8 + 2 * 2) * 64;
  rope.layout = KvCacheLayout{4, 16, 2, 64};
  rope.num_heads = 8;
  rope.num_tokens = 0;
  EXPECT_NO_THROW(rope_and_kv_write(rope, nullptr));
  rope.q_norm = fake_pointer<const bf16>(0x5000);
  rope.k_norm = fake_pointer<const bf16>(0x5000);
  rope.norm_eps = 1e-6f;
  EXPECT_NO_THROW(rope_and_kv_write(rope, nullptr));
}

}  // namespace
}  // namespace kvserve::cuda
