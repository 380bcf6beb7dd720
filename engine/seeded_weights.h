// The counter-based generator behind random-weight models (engine/random_model.h), as constexpr
// functions of integers only, so that host code and CUDA kernels (built with
// --expt-relaxed-constexpr) compute the same bits without a second copy of the hash.
//
// Element i of a tensor with fill f is float(seeded_centred_sum(f.key, i)) * f.scale, plus f.mean
// when f.mean != 0, each operation rounded once to float. The int -> float conversion is exact
// (|sum| < 2^24); a kernel must use __fmul_rn / __fadd_rn so that the compiler fuses nothing into
// a multiply-add, and then host and device values are bit-identical.
#pragma once

#include <cstdint>

namespace kvserve {

inline constexpr uint64_t kSeededGolden = 0x9E3779B97F4A7C15ull;

// splitmix64's finalizer: a bijection of 64-bit words that mixes every input bit into every output bit.
constexpr uint64_t seeded_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// One key per (seed, tensor id): the hash's second input.
constexpr uint64_t seeded_tensor_key(uint64_t seed, uint64_t tensor_id) {
  return seeded_mix(seed ^ (kSeededGolden * (tensor_id + 1)));
}

// Sum of the four 16-bit fields of element `index`'s hash, centred: an integer in [-131070, 131070],
// mean 0, standard deviation 65536 / sqrt(3) (a sum of four uniforms, near-normal and bounded).
constexpr int32_t seeded_centred_sum(uint64_t key, uint64_t index) {
  const uint64_t h = seeded_mix(key + index * kSeededGolden);
  const auto sum =
      static_cast<uint32_t>((h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48));
  return static_cast<int32_t>(sum) - 131070;
}

// How a tensor's values follow from the generator.
struct SeededFill {
  uint64_t key = 0;    // seeded_tensor_key(seed, tensor id)
  float scale = 0.0f;  // multiplier of the centred sum: std * sqrt(3) / 65536
  float mean = 0.0f;
};

}  // namespace kvserve
