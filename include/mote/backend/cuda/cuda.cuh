#pragma once
// The CUDA backend tag: pooled device memory, copies and fills on the calling thread's stream (the
// legacy default stream unless a cuda::stream_scope names another), the error checks every CUDA
// kernel family shares, a launch helper for index-space kernels, and the cuBLAS handle.
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
#include "mote/backend/traits.hpp"
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

// The stream this host thread queues mote's work on: 0, the legacy default stream, unless a
// cuda::stream_scope has named another.
inline cudaStream_t& stream_slot() {
  thread_local cudaStream_t current = nullptr;
  return current;
}
inline cudaStream_t stream() { return stream_slot(); }

// Makes `waiter` wait for everything queued on `producer` so far, without blocking the host.
inline cudaError_t order_after(cudaStream_t waiter, cudaStream_t producer) {
  cudaEvent_t event = nullptr;
  cudaError_t status = cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
  if (status != cudaSuccess) return status;
  status = cudaEventRecord(event, producer);
  if (status == cudaSuccess) status = cudaStreamWaitEvent(waiter, event, 0);
  const cudaError_t destroyed = cudaEventDestroy(event);  // released once the wait has been satisfied
  return status != cudaSuccess ? status : destroyed;
}

// Thrust algorithms on the thread's stream that do not wait for the device after each call.
inline auto thrust_policy() { return thrust::cuda::par_nosync.on(cuda_detail::stream()); }

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

// Runs fn(i) for every i in [0, n) on the thread's stream; fn is a struct with a __device__ operator().
template <class Fn>
void for_each_index(std::int64_t n, const Fn& fn, const char* kernel) {
  if (n <= 0) return;
  for_each_index_kernel<<<blocks_for(n), threads_per_block, 0, cuda_detail::stream()>>>(n, fn);
  check_launch(kernel);
}

// Narrows a size for a cuBLAS argument, which is a 32-bit int.
inline int to_cublas_int(std::int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max())
    throw backend_error(std::string("mote: cuda: ") + what + " = " + std::to_string(v) +
                        " does not fit cuBLAS's 32-bit int");
  return static_cast<int>(v);
}

// One handle per host thread, bound to that thread's stream before each use, so cuBLAS calls are
// ordered with mote's kernels and copies. Created on first use and never destroyed: a destructor at
// exit would race the CUDA runtime's own teardown, and the driver frees the handle with the process.
inline cublasHandle_t cublas_handle() {
  thread_local const cublasHandle_t handle = [] {
    cublasHandle_t h = nullptr;
    check_cublas(cublasCreate(&h), "cublasCreate");
    return h;
  }();
  thread_local cudaStream_t bound = nullptr;  // a new handle queues on the legacy default stream
  if (bound != stream()) {
    check_cublas(cublasSetStream(handle, stream()), "cublasSetStream");
    bound = stream();
  }
  return handle;
}

// The current device's default stream-ordered pool, which cuda::allocate draws from.
inline cudaMemPool_t default_pool() {
  int device = 0;
  cudaMemPool_t pool = nullptr;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetDefaultMemPool(&pool, device), "cudaDeviceGetDefaultMemPool");
  return pool;
}

// Run before the first allocation: a machine without a usable device is told so in words (instead of
// a later call's error code), and the device's default pool is told to keep freed memory, which it
// would otherwise return to the driver at each synchronization. Retried while it throws.
inline void prepare_device() {
  static const bool prepared = [] {
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess || devices == 0) {
      (void)cudaGetLastError();
      throw backend_error(std::string("mote: cuda: no usable CUDA device (cudaGetDeviceCount: ") +
                          (status != cudaSuccess ? std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status)
                                                 : std::string("0 devices")) +
                          "); mote::cuda needs an NVIDIA GPU and its driver, mote::cpu runs anywhere");
    }
    int device = 0;
    cudaMemPool_t pool = nullptr;
    if (cudaGetDevice(&device) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      std::uint64_t keep_all = std::numeric_limits<std::uint64_t>::max();
      (void)cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all);
    }
    (void)cudaGetLastError();  // a pool without the attribute still allocates; cudaMallocAsync reports real failures
    return true;
  }();
  (void)prepared;
}

}  // namespace cuda_detail

struct cuda {
  static constexpr const char* name = "cuda";
  static constexpr bool host_accessible = false;
  using stream_type = cudaStream_t;  // read by backend_traits

  // The stream this host thread's mote work goes to: 0 (the legacy default stream) unless a
  // stream_scope names another.
  static cudaStream_t current_stream() { return cuda_detail::stream(); }
  class stream_scope;

