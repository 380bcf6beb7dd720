// The LoRA kernels (kernels/lora.h) against a CPU reference in double, on seeded random inputs:
// tokens of several adapters and of the base model (adapter 0) in one launch, stacked adapters of
// the largest rank, an output that is a column range of a wider row (as q, k and v of the fused QKV
// output are).
//
// Tolerance: y is read, the update added in fp32 and the sum rounded to bf16 once: half a bf16 ulp,
// 2^-8 of |want|. Before that, the shrink sums `in` products in fp32 (in / 32 per lane, then 5
// shuffle levels) and the expand `rank` more, each sum within (n * 2^-24) of the sum of the terms'
// magnitudes: at most (14336 / 32 + 5 + 64) * 6e-8 ~ 3e-5 of that absolute bound here; 1e-4 of it
// leaves a 3x margin. A token given another adapter's weights, a wrong scaling, or a column shifted
// by one is off by the update's whole size. Tokens of the base model and the columns outside the
// range must come back bit for bit.
#include "kernels/lora.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/kernels/gpu_test_util.h"

namespace kvserve::cuda {
namespace {

using testing::download;
using testing::expect_invalid;
using testing::fake_pointer;
using testing::poisoned;
using testing::random_bf16_values;
using testing::to_bf16;
using testing::to_float;
using testing::upload;

struct Shape {
  int in, out, rank, tokens, adapters;
};

TEST(LoraKernels, ShrinkAndExpandMatchTheDoubleReferencePerTokenAdapter) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (const Shape& s : {Shape{64, 128, 4, 9, 2}, Shape{4096, 1024, 16, 33, 3}, Shape{14336, 4096, 64, 5, 1},
                         Shape{96, 8, 1, 70, 4}, Shape{128, 200, 8, 6, 2}}) {
    const uint64_t seed = 9000 + s.in + s.out + s.rank;
    SCOPED_TRACE("in " + std::to_string(s.in) + " out " + std::to_string(s.out) + " rank " +
                 std::to_string(s.rank) + " tokens " + std::to_string(s.tokens) + " seed " +
                 std::to_string(seed));
    const int x_stride = s.in + 8, y_stride = s.out + 24, y_offset = 16;
    const std::vector<float> x = random_bf16_values(static_cast<size_t>(s.tokens) * x_stride, seed, 1.0f);
    const std::vector<float> a =
        random_bf16_values(static_cast<size_t>(s.adapters) * s.rank * s.in, seed + 1, 1.0f / std::sqrt(s.in));
    const std::vector<float> b =
        random_bf16_values(static_cast<size_t>(s.adapters) * s.out * s.rank, seed + 2, 0.3f);
    const std::vector<float> y0 =
        random_bf16_values(static_cast<size_t>(s.tokens) * y_stride, seed + 3, 1.0f);
    std::vector<float> scaling(static_cast<size_t>(s.adapters));
    for (int i = 0; i < s.adapters; ++i)
      scaling[static_cast<size_t>(i)] = 0.5f + 0.75f * static_cast<float>(i);
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::vector<int32_t> index(static_cast<size_t>(s.tokens));
    for (int32_t& i : index)
      i = static_cast<int32_t>(rng() % static_cast<uint32_t>(s.adapters + 1));
    index[0] = 0;  // at least one base-model token
    index[static_cast<size_t>(s.tokens) - 1] = s.adapters;
    constexpr float kMultiplier = 0.7f;

    auto d_x = upload(to_bf16(x));
    auto d_a = upload(to_bf16(a));
    auto d_b = upload(to_bf16(b));
    auto d_y = upload(to_bf16(y0));
    auto d_index = upload(index);
    auto d_scaling = upload(scaling);
    auto d_tmp = poisoned<float>(static_cast<size_t>(s.tokens) * s.rank);
    lora_shrink(d_x.get(), x_stride, s.in, s.tokens, d_index.get(), d_a.get(), s.rank, d_tmp.get(), nullptr);
    lora_expand(d_tmp.get(), s.rank, s.tokens, d_index.get(), d_b.get(), s.out, d_scaling.get(), kMultiplier,
                d_y.get() + y_offset, y_stride, nullptr);
    const std::vector<float> got = to_float(download(d_y));

    size_t bad = 0;
    for (int t = 0; t < s.tokens; ++t) {
      const int adapter = index[static_cast<size_t>(t)];
      std::vector<double> tmp(static_cast<size_t>(s.rank)), tmp_abs(static_cast<size_t>(s.rank));
      if (adapter > 0)
        for (int r = 0; r < s.rank; ++r)
          for (int i = 0; i < s.in; ++i) {
            const double p = static_cast<double>(x[static_cast<size_t>(t) * x_stride + i]) *
                             a[(static_cast<size_t>(adapter - 1) * s.rank + r) * s.in + i];
            tmp[static_cast<size_t>(r)] += p;
            tmp_abs[static_cast<size_t>(r)] += std::abs(p);
          }
      for (int col = 0; col < y_stride; ++col) {
        const size_t at = static_cast<size_t>(t) * y_stride + col;
        const int o = col - y_offset;
        if (adapter == 0 || o < 0 || o >= s.out) {  // untouched, bit for bit
          if (!(got[at] == y0[at]) && bad++ < 5)
            ADD_FAILURE() << "token " << t << " column " << col << " changed: " << got[at] << " vs "
                          << y0[at];
          continue;
        }
        double delta = 0.0, bound = std::abs(y0[at]);
        const double factor = static_cast<double>(kMultiplier) * scaling[static_cast<size_t>(adapter - 1)];
        for (int r = 0; r < s.rank; ++r) {
          const double w = b[(static_cast<size_t>(adapter - 1) * s.out + o) * s.rank + r];
          delta += factor * w * tmp[static_cast<size_t>(r)];
          bound += std::abs(factor * w) * tmp_abs[static_cast<size_t>(r)];
        }
        const double want = y0[at] + delta;
        const double tolerance = std::abs(want) / 256 + 1e-4 * bound;
        if (!(std::abs(got[at] - want) <= tolerance) && bad++ < 5)
          ADD_FAILURE() << "token " << t << " (adapter " << adapter << ") output " << o << ": got " << got[at]
                        << ", want " << want << " within " << tolerance;
      }
    }
    EXPECT_EQ(bad, 0u);
  }
}

// Host-side checks: run without a GPU.
TEST(LoraKernelValidation, RejectsBadShapesBeforeAnyCudaCall) {
  const auto* x = fake_pointer<const __nv_bfloat16>(0x1000);
  const auto* index = fake_pointer<const int32_t>(0x2000);
  auto* tmp = fake_pointer<float>(0x3000);
  auto* y = fake_pointer<__nv_bfloat16>(0x4000);
  expect_invalid([&] { lora_shrink(x, 64, 64, -1, index, x, 8, tmp, nullptr); }, "num_tokens");
  expect_invalid([&] { lora_shrink(x, 32, 64, 4, index, x, 8, tmp, nullptr); }, "x_row_stride");
  expect_invalid([&] { lora_shrink(x, 64, 64, 4, index, x, 0, tmp, nullptr); }, "rank 0");
  expect_invalid([&] { lora_shrink(x, 64, 64, 4, index, x, 2048, tmp, nullptr); }, "rank 2048");
  expect_invalid([&] { lora_shrink(x, 64, 64, 4, nullptr, x, 8, tmp, nullptr); }, "null");
  expect_invalid([&] { lora_expand(tmp, 8, 4, index, x, 0, tmp, 1.0f, y, 64, nullptr); }, "out must");
  expect_invalid([&] { lora_expand(tmp, 8, 4, index, x, 128, tmp, 1.0f, y, 64, nullptr); }, "y_row_stride");
  expect_invalid([&] { lora_expand(tmp, 8, 4, index, x, 64, nullptr, 1.0f, y, 64, nullptr); }, "null");
  // No tokens: nothing is launched, null pointers and all.
  EXPECT_NO_THROW(lora_shrink(nullptr, 64, 64, 0, nullptr, nullptr, 8, nullptr, nullptr));
  EXPECT_NO_THROW(lora_expand(nullptr, 8, 0, nullptr, nullptr, 64, nullptr, 1.0f, nullptr, 64, nullptr));
}

}  // namespace
}  // namespace kvserve::cuda
