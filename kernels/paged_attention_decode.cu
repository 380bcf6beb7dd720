// Decode paged attention (one query token per sequence) with an optional split of each context
// across thread blocks (flash-decoding). See paged_attention.h for the contract.
//
// Thread mapping. One thread block per (sequence, KV head, head chunk, split); a head chunk is up
// to kMaxHeadsPerBlock query heads of the KV head's group (grid.y = num_kv_heads * head_chunks, so
// groups of up to 8 read every K/V row once). A K or V row (head_dim bf16) is read by head_dim / 8
// consecutive lanes, 16 bytes each; a warp therefore covers 32 / (head_dim / 8) consecutive rows at
// a time, and takes kRowsInFlight such steps per iteration with all their K and V loads issued
// before any arithmetic, so that each thread keeps 2 * kRowsInFlight 16-byte loads in flight.
// Each row group (the lanes of one row) keeps its own online-softmax state for every head of the
// chunk; the states are merged once at the end: across the row groups of a warp with shuffles,
// then across warps in shared memory. Scores live in the log2 domain (q is pre-scaled by
// scale * log2(e)) so that every exponential is one exp2.
//
// Splits. The grid always has num_splits blocks along z, so it depends only on num_seqs and
// num_splits (CUDA-graph capture). Each sequence cuts the positions it sees (its whole context, or
// the last sliding_window of it) into partitions of at least kMinDecodePartition tokens and uses
// ceil(positions / partition) <= num_splits of them; blocks past that return at once. A sequence that uses
// one split writes its output directly; the others write fp32 partial outputs (normalized by their own sum)
// with their max and sum to the workspace, and the reduction kernel merges the splits the sequence used.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/paged_attention.h"

namespace kvserve::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
// Rows each row group loads per iteration before computing: 2 * this many 16-byte loads per thread
// in flight (K and V), which with 4 blocks of 128 threads per SM is ~64 KiB in flight per SM.
constexpr int kRowsInFlight = 4;
// Query heads one block serves: their q and accumulators live in registers (2 * 8 floats per head
// per thread). Larger groups are split into chunks served by different blocks.
constexpr int kMaxHeadsPerBlock = 8;
// choose_decode_splits: upper bound on splits.
constexpr int kMaxDecodeSplits = 32;
// Partitions are rounded up to a multiple of this many tokens, so that a split rarely ends with a
// nearly empty iteration.
constexpr int kPartitionGranule = 64;
constexpr float kLog2e = 1.4426950408889634f;

struct DecodeParams {
  const bf16* q;
  int64_t q_row_stride;
  const bf16* k_cache;
  const bf16* v_cache;
  int64_t block_stride;  // elements between consecutive pool blocks
  int block_size;
  int block_shift;  // log2(block_size) when it is a power of two, else -1
  bf16* out;
  int64_t out_row_stride;
  const int32_t* context_lens;
  const int32_t* block_tables;
  int max_blocks_per_seq;
  int max_context;  // max_blocks_per_seq * block_size, <= INT_MAX / 2
  int window;       // sliding window, > 0; max_context when there is none
  int num_heads;
  int head_dim;
  int group;        // query heads per KV head
  int head_chunks;  // ceil(group / heads per block)
  int num_splits;
  float scale_log2;    // softmax scale * log2(e)
  float softcap_log2;  // soft cap * log2(e) (scores live in the log2 domain); 0: none
  float* ws_out;       // [num_seqs][num_heads][num_splits][head_dim]
  float* ws_max;       // [num_seqs][num_heads][num_splits], log2 domain
  float* ws_sum;       // [num_seqs][num_heads][num_splits]
};

__host__ __device__ __forceinline__ int ceil_div_int(int a, int b) {
  return a / b + (a % b != 0 ? 1 : 0);  // no overflow near INT_MAX
}

// Heads one block serves for a group of `group` query heads per KV head, i.e. the kernel's G: the
// smallest power of two covering the group (or a full chunk of kMaxHeadsPerBlock), so groups 1, 2,
// 4, 8 and their multiples waste no head slots.
__host__ __device__ constexpr int decode_heads_per_block(int group) {
  return group <= 1 ? 1 : group == 2 ? 2 : group <= 4 ? 4 : kMaxHeadsPerBlock;
}

