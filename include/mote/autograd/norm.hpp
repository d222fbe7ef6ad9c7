#pragma once
// layer_norm and rms_norm over the last dim, fused: forward keeps each row's mean and 1/std,
// and one hand-written backward produces dx, dweight and dbias from them.
#include <cmath>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/norm.hpp"

namespace mote::autograd {

namespace norm_detail {
// x has a non-empty last dim C; each named parameter has shape [C]; eps is finite and >= 0.
template <Real T, Backend B>
void expect_norm_args(const char* op, const Var<T, B>& x, std::initializer_list<std::pair<const char*, const Var<T, B>*>> params,
                      T eps) {
  expect_defined(x, op, "x");
  for (const auto& [name, p] : params) expect_defined(*p, op, name);
  if (x.shape().rank() == 0 || x.shape().last() == 0)
    throw shape_error(std::string("mote: ") + op + ": x must have a non-empty last dimension to normalize, got shape " +
                      x.shape().str());
  const Shape expected{x.shape().last()};
  for (const auto& [name, p] : params)
    if (!(p->shape() == expected))
      throw shape_error(std::string("mote: ") + op + ": " + name + " must have shape " + expected.str() +
                        " (the last dim of x " + x.shape().str() + "), got " + p->shape().str());
  if (!(eps >= T(0)) || !std::isfinite(eps))
    throw value_error(std::string("mote: ") + op + ": eps must be finite and >= 0, got " + std::to_string(eps));
}
}  // namespace norm_detail

// (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance, as torch.nn.LayerNorm.
template <Real T, Backend B>
Var<T, B> layer_norm(const Var<T, B>& x, const Var<T, B>& weight, const Var<T, B>& bias,
                     std::type_identity_t<T> eps = T(1e-5)) {
  norm_detail::expect_norm_args<T, B>("layer_norm", x, {{"weight", &weight}, {"bias", &bias}}, eps);
  const std::int64_t rows = x.shape().prefix(-1), cols = x.shape().last();
  Tensor<T, B> out(x.shape()), mean(Shape{rows}), rstd(Shape{rows});
  const Tensor<T, B> xv = x.value(), wv = weight.value();
  {
    const T* px = xv.data();
    const T* pw = wv.data();
    const T* pb = bias.value().data();
    T* py = out.data();
    T* pm = mean.data();
    T* ps = rstd.data();
    MOTE_CALL_KERNEL(B, layer_norm_forward, px, pw, pb, rows, cols, eps, py, pm, ps);
  }
  return make_result("layer_norm", std::move(out), {x, weight, bias}, [xv, wv, mean, rstd, rows, cols](Node<T, B>& self) {
    const T* px = xv.data();
    const T* pw = wv.data();
    const T* pm = mean.data();
    const T* ps = rstd.data();
    const T* g = self.grad.data();
    T* gx = input_grad(self, 0);
    T* gw = input_grad(self, 1);
    T* gb = input_grad(self, 2);
    MOTE_CALL_KERNEL(B, layer_norm_backward, px, pw, pm, ps, g, rows, cols, gx, gw, gb);
  });
}

// x / sqrt(mean(x^2) + eps) * weight, as Llama's RMSNorm.
template <Real T, Backend B>
Var<T, B> rms_norm(const Var<T, B>& x, const Var<T, B>& weight, std::type_identity_t<T> eps = T(1e-6)) {
  norm_detail::expect_norm_args<T, B>("rms_norm", x, {{"weight", &weight}}, eps);
  const std::int64_t rows = x.shape().prefix(-1), cols = x.shape().last();
  Tensor<T, B> out(x.shape()), rstd(Shape{rows});
  const Tensor<T, B> xv = x.value(), wv = weight.value();
  {
    const T* px = xv.data();
    const T* pw = wv.data();
    T* py = out.data();
    T* ps = rstd.data();
    MOTE_CALL_KERNEL(B, rms_norm_forward, px, pw, rows, cols, eps, py, ps);
  }
  return make_result("rms_norm", std::move(out), {x, weight}, [xv, wv, rstd, rows, cols](Node<T, B>& self) {
    const T* px = xv.data();
    const T* pw = wv.data();
    const T* ps = rstd.data();
    const T* g = self.grad.data();
    T* gx = input_grad(self, 0);
    T* gw = input_grad(self, 1);
    MOTE_CALL_KERNEL(B, rms_norm_backward, px, pw, ps, g, rows, cols, gx, gw);
  });
}

}  // namespace mote::autograd

namespace mote {
using autograd::layer_norm;
using autograd::rms_norm;
}  // namespace mote
