#pragma once
// CUDA rotary position embedding in the Hugging Face Llama layout, with the semantics of
// backend/cpu/rope.hpp: over x [batch, heads, seq, head_dim], element i of a head's first half pairs
// with element i + head_dim/2 and both turn by position * theta^(-2i/head_dim). Positions are
// [batch, seq] (position_batch_stride = seq) or one [seq] row (stride 0), in device memory.
#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

// One thread per (row, i) pair; the angle in double, as the CPU tables are, then rounded to T.
template <class T>
struct rope_at {
  const T* in;
  const std::int32_t* positions;
  std::int64_t position_batch_stride;
  std::int64_t heads;
  std::int64_t seq;
  std::int64_t head_dim;
  double theta;
  T sign;  // +1 turns forward; -1 applies the transpose, for backward
  bool accumulate;
  T* out;
  __device__ void operator()(std::int64_t flat) const {
    const std::int64_t half = head_dim / 2, i = flat % half, row = flat / half;  // row = (b * heads + h) * seq + t
    const std::int64_t t = row % seq, b = row / (seq * heads);
    const double inv_freq = 1.0 / pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
    const double angle = static_cast<double>(positions[b * position_batch_stride + t]) * inv_freq;
    const T c = static_cast<T>(cos(angle)), s = static_cast<T>(sin(angle));
    const T* x = in + row * head_dim;
    T* y = out + row * head_dim;
    const T x1 = x[i], x2 = x[i + half];
    const T y1 = x1 * c - sign * x2 * s, y2 = x2 * c + sign * x1 * s;
    if (accumulate) {
      y[i] += y1;
      y[i + half] += y2;
    } else {
      y[i] = y1;
      y[i + half] = y2;
    }
  }
};

}  // namespace cuda_detail

// y = x * cos + rotate_half(x) * sin, where rotate_half(x) = [-x2, x1].
template <Real T>
void rope_forward(cuda, const T* x, const std::int32_t* positions, std::int64_t position_batch_stride,
                  std::int64_t batch, std::int64_t heads, std::int64_t seq, std::int64_t head_dim, double theta, T* y) {
  cuda_detail::for_each_index(batch * heads * seq * (head_dim / 2),
                              cuda_detail::rope_at<T>{x, positions, position_batch_stride, heads, seq, head_dim, theta,
                                                      T(1), false, y},
                              "rope_forward kernel");
}

// dx += R^T dy: a rotation's transpose turns by the opposite angle.
template <Real T>
void rope_backward(cuda, const T* dy, const std::int32_t* positions, std::int64_t position_batch_stride,
                   std::int64_t batch, std::int64_t heads, std::int64_t seq, std::int64_t head_dim, double theta,
                   T* dx) {
  cuda_detail::for_each_index(batch * heads * seq * (head_dim / 2),
                              cuda_detail::rope_at<T>{dy, positions, position_batch_stride, heads, seq, head_dim, theta,
                                                      T(-1), true, dx},
                              "rope_backward kernel");
}

}  // namespace mote::backend
