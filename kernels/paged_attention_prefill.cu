// Prefill / chunked-prefill paged attention on tensor cores (contract: paged_attention.h).
//
// Flash-attention 2 style, one thread block per (sequence, KV head, tile of kBlockM query rows). The
// tile's rows are the GQA group's query heads stacked token-major (row r = token r / group, head
// kv_head * group + r % group), so one K/V tile staged in shared memory serves the whole group, and
// the causal limit grows with the row index. Each warp owns 16 rows and runs
//   S = Q K^T (mma.sync m16n8k16, bf16 in, fp32 accumulate), scale (and soft cap), causal mask,
//   online softmax in fp32 (exp2 domain), P rounded to bf16 straight from the S accumulators,
//   O += P V (mma.sync), rescaled by exp2(m_old - m_new) whenever a row's max grows,
// over the K/V tiles [first key visible to the tile's first row, last visible key of its last row]:
// from key 0 without a sliding window, else from where the first row's window starts (a row's
// window also masks keys before it, as the causal limit masks those after it). K/V tiles are
// gathered through the block table with 16-byte cp.async (zero-filled past the visible range, so
// P * V never meets garbage) into double-buffered, padded shared memory; fragments come out with
// ldmatrix (.trans for V). The normalised output goes through shared memory (the warp's own Q
// rows) and out with 16-byte stores, only for rows of the sequence: rows of other sequences are
// never touched.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/paged_attention.h"

namespace kvserve::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockM = kWarps * 16;  // query rows (token x group head) per thread block
constexpr int kSmemPad = 8;  // elements per shared row: 16 bytes, so ldmatrix rows hit distinct banks

