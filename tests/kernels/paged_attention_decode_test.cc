// Decode paged attention against the float64 CPU reference, over block sizes, head dims, GQA
// ratios, ragged and long contexts, shuffled block tables and forced split counts; plus CPU-only
// checks of the split heuristic, the workspace size and argument validation (these run in CI).
//
// Tolerance: the inputs are exactly representable in bf16 (the reference reads the same values),
// the kernel accumulates in fp32 (score, running max/sum, P.V, split merge: relative error ~1e-6
// even over 8k tokens) and exp2 is the hardware approximation (~2 ulp). The output is rounded to
// bf16 once, which alone costs up to 2^-8 = 3.9e-3 relative. So 1e-2 relative leaves a 2.5x margin
// over the worst rounding, while any indexing, masking or merge bug (wrong row, lost split,
// wrong weight) produces errors of order 1. The relative error uses a floor of 5% of the expected
// RMS: outputs are weighted means of N(0,1) values and can sit near zero, where a pure relative
// measure would amplify the fp32 noise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/paged_attention.h"
#include "tests/kernels/attention_reference.h"
#include "tests/kernels/gpu_test_util.h"

namespace kvserve::cuda {
namespace {

using testing::download;
using testing::max_relative_error;
using testing::poisoned;
using testing::random_bf16_values;
using testing::to_bf16;
using testing::to_float;
using testing::upload;

constexpr double kTolerance = 1e-2;
constexpr int kH100Sms = 132;

struct DecodeCase {
  int block_size = 16;
  int head_dim = 128;
  int num_kv_heads = 2;
  int group = 4;  // query heads per KV head
  std::vector<int> contexts;
  bool shuffle = true;  // block tables drawn at random from a pool bigger than needed
  int q_pad = 0;        // extra elements per q row (as when q is read out of a fused QKV output)
  float q_stddev = 1.0f;
  int window = 0;        // sliding window; 0: none
  float softcap = 0.0f;  // Gemma 2's score cap; 0: none
  uint64_t seed = 1;
};

std::string describe(const DecodeCase& c, int num_splits) {
  std::ostringstream os;
  os << "seed=" << c.seed << " block_size=" << c.block_size << " head_dim=" << c.head_dim
     << " num_kv_heads=" << c.num_kv_heads << " group=" << c.group << " shuffle=" << c.shuffle
     << " q_pad=" << c.q_pad << " q_stddev=" << c.q_stddev << " window=" << c.window
     << " softcap=" << c.softcap << " num_splits=" << num_splits << " contexts={";
  for (size_t i = 0; i < c.contexts.size(); ++i)
    os << (i ? "," : "") << c.contexts[i];
  os << "}";
  return os.str();
}

// Host inputs, their device copies and the reference output of one decode batch.
struct DecodeProblem {
  DecodeCase c;
  KvCacheLayout layout;
  int num_seqs = 0;
  int num_heads = 0;
  int width = 0;  // num_heads * head_dim
  int max_blocks = 0;
  int64_t q_stride = 0;
  int64_t out_stride = 0;
  std::vector<float> q, k, v;
  std::vector<int32_t> tables;
  std::vector<double> expected;  // [num_seqs][width]
  DeviceBuffer<__nv_bfloat16> dq, dk, dv;
  DeviceBuffer<int32_t> dctx, dtables;
};

DecodeProblem make_problem(const DecodeCase& c) {
  DecodeProblem p;
  p.c = c;
  p.num_seqs = static_cast<int>(c.contexts.size());
  p.num_heads = c.num_kv_heads * c.group;
  p.width = p.num_heads * c.head_dim;
  p.q_stride = p.width + c.q_pad;
  p.out_stride = p.width + 8;  // a poisoned gap after each row must stay untouched

  std::vector<int> needed(p.num_seqs);
  int total = 0;
  for (int s = 0; s < p.num_seqs; ++s) {
    needed[s] = (c.contexts[s] + c.block_size - 1) / c.block_size;
    total += needed[s];
    p.max_blocks = std::max(p.max_blocks, needed[s]);
  }
  p.max_blocks += 1;  // every row ends with at least one -1 entry, which must never be read
  p.layout = KvCacheLayout{total + total / 2 + 3, c.block_size, c.num_kv_heads, c.head_dim};

  std::vector<int32_t> ids(p.layout.num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937_64 rng(c.seed);
  if (c.shuffle) std::shuffle(ids.begin(), ids.end(), rng);
  p.tables.assign(static_cast<size_t>(p.num_seqs) * p.max_blocks, -1);
  int next = 0;
  for (int s = 0; s < p.num_seqs; ++s)
    for (int b = 0; b < needed[s]; ++b)
      p.tables[static_cast<size_t>(s) * p.max_blocks + b] = ids[next++];

  p.k = random_bf16_values(p.layout.layer_elements(), c.seed * 4 + 1);
  p.v = random_bf16_values(p.layout.layer_elements(), c.seed * 4 + 2);
  p.q = random_bf16_values(static_cast<size_t>(p.num_seqs) * p.q_stride, c.seed * 4 + 3, c.q_stddev);

  // One reference call per sequence (query_start_loc {s, s + 1}: token s is sequence s); a
  // context-0 row is zeros by contract.
  p.expected.assign(static_cast<size_t>(p.num_seqs) * p.width, 0.0);
  for (int s = 0; s < p.num_seqs; ++s) {
    if (c.contexts[s] == 0) continue;
    testing::AttentionReferenceInput in;
    in.q = &p.q;
    in.q_row_stride = p.q_stride;
    in.k_pool = &p.k;
    in.v_pool = &p.v;
    in.layout = p.layout;
    in.query_start_loc = {s, s + 1};
    in.context_lens = {c.contexts[s]};
    in.block_tables.assign(p.tables.begin() + static_cast<int64_t>(s) * p.max_blocks,
                           p.tables.begin() + static_cast<int64_t>(s + 1) * p.max_blocks);
    in.max_blocks_per_seq = p.max_blocks;
    in.num_heads = p.num_heads;
    in.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    in.sliding_window = c.window;
    in.softcap = c.softcap;
    const std::vector<double> r = testing::reference_paged_attention(in);
    std::copy(r.end() - p.width, r.end(), p.expected.begin() + static_cast<int64_t>(s) * p.width);
  }
  // Under a window, the K/V rows before it hold NaN: a kernel that so much as weighs one of them by
  // zero returns NaN.
  for (int s = 0; s < p.num_seqs && c.window > 0; ++s) {
    for (int pos = 0; pos < c.contexts[s] - c.window; ++pos) {
      const int32_t block = p.tables[static_cast<size_t>(s) * p.max_blocks + pos / c.block_size];
      for (int h = 0; h < c.num_kv_heads; ++h) {
        const int64_t row = p.layout.row(block, h, pos % c.block_size);
        std::fill_n(p.k.begin() + row, c.head_dim, std::nanf(""));
        std::fill_n(p.v.begin() + row, c.head_dim, std::nanf(""));
      }
    }
  }

  p.dq = upload(to_bf16(p.q));
  p.dk = upload(to_bf16(p.k));
  p.dv = upload(to_bf16(p.v));
  p.dctx = upload(std::vector<int32_t>(c.contexts.begin(), c.contexts.end()));
  p.dtables = upload(p.tables);
  return p;
}

PagedAttentionArgs args_for(const DecodeProblem& p, __nv_bfloat16* out) {
  PagedAttentionArgs a;
  a.q = p.dq.get();
  a.q_row_stride = p.q_stride;
  a.k_cache = p.dk.get();
  a.v_cache = p.dv.get();
  a.layout = p.layout;
  a.out = out;
  a.out_row_stride = p.out_stride;
  a.context_lens = p.dctx.get();
  a.block_tables = p.dtables.get();
  a.max_blocks_per_seq = p.max_blocks;
  a.num_seqs = p.num_seqs;
  a.num_heads = p.num_heads;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.layout.head_dim)));
  a.sliding_window = p.c.window;
  a.softcap = p.c.softcap;
  return a;
}

