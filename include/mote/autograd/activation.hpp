#pragma once
// gelu (tanh form, as GPT-2), silu, and swiglu(gate, up) = silu(gate) * up in one pass.
// Each saves its inputs; backward recomputes the cheap elementwise terms from them.
#include <string>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/activation.hpp"

namespace mote::autograd {

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
template <Real T, Backend B>
Var<T, B> gelu(const Var<T, B>& x) {
  expect_defined(x, "gelu", "x");
  const Tensor<T, B> xv = x.value();
  Tensor<T, B> out(x.shape());
  {
    const T* px = xv.data();
    T* py = out.data();
    const std::int64_t n = out.numel();
    MOTE_CALL_KERNEL(B, gelu_forward, px, n, py);
  }
  return make_result("gelu", std::move(out), {x}, [xv](Node<T, B>& self) {
    if (const GradSlot<T> gx = input_grad_slot(self, 0); gx.data) {  // a new buffer is written, not zeroed first
      const T* px = xv.data();
      const T* g = self.grad.data();
      const std::int64_t n = xv.numel();
      const bool accumulate = gx.beta != T(0);
      MOTE_CALL_KERNEL(B, gelu_backward, px, g, n, accumulate, gx.data);
    }
  });
}

// x * sigmoid(x)
template <Real T, Backend B>
Var<T, B> silu(const Var<T, B>& x) {
  expect_defined(x, "silu", "x");
  const Tensor<T, B> xv = x.value();
  Tensor<T, B> out(x.shape());
  {
    const T* px = xv.data();
    T* py = out.data();
    const std::int64_t n = out.numel();
    MOTE_CALL_KERNEL(B, silu_forward, px, n, py);
  }
  return make_result("silu", std::move(out), {x}, [xv](Node<T, B>& self) {
    if (const GradSlot<T> gx = input_grad_slot(self, 0); gx.data) {  // a new buffer is written, not zeroed first
      const T* px = xv.data();
      const T* g = self.grad.data();
      const std::int64_t n = xv.numel();
      const bool accumulate = gx.beta != T(0);
      MOTE_CALL_KERNEL(B, silu_backward, px, g, n, accumulate, gx.data);
    }
  });
}

// silu(gate) * up, the gated unit of Llama's MLP; gate and up have equal shapes.
template <Real T, Backend B>
Var<T, B> swiglu(const Var<T, B>& gate, const Var<T, B>& up) {
  expect_defined(gate, "swiglu", "gate");
  expect_defined(up, "swiglu", "up");
  if (!(gate.shape() == up.shape()))
    throw shape_error("mote: swiglu: gate " + gate.shape().str() + " and up " + up.shape().str() +
                      " must have equal shapes");
  const Tensor<T, B> gv = gate.value(), uv = up.value();
  Tensor<T, B> out(gate.shape());
  {
    const T* pg = gv.data();
    const T* pu = uv.data();
    T* py = out.data();
    const std::int64_t n = out.numel();
    MOTE_CALL_KERNEL(B, swiglu_forward, pg, pu, n, py);
  }
  return make_result("swiglu", std::move(out), {gate, up}, [gv, uv](Node<T, B>& self) {
    const T* pg = gv.data();
    const T* pu = uv.data();
    const T* g = self.grad.data();
    T* dgate = input_grad(self, 0);
    T* dup = input_grad(self, 1);
    const std::int64_t n = gv.numel();
    MOTE_CALL_KERNEL(B, swiglu_backward, pg, pu, g, n, dgate, dup);
  });
}

}  // namespace mote::autograd

namespace mote {
using autograd::gelu;
using autograd::silu;
using autograd::swiglu;
}  // namespace mote
