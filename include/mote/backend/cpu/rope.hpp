#pragma once
// CPU rotary position embedding in the Hugging Face Llama layout: over x [batch, heads, seq, head_dim],
// element i of the first half of a head pairs with element i + head_dim/2, and both turn by the
// angle position * theta^(-2i/head_dim). Positions are [batch, seq] (position_batch_stride = seq)
// or one [seq] row shared by the batch (position_batch_stride = 0).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mote/backend/cpu/cpu.hpp"

namespace mote::backend {

namespace rope_detail {
// cos and sin for every (position row, token, frequency), computed once in double and shared by all heads.
template <class T>
void rope_tables(const std::int32_t* positions, std::int64_t position_rows, std::int64_t seq, std::int64_t head_dim,
                 double theta, std::vector<T>& cos_table, std::vector<T>& sin_table) {
  const std::int64_t half = head_dim / 2;
  std::vector<double> inv_freq(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i)
    inv_freq[static_cast<std::size_t>(i)] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  const std::int64_t n = position_rows * seq;
  cos_table.resize(static_cast<std::size_t>(n * half));
  sin_table.resize(static_cast<std::size_t>(n * half));
#pragma omp parallel for if (n * half > (1 << 14))
  for (std::int64_t p = 0; p < n; ++p)
    for (std::int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(positions[p]) * inv_freq[static_cast<std::size_t>(i)];
      cos_table[static_cast<std::size_t>(p * half + i)] = static_cast<T>(std::cos(angle));
      sin_table[static_cast<std::size_t>(p * half + i)] = static_cast<T>(std::sin(angle));
    }
}

// out (=, or += when accumulate) the rotation of in by +angle (forward) or -angle (the transpose, for backward).
template <class T>
void rope_apply(const T* in, const std::int32_t* positions, std::int64_t position_batch_stride, std::int64_t batch,
                std::int64_t heads, std::int64_t seq, std::int64_t head_dim, double theta, bool inverse,
                bool accumulate, T* out) {
  const std::int64_t position_rows = position_batch_stride == 0 ? 1 : batch;
  std::vector<T> cos_table, sin_table;
  rope_tables(positions, position_rows, seq, head_dim, theta, cos_table, sin_table);
  const std::int64_t half = head_dim / 2;
  const T sign = inverse ? T(-1) : T(1);
#pragma omp parallel for if (batch * heads * seq * head_dim > (1 << 15))
  for (std::int64_t bh = 0; bh < batch * heads; ++bh) {
    const std::int64_t b = bh / heads;
    const std::int64_t table_row = position_batch_stride == 0 ? 0 : b * seq;
    for (std::int64_t t = 0; t < seq; ++t) {
      const T* xr = in + (bh * seq + t) * head_dim;
      T* yr = out + (bh * seq + t) * head_dim;
      const T* c = cos_table.data() + (table_row + t) * half;
      const T* s = sin_table.data() + (table_row + t) * half;
      for (std::int64_t i = 0; i < half; ++i) {
        const T x1 = xr[i], x2 = xr[i + half];
        const T y1 = x1 * c[i] - sign * x2 * s[i];
        const T y2 = x2 * c[i] + sign * x1 * s[i];
        if (accumulate) {
          yr[i] += y1;
          yr[i + half] += y2;
        } else {
          yr[i] = y1;
          yr[i + half] = y2;
        }
      }
    }
  }
}
}  // namespace rope_detail

// y = x * cos + rotate_half(x) * sin, where rotate_half(x) = [-x2, x1].
template <class T>
void rope_forward(cpu, const T* x, const std::int32_t* positions, std::int64_t position_batch_stride,
                  std::int64_t batch, std::int64_t heads, std::int64_t seq, std::int64_t head_dim, double theta, T* y) {
  rope_detail::rope_apply(x, positions, position_batch_stride, batch, heads, seq, head_dim, theta, false, false, y);
}

// dx += R^T dy: a rotation's transpose turns by the opposite angle.
template <class T>
void rope_backward(cpu, const T* dy, const std::int32_t* positions, std::int64_t position_batch_stride,
                   std::int64_t batch, std::int64_t heads, std::int64_t seq, std::int64_t head_dim, double theta,
                   T* dx) {
  rope_detail::rope_apply(dy, positions, position_batch_stride, batch, heads, seq, head_dim, theta, true, true, dx);
}

}  // namespace mote::backend
