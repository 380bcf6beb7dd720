// Prefill / chunked-prefill paged attention (kernels/paged_attention_prefill.cu) against the float64
// CPU reference, on seeded random inputs: ragged batches mixing fresh prompts with chunks after a
// cached prefix, shuffled block tables into a larger pool, GQA groups stacked in one tile, and
// poisoned outputs proving that every output element is written and no other row is touched.
//
// Tolerance. Q, K and V are bf16 values, which the kernel reads exactly; Q.K is accumulated in fp32
// on tensor cores (error ~1e-6, negligible), the softmax is fp32. Two roundings remain. P is rounded
// to bf16 before the P.V product (relative <= 2^-8 per weight): the error that leaves in an output
// element is sum_i delta_i w_i v_i, of the order of 2e-3 x the RMS of its (token, head) row however
// small the element itself is. And the output is rounded to bf16 (relative <= 2^-8 of the element).
// So each element is bounded relative to max(|want|, RMS of its row): |got - want| <= 2e-2 x that.
// A lane-by-lane CPU emulation of the whole kernel (2026-12-03: its tiles, cp.async pipeline, masks
// and mma fragments) over these tests' shapes and seeds, 5.83M elements, found at most 0.0102 (block
// 16, head_dim 64, 2 KV heads x group 8, kRaggedBatch), and 0.0111 over a wider sweep of 36M, so the
// bound leaves a margin of about 1.8x.
// Indexing and masking bugs (a wrong block, a missed or extra key on a short row, a lost rescale)
// move outputs by the order of their row's scale, 50x over the bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/paged_attention.h"
#include "tests/kernels/attention_reference.h"
#include "tests/kernels/gpu_test_util.h"

namespace kvserve::cuda::testing {
namespace {

constexpr double kRelTolerance = 2e-2;

struct PrefillCase {
  int block_size = 16;
  int head_dim = 128;
  int num_kv_heads = 2;
  int group = 1;                          // query heads per KV head
  std::vector<std::pair<int, int>> seqs;  // (query_len, context_len), context includes the query
  uint64_t seed = 1;
  int lead_rows = 0;            // rows before the first sequence's tokens (a batch offset), poisoned
  int trail_rows = 0;           // rows after the last sequence's tokens, poisoned
  int q_pad = 0;                // extra elements per q row (as in a fused QKV output)
  int out_pad = 0;              // extra elements per out row, must stay poisoned
  int extra_max_query_len = 0;  // a looser host bound than the real maximum
  float q_stddev = 1.0f;
  int window = 0;        // sliding window; 0: none
  float softcap = 0.0f;  // Gemma 2's score cap; 0: none

