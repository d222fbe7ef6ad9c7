#pragma once
// The CUDA backend tag: pooled device memory, copies and fills on the default stream, the error checks
// every CUDA kernel family shares, a launch helper for index-space kernels, and the cuBLAS handle.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <thrust/execution_policy.h>
#include <thrust/fill.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system_error.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <utility>

#include "mote/backend/concept.hpp"
#include "mote/core/error.hpp"

namespace mote::backend {

namespace cuda_detail {

// Throws backend_error naming the failed call and CUDA's own description of the failure.
inline void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw backend_error(std::string("mote: cuda: ") + call + " failed: " + cudaGetErrorName(status) + ": " +
                        cudaGetErrorString(status));
}

inline void check_cublas(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw backend_error(std::string("mote: cuda: ") + call + " failed: " + cublasGetStatusName(status) + ": " +
                        cublasGetStatusString(status));
}

// Reports a bad launch configuration (or an earlier asynchronous fault) right after a launch.
inline void check_launch(const char* kernel) {
  check(cudaGetLastError(), kernel);
}

// Thrust reports failures as its own exceptions; mote promises backend_error.
template <class Fn>
void run_thrust(const char* what, Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
  } catch (const thrust::system_error& e) {
    throw backend_error(std::string("mote: cuda: thrust ") + what + " failed: " + e.what());
  } catch (const std::bad_alloc& e) {
    throw backend_error(std::string("mote: cuda: thrust ") + what + " could not allocate: " + e.what());
  }
}

// Thrust algorithms on the default stream that do not wait for the device after each call.
inline auto thrust_policy() { return thrust::cuda::par_nosync.on(cudaStream_t{0}); }

inline constexpr int threads_per_block = 256;
// Grid-stride loops cover any n; more blocks than this only add scheduling overhead.
inline constexpr std::int64_t max_blocks = std::int64_t{1} << 20;

inline unsigned blocks_for(std::int64_t n) {
  const std::int64_t blocks = (n + threads_per_block - 1) / threads_per_block;
  return static_cast<unsigned>(std::min(blocks, max_blocks));
}

// One block per row for row kernels (grid-stride over rows beyond max_blocks).
inline unsigned row_blocks(std::int64_t rows) { return static_cast<unsigned>(std::min(rows, max_blocks)); }

template <class Fn>
__global__ void for_each_index_kernel(std::int64_t n, Fn fn) {
  const std::int64_t step = static_cast<std::int64_t>(blockDim.x) * gridDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) fn(i);
}

// Runs fn(i) for every i in [0, n) on the default stream; fn is a struct with a __device__ operator().
template <class Fn>
void for_each_index(std::int64_t n, const Fn& fn, const char* kernel) {
  if (n <= 0) return;
  for_each_index_kernel<<<blocks_for(n), threads_per_block>>>(n, fn);
  check_launch(kernel);
}

// Narrows a size for a cuBLAS argument, which is a 32-bit int.
inline int to_cublas_int(std::int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max())
    throw backend_error(std::string("mote: cuda: ") + what + " = " + std::to_string(v) +
                        " does not fit cuBLAS's 32-bit int");
  return static_cast<int>(v);
}

// Created on first use and never destroyed: a static destructor would race the CUDA runtime's
// own teardown at exit, and the driver frees the handle with the process anyway.
inline cublasHandle_t cublas_handle() {
  static const cublasHandle_t handle = [] {
    cublasHandle_t h = nullptr;
    check_cublas(cublasCreate(&h), "cublasCreate");
    // The default stream, so cuBLAS calls are ordered with mote's kernels and copies.
    check_cublas(cublasSetStream(h, cudaStream_t{0}), "cublasSetStream");
    return h;
  }();
  return handle;
}

// The default pool returns freed memory to the driver at each synchronization unless told to keep it.
inline void keep_pool_memory() {
  static const bool kept = [] {
    int device = 0;
    cudaMemPool_t pool = nullptr;
    if (cudaGetDevice(&device) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      std::uint64_t keep_all = std::numeric_limits<std::uint64_t>::max();
      (void)cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all);
    }
    (void)cudaGetLastError();  // without a device this is a no-op; cudaMallocAsync then reports the error
    return true;
  }();
  (void)kept;
}

}  // namespace cuda_detail

struct cuda {
  static constexpr const char* name = "cuda";
  static constexpr bool host_accessible = false;
  using stream_type = cudaStream_t;  // read by backend_traits; kernels still run on the default stream