// Runs the kernel into a poisoned output (and a poisoned workspace) and checks every row against
// the reference, the context-0 rows for exact zeros and the gaps between rows for untouched poison.
void run_and_check(const DecodeProblem& p, int num_splits) {
  SCOPED_TRACE(describe(p.c, num_splits));
  DeviceBuffer<__nv_bfloat16> out = poisoned<__nv_bfloat16>(static_cast<size_t>(p.num_seqs) * p.out_stride);
  const size_t ws_bytes = decode_workspace_bytes(p.num_seqs, p.num_heads, p.layout.head_dim, num_splits);
  DeviceBuffer<uint8_t> ws = poisoned<uint8_t>(ws_bytes);
  paged_decode_attention(args_for(p, out.get()), num_splits, ws.get(), ws_bytes, nullptr);
  const std::vector<__nv_bfloat16> raw = download(out);
  const std::vector<float> got_all = to_float(raw);

  std::vector<float> got(static_cast<size_t>(p.num_seqs) * p.width);
  int untouched_gap = 0;
  for (int s = 0; s < p.num_seqs; ++s) {
    const size_t row = static_cast<size_t>(s) * p.out_stride;
    std::copy(got_all.begin() + row, got_all.begin() + row + p.width,
              got.begin() + static_cast<size_t>(s) * p.width);
    for (int64_t i = p.width; i < p.out_stride; ++i) {
      uint16_t bits;
      std::memcpy(&bits, &raw[row + i], sizeof(bits));
      untouched_gap += bits == 0xFFFF ? 1 : 0;
    }
    if (p.c.contexts[s] == 0) {
      for (int i = 0; i < p.width; ++i)
        ASSERT_EQ(got[static_cast<size_t>(s) * p.width + i], 0.0f)
            << "context-0 row " << s << " element " << i;
    }
  }
  EXPECT_EQ(untouched_gap, p.num_seqs * (p.out_stride - p.width)) << "the kernel wrote outside its rows";

  double sq = 0.0;
  for (double x : p.expected)
    sq += x * x;
  const double rms = std::sqrt(sq / std::max<size_t>(p.expected.size(), 1));
  const double err = max_relative_error(got, p.expected, std::max(0.05 * rms, 1e-6));
  EXPECT_LE(err, kTolerance) << "(NaN means an element was left unwritten)";
}

