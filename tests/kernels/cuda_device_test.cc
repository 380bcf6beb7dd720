#include <gtest/gtest.h>

#include "kernels/cuda_device.h"

namespace {

TEST(CudaDevice, DescribesEveryDevice) {
  const int n = kvserve::cuda::device_count();
  if (n == 0) GTEST_SKIP() << "no CUDA device on this machine: GPU tests skipped";
  for (int i = 0; i < n; ++i) {
    const std::string d = kvserve::cuda::device_description(i);
    EXPECT_NE(d.find("sm_"), std::string::npos) << d;
  }
}

}  // namespace
