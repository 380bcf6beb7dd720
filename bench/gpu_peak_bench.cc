// gpu_peak_bench: what this GPU sustains, the denominators of the roofline (docs/performance.md,
// scripts/roofline.py):
//   - copy bandwidth: device-to-device cudaMemcpyAsync of a large buffer, counting the bytes read
//     plus the bytes written, median over repetitions timed with CUDA events;
//   - bf16 matrix rate: cublasGemmEx with bf16 inputs and output and fp32 accumulation, at large
//     (compute-bound) shapes and at the decode- and prefill-like shapes of a Llama-3-8B layer.
// Prints a table; --json PATH writes the figures. With no CUDA device it prints a note and exits 0.
//
//   gpu_peak_bench [--json PATH] [--reps N] [--copy-mib MIB] [--quick]
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/cuda_device.h"

namespace {

using kvserve::cuda::DeviceBuffer;

struct Options {
  std::string json_path;
  int reps = 20;
  size_t copy_mib = 2048;
  bool quick = false;
};

// y[M, N] = x[M, K] * W[N, K]^T, as a linear layer computes it (row-major, W as Hugging Face stores it).
struct Shape {
  int m, n, k;
  const char* what;
};

struct GemmResult {
  Shape shape;
  double median_ms;
  double tflops;
  double weight_gbps;  // bytes of W (and x, y) over the time: meaningful where M is small
};

struct CopyResult {
  size_t bytes;
  double median_ms, best_ms;
  double median_gbps, best_gbps;
};

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--json PATH] [--reps N] [--copy-mib MIB] [--quick]\n", argv0);
  return 2;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

class EventPair {
 public:
  EventPair() {
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  ~EventPair() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  void start(cudaStream_t s) { CUDA_CHECK(cudaEventRecord(start_, s)); }
  double stop_ms(cudaStream_t s) {
    CUDA_CHECK(cudaEventRecord(stop_, s));
    CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms;
  }

 private:
  cudaEvent_t start_{}, stop_{};
};

CopyResult measure_copy(const Options& o, cudaStream_t stream) {
  const size_t bytes = o.copy_mib << 20;
  DeviceBuffer<uint8_t> src(bytes), dst(bytes);
  CUDA_CHECK(cudaMemsetAsync(src.get(), 0x5a, bytes, stream));
  EventPair ev;
  for (int i = 0; i < 3; ++i)
    CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ms;
  for (int r = 0; r < o.reps; ++r) {
    ev.start(stream);
    CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream));
    ms.push_back(ev.stop_ms(stream));
  }
  const double med = median(ms);
  const double best = *std::min_element(ms.begin(), ms.end());
  const double moved = 2.0 * static_cast<double>(bytes);  // read + write
  return {bytes, med, best, moved / (med * 1e-3) / 1e9, moved / (best * 1e-3) / 1e9};
}

