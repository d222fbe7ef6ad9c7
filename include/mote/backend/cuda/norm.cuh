#pragma once
// CUDA layer norm and RMS norm over rows of a [rows, cols] buffer, with the semantics of
// backend/cpu/norm.hpp: forward saves per-row statistics, backward adds into dx, dweight and dbias
// and skips any that is null. One block per row; the weight gradients are column reductions.
#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/cuda/math.cuh"
#include "mote/backend/cuda/reduce.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

template <class T>
__global__ void layer_norm_forward_kernel(const T* x, const T* weight, const T* bias, std::int64_t rows,
                                          std::int64_t cols, T eps, T* y, T* mean, T* rstd) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    T sum = T(0);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += xr[c];
    const T m = block_reduce(sum, partial, sum_op{}) / T(cols);
    // Two passes: the variance of deviations does not cancel the way E[x^2] - m^2 does.
    T sq = T(0);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) sq += (xr[c] - m) * (xr[c] - m);
    const T s = T(1) / device_sqrt(block_reduce(sq, partial, sum_op{}) / T(cols) + eps);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      yr[c] = (xr[c] - m) * s * weight[c] + (bias ? bias[c] : T(0));
    if (threadIdx.x == 0) {
      mean[r] = m;
      rstd[r] = s;
    }
  }
}

// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight.
template <class T>
__global__ void layer_norm_backward_kernel(const T* x, const T* weight, const T* mean, const T* rstd, const T* dy,
                                           std::int64_t rows, std::int64_t cols, T* dx) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    const T* gr = dy + r * cols;
    T* dr = dx + r * cols;
    const T m = mean[r], s = rstd[r];
    T g_sum = T(0), gx_sum = T(0);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const T g = gr[c] * weight[c];
      g_sum += g;
      gx_sum += g * (xr[c] - m) * s;
    }
    const T g_mean = block_reduce(g_sum, partial, sum_op{}) / T(cols);
    const T gx_mean = block_reduce(gx_sum, partial, sum_op{}) / T(cols);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      dr[c] += s * (gr[c] * weight[c] - g_mean - (xr[c] - m) * s * gx_mean);
  }
}

template <class T>
__global__ void rms_norm_forward_kernel(const T* x, const T* weight, std::int64_t rows, std::int64_t cols, T eps, T* y,
                                        T* rstd) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    T sq = T(0);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) sq += xr[c] * xr[c];
    const T s = T(1) / device_sqrt(block_reduce(sq, partial, sum_op{}) / T(cols) + eps);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = xr[c] * s * weight[c];
    if (threadIdx.x == 0) rstd[r] = s;
  }
}

// dx += rstd * g - x * rstd^3 * mean(g * x) with g = dy * weight.
template <class T>
__global__ void rms_norm_backward_kernel(const T* x, const T* weight, const T* rstd, const T* dy, std::int64_t rows,
                                         std::int64_t cols, T* dx) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    const T* gr = dy + r * cols;
    T* dr = dx + r * cols;
    const T s = rstd[r];
    T gx_sum = T(0);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) gx_sum += gr[c] * weight[c] * xr[c];
    const T k = s * s * s * block_reduce(gx_sum, partial, sum_op{}) / T(cols);
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) dr[c] += s * gr[c] * weight[c] - xr[c] * k;
  }
}

// dy[r, c] * xhat[r, c] as a column reduction's value; mean is null for RMS norm.
template <class T>
struct normalized_grad_value {
  const T* x;
  const T* dy;
  const T* mean;
  const T* rstd;
  std::int64_t cols;
  __device__ T operator()(std::int64_t, std::int64_t r, std::int64_t c) const {
    const T centered = x[r * cols + c] - (mean ? mean[r] : T(0));
    return dy[r * cols + c] * centered * rstd[r];
  }
};

}  // namespace cuda_detail

// y = (x - mean) * rstd * weight + bias per row; bias may be null. Writes mean and rstd [rows].
template <Real T>
void layer_norm_forward(cuda, const T* x, const T* weight, const T* bias, std::int64_t rows, std::int64_t cols, T eps,
                        T* y, T* mean, T* rstd) {
  if (rows <= 0 || cols <= 0) return;
  cuda_detail::layer_norm_forward_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(x, weight, bias, rows, cols, eps, y, mean, rstd);
  cuda_detail::check_launch("layer_norm_forward kernel");
}

// dx += ...; dweight += sum_rows dy * xhat; dbias += sum_rows dy.
template <Real T>
void layer_norm_backward(cuda, const T* x, const T* weight, const T* mean, const T* rstd, const T* dy,
                         std::int64_t rows, std::int64_t cols, T* dx, T* dweight, T* dbias) {
  if (rows <= 0 || cols <= 0) return;
  if (dx) {
    cuda_detail::layer_norm_backward_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(x, weight, mean, rstd, dy, rows, cols, dx);
    cuda_detail::check_launch("layer_norm_backward kernel");
  }
  if (dweight)
    cuda_detail::reduce_middle(std::int64_t{1}, rows, cols, cuda_detail::normalized_grad_value<T>{x, dy, mean, rstd, cols},
                               cuda_detail::accumulate_into<T>{dweight, T(1)}, "layer_norm_backward (weight) kernel");
  if (dbias)
    cuda_detail::reduce_middle(std::int64_t{1}, rows, cols, cuda_detail::packed3_value<T>{dy, rows, cols},
                               cuda_detail::accumulate_into<T>{dbias, T(1)}, "layer_norm_backward (bias) kernel");
}

// y = x * rstd * weight with rstd = 1 / sqrt(mean(x^2) + eps) per row. Writes rstd [rows].
template <Real T>
void rms_norm_forward(cuda, const T* x, const T* weight, std::int64_t rows, std::int64_t cols, T eps, T* y, T* rstd) {
  if (rows <= 0 || cols <= 0) return;
  cuda_detail::rms_norm_forward_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(x, weight, rows, cols, eps, y, rstd);
  cuda_detail::check_launch("rms_norm_forward kernel");
}

// dx += ...; dweight += sum_rows dy * x * rstd.
template <Real T>
void rms_norm_backward(cuda, const T* x, const T* weight, const T* rstd, const T* dy, std::int64_t rows,
                       std::int64_t cols, T* dx, T* dweight) {
  if (rows <= 0 || cols <= 0) return;
  if (dx) {
    cuda_detail::rms_norm_backward_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(x, weight, rstd, dy, rows, cols, dx);
    cuda_detail::check_launch("rms_norm_backward kernel");
  }
  if (dweight)
    cuda_detail::reduce_middle(std::int64_t{1}, rows, cols,
                               cuda_detail::normalized_grad_value<T>{x, dy, nullptr, rstd, cols},
                               cuda_detail::accumulate_into<T>{dweight, T(1)}, "rms_norm_backward (weight) kernel");
}

}  // namespace mote::backend
