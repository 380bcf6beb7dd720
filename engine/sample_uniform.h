// sample_uniform(seed, index): the uniform number in [0, 1) that draws the token at `index` of a
// request's output with `seed`. A pure function of the two, which is what makes sampling
// reproducible; header-only and callable from host and device code, so that the host Sampler and
// the GPU sampling kernel draw with the very same number. No CUDA include: the engine builds
// without CUDA, and nvcc sees the __host__ __device__ markers through KVSERVE_HOST_DEVICE.
#pragma once

#include <cstdint>

#ifndef KVSERVE_HOST_DEVICE
#ifdef __CUDACC__
#define KVSERVE_HOST_DEVICE __host__ __device__
#else
#define KVSERVE_HOST_DEVICE
#endif
#endif

namespace kvserve {
namespace sample_uniform_detail {

inline constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// splitmix64's output function: a bijection on 64 bits whose every output bit depends on every
// input bit, so nearby (seed, index) pairs give unrelated numbers.
KVSERVE_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace sample_uniform_detail

KVSERVE_HOST_DEVICE inline double sample_uniform(uint64_t seed, uint64_t index) {
  using sample_uniform_detail::kGolden;
  using sample_uniform_detail::mix64;
  // Hashing the seed first keeps seeds that differ by a multiple of the stride from yielding
  // shifted copies of one stream.
  const uint64_t key = mix64(seed + kGolden);
  const uint64_t bits = mix64(key + (index + 1) * kGolden);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;  // 53 random bits: exactly representable
}

}  // namespace kvserve