// Decode blocks an SM holds at once at least, for G heads per block: the kernel's launch bounds ask
// the compiler for this occupancy, and choose_decode_splits counts waves with it. A chunk of 8 heads
// keeps 2 x 8 x 8 fp32 accumulators per thread (about 250 registers), so only 2 blocks of 128
// threads fit in an SM's 64K registers; smaller chunks fit 4.
__host__ __device__ constexpr int decode_min_blocks_per_sm(int heads_per_block) {
  return heads_per_block >= 8 ? 2 : 4;
}

// Tokens per split for a sequence of `ctx` > 0 tokens; host and device agree by construction.
__host__ __device__ __forceinline__ int partition_tokens(int ctx, int num_splits) {
  int part = ceil_div_int(ctx, num_splits);
  part = part < kMinDecodePartition ? kMinDecodePartition : part;
  return ceil_div_int(part, kPartitionGranule) * kPartitionGranule;
}

__host__ __device__ __forceinline__ int splits_used(int ctx, int num_splits) {
  return ctx <= 0 ? 0 : ceil_div_int(ctx, partition_tokens(ctx, num_splits));
}

// The block table is only valid up to max_blocks_per_seq entries: a corrupt context length must not
// turn into a read past the table.
__device__ __forceinline__ int clamped_context(const DecodeParams& p, int seq) {
  const int ctx = p.context_lens[seq];
  return ctx < 0 ? 0 : (ctx > p.max_context ? p.max_context : ctx);
}

// The first position the query of a sequence with `ctx` tokens sees (the query is position ctx - 1).
__device__ __forceinline__ int first_visible(const DecodeParams& p, int ctx) {
  return ctx > p.window ? ctx - p.window : 0;
}

__device__ __forceinline__ void bf16x8_to_float(const uint4& v, float (&f)[8]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    // Element 2i is the low half of word i (little endian); bf16 is the top half of an fp32.
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &h, sizeof(u));
  return u;
}

__device__ __forceinline__ uint4 float8_to_bf16x8(const float (&f)[8]) {
  return make_uint4(pack_bf16x2(f[0], f[1]), pack_bf16x2(f[2], f[3]), pack_bf16x2(f[4], f[5]),
                    pack_bf16x2(f[6], f[7]));
}

__device__ __forceinline__ uint4 load16(const bf16* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// Block (sequence, KV head and head chunk, split). Template: head dim D, heads per block G.
template <int D, int G>
__global__ void __launch_bounds__(kThreads, decode_min_blocks_per_sm(G))
    paged_decode_kernel(const DecodeParams p) {
  constexpr int kTpr = D / 8;        // lanes per row
  constexpr int kRpw = 32 / kTpr;    // rows a warp covers per step
  constexpr int kU = kRowsInFlight;  // steps per iteration
  constexpr int kWarpRows = kRpw * kU;
  constexpr int kBlockRows = kWarps * kWarpRows;
  constexpr int kVecs = D / 8;  // 16-byte vectors per row
  static_assert(kTpr >= 2 && kTpr <= 32 && (kTpr & (kTpr - 1)) == 0, "head_dim / 8 must be 2..32");

  const int seq = blockIdx.x;
  const int kv_head = blockIdx.y / p.head_chunks;
  const int chunk = blockIdx.y - kv_head * p.head_chunks;
  const int split = blockIdx.z;
  const int head0 = kv_head * p.group + chunk * G;
  const int heads_here = min(G, p.group - chunk * G);
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int row_in_step = lane / kTpr;
  const int dim0 = (lane % kTpr) * 8;

  bf16* out_row = p.out + static_cast<int64_t>(seq) * p.out_row_stride;
  const int ctx = clamped_context(p, seq);
  if (ctx == 0) {  // padding row: zeros, written once (by split 0)
    if (split == 0) {
      for (int unit = tid; unit < heads_here * kVecs; unit += kThreads) {
        const int h = head0 + unit / kVecs;
        *reinterpret_cast<uint4*>(out_row + h * D + (unit % kVecs) * 8) = make_uint4(0, 0, 0, 0);
      }
    }
    return;
  }
  const int first = first_visible(p, ctx);
  const int part = partition_tokens(ctx - first, p.num_splits);
  const int n_used = ceil_div_int(ctx - first, part);
  if (split >= n_used) return;
  const int start = first + split * part;  // < ctx, since split < n_used
  const int end = start + min(part, ctx - start);

  // q for the chunk's heads, this lane's 8 dims, pre-scaled into the log2 domain.
  float q[G][8];
  const bf16* q_row = p.q + static_cast<int64_t>(seq) * p.q_row_stride;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (g < heads_here) {
      bf16x8_to_float(load16(q_row + (head0 + g) * D + dim0), q[g]);
#pragma unroll
      for (int e = 0; e < 8; ++e)
        q[g][e] *= p.scale_log2;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        q[g][e] = 0.0f;
    }
  }

  float m[G], l[G], acc[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e)
      acc[g][e] = 0.0f;
  }

  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int64_t head_offset = static_cast<int64_t>(kv_head) * p.block_size * D + dim0;

  // The loop bound is uniform across a warp (base depends on the warp only), so every lane takes
  // part in the shuffles below.
  for (int base = start + warp * kWarpRows; base < end; base += kBlockRows) {
    uint4 k_raw[kU], v_raw[kU];
    bool valid[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int t = base + u * kRpw + row_in_step;
      valid[u] = t < end;
      k_raw[u] = make_uint4(0, 0, 0, 0);
      v_raw[u] = make_uint4(0, 0, 0, 0);
      if (valid[u]) {  // never touch table entries past the sequence's last block (they are -1)
        int logical, offset;
        if (p.block_shift >= 0) {
          logical = t >> p.block_shift;
          offset = t & (p.block_size - 1);
        } else {
          logical = t / p.block_size;
          offset = t - logical * p.block_size;
        }
        const int64_t physical = __ldg(table + logical);
        const int64_t idx = physical * p.block_stride + head_offset + static_cast<int64_t>(offset) * D;
        k_raw[u] = load16(p.k_cache + idx);
        v_raw[u] = load16(p.v_cache + idx);
      }
    }

    float s[kU][G];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float kf[8];
      bf16x8_to_float(k_raw[u], kf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e)
          dot = fmaf(q[g][e], kf[e], dot);
        s[u][g] = dot;
      }
    }
    // Butterfly sum over the row's lanes: every lane ends with the same (bitwise) score.
