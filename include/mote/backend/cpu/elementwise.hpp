#pragma once
// CPU elementwise kernels: axpy, row scaling, binary ops with leading-dim broadcasting, scale.
// Backward kernels add into their outputs; a null gradient pointer means "not needed".
#include <cstdint>

#include "mote/backend/cpu/cpu.hpp"
#include "mote/backend/kernel_ops.hpp"

namespace mote::backend {

// y += alpha * x
template <class T>
void axpy(cpu, T alpha, const T* x, T* y, std::int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// y[r, :] = s[r] * x[r, :] for a row-major [rows, cols] x (x and y may alias).
template <class T>
void scale_rows(cpu, const T* x, const T* s, std::int64_t rows, std::int64_t cols, T* y) {
#pragma omp parallel for if (rows * cols > (1 << 16))
  for (std::int64_t r = 0; r < rows; ++r) {
    const T f = s[r];
#pragma omp simd
    for (std::int64_t c = 0; c < cols; ++c) y[r * cols + c] = f * x[r * cols + c];
  }
}

// out[i] = a[i mod na] (op) b[i mod nb], where na and nb each equal n or divide it
// (the shorter operand repeats over the leading dims of the longer).
template <class T>
void binary_forward(cpu, BinaryOp op, const T* a, std::int64_t na, const T* b, std::int64_t nb, T* out,
                    std::int64_t n) {
  const std::int64_t inner = na < nb ? na : nb;
  const std::int64_t outer = inner == 0 ? 0 : n / inner;
  const std::int64_t a_step = na == n ? inner : 0, b_step = nb == n ? inner : 0;
#pragma omp parallel for if (n > (1 << 16))
  for (std::int64_t o = 0; o < outer; ++o) {
    const T* ar = a + o * a_step;
    const T* br = b + o * b_step;
    T* y = out + o * inner;
    switch (op) {
      case BinaryOp::add: for (std::int64_t i = 0; i < inner; ++i) y[i] = ar[i] + br[i]; break;
      case BinaryOp::sub: for (std::int64_t i = 0; i < inner; ++i) y[i] = ar[i] - br[i]; break;
      case BinaryOp::mul: for (std::int64_t i = 0; i < inner; ++i) y[i] = ar[i] * br[i]; break;
      case BinaryOp::div: for (std::int64_t i = 0; i < inner; ++i) y[i] = ar[i] / br[i]; break;
    }
  }
}

// da += d(out)/da * dout and db likewise, summing over the broadcast dims of the shorter operand.
template <class T>
void binary_backward(cpu, BinaryOp op, const T* a, std::int64_t na, const T* b, std::int64_t nb, const T* dout,
                     std::int64_t n, T* da, T* db) {
  const std::int64_t inner = na < nb ? na : nb;
  const std::int64_t outer = inner == 0 ? 0 : n / inner;
  const std::int64_t a_step = na == n ? inner : 0, b_step = nb == n ? inner : 0;
  // Rows are independent unless an operand is broadcast: then its gradient sums across rows.
  const bool a_summed = a_step == 0 && outer > 1, b_summed = b_step == 0 && outer > 1;
  const bool parallel = n > (1 << 16) && !a_summed && !b_summed;
#pragma omp parallel for if (parallel)
  for (std::int64_t o = 0; o < outer; ++o) {
    const T* ar = a + o * a_step;
    const T* br = b + o * b_step;
    const T* g = dout + o * inner;
    T* ga = da ? da + o * a_step : nullptr;
    T* gb = db ? db + o * b_step : nullptr;
    for (std::int64_t i = 0; i < inner; ++i) {
      switch (op) {
        case BinaryOp::add:
          if (ga) ga[i] += g[i];
          if (gb) gb[i] += g[i];
          break;
        case BinaryOp::sub:
          if (ga) ga[i] += g[i];
          if (gb) gb[i] -= g[i];
          break;
        case BinaryOp::mul:
          if (ga) ga[i] += g[i] * br[i];
          if (gb) gb[i] += g[i] * ar[i];
          break;
        case BinaryOp::div:
          if (ga) ga[i] += g[i] / br[i];
          if (gb) gb[i] -= g[i] * ar[i] / (br[i] * br[i]);
          break;
      }
    }
  }
}

// out = s * x
template <class T>
void scale_forward(cpu, const T* x, T s, T* out, std::int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) out[i] = s * x[i];
}

}  // namespace mote::backend