// Per head_dim: keys per K/V tile and the shared memory the kernel needs
// (Q tile + two buffers each of K and V, every row padded).
template <int kHeadDim>
struct PrefillTile {
  static constexpr int kBlockN = kHeadDim >= 256 ? 32 : 64;
  static constexpr int kLd = kHeadDim + kSmemPad;
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBlockM + 4 * kBlockN) * kLd * sizeof(bf16);
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zero-fills the destination when !pred (nothing is read).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool pred) {
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Four 8x8 bf16 matrices; lane l gives the address of row (l % 8) of matrix (l / 8) and receives,
// in r[i], row l / 4, columns 2 * (l % 4) and +1 of matrix i (transposed with .trans).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}

// c (16x8 fp32) += a (16x16 bf16, row-major fragment) * b (16x8 bf16, column fragment).
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as bf16x2, `lo` in the low half (the lower column index, as mma fragments expect).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Grid: x = query-row tiles (heaviest, i.e. latest, tiles first), y = KV head, z = sequence.
template <int kHeadDim>
__global__ void __launch_bounds__(kThreads)
    paged_prefill_kernel(const PagedAttentionArgs args, const int group, const float scale_log2,
                         const float softcap_log2) {
  using Tile = PrefillTile<kHeadDim>;
  constexpr int kBlockN = Tile::kBlockN;
  constexpr int kLd = Tile::kLd;
  constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  constexpr int kDimTiles = kHeadDim / 8;
  constexpr int kKeyTiles = kBlockN / 8;

  const int seq = blockIdx.z;
  const int kv_head = blockIdx.y;
  const int m0 = (gridDim.x - 1 - blockIdx.x) * kBlockM;
  const int q_start = args.query_start_loc[seq];
  const int q_len = args.query_start_loc[seq + 1] - q_start;
  const int rows = q_len * group;
  if (m0 >= rows) return;  // uniform over the block: this sequence is shorter than the grid

  // The block table is only valid up to max_blocks_per_seq entries (as in decode): a corrupt context
  // length must not turn into a read past the table; the host checked that the product fits.
  const int context = min(max(args.context_lens[seq], 0), args.max_blocks_per_seq * args.layout.block_size);
  const int pos0 = context - q_len;  // position of query token 0
  const int last_row = min(m0 + kBlockM, rows) - 1;
  // A row at position P sees keys [P - window + 1, P]. Keys [kv_begin, kv_end) are visible to some
  // row of this tile; keys [window_full_begin, full_end) to all of them.
  const int window = args.sliding_window > 0 ? args.sliding_window : INT_MAX;
  const int kv_end = pos0 + last_row / group + 1;
  const int full_end = pos0 + m0 / group + 1;
  const int kv_begin = max(0, full_end - window);
  const int window_full_begin = kv_end - window;  // may be negative: no key is before every window
  const int first_kv_tile = kv_begin / kBlockN;
  const int num_kv_tiles = kv_end > 0 ? (kv_end + kBlockN - 1) / kBlockN : 0;

  const int32_t* table = args.block_tables + static_cast<int64_t>(seq) * args.max_blocks_per_seq;
  const KvCacheLayout layout = args.layout;
  const int block_size = layout.block_size;

  extern __shared__ __align__(16) unsigned char smem[];
  bf16* s_q = reinterpret_cast<bf16*>(smem);  // [kBlockM][kLd]
  bf16* s_k = s_q + kBlockM * kLd;            // [2][kBlockN][kLd]
  bf16* s_v = s_k + 2 * kBlockN * kLd;        // [2][kBlockN][kLd]

  const int tid = threadIdx.x;

  // Q tile; rows past the sequence are zeros (computed on, never written).
  for (int c = tid; c < kBlockM * kChunks; c += kThreads) {
    const int r = c / kChunks;
    const int col = (c % kChunks) * 8;
    const int m = m0 + r;
    const bool valid = m < rows;
    const bf16* src = args.q;
    if (valid) {
      const int tok = m / group;
      const int head = kv_head * group + (m - tok * group);
      src = args.q + static_cast<int64_t>(q_start + tok) * args.q_row_stride + head * kHeadDim + col;
    }
    cp_async_16(s_q + r * kLd + col, src, valid);
  }

  // K/V tile loads: thread `tid` always moves the same 16-byte column chunk of kPasses rows, so the
  // block ids of those rows can be fetched one tile ahead into registers and the table lookups'
  // latency hides behind a tile of math. Keys outside [kv_begin, kv_end) are zero-filled and their
  // table entries (possibly -1, or past the table row) are never read: a row no query of the tile
  // sees is never touched, so P * V never meets what it holds.
  constexpr int kRowsPerPass = kThreads / kChunks;
  constexpr int kPasses = kBlockN / kRowsPerPass;
  static_assert(kThreads % kChunks == 0 && kBlockN % kRowsPerPass == 0, "K/V load tiling");
  const int ld_row = tid / kChunks;
  const int ld_col = (tid % kChunks) * 8;
  int blk[kPasses];
  auto fetch_blocks = [&](int tile) {
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int p = tile * kBlockN + ld_row + i * kRowsPerPass;
      blk[i] = p >= kv_begin && p < kv_end ? table[p / block_size] : -1;
    }
  };
  auto issue_kv = [&](int tile, int buf) {
    bf16* dk = s_k + buf * kBlockN * kLd;
    bf16* dv = s_v + buf * kBlockN * kLd;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int r = ld_row + i * kRowsPerPass;
      const int p = tile * kBlockN + r;
      const bool valid = p >= kv_begin && p < kv_end;
      const int64_t off = valid ? layout.row(blk[i], kv_head, p % block_size) + ld_col : 0;
      cp_async_16(dk + r * kLd + ld_col, args.k_cache + off, valid);
      cp_async_16(dv + r * kLd + ld_col, args.v_cache + off, valid);
    }
  };
  if (num_kv_tiles > first_kv_tile) {
    fetch_blocks(first_kv_tile);
    issue_kv(first_kv_tile, first_kv_tile & 1);
  }
  cp_async_commit();  // group: Q and the first K/V tile
  if (num_kv_tiles > first_kv_tile + 1) fetch_blocks(first_kv_tile + 1);

  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4;  // accumulator rows g and g + 8 of the warp's 16
  const int t = lane % 4;  // accumulator columns 2t, 2t + 1 of each 8-wide tile
  const int wm0 = warp * 16;

  // First and last key positions each of this thread's two rows may see (`lower` negative when the
  // row's window reaches back past key 0).
  int limit[2], lower[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    limit[i] = pos0 + (m0 + wm0 + g + 8 * i) / group;
    lower[i] = limit[i] - (window - 1);
  }

  // ldmatrix addressing: lane gives row (lane % 8) of matrix (lane / 8).
  const int lm_mat = lane / 8;
  const int lm_row = lane % 8;
  // Q as the A operand: matrices (rows 0-7, dims 0-7), (rows 8-15, dims 0-7), (rows 0-7, dims 8-15),
  // (rows 8-15, dims 8-15) are a0..a3 of m16n8k16.
  const bf16* q_frag = s_q + (wm0 + lm_row + (lm_mat & 1) * 8) * kLd + (lm_mat >> 1) * 8;
  // K as the B operand of Q K^T (B[k][n] = K[key n][dim k]): matrices (keys 0-7, dims 0-7),
  // (keys 0-7, dims 8-15) are b0, b1 of key tile 0; (keys 8-15, ...) the same for key tile 1.
  const int k_frag = (lm_row + (lm_mat >> 1) * 8) * kLd + (lm_mat & 1) * 8;
  // V as the B operand of P V (B[k][n] = V[key k][dim n], transposed load): matrices
  // (keys 0-7, dims 0-7), (keys 8-15, dims 0-7) are b0, b1 of dim tile 0; (..., dims 8-15) of dim tile 1.
  const int v_frag = (lm_row + (lm_mat & 1) * 8) * kLd + (lm_mat >> 1) * 8;

  // Q fragments stay in registers where they fit beside O (head_dim <= 128); at 256 they are
  // reloaded from shared memory for every K/V tile.
  constexpr bool kQInRegs = kHeadDim <= 128;
  uint32_t q_regs[kQInRegs ? kHeadDim / 16 : 1][4];

  float o[kDimTiles][4];