  // Stream-ordered allocations from the device's default pool, which keeps freed memory for reuse:
  // a training step allocates and frees the same sizes every time, and a plain cudaFree would
  // synchronize the device each time.
  template <class T>
  static T* allocate(std::size_t n) {
    if (n == 0) return nullptr;
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
      throw backend_error("mote: cuda: cannot allocate " + std::to_string(n) + " elements: the byte count overflows");
    cuda_detail::keep_pool_memory();
    const std::size_t bytes = n * sizeof(T);
    void* p = nullptr;
    const cudaError_t status = cudaMallocAsync(&p, bytes, cudaStream_t{0});
    if (status != cudaSuccess) {
      (void)cudaGetLastError();  // an allocation failure must not poison the next unrelated check
      cuda_detail::check(status, ("cudaMallocAsync(" + std::to_string(bytes) + " bytes)").c_str());
    }
    if (::mote::debug::poison_allocations) {
      // All-ones bytes are NaN in float and double, so an element an op forgot to write shows.
      const cudaError_t fill_status = cudaMemsetAsync(p, 0xFF, bytes, cudaStream_t{0});
      if (fill_status != cudaSuccess) {
        (void)cudaFreeAsync(p, cudaStream_t{0});
        cuda_detail::check(fill_status, "cudaMemsetAsync (poisoning a fresh allocation)");
      }
    }
    return static_cast<T*>(p);
  }
  // Called from destructors, so it cannot throw; a failure here is sticky and the next checked call reports it.
  // Work already queued on the stream that reads p runs before the memory is reused.
  template <class T>
  static void deallocate(T* p, std::size_t /*n*/) noexcept {
    if (p) (void)cudaFreeAsync(p, cudaStream_t{0});
  }
  // cudaMemcpy from device to pageable host memory returns only once the data has arrived.
  template <class T>
  static void copy_to_host(const T* src, T* dst, std::size_t n) {
    if (n) cuda_detail::check(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy (device to host)");
  }
  template <class T>
  static void copy_from_host(const T* src, T* dst, std::size_t n) {
    if (n) cuda_detail::check(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy (host to device)");
  }
  template <class T>
  static void copy(const T* src, T* dst, std::size_t n) {
    if (n)
      cuda_detail::check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, cudaStream_t{0}),
                         "cudaMemcpyAsync (device to device)");
  }
  template <class T>
  static void fill(T* p, std::size_t n, T value) {
    if (n == 0) return;
    cuda_detail::run_thrust("fill_n", [&] {
      thrust::fill_n(cuda_detail::thrust_policy(), p, n, value);
    });
  }
  static void synchronize() { cuda_detail::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }
};

// Gathers a strided 4-D view into contiguous memory; shape4 and strides4 are host arrays.
namespace cuda_detail {
struct view4 {
  std::int64_t shape[4];
  std::int64_t strides[4];
  // Where the element at packed index i of the view sits.
  __device__ std::int64_t offset(std::int64_t i) const {
    std::int64_t rest = i, at = 0;
    for (int d = 3; d >= 0; --d) {
      at += (rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    return at;
  }
};

// The view's extents and strides by value, for a kernel; n becomes the element count.
inline view4 make_view4(const std::int64_t* shape4, const std::int64_t* strides4, std::int64_t& n) {
  view4 view{};
  n = 1;
  for (int d = 0; d < 4; ++d) {
    view.shape[d] = shape4[d];
    view.strides[d] = strides4[d];
    n *= shape4[d];
  }
  return view;
}

template <class T>
struct strided_gather {
  const T* src;
  T* dst;
  view4 view;
  __device__ void operator()(std::int64_t i) const { dst[i] = src[view.offset(i)]; }
};
}  // namespace cuda_detail

template <class T>
void strided_copy(cuda, const T* src, const std::int64_t* shape4, const std::int64_t* strides4, T* dst) {
  std::int64_t n = 0;
  const cuda_detail::view4 view = cuda_detail::make_view4(shape4, strides4, n);
  if (n == 0) return;  // an empty view also keeps the kernel's modulo away from a zero extent
  cuda_detail::for_each_index(n, cuda_detail::strided_gather<T>{src, dst, view}, "strided_copy kernel");
}

namespace cuda_detail {
// Device scratch memory for one kernel call, returned to the pool on scope exit.
template <class T>
class scratch {
 public:
  explicit scratch(std::size_t n) : data_(cuda::allocate<T>(n)), size_(n) {}
  ~scratch() { cuda::deallocate(data_, size_); }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  T* data() const { return data_; }

 private:
  T* data_;
  std::size_t size_;
};
}  // namespace cuda_detail

}  // namespace mote::backend

namespace mote {
using cuda = backend::cuda;
static_assert(Backend<cuda>);
}  // namespace mote
