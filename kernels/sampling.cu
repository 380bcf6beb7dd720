// GPU sampling: one thread block per row, mirroring the host Sampler (engine/sampler.cc) step for
// step. How the order (probability desc, id asc) is used without sorting:
//
// Every candidate gets a 96-bit key: the bits of its weight w = exp((x - max) / T) (a positive
// double, so its bits order like its value) above (vocab - 1 - id) (so the lower id ranks first on
// a tie). Keys are distinct, and "the element at rank k" or "the first element where the cumulative
// weight reaches m" is found by a radix select: 8-bit digits from the top, a 256-bin histogram of
// counts and weights per pass over the elements whose key matches the digits chosen so far, and a
// walk over the bins; it stops as soon as the chosen bin holds one element (usually after 2 or 3
// passes). top-k is a select by rank, top-p and the draw are selects by weight, and min-p is a count.
//
// Weights are summed as integers: q = round(w * 2^s) with s chosen so that the whole row sums below
// 2^62. Integer sums are exact, so the boundaries are decided exactly and every run gives the same
// token whatever the order of the atomics; the host's double sums differ from them by rounding only
// (relative ~1e-11 at vocab 128k), which moves a boundary only when u falls that close to it.
// A weight below 2^-s of the most likely token's (~3e-14 at vocab 128k) counts as zero mass.
//
// Logprobs are log_softmax of the raw logits with the max and the sum of exp in double over fp32
// exponentials (relative error ~1e-7). The top logprobs are a select by rank on the raw logits.
//
// logit_bias takes no workspace of its own: a row with num_bias > 0 marks its listed ids with the
// kBiased state bit and parks each one's bias (a float, exact as a double) in that id's slot of the
// weight array, which holds nothing else until the weights pass of step 4. The bias is read only
// in step 2 and in step 4, where the thread that owns id i reads it in the same iteration that then
// overwrites weight[i] with the weight; nothing after that reads it.
//
// The structured-output token mask takes no workspace and no pass of its own either: wherever the
// kernel computes an id's penalized value it reads the id's bit straight from the row's mask and,
// when the bit is clear, adds kSuppressed to the id's state bits, so a masked-out id is a suppressed
// one everywhere (greedy, top-k / top-p / min-p, the draw). A warp's 32 ids in one iteration are 32
// consecutive ids from a multiple of 32 (kThreads is one), which share one mask word: one
// broadcast load per warp. Marking the mask in the state array instead would cost every masked row
// a vocab-wide write pass (and the reads of state in rows that otherwise need none).
#include <cfloat>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/sample_uniform.h"
#include "kernels/cuda_check.h"
#include "kernels/sampling.h"

namespace kvserve::cuda {
namespace {

using u64 = unsigned long long;
using u32 = unsigned int;

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr size_t kAlign = 256;

size_t align_up(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}
// Per row: int32 penalty state [vocab], then double weights [vocab] (which first hold the biases).
size_t state_bytes(int vocab) {
  return align_up(sizeof(int32_t) * static_cast<size_t>(vocab));
}
size_t row_bytes(int vocab) {
  return state_bytes(vocab) + align_up(sizeof(double) * static_cast<size_t>(vocab));
}

// ---- block reductions (1024 threads; deterministic: fixed order of combination) ----

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxF {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }  // ignores NaN
};

template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* scratch) {
  for (int o = 16; o > 0; o >>= 1)
    v = op(v, __shfl_xor_sync(kFull, v, o));
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kWarps; ++w)
    r = op(r, scratch[w]);
  __syncthreads();  // scratch is free again
  return r;
}

// The largest penalized logit, the lowest id on a tie; id -1 = no element.
struct ArgMax {
  double v;
  int id;
};
__device__ ArgMax better(ArgMax a, ArgMax b) {
  if (a.id < 0) return b;
  if (b.id < 0) return a;
  return (b.v > a.v || (b.v == a.v && b.id < a.id)) ? b : a;
}
__device__ ArgMax block_argmax(ArgMax a, ArgMax* scratch) {
  for (int o = 16; o > 0; o >>= 1)
    a = better(a, ArgMax{__shfl_xor_sync(kFull, a.v, o), __shfl_xor_sync(kFull, a.id, o)});
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = a;
  __syncthreads();
  ArgMax r = scratch[0];
  for (int w = 1; w < kWarps; ++w)
    r = better(r, scratch[w]);
  __syncthreads();
  return r;
}