  std::string describe() const {
    std::ostringstream s;
    s << "block_size=" << block_size << " head_dim=" << head_dim << " num_kv_heads=" << num_kv_heads
      << " group=" << group << " seed=" << seed << " lead=" << lead_rows << " trail=" << trail_rows
      << " q_pad=" << q_pad << " out_pad=" << out_pad << " q_stddev=" << q_stddev << " window=" << window
      << " softcap=" << softcap << " seqs=";
    for (const auto& [q, c] : seqs)
      s << "(" << q << "," << c << ")";
    return s.str();
  }
};

uint16_t bits(__nv_bfloat16 x) {
  uint16_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

void run_case(const PrefillCase& c) {
  SCOPED_TRACE(c.describe());
  const int head_dim = c.head_dim;
  const int num_heads = c.num_kv_heads * c.group;
  const int width = num_heads * head_dim;
  const int num_seqs = static_cast<int>(c.seqs.size());
  std::mt19937_64 rng(c.seed);

  // Block tables: each sequence's blocks drawn from a shuffled pool twice the size needed, so the
  // tables are non-contiguous and out of order; unused entries at the end of each row are -1.
  int max_blocks = 1;
  int used_blocks = 0;
  for (const auto& [q, ctx] : c.seqs) {
    const int n = (ctx + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, n);
    used_blocks += n;
  }
  const int max_blocks_per_seq = max_blocks + 2;
  KvCacheLayout layout;
  layout.num_blocks = 2 * used_blocks + 3;
  layout.block_size = c.block_size;
  layout.num_kv_heads = c.num_kv_heads;
  layout.head_dim = head_dim;
  std::vector<int32_t> free_ids(layout.num_blocks);
  std::iota(free_ids.begin(), free_ids.end(), 0);
  std::shuffle(free_ids.begin(), free_ids.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks_per_seq, -1);
  size_t next_free = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const int n = (c.seqs[s].second + c.block_size - 1) / c.block_size;
    for (int b = 0; b < n; ++b)
      tables[static_cast<size_t>(s) * max_blocks_per_seq + b] = free_ids[next_free++];
  }

  std::vector<int32_t> query_start_loc{c.lead_rows};
  std::vector<int32_t> context_lens;
  int max_query_len = 0;
  for (const auto& [q, ctx] : c.seqs) {
    query_start_loc.push_back(query_start_loc.back() + q);
    context_lens.push_back(ctx);
    max_query_len = std::max(max_query_len, q);
  }
  const int end_row = query_start_loc.back();
  const int num_rows = end_row + c.trail_rows;

  const int64_t q_stride = width + c.q_pad;
  const int64_t out_stride = width + c.out_pad;
  const std::vector<float> q = random_bf16_values(num_rows * q_stride, c.seed * 3 + 1, c.q_stddev);
  std::vector<float> k_pool = random_bf16_values(layout.layer_elements(), c.seed * 3 + 2);
  std::vector<float> v_pool = random_bf16_values(layout.layer_elements(), c.seed * 3 + 3);
  // Under a window, the K/V rows no query of their sequence sees hold NaN: a kernel that so much as
  // weighs one of them by zero returns NaN.
  for (int s = 0; s < num_seqs && c.window > 0; ++s) {
    const auto [query_len, context] = c.seqs[s];
    for (int pos = 0; pos < context - query_len - c.window + 1; ++pos) {
      const int32_t block = tables[static_cast<size_t>(s) * max_blocks_per_seq + pos / c.block_size];
      for (int h = 0; h < c.num_kv_heads; ++h) {
        const int64_t row = layout.row(block, h, pos % c.block_size);
        std::fill_n(k_pool.begin() + row, head_dim, std::nanf(""));
        std::fill_n(v_pool.begin() + row, head_dim, std::nanf(""));
      }
    }
  }

  const DeviceBuffer<__nv_bfloat16> d_q = upload(to_bf16(q));
  const DeviceBuffer<__nv_bfloat16> d_k = upload(to_bf16(k_pool));
  const DeviceBuffer<__nv_bfloat16> d_v = upload(to_bf16(v_pool));
  const DeviceBuffer<int32_t> d_qsl = upload(query_start_loc);
  const DeviceBuffer<int32_t> d_ctx = upload(context_lens);
  const DeviceBuffer<int32_t> d_tables = upload(tables);
  DeviceBuffer<__nv_bfloat16> d_out = poisoned<__nv_bfloat16>(static_cast<size_t>(num_rows) * out_stride);

  PagedAttentionArgs args;
  args.q = d_q.get();
  args.q_row_stride = q_stride;
  args.k_cache = d_k.get();
  args.v_cache = d_v.get();
  args.layout = layout;
  args.out = d_out.get();
  args.out_row_stride = out_stride;
  args.query_start_loc = d_qsl.get();
  args.context_lens = d_ctx.get();
  args.block_tables = d_tables.get();
  args.max_blocks_per_seq = max_blocks_per_seq;
  args.num_seqs = num_seqs;
  args.num_heads = num_heads;
  args.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  args.max_query_len = max_query_len + c.extra_max_query_len;
  args.sliding_window = c.window;
  args.softcap = c.softcap;
  paged_prefill_attention(args, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<__nv_bfloat16> out = download(d_out);

  AttentionReferenceInput in;
  in.q = &q;
  in.q_row_stride = q_stride;
  in.k_pool = &k_pool;
  in.v_pool = &v_pool;
  in.layout = layout;
  in.query_start_loc = query_start_loc;
  in.context_lens = context_lens;
  in.block_tables = tables;
  in.max_blocks_per_seq = max_blocks_per_seq;
  in.num_heads = num_heads;
  in.scale = args.scale;
  in.sliding_window = c.window;
  in.softcap = c.softcap;
  const std::vector<double> want = reference_paged_attention(in);

  // The sequences' rows: every element within tolerance (poison is NaN and fails).
  std::vector<float> got_rows;
  std::vector<double> want_rows;
  for (int row = c.lead_rows; row < end_row; ++row) {
    for (int i = 0; i < width; ++i) {
      got_rows.push_back(__bfloat162float(out[static_cast<size_t>(row) * out_stride + i]));
      want_rows.push_back(want[static_cast<size_t>(row) * width + i]);
    }
  }
  // Each element against max(|want|, RMS of its (token, head) row): the rows are [token][head][dim].
  std::vector<double> row_rms(want_rows.size());
  for (size_t r0 = 0; r0 < want_rows.size(); r0 += head_dim) {
    double sq = 0.0;
    for (int i = 0; i < head_dim; ++i)
      sq += want_rows[r0 + i] * want_rows[r0 + i];
    std::fill_n(row_rms.begin() + static_cast<std::ptrdiff_t>(r0), head_dim,
                std::max(std::sqrt(sq / head_dim), 1e-6));
  }
  const auto element_error = [&](size_t i) {
    return std::abs(got_rows[i] - want_rows[i]) / std::max(std::abs(want_rows[i]), row_rms[i]);
  };
  double err = 0.0;
  for (size_t i = 0; i < want_rows.size(); ++i)
    err = worse_error(err, element_error(i));
  EXPECT_LE(err, kRelTolerance);
  if (!(err <= kRelTolerance)) {
    for (size_t i = 0; i < want_rows.size(); ++i) {
      const double e = element_error(i);
      if (!(e <= kRelTolerance)) {
        const int row = c.lead_rows + static_cast<int>(i / width);
        ADD_FAILURE() << "first bad element: row " << row << " head " << (i % width) / head_dim << " dim "
                      << i % head_dim << ": got " << got_rows[i] << ", want " << want_rows[i];
        break;
      }
    }
  }

  // Everything else stays poisoned: rows of other sequences and the padding after each row.
  int64_t touched = 0;
  for (int row = 0; row < num_rows; ++row) {
    const bool ours = row >= c.lead_rows && row < end_row;
    for (int64_t i = ours ? width : 0; i < out_stride; ++i)
      touched += bits(out[static_cast<size_t>(row) * out_stride + i]) != 0xFFFF;
  }
  EXPECT_EQ(touched, 0) << "elements outside the sequences' output rows were written";
}

// A ragged batch: single tokens, short prompts, a chunk after a cached prefix, a prompt longer
// than one query tile, and a single token over a long context, in mixed order.
const std::vector<std::pair<int, int>> kRaggedBatch = {{64, 300}, {1, 1},    {130, 130},
                                                       {5, 5},    {1, 4097}, {17, 17}};

TEST(PagedPrefillAttention, RaggedBatchAcrossBlockSizesHeadDimsAndGqa) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (int block_size : {8, 16, 32}) {
    for (int head_dim : {64, 128}) {
      for (int group : {1, 4, 8}) {
        PrefillCase c;
        c.block_size = block_size;
        c.head_dim = head_dim;
        c.num_kv_heads = 2;
        c.group = group;
        c.seqs = kRaggedBatch;
        c.seed = ++seed;
        run_case(c);
      }
    }
  }
}

TEST(PagedPrefillAttention, SmallAndLargeHeadDims) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 200;
  for (int head_dim : {16, 32, 256}) {
    for (int block_size : {8, 32}) {
      for (int group : {2, 4}) {
        PrefillCase c;
        c.block_size = block_size;
        c.head_dim = head_dim;
        c.num_kv_heads = 2;
        c.group = group;
        c.seqs = kRaggedBatch;
        c.seed = ++seed;
        run_case(c);
      }
    }
  }
}

TEST(PagedPrefillAttention, LongChunkAfterLongCachedPrefix) {
  KVSERVE_SKIP_WITHOUT_GPU();
  PrefillCase gqa;
  gqa.block_size = 16;
  gqa.head_dim = 128;
  gqa.num_kv_heads = 1;
  gqa.group = 8;
  gqa.seqs = {{300, 8200}, {1, 4097}, {9, 9}};
  gqa.seed = 301;
  run_case(gqa);

  PrefillCase mha;
  mha.block_size = 32;
  mha.head_dim = 64;
  mha.num_kv_heads = 2;
  mha.group = 1;
  mha.seqs = {{2, 2}, {300, 8200}};
  mha.seed = 302;
  run_case(mha);
}

// The caller passes a sub-range of a step's sequences: rows before and after belong to others
// (decodes) and must not be touched; q comes out of a fused QKV row, out rows are padded, and the
// host's max_query_len is only an upper bound.
TEST(PagedPrefillAttention, BatchOffsetLeavesOtherRowsUntouched) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 400;
  for (int group : {1, 4}) {
    PrefillCase c;
    c.block_size = 16;
    c.head_dim = 128;
    c.num_kv_heads = 2;
    c.group = group;
    c.seqs = {{33, 100}, {1, 17}, {70, 70}};
    c.lead_rows = 37;
    c.trail_rows = 11;
    c.q_pad = 2 * c.num_kv_heads * c.head_dim;
    c.out_pad = 8;
    c.extra_max_query_len = 50;
    c.seed = ++seed;
    run_case(c);
  }
}

