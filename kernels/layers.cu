// The element-wise and row-wise layer kernels (contract in layers.h).
//
// All of them are memory bound, so the design is about bytes: every global access is 16 bytes
// (8 bf16, or 4 fp32 twice for the fp32 residual), arithmetic is fp32, and nothing is read twice
// that can stay in registers. Launchers validate every argument before touching CUDA, so bad
// arguments are reported (std::invalid_argument) the same way with or without a GPU.
#include "kernels/layers.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda_check.h"

namespace kvserve::cuda {
namespace {

constexpr int kVec = 8;  // bf16 elements per 16-byte access
constexpr int kElementwiseThreads = 256;
constexpr int kMaxElementwiseBlocks = 4096;  // grid-stride loops cover the rest
constexpr int kNormMaxThreads = 512;
constexpr int kNormMaxVecsPerThread = 8;  // => widths up to 512 * 8 * 8 = 32768
constexpr int kRopeMaxThreads = 256;
constexpr int kMaxHeadDim = 256;
constexpr int kRopeMaxNormHeads = 1024;  // q + k heads with q_norm / k_norm: 4 KiB of shared memory

// ---- Host-side validation (no CUDA call before these pass). ----

[[noreturn]] void fail(const char* fn, const std::string& what) {
  throw std::invalid_argument(std::string(fn) + ": " + what);
}

void require_width(const char* fn, const char* name, int value) {
  if (value <= 0 || value % kVec != 0)
    fail(fn, std::string(name) + " " + std::to_string(value) + " must be a positive multiple of 8");
}

void require_rows(const char* fn, const char* name, int value) {
  if (value < 0) fail(fn, std::string(name) + " " + std::to_string(value) + " is negative");
}

// Null passes here (rows == 0 may pass nulls); require_pointer catches it when rows > 0.
void require_aligned(const char* fn, const char* name, const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) fail(fn, std::string(name) + " must be 16-byte aligned");
}

void require_pointer(const char* fn, const char* name, const void* p) {
  if (p == nullptr) fail(fn, std::string(name) + " is null");
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

int ceil_div(int a, int b) {
  return (a + b - 1) / b;
}

int round_up(int a, int b) {
  return ceil_div(a, b) * b;
}

// Grid for the element-wise kernels: x covers the 16-byte units of one row, y the rows; both are
// grid-stride loops, so the grid stays bounded however many rows there are and no index needs a
// division.
dim3 elementwise_grid(int rows, int units_per_row) {
  const int gx = std::min(ceil_div(units_per_row, kElementwiseThreads), kMaxElementwiseBlocks);
  const int gy = std::min({rows, std::max(1, kMaxElementwiseBlocks / gx), 65535});
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
}

// ---- Device helpers: 16-byte accesses. ----

__device__ __forceinline__ void load_bf16x8(const bf16* p, float (&out)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ void store_bf16x8(bf16* p, const float (&in)[8]) {
  uint4 raw;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i)
    h[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

__device__ __forceinline__ void load_f32x8(const float* p, float (&out)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
  out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}

__device__ __forceinline__ void store_f32x8(float* p, const float (&in)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(in[0], in[1], in[2], in[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(in[4], in[5], in[6], in[7]);
}

// V = 8: one 16-byte access; V = 1: the scalar fallback of the RoPE kernel for head_dim or
// strides that do not allow 16-byte accesses.
template <int V>
__device__ __forceinline__ void load_bf16v(const bf16* p, float (&out)[V]) {
  if constexpr (V == kVec) {
    load_bf16x8(p, out);
  } else {
    static_assert(V == 1);
    out[0] = __bfloat162float(*p);
  }
}

template <int V>
__device__ __forceinline__ void store_bf16v(bf16* p, const float (&in)[V]) {
  if constexpr (V == kVec) {
    store_bf16x8(p, in);
  } else {
    static_assert(V == 1);
    *p = __float2bfloat16_rn(in[0]);
  }
}

template <int V>
__device__ __forceinline__ void copy_bf16v(bf16* dst, const bf16* src) {
  if constexpr (V == kVec) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else {
    static_assert(V == 1);
    *dst = *src;
  }
}

// Sum over the block: warp shuffles, then one value per warp through shared memory.
// blockDim.x must be a multiple of 32. Called once per kernel (the shared slots are not reused).
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  __shared__ float total;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / 32) ? warp_sums[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

// ---- Kernels. ----

__global__ void embedding_gather_kernel(const bf16* __restrict__ table, const int32_t* __restrict__ ids,
                                        int num_tokens, int hidden, float multiplier,
                                        float* __restrict__ residual) {
  const int vecs = hidden / kVec;
  for (int t = blockIdx.y; t < num_tokens; t += gridDim.y) {
    const bf16* src = table + static_cast<int64_t>(ids[t]) * hidden;
    float* dst = residual + static_cast<int64_t>(t) * hidden;
    for (int v = blockIdx.x * blockDim.x + threadIdx.x; v < vecs; v += gridDim.x * blockDim.x) {
      float x[kVec];
      load_bf16x8(src + v * kVec, x);
#pragma unroll
      for (int i = 0; i < kVec; ++i)
        x[i] *= multiplier;
      store_f32x8(dst + v * kVec, x);
    }
  }
}

// The norms' second pass: this thread's K vectors of the row, x, scaled and written as bf16,
// out_row[v] = x * scale * (weight + weight_offset): the CPU reference's x * (1 / sqrt(sum / width +
// eps)) * (weight + offset), with rsqrtf's <= 2 ulp error in `scale`.
template <int K>
__device__ __forceinline__ void store_normed(const float (&x)[K][kVec], float scale, const bf16* weight,
                                             float weight_offset, int vecs, bf16* out_row) {
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v >= vecs) continue;
    float w[kVec];
    load_bf16x8(weight + v * kVec, w);
    float y[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e)
      y[e] = x[j][e] * scale * (w[e] + weight_offset);
    store_bf16x8(out_row + v * kVec, y);
  }
}

// One block per row; each thread keeps its K vectors of the row in registers between the sum of
// squares and the scaling, so the residual is read once (and written once when delta is given).
template <int K>
__global__ void __launch_bounds__(kNormMaxThreads)
    add_rms_norm_kernel(float* __restrict__ residual, const bf16* __restrict__ delta,
                        const bf16* __restrict__ weight, float eps, float weight_offset, int width,
                        bf16* __restrict__ out) {
  const int vecs = width / kVec;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * width;
  float x[K][kVec];
  float sumsq = 0.0f;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v >= vecs) continue;
    float* r = residual + base + v * kVec;
    load_f32x8(r, x[j]);
    if (delta != nullptr) {
      float d[kVec];
      load_bf16x8(delta + base + v * kVec, d);
#pragma unroll
      for (int e = 0; e < kVec; ++e)
        x[j][e] += d[e];
      store_f32x8(r, x[j]);
    }
#pragma unroll
    for (int e = 0; e < kVec; ++e)
      sumsq += x[j][e] * x[j][e];
  }
  const float scale = rsqrtf(block_sum(sumsq) / static_cast<float>(width) + eps);
  store_normed<K>(x, scale, weight, weight_offset, vecs, out + base);
}

// add_rms_norm_kernel's shape for bf16 rows with no residual: each thread reads its K vectors of
// the row before the block's sum, and writes them after it, so `out` may be `in`.
template <int K>
__global__ void __launch_bounds__(kNormMaxThreads)
    rms_norm_kernel(const bf16* in, const bf16* __restrict__ weight, float eps, float weight_offset,
                    int width, bf16* out) {
  const int vecs = width / kVec;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * width;
  float x[K][kVec];
  float sumsq = 0.0f;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v >= vecs) continue;
    load_bf16x8(in + base + v * kVec, x[j]);
#pragma unroll
    for (int e = 0; e < kVec; ++e)
      sumsq += x[j][e] * x[j][e];
  }
  const float scale = rsqrtf(block_sum(sumsq) / static_cast<float>(width) + eps);
  store_normed<K>(x, scale, weight, weight_offset, vecs, out + base);
}

