// Error handling and small RAII helpers shared by the CUDA code. Host-only; safe to include from
// files compiled by g++ (they see only the CUDA runtime API).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

namespace kvserve::cuda {

// Any CUDA or cuBLAS failure is a std::runtime_error naming the call site: the engine treats a
// backend exception as fatal (the cache is then undefined), so the message is what the operator sees.
inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}
inline void check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + ": " + cublasGetStatusString(st));
}

#define KVSERVE_CUDA_STRINGIFY2(x) #x
#define KVSERVE_CUDA_STRINGIFY(x) KVSERVE_CUDA_STRINGIFY2(x)
// CUDA_CHECK(cudaMalloc(...)): throws with file:line and the call's text.
#define CUDA_CHECK(call) \
  ::kvserve::cuda::check((call), __FILE__ ":" KVSERVE_CUDA_STRINGIFY(__LINE__) ": " #call)
// After a kernel launch: reports bad launch configurations at once (not at the next sync).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// An owned device allocation of `count` elements of T. Move-only; frees on destruction.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { resize(count); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  // Reallocates (contents lost) when `count` differs from the current size.
  void resize(size_t count) {
    if (count == count_) return;
    release();
    if (count > 0) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T)));
    count_ = count;
  }
  // Grows (contents lost) only when `count` exceeds the current size: for per-step scratch.
  void reserve(size_t count) {
    if (count > count_) resize(count);
  }

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  void release() noexcept {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace kvserve::cuda
