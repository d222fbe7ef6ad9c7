#pragma once
// CPU gathers, scatter-adds and scatter-copies of slices along one dimension, for embedding,
// index_select, index_add and index_copy. Tensors are viewed as [outer, n, inner]; index has m entries, each in [0, n)
// (the autograd ops check that before calling).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "mote/backend/cpu/cpu.hpp"

namespace mote::backend {

// out[o, j, :] = x[o, index[j], :]. Each output row is one contiguous copy of inner elements.
template <class T>
void index_gather(cpu, const T* x, std::int64_t outer, std::int64_t n, std::int64_t inner, const std::int32_t* index,
                  std::int64_t m, T* out) {
  if (inner <= 0) return;
  const std::int64_t rows = outer * m;
#pragma omp parallel for if (rows > 1 && rows * inner > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t o = r / m, j = r % m;
    std::memcpy(out + r * inner, x + (o * n + index[j]) * inner, static_cast<std::size_t>(inner) * sizeof(T));
  }
}

// out[o, j, :] += x[o, index[j], :]: index_add's gradient for its source.
template <class T>
void index_gather_add(cpu, const T* x, std::int64_t outer, std::int64_t n, std::int64_t inner,
                      const std::int32_t* index, std::int64_t m, T* out) {
  const std::int64_t rows = outer * m;
#pragma omp parallel for if (rows > 1 && rows * inner > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t o = r / m, j = r % m;
    const T* s = x + (o * n + index[j]) * inner;
    T* d = out + r * inner;
#pragma omp simd
    for (std::int64_t i = 0; i < inner; ++i) d[i] += s[i];
  }
}

// dst[o, index[j], :] += src[o, j, :]; repeated indices accumulate.
template <class T>
void index_scatter_add(cpu, const T* src, std::int64_t outer, std::int64_t m, std::int64_t inner,
                       const std::int32_t* index, std::int64_t n, T* dst) {
  // Repeated indices make rows collide, so threads own (outer, column block) pairs instead of
  // rows: disjoint writes, and the sum order is fixed, so results repeat exactly.
  constexpr std::int64_t block = 256;
  const std::int64_t blocks = (inner + block - 1) / block;
  const std::int64_t tasks = outer * blocks;
#pragma omp parallel for if (tasks > 1 && outer * m * inner > (1 << 15))
  for (std::int64_t task = 0; task < tasks; ++task) {
    const std::int64_t o = task / blocks, i0 = (task % blocks) * block, i1 = std::min(inner, i0 + block);
    for (std::int64_t j = 0; j < m; ++j) {
      const T* s = src + (o * m + j) * inner;
      T* d = dst + (o * n + index[j]) * inner;
#pragma omp simd
      for (std::int64_t i = i0; i < i1; ++i) d[i] += s[i];
    }
  }
}

// index_scatter_add for an index without repeats: rows never collide, so each is one task.
template <class T>
void index_scatter_add_distinct(cpu, const T* src, std::int64_t outer, std::int64_t m, std::int64_t inner,
                                const std::int32_t* index, std::int64_t n, T* dst) {
  const std::int64_t rows = outer * m;
#pragma omp parallel for if (rows > 1 && rows * inner > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t o = r / m, j = r % m;
    const T* s = src + r * inner;
    T* d = dst + (o * n + index[j]) * inner;
#pragma omp simd
    for (std::int64_t i = 0; i < inner; ++i) d[i] += s[i];
  }
}

// dst[o, index[j], :] = src[o, j, :] for an index without repeats (index_copy): rows never collide.
template <class T>
void index_scatter_copy(cpu, const T* src, std::int64_t outer, std::int64_t m, std::int64_t inner,
                        const std::int32_t* index, std::int64_t n, T* dst) {
  if (inner <= 0) return;
  const std::int64_t rows = outer * m;
#pragma omp parallel for if (rows > 1 && rows * inner > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t o = r / m, j = r % m;
    std::memcpy(dst + (o * n + index[j]) * inner, src + r * inner, static_cast<std::size_t>(inner) * sizeof(T));
  }
}

}  // namespace mote::backend
