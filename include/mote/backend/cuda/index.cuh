#pragma once
// CUDA gathers and scatter-adds of slices along one dimension (embedding, index_select, index_add),
// with the semantics of backend/cpu/index.hpp. Tensors are viewed as [outer, n, inner]; the index
// holds m entries in [0, n) and lives in device memory like every other kernel operand.
#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

// out[o, j, i] (=, or += when accumulate) x[o, index[j], i], one thread per output element.
template <class T, bool accumulate>
struct gather_at {
  const T* x;
  std::int64_t n;
  std::int64_t inner;
  const std::int32_t* index;
  std::int64_t m;
  T* out;
  __device__ void operator()(std::int64_t flat) const {
    const std::int64_t i = flat % inner, row = flat / inner, j = row % m, o = row / m;
    const T v = x[(o * n + index[j]) * inner + i];
    if constexpr (accumulate) out[flat] += v;
    else out[flat] = v;
  }
};

// One thread per (o, i) walks j in order: repeated indices then never race, and the sum order is fixed.
template <class T>
struct scatter_add_column {
  const T* src;
  std::int64_t m;
  std::int64_t inner;
  const std::int32_t* index;
  std::int64_t n;
  T* dst;
  __device__ void operator()(std::int64_t flat) const {
    const std::int64_t i = flat % inner, o = flat / inner;
    for (std::int64_t j = 0; j < m; ++j) dst[(o * n + index[j]) * inner + i] += src[(o * m + j) * inner + i];
  }
};

// dst[o, index[j], i] += src[o, j, i], one thread per element: the index must not repeat.
template <class T>
struct scatter_add_distinct_at {
  const T* src;
  std::int64_t m;
  std::int64_t inner;
  const std::int32_t* index;
  std::int64_t n;
  T* dst;
  __device__ void operator()(std::int64_t flat) const {
    const std::int64_t i = flat % inner, row = flat / inner, j = row % m, o = row / m;
    dst[(o * n + index[j]) * inner + i] += src[flat];
  }
};

}  // namespace cuda_detail

// out[o, j, :] = x[o, index[j], :]
template <Real T>
void index_gather(cuda, const T* x, std::int64_t outer, std::int64_t n, std::int64_t inner, const std::int32_t* index,
                  std::int64_t m, T* out) {
  if (outer <= 0 || m <= 0 || inner <= 0) return;
  cuda_detail::for_each_index(outer * m * inner, cuda_detail::gather_at<T, false>{x, n, inner, index, m, out},
                              "index_gather kernel");
}

// out[o, j, :] += x[o, index[j], :]: index_add's gradient for its source.
template <Real T>
void index_gather_add(cuda, const T* x, std::int64_t outer, std::int64_t n, std::int64_t inner,
                      const std::int32_t* index, std::int64_t m, T* out) {
  if (outer <= 0 || m <= 0 || inner <= 0) return;
  cuda_detail::for_each_index(outer * m * inner, cuda_detail::gather_at<T, true>{x, n, inner, index, m, out},
                              "index_gather_add kernel");
}

// dst[o, index[j], :] += src[o, j, :]; repeated indices accumulate, in order of j.
template <Real T>
void index_scatter_add(cuda, const T* src, std::int64_t outer, std::int64_t m, std::int64_t inner,
                       const std::int32_t* index, std::int64_t n, T* dst) {
  if (outer <= 0 || m <= 0 || inner <= 0) return;
  cuda_detail::for_each_index(outer * inner, cuda_detail::scatter_add_column<T>{src, m, inner, index, n, dst},
                              "index_scatter_add kernel");
}

// index_scatter_add for an index without repeats (an expert's tokens): every element in parallel,
// where the general kernel gives each column to one thread that walks all m rows.
template <Real T>
void index_scatter_add_distinct(cuda, const T* src, std::int64_t outer, std::int64_t m, std::int64_t inner,
                                const std::int32_t* index, std::int64_t n, T* dst) {
  if (outer <= 0 || m <= 0 || inner <= 0) return;
  cuda_detail::for_each_index(outer * m * inner,
                              cuda_detail::scatter_add_distinct_at<T>{src, m, inner, index, n, dst},
                              "index_scatter_add_distinct kernel");
}

}  // namespace mote::backend