#pragma unroll
  for (int d = 0; d < kDimTiles; ++d)
    o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};  // in the exp2 domain (scores * scale * log2 e)
  float row_sum[2] = {0.0f, 0.0f};            // this thread's columns only; reduced over the quad at the end

  for (int j = first_kv_tile; j < num_kv_tiles; ++j) {
    // Tile j (and Q) landed for every thread, and every warp is done with tile j - 1, whose buffer
    // now takes tile j + 1 while tile j is computed on.
    cp_async_wait<0>();
    __syncthreads();
    if (j + 1 < num_kv_tiles) {
      issue_kv(j + 1, (j + 1) & 1);
      cp_async_commit();
      if (j + 2 < num_kv_tiles) fetch_blocks(j + 2);
    }
    const bf16* sk = s_k + (j & 1) * kBlockN * kLd;
    const bf16* sv = s_v + (j & 1) * kBlockN * kLd;
    if constexpr (kQInRegs) {
      if (j == first_kv_tile) {
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk)
          ldmatrix_x4(q_regs[kk], q_frag + kk * 16);
      }
    }

    float s[kKeyTiles][4];
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n)
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t a[4];
      if constexpr (kQInRegs) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
          a[i] = q_regs[kk][i];
      } else {
        ldmatrix_x4(a, q_frag + kk * 16);
      }
#pragma unroll
      for (int nn = 0; nn < kBlockN / 16; ++nn) {
        uint32_t b[4];
        ldmatrix_x4(b, sk + k_frag + nn * 16 * kLd + kk * 16);
        mma_16816(s[2 * nn], a, b[0], b[1]);
        mma_16816(s[2 * nn + 1], a, b[2], b[3]);
      }
    }

    // Scale into the exp2 domain; mask keys past a row's position or before its window (only in
    // tiles crossing the diagonal or a window's start).
    const int n0 = j * kBlockN;
    const bool need_mask = n0 + kBlockN > full_end || n0 < window_full_begin;
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * scale_log2;
        // Gemma 2's soft cap, in the log2 domain (cap * tanh(x / cap) commutes with the factor).
        if (softcap_log2 > 0.0f) x = softcap_log2 * tanhf(x / softcap_log2);
        const int key = n0 + n * 8 + 2 * t + (e & 1);
        if (need_mask && (key > limit[e >> 1] || key < lower[e >> 1])) x = -INFINITY;
        s[n][e] = x;
      }
    }

    // Online softmax: new row max over the quad (the four lanes sharing a row), rescale the past.
    float mx[2] = {row_max[0], row_max[1]};
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
      mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
    }
    float base[2];
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      // A row with nothing visible yet keeps max -inf; subtract 0 then, so exp2 gives 0, not NaN.
      base[i] = mx[i] == -INFINITY ? 0.0f : mx[i];
      alpha[i] = exp2f(row_max[i] - base[i]);
      row_max[i] = mx[i];
      row_sum[i] *= alpha[i];
    }
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
      s[n][0] = exp2f(s[n][0] - base[0]);
      s[n][1] = exp2f(s[n][1] - base[0]);
      s[n][2] = exp2f(s[n][2] - base[1]);
      s[n][3] = exp2f(s[n][3] - base[1]);
      row_sum[0] += s[n][0] + s[n][1];
      row_sum[1] += s[n][2] + s[n][3];
    }
