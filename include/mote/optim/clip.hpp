#pragma once
// Global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_: the L2 norm over every gradient
// together, and when it exceeds max_norm every gradient scaled by max_norm / (norm + 1e-6).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/backend/concept.hpp"
#include "mote/backend/cpu/cpu.hpp"
#include "mote/backend/cpu/elementwise.hpp"
#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"

namespace mote::optim {

// The L2 norm over the gradients of `params` as one vector, summed in double; parameters without a
// gradient count as zero.
template <Real T, Backend B>
double global_grad_norm(const std::vector<autograd::Var<T, B>>& params) {
  double sum = 0.0;
  for (const auto& p : params) {
    const Tensor<T, B>& g = p.grad();
    if (!g.defined()) continue;
    for (const T v : g.to_vector()) sum += static_cast<double>(v) * static_cast<double>(v);
  }
  return std::sqrt(sum);
}

// Scales the gradients of `params` so that their global norm is at most max_norm (0 = measure only)
// and returns the norm before clipping. A non-finite norm is returned with the gradients untouched,
// so the caller decides (the trainer stops with nan_error).
template <Real T, Backend B>
double clip_grad_norm(const std::vector<autograd::Var<T, B>>& params, double max_norm) {
  if (!(max_norm >= 0.0) || !std::isfinite(max_norm))
    throw value_error("mote: optim::clip_grad_norm: max_norm must be finite and >= 0 (0 = no clipping), got " +
                      std::to_string(max_norm));
  const double norm = global_grad_norm(params);
  if (max_norm == 0.0 || !std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return norm;
  const T factor = static_cast<T>(coef);
  for (auto p : params) {
    if (!p.grad().defined()) continue;
    Tensor<T, B>& g = p.mutable_grad();
    if (!g.is_contiguous()) g = g.contiguous();
    T* data = g.data();
    const std::int64_t n = g.numel();
    MOTE_CALL_KERNEL(B, scale_forward, data, factor, data, n);
  }
  return norm;
}

}  // namespace mote::optim