// Random bf16 values in [-1, 1): values matter to the GPU's power draw, so zeros would flatter it.
void fill_bf16(DeviceBuffer<uint16_t>& buf, uint64_t seed) {
  std::vector<uint16_t> host(std::min<size_t>(buf.size(), size_t{1} << 24));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (uint16_t& h : host) {
    const float f = dist(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    h = static_cast<uint16_t>(bits >> 16);
  }
  for (size_t off = 0; off < buf.size(); off += host.size()) {
    const size_t n = std::min(host.size(), buf.size() - off);
    CUDA_CHECK(cudaMemcpy(buf.get() + off, host.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
  }
}

std::vector<Shape> shapes(bool quick) {
  std::vector<Shape> s = {{8192, 8192, 8192, "square 8192^3 (peak)"},
                          {2048, 14336, 4096, "prefill 2048 x gate"}};
  const int decode_m[] = {64, 256};
  for (int m : decode_m) {
    if (quick && m == 256) continue;
    s.push_back({m, 6144, 4096, "decode qkv_proj"});
    s.push_back({m, 4096, 4096, "decode o_proj"});
    s.push_back({m, 14336, 4096, "decode gate/up_proj"});
    s.push_back({m, 4096, 14336, "decode down_proj"});
    if (!quick) s.push_back({m, 128256, 4096, "decode lm_head"});
  }
  if (!quick) {
    s.push_back({4096, 4096, 4096, "square 4096^3"});
    s.push_back({2048, 4096, 14336, "prefill 2048 x down"});
  }
  return s;
}

std::vector<GemmResult> measure_gemms(const Options& o, cudaStream_t stream) {
  const std::vector<Shape> list = shapes(o.quick);
  size_t max_w = 0, max_x = 0, max_y = 0;
  for (const Shape& s : list) {
    max_w = std::max(max_w, size_t(s.n) * s.k);
    max_x = std::max(max_x, size_t(s.m) * s.k);
    max_y = std::max(max_y, size_t(s.m) * s.n);
  }
  // Weights are cycled through a region larger than the L2 cache (50 MB on an H100), so that small-M
  // shapes read W from memory as a decode step does, not from cache.
  constexpr size_t kWeightRegion = size_t{512} << 20;  // elements of bf16 (1 GiB)
  const size_t w_elems = std::max(max_w, kWeightRegion);
  DeviceBuffer<uint16_t> w(w_elems), x(max_x), y(max_y);
  fill_bf16(w, 1);
  fill_bf16(x, 2);

  cublasHandle_t handle = nullptr;
  CUDA_CHECK(cublasCreate(&handle));
  CUDA_CHECK(cublasSetStream(handle, stream));
  const float alpha = 1.0f, beta = 0.0f;
  std::vector<GemmResult> out;
  EventPair ev;
  for (const Shape& s : list) {
    const size_t w_size = size_t(s.n) * s.k;
    const size_t copies = std::max<size_t>(1, w_elems / w_size);
    int call = 0;
    auto gemm = [&] {
      const uint16_t* wp = w.get() + (call++ % copies) * w_size;
      // Column-major view: y^T[N, M] = W[K, N]^T * x^T[K, M].
      CUDA_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, s.n, s.m, s.k, &alpha, wp, CUDA_R_16BF, s.k,
                              x.get(), CUDA_R_16BF, s.k, &beta, y.get(), CUDA_R_16BF, s.n, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
    };
    for (int i = 0; i < 3; ++i)
      gemm();
    // Time batches of at least ~2 ms so that launch gaps and event resolution do not count.
    ev.start(stream);
    gemm();
    const double one_ms = std::max(ev.stop_ms(stream), 1e-3);
    const int inner = std::clamp(static_cast<int>(2.0 / one_ms), 1, 1000);
    std::vector<double> ms;
    for (int r = 0; r < o.reps; ++r) {
      ev.start(stream);
      for (int i = 0; i < inner; ++i)
        gemm();
      ms.push_back(ev.stop_ms(stream) / inner);
    }
    const double med = median(ms);
    const double flops = 2.0 * s.m * double(s.n) * s.k;
    const double bytes = 2.0 * (double(s.n) * s.k + double(s.m) * s.k + double(s.m) * s.n);
    out.push_back({s, med, flops / (med * 1e-3) / 1e12, bytes / (med * 1e-3) / 1e9});
  }
  CUDA_CHECK(cublasDestroy(handle));
  return out;
}

void write_json(const Options& o, const std::string& device, const CopyResult* copy,
                const std::vector<GemmResult>& gemms, const char* note) {
  FILE* f = std::fopen(o.json_path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "gpu_peak_bench: cannot write %s: %s\n", o.json_path.c_str(), std::strerror(errno));
    std::exit(2);
  }
  std::fprintf(f, "{\n  \"tool\": \"gpu_peak_bench\",\n");
  if (!copy) {
    std::fprintf(f, "  \"device\": null,\n  \"note\": \"%s\"\n}\n", note);
    std::fclose(f);
    return;
  }
  std::fprintf(f, "  \"device\": \"%s\",\n  \"reps\": %d,\n", device.c_str(), o.reps);
  std::fprintf(
      f,
      "  \"copy\": {\"bytes\": %zu, \"median_ms\": %.6f, \"best_ms\": %.6f, \"median_gb_per_s\": %.2f, "
      "\"best_gb_per_s\": %.2f, \"counts\": \"read + write\"},\n",
      copy->bytes, copy->median_ms, copy->best_ms, copy->median_gbps, copy->best_gbps);
  std::fprintf(f, "  \"gemm\": [\n");
  double peak_tflops = 0;
  for (size_t i = 0; i < gemms.size(); ++i) {
    const GemmResult& g = gemms[i];
    peak_tflops = std::max(peak_tflops, g.tflops);
    std::fprintf(
        f,
        "    {\"m\": %d, \"n\": %d, \"k\": %d, \"what\": \"%s\", \"median_ms\": %.6f, \"tflops\": %.2f, "
        "\"gb_per_s\": %.2f}%s\n",
        g.shape.m, g.shape.n, g.shape.k, g.shape.what, g.median_ms, g.tflops, g.weight_gbps,
        i + 1 < gemms.size() ? "," : "");
  }
  std::fprintf(f, "  ],\n");
  // What scripts/roofline.py reads: median copy bandwidth and the best bf16 matrix rate seen.
  std::fprintf(f, "  \"peak\": {\"copy_bytes_per_s\": %.6e, \"bf16_flops_per_s\": %.6e}\n}\n",
               copy->median_gbps * 1e9, peak_tflops * 1e12);
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--json") {
      const char* v = value();
      if (!v) return usage(argv[0]);
      o.json_path = v;
    } else if (a == "--reps") {
      const char* v = value();
      if (!v || (o.reps = std::atoi(v)) < 1) return usage(argv[0]);
    } else if (a == "--copy-mib") {
      const char* v = value();
      if (!v || std::atoll(v) < 1) return usage(argv[0]);
      o.copy_mib = static_cast<size_t>(std::atoll(v));
    } else if (a == "--quick") {
      o.quick = true;
    } else {
      return usage(argv[0]);
    }
  }
  if (kvserve::cuda::device_count() == 0) {
    const char* note = "no CUDA device: nothing measured";
    std::printf("gpu_peak_bench: %s\n", note);
    if (!o.json_path.empty()) write_json(o, "", nullptr, {}, note);
    return 0;
  }
  try {
    CUDA_CHECK(cudaSetDevice(0));
    const std::string device = kvserve::cuda::device_description(0);
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreate(&stream));
    const CopyResult copy = measure_copy(o, stream);
    const std::vector<GemmResult> gemms = measure_gemms(o, stream);
    CUDA_CHECK(cudaStreamDestroy(stream));

    std::printf("device: %s (median of %d repetitions)\n\n", device.c_str(), o.reps);
    std::printf("copy D2D %zu MiB: %.3f ms, %.0f GB/s (read + write; best %.0f GB/s)\n\n", o.copy_mib,
                copy.median_ms, copy.median_gbps, copy.best_gbps);
    std::printf("%-24s %6s %7s %6s %10s %9s %9s\n", "bf16 GEMM (fp32 acc)", "M", "N", "K", "time ms",
                "TFLOP/s", "GB/s");
    double peak = 0;
    for (const GemmResult& g : gemms) {
      peak = std::max(peak, g.tflops);
      std::printf("%-24s %6d %7d %6d %10.4f %9.1f %9.0f\n", g.shape.what, g.shape.m, g.shape.n, g.shape.k,
                  g.median_ms, g.tflops, g.weight_gbps);
    }
    std::printf("\npeak: copy %.0f GB/s, bf16 matrix %.1f TFLOP/s\n", copy.median_gbps, peak);
    if (!o.json_path.empty()) write_json(o, device, &copy, gemms, "");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_peak_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
