#include "kernels/gemm.h"

#include <stdexcept>
#include <string>

namespace kvserve::cuda {

namespace {
// cuBLAS's recommendation for Hopper is 32 MiB of workspace; more buys nothing.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;
}  // namespace

Gemm::Gemm(cudaStream_t stream) : workspace_(kWorkspaceBytes) {
  CUDA_CHECK(cublasCreate(&handle_));
  try {
    CUDA_CHECK(cublasSetStream(handle_, stream));
    CUDA_CHECK(cublasSetWorkspace(handle_, workspace_.get(), workspace_.bytes()));
    // Tensor cores with fp32 accumulation; the default mode would let split-K reductions run in the
    // output type (bf16), which this flag forbids.
    CUDA_CHECK(cublasSetMathMode(
        handle_,
        static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  } catch (...) {
    cublasDestroy(handle_);
    throw;
  }
}

Gemm::~Gemm() {
  if (handle_) cublasDestroy(handle_);
}

void Gemm::linear(const __nv_bfloat16* x, int rows, int in, const __nv_bfloat16* w, int out, __nv_bfloat16* y,
                  int64_t ldy, float alpha) {
  run(x, rows, in, w, out, y, CUDA_R_16BF, ldy, alpha);
}

void Gemm::linear(const __nv_bfloat16* x, int rows, int in, const __nv_bfloat16* w, int out, float* y,
                  int64_t ldy, float alpha) {
  run(x, rows, in, w, out, y, CUDA_R_32F, ldy, alpha);
}

void Gemm::run(const __nv_bfloat16* x, int rows, int in, const __nv_bfloat16* w, int out, void* y,
               cudaDataType y_type, int64_t ldy, float alpha) {
  if (rows == 0) return;
  if (rows < 0 || in <= 0 || out <= 0 || ldy < out)
    throw std::invalid_argument("Gemm::linear: bad shape rows=" + std::to_string(rows) +
                                " in=" + std::to_string(in) + " out=" + std::to_string(out) +
                                " ldy=" + std::to_string(ldy));
  // cuBLAS is column-major. Row-major y[rows][ldy] is column-major Y' (out x rows, ld ldy); row-major
  // w[out][in] is column-major W' (in x out, ld in); x likewise X' (in x rows, ld in).
  // y = x w^T  <=>  Y' = W'^T X'.
  const float beta = 0.0f;
  CUDA_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, CUDA_R_16BF, in, x,
                          CUDA_R_16BF, in, &beta, y, y_type, static_cast<int>(ldy), CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT));
}

}  // namespace kvserve::cuda
