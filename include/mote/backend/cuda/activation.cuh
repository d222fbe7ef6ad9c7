#pragma once
// CUDA activations with the semantics of backend/cpu/activation.hpp: GELU (GPT-2's tanh form), SiLU
// and SwiGLU = silu(gate) * up. Backward recomputes from the saved inputs, adds into the gradients,
// and skips a null one.
#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/cuda/math.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

inline constexpr double gelu_sqrt_2_over_pi = 0.7978845608028654;
inline constexpr double gelu_cubic = 0.044715;

template <class T>
__device__ inline T sigmoid(T x) {
  return T(1) / (T(1) + device_exp(-x));
}

template <class T>
struct gelu_forward_at {
  const T* x;
  T* y;
  __device__ void operator()(std::int64_t i) const {
    const T v = x[i];
    y[i] = T(0.5) * v * (T(1) + device_tanh(T(gelu_sqrt_2_over_pi) * (v + T(gelu_cubic) * v * v * v)));
  }
};

template <class T>
struct gelu_backward_at {
  const T* x;
  const T* dy;
  bool accumulate;
  T* dx;
  __device__ void operator()(std::int64_t i) const {
    const T v = x[i], k = T(gelu_sqrt_2_over_pi), c = T(gelu_cubic);
    const T t = device_tanh(k * (v + c * v * v * v));
    const T d = dy[i] * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * k * (T(1) + T(3) * c * v * v));
    dx[i] = accumulate ? dx[i] + d : d;
  }
};

template <class T>
struct silu_forward_at {
  const T* x;
  T* y;
  __device__ void operator()(std::int64_t i) const { y[i] = x[i] * sigmoid(x[i]); }
};

template <class T>
struct silu_backward_at {
  const T* x;
  const T* dy;
  bool accumulate;
  T* dx;
  __device__ void operator()(std::int64_t i) const {
    const T s = sigmoid(x[i]);
    const T d = dy[i] * s * (T(1) + x[i] * (T(1) - s));
    dx[i] = accumulate ? dx[i] + d : d;
  }
};

template <class T>
struct swiglu_forward_at {
  const T* gate;
  const T* up;
  T* y;
  __device__ void operator()(std::int64_t i) const { y[i] = gate[i] * sigmoid(gate[i]) * up[i]; }
};

template <class T>
struct swiglu_backward_at {
  const T* gate;
  const T* up;
  const T* dy;
  T* dgate;
  T* dup;
  __device__ void operator()(std::int64_t i) const {
    const T g = gate[i], s = sigmoid(g);
    if (dgate) dgate[i] += dy[i] * up[i] * s * (T(1) + g * (T(1) - s));
    if (dup) dup[i] += dy[i] * g * s;
  }
};

}  // namespace cuda_detail

// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
template <Real T>
void gelu_forward(cuda, const T* x, std::int64_t n, T* y) {
  cuda_detail::for_each_index(n, cuda_detail::gelu_forward_at<T>{x, y}, "gelu_forward kernel");
}

template <Real T>
void gelu_backward(cuda, const T* x, const T* dy, std::int64_t n, bool accumulate, T* dx) {
  cuda_detail::for_each_index(n, cuda_detail::gelu_backward_at<T>{x, dy, accumulate, dx}, "gelu_backward kernel");
}

// y = x * sigmoid(x)
template <Real T>
void silu_forward(cuda, const T* x, std::int64_t n, T* y) {
  cuda_detail::for_each_index(n, cuda_detail::silu_forward_at<T>{x, y}, "silu_forward kernel");
}

template <Real T>
void silu_backward(cuda, const T* x, const T* dy, std::int64_t n, bool accumulate, T* dx) {
  cuda_detail::for_each_index(n, cuda_detail::silu_backward_at<T>{x, dy, accumulate, dx}, "silu_backward kernel");
}

// y = silu(gate) * up, elementwise over n values.
template <Real T>
void swiglu_forward(cuda, const T* gate, const T* up, std::int64_t n, T* y) {
  cuda_detail::for_each_index(n, cuda_detail::swiglu_forward_at<T>{gate, up, y}, "swiglu_forward kernel");
}

template <Real T>
void swiglu_backward(cuda, const T* gate, const T* up, const T* dy, std::int64_t n, T* dgate, T* dup) {
  if (!dgate && !dup) return;
  cuda_detail::for_each_index(n, cuda_detail::swiglu_backward_at<T>{gate, up, dy, dgate, dup}, "swiglu_backward kernel");
}

}  // namespace mote::backend