void check_splits(const DecodeCase& c, std::vector<int> splits) {
  const DecodeProblem p = make_problem(c);
  int max_ctx = *std::max_element(c.contexts.begin(), c.contexts.end());
  if (c.window > 0) max_ctx = std::min(max_ctx, c.window);  // what the backend passes
  splits.push_back(choose_decode_splits(p.num_seqs, p.num_heads, c.num_kv_heads, max_ctx, kH100Sms));
  for (int n : splits)
    run_and_check(p, n);
}

const std::vector<int> kRaggedContexts = {1, 7, 16, 17, 255, 256, 257, 1000, 513};

TEST(PagedDecodeAttention, MatchesReferenceOverBlockSizesHeadDimsAndGroups) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (int block_size : {8, 16, 32})
    for (int head_dim : {64, 128})
      for (int group : {1, 4, 8}) {
        DecodeCase c;
        c.block_size = block_size;
        c.head_dim = head_dim;
        c.group = group;
        c.num_kv_heads = group == 8 ? 1 : 2;
        c.contexts = kRaggedContexts;
        c.seed = seed++;
        check_splits(c, {1, 3});
      }
}

TEST(PagedDecodeAttention, LongContextsAcrossSplitCounts) {
  KVSERVE_SKIP_WITHOUT_GPU();
  DecodeCase c;
  c.contexts = {4097, 8200, 1, 300, 2048};
  c.seed = 7;
  check_splits(c, {1, 2, 5, 32, 64});
}

TEST(PagedDecodeAttention, SmallAndLargeHeadDims) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 200;
  // Group 8 is the largest head chunk: at head_dim 256 the kernel's largest register and shared
  // memory footprint.
  for (int head_dim : {16, 32, 256})
    for (int block_size : {8, 16})
      for (int group : {2, 8}) {
        DecodeCase c;
        c.head_dim = head_dim;
        c.block_size = block_size;
        c.group = group;
        c.num_kv_heads = group == 8 ? 1 : 2;
        c.contexts = {1, 33, 600, 257};
        c.seed = seed++;
        check_splits(c, {1, 4});
      }
}

TEST(PagedDecodeAttention, ContiguousAndShuffledTablesAgreeWithReference) {
  KVSERVE_SKIP_WITHOUT_GPU();
  for (bool shuffle : {false, true}) {
    DecodeCase c;
    c.shuffle = shuffle;
    c.contexts = {1000, 3000, 64};
    c.seed = 300;
    check_splits(c, {1, 6});
  }
}

