#pragma once
// CPU activations: GELU (GPT-2's tanh form), SiLU, and SwiGLU = silu(gate) * up.
// Backward kernels recompute from the saved inputs and add into the gradients; null means "skip".
#include <cmath>
#include <cstdint>

#include "mote/backend/cpu/cpu.hpp"

namespace mote::backend {

namespace activation_detail {
inline constexpr double gelu_sqrt_2_over_pi = 0.7978845608028654;
inline constexpr double gelu_cubic = 0.044715;

template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
}  // namespace activation_detail

// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
template <class T>
void gelu_forward(cpu, const T* x, std::int64_t n, T* y) {
  const T k = T(activation_detail::gelu_sqrt_2_over_pi), c = T(activation_detail::gelu_cubic);
#pragma omp parallel for if (n > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    y[i] = T(0.5) * v * (T(1) + std::tanh(k * (v + c * v * v * v)));
  }
}

template <class T>
void gelu_backward(cpu, const T* x, const T* dy, std::int64_t n, T* dx) {
  const T k = T(activation_detail::gelu_sqrt_2_over_pi), c = T(activation_detail::gelu_cubic);
#pragma omp parallel for if (n > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    const T t = std::tanh(k * (v + c * v * v * v));
    const T slope = T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * k * (T(1) + T(3) * c * v * v);
    dx[i] += dy[i] * slope;
  }
}

// y = x * sigmoid(x)
template <class T>
void silu_forward(cpu, const T* x, std::int64_t n, T* y) {
#pragma omp parallel for if (n > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) y[i] = x[i] * activation_detail::sigmoid(x[i]);
}

template <class T>
void silu_backward(cpu, const T* x, const T* dy, std::int64_t n, T* dx) {
#pragma omp parallel for if (n > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    const T s = activation_detail::sigmoid(x[i]);
    dx[i] += dy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}

// y = silu(gate) * up, elementwise over n values.
template <class T>
void swiglu_forward(cpu, const T* gate, const T* up, std::int64_t n, T* y) {
#pragma omp parallel for if (n > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) y[i] = gate[i] * activation_detail::sigmoid(gate[i]) * up[i];
}

template <class T>
void swiglu_backward(cpu, const T* gate, const T* up, const T* dy, std::int64_t n, T* dgate, T* dup) {
#pragma omp parallel for if (n > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    const T s = activation_detail::sigmoid(gate[i]);
    if (dgate) dgate[i] += dy[i] * up[i] * s * (T(1) + gate[i] * (T(1) - s));
    if (dup) dup[i] += dy[i] * gate[i] * s;
  }
}

}  // namespace mote::backend