#pragma unroll
    for (int off = kTpr / 2; off > 0; off >>= 1) {
#pragma unroll
      for (int u = 0; u < kU; ++u) {
#pragma unroll
        for (int g = 0; g < G; ++g)
          s[u][g] += __shfl_xor_sync(0xffffffffu, s[u][g], off);
      }
    }

    float vf[kU][8];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      bf16x8_to_float(v_raw[u], vf[u]);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        // cap * tanh(x / cap) commutes with the log2(e) factor: capping in the log2 domain is the same.
        if (p.softcap_log2 > 0.0f) s[u][g] = p.softcap_log2 * tanhf(s[u][g] / p.softcap_log2);
        s[u][g] = valid[u] ? s[u][g] : -INFINITY;
      }
    }

#pragma unroll
    for (int g = 0; g < G; ++g) {
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < kU; ++u)
        mx = fmaxf(mx, s[u][g]);
      // All rows so far masked: keep exp2's arguments finite-or--inf (never -inf - -inf).
      const float ref = mx == -INFINITY ? 0.0f : mx;
      const float alpha = exp2f(m[g] - ref);
      float pr[kU];
      float psum = 0.0f;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        pr[u] = exp2f(s[u][g] - ref);
        psum += pr[u];
      }
      l[g] = l[g] * alpha + psum;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        float a = acc[g][e] * alpha;
#pragma unroll
        for (int u = 0; u < kU; ++u)
          a = fmaf(pr[u], vf[u][e], a);
        acc[g][e] = a;
      }
      m[g] = mx;
    }
  }

  // Merge the row groups of the warp (lanes with the same dims, kTpr apart).