  // Stream-ordered allocations from the device's default pool, which keeps freed memory for reuse:
  // a training step allocates and frees the same sizes every time, and a plain cudaFree would
  // synchronize the device each time.
  template <class T>
  static T* allocate(std::size_t n) {
    if (n == 0) return nullptr;
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
      throw backend_error("mote: cuda: cannot allocate " + std::to_string(n) + " elements: the byte count overflows");
    cuda_detail::prepare_device();
    const std::size_t bytes = n * sizeof(T);
    void* p = nullptr;
    const cudaError_t status = cudaMallocAsync(&p, bytes, cuda_detail::stream());
    if (status != cudaSuccess) {
      (void)cudaGetLastError();  // an allocation failure must not poison the next unrelated check
      cuda_detail::check(status, ("cudaMallocAsync(" + std::to_string(bytes) + " bytes)").c_str());
    }
    if (::mote::debug::poison_allocations) {
      // All-ones bytes are NaN in float and double, so an element an op forgot to write shows.
      const cudaError_t fill_status = cudaMemsetAsync(p, 0xFF, bytes, cuda_detail::stream());
      if (fill_status != cudaSuccess) {
        (void)cudaFreeAsync(p, cuda_detail::stream());
        cuda_detail::check(fill_status, "cudaMemsetAsync (poisoning a fresh allocation)");
      }
    }
    return static_cast<T*>(p);
  }
  // Called from destructors, so it cannot throw; a failure here is sticky and the next checked call reports it.
  // Work already queued on the stream that reads p runs before the memory is reused.
  template <class T>
  static void deallocate(T* p, std::size_t /*n*/) noexcept {
    if (p) (void)cudaFreeAsync(p, cuda_detail::stream());
  }
  // Host copies queue on the thread's stream, after the work that writes or still reads the device
  // side, and return once the stream has drained: the host buffer may then be read or freed.
  template <class T>
  static void copy_to_host(const T* src, T* dst, std::size_t n) {
    if (n == 0) return;
    cuda_detail::check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, cuda_detail::stream()),
                       "cudaMemcpyAsync (device to host)");
    cuda_detail::check(cudaStreamSynchronize(cuda_detail::stream()), "cudaStreamSynchronize (after a device to host copy)");
  }
  template <class T>
  static void copy_from_host(const T* src, T* dst, std::size_t n) {
    if (n == 0) return;
    cuda_detail::check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, cuda_detail::stream()),
                       "cudaMemcpyAsync (host to device)");
    cuda_detail::check(cudaStreamSynchronize(cuda_detail::stream()), "cudaStreamSynchronize (after a host to device copy)");
  }
  template <class T>
  static void copy(const T* src, T* dst, std::size_t n) {
    if (n)
      cuda_detail::check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, cuda_detail::stream()),
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

  // Read by backend_traits::memory_use: the bytes of the device's default pool in use by tensors
  // now, and its high mark since the last reset (cudaMemPoolAttrUsedMemCurrent and UsedMemHigh).
  static MemoryUse memory_use() {
    cudaMemPool_t pool = cuda_detail::default_pool();
    std::uint64_t live = 0, peak = 0;
    cuda_detail::check(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &live),
                       "cudaMemPoolGetAttribute (UsedMemCurrent)");
    cuda_detail::check(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &peak), "cudaMemPoolGetAttribute (UsedMemHigh)");
    return {.live_bytes = static_cast<std::size_t>(live), .peak_bytes = static_cast<std::size_t>(peak), .known = true};
  }
  static void reset_memory_peak() {
    std::uint64_t zero = 0;  // the only value the attribute takes: the mark restarts from current use
    cuda_detail::check(cudaMemPoolSetAttribute(cuda_detail::default_pool(), cudaMemPoolAttrUsedMemHigh, &zero),
                       "cudaMemPoolSetAttribute (UsedMemHigh)");
  }
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

// Queues this host thread's mote work on `stream` until the scope ends, as a fork and a join: the
// stream first waits for what is already queued on the previous one, and at the end the previous
// stream waits for everything queued here. Tensors made before, inside or after the scope, and freed
// on either side, are therefore never reused while a kernel still reads them. Scopes nest.
//
//   cudaStream_t mine = ...;  // the caller's own stream (NCCL's, a capture's, another library's)
//   { mote::cuda::stream_scope on(mine); loss = model.loss(batch); loss.backward(); }
class cuda::stream_scope {
 public:
  explicit stream_scope(cudaStream_t stream) : previous_(cuda_detail::stream()), stream_(stream) {
    if (stream_ != previous_) cuda_detail::check(cuda_detail::order_after(stream_, previous_), "stream_scope (entering)");
    cuda_detail::stream_slot() = stream_;
  }
  // Cannot throw: a failed join is left for the next checked call, as the CUDA runtime keeps it.
  ~stream_scope() {
    cuda_detail::stream_slot() = previous_;
    if (stream_ != previous_) (void)cuda_detail::order_after(previous_, stream_);
  }
  stream_scope(const stream_scope&) = delete;
  stream_scope& operator=(const stream_scope&) = delete;
  cudaStream_t stream() const { return stream_; }

 private:
  cudaStream_t previous_;
  cudaStream_t stream_;
};

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