TEST(PagedDecodeAttention, ContextZeroRowsAreZeros) {
  KVSERVE_SKIP_WITHOUT_GPU();
  DecodeCase c;
  c.contexts = {0, 5, 0, 700, 0};
  c.seed = 400;
  check_splits(c, {1, 4});
  DecodeCase all_padding = c;
  all_padding.contexts = {0, 0};
  check_splits(all_padding, {1, 2});
}

// Groups that are not powers of two, groups above the 8 heads one block serves (chunks), and a block
// size that is not a power of two.
TEST(PagedDecodeAttention, OddAndLargeGqaGroups) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 500;
  for (int group : {2, 3, 6, 12, 16}) {
    DecodeCase c;
    c.group = group;
    c.num_kv_heads = group > 8 ? 1 : 2;
    c.contexts = {20, 900, 1};
    c.seed = seed++;
    check_splits(c, {1, 3});
  }
  // A block size that is a multiple of 8 but not a power of two takes the division path for the
  // (logical block, offset) of a position.
  DecodeCase odd_block;
  odd_block.block_size = 24;
  odd_block.group = 3;
  odd_block.contexts = {1, 23, 24, 25, 600, 1000};
  odd_block.seed = seed++;
  check_splits(odd_block, {1, 3});
}

// A peaked softmax (scores of several units) exercises the running-max rescaling; a padded q row
// stride is how the backend reads q straight out of the fused QKV projection.
TEST(PagedDecodeAttention, PeakedScoresAndStridedQ) {
  KVSERVE_SKIP_WITHOUT_GPU();
  DecodeCase c;
  c.q_stddev = 4.0f;
  c.q_pad = 2 * 2 * 128;  // K and V of 2 KV heads follow the query heads
  c.contexts = {5000, 31, 777};
  c.seed = 600;
  check_splits(c, {1, 8});
}

// Each query sees the last `window` positions only: windows shorter than, equal to and longer than
// the contexts, down to 1 (the token itself), with the rows before the window poisoned (NaN), over
// split counts that cut the window into several partitions.
TEST(PagedDecodeAttention, SlidingWindowSeesOnlyTheLastWindowPositions) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 800;
  for (int window : {1, 7, 16, 300, 4096})
    for (int block_size : {8, 16, 32}) {
      DecodeCase c;
      c.block_size = block_size;
      c.window = window;
      c.contexts = {1, 7, 8, 17, 299, 300, 301, 1000, 5000, 8200, 0};
      c.seed = seed++;
      check_splits(c, {1, 3, 32});
    }
  DecodeCase gqa;  // every head of a group of 8 in one block
  gqa.group = 8;
  gqa.num_kv_heads = 1;
  gqa.head_dim = 64;
  gqa.window = 513;
  gqa.contexts = {512, 513, 514, 2000};
  gqa.seed = seed++;
  check_splits(gqa, {1, 4});
}

// Gemma 2's soft cap on the scores: large scores (q ~ N(0, 4^2)) so that the cap bends them, alone
// and with a sliding window, as Gemma 2's windowed layers have both.
TEST(PagedDecodeAttention, SoftCappedScores) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 900;
  for (int window : {0, 100}) {
    for (int head_dim : {128, 256}) {
      DecodeCase c;
      c.head_dim = head_dim;
      c.q_stddev = 4.0f;
      c.softcap = 5.0f;
      c.window = window;
      c.contexts = {1, 33, 600, 2049};
      c.seed = seed++;
      check_splits(c, {1, 4});
    }
  }
}

TEST(PagedDecodeAttention, ManySequences) {
  KVSERVE_SKIP_WITHOUT_GPU();
  DecodeCase c;
  std::mt19937 rng(700);
  std::uniform_int_distribution<int> len(0, 1500);
  for (int s = 0; s < 96; ++s)
    c.contexts.push_back(len(rng));
  c.num_kv_heads = 1;
  c.seed = 700;
  check_splits(c, {1, 4});
}

// ---- CPU-only (no GPU needed) ----

