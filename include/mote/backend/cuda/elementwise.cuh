#pragma once
// CUDA elementwise kernels: axpy, binary ops with leading-dim broadcasting, scale, per-row scale.
// Same semantics as backend/cpu/elementwise.hpp: backward kernels add into their outputs and a
// null gradient pointer means "not needed".
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform.h>

#include <cstdint>
#include <string>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/cuda/reduce.cuh"
#include "mote/backend/kernel_ops.hpp"
#include "mote/core/dtype.hpp"
#include "mote/core/error.hpp"

namespace mote::backend {

namespace cuda_detail {

template <class T>
__device__ inline T apply_binary(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return a;
}
// d(a op b)/da * g
template <class T>
__device__ inline T binary_grad_a(BinaryOp op, T a, T b, T g) {
  (void)a;
  switch (op) {
    case BinaryOp::add: return g;
    case BinaryOp::sub: return g;
    case BinaryOp::mul: return g * b;
    case BinaryOp::div: return g / b;
  }
  return T(0);
}
// d(a op b)/db * g
template <class T>
__device__ inline T binary_grad_b(BinaryOp op, T a, T b, T g) {
  switch (op) {
    case BinaryOp::add: return g;
    case BinaryOp::sub: return -g;
    case BinaryOp::mul: return g * a;
    case BinaryOp::div: return -(g * a / (b * b));
  }
  return T(0);
}

// Operands of a broadcast binary op: element i of the output reads a[i mod na] and b[i mod nb].
template <class T>
struct binary_operands {
  const T* a;
  std::int64_t na;
  const T* b;
  std::int64_t nb;
  std::int64_t n;
  // The modulo is skipped for the full-length operand, the common case.
  __device__ T a_at(std::int64_t i) const { return a[na == n ? i : i % na]; }
  __device__ T b_at(std::int64_t i) const { return b[nb == n ? i : i % nb]; }
};

template <class T>
struct binary_forward_at {
  BinaryOp op;
  binary_operands<T> in;
  __device__ T operator()(std::int64_t i) const { return apply_binary(op, in.a_at(i), in.b_at(i)); }
};

// The gradient contribution of output element i to operand a (or b when for_b).
template <class T>
struct binary_grad_at {
  BinaryOp op;
  binary_operands<T> in;
  const T* dout;
  bool for_b;
  __device__ T operator()(std::int64_t i) const {
    return for_b ? binary_grad_b(op, in.a_at(i), in.b_at(i), dout[i]) : binary_grad_a(op, in.a_at(i), in.b_at(i), dout[i]);
  }
};

// Full-length operand: grad[i] += contribution(i).
template <class T>
struct add_grad_elementwise {
  binary_grad_at<T> contribution;
  T* grad;
  __device__ void operator()(std::int64_t i) const { grad[i] += contribution(i); }
};

// Repeated operand of length m: grad[j] += sum over r of contribution(r * m + j), a column sum.
template <class T>
struct repeated_grad_value {
  binary_grad_at<T> contribution;
  std::int64_t m;
  __device__ T operator()(std::int64_t, std::int64_t r, std::int64_t j) const { return contribution(r * m + j); }
};

template <class T>
struct axpy_op {
  T alpha;
  __device__ T operator()(T x, T y) const { return y + alpha * x; }
};

template <class T>
struct scale_op {
  T s;
  __device__ T operator()(T x) const { return s * x; }
};

template <class T>
struct scale_rows_at {
  const T* x;
  const T* s;
  std::int64_t cols;
  T* y;
  __device__ void operator()(std::int64_t i) const { y[i] = s[i / cols] * x[i]; }
};

// Rejects operand lengths outside the repeat rule before a kernel could index out of range.
inline void check_broadcast(std::int64_t na, std::int64_t nb, std::int64_t n, const char* kernel) {
  const auto fits = [n](std::int64_t m) { return m == n || (m > 0 && n % m == 0); };
  if (n < 0 || !fits(na) || !fits(nb))
    throw shape_error(std::string("mote: cuda ") + kernel + ": operand lengths " + std::to_string(na) + " and " +
                      std::to_string(nb) + " must each equal or divide the output length " + std::to_string(n));
}

template <class T>
void add_binary_grad(BinaryOp op, const binary_operands<T>& in, const T* dout, bool for_b, T* grad) {
  const std::int64_t m = for_b ? in.nb : in.na;
  const binary_grad_at<T> contribution{op, in, dout, for_b};
  if (m == in.n) {
    for_each_index(in.n, add_grad_elementwise<T>{contribution, grad}, "binary_backward kernel");
  } else {
    reduce_middle(std::int64_t{1}, in.n / m, m, repeated_grad_value<T>{contribution, m}, accumulate_into<T>{grad, T(1)},
                  "binary_backward (broadcast) kernel");
  }
}

}  // namespace cuda_detail

// y += alpha * x
template <Real T>
void axpy(cuda, T alpha, const T* x, T* y, std::int64_t n) {
  if (n <= 0) return;
  cuda_detail::run_thrust("transform (axpy)", [&] {
    thrust::transform(cuda_detail::thrust_policy(), x, x + n, y, y, cuda_detail::axpy_op<T>{alpha});
  });
}

// out[i] = a[i mod na] (op) b[i mod nb], where na and nb each equal n or divide it.
template <Real T>
void binary_forward(cuda, BinaryOp op, const T* a, std::int64_t na, const T* b, std::int64_t nb, T* out, std::int64_t n) {
  cuda_detail::check_broadcast(na, nb, n, "binary_forward");
  if (n == 0) return;
  const cuda_detail::binary_forward_at<T> at{op, {a, na, b, nb, n}};
  cuda_detail::run_thrust("transform (binary_forward)", [&] {
    thrust::transform(cuda_detail::thrust_policy(), thrust::counting_iterator<std::int64_t>(0),
                      thrust::counting_iterator<std::int64_t>(n), out, at);
  });
}

// da += d(out)/da * dout and db likewise, summing over the dims a shorter operand was repeated across.
// da and db run one after the other on the stream, so they may even be the same buffer (x + x).
template <Real T>
void binary_backward(cuda, BinaryOp op, const T* a, std::int64_t na, const T* b, std::int64_t nb, const T* dout,
                     std::int64_t n, T* da, T* db) {
  cuda_detail::check_broadcast(na, nb, n, "binary_backward");
  if (n == 0) return;
  const cuda_detail::binary_operands<T> in{a, na, b, nb, n};
  if (da) cuda_detail::add_binary_grad(op, in, dout, false, da);
  if (db) cuda_detail::add_binary_grad(op, in, dout, true, db);
}

// out = s * x
template <Real T>
void scale_forward(cuda, const T* x, T s, T* out, std::int64_t n) {
  if (n <= 0) return;
  cuda_detail::run_thrust("transform (scale)", [&] {
    thrust::transform(cuda_detail::thrust_policy(), x, x + n, out, cuda_detail::scale_op<T>{s});
  });
}

// y[r, :] = s[r] * x[r, :] for a packed [rows, cols] x (x and y may alias: each element is read, then written).
template <Real T>
void scale_rows(cuda, const T* x, const T* s, std::int64_t rows, std::int64_t cols, T* y) {
  if (rows <= 0 || cols <= 0) return;
  cuda_detail::for_each_index(rows * cols, cuda_detail::scale_rows_at<T>{x, s, cols, y}, "scale_rows kernel");
}

}  // namespace mote::backend
