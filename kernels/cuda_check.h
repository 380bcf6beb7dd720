// Error handling and small RAII helpers shared by the CUDA code. Host-only; safe to include from
// files compiled by g++ (they see only the CUDA runtime API).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdio>
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

// A cudaMalloc that found too little free memory, with the sizes. The CUDA backend's constructor
// turns it into a message naming what did not fit and the setting to change.
class OutOfDeviceMemory : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::string gib_string(double bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f GiB", bytes / double(size_t{1} << 30));
  return text;
}

// cudaMalloc, throwing OutOfDeviceMemory when it is short of memory (any other failure as check()).
inline void device_malloc(void** ptr, size_t bytes) {
  const cudaError_t err = cudaMalloc(ptr, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not a sticky error: clear it, or the next launch check would report it
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    throw OutOfDeviceMemory("cudaMalloc of " + gib_string(double(bytes)) + " failed with " +
                            gib_string(double(free_bytes)) + " free of " + gib_string(double(total_bytes)));
  }
  check(err, "cudaMalloc");
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
    if (count > 0) device_malloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T));
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

// An owned pinned (page-locked) host allocation of `count` elements of T. Copies to the device from
// pinned memory are truly asynchronous; from pageable memory the driver stages them and may first
// wait for the stream, which would stall a step in the middle. Move-only; frees on destruction.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  ~PinnedBuffer() { release(); }

  // Grows (contents lost) when `count` exceeds the current size, to at least twice that size, so
  // that a buffer growing a little every step reallocates rarely. The caller makes sure no copy
  // from the old allocation is still in flight.
  void reserve(size_t count) {
    if (count <= count_) return;
    const size_t grown = count < 2 * count_ ? 2 * count_ : count;
    release();
    CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&ptr_), grown * sizeof(T)));
    count_ = grown;
  }

  T* get() const { return ptr_; }
  size_t size() const { return count_; }

 private:
  void release() noexcept {
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace kvserve::cuda