#pragma unroll
  for (int off = kTpr; off < 32; off <<= 1) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float m_o = __shfl_xor_sync(0xffffffffu, m[g], off);
      const float l_o = __shfl_xor_sync(0xffffffffu, l[g], off);
      const float mx = fmaxf(m[g], m_o);
      const float ref = mx == -INFINITY ? 0.0f : mx;
      const float a = exp2f(m[g] - ref);
      const float b = exp2f(m_o - ref);
      l[g] = l[g] * a + l_o * b;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float acc_o = __shfl_xor_sync(0xffffffffu, acc[g][e], off);
        acc[g][e] = acc[g][e] * a + acc_o * b;
      }
      m[g] = mx;
    }
  }

  // Merge the warps. float4 rows: 16-byte aligned, and a warp's lanes touch consecutive words.
  __shared__ float4 sm_acc[kWarps][G][D / 4];
  __shared__ float sm_max[kWarps][G];
  __shared__ float sm_sum[kWarps][G];
  if (row_in_step == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      sm_acc[warp][g][dim0 / 4] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
      sm_acc[warp][g][dim0 / 4 + 1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
      if (dim0 == 0) {
        sm_max[warp][g] = m[g];
        sm_sum[warp][g] = l[g];
      }
    }
  }
  __syncthreads();

  for (int unit = tid; unit < heads_here * kVecs; unit += kThreads) {
    const int g = unit / kVecs;
    const int vec = unit % kVecs;
    // Finite: warp 0's first row is the partition's first token, which is valid.
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w)
      mx = fmaxf(mx, sm_max[w][g]);
    float sum = 0.0f;
    float o[8] = {};
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float wt = exp2f(sm_max[w][g] - mx);  // 0 for a warp that saw no rows (-inf)
      sum += sm_sum[w][g] * wt;
      const float4 lo = sm_acc[w][g][vec * 2];
      const float4 hi = sm_acc[w][g][vec * 2 + 1];
      o[0] += lo.x * wt;
      o[1] += lo.y * wt;
      o[2] += lo.z * wt;
      o[3] += lo.w * wt;
      o[4] += hi.x * wt;
      o[5] += hi.y * wt;
      o[6] += hi.z * wt;
      o[7] += hi.w * wt;
    }
    const float inv = 1.0f / sum;  // sum >= 1: the max row contributes exp2(0)
#pragma unroll
    for (int e = 0; e < 8; ++e)
      o[e] *= inv;
    const int h = head0 + g;
    if (n_used == 1) {
      *reinterpret_cast<uint4*>(out_row + h * D + vec * 8) = float8_to_bf16x8(o);
    } else {
      const int64_t slot = (static_cast<int64_t>(seq) * p.num_heads + h) * p.num_splits + split;
      float4* dst = reinterpret_cast<float4*>(p.ws_out + slot * D + vec * 8);
      dst[0] = make_float4(o[0], o[1], o[2], o[3]);
      dst[1] = make_float4(o[4], o[5], o[6], o[7]);
      if (vec == 0) {
        p.ws_max[slot] = mx;
        p.ws_sum[slot] = sum;
      }
    }
  }
}

// Block (sequence, head), one thread per dim: merges the splits the sequence used. Sequences that
// used at most one split were written by the main kernel.
__global__ void __launch_bounds__(256) paged_decode_reduce_kernel(const DecodeParams p) {
  const int seq = blockIdx.x;
  const int h = blockIdx.y;
  const int d = threadIdx.x;
  const int ctx = clamped_context(p, seq);
  const int n = splits_used(ctx - first_visible(p, ctx), p.num_splits);
  if (n <= 1 || d >= p.head_dim) return;
  const int64_t slot0 = (static_cast<int64_t>(seq) * p.num_heads + h) * p.num_splits;
  float mx = -INFINITY;
  for (int i = 0; i < n; ++i)
    mx = fmaxf(mx, p.ws_max[slot0 + i]);
  float sum = 0.0f;
  float o = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float wt = p.ws_sum[slot0 + i] * exp2f(p.ws_max[slot0 + i] - mx);
    sum += wt;
    o = fmaf(wt, p.ws_out[(slot0 + i) * p.head_dim + d], o);
  }
  p.out[static_cast<int64_t>(seq) * p.out_row_stride + static_cast<int64_t>(h) * p.head_dim + d] =
      __float2bfloat16(o / sum);
}

[[noreturn]] void invalid(const std::string& what) {
  throw std::invalid_argument("paged_decode_attention: " + what);
}

