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
  if (n <= (1 << 16)) {  // no region at all: even an if(false) one starts a libgomp team when nested
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
    return;
  }
#pragma omp parallel for simd
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

namespace elementwise_detail {
// Rows of the broadcast: the shorter operand's length. Equal lengths have no broadcast, so they
// are cut into chunks that threads can share (one row of the whole length would run on one thread).
inline std::int64_t row_length(std::int64_t na, std::int64_t nb, std::int64_t n) {
  const std::int64_t shorter = na < nb ? na : nb;
  return na == n && nb == n ? (n < 4096 ? n : 4096) : shorter;
}

// Calls fn(apply) with apply(x, y) = x (op) y: the op is chosen once, outside the loops, so that
// they vectorize.
template <class T, class Fn>
void for_op(BinaryOp op, Fn&& fn) {
  switch (op) {
    case BinaryOp::add: fn([](T x, T y) { return x + y; }); break;
    case BinaryOp::sub: fn([](T x, T y) { return x - y; }); break;
    case BinaryOp::mul: fn([](T x, T y) { return x * y; }); break;
    case BinaryOp::div: fn([](T x, T y) { return x / y; }); break;
  }
}
}  // namespace elementwise_detail

// out[i] = a[i mod na] (op) b[i mod nb], where na and nb each equal n or divide it
// (the shorter operand repeats over the leading dims of the longer).
template <class T>
void binary_forward(cpu, BinaryOp op, const T* a, std::int64_t na, const T* b, std::int64_t nb, T* out,
                    std::int64_t n) {
  const std::int64_t inner = elementwise_detail::row_length(na, nb, n);
  const std::int64_t rows = inner == 0 ? 0 : (n + inner - 1) / inner;
  const std::int64_t a_step = na == n ? inner : 0, b_step = nb == n ? inner : 0;
  elementwise_detail::for_op<T>(op, [&](auto apply) {
#pragma omp parallel for if (n > (1 << 16))
    for (std::int64_t o = 0; o < rows; ++o) {
      const T* ar = a + o * a_step;
      const T* br = b + o * b_step;
      T* y = out + o * inner;
      const std::int64_t len = n - o * inner < inner ? n - o * inner : inner;
#pragma omp simd
      for (std::int64_t i = 0; i < len; ++i) y[i] = apply(ar[i], br[i]);
    }
  });
}

// da += d(out)/da * dout and db likewise, summing over the broadcast dims of the shorter operand.
template <class T>
void binary_backward(cpu, BinaryOp op, const T* a, std::int64_t na, const T* b, std::int64_t nb, const T* dout,
                     std::int64_t n, T* da, T* db) {
  const std::int64_t inner = elementwise_detail::row_length(na, nb, n);
  const std::int64_t rows = inner == 0 ? 0 : (n + inner - 1) / inner;
  const std::int64_t a_step = na == n ? inner : 0, b_step = nb == n ? inner : 0;
  // Rows are independent unless a broadcast operand's gradient is wanted: it sums across rows.
  const bool a_summed = da && a_step == 0 && rows > 1, b_summed = db && b_step == 0 && rows > 1;
  const bool parallel = n > (1 << 16) && !a_summed && !b_summed;
  // grad_a(g, x, y) and grad_b(g, x, y): what g adds to a's and b's gradients at a = x, b = y.
  const auto rows_with = [&](auto grad_a, auto grad_b) {
#pragma omp parallel for if (parallel)
    for (std::int64_t o = 0; o < rows; ++o) {
      const T* ar = a + o * a_step;
      const T* br = b + o * b_step;
      const T* g = dout + o * inner;
      const std::int64_t len = n - o * inner < inner ? n - o * inner : inner;
      if (T* ga = da ? da + o * a_step : nullptr) {
#pragma omp simd
        for (std::int64_t i = 0; i < len; ++i) ga[i] += grad_a(g[i], ar[i], br[i]);
      }
      if (T* gb = db ? db + o * b_step : nullptr) {
#pragma omp simd
        for (std::int64_t i = 0; i < len; ++i) gb[i] += grad_b(g[i], ar[i], br[i]);
      }
    }
  };
  switch (op) {
    case BinaryOp::add: rows_with([](T g, T, T) { return g; }, [](T g, T, T) { return g; }); break;
    case BinaryOp::sub: rows_with([](T g, T, T) { return g; }, [](T g, T, T) { return -g; }); break;
    case BinaryOp::mul: rows_with([](T g, T, T y) { return g * y; }, [](T g, T x, T) { return g * x; }); break;
    case BinaryOp::div:
      rows_with([](T g, T, T y) { return g / y; }, [](T g, T x, T y) { return -(g * x / (y * y)); });
      break;
  }
}

// out = s * x
template <class T>
void scale_forward(cpu, const T* x, T s, T* out, std::int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) out[i] = s * x[i];
}

}  // namespace mote::backend