// One block per token. Each (head, group of V pair indices) of q and k is rotated by one thread,
// which reads dimensions i .. i+V-1 and their partners i + half .. : the two 16-byte halves of a
// rotation. The cos/sin of the token's half angles are computed once, in double, into shared memory.
// kQkNorm (Qwen3): before the rotation, each warp in turn takes a q or k head, sums the squares of
// its biased values (lanes stride over head_dim, then a shuffle reduction) and leaves the head's
// inverse RMS in dynamic shared memory ((num_heads + num_kv_heads) floats); the rotating threads
// then scale their x1 / x2 by it and by the norm weight. The head is read twice (once for the sum,
// once to rotate), the second time from L1. Without the norm the kernel is the plain one: no
// dynamic shared memory, no extra pass.
// k and v of qkv are left as they are (bias, norm and rotation not applied): only the pool gets them.
template <int V, bool kQkNorm>
__global__ void __launch_bounds__(kRopeMaxThreads) rope_and_kv_write_kernel(RopeKvWriteArgs a) {
  __shared__ float cos_s[kMaxHeadDim / 2];
  __shared__ float sin_s[kMaxHeadDim / 2];
  extern __shared__ float inv_rms_s[];  // [num_heads + num_kv_heads], kQkNorm only
  const int t = blockIdx.x;
  const int head_dim = a.layout.head_dim;
  const int half = head_dim / 2;
  const int num_heads = a.num_heads;
  const int num_kv_heads = a.layout.num_kv_heads;
  bf16* row = a.qkv + static_cast<int64_t>(t) * a.qkv_row_stride;
  const bf16* bias = a.qkv_bias;

  const double pos = static_cast<double>(a.positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    double s, c;
    sincos(pos * static_cast<double>(a.inv_freq[i]), &s, &c);
    cos_s[i] = static_cast<float>(c);
    sin_s[i] = static_cast<float>(s);
  }
  if constexpr (kQkNorm) {
    // Warp-uniform loop (blockDim.x is a multiple of 32), so every lane reaches the shuffles.
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int num_warps = blockDim.x / 32;
    for (int h = warp; h < num_heads + num_kv_heads; h += num_warps) {
      const int head = h * head_dim;
      float sumsq = 0.0f;
      for (int i = lane * V; i < head_dim; i += 32 * V) {
        float x[V];
        load_bf16v<V>(row + head + i, x);
        if (bias != nullptr) {
          float b[V];
          load_bf16v<V>(bias + head + i, b);
#pragma unroll
          for (int e = 0; e < V; ++e)
            x[e] += b[e];
        }
#pragma unroll
        for (int e = 0; e < V; ++e)
          sumsq += x[e] * x[e];
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1)
        sumsq += __shfl_xor_sync(0xffffffffu, sumsq, o);
      // The CPU reference's 1 / sqrt(sum / head_dim + eps), with rsqrtf's <= 2 ulp error.
      if (lane == 0) inv_rms_s[h] = rsqrtf(sumsq / static_cast<float>(head_dim) + a.norm_eps);
    }
  }
  __syncthreads();

  const int64_t slot = a.slot_mapping[t];
  // The backend validates slots on the host (validate_step_batch); this guard keeps a bug in a
  // direct caller from corrupting other memory.
  const bool write = slot >= 0 && slot < static_cast<int64_t>(a.layout.num_blocks) * a.layout.block_size;

  // q heads then k heads are contiguous in the row: head h starts at h * head_dim.
  const int groups = half / V;
  const int rope_units = (num_heads + num_kv_heads) * groups;
  for (int u = threadIdx.x; u < rope_units; u += blockDim.x) {
    const int h = u / groups;
    const int i0 = (u - h * groups) * V;
    const int off = h * head_dim + i0;
    float x1[V], x2[V];
    load_bf16v<V>(row + off, x1);
    load_bf16v<V>(row + off + half, x2);
    if (bias != nullptr) {
      float b1[V], b2[V];
      load_bf16v<V>(bias + off, b1);
      load_bf16v<V>(bias + off + half, b2);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        x1[e] += b1[e];
        x2[e] += b2[e];
      }
    }
    if constexpr (kQkNorm) {
      // x * inv_rms * (weight + offset), in the CPU reference's order.
      const bf16* weight = h < num_heads ? a.q_norm : a.k_norm;
      const float inv_rms = inv_rms_s[h];
      float w1[V], w2[V];
      load_bf16v<V>(weight + i0, w1);
      load_bf16v<V>(weight + i0 + half, w2);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        x1[e] = x1[e] * inv_rms * (w1[e] + a.norm_weight_offset);
        x2[e] = x2[e] * inv_rms * (w2[e] + a.norm_weight_offset);
      }
    }
    float y1[V], y2[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float c = cos_s[i0 + e];
      const float s = sin_s[i0 + e];
      y1[e] = x1[e] * c - x2[e] * s;
      y2[e] = x2[e] * c + x1[e] * s;
    }
    if (h < num_heads) {
      store_bf16v<V>(row + off, y1);
      store_bf16v<V>(row + off + half, y2);
    } else if (write) {
      bf16* dst = a.k_cache + a.layout.slot_row(slot, h - num_heads) + i0;
      store_bf16v<V>(dst, y1);
      store_bf16v<V>(dst + half, y2);
    }
  }

  if (!write) return;
  const int v_groups = head_dim / V;
  const int v_units = num_kv_heads * v_groups;
  const int v_base = (num_heads + num_kv_heads) * head_dim;
  for (int u = threadIdx.x; u < v_units; u += blockDim.x) {
    const int h = u / v_groups;
    const int d = (u - h * v_groups) * V;
    const int off = v_base + h * head_dim + d;
    bf16* dst = a.v_cache + a.layout.slot_row(slot, h) + d;
    if (bias != nullptr) {
      float x[V], b[V];
      load_bf16v<V>(row + off, x);
      load_bf16v<V>(bias + off, b);
#pragma unroll
      for (int e = 0; e < V; ++e)
        x[e] += b[e];
      store_bf16v<V>(dst, x);
    } else {
      copy_bf16v<V>(dst, row + off);
    }
  }
}