// Large scores (q ~ N(0, 4^2)): softmax dominated by a few keys found in different tiles, so the
// running max rises often and the rescaling of O and the row sums is exercised.
TEST(PagedPrefillAttention, PeakyScoresRescaleCorrectly) {
  KVSERVE_SKIP_WITHOUT_GPU();
  PrefillCase c;
  c.block_size = 16;
  c.head_dim = 128;
  c.num_kv_heads = 2;
  c.group = 4;
  c.seqs = {{100, 1000}, {129, 129}, {1, 2000}};
  c.q_stddev = 4.0f;
  c.seed = 501;
  run_case(c);
}

// Each query sees the last `window` positions only: windows of 1 (the token itself), inside one key
// tile, across tile edges and longer than the contexts, for fresh prompts (the window masks inside
// the chunk) and chunks after a cached prefix (the first tiles are skipped), with every K/V row that
// no query of its sequence sees poisoned (NaN).
TEST(PagedPrefillAttention, SlidingWindowSeesOnlyTheLastWindowPositions) {
  KVSERVE_SKIP_WITHOUT_GPU();
  const std::vector<std::pair<int, int>> batch = {{64, 300}, {1, 1},      {130, 130}, {5, 5},
                                                  {1, 4097}, {200, 2000}, {17, 17}};
  uint64_t seed = 800;
  for (int window : {1, 5, 64, 100, 1000, 5000})
    for (int group : {1, 4, 8}) {
      PrefillCase c;
      c.block_size = group == 4 ? 8 : 16;
      c.head_dim = 128;
      c.num_kv_heads = 2;
      c.group = group;
      c.seqs = batch;
      c.window = window;
      c.seed = ++seed;
      run_case(c);
    }
  for (int head_dim : {64, 256}) {  // 64-key and 32-key tiles
    PrefillCase c;
    c.block_size = 32;
    c.head_dim = head_dim;
    c.num_kv_heads = 1;
    c.group = 3;
    c.seqs = batch;
    c.window = 47;
    c.seed = ++seed;
    run_case(c);
  }
}

