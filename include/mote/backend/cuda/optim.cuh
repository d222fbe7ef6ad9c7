#pragma once
// CUDA optimizer updates with the semantics of the CPU kernels in optim/adamw.hpp and optim/sgd.hpp:
// one thread per element; the step's scalars come from the host.
#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/cuda/math.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

template <class T>
struct adamw_at {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  T decay, beta1, beta2, eps, step_size, bias_correction2_sqrt;
  __device__ void operator()(std::int64_t i) const {
    const T g = grad[i];
    const T m = exp_avg[i] * beta1 + (T(1) - beta1) * g;
    const T v = exp_avg_sq[i] * beta2 + (T(1) - beta2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const T denom = device_sqrt(v) / bias_correction2_sqrt + eps;
    param[i] = param[i] * decay - step_size * (m / denom);
  }
};

template <class T>
struct sgd_at {
  T* param;
  const T* grad;
  T* momentum_buffer;
  T lr, momentum, dampening, weight_decay;
  bool nesterov, first_update;
  __device__ void operator()(std::int64_t i) const {
    T d = grad[i];
    if (weight_decay != T(0)) d += weight_decay * param[i];
    if (momentum_buffer) {
      const T buf = first_update ? d : momentum_buffer[i] * momentum + (T(1) - dampening) * d;
      momentum_buffer[i] = buf;
      d = nesterov ? d + momentum * buf : buf;
    }
    param[i] -= lr * d;
  }
};

}  // namespace cuda_detail

// param *= decay, then the Adam step with step_size = lr / (1 - beta1^t) and
// bias_correction2_sqrt = sqrt(1 - beta2^t), both computed on the host.
template <Real T>
void adamw_update(cuda, T* param, const T* grad, T* exp_avg, T* exp_avg_sq, std::int64_t n, T decay, T beta1, T beta2,
                  T eps, T step_size, T bias_correction2_sqrt) {
  cuda_detail::for_each_index(
      n, cuda_detail::adamw_at<T>{param, grad, exp_avg, exp_avg_sq, decay, beta1, beta2, eps, step_size, bias_correction2_sqrt},
      "adamw_update kernel");
}

// One SGD update; momentum_buffer is null when momentum is 0.
template <Real T>
void sgd_update(cuda, T* param, const T* grad, T* momentum_buffer, std::int64_t n, T lr, T momentum, T dampening,
                T weight_decay, bool nesterov, bool first_update) {
  cuda_detail::for_each_index(n,
                              cuda_detail::sgd_at<T>{param, grad, momentum_buffer, lr, momentum, dampening, weight_decay,
                                                     nesterov, first_update},
                              "sgd_update kernel");
}

}  // namespace mote::backend
