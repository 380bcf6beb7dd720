// Matrix products of the model through cuBLAS: bf16 inputs, fp32 accumulation, in the Hugging Face
// linear layout (weights [out_features][in_features], row-major activations).
//
// One handle and one workspace per Gemm, created once and bound to the backend's stream: cuBLAS then
// allocates nothing per call, which CUDA-graph capture requires.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda_check.h"

namespace kvserve::cuda {

class Gemm {
 public:
  explicit Gemm(cudaStream_t stream);
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  ~Gemm();

  // y[r][o] = alpha * sum_i x[r][i] * w[o][i] for r < rows, o < out; rows of x are `in` long, rows
  // of y are ldy >= out apart. bf16 output, scaled in fp32 before it is rounded (alpha: Granite's
  // residual multiplier).
  void linear(const __nv_bfloat16* x, int rows, int in, const __nv_bfloat16* w, int out, __nv_bfloat16* y,
              int64_t ldy, float alpha = 1.0f);
  // The same with fp32 output (the LM head: logits keep full precision for sampling).
  void linear(const __nv_bfloat16* x, int rows, int in, const __nv_bfloat16* w, int out, float* y,
              int64_t ldy, float alpha = 1.0f);

 private:
  void run(const __nv_bfloat16* x, int rows, int in, const __nv_bfloat16* w, int out, void* y,
           cudaDataType y_type, int64_t ldy, float alpha);

  cublasHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
};

}  // namespace kvserve::cuda
