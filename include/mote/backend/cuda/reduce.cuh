#pragma once
// CUDA reductions over the middle dim of an [outer, dim, inner] view, and the broadcast that is
// their backward. Deterministic: no atomics, every sum is added in the same order on every run.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/core/dtype.hpp"
#include "mote/core/error.hpp"

namespace mote::backend {

namespace cuda_detail {

struct sum_op {
  template <class T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct max_op {
  template <class T>
  __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};

// Combines one value per thread of the block (blockDim.x a power of two) and gives every thread
// the result; buf holds blockDim.x values in shared memory.
template <class T, class Op>
__device__ T block_reduce(T v, T* buf, Op op) {
  const unsigned t = threadIdx.x;
  buf[t] = v;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half >>= 1) {
    if (t < half) buf[t] = op(buf[t], buf[t + half]);
    __syncthreads();
  }
  const T result = buf[0];
  __syncthreads();  // every thread has read buf[0] before the caller writes buf again
  return result;
}

// Stores for a reduction: out[flat] = scale * sum, or out[flat] += scale * sum.
template <class T>
struct assign_into {
  using value_type = T;
  T* out;
  T scale;
  __device__ void operator()(std::int64_t flat, T sum) const { out[flat] = scale * sum; }
};
template <class T>
struct accumulate_into {
  using value_type = T;
  T* out;
  T scale;
  __device__ void operator()(std::int64_t flat, T sum) const { out[flat] += scale * sum; }
};

// x[o, d, i] of a packed [outer, dim, inner] tensor.
template <class T>
struct packed3_value {
  const T* x;
  std::int64_t dim;
  std::int64_t inner;
  __device__ T operator()(std::int64_t o, std::int64_t d, std::int64_t i) const { return x[(o * dim + d) * inner + i]; }
};

// inner == 1: one block per row o, its threads striding along the contiguous row.
template <class T, class Value, class Store>
__global__ void reduce_rows_kernel(std::int64_t outer, std::int64_t dim, Value value, Store store) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    T sum = T(0);
    for (std::int64_t d = threadIdx.x; d < dim; d += blockDim.x) sum += value(o, d, std::int64_t{0});
    sum = block_reduce(sum, partial, sum_op{});
    if (threadIdx.x == 0) store(o, sum);
  }
}

inline constexpr int column_tile = 32;  // one warp reads 32 neighbouring columns: coalesced
inline constexpr int row_split = 8;     // rows of dim shared out among 8 warps per block

// inner > 1: a block owns 32 columns i of one o; its 8 warps split the dim rows and then combine.
template <class T, class Value, class Store>
__global__ void reduce_columns_kernel(std::int64_t outer, std::int64_t dim, std::int64_t inner, Value value, Store store) {
  __shared__ T partial[row_split][column_tile];
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * column_tile + threadIdx.x;
  for (std::int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    T sum = T(0);
    if (i < inner)
      for (std::int64_t d = threadIdx.y; d < dim; d += row_split) sum += value(o, d, i);
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && i < inner) {
      T total = partial[0][threadIdx.x];
      for (int r = 1; r < row_split; ++r) total += partial[r][threadIdx.x];
      store(o * inner + i, total);
    }
    __syncthreads();  // partial is rewritten by the next o
  }
}

// For every (o, i) of an [outer, dim, inner] index space: store(o * inner + i, sum over d of value(o, d, i)).
template <class Value, class Store>
void reduce_middle(std::int64_t outer, std::int64_t dim, std::int64_t inner, const Value& value, const Store& store,
                   const char* kernel) {
  using T = typename Store::value_type;
  if (outer < 0 || dim < 0 || inner < 0)
    throw shape_error(std::string("mote: cuda ") + kernel + ": negative extent");
  if (outer == 0 || inner == 0) return;
  if (inner == 1) {
    reduce_rows_kernel<T><<<row_blocks(outer), threads_per_block, 0, cuda_detail::stream()>>>(outer, dim, value, store);
  } else {
    const std::int64_t tiles = (inner + column_tile - 1) / column_tile;
    if (tiles > std::numeric_limits<int>::max())
      throw backend_error(std::string("mote: cuda ") + kernel + ": inner extent " + std::to_string(inner) + " is too large");
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(std::min<std::int64_t>(outer, 65535)));
    reduce_columns_kernel<T><<<grid, dim3(column_tile, row_split), 0, cuda_detail::stream()>>>(outer, dim, inner, value,
                                                                                             store);
  }
  check_launch(kernel);
}

template <class T>
struct broadcast_add_at {
  const T* g;
  T* dx;
  std::int64_t dim;
  std::int64_t inner;
  T scale;
  __device__ void operator()(std::int64_t flat) const {
    const std::int64_t i = flat % inner, o = flat / (dim * inner);
    dx[flat] += scale * g[o * inner + i];
  }
};

// a[r, c] * b[r, c] of packed [rows, cols] a and b, as a row reduction's value.
template <class T>
struct product_value {
  const T* a;
  const T* b;
  std::int64_t cols;
  __device__ T operator()(std::int64_t r, std::int64_t c, std::int64_t) const { return a[r * cols + c] * b[r * cols + c]; }
};

}  // namespace cuda_detail

// out[o, i] = scale * sum over d of x[o, d, i], for a packed [outer, dim, inner] x.
template <Real T>
void reduce_sum(cuda, const T* x, std::int64_t outer, std::int64_t dim, std::int64_t inner, T scale, T* out) {
  cuda_detail::reduce_middle(outer, dim, inner, cuda_detail::packed3_value<T>{x, dim, inner},
                             cuda_detail::assign_into<T>{out, scale}, "reduce_sum kernel");
}

// dx[o, d, i] += scale * g[o, i]: the backward of reduce_sum.
template <Real T>
void broadcast_add(cuda, const T* g, std::int64_t outer, std::int64_t dim, std::int64_t inner, T scale, T* dx) {
  if (outer <= 0 || dim <= 0 || inner <= 0) return;
  cuda_detail::for_each_index(outer * dim * inner, cuda_detail::broadcast_add_at<T>{g, dx, dim, inner, scale},
                              "broadcast_add kernel");
}

// out[r] = sum over c of a[r, c] * b[r, c] for packed [rows, cols] a and b.
template <Real T>
void row_dot(cuda, const T* a, const T* b, std::int64_t rows, std::int64_t cols, T* out) {
  cuda_detail::reduce_middle(rows, cols, std::int64_t{1}, cuda_detail::product_value<T>{a, b, cols},
                             cuda_detail::assign_into<T>{out, T(1)}, "row_dot kernel");
}

}  // namespace mote::backend