TEST(ChooseDecodeSplits, BoundedAtLeastOneAndMonotonic) {
  const std::vector<int> seqs = {1, 2, 3, 8, 16, 64, 256, 1024};
  const std::vector<int> kv_heads = {1, 2, 8, 32};
  const std::vector<int> groups = {1, 2, 3, 4, 8, 16};
  const std::vector<int> contexts = {0, 1, 255, 256, 257, 511, 1000, 4096, 16384, 131072, 1 << 30};
  const std::vector<int> sms = {1, 16, 132};
  for (int kv : kv_heads)
    for (int g : groups)
      for (int sm : sms)
        for (size_t ci = 0; ci < contexts.size(); ++ci)
          for (size_t si = 0; si < seqs.size(); ++si) {
            const int ctx = contexts[ci];
            const int heads = kv * g;
            const int n = choose_decode_splits(seqs[si], heads, kv, ctx, sm);
            SCOPED_TRACE(::testing::Message() << "seqs=" << seqs[si] << " heads=" << heads << " kv=" << kv
                                              << " ctx=" << ctx << " sms=" << sm);
            EXPECT_GE(n, 1);
            EXPECT_LE(n, 64);
            const int64_t useful =
                (static_cast<int64_t>(ctx) + kMinDecodePartition - 1) / kMinDecodePartition;
            EXPECT_LE(n, std::max<int64_t>(1, useful))
                << "no split may get less than kMinDecodePartition tokens";
            if (si > 0) {
              EXPECT_LE(n, choose_decode_splits(seqs[si - 1], heads, kv, ctx, sm))
                  << "more sequences, fewer splits";
            }
            if (ci > 0) {
              EXPECT_GE(n, choose_decode_splits(seqs[si], heads, kv, contexts[ci - 1], sm))
                  << "longer, not fewer";
            }
            EXPECT_LE(n, choose_decode_splits(seqs[si], heads, kv, ctx, sm * 2))
                << "more SMs, not fewer splits";
          }
}

TEST(ChooseDecodeSplits, SplitsLongSequencesOnlyWhenTheGpuWouldIdle) {
  // Llama-3-8B's attention: 32 query heads over 8 KV heads.
  EXPECT_EQ(choose_decode_splits(1, 32, 8, 256, kH100Sms), 1) << "one partition's worth of context";
  EXPECT_GT(choose_decode_splits(1, 32, 8, 16384, kH100Sms), 8) << "one long sequence must spread";
  EXPECT_EQ(choose_decode_splits(4096, 32, 8, 16384, kH100Sms), 1) << "a big batch already fills the GPU";
  EXPECT_EQ(choose_decode_splits(0, 32, 8, 16384, kH100Sms), 1);
  EXPECT_EQ(choose_decode_splits(4, 32, 8, 16384, 0), choose_decode_splits(4, 32, 8, 16384, 1))
      << "no SM count";
  EXPECT_EQ(choose_decode_splits(4, 4, 8, 16384, kH100Sms), 1) << "fewer query than KV heads: not a model";
}

TEST(ChooseDecodeSplits, CountsBlocksAsTheLaunchDoes) {
  // 16 sequences x 8 KV heads at 16k tokens. Group 4 runs one block per KV head, 4 per SM:
  // 2 waves x 132 SMs x 4 = 1056 blocks over 128 per split = 9 splits (rounded up).
  EXPECT_EQ(choose_decode_splits(16, 32, 8, 16384, kH100Sms), 9);
  // Group 8 needs ~250 registers a thread, so an SM holds only 2 of its blocks: half the target.
  EXPECT_EQ(choose_decode_splits(16, 64, 8, 16384, kH100Sms), 5);
  // Group 16 is served by two chunks of 8 heads: twice the blocks per split of group 8.
  EXPECT_EQ(choose_decode_splits(16, 128, 8, 16384, kH100Sms), 3);
}

TEST(DecodeWorkspaceBytes, ZeroWithoutSplitAndEnoughForPartials) {
  EXPECT_EQ(decode_workspace_bytes(64, 32, 128, 1), 0u);
  EXPECT_EQ(decode_workspace_bytes(0, 32, 128, 8), 0u);
  size_t prev = 0;
  for (int splits = 2; splits <= 64; splits *= 2) {
    const size_t b = decode_workspace_bytes(16, 32, 128, splits);
    // fp32 partial output plus max and sum per (sequence, head, split)
    EXPECT_GE(b, static_cast<size_t>(16) * 32 * splits * (128 + 2) * sizeof(float));
    EXPECT_GT(b, prev);
    prev = b;
  }
  EXPECT_LT(decode_workspace_bytes(16, 32, 64, 4), decode_workspace_bytes(16, 32, 128, 4));
  EXPECT_LT(decode_workspace_bytes(16, 8, 128, 4), decode_workspace_bytes(16, 32, 128, 4));
  EXPECT_LT(decode_workspace_bytes(8, 32, 128, 4), decode_workspace_bytes(16, 32, 128, 4));
  EXPECT_EQ(decode_workspace_bytes(256, 64, 256, 64) % 16, 0u);
}

