#pragma once
// CPU softmax and log-softmax over rows of a [rows, cols] buffer.
// Backward kernels add into dx and work from the saved output y, never from x.
#include <cmath>
#include <cstdint>

#include "mote/backend/cpu/cpu.hpp"
#include "mote/backend/cpu/row_exp.hpp"

namespace mote::backend {

// y = exp(x - max) / sum(exp(x - max)) per row; subtracting the max keeps exp finite.
template <class T>
void softmax_forward(cpu, const T* x, std::int64_t rows, std::int64_t cols, T* y) {
#pragma omp parallel for if (rows * cols > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    const T inv = T(1) / row_exp::exp_into(xr, row_exp::max(xr, cols), cols, yr);
    for (std::int64_t c = 0; c < cols; ++c) yr[c] *= inv;
  }
}

// dx += y * (dy - sum(dy * y)) per row.
template <class T>
void softmax_backward(cpu, const T* y, const T* dy, std::int64_t rows, std::int64_t cols, T* dx) {
#pragma omp parallel for if (rows * cols > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * cols;
    const T* gr = dy + r * cols;
    T* dr = dx + r * cols;
    T dot = 0;
    for (std::int64_t c = 0; c < cols; ++c) dot += gr[c] * yr[c];
    for (std::int64_t c = 0; c < cols; ++c) dr[c] += yr[c] * (gr[c] - dot);
  }
}

// y = x - max - log(sum(exp(x - max))) per row.
template <class T>
void log_softmax_forward(cpu, const T* x, std::int64_t rows, std::int64_t cols, T* y) {
#pragma omp parallel for if (rows * cols > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    const T max = row_exp::max(xr, cols);
    // (x - max) - log(sum), not x - (max + log(sum)): the latter rounds away log(sum) when |max| is large.
    const T log_sum = std::log(row_exp::sum_exp(xr, max, cols));
    for (std::int64_t c = 0; c < cols; ++c) yr[c] = (xr[c] - max) - log_sum;
  }
}

// dx += dy - exp(y) * sum(dy) per row.
template <class T>
void log_softmax_backward(cpu, const T* y, const T* dy, std::int64_t rows, std::int64_t cols, T* dx) {
#pragma omp parallel for if (rows * cols > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * cols;
    const T* gr = dy + r * cols;
    T* dr = dx + r * cols;
    T sum = 0;
    for (std::int64_t c = 0; c < cols; ++c) sum += gr[c];
    for (std::int64_t c = 0; c < cols; ++c) dr[c] += gr[c];
    row_exp::add_scaled_exp(yr, -sum, cols, dr);
  }
}

}  // namespace mote::backend
