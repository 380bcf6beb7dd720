// The mixture-of-experts kernels (kernels/moe.h) against a CPU reference in double, on seeded random
// rows routed by route_tokens (engine/moe_routing.h) from random router logits.
//
// Tolerance: the gather copies bits (compared exactly). The combine sums k weighted rows (and the
// gated shared row) in fp32 and rounds once to bf16: half a bf16 ulp (2^-9 relative) plus fp32
// rounding of at most k + 1 terms (~1e-6 of their magnitudes); 2^-8 of max(|want|, 1) leaves a 2x
// margin. A row of the wrong expert, a missed weight or an ungated shared expert is off by a whole
// term (~1 here). Rows the kernels must not write stay poisoned.
#include "kernels/moe.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/moe_routing.h"
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

TEST(MoeKernels, GatherAndCombineMatchTheDoubleReference) {
  KVSERVE_SKIP_WITHOUT_GPU();
  struct Shape {
    int tokens, experts, k, width;
    bool shared;
  };
  for (const Shape& s : {Shape{1, 8, 2, 64, false}, Shape{37, 16, 4, 136, true},
                         Shape{300, 128, 8, 512, false}, Shape{5, 4, 4, 8, true}}) {
    SCOPED_TRACE(::testing::Message() << s.tokens << " tokens, " << s.experts << " experts, k " << s.k
                                      << ", width " << s.width << (s.shared ? ", shared" : ""));
    MoeConfig moe;
    moe.num_experts = s.experts;
    moe.experts_per_token = s.k;
    std::vector<float> logits = random_bf16_values(static_cast<size_t>(s.tokens) * s.experts, 1);
    MoeRouting routing;
    route_tokens(logits, s.tokens, moe, routing);
    const size_t rows = static_cast<size_t>(s.tokens) * s.k;
    const size_t w = static_cast<size_t>(s.width);

    // Gather: row r is token[r]'s input, bit for bit.
    const std::vector<float> input = random_bf16_values(static_cast<size_t>(s.tokens) * w, 2);
    auto d_input = upload(to_bf16(input));
    auto d_token = upload(routing.token);
    auto d_gathered = poisoned<__nv_bfloat16>(rows * w);
    moe_gather(d_input.get(), d_token.get(), static_cast<int>(rows), s.width, d_gathered.get(), nullptr);
    const std::vector<float> gathered = to_float(download(d_gathered));
    for (size_t r = 0; r < rows; ++r)
      for (size_t i = 0; i < w; ++i)
        ASSERT_EQ(gathered[r * w + i], input[static_cast<size_t>(routing.token[r]) * w + i]) << "row " << r;

    // Combine: per token, the weighted sum of its rows' outputs, plus the gated shared expert.
    const std::vector<float> expert_out = random_bf16_values(rows * w, 3);
    const std::vector<float> shared_out = random_bf16_values(static_cast<size_t>(s.tokens) * w, 4);
    const std::vector<float> gate = random_bf16_values(static_cast<size_t>(s.tokens), 5, 2.0f);
    const float multiplier = 0.75f;
    auto d_expert_out = upload(to_bf16(expert_out));
    auto d_rows = upload(routing.token_rows);
    auto d_weight = upload(routing.weight);
    auto d_shared = upload(to_bf16(shared_out));
    auto d_gate = upload(gate);
    // One token more than the call: its row must stay poisoned.
    auto d_out = poisoned<__nv_bfloat16>((static_cast<size_t>(s.tokens) + 1) * w);
    moe_combine(d_expert_out.get(), d_rows.get(), d_weight.get(), s.tokens, s.k, s.width,
                s.shared ? d_shared.get() : nullptr, s.shared ? d_gate.get() : nullptr, multiplier,
                d_out.get(), nullptr);
    const std::vector<float> out = to_float(download(d_out));
    std::vector<double> want(static_cast<size_t>(s.tokens) * w, 0.0);
    for (int t = 0; t < s.tokens; ++t)
      for (size_t i = 0; i < w; ++i) {
        double sum = 0.0;
        for (int j = 0; j < s.k; ++j) {
          const auto row = static_cast<size_t>(routing.token_rows[static_cast<size_t>(t) * s.k + j]);
          sum += static_cast<double>(routing.weight[row]) * expert_out[row * w + i];
        }
        if (s.shared) sum += shared_out[t * w + i] / (1.0 + std::exp(-static_cast<double>(gate[t])));
        want[t * w + i] = multiplier * sum;
      }
    const std::vector<float> written(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(want.size()));
    EXPECT_LE(max_relative_error(written, want), 1.0 / 256);
    for (size_t i = want.size(); i < out.size(); ++i)
      ASSERT_TRUE(std::isnan(out[i])) << "wrote past the last token";
  }
}

TEST(MoeKernelValidation, RejectsBadShapesBeforeAnyCudaCall) {
  const auto* x = fake_pointer<const __nv_bfloat16>(0x1000);
  const auto* index = fake_pointer<const int32_t>(0x2000);
  const auto* weight = fake_pointer<const float>(0x3000);
  auto* y = fake_pointer<__nv_bfloat16>(0x4000);
  expect_invalid([&] { moe_gather(x, index, -1, 64, y, nullptr); }, "rows");
  expect_invalid([&] { moe_gather(x, index, 4, 60, y, nullptr); }, "width 60");
  expect_invalid([&] { moe_gather(nullptr, index, 4, 64, y, nullptr); }, "null");
  expect_invalid([&] { moe_combine(x, index, weight, -1, 2, 64, nullptr, nullptr, 1.0f, y, nullptr); },
                 "tokens");
  expect_invalid([&] { moe_combine(x, index, weight, 4, 0, 64, nullptr, nullptr, 1.0f, y, nullptr); },
                 "k must");
  expect_invalid([&] { moe_combine(x, index, weight, 4, 2, 12, nullptr, nullptr, 1.0f, y, nullptr); },
                 "width 12");
  expect_invalid([&] { moe_combine(x, index, weight, 4, 2, 64, x, nullptr, 1.0f, y, nullptr); },
                 "go together");
  expect_invalid([&] { moe_combine(x, index, nullptr, 4, 2, 64, nullptr, nullptr, 1.0f, y, nullptr); },
                 "null");
  const auto* odd = fake_pointer<const __nv_bfloat16>(0x1008);
  expect_invalid([&] { moe_gather(odd, index, 4, 64, y, nullptr); }, "in must be 16-byte aligned");
  expect_invalid([&] { moe_combine(x, index, weight, 4, 2, 64, odd, weight, 1.0f, y, nullptr); },
                 "shared_out must be 16-byte aligned");
  // Nothing to do: no launch, no error, whatever the pointers.
  moe_gather(nullptr, nullptr, 0, 64, nullptr, nullptr);
  moe_combine(nullptr, nullptr, nullptr, 0, 2, 64, nullptr, nullptr, 1.0f, nullptr, nullptr);
}

}  // namespace
}  // namespace kvserve::cuda