// Per-warp partials of the block reductions.
union ReduceScratch {
  float f[kWarps];
  long long ll[kWarps];
  double d[kWarps];
  u64 u[kWarps];
  ArgMax a[kWarps];
};

// ---- the host's arithmetic, step for step ----

// State bits of an id: suppressed (or masked out, which value() adds and never stores); in prompt
// or output (repetition penalty on); listed in logit_bias; and above them the count of the token
// in the output (presence / frequency penalty on), < 2^28 as no sequence comes near that length.
constexpr int32_t kSuppressed = 1;
constexpr int32_t kRepeated = 2;
constexpr int32_t kBiased = 4;
constexpr int kCountShift = 3;

// The host's work_[i]: NaN and suppressed -> -inf, + bias (-inf stays -inf), then the penalties.
// `bias` is read only with kBiased set.
__device__ double penalized(float raw, int32_t state, double bias, double rep, double presence,
                            double frequency) {
  double v = isnan(raw) ? -INFINITY : static_cast<double>(raw);
  if (state & kSuppressed) v = -INFINITY;
  if (state & kBiased) v = __dadd_rn(v, bias);
  if (state & kRepeated) v = v > 0.0 ? v / rep : v * rep;
  const int32_t count = state >> kCountShift;
  // Explicit roundings: the host computes presence + frequency * count without a fused multiply-add.
  if (count > 0) v = __dsub_rn(v, __dadd_rn(presence, __dmul_rn(frequency, static_cast<double>(count))));
  return v;
}

struct LogSoftmax {
  float max;
  long long infinite;
  double lse;
  __device__ float operator()(float x) const {
    if (max == INFINITY)
      return x == INFINITY ? static_cast<float>(-log(static_cast<double>(infinite))) : -INFINITY;
    if (max == -INFINITY) return -INFINITY;
    return static_cast<float>(static_cast<double>(x) - lse);
  }
};

__device__ u64 quantize(double w, double scale) {
  return __double2ull_rn(w * scale);
}

// ---- radix select over 96-bit keys (hi 64 bits, lo 32 bits) ----

struct SelectShared {
  u32 cnt[256];
  u64 mass[256];
  int bin_id[256];  // some element of the bin: the one when the bin holds one
  u64 hi_prefix, hi_mask;
  u32 lo_prefix, lo_mask;
  u64 count_before, mass_before;  // of the elements ranked before the current bin
  int id;
  int done;
};

struct Found {
  int id;  // -1 only if an invariant broke
  u64 count_before;
  u64 mass_before;
};

// Picks the bin where the running count (or mass) of the elements ranked before it, plus its own,
// first reaches `target`. Run by warp 0: lane l owns bins 255 - 8l ... 248 - 8l (high keys first).
__device__ void walk_bins(SelectShared& s, bool by_mass, u64 target, bool in_hi, int shift, bool last) {
  const int lane = threadIdx.x & 31;
  u64 c = 0, m = 0;
  for (int j = 0; j < 8; ++j) {
    c += s.cnt[255 - 8 * lane - j];
    m += s.mass[255 - 8 * lane - j];
  }
  u64 ic = c, im = m;  // inclusive scan over the lanes
  for (int o = 1; o < 32; o <<= 1) {
    const u64 tc = __shfl_up_sync(kFull, ic, o);
    const u64 tm = __shfl_up_sync(kFull, im, o);
    if (lane >= o) {
      ic += tc;
      im += tm;
    }
  }
  const u64 base_c = s.count_before, base_m = s.mass_before;
  const bool reach = by_mass ? base_m + im >= target : base_c + ic >= target;
  const unsigned ballot = __ballot_sync(kFull, reach);
  // The *_sync collectives order no memory: this fence makes every lane's reads of s above happen
  // before the one lane below writes to it.
  __syncwarp();
  if (ballot == 0) {
    if (lane == 0) {
      s.done = 1;
      s.id = -1;
    }
    return;
  }
  if (lane != __ffs(ballot) - 1) return;
  u64 cb = base_c + ic - c, mb = base_m + im - m;
  for (int j = 0; j < 8; ++j) {
    const int b = 255 - 8 * lane - j;
    const u64 bc = s.cnt[b], bm = s.mass[b];
    if (by_mass ? mb + bm >= target : cb + bc >= target) {
      if (in_hi) {
        s.hi_prefix |= static_cast<u64>(b) << shift;
        s.hi_mask |= 0xFFull << shift;
      } else {
        s.lo_prefix |= static_cast<u32>(b) << shift;
        s.lo_mask |= 0xFFu << shift;
      }
      s.count_before = cb;
      s.mass_before = mb;
      if (bc == 1 || last) {
        s.done = 1;
        s.id = s.bin_id[b];
      }
      return;
    }
    cb += bc;
    mb += bm;
  }
}

