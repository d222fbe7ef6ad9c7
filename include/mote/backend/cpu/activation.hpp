#pragma once
// CPU activations: GELU (GPT-2's tanh form), SiLU, and SwiGLU = silu(gate) * up.
// Backward kernels recompute from the saved inputs and add into the gradients; null means "skip".
// Blocks go through Eigen arrays: for float, Eigen's tanh and exp are vectorized (libm's are scalar,
// and made GELU a fifth of a GPT-2 training step).
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "mote/backend/cpu/cpu.hpp"

namespace mote::backend {

namespace activation_detail {
inline constexpr double gelu_sqrt_2_over_pi = 0.7978845608028654;
inline constexpr double gelu_cubic = 0.044715;
inline constexpr std::int64_t block = 2048;

template <class T>
using Block = Eigen::Array<T, Eigen::Dynamic, 1, 0, block, 1>;  // on the stack, at most `block` values
template <class T>
using In = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using Out = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

// Calls fn(begin, length) over blocks of [0, n), in parallel when n is large.
template <class Fn>
void for_blocks(std::int64_t n, Fn&& fn) {
  const std::int64_t blocks = (n + block - 1) / block;
#pragma omp parallel for if (n > (1 << 15))
  for (std::int64_t b = 0; b < blocks; ++b) fn(b * block, std::min(block, n - b * block));
}

template <class T>
Block<T> sigmoid(const In<T>& x) {
  return T(1) / (T(1) + (-x).exp());
}
}  // namespace activation_detail

// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
template <class T>
void gelu_forward(cpu, const T* x, std::int64_t n, T* y) {
  using namespace activation_detail;
  const T k = T(gelu_sqrt_2_over_pi), c = T(gelu_cubic);
  for_blocks(n, [&](std::int64_t i, std::int64_t len) {
    const In<T> v(x + i, len);
    Out<T>(y + i, len) = T(0.5) * v * (T(1) + (k * (v + c * v.cube())).tanh());
  });
}

// dx (+)= dy * gelu'(x): added onto dx when `accumulate`, else written (dx is not read).
template <class T>
void gelu_backward(cpu, const T* x, const T* dy, std::int64_t n, bool accumulate, T* dx) {
  using namespace activation_detail;
  const T k = T(gelu_sqrt_2_over_pi), c = T(gelu_cubic);
  for_blocks(n, [&](std::int64_t i, std::int64_t len) {
    const In<T> v(x + i, len);
    const Block<T> t = (k * (v + c * v.cube())).tanh();
    const Block<T> d = In<T>(dy + i, len) *
                       (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t.square()) * k * (T(1) + T(3) * c * v.square()));
    if (accumulate)
      Out<T>(dx + i, len) += d;
    else
      Out<T>(dx + i, len) = d;
  });
}

// y = x * sigmoid(x)
template <class T>
void silu_forward(cpu, const T* x, std::int64_t n, T* y) {
  using namespace activation_detail;
  for_blocks(n, [&](std::int64_t i, std::int64_t len) {
    const In<T> v(x + i, len);
    Out<T>(y + i, len) = v * sigmoid<T>(v);
  });
}

// dx (+)= dy * silu'(x), as gelu_backward.
template <class T>
void silu_backward(cpu, const T* x, const T* dy, std::int64_t n, bool accumulate, T* dx) {
  using namespace activation_detail;
  for_blocks(n, [&](std::int64_t i, std::int64_t len) {
    const In<T> v(x + i, len);
    const Block<T> s = sigmoid<T>(v);
    const Block<T> d = In<T>(dy + i, len) * s * (T(1) + v * (T(1) - s));
    if (accumulate)
      Out<T>(dx + i, len) += d;
    else
      Out<T>(dx + i, len) = d;
  });
}

// y = silu(gate) * up, elementwise over n values.
template <class T>
void swiglu_forward(cpu, const T* gate, const T* up, std::int64_t n, T* y) {
  using namespace activation_detail;
  for_blocks(n, [&](std::int64_t i, std::int64_t len) {
    const In<T> g(gate + i, len);
    Out<T>(y + i, len) = g * sigmoid<T>(g) * In<T>(up + i, len);
  });
}

template <class T>
void swiglu_backward(cpu, const T* gate, const T* up, const T* dy, std::int64_t n, T* dgate, T* dup) {
  using namespace activation_detail;
  for_blocks(n, [&](std::int64_t i, std::int64_t len) {
    const In<T> g(gate + i, len), u(up + i, len), d(dy + i, len);
    const Block<T> s = sigmoid<T>(g);
    if (dgate) Out<T>(dgate + i, len) += d * u * s * (T(1) + g * (T(1) - s));
    if (dup) Out<T>(dup + i, len) += d * g * s;
  });
}

}  // namespace mote::backend
