#pragma once
// CPU reductions along one dimension of a tensor viewed as [outer, dim, inner], and their backward.
#include <algorithm>
#include <cstdint>

#include "mote/backend/cpu/cpu.hpp"

namespace mote::backend {

// out[o, i] = scale * sum over d of x[o, d, i]  (x viewed as [outer, dim, inner]).
template <class T>
void reduce_sum(cpu, const T* x, std::int64_t outer, std::int64_t dim, std::int64_t inner, T scale, T* out) {
  const bool parallel = outer * dim * inner > (1 << 16);
  if (inner == 1) {  // each output is the sum of one contiguous row
#pragma omp parallel for if (parallel && outer > 1)
    for (std::int64_t o = 0; o < outer; ++o) {
      const T* row = x + o * dim;
      T acc = T(0);
#pragma omp simd reduction(+ : acc)
      for (std::int64_t d = 0; d < dim; ++d) acc += row[d];
      out[o] = scale * acc;
    }
    return;
  }
  // Tasks are (outer, column block) pairs: contiguous row adds, and work even when outer is 1.
  constexpr std::int64_t block = 512;
  const std::int64_t blocks = (inner + block - 1) / block;
#pragma omp parallel for if (parallel && outer * blocks > 1)
  for (std::int64_t task = 0; task < outer * blocks; ++task) {
    const std::int64_t o = task / blocks, i0 = (task % blocks) * block, i1 = std::min(inner, i0 + block);
    T* y = out + o * inner;
    for (std::int64_t i = i0; i < i1; ++i) y[i] = T(0);
    for (std::int64_t d = 0; d < dim; ++d) {
      const T* row = x + (o * dim + d) * inner;
#pragma omp simd
      for (std::int64_t i = i0; i < i1; ++i) y[i] += row[i];
    }
    for (std::int64_t i = i0; i < i1; ++i) y[i] *= scale;
  }
}

// dx[o, d, i] += scale * g[o, i]: the backward of reduce_sum.
template <class T>
void broadcast_add(cpu, const T* g, std::int64_t outer, std::int64_t dim, std::int64_t inner, T scale, T* dx) {
#pragma omp parallel for if (outer * dim * inner > (1 << 16))
  for (std::int64_t row = 0; row < outer * dim; ++row) {
    const T* src = g + (row / dim) * inner;
    T* dst = dx + row * inner;
#pragma omp simd
    for (std::int64_t i = 0; i < inner; ++i) dst[i] += scale * src[i];
  }
}

// out[r] = sum_c a[r, c] * b[r, c] for row-major [rows, cols] a and b.
template <class T>
void row_dot(cpu, const T* a, const T* b, std::int64_t rows, std::int64_t cols, T* out) {
#pragma omp parallel for if (rows * cols > (1 << 16))
  for (std::int64_t r = 0; r < rows; ++r) {
    T acc = T(0);
#pragma omp simd reduction(+ : acc)
    for (std::int64_t c = 0; c < cols; ++c) acc += a[r * cols + c] * b[r * cols + c];
    out[r] = acc;
  }
}

}  // namespace mote::backend