// by_mass = false: the element of rank `target` (1-based). by_mass = true: the first element at
// which the cumulative mass reaches `target` (>= 1). KeyAt: bool(int i, u64& hi, u32& lo, u64& q),
// false for an element that is not a candidate. Call with all threads; all get the same answer.
template <typename KeyAt>
__device__ Found radix_select(const KeyAt& key_at, int vocab, int hi_bytes, int lo_bytes, bool by_mass,
                              u64 target, SelectShared& s) {
  if (threadIdx.x == 0) {
    s.hi_prefix = s.hi_mask = 0;
    s.lo_prefix = s.lo_mask = 0;
    s.count_before = s.mass_before = 0;
    s.id = -1;
    s.done = 0;
  }
  if (target == 0) target = 1;  // rank 1 / the first element with mass: never an empty bin
  const int digits = hi_bytes + lo_bytes;
  for (int d = 0; d < digits; ++d) {
    for (int b = threadIdx.x; b < 256; b += kThreads) {
      s.cnt[b] = 0;
      s.mass[b] = 0;
      s.bin_id[b] = -1;
    }
    __syncthreads();
    const bool in_hi = d < hi_bytes;
    const int shift = 8 * (in_hi ? hi_bytes - 1 - d : lo_bytes - 1 - (d - hi_bytes));
    const u64 hi_prefix = s.hi_prefix, hi_mask = s.hi_mask;
    const u32 lo_prefix = s.lo_prefix, lo_mask = s.lo_mask;
    // Consecutive elements of one thread that fall in the same bin are added up before the atomics:
    // in the first pass most weights share a bin, and this keeps them from contending on it.
    int cur = -1, cur_id = -1;
    u32 cc = 0;
    u64 cm = 0;
    const auto flush = [&] {
      if (cur < 0) return;
      atomicAdd(&s.cnt[cur], cc);
      if (cm != 0) atomicAdd(&s.mass[cur], cm);
      // Any element of the bin will do (it is read only when the bin holds one), but a plain store
      // from many threads is a shared-memory race to racecheck: the largest id wins instead.
      atomicMax(&s.bin_id[cur], cur_id);
    };
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      u64 hi, q;
      u32 lo;
      if (!key_at(i, hi, lo, q)) continue;
      if ((hi & hi_mask) != hi_prefix || (lo & lo_mask) != lo_prefix) continue;
      const int digit = static_cast<int>(((in_hi ? hi : static_cast<u64>(lo)) >> shift) & 0xFF);
      if (digit != cur) {
        flush();
        cur = digit;
        cc = 0;
        cm = 0;
      }
      ++cc;
      cm += q;
      cur_id = i;
    }
    flush();
    __syncthreads();
    if (threadIdx.x < 32) walk_bins(s, by_mass, target, in_hi, shift, d == digits - 1);
    __syncthreads();
    if (s.done) break;
  }
  const Found f{s.id, s.count_before, s.mass_before};
  __syncthreads();  // s is reused by the next select
  return f;
}