// Gemma 2's soft cap on the scores: large scores (q ~ N(0, 4^2)) so that the cap bends them, alone
// and with a sliding window, as Gemma 2's windowed layers have both.
TEST(PagedPrefillAttention, SoftCappedScores) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 900;
  for (int window : {0, 100}) {
    for (int head_dim : {128, 256}) {
      PrefillCase c;
      c.head_dim = head_dim;
      c.num_kv_heads = 2;
      c.group = 2;
      c.seqs = {{100, 1000}, {129, 129}, {1, 2000}, {5, 5}};
      c.q_stddev = 4.0f;
      c.softcap = 5.0f;
      c.window = window;
      c.seed = ++seed;
      run_case(c);
    }
  }
}

// Shapes off the common path: a block size that is not a power of two, a GQA group that does not
// divide the query tile (a token's heads straddle two tiles), query lengths around tile edges.
TEST(PagedPrefillAttention, UnusualBlockSizeAndGroup) {
  KVSERVE_SKIP_WITHOUT_GPU();
  uint64_t seed = 600;
  for (int head_dim : {64, 128}) {
    PrefillCase c;
    c.block_size = 24;
    c.head_dim = head_dim;
    c.num_kv_heads = 2;
    c.group = 3;
    c.seqs = {{65, 65}, {63, 200}, {1, 1}, {22, 23}, {64, 64}};
    c.seed = ++seed;
    run_case(c);
  }
}

TEST(PagedPrefillAttention, SingleTokenSequences) {
  KVSERVE_SKIP_WITHOUT_GPU();
  PrefillCase c;
  c.block_size = 8;
  c.head_dim = 64;
  c.num_kv_heads = 4;
  c.group = 2;
  c.seqs = {{1, 1}, {1, 8}, {1, 9}, {1, 65}, {1, 1000}};
  c.seed = 701;
  run_case(c);
}

// ---- Host-side argument checks: no GPU needed (nothing is launched). ----

