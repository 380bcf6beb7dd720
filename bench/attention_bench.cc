// attention_bench: decode paged-attention bandwidth against the GPU's own copy bandwidth, with
// contiguous and shuffled block tables, plus one prefill row (TFLOP/s at 4k tokens).
//
// Decode achieved bandwidth = (K/V bytes read + q bytes + output bytes) / kernel time, as a fraction
// of a large device-to-device cudaMemcpy measured in the same run (counted as read + write bytes).
// Times are the median of --reps runs after warm-up, each with a cold L2 (a scratch buffer twice the
// L2 size is written between runs), taken with CUDA events around the launch (main + reduction).
//
// Usage: attention_bench [--json PATH] [--reps N]. No GPU: prints a note and exits 0.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/cuda_device.h"
#include "kernels/paged_attention.h"

namespace {

using kvserve::cuda::bf16;
using kvserve::cuda::DeviceBuffer;

constexpr int kHeadDim = 128;
constexpr int kNumHeads = 32;
constexpr int kNumKvHeads = 8;
constexpr int kBlockSize = 16;

// Median kernel time in ms of `fn`, each run after an L2 flush.
double median_ms(const std::function<void()>& fn, DeviceBuffer<uint8_t>& flush, int reps) {
  for (int i = 0; i < 3; ++i)
    fn();
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms(reps);
  for (int r = 0; r < reps; ++r) {
    if (flush.size() > 0) CUDA_CHECK(cudaMemsetAsync(flush.get(), r & 0xFF, flush.bytes()));
    CUDA_CHECK(cudaEventRecord(start));
    fn();
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&ms[r], start, stop));
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

// Device-to-device copy bandwidth in bytes/s (read + write), with the largest buffer up to 1 GiB
// that fits.
double memcpy_bandwidth(int reps, DeviceBuffer<uint8_t>& flush) {
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  size_t bytes = size_t{1} << 30;
  while (bytes > (size_t{64} << 20) && 2 * bytes > free_bytes / 2)
    bytes /= 2;
  DeviceBuffer<uint8_t> src(bytes), dst(bytes);
  CUDA_CHECK(cudaMemset(src.get(), 1, bytes));
  const double ms =
      median_ms([&] { CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice)); },
                flush, reps);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3);
}

struct DecodeRow {
  int batch = 0;
  int context = 0;
  int splits = 0;
  bool skipped = false;
  double ms[2] = {0, 0};        // contiguous, shuffled
  double gbps[2] = {0, 0};      // achieved GB/s
  double fraction[2] = {0, 0};  // of the memcpy bandwidth
};