enum class Gate { kSilu, kGeluTanh };

template <Gate kGate>
__device__ __forceinline__ float gate_activation(float g) {
  if constexpr (kGate == Gate::kSilu) {
    return g / (1.0f + __expf(-g));  // -g large: g / inf = -0
  } else {
    // 0.5 g (1 + tanh(z)) written as g * sigmoid(2 z), the same function without the cancellation
    // of 1 + tanh(z) for very negative z; saturates like silu (z -> -inf: g / inf = -0).
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    const float z = kSqrt2OverPi * (g + 0.044715f * g * g * g);
    return g / (1.0f + __expf(-2.0f * z));
  }
}

template <Gate kGate>
__global__ void gated_activation_kernel(const bf16* __restrict__ gate_up, int rows, int intermediate,
                                        bf16* __restrict__ out) {
  const int vecs = intermediate / kVec;
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const bf16* gate = gate_up + static_cast<int64_t>(r) * 2 * intermediate;
    const bf16* up = gate + intermediate;
    bf16* o = out + static_cast<int64_t>(r) * intermediate;
    for (int v = blockIdx.x * blockDim.x + threadIdx.x; v < vecs; v += gridDim.x * blockDim.x) {
      float g[kVec], u[kVec], y[kVec];
      load_bf16x8(gate + v * kVec, g);
      load_bf16x8(up + v * kVec, u);
#pragma unroll
      for (int e = 0; e < kVec; ++e)
        y[e] = gate_activation<kGate>(g[e]) * u[e];
      store_bf16x8(o + v * kVec, y);
    }
  }
}

