#pragma once
// CUDA softmax over the last dim: one block per row, its threads striding along the row, with the
// row's max and sum combined in shared memory.
#include <cuda/std/limits>

#include <algorithm>
#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/cuda/math.cuh"
#include "mote/backend/cuda/reduce.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

// y = exp(x - max) / sum exp(x - max); subtracting the row max keeps exp from overflowing.
template <class T>
__global__ void softmax_forward_kernel(const T* x, std::int64_t rows, std::int64_t cols, T* y) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    T row_max = -::cuda::std::numeric_limits<T>::infinity();  // ::cuda, not the mote::backend::cuda tag
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) row_max = xr[c] > row_max ? xr[c] : row_max;
    row_max = block_reduce(row_max, partial, max_op{});
    T sum = T(0);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const T e = device_exp(xr[c] - row_max);
      yr[c] = e;  // kept so the exponentials are computed once
      sum += e;
    }
    sum = block_reduce(sum, partial, sum_op{});
    const T inv = T(1) / sum;
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] *= inv;
  }
}

// dx += y * (dy - sum(dy * y)), the row's dot product combined in shared memory.
template <class T>
__global__ void softmax_backward_kernel(const T* y, const T* dy, std::int64_t rows, std::int64_t cols, T* dx) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* yr = y + row * cols;
    const T* dyr = dy + row * cols;
    T* dxr = dx + row * cols;
    T dot = T(0);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += dyr[c] * yr[c];
    dot = block_reduce(dot, partial, sum_op{});
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) dxr[c] += yr[c] * (dyr[c] - dot);
  }
}

// A row's max and log(sum exp(x - max)), combined across the block: every thread gets both.
template <class T>
struct row_log_sum_exp {
  T max;
  T log_sum;
};
template <class T>
__device__ row_log_sum_exp<T> block_log_sum_exp(const T* xr, std::int64_t cols, T* partial) {
  T max = -::cuda::std::numeric_limits<T>::infinity();
  for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) max = xr[c] > max ? xr[c] : max;
  max = block_reduce(max, partial, max_op{});
  T sum = T(0);
  for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += device_exp(xr[c] - max);
  return {max, device_log(block_reduce(sum, partial, sum_op{}))};
}

// y = (x - max) - log(sum exp(x - max)); the difference first, so log(sum) is not rounded away.
template <class T>
__global__ void log_softmax_forward_kernel(const T* x, std::int64_t rows, std::int64_t cols, T* y) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    const row_log_sum_exp<T> lse = block_log_sum_exp(xr, cols, partial);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = (xr[c] - lse.max) - lse.log_sum;
  }
}

// dx += dy - exp(y) * sum(dy)
template <class T>
__global__ void log_softmax_backward_kernel(const T* y, const T* dy, std::int64_t rows, std::int64_t cols, T* dx) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* yr = y + row * cols;
    const T* dyr = dy + row * cols;
    T* dxr = dx + row * cols;
    T sum = T(0);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += dyr[c];
    sum = block_reduce(sum, partial, sum_op{});
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) dxr[c] += dyr[c] - device_exp(yr[c]) * sum;
  }
}

}  // namespace cuda_detail

// y[r, :] = softmax(x[r, :]) for packed [rows, cols] x and y.
template <Real T>
void softmax_forward(cuda, const T* x, std::int64_t rows, std::int64_t cols, T* y) {
  if (rows <= 0 || cols <= 0) return;
  cuda_detail::softmax_forward_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(x, rows, cols, y);
  cuda_detail::check_launch("softmax_forward kernel");
}

// dx += y * (dy - sum over the row of dy * y), given the forward's output y.
template <Real T>
void softmax_backward(cuda, const T* y, const T* dy, std::int64_t rows, std::int64_t cols, T* dx) {
  if (rows <= 0 || cols <= 0) return;
  cuda_detail::softmax_backward_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(y, dy, rows, cols, dx);
  cuda_detail::check_launch("softmax_backward kernel");
}

// y[r, :] = log_softmax(x[r, :]) for packed [rows, cols] x and y.
template <Real T>
void log_softmax_forward(cuda, const T* x, std::int64_t rows, std::int64_t cols, T* y) {
  if (rows <= 0 || cols <= 0) return;
  cuda_detail::log_softmax_forward_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(x, rows, cols, y);
  cuda_detail::check_launch("log_softmax_forward kernel");
}

// dx += dy - exp(y) * sum over the row of dy, given the forward's output y.
template <Real T>
void log_softmax_backward(cuda, const T* y, const T* dy, std::int64_t rows, std::int64_t cols, T* dx) {
  if (rows <= 0 || cols <= 0) return;
  cuda_detail::log_softmax_backward_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(y, dy, rows, cols, dx);
  cuda_detail::check_launch("log_softmax_backward kernel");
}

}  // namespace mote::backend