// Valid in every respect the launcher checks; the pointers are never dereferenced because every
// test below breaks one field, so the launcher throws before launching.
PagedAttentionArgs valid_looking_args() {
  PagedAttentionArgs a;
  const auto fake = [](uintptr_t addr) { return reinterpret_cast<bf16*>(addr); };
  a.q = fake(0x1000);
  a.q_row_stride = 8 * 128;
  a.k_cache = fake(0x2000);
  a.v_cache = fake(0x3000);
  a.layout.num_blocks = 16;
  a.layout.block_size = 16;
  a.layout.num_kv_heads = 2;
  a.layout.head_dim = 128;
  a.out = fake(0x4000);
  a.out_row_stride = 8 * 128;
  a.query_start_loc = reinterpret_cast<const int32_t*>(0x5000);
  a.context_lens = reinterpret_cast<const int32_t*>(0x6000);
  a.block_tables = reinterpret_cast<const int32_t*>(0x7000);
  a.max_blocks_per_seq = 4;
  a.num_seqs = 2;
  a.num_heads = 8;
  a.scale = 0.088f;
  a.max_query_len = 10;
  return a;
}

void expect_rejected(const PagedAttentionArgs& a, const std::string& field) {
  SCOPED_TRACE(field);
  try {
    paged_prefill_attention(a, nullptr);
    ADD_FAILURE() << "no exception for a bad " << field;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(PagedPrefillAttentionArgs, ZeroSequencesIsANoOp) {
  PagedAttentionArgs a;  // all null: nothing may be read
  a.num_seqs = 0;
  EXPECT_NO_THROW(paged_prefill_attention(a, nullptr));
}

TEST(PagedPrefillAttentionArgs, RejectsEachBadFieldByName) {
  struct Mutation {
    const char* field;
    void (*apply)(PagedAttentionArgs&);
  };
  const Mutation mutations[] = {
      {"num_seqs", [](PagedAttentionArgs& a) { a.num_seqs = -1; }},
      {"num_seqs", [](PagedAttentionArgs& a) { a.num_seqs = 70000; }},
      {"head_dim", [](PagedAttentionArgs& a) { a.layout.head_dim = 96; }},
      {"block_size", [](PagedAttentionArgs& a) { a.layout.block_size = 12; }},
      {"block_size", [](PagedAttentionArgs& a) { a.layout.block_size = 0; }},
      {"num_blocks", [](PagedAttentionArgs& a) { a.layout.num_blocks = 0; }},
      {"num_kv_heads", [](PagedAttentionArgs& a) { a.layout.num_kv_heads = 0; }},
      {"num_heads", [](PagedAttentionArgs& a) { a.num_heads = 7; }},
      {"max_query_len", [](PagedAttentionArgs& a) { a.max_query_len = 0; }},
      {"max_blocks_per_seq", [](PagedAttentionArgs& a) { a.max_blocks_per_seq = 0; }},
      {"max_blocks_per_seq * block_size", [](PagedAttentionArgs& a) { a.max_blocks_per_seq = INT_MAX / 16; }},
      {"q_row_stride", [](PagedAttentionArgs& a) { a.q_row_stride = 8 * 128 + 4; }},
      {"q_row_stride", [](PagedAttentionArgs& a) { a.q_row_stride = 7 * 128; }},
      {"out_row_stride", [](PagedAttentionArgs& a) { a.out_row_stride = 8 * 128 + 2; }},
      {"out_row_stride", [](PagedAttentionArgs& a) { a.out_row_stride = 128; }},
      {"q must", [](PagedAttentionArgs& a) { a.q = nullptr; }},
      {"q must", [](PagedAttentionArgs& a) { a.q = a.q + 1; }},
      {"out must", [](PagedAttentionArgs& a) { a.out = nullptr; }},
      {"k_cache", [](PagedAttentionArgs& a) { a.k_cache = nullptr; }},
      {"v_cache", [](PagedAttentionArgs& a) { a.v_cache = a.v_cache + 4; }},
      {"query_start_loc", [](PagedAttentionArgs& a) { a.query_start_loc = nullptr; }},
      {"context_lens", [](PagedAttentionArgs& a) { a.context_lens = nullptr; }},
      {"block_tables", [](PagedAttentionArgs& a) { a.block_tables = nullptr; }},
      {"scale", [](PagedAttentionArgs& a) { a.scale = 0.0f; }},
      {"scale", [](PagedAttentionArgs& a) { a.scale = NAN; }},
      {"sliding_window", [](PagedAttentionArgs& a) { a.sliding_window = -4; }},
      {"softcap", [](PagedAttentionArgs& a) { a.softcap = -1.0f; }},
      {"softcap", [](PagedAttentionArgs& a) { a.softcap = INFINITY; }},
  };
  for (const Mutation& m : mutations) {
    PagedAttentionArgs a = valid_looking_args();
    m.apply(a);
    expect_rejected(a, m.field);
  }
}

}  // namespace
}  // namespace kvserve::cuda::testing