__global__ void gather_rows_kernel(const float* __restrict__ in, const int32_t* __restrict__ rows_index,
                                   int rows, int width, float* __restrict__ out) {
  const int units = width / 4;  // float4s
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const float4* src = reinterpret_cast<const float4*>(in + static_cast<int64_t>(rows_index[r]) * width);
    float4* dst = reinterpret_cast<float4*>(out + static_cast<int64_t>(r) * width);
    for (int v = blockIdx.x * blockDim.x + threadIdx.x; v < units; v += gridDim.x * blockDim.x)
      dst[v] = src[v];
  }
}

__global__ void soft_cap_kernel(float* values, int64_t count, float cap) {
  const float inv_cap = 1.0f / cap;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    values[i] = cap * tanhf(values[i] * inv_cap);
}

template <int K>
void launch_add_rms_norm(float* residual, const bf16* delta, const bf16* weight, float eps,
                         float weight_offset, int rows, int width, bf16* out, cudaStream_t stream) {
  const int threads = round_up(ceil_div(width / kVec, K), 32);
  add_rms_norm_kernel<K><<<static_cast<unsigned>(rows), threads, 0, stream>>>(residual, delta, weight, eps,
                                                                              weight_offset, width, out);
  CUDA_CHECK_LAUNCH();
}

