#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/cuda_device.h"

namespace {

using kvserve::cuda::DeviceBuffer;
using kvserve::cuda::PinnedBuffer;

TEST(CudaDevice, DescribesEveryDevice) {
  const int n = kvserve::cuda::device_count();
  if (n == 0) GTEST_SKIP() << "no CUDA device on this machine: GPU tests skipped";
  for (int i = 0; i < n; ++i) {
    const std::string d = kvserve::cuda::device_description(i);
    EXPECT_NE(d.find("sm_"), std::string::npos) << d;
  }
}

// The staging buffers of CudaBackend: grow-only, at least doubling, and good for async copies both ways.
TEST(PinnedBuffer, GrowsGeometricallyAndRoundTripsThroughTheDevice) {
  if (kvserve::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine: GPU tests skipped";
  PinnedBuffer<int32_t> buf;
  EXPECT_EQ(buf.get(), nullptr);
  buf.reserve(0);
  EXPECT_EQ(buf.size(), 0u);
  buf.reserve(100);
  EXPECT_EQ(buf.size(), 100u);
  buf.reserve(60);  // never shrinks
  EXPECT_EQ(buf.size(), 100u);
  buf.reserve(101);  // a small step still doubles
  EXPECT_EQ(buf.size(), 200u);
  buf.reserve(1000);  // a big one takes what is asked
  EXPECT_EQ(buf.size(), 1000u);

  std::iota(buf.get(), buf.get() + buf.size(), -7);
  DeviceBuffer<int32_t> dev(buf.size());
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_CHECK(
      cudaMemcpyAsync(dev.get(), buf.get(), buf.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  PinnedBuffer<int32_t> back;
  back.reserve(buf.size());
  std::fill(back.get(), back.get() + back.size(), 0x7f7f7f7f);  // poisoned: every element must arrive
  CUDA_CHECK(
      cudaMemcpyAsync(back.get(), dev.get(), buf.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaStreamDestroy(stream));
  for (size_t i = 0; i < buf.size(); ++i)
    ASSERT_EQ(back.get()[i], static_cast<int32_t>(i) - 7) << "element " << i;

  PinnedBuffer<int32_t> moved(std::move(back));
  EXPECT_EQ(back.get(), nullptr);
  EXPECT_EQ(moved.size(), 1000u);
}

}  // namespace
