#pragma once
// CPU copies behind the shape ops: row blocks at two strides (slice, concat, split) and
// 4-D strided gathers and scatter-adds (transpose). Shapes and strides are padded to rank 4.
#include <cstdint>
#include <cstring>

#include "mote/backend/cpu/cpu.hpp"

namespace mote::backend {

// dst[r * dst_stride + j] = src[r * src_stride + j] for r < rows, j < row_len.
template <class T>
void strided_block_copy(cpu, const T* src, std::int64_t src_stride, T* dst, std::int64_t dst_stride, std::int64_t rows,
                        std::int64_t row_len) {
  if (row_len <= 0) return;
#pragma omp parallel for if (rows > 1 && rows * row_len > (1 << 16))
  for (std::int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * dst_stride, src + r * src_stride, static_cast<std::size_t>(row_len) * sizeof(T));
}

// dst[r * dst_stride + j] += src[r * src_stride + j]: the backward of strided_block_copy.
template <class T>
void strided_block_add(cpu, const T* src, std::int64_t src_stride, T* dst, std::int64_t dst_stride, std::int64_t rows,
                       std::int64_t row_len) {
#pragma omp parallel for if (rows > 1 && rows * row_len > (1 << 16))
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * src_stride;
    T* d = dst + r * dst_stride;
#pragma omp simd
    for (std::int64_t j = 0; j < row_len; ++j) d[j] += s[j];
  }
}

// dst (packed, shape4) = src read through strides4. Rows of the last dim are the parallel unit.
template <class T>
void strided_gather(cpu, const T* src, const std::int64_t* shape4, const std::int64_t* strides4, T* dst) {
  const std::int64_t n1 = shape4[1], n2 = shape4[2], n3 = shape4[3];
  const std::int64_t rows = shape4[0] * n1 * n2;
#pragma omp parallel for if (rows > 1 && rows * n3 > (1 << 16))
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t i0 = r / (n1 * n2), i1 = (r / n2) % n1, i2 = r % n2;
    const T* s = src + i0 * strides4[0] + i1 * strides4[1] + i2 * strides4[2];
    T* d = dst + r * n3;
    if (strides4[3] == 1) {
      if (n3 > 0) std::memcpy(d, s, static_cast<std::size_t>(n3) * sizeof(T));
    } else {
      for (std::int64_t i3 = 0; i3 < n3; ++i3) d[i3] = s[i3 * strides4[3]];
    }
  }
}

// dst read through strides4 += src (packed, shape4). The strides must not map two elements to one
// address (true of any permutation of a packed layout), or parallel rows would race.
template <class T>
void strided_scatter_add(cpu, const T* src, const std::int64_t* shape4, const std::int64_t* strides4, T* dst) {
  const std::int64_t n1 = shape4[1], n2 = shape4[2], n3 = shape4[3];
  const std::int64_t rows = shape4[0] * n1 * n2;
#pragma omp parallel for if (rows > 1 && rows * n3 > (1 << 16))
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t i0 = r / (n1 * n2), i1 = (r / n2) % n1, i2 = r % n2;
    T* d = dst + i0 * strides4[0] + i1 * strides4[1] + i2 * strides4[2];
    const T* s = src + r * n3;
    for (std::int64_t i3 = 0; i3 < n3; ++i3) d[i3 * strides4[3]] += s[i3];
  }
}

}  // namespace mote::backend
