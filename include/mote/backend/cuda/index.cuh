#pragma once
// CUDA gathers, scatter-adds and scatter-copies of slices along one dimension (embedding,
// index_select, index_add, index_copy),
// with the semantics of backend/cpu/index.hpp. Tensors are viewed as [outer, n, inner]; the index
// holds m entries in [0, n) and lives in device memory like every other kernel operand.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cstddef>
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

// With the rows sorted by destination (`keys`, stably, so `order` lists each destination's rows in
// ascending j): the thread of (o, p, i) where p starts a destination's segment sums that segment's
// rows in order and adds the sum once. Repeats never race, and the sum order is fixed.
template <class T>
struct scatter_add_segment {
  const T* src;
  const std::int32_t* keys;
  const std::int32_t* order;
  std::int64_t m;
  std::int64_t inner;
  std::int64_t n;
  T* dst;
  __device__ void operator()(std::int64_t flat) const {
    const std::int64_t i = flat % inner, row = flat / inner, p = row % m, o = row / m;
    const std::int32_t key = keys[p];
    if (p > 0 && keys[p - 1] == key) return;  // not the first row of its destination
    T sum = T(0);
    for (std::int64_t q = p; q < m && keys[q] == key; ++q) sum += src[(o * m + order[q]) * inner + i];
    dst[(o * n + key) * inner + i] += sum;
  }
};

struct iota_at {
  std::int32_t* out;
  __device__ void operator()(std::int64_t i) const { out[i] = static_cast<std::int32_t>(i); }
};

// Sorts the m entries of index (each in [0, n)) into keys, with their positions in order; radix
// sort is stable and runs on the default stream with scratch from the pool.
inline void sort_by_destination(const std::int32_t* index, std::int64_t m, std::int64_t n, std::int32_t* keys,
                                std::int32_t* order) {
  scratch<std::int32_t> positions(static_cast<std::size_t>(m));
  for_each_index(m, iota_at{positions.data()}, "index_scatter_add (positions) kernel");
  int bits = 1;
  while (bits < 31 && (std::int64_t{1} << bits) < n) ++bits;  // only the bits a destination can use
  std::size_t bytes = 0;
  const auto sort = [&](void* temp) {
    return cub::DeviceRadixSort::SortPairs(temp, bytes, index, keys, positions.data(), order, m, 0, bits,
                                           cuda_detail::stream());
  };
  check(sort(nullptr), "cub::DeviceRadixSort::SortPairs (sizing)");
  scratch<unsigned char> temp(std::max<std::size_t>(bytes, 1));
  check(sort(temp.data()), "cub::DeviceRadixSort::SortPairs");
}

// dst[o, index[j], i] (+= when accumulate, else =) src[o, j, i], one thread per element: the index
// must not repeat.
template <class T, bool accumulate>
struct scatter_distinct_at {
  const T* src;
  std::int64_t m;
  std::int64_t inner;
  const std::int32_t* index;
  std::int64_t n;
  T* dst;
  __device__ void operator()(std::int64_t flat) const {
    const std::int64_t i = flat % inner, row = flat / inner, j = row % m, o = row / m;
    if constexpr (accumulate) dst[(o * n + index[j]) * inner + i] += src[flat];
    else dst[(o * n + index[j]) * inner + i] = src[flat];
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

// dst[o, index[j], :] += src[o, j, :]; repeated indices accumulate, in order of j. The rows are
// sorted by destination first, so every destination row is summed by its own threads.
template <Real T>
void index_scatter_add(cuda, const T* src, std::int64_t outer, std::int64_t m, std::int64_t inner,
                       const std::int32_t* index, std::int64_t n, T* dst) {
  if (outer <= 0 || m <= 0 || inner <= 0) return;
  cuda_detail::scratch<std::int32_t> keys(static_cast<std::size_t>(m)), order(static_cast<std::size_t>(m));
  cuda_detail::sort_by_destination(index, m, n, keys.data(), order.data());
  cuda_detail::for_each_index(outer * m * inner,
                              cuda_detail::scatter_add_segment<T>{src, keys.data(), order.data(), m, inner, n, dst},
                              "index_scatter_add kernel");
}

// index_scatter_add for an index without repeats (an expert's tokens): every element in parallel,
// with no sort.
template <Real T>
void index_scatter_add_distinct(cuda, const T* src, std::int64_t outer, std::int64_t m, std::int64_t inner,
                                const std::int32_t* index, std::int64_t n, T* dst) {
  if (outer <= 0 || m <= 0 || inner <= 0) return;
  cuda_detail::for_each_index(outer * m * inner,
                              cuda_detail::scatter_distinct_at<T, true>{src, m, inner, index, n, dst},
                              "index_scatter_add_distinct kernel");
}

// dst[o, index[j], :] = src[o, j, :] for an index without repeats (index_copy).
template <Real T>
void index_scatter_copy(cuda, const T* src, std::int64_t outer, std::int64_t m, std::int64_t inner,
                        const std::int32_t* index, std::int64_t n, T* dst) {
  if (outer <= 0 || m <= 0 || inner <= 0) return;
  cuda_detail::for_each_index(outer * m * inner, cuda_detail::scatter_distinct_at<T, false>{src, m, inner, index, n, dst},
                              "index_scatter_copy kernel");
}

}  // namespace mote::backend