template <int K>
void launch_rms_norm(const bf16* in, const bf16* weight, float eps, float weight_offset, int rows, int width,
                     bf16* out, cudaStream_t stream) {
  const int threads = round_up(ceil_div(width / kVec, K), 32);
  rms_norm_kernel<K>
      <<<static_cast<unsigned>(rows), threads, 0, stream>>>(in, weight, eps, weight_offset, width, out);
  CUDA_CHECK_LAUNCH();
}

// The norms' register tiling: K vectors of 8 per thread, as few as the width allows.
template <typename Launch>
void dispatch_norm_width(int width, Launch launch) {
  const int vecs = width / kVec;
  if (vecs <= kNormMaxThreads)
    launch(std::integral_constant<int, 1>{});
  else if (vecs <= 2 * kNormMaxThreads)
    launch(std::integral_constant<int, 2>{});
  else if (vecs <= 4 * kNormMaxThreads)
    launch(std::integral_constant<int, 4>{});
  else
    launch(std::integral_constant<int, 8>{});
}

void require_norm_width(const char* fn, int width) {
  require_width(fn, "width", width);
  constexpr int kMaxWidth = kNormMaxThreads * kNormMaxVecsPerThread * kVec;
  if (width > kMaxWidth)
    fail(fn, "width " + std::to_string(width) + " exceeds the supported " + std::to_string(kMaxWidth));
}