bool aligned16(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

void validate(const PagedAttentionArgs& a, int num_splits, const void* workspace, size_t workspace_bytes) {
  const KvCacheLayout& L = a.layout;
  const int d = L.head_dim;
  if (d != 16 && d != 32 && d != 64 && d != 128 && d != 256)
    invalid("layout.head_dim " + std::to_string(d) + " is not one of 16, 32, 64, 128, 256");
  if (L.num_kv_heads <= 0) invalid("layout.num_kv_heads must be > 0");
  if (a.num_heads <= 0 || a.num_heads % L.num_kv_heads != 0)
    invalid("num_heads " + std::to_string(a.num_heads) + " must be a positive multiple of num_kv_heads " +
            std::to_string(L.num_kv_heads));
  if (L.block_size <= 0 || L.block_size % 8 != 0)
    invalid("layout.block_size " + std::to_string(L.block_size) + " must be a positive multiple of 8");
  if (L.num_blocks <= 0) invalid("layout.num_blocks must be > 0");
  if (a.max_blocks_per_seq <= 0) invalid("max_blocks_per_seq must be > 0");
  // Token indices (partition ends rounded up, row bases stepping past the end) stay in int.
  if (static_cast<int64_t>(a.max_blocks_per_seq) * L.block_size > INT_MAX / 2)
    invalid("max_blocks_per_seq * block_size must be at most " + std::to_string(INT_MAX / 2) + " tokens");
  const int64_t width = static_cast<int64_t>(a.num_heads) * d;
  if (a.q_row_stride < width || a.q_row_stride % 8 != 0)
    invalid("q_row_stride " + std::to_string(a.q_row_stride) +
            " must be a multiple of 8 and >= num_heads * head_dim");
  if (a.out_row_stride < width || a.out_row_stride % 8 != 0)
    invalid("out_row_stride " + std::to_string(a.out_row_stride) +
            " must be a multiple of 8 and >= num_heads * head_dim");
  if (!a.q || !aligned16(a.q)) invalid("q must be a non-null 16-byte aligned device pointer");
  if (!a.k_cache || !aligned16(a.k_cache))
    invalid("k_cache must be a non-null 16-byte aligned device pointer");
  if (!a.v_cache || !aligned16(a.v_cache))
    invalid("v_cache must be a non-null 16-byte aligned device pointer");
  if (!a.out || !aligned16(a.out)) invalid("out must be a non-null 16-byte aligned device pointer");
  if (!a.context_lens) invalid("context_lens must be non-null");
  if (!a.block_tables) invalid("block_tables must be non-null");
  if (!std::isfinite(a.scale)) invalid("scale must be finite");
  if (!(a.softcap >= 0.0f) || !std::isfinite(a.softcap)) invalid("softcap must be finite and >= 0 (0: none)");
  if (a.sliding_window < 0) invalid("sliding_window must be >= 0 (0: none)");
  const int group = a.num_heads / L.num_kv_heads;
  const int64_t grid_y = static_cast<int64_t>(L.num_kv_heads) * ceil_div_int(group, kMaxHeadsPerBlock);
  if (grid_y > 65535) invalid("num_heads too large for one launch (num_kv_heads * head chunks > 65535)");
  if (num_splits > 1) {
    if (a.num_heads > 65535)
      invalid("num_heads must be at most 65535 (the reduction's grid.y) when splitting");
    if (!workspace || !aligned16(workspace))
      invalid("workspace must be a non-null 16-byte aligned device pointer when num_splits > 1");
    const size_t need = decode_workspace_bytes(a.num_seqs, a.num_heads, d, num_splits);
    if (workspace_bytes < need)
      invalid("workspace_bytes " + std::to_string(workspace_bytes) +
              " < decode_workspace_bytes() = " + std::to_string(need));
  }
}

template <int D, int G>
void launch_main(const DecodeParams& p, dim3 grid, cudaStream_t stream) {
  paged_decode_kernel<D, G><<<grid, kThreads, 0, stream>>>(p);
}

template <int D>
void launch_for_dim(const DecodeParams& p, dim3 grid, cudaStream_t stream) {
  static_assert(kMaxHeadsPerBlock == 8, "one instantiation per decode_heads_per_block() value");
  switch (decode_heads_per_block(p.group)) {
    case 1:
      launch_main<D, 1>(p, grid, stream);
      break;
    case 2:
      launch_main<D, 2>(p, grid, stream);
      break;
    case 4:
      launch_main<D, 4>(p, grid, stream);
      break;
    default:
      launch_main<D, 8>(p, grid, stream);
      break;
  }
}

}  // namespace