DecodeRow bench_decode(int batch, int context, int num_sms, double copy_bw, int reps,
                       DeviceBuffer<uint8_t>& flush) {
  DecodeRow row;
  row.batch = batch;
  row.context = context;
  const int blocks_per_seq = (context + kBlockSize - 1) / kBlockSize;
  const int64_t num_blocks = static_cast<int64_t>(batch) * blocks_per_seq;
  const kvserve::cuda::KvCacheLayout layout{static_cast<int>(num_blocks), kBlockSize, kNumKvHeads, kHeadDim};
  const size_t pool_bytes = static_cast<size_t>(layout.layer_elements()) * sizeof(bf16);
  row.splits = kvserve::cuda::choose_decode_splits(batch, kNumHeads, kNumKvHeads, context, num_sms);
  const size_t ws_bytes = kvserve::cuda::decode_workspace_bytes(batch, kNumHeads, kHeadDim, row.splits);
  const size_t io_bytes = static_cast<size_t>(batch) * kNumHeads * kHeadDim * sizeof(bf16);

  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (2 * pool_bytes + ws_bytes + 2 * io_bytes + (size_t{256} << 20) > free_bytes) {
    row.skipped = true;
    return row;
  }
  DeviceBuffer<bf16> k(layout.layer_elements()), v(layout.layer_elements());
  // bf16 0x3C3C ~ 0.0115: finite scores; the values do not matter for the timing.
  CUDA_CHECK(cudaMemset(k.get(), 0x3C, k.bytes()));
  CUDA_CHECK(cudaMemset(v.get(), 0x3C, v.bytes()));
  DeviceBuffer<bf16> q(static_cast<size_t>(batch) * kNumHeads * kHeadDim);
  DeviceBuffer<bf16> out(q.size());
  CUDA_CHECK(cudaMemset(q.get(), 0x3C, q.bytes()));
  DeviceBuffer<uint8_t> ws(ws_bytes);
  const std::vector<int32_t> ctx_host(batch, context);
  DeviceBuffer<int32_t> ctx(batch);
  CUDA_CHECK(cudaMemcpy(ctx.get(), ctx_host.data(), ctx.bytes(), cudaMemcpyHostToDevice));
  DeviceBuffer<int32_t> tables(static_cast<size_t>(num_blocks));

  kvserve::cuda::PagedAttentionArgs a;
  a.q = q.get();
  a.q_row_stride = kNumHeads * kHeadDim;
  a.k_cache = k.get();
  a.v_cache = v.get();
  a.layout = layout;
  a.out = out.get();
  a.out_row_stride = kNumHeads * kHeadDim;
  a.context_lens = ctx.get();
  a.block_tables = tables.get();
  a.max_blocks_per_seq = blocks_per_seq;
  a.num_seqs = batch;
  a.num_heads = kNumHeads;
  a.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));

  const double bytes = 2.0 * static_cast<double>(batch) * context * kNumKvHeads * kHeadDim * sizeof(bf16) +
                       2.0 * static_cast<double>(io_bytes);
  std::vector<int32_t> ids(static_cast<size_t>(num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  for (int order = 0; order < 2; ++order) {
    if (order == 1) {
      std::mt19937_64 rng(42);
      std::shuffle(ids.begin(), ids.end(), rng);
    }
    CUDA_CHECK(cudaMemcpy(tables.get(), ids.data(), tables.bytes(), cudaMemcpyHostToDevice));
    row.ms[order] =
        median_ms([&] { kvserve::cuda::paged_decode_attention(a, row.splits, ws.get(), ws_bytes, nullptr); },
                  flush, reps);
    row.gbps[order] = bytes / (row.ms[order] * 1e-3) / 1e9;
    row.fraction[order] = row.gbps[order] * 1e9 / copy_bw;
  }
  return row;
}

// Causal prefill of one 4096-token sequence; TFLOP/s, or a negative value (with the reason in
// `note`) when the kernel is not available.
double bench_prefill(int reps, DeviceBuffer<uint8_t>& flush, std::string& note) {
  constexpr int kTokens = 4096;
  try {
    const int blocks = kTokens / kBlockSize;
    const kvserve::cuda::KvCacheLayout layout{blocks, kBlockSize, kNumKvHeads, kHeadDim};
    DeviceBuffer<bf16> k(layout.layer_elements()), v(layout.layer_elements());
    CUDA_CHECK(cudaMemset(k.get(), 0x3C, k.bytes()));
    CUDA_CHECK(cudaMemset(v.get(), 0x3C, v.bytes()));
    DeviceBuffer<bf16> q(static_cast<size_t>(kTokens) * kNumHeads * kHeadDim), out(q.size());
    CUDA_CHECK(cudaMemset(q.get(), 0x3C, q.bytes()));
    std::vector<int32_t> table(blocks);
    std::iota(table.begin(), table.end(), 0);
    const std::vector<int32_t> qsl = {0, kTokens}, ctx = {kTokens};
    DeviceBuffer<int32_t> d_table(table.size()), d_qsl(2), d_ctx(1);
    CUDA_CHECK(cudaMemcpy(d_table.get(), table.data(), d_table.bytes(), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_qsl.get(), qsl.data(), d_qsl.bytes(), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_ctx.get(), ctx.data(), d_ctx.bytes(), cudaMemcpyHostToDevice));
    kvserve::cuda::PagedAttentionArgs a;
    a.q = q.get();
    a.q_row_stride = kNumHeads * kHeadDim;
    a.k_cache = k.get();
    a.v_cache = v.get();
    a.layout = layout;
    a.out = out.get();
    a.out_row_stride = kNumHeads * kHeadDim;
    a.query_start_loc = d_qsl.get();
    a.context_lens = d_ctx.get();
    a.block_tables = d_table.get();
    a.max_blocks_per_seq = blocks;
    a.num_seqs = 1;
    a.num_heads = kNumHeads;
    a.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
    a.max_query_len = kTokens;
    const double ms = median_ms([&] { kvserve::cuda::paged_prefill_attention(a, nullptr); }, flush, reps);
    const double pairs = static_cast<double>(kTokens) * (kTokens + 1) / 2.0;
    const double flops = 4.0 * kNumHeads * kHeadDim * pairs;  // QK^T and PV, 2 flops per multiply-add
    return flops / (ms * 1e-3) / 1e12;
  } catch (const std::exception& e) {
    note = e.what();
    cudaGetLastError();  // a failed launch must not poison what follows
    return -1.0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--reps N]\n", argv[0]);
      return 2;
    }
  }
  if (kvserve::cuda::device_count() == 0) {
    std::printf("attention_bench: no CUDA device, nothing measured\n");
    return 0;
  }
  try {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const std::string device = kvserve::cuda::device_description(0);
    DeviceBuffer<uint8_t> flush(static_cast<size_t>(std::max(prop.l2CacheSize, 1)) * 2);
    const double copy_bw = memcpy_bandwidth(reps, flush);
    std::printf("device: %s, %d SMs\n", device.c_str(), prop.multiProcessorCount);
    std::printf("device-to-device cudaMemcpy: %.0f GB/s (read + write)\n", copy_bw / 1e9);
    std::printf(
        "decode: head_dim %d, %d query heads, %d KV heads, block %d; bandwidth = (K/V + q + out) / time\n",
        kHeadDim, kNumHeads, kNumKvHeads, kBlockSize);
    std::printf("%6s %8s %6s | %10s %8s %6s | %10s %8s %6s | %9s\n", "batch", "context", "splits",
                "contig us", "GB/s", "of cpy", "shuffle us", "GB/s", "of cpy", "shuf/cont");

    std::vector<DecodeRow> rows;
    for (int context : {512, 4096, 16384})
      for (int batch : {1, 16, 64, 256}) {
        const DecodeRow r = bench_decode(batch, context, prop.multiProcessorCount, copy_bw, reps, flush);
        rows.push_back(r);
        if (r.skipped) {
          std::printf("%6d %8d %6s | skipped: does not fit in device memory\n", batch, context, "-");
          continue;
        }
        std::printf("%6d %8d %6d | %10.1f %8.0f %5.0f%% | %10.1f %8.0f %5.0f%% | %9.3f\n", r.batch, r.context,
                    r.splits, r.ms[0] * 1e3, r.gbps[0], 100 * r.fraction[0], r.ms[1] * 1e3, r.gbps[1],
                    100 * r.fraction[1], r.ms[1] / r.ms[0]);
      }

    std::string prefill_note;
    const double prefill_tflops = bench_prefill(reps, flush, prefill_note);
    if (prefill_tflops >= 0)
      std::printf("prefill: 1 sequence x 4096 tokens, causal: %.1f TFLOP/s\n", prefill_tflops);
    else
      std::printf("prefill: 1 sequence x 4096 tokens, causal: n/a (%s)\n", prefill_note.c_str());

    if (!json_path.empty()) {
      FILE* f = std::fopen(json_path.c_str(), "w");
      if (!f) {
        std::fprintf(stderr, "attention_bench: cannot write %s\n", json_path.c_str());
        return 1;
      }
      std::string dev = device;
      std::replace(dev.begin(), dev.end(), '"', '\'');
      std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"memcpy_gbps\": %.1f,\n", dev.c_str(), copy_bw / 1e9);
      std::fprintf(
          f, "  \"decode\": {\"head_dim\": %d, \"num_heads\": %d, \"num_kv_heads\": %d, \"block_size\": %d, ",
          kHeadDim, kNumHeads, kNumKvHeads, kBlockSize);
      std::fprintf(f, "\"rows\": [\n");
      for (size_t i = 0; i < rows.size(); ++i) {
        const DecodeRow& r = rows[i];
        std::fprintf(f, "    {\"batch\": %d, \"context\": %d, \"skipped\": %s", r.batch, r.context,
                     r.skipped ? "true" : "false");
        if (!r.skipped)
          std::fprintf(f,
                       ", \"splits\": %d, \"contiguous_us\": %.2f, \"contiguous_gbps\": %.1f, "
                       "\"contiguous_fraction\": %.4f, \"shuffled_us\": %.2f, \"shuffled_gbps\": %.1f, "
                       "\"shuffled_fraction\": %.4f, \"shuffled_over_contiguous\": %.4f",
                       r.splits, r.ms[0] * 1e3, r.gbps[0], r.fraction[0], r.ms[1] * 1e3, r.gbps[1],
                       r.fraction[1], r.ms[1] / r.ms[0]);
        std::fprintf(f, "}%s\n", i + 1 < rows.size() ? "," : "");
      }
      std::fprintf(f, "  ]},\n  \"prefill_4k_causal_tflops\": ");
      if (prefill_tflops >= 0)
        std::fprintf(f, "%.2f\n}\n", prefill_tflops);
      else
        std::fprintf(f, "null\n}\n");
      std::fclose(f);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
