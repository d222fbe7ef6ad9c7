#pragma once
// CUDA copies behind the shape ops, with the semantics of backend/cpu/shape_ops.hpp: row blocks at
// two strides (slice, concat, split) and 4-D strided gathers and scatter-adds (transpose).
#include <cuda_runtime.h>

#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

template <class T>
struct strided_block_add_at {
  const T* src;
  std::int64_t src_stride;
  T* dst;
  std::int64_t dst_stride;
  std::int64_t row_len;
  __device__ void operator()(std::int64_t i) const {
    const std::int64_t r = i / row_len, j = i % row_len;
    dst[r * dst_stride + j] += src[r * src_stride + j];
  }
};

// dst[offset(i)] += src[i] for the packed index i of a 4-D view.
template <class T>
struct strided_scatter_add_at {
  const T* src;
  T* dst;
  view4 view;
  __device__ void operator()(std::int64_t i) const { dst[view.offset(i)] += src[i]; }
};

}  // namespace cuda_detail

// dst[r * dst_stride + j] = src[r * src_stride + j] for r < rows, j < row_len: one 2-D copy.
template <Real T>
void strided_block_copy(cuda, const T* src, std::int64_t src_stride, T* dst, std::int64_t dst_stride, std::int64_t rows,
                        std::int64_t row_len) {
  if (rows <= 0 || row_len <= 0) return;
  const auto bytes = [](std::int64_t count) { return static_cast<std::size_t>(count) * sizeof(T); };
  cuda_detail::check(cudaMemcpy2DAsync(dst, bytes(dst_stride), src, bytes(src_stride), bytes(row_len),
                                       static_cast<std::size_t>(rows), cudaMemcpyDeviceToDevice, cuda_detail::stream()),
                     "cudaMemcpy2DAsync (strided_block_copy)");
}

// dst[r * dst_stride + j] += src[r * src_stride + j]: the backward of strided_block_copy.
template <Real T>
void strided_block_add(cuda, const T* src, std::int64_t src_stride, T* dst, std::int64_t dst_stride, std::int64_t rows,
                       std::int64_t row_len) {
  if (rows <= 0 || row_len <= 0) return;
  cuda_detail::for_each_index(rows * row_len,
                              cuda_detail::strided_block_add_at<T>{src, src_stride, dst, dst_stride, row_len},
                              "strided_block_add kernel");
}

// dst (packed, shape4) = src read through strides4.
template <Real T>
void strided_gather(cuda, const T* src, const std::int64_t* shape4, const std::int64_t* strides4, T* dst) {
  strided_copy(cuda{}, src, shape4, strides4, dst);
}

// dst read through strides4 += src (packed, shape4). The strides must not map two elements to one
// address (true of any permutation of a packed layout), or threads would race.
template <Real T>
void strided_scatter_add(cuda, const T* src, const std::int64_t* shape4, const std::int64_t* strides4, T* dst) {
  std::int64_t n = 0;
  const cuda_detail::view4 view = cuda_detail::make_view4(shape4, strides4, n);
  if (n == 0) return;  // also keeps the kernel's modulo away from a zero extent
  cuda_detail::for_each_index(n, cuda_detail::strided_scatter_add_at<T>{src, dst, view}, "strided_scatter_add kernel");
}

}  // namespace mote::backend