int choose_decode_splits(int num_seqs, int num_heads, int num_kv_heads, int max_context_len, int num_sms) {
  if (num_seqs <= 0 || num_kv_heads <= 0 || num_heads < num_kv_heads || max_context_len <= 0) return 1;
  // More splits than partitions of kMinDecodePartition tokens would leave blocks idle.
  const int useful = std::min(ceil_div_int(max_context_len, kMinDecodePartition), kMaxDecodeSplits);
  if (useful <= 1) return 1;
  // Enough blocks for about two full waves of the GPU, counted as the launch does: one block per
  // (sequence, KV head, head chunk) per split, as many per SM as the instantiation's occupancy.
  const int group = num_heads / num_kv_heads;
  const int heads_per_block = decode_heads_per_block(group);
  const int64_t target_blocks = 2LL * std::max(num_sms, 1) * decode_min_blocks_per_sm(heads_per_block);
  const int64_t blocks_per_split =
      static_cast<int64_t>(num_seqs) * num_kv_heads * ceil_div_int(group, kMaxHeadsPerBlock);
  const int64_t want = (target_blocks + blocks_per_split - 1) / blocks_per_split;
  return static_cast<int>(std::clamp<int64_t>(want, 1, useful));
}

size_t decode_workspace_bytes(int num_seqs, int num_heads, int head_dim, int num_splits) {
  if (num_splits <= 1 || num_seqs <= 0 || num_heads <= 0 || head_dim <= 0) return 0;
  const size_t slots = static_cast<size_t>(num_seqs) * num_heads * num_splits;
  return slots * (static_cast<size_t>(head_dim) + 2) * sizeof(float);
}

void paged_decode_attention(const PagedAttentionArgs& args, int num_splits, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream) {
  if (args.num_seqs < 0) invalid("num_seqs must be >= 0");
  if (num_splits < 1 || num_splits > 65535) invalid("num_splits must be in [1, 65535]");
  if (args.num_seqs == 0) return;  // nothing to do, and a zero-sized grid is a launch error
  validate(args, num_splits, workspace, workspace_bytes);

  const KvCacheLayout& L = args.layout;
  DecodeParams p{};
  p.q = args.q;
  p.q_row_stride = args.q_row_stride;
  p.k_cache = args.k_cache;
  p.v_cache = args.v_cache;
  p.block_stride = L.block_stride();
  p.block_size = L.block_size;
  p.block_shift =
      (L.block_size & (L.block_size - 1)) == 0 ? __builtin_ctz(static_cast<unsigned>(L.block_size)) : -1;
  p.out = args.out;
  p.out_row_stride = args.out_row_stride;
  p.context_lens = args.context_lens;
  p.block_tables = args.block_tables;
  p.max_blocks_per_seq = args.max_blocks_per_seq;
  p.max_context = args.max_blocks_per_seq * L.block_size;  // validate() bounded it by INT_MAX / 2
  p.window = args.sliding_window > 0 ? std::min(args.sliding_window, p.max_context) : p.max_context;
  p.num_heads = args.num_heads;
  p.head_dim = L.head_dim;
  p.group = args.num_heads / L.num_kv_heads;
  p.head_chunks = ceil_div_int(p.group, kMaxHeadsPerBlock);
  p.num_splits = num_splits;
  p.scale_log2 = args.scale * kLog2e;
  p.softcap_log2 = args.softcap * kLog2e;
  if (num_splits > 1) {
    const size_t slots = static_cast<size_t>(args.num_seqs) * args.num_heads * num_splits;
    p.ws_out = static_cast<float*>(workspace);
    p.ws_max = p.ws_out + slots * L.head_dim;
    p.ws_sum = p.ws_max + slots;
  }

  const dim3 grid(static_cast<unsigned>(args.num_seqs), static_cast<unsigned>(L.num_kv_heads * p.head_chunks),
                  static_cast<unsigned>(num_splits));
  // validate() admitted only these head dims.
  if (L.head_dim == 16) launch_for_dim<16>(p, grid, stream);
  if (L.head_dim == 32) launch_for_dim<32>(p, grid, stream);
  if (L.head_dim == 64) launch_for_dim<64>(p, grid, stream);
  if (L.head_dim == 128) launch_for_dim<128>(p, grid, stream);
  if (L.head_dim == 256) launch_for_dim<256>(p, grid, stream);
  CUDA_CHECK_LAUNCH();
  if (num_splits > 1) {
    const dim3 reduce_grid(static_cast<unsigned>(args.num_seqs), static_cast<unsigned>(args.num_heads));
    paged_decode_reduce_kernel<<<reduce_grid, std::max(32, L.head_dim), 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace kvserve::cuda
