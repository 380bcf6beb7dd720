// seeded_fill_bf16 (kernels/seeded_fill.h) against the host generator (engine/random_model.h): every
// element must be exactly the bf16 rounding of seeded_value(), the value the CUDA backend would
// upload from a host-generated model. Exact equality is the right bound: both sides do the same
// integer hash and the same two correctly rounded float operations.
#include "kernels/seeded_fill.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "engine/random_model.h"
#include "tests/kernels/gpu_test_util.h"

namespace kvserve::cuda {
namespace {

uint16_t bits(__nv_bfloat16 x) {
  uint16_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

TEST(SeededFill, EveryElementIsTheHostValueRoundedToBf16) {
  KVSERVE_SKIP_WITHOUT_GPU();
  struct Case {
    uint64_t seed, tensor_id;
    double mean, std;
    int64_t count;
  };
  // Linear weights (mean 0, 1/sqrt(fan_in)), norms (mean 1), embeddings (0.02); counts that do
  // not fill a block, odd ones, and one larger than the launch's 4096 x 256 threads (grid stride).
  const std::vector<Case> cases = {
      {0, 16 + 1, 0.0, 1.0 / 64.0, 1},
      {0, 16, 1.0, 0.02, 4096},
      {7, 0, 0.0, 0.02, 1000003},
      {7, 2, 0.0, 1.0 / 119.7, 255},
      {123456789, 16 + 16 * 31 + 8, 0.0, 1.0 / 14336.0, (int64_t{4096} * 256) * 2 + 77},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "seed " << c.seed << " tensor " << c.tensor_id << " count " << c.count);
    const SeededFill fill{seeded_tensor_key(c.seed, c.tensor_id),
                          static_cast<float>(c.std * std::sqrt(3.0) / 65536.0), static_cast<float>(c.mean)};
    // The fill matches random_weight(), the documented per-element definition.
    ASSERT_EQ(seeded_value(fill, 5), random_weight(c.seed, c.tensor_id, 5, c.mean, c.std));
    DeviceBuffer<__nv_bfloat16> out = testing::poisoned<__nv_bfloat16>(static_cast<size_t>(c.count) + 8);
    seeded_fill_bf16(out.get(), c.count, fill, nullptr);
    const std::vector<__nv_bfloat16> got = testing::download(out);
    int64_t mismatches = 0, first_bad = -1;
    for (int64_t i = 0; i < c.count; ++i) {
      if (bits(got[i]) != bits(__float2bfloat16(seeded_value(fill, static_cast<uint64_t>(i))))) {
        if (first_bad < 0) first_bad = i;
        ++mismatches;
      }
    }
    EXPECT_EQ(mismatches, 0) << "first at " << first_bad;
    for (size_t i = static_cast<size_t>(c.count); i < got.size(); ++i)
      EXPECT_EQ(bits(got[i]), 0xFFFF) << "wrote past count at " << i;
  }
}

TEST(SeededFill, RejectsBadArguments) {
  const SeededFill fill{1, 1.0f, 0.0f};
  EXPECT_NO_THROW(seeded_fill_bf16(nullptr, 0, fill, nullptr)) << "nothing to do, nothing launched";
  EXPECT_THROW(seeded_fill_bf16(nullptr, 16, fill, nullptr), std::invalid_argument);
  EXPECT_THROW(seeded_fill_bf16(nullptr, -1, fill, nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace kvserve::cuda