#pragma unroll
    for (int d = 0; d < kDimTiles; ++d) {
      o[d][0] *= alpha[0];
      o[d][1] *= alpha[0];
      o[d][2] *= alpha[1];
      o[d][3] *= alpha[1];
    }

    // O += P V. The S accumulators of key tiles 2kk and 2kk+1 are exactly the A fragment of P for
    // keys [16kk, 16kk + 16): a0 = (row g, keys 2t..), a1 = (row g+8, ...), a2/a3 the same 8 keys on.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dd = 0; dd < kHeadDim / 16; ++dd) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, sv + v_frag + kk * 16 * kLd + dd * 16);
        mma_16816(o[2 * dd], a, b[0], b[1]);
        mma_16816(o[2 * dd + 1], a, b[2], b[3]);
      }
    }
  }

  // With no K/V tile at all the Q group may still be in flight: drain it before reusing s_q.
  cp_async_wait<0>();
  __syncthreads();

  float inv[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float sum = row_sum[i];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    inv[i] = sum > 0.0f ? 1.0f / sum : 0.0f;
  }
  // Stage the warp's 16 output rows in its own Q rows (read by no other warp), then 16-byte stores.
  bf16* s_o = s_q + wm0 * kLd;
#pragma unroll
  for (int d = 0; d < kDimTiles; ++d) {
    *reinterpret_cast<uint32_t*>(s_o + g * kLd + d * 8 + 2 * t) =
        pack_bf16x2(o[d][0] * inv[0], o[d][1] * inv[0]);
    *reinterpret_cast<uint32_t*>(s_o + (g + 8) * kLd + d * 8 + 2 * t) =
        pack_bf16x2(o[d][2] * inv[1], o[d][3] * inv[1]);
  }
  __syncwarp();
  for (int c = lane; c < 16 * kChunks; c += 32) {
    const int r = c / kChunks;
    const int col = (c % kChunks) * 8;
    const int m = m0 + wm0 + r;
    if (m < rows) {
      const int tok = m / group;
      const int head = kv_head * group + (m - tok * group);
      bf16* dst =
          args.out + static_cast<int64_t>(q_start + tok) * args.out_row_stride + head * kHeadDim + col;
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(s_o + r * kLd + col);
    }
  }
}

template <int kHeadDim>
void launch_prefill(const PagedAttentionArgs& args, int group, cudaStream_t stream) {
  using Tile = PrefillTile<kHeadDim>;
  const int64_t rows = static_cast<int64_t>(args.max_query_len) * group;
  const dim3 grid(static_cast<unsigned>((rows + kBlockM - 1) / kBlockM),
                  static_cast<unsigned>(args.layout.num_kv_heads), static_cast<unsigned>(args.num_seqs));
  const float scale_log2 = args.scale * 1.4426950408889634f;  // exp(x) = exp2(x * log2 e)
  const float softcap_log2 = args.softcap * 1.4426950408889634f;
  // Above 48 KiB of dynamic shared memory needs an opt-in, per function and device: made once per
  // device rather than on every layer of every step.
  static std::mutex opted_in_mutex;
  static std::vector<int> opted_in_devices;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  {
    std::lock_guard lock(opted_in_mutex);
    if (std::find(opted_in_devices.begin(), opted_in_devices.end(), device) == opted_in_devices.end()) {
      CUDA_CHECK(cudaFuncSetAttribute(paged_prefill_kernel<kHeadDim>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(Tile::kSmemBytes)));
      opted_in_devices.push_back(device);
    }
  }
  paged_prefill_kernel<kHeadDim>
      <<<grid, kThreads, Tile::kSmemBytes, stream>>>(args, group, scale_log2, softcap_log2);
  CUDA_CHECK_LAUNCH();
}