template <Gate kGate>
void gated_activation(const char* fn, const bf16* gate_up, int rows, int intermediate, bf16* out,
                      cudaStream_t stream) {
  require_width(fn, "intermediate", intermediate);
  require_rows(fn, "rows", rows);
  require_aligned(fn, "gate_up", gate_up);
  require_aligned(fn, "out", out);
  if (rows == 0) return;
  require_pointer(fn, "gate_up", gate_up);
  require_pointer(fn, "out", out);
  gated_activation_kernel<kGate>
      <<<elementwise_grid(rows, intermediate / kVec), kElementwiseThreads, 0, stream>>>(gate_up, rows,
                                                                                        intermediate, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void embedding_gather(const bf16* table, const int32_t* ids, int num_tokens, int hidden, float multiplier,
                      float* residual, cudaStream_t stream) {
  constexpr const char* fn = "embedding_gather";
  require_width(fn, "hidden", hidden);
  require_rows(fn, "num_tokens", num_tokens);
  require_aligned(fn, "table", table);
  require_aligned(fn, "residual", residual);
  if (num_tokens == 0) return;
  require_pointer(fn, "table", table);
  require_pointer(fn, "ids", ids);
  require_pointer(fn, "residual", residual);
  embedding_gather_kernel<<<elementwise_grid(num_tokens, hidden / kVec), kElementwiseThreads, 0, stream>>>(
      table, ids, num_tokens, hidden, multiplier, residual);
  CUDA_CHECK_LAUNCH();
}

void add_rms_norm(float* residual, const bf16* delta, const bf16* weight, float eps, int rows, int width,
                  bf16* out, cudaStream_t stream, float weight_offset) {
  constexpr const char* fn = "add_rms_norm";
  require_norm_width(fn, width);
  require_rows(fn, "rows", rows);
  require_aligned(fn, "residual", residual);
  require_aligned(fn, "delta", delta);
  require_aligned(fn, "weight", weight);
  require_aligned(fn, "out", out);
  if (rows == 0) return;
  require_pointer(fn, "residual", residual);
  require_pointer(fn, "weight", weight);
  require_pointer(fn, "out", out);
  if (static_cast<const void*>(out) == static_cast<const void*>(residual)) fail(fn, "out aliases residual");
  dispatch_norm_width(width, [&](auto k) {
    launch_add_rms_norm<decltype(k)::value>(residual, delta, weight, eps, weight_offset, rows, width, out,
                                            stream);
  });
}

void rms_norm(const bf16* in, const bf16* weight, float eps, float weight_offset, int rows, int width,
              bf16* out, cudaStream_t stream) {
  constexpr const char* fn = "rms_norm";
  require_norm_width(fn, width);
  require_rows(fn, "rows", rows);
  require_aligned(fn, "in", in);
  require_aligned(fn, "weight", weight);
  require_aligned(fn, "out", out);
  if (rows == 0) return;
  require_pointer(fn, "in", in);
  require_pointer(fn, "weight", weight);
  require_pointer(fn, "out", out);
  dispatch_norm_width(width, [&](auto k) {
    launch_rms_norm<decltype(k)::value>(in, weight, eps, weight_offset, rows, width, out, stream);
  });
}

void rope_and_kv_write(const RopeKvWriteArgs& args, cudaStream_t stream) {
  constexpr const char* fn = "rope_and_kv_write";
  const KvCacheLayout& l = args.layout;
  if (l.head_dim <= 0 || l.head_dim % 2 != 0 || l.head_dim > kMaxHeadDim)
    fail(fn, "head_dim " + std::to_string(l.head_dim) + " must be even and in [2, 256]");
  if (args.num_heads <= 0) fail(fn, "num_heads " + std::to_string(args.num_heads) + " must be positive");
  if (l.num_kv_heads <= 0) fail(fn, "num_kv_heads " + std::to_string(l.num_kv_heads) + " must be positive");
  if (l.block_size <= 0) fail(fn, "block_size " + std::to_string(l.block_size) + " must be positive");
  if (l.num_blocks < 0) fail(fn, "num_blocks " + std::to_string(l.num_blocks) + " is negative");
  const int64_t width = static_cast<int64_t>(args.num_heads + 2 * l.num_kv_heads) * l.head_dim;
  if (args.qkv_row_stride < width)
    fail(fn, "qkv_row_stride " + std::to_string(args.qkv_row_stride) + " is below the row width " +
                 std::to_string(width));
  // Qwen3's q/k norm: both weights or neither.
  const bool qk_norm = args.q_norm != nullptr || args.k_norm != nullptr;
  if (qk_norm) {
    if (args.q_norm == nullptr)
      fail(fn, "q_norm is null but k_norm is not; give both norm weights or neither");
    if (args.k_norm == nullptr)
      fail(fn, "k_norm is null but q_norm is not; give both norm weights or neither");
    const int64_t heads = static_cast<int64_t>(args.num_heads) + l.num_kv_heads;
    if (heads > kRopeMaxNormHeads)
      fail(fn, "num_heads + num_kv_heads " + std::to_string(heads) + " exceeds the " +
                   std::to_string(kRopeMaxNormHeads) + " supported with q_norm and k_norm");
    if (!(args.norm_eps >= 0.0f) || !std::isfinite(args.norm_eps))
      fail(fn, "norm_eps " + std::to_string(args.norm_eps) + " must be finite and non-negative");
  }
  require_rows(fn, "num_tokens", args.num_tokens);
  if (args.num_tokens == 0) return;
  require_pointer(fn, "qkv", args.qkv);
  require_pointer(fn, "positions", args.positions);
  require_pointer(fn, "slot_mapping", args.slot_mapping);
  require_pointer(fn, "inv_freq", args.inv_freq);
  require_pointer(fn, "k_cache", args.k_cache);
  require_pointer(fn, "v_cache", args.v_cache);

  // 16-byte accesses need both halves of a head (head_dim / 2) and every row start on 8 elements.
  const bool vectorized = l.head_dim % (2 * kVec) == 0 && args.qkv_row_stride % kVec == 0 &&
                          aligned16(args.qkv) && aligned16(args.qkv_bias) && aligned16(args.k_cache) &&
                          aligned16(args.v_cache) && aligned16(args.q_norm) && aligned16(args.k_norm);
  const int v_per_unit = vectorized ? kVec : 1;
  const int rope_units = (args.num_heads + l.num_kv_heads) * (l.head_dim / 2 / v_per_unit);
  const int v_units = l.num_kv_heads * (l.head_dim / v_per_unit);
  int work = std::max({rope_units, v_units, l.head_dim / 2});
  // The norm's sums take a warp per head: up to one head per warp.
  if (qk_norm) work = std::max(work, 32 * (args.num_heads + l.num_kv_heads));
  const int threads = std::min(round_up(work, 32), kRopeMaxThreads);
  const auto grid = static_cast<unsigned>(args.num_tokens);
  if (qk_norm) {
    const size_t shared = sizeof(float) * static_cast<size_t>(args.num_heads + l.num_kv_heads);
    if (vectorized)
      rope_and_kv_write_kernel<kVec, true><<<grid, threads, shared, stream>>>(args);
    else
      rope_and_kv_write_kernel<1, true><<<grid, threads, shared, stream>>>(args);
  } else {
    if (vectorized)
      rope_and_kv_write_kernel<kVec, false><<<grid, threads, 0, stream>>>(args);
    else
      rope_and_kv_write_kernel<1, false><<<grid, threads, 0, stream>>>(args);
  }
  CUDA_CHECK_LAUNCH();
}

void silu_and_mul(const bf16* gate_up, int rows, int intermediate, bf16* out, cudaStream_t stream) {
  gated_activation<Gate::kSilu>("silu_and_mul", gate_up, rows, intermediate, out, stream);
}

void gelu_tanh_and_mul(const bf16* gate_up, int rows, int intermediate, bf16* out, cudaStream_t stream) {
  gated_activation<Gate::kGeluTanh>("gelu_tanh_and_mul", gate_up, rows, intermediate, out, stream);
}

void soft_cap(float* values, int64_t count, float cap, cudaStream_t stream) {
  constexpr const char* fn = "soft_cap";
  if (count < 0) fail(fn, "count " + std::to_string(count) + " is negative");
  if (!(cap > 0.0f) || !std::isfinite(cap))
    fail(fn, "cap " + std::to_string(cap) + " must be finite and positive");
  if (count == 0) return;
  require_pointer(fn, "values", values);
  const auto blocks = static_cast<unsigned>(
      std::min<int64_t>((count + kElementwiseThreads - 1) / kElementwiseThreads, kMaxElementwiseBlocks));
  soft_cap_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(values, count, cap);
  CUDA_CHECK_LAUNCH();
}

void gather_rows(const float* in, const int32_t* rows_index, int rows, int width, float* out,
                 cudaStream_t stream) {
  constexpr const char* fn = "gather_rows";
  require_width(fn, "width", width);
  require_rows(fn, "rows", rows);
  require_aligned(fn, "in", in);
  require_aligned(fn, "out", out);
  if (rows == 0) return;
  require_pointer(fn, "in", in);
  require_pointer(fn, "rows_index", rows_index);
  require_pointer(fn, "out", out);
  gather_rows_kernel<<<elementwise_grid(rows, width / 4), kElementwiseThreads, 0, stream>>>(in, rows_index,
                                                                                            rows, width, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvserve::cuda
