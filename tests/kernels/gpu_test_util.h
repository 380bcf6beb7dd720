// Helpers every GPU kernel test uses: skipping where there is no GPU, seeded random inputs,
// bf16 round trips, device upload/download, poisoned output buffers, and error measures.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/cuda_device.h"

namespace kvserve::cuda::testing {

// Put first in every GPU test: CI has nvcc but no GPU, so these tests compile there and skip.
#define KVSERVE_SKIP_WITHOUT_GPU()                                                                \
  do {                                                                                            \
    if (::kvserve::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: GPU test skipped"; \
  } while (0)

inline float round_to_bf16(float x) {
  return __bfloat162float(__float2bfloat16(x));
}

// Seeded N(0, stddev) values already rounded to bf16, so that the host reference sees exactly
// the numbers the kernel reads.
inline std::vector<float> random_bf16_values(size_t n, uint64_t seed, float stddev = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v)
    x = round_to_bf16(dist(rng));
  return v;
}

inline std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](float x) { return __float2bfloat16(x); });
  return out;
}

inline std::vector<float> to_float(const std::vector<__nv_bfloat16>& v) {
  std::vector<float> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](__nv_bfloat16 x) { return __bfloat162float(x); });
  return out;
}

template <typename T>
DeviceBuffer<T> upload(const std::vector<T>& host) {
  DeviceBuffer<T> d(host.size());
  if (!host.empty())
    CUDA_CHECK(cudaMemcpy(d.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<T> download(const DeviceBuffer<T>& d) {
  std::vector<T> host(d.size());
  CUDA_CHECK(cudaDeviceSynchronize());
  if (!host.empty()) CUDA_CHECK(cudaMemcpy(host.data(), d.get(), d.bytes(), cudaMemcpyDeviceToHost));
  return host;
}

// A device buffer filled with NaN-like bytes (0xFF: NaN in bf16 and fp32, -1 in integers), so an
// element the kernel forgot to write shows up as NaN or -1 in the comparison.
template <typename T>
DeviceBuffer<T> poisoned(size_t count) {
  DeviceBuffer<T> d(count);
  if (count > 0) CUDA_CHECK(cudaMemset(d.get(), 0xFF, d.bytes()));
  return d;
}

// The worse of two errors, where NaN (an unwritten, poisoned element, or a poisoned K/V row that
// was read) is worse than any number and stays so: `if (!(err <= worst)) worst = err` would let
// the next finite error replace a NaN, and std::max(worst, NaN) would keep worst.
inline double worse_error(double worst, double err) {
  return std::isnan(worst) || err <= worst ? worst : err;
}

// max |got - want| / max(|want|, floor): a relative error that does not explode near zero.
inline double max_relative_error(const std::vector<float>& got, const std::vector<double>& want,
                                 double floor = 1.0) {
  double worst = 0.0;
  for (size_t i = 0; i < want.size(); ++i)
    worst = worse_error(worst,
                        std::abs(static_cast<double>(got[i]) - want[i]) / std::max(std::abs(want[i]), floor));
  return worst;
}

// Runs f, which must throw std::invalid_argument whose message holds `needle`: a launcher refusing
// its arguments, which it does before any CUDA call (so these checks run without a GPU).
template <typename F>
void expect_invalid(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no std::invalid_argument; expected one naming '" << needle << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// An address to pass a launcher that must refuse its other arguments first.
template <typename T>
T* fake_pointer(uintptr_t address) {
  return reinterpret_cast<T*>(address);  // never dereferenced: the launcher throws first
}

}  // namespace kvserve::cuda::testing