// Validation happens before any CUDA call, so these run without a GPU (the pointers are fake).
PagedAttentionArgs fake_args() {
  auto* fake = reinterpret_cast<__nv_bfloat16*>(uintptr_t{4096});
  PagedAttentionArgs a;
  a.q = fake;
  a.q_row_stride = 4 * 128;
  a.k_cache = fake;
  a.v_cache = fake;
  a.layout = KvCacheLayout{64, 16, 2, 128};
  a.out = fake;
  a.out_row_stride = 4 * 128;
  a.context_lens = reinterpret_cast<const int32_t*>(uintptr_t{4096});
  a.block_tables = reinterpret_cast<const int32_t*>(uintptr_t{4096});
  a.max_blocks_per_seq = 8;
  a.num_seqs = 3;
  a.num_heads = 4;
  a.scale = 0.088f;
  return a;
}

void expect_invalid(const PagedAttentionArgs& a, int num_splits, const std::string& field, void* ws = nullptr,
                    size_t ws_bytes = 0) {
  try {
    paged_decode_attention(a, num_splits, ws, ws_bytes, nullptr);
    ADD_FAILURE() << "no exception; expected one naming " << field;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(PagedDecodeAttentionArgs, RejectsBadArgumentsNamingTheField) {
  PagedAttentionArgs a = fake_args();
  a.layout.head_dim = 48;
  expect_invalid(a, 1, "head_dim");
  a = fake_args();
  a.num_heads = 5;
  expect_invalid(a, 1, "num_heads");
  a = fake_args();
  a.layout.block_size = 12;
  expect_invalid(a, 1, "block_size");
  a = fake_args();
  a.q_row_stride = 4 * 128 + 4;
  expect_invalid(a, 1, "q_row_stride");
  a = fake_args();
  a.out_row_stride = 100;
  expect_invalid(a, 1, "out_row_stride");
  a = fake_args();
  a.q = a.q + 1;
  expect_invalid(a, 1, "q ");
  a = fake_args();
  a.block_tables = nullptr;
  expect_invalid(a, 1, "block_tables");
  a = fake_args();
  expect_invalid(a, 0, "num_splits");
  expect_invalid(a, 4, "workspace");
  void* fake_ws = reinterpret_cast<void*>(uintptr_t{4096});
  expect_invalid(a, 4, "workspace_bytes", fake_ws, decode_workspace_bytes(3, 4, 128, 4) - 1);
  // Token indices must stay in int (a partition end is rounded up past the context).
  a = fake_args();
  a.max_blocks_per_seq = (1 << 30) / 16 + 1;
  expect_invalid(a, 1, "max_blocks_per_seq * block_size");
  a = fake_args();
  a.sliding_window = -1;
  expect_invalid(a, 1, "sliding_window");
  a = fake_args();
  a.softcap = -1.0f;
  expect_invalid(a, 1, "softcap");
  // The reduction's grid has one y per query head.
  a = fake_args();
  a.layout.num_kv_heads = 1;
  a.num_heads = 65536;
  a.q_row_stride = a.out_row_stride = int64_t{65536} * 128;
  expect_invalid(a, 2, "reduction", fake_ws, decode_workspace_bytes(3, 65536, 128, 2));
}

TEST(PagedDecodeAttentionArgs, NoSequencesLaunchesNothing) {
  PagedAttentionArgs a;  // all null: nothing may be touched
  a.num_seqs = 0;
  EXPECT_NO_THROW(paged_decode_attention(a, 1, nullptr, 0, nullptr));
  EXPECT_NO_THROW(paged_decode_attention(a, 8, nullptr, 0, nullptr));
}

}  // namespace
}  // namespace kvserve::cuda