// Raw logits ranked for the top logprobs: NaN as -inf, -0 as +0, ties to the lower id.
__device__ u32 float_key(float r) {
  float v = isnan(r) ? -INFINITY : r;
  if (v == 0.0f) v = 0.0f;
  const u32 b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
struct RawKey {
  const float* x;
  int vocab;
  __device__ bool operator()(int i, u64& hi, u32& lo, u64& q) const {
    hi = float_key(x[i]);
    lo = static_cast<u32>(vocab - 1 - i);
    q = 0;
    return true;
  }
};
struct WeightKey {
  const double* w;
  int vocab;
  double scale;
  __device__ bool operator()(int i, u64& hi, u32& lo, u64& q) const {
    const double wi = w[i];
    if (!(wi > 0.0)) return false;
    hi = static_cast<u64>(__double_as_longlong(wi));
    lo = static_cast<u32>(vocab - 1 - i);
    q = quantize(wi, scale);
    return true;
  }
};

// ceil(p * m) for p in (0, 1), exactly.
__device__ u64 ceil_fraction(float p, u64 m) {
  int e = 0;
  const float fr = frexpf(p, &e);  // p = fr * 2^e, fr in [0.5, 1), e <= 0
  const u64 mant = static_cast<u64>(ldexpf(fr, 24));
  const unsigned __int128 prod = static_cast<unsigned __int128>(mant) * m;
  const int sh = 24 - e;
  if (sh >= 127) return prod != 0 ? 1 : 0;
  const unsigned __int128 one = 1;
  const u64 q = static_cast<u64>(prod >> sh);
  return q + ((prod & ((one << sh) - 1)) != 0 ? 1 : 0);
}

__global__ void __launch_bounds__(kThreads, 1)
    sample_rows_kernel(const float* logits, int vocab, const SamplingRow* rows, const int32_t* history,
                       const int32_t* suppressed, const int32_t* bias_ids, const float* bias_values,
                       const uint32_t* allowed_words, char* workspace, size_t row_stride, size_t state_stride,
                       int id_bytes, int mass_shift, SampledRow* out) {
  __shared__ SelectShared sel;
  __shared__ ReduceScratch scratch;
  __shared__ u64 top_hi[kMaxGpuTopLogprobs];
  __shared__ u32 top_lo[kMaxGpuTopLogprobs];
  __shared__ int top_n;
  const int tid = threadIdx.x;
  const SamplingRow row = rows[blockIdx.x];
  SampledRow& o = out[blockIdx.x];
  const int k_top = min(max(row.num_top_logprobs, 0), min(kMaxGpuTopLogprobs, max(vocab, 0)));
  if (tid < kMaxGpuTopLogprobs) {
    o.top_ids[tid] = -1;
    o.top_logprobs[tid] = 0.0f;
  }
  if (vocab <= 0) {
    if (tid == 0) {
      o.token = -1;
      o.logprob = 0.0f;
    }
    return;
  }
  const float* x = logits + static_cast<size_t>(row.logits_row) * static_cast<size_t>(vocab);
  int32_t* state = reinterpret_cast<int32_t*>(workspace + blockIdx.x * row_stride);
  double* weight = reinterpret_cast<double*>(workspace + blockIdx.x * row_stride + state_stride);

  // 1. Suppression, logit_bias and penalty marks, only for a row that has any (the token mask is
  // read where it is needed instead, see value below).
  const bool rep_on = row.repetition_penalty != 1.0f;
  const bool pf_on = row.presence_penalty != 0.0f || row.frequency_penalty != 0.0f;
  const int num_history = row.num_prompt_tokens + row.num_output_tokens;
  const bool use_state = row.num_suppressed > 0 || row.num_bias > 0 || (rep_on && num_history > 0) ||
                         (pf_on && row.num_output_tokens > 0);
  if (use_state) {
    for (int i = tid; i < vocab; i += kThreads)
      state[i] = 0;
    __syncthreads();
    for (int j = tid; j < row.num_suppressed; j += kThreads) {
      const int32_t id = suppressed[row.suppressed_offset + j];
      if (id >= 0 && id < vocab) atomicOr(&state[id], kSuppressed);
    }
    // Ids are unique, so each weight[id] has one writer; it is read after the barrier below.
    for (int j = tid; j < row.num_bias; j += kThreads) {
      const int32_t id = bias_ids[row.bias_offset + j];
      if (id >= 0 && id < vocab) {
        atomicOr(&state[id], kBiased);
        weight[id] = static_cast<double>(bias_values[row.bias_offset + j]);
      }
    }
    if (rep_on) {
      for (int j = tid; j < num_history; j += kThreads) {
        const int32_t id = history[row.history_offset + j];
        if (id >= 0 && id < vocab) atomicOr(&state[id], kRepeated);
      }
    }
    if (pf_on) {
      for (int j = tid; j < row.num_output_tokens; j += kThreads) {
        const int32_t id = history[row.history_offset + row.num_prompt_tokens + j];
        if (id >= 0 && id < vocab) atomicAdd(&state[id], 1 << kCountShift);
      }
    }
    __syncthreads();
  }
  const double rep = row.repetition_penalty;
  const double presence = row.presence_penalty, frequency = row.frequency_penalty;
  // The token mask, if the row has one: ids past its last word are not allowed.
  const bool masked = row.allowed_offset >= 0;
  const uint32_t* allowed = masked ? allowed_words + row.allowed_offset : nullptr;
  const int num_allowed_words = row.num_allowed_words;
  // The host's work_[i]. The bias of a biased id is in weight[i] until step 4 overwrites it.
  const auto value = [&](int i) {
    int32_t s = use_state ? state[i] : 0;
    if (masked) {
      const int w = i >> 5;
      if (w >= num_allowed_words || ((allowed[w] >> (i & 31)) & 1u) == 0) s |= kSuppressed;
    }
    return penalized(x[i], s, (s & kBiased) ? weight[i] : 0.0, rep, presence, frequency);
  };

  // 2. One pass: max and +inf count of the raw logits, argmax of the penalized ones.
  float raw_max = -INFINITY;
  long long infinite = 0;
  ArgMax best{-INFINITY, -1};
  for (int i = tid; i < vocab; i += kThreads) {
    const float r = x[i];
    raw_max = fmaxf(raw_max, r);
    infinite += (r == INFINITY);
    const double v = value(i);
    if (best.id < 0 || v > best.v) best = ArgMax{v, i};  // ids rise: the first maximum stays
  }
  raw_max = block_reduce(raw_max, MaxF{}, scratch.f);
  infinite = block_reduce(infinite, Sum{}, scratch.ll);
  best = block_argmax(best, scratch.a);
  LogSoftmax log_softmax{raw_max, infinite, 0.0};
  if (raw_max != INFINITY && raw_max != -INFINITY) {
    double sum = 0.0;
    for (int i = tid; i < vocab; i += kThreads) {
      const float r = x[i];
      if (!isnan(r)) sum += static_cast<double>(expf(r - raw_max));
    }
    sum = block_reduce(sum, Sum{}, scratch.d);
    log_softmax.lse = static_cast<double>(raw_max) + log(sum);
  }

  // 3. Top logprobs: the k-th best raw logit by rank, then everything ranked at or above it.
  if (k_top > 0) {
    const RawKey key{x, vocab};
    const Found f = radix_select(key, vocab, 4, id_bytes, false, static_cast<u64>(k_top), sel);
    if (tid == 0) top_n = 0;
    __syncthreads();
    if (f.id >= 0) {
      const u64 bhi = float_key(x[f.id]);
      const u32 blo = static_cast<u32>(vocab - 1 - f.id);
      for (int i = tid; i < vocab; i += kThreads) {
        const u64 hi = float_key(x[i]);
        const u32 lo = static_cast<u32>(vocab - 1 - i);
        if (hi > bhi || (hi == bhi && lo >= blo)) {
          const int slot = atomicAdd(&top_n, 1);
          if (slot < kMaxGpuTopLogprobs) {
            top_hi[slot] = hi;
            top_lo[slot] = lo;
          }
        }
      }
    }
    __syncthreads();
    if (tid == 0) {  // at most 20: insertion sort, best first
      const int n = min(top_n, kMaxGpuTopLogprobs);
      for (int a = 1; a < n; ++a) {
        const u64 h = top_hi[a];
        const u32 l = top_lo[a];
        int b = a - 1;
        for (; b >= 0 && (top_hi[b] < h || (top_hi[b] == h && top_lo[b] < l)); --b) {
          top_hi[b + 1] = top_hi[b];
          top_lo[b + 1] = top_lo[b];
        }
        top_hi[b + 1] = h;
        top_lo[b + 1] = l;
      }
      top_n = n;
    }
    __syncthreads();
    if (tid < min(top_n, k_top)) {
      const int id = vocab - 1 - static_cast<int>(top_lo[tid]);
      o.top_ids[tid] = id;
      o.top_logprobs[tid] = log_softmax(x[id]);
    }
  }

  // 4. Greedy (and the fallback when nothing has any probability), else the draw.
  int token = best.id;
  const double xmax = best.v;
  if (row.temperature != 0.0f && xmax != -INFINITY) {
    const double t = row.temperature;
    const double scale = ldexp(1.0, mass_shift);
    const double min_p = row.min_p;
    u64 n = 0, total = 0, n_min_p = 0, mass_min_p = 0;
    for (int i = tid; i < vocab; i += kThreads) {
      const double v = value(i);  // reads the bias in weight[i] (this thread's) before it is replaced
      const double w = xmax == INFINITY ? (v == INFINITY ? 1.0 : 0.0) : exp((v - xmax) / t);
      weight[i] = w;
      if (w > 0.0) {
        const u64 q = quantize(w, scale);
        ++n;
        total += q;
        if (w >= min_p) {
          ++n_min_p;
          mass_min_p += q;
        }
      }
    }
    n = block_reduce(n, Sum{}, scratch.u);
    total = block_reduce(total, Sum{}, scratch.u);
    n_min_p = block_reduce(n_min_p, Sum{}, scratch.u);
    mass_min_p = block_reduce(mass_min_p, Sum{}, scratch.u);
    // The kept candidates are always the best `len` in the order, weighing `mass`.
    const WeightKey key{weight, vocab, scale};
    u64 len = n, mass = total;
    if (row.top_k > 0 && static_cast<u64>(row.top_k) < n) {
      const Found f = radix_select(key, vocab, 8, id_bytes, false, static_cast<u64>(row.top_k), sel);
      if (f.id >= 0) {
        len = static_cast<u64>(row.top_k);
        mass = f.mass_before + quantize(weight[f.id], scale);
      }
    }
    if (row.top_p < 1.0f) {
      const Found f = radix_select(key, vocab, 8, id_bytes, true, ceil_fraction(row.top_p, mass), sel);
      if (f.id >= 0 && f.count_before + 1 < len) {
        len = f.count_before + 1;
        mass = f.mass_before + quantize(weight[f.id], scale);
      }
    }
    // min_p <= 1 = the best weight, so these are the best n_min_p, a prefix of the order.
    if (n_min_p < len) {
      len = n_min_p;
      mass = mass_min_p;
    }
    // The first candidate at which the cumulative mass exceeds u * mass: u = bits / 2^53 exactly.
    const u64 bits = static_cast<u64>(kvserve::sample_uniform(row.seed, row.draw_index) * 0x1.0p53);
    const u64 target = static_cast<u64>((static_cast<unsigned __int128>(bits) * mass) >> 53);
    const Found f = radix_select(key, vocab, 8, id_bytes, true, target + 1, sel);
    if (f.id >= 0 && f.id < vocab) token = f.id;
  }
  if (row.forced_token >= 0 && row.forced_token < vocab) token = row.forced_token;
  if (tid == 0) {
    o.token = token;
    o.logprob = log_softmax(x[token]);
  }
}

}  // namespace

