#pragma once
// add, sub, mul, div with broadcasting over leading dims; scale by a constant.
//
// Broadcast rule: the two shapes are equal, or the shorter one equals the trailing dims of
// the longer (a bias [D] against activations [B, T, D]). The result has the longer shape;
// the shorter operand's gradient is summed over the leading dims it was repeated across.
#include <string>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/elementwise.hpp"
#include "mote/backend/kernel_ops.hpp"

namespace mote::autograd {

// The broadcast result shape of a and b under the trailing-dims rule, or shape_error.
inline Shape broadcast_shape(const Shape& a, const Shape& b, const char* op) {
  const Shape& longer = a.rank() >= b.rank() ? a : b;
  const Shape& shorter = a.rank() >= b.rank() ? b : a;
  bool ok = true;
  for (int i = 1; i <= shorter.rank(); ++i) ok = ok && shorter[-i] == longer[-i];
  if (!ok)
    throw shape_error(std::string("mote: ") + op + ": cannot broadcast shapes " + a.str() + " and " + b.str() +
                      "; the shorter shape must equal the trailing dims of the longer");
  return longer;
}

template <Real T, Backend B>
Var<T, B> binary(backend::BinaryOp op, const Var<T, B>& a, const Var<T, B>& b) {
  const char* name = backend::binary_op_name(op);
  expect_defined(a, name, "a");
  expect_defined(b, name, "b");
  const Shape out_shape = broadcast_shape(a.shape(), b.shape(), name);
  Tensor<T, B> out(out_shape);
  {
    const T* pa = a.value().data();
    const T* pb = b.value().data();
    T* po = out.data();
    const std::int64_t na = a.numel(), nb = b.numel(), n = out.numel();
    MOTE_CALL_KERNEL(B, binary_forward, op, pa, na, pb, nb, po, n);
  }
  Tensor<T, B> av = a.value(), bv = b.value();
  return make_result(name, std::move(out), {a, b}, [op, av, bv](Node<T, B>& self) {
    const T* g = self.grad.data();
    // A residual add hands its gradient on to a unchanged: b's share first (a copy into a new
    // buffer, no zero fill), then the buffer itself.
    if (op == backend::BinaryOp::add && av.shape() == self.grad.shape()) {
      const std::int64_t n = self.grad.numel(), nb = bv.numel();
      const GradSlot<T> slot = nb == n ? input_grad_slot(self, 1) : GradSlot<T>{input_grad(self, 1), T(1)};
      if (slot.data && slot.beta == T(0)) {
        B::copy(g, slot.data, static_cast<std::size_t>(n));
      } else if (slot.data) {
        const T* pb = bv.data();
        MOTE_CALL_KERNEL(B, binary_backward, op, pb, nb, pb, nb, g, n, static_cast<T*>(nullptr), slot.data);
      }
      pass_grad(self, 0);
      return;
    }
    T* ga = input_grad(self, 0);
    T* gb = input_grad(self, 1);
    const T* pa = av.data();
    const T* pb = bv.data();
    const std::int64_t na = av.numel(), nb = bv.numel(), n = self.grad.numel();
    MOTE_CALL_KERNEL(B, binary_backward, op, pa, na, pb, nb, g, n, ga, gb);
  });
}

template <Real T, Backend B>
Var<T, B> add(const Var<T, B>& a, const Var<T, B>& b) { return binary(backend::BinaryOp::add, a, b); }
template <Real T, Backend B>
Var<T, B> sub(const Var<T, B>& a, const Var<T, B>& b) { return binary(backend::BinaryOp::sub, a, b); }
template <Real T, Backend B>
Var<T, B> mul(const Var<T, B>& a, const Var<T, B>& b) { return binary(backend::BinaryOp::mul, a, b); }
template <Real T, Backend B>
Var<T, B> div(const Var<T, B>& a, const Var<T, B>& b) { return binary(backend::BinaryOp::div, a, b); }

template <Real T, Backend B>
Var<T, B> operator+(const Var<T, B>& a, const Var<T, B>& b) { return add(a, b); }
template <Real T, Backend B>
Var<T, B> operator-(const Var<T, B>& a, const Var<T, B>& b) { return sub(a, b); }
template <Real T, Backend B>
Var<T, B> operator*(const Var<T, B>& a, const Var<T, B>& b) { return mul(a, b); }
template <Real T, Backend B>
Var<T, B> operator/(const Var<T, B>& a, const Var<T, B>& b) { return div(a, b); }

// s * x for a constant s.
template <Real T, Backend B>
Var<T, B> scale(const Var<T, B>& x, T s) {
  expect_defined(x, "scale", "x");
  Tensor<T, B> out(x.shape());
  {
    const T* px = x.value().data();
    T* po = out.data();
    const std::int64_t n = out.numel();
    MOTE_CALL_KERNEL(B, scale_forward, px, s, po, n);
  }
  return make_result("scale", std::move(out), {x}, [s](Node<T, B>& self) {
    if (T* gx = input_grad(self, 0)) {
      const T* g = self.grad.data();
      const std::int64_t n = self.grad.numel();
      MOTE_CALL_KERNEL(B, axpy, s, g, gx, n);
    }
  });
}

}  // namespace mote::autograd

namespace mote {
using autograd::add;
using autograd::div;
using autograd::mul;
using autograd::scale;
using autograd::sub;
}  // namespace mote