[[noreturn]] void invalid(const std::string& what) {
  throw std::invalid_argument("paged_prefill_attention: " + what);
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Everything the kernel relies on that the host can see; device arrays are taken on trust.
void validate(const PagedAttentionArgs& a) {
  const KvCacheLayout& l = a.layout;
  const int d = l.head_dim;
  if (d != 16 && d != 32 && d != 64 && d != 128 && d != 256)
    invalid("layout.head_dim " + std::to_string(d) + " is not one of 16, 32, 64, 128, 256");
  if (l.block_size <= 0 || l.block_size % 8 != 0)
    invalid("layout.block_size " + std::to_string(l.block_size) + " is not a positive multiple of 8");
  if (l.num_blocks <= 0) invalid("layout.num_blocks must be positive");
  if (l.num_kv_heads <= 0 || l.num_kv_heads > 65535)
    invalid("layout.num_kv_heads " + std::to_string(l.num_kv_heads) + " is not in [1, 65535]");
  if (a.num_heads <= 0 || a.num_heads % l.num_kv_heads != 0)
    invalid("num_heads " + std::to_string(a.num_heads) +
            " is not a positive multiple of layout.num_kv_heads " + std::to_string(l.num_kv_heads));
  if (a.num_seqs > 65535) invalid("num_seqs " + std::to_string(a.num_seqs) + " exceeds 65535");
  if (a.max_query_len <= 0) invalid("max_query_len must be at least 1");
  if (static_cast<int64_t>(a.max_query_len) * (a.num_heads / l.num_kv_heads) > (int64_t{1} << 30))
    invalid("max_query_len " + std::to_string(a.max_query_len) + " is too large");
  if (a.max_blocks_per_seq <= 0) invalid("max_blocks_per_seq must be positive");
  if (static_cast<int64_t>(a.max_blocks_per_seq) * l.block_size > INT_MAX / 2)
    invalid("max_blocks_per_seq * block_size must be at most " + std::to_string(INT_MAX / 2) + " tokens");
  const int64_t width = static_cast<int64_t>(a.num_heads) * d;
  if (a.q_row_stride < width || a.q_row_stride % 8 != 0)
    invalid("q_row_stride " + std::to_string(a.q_row_stride) + " must be a multiple of 8 and at least " +
            std::to_string(width));
  if (a.out_row_stride < width || a.out_row_stride % 8 != 0)
    invalid("out_row_stride " + std::to_string(a.out_row_stride) + " must be a multiple of 8 and at least " +
            std::to_string(width));
  if (a.q == nullptr || !aligned16(a.q)) invalid("q must be a non-null, 16-byte aligned pointer");
  if (a.out == nullptr || !aligned16(a.out)) invalid("out must be a non-null, 16-byte aligned pointer");
  if (a.k_cache == nullptr || !aligned16(a.k_cache))
    invalid("k_cache must be a non-null, 16-byte aligned pointer");
  if (a.v_cache == nullptr || !aligned16(a.v_cache))
    invalid("v_cache must be a non-null, 16-byte aligned pointer");
  if (a.query_start_loc == nullptr) invalid("query_start_loc is null");
  if (a.context_lens == nullptr) invalid("context_lens is null");
  if (a.block_tables == nullptr) invalid("block_tables is null");
  if (!std::isfinite(a.scale) || a.scale <= 0.0f) invalid("scale must be finite and positive");
  if (a.sliding_window < 0) invalid("sliding_window must be >= 0 (0: none)");
  if (!(a.softcap >= 0.0f) || !std::isfinite(a.softcap)) invalid("softcap must be finite and >= 0 (0: none)");
}

}  // namespace

void paged_prefill_attention(const PagedAttentionArgs& args, cudaStream_t stream) {
  if (args.num_seqs < 0) invalid("num_seqs " + std::to_string(args.num_seqs) + " is negative");
  if (args.num_seqs == 0) return;
  validate(args);
  const int group = args.num_heads / args.layout.num_kv_heads;
  switch (args.layout.head_dim) {
    case 16:
      return launch_prefill<16>(args, group, stream);
    case 32:
      return launch_prefill<32>(args, group, stream);
    case 64:
      return launch_prefill<64>(args, group, stream);
    case 128:
      return launch_prefill<128>(args, group, stream);
    default:
      return launch_prefill<256>(args, group, stream);
  }
}

}  // namespace kvserve::cuda