size_t sampling_workspace_bytes(int num_rows, int vocab) {
  if (num_rows <= 0 || vocab <= 0) return 0;
  return static_cast<size_t>(num_rows) * row_bytes(vocab);
}

void sample_rows(const float* logits, int vocab, const SamplingRow* rows, int num_rows,
                 const int32_t* history, const int32_t* suppressed, const int32_t* bias_ids,
                 const float* bias_values, const uint32_t* allowed_words, void* workspace,
                 size_t workspace_bytes, SampledRow* out, cudaStream_t stream) {
  if (num_rows <= 0) return;
  const size_t need = sampling_workspace_bytes(num_rows, vocab);
  if (workspace_bytes < need) {
    throw std::invalid_argument("sample_rows: workspace of " + std::to_string(workspace_bytes) +
                                " bytes, needs " + std::to_string(need));
  }
  // Bytes of (vocab - 1) for the id digits, and the mass scale: vocab * 2^shift <= 2^62.
  int id_bytes = 1, log2_vocab = 0;
  while (vocab > 0 && (static_cast<int64_t>(vocab) - 1) >> (8 * id_bytes) != 0)
    ++id_bytes;
  while ((int64_t{1} << log2_vocab) < vocab)
    ++log2_vocab;
  const size_t stride = vocab > 0 ? row_bytes(vocab) : 0;
  const size_t state_stride = vocab > 0 ? state_bytes(vocab) : 0;
  sample_rows_kernel<<<num_rows, kThreads, 0, stream>>>(
      logits, vocab, rows, history, suppressed, bias_ids, bias_values, allowed_words,
      static_cast<char*>(workspace), stride, state_stride, id_bytes, 62 - log2_vocab, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kvserve::cuda
