#pragma once
// softmax and log_softmax over the last dim. Both save their output: the backward of each
// is a function of y alone, so x can be freed.
#include <string>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/softmax.hpp"

namespace mote::autograd {

namespace softmax_detail {
template <Real T, Backend B>
void expect_rows(const Var<T, B>& x, const char* op) {
  expect_defined(x, op, "x");
  if (x.shape().rank() == 0)
    throw shape_error(std::string("mote: ") + op + ": x must have at least one dimension (the one normalized), got a scalar");
}
}  // namespace softmax_detail

template <Real T, Backend B>
Var<T, B> softmax(const Var<T, B>& x) {
  softmax_detail::expect_rows(x, "softmax");
  Tensor<T, B> out(x.shape());
  const std::int64_t rows = x.shape().prefix(-1), cols = x.shape().last();
  {
    const T* px = x.value().data();
    T* py = out.data();
    MOTE_CALL_KERNEL(B, softmax_forward, px, rows, cols, py);
  }
  Tensor<T, B> y = out;
  return make_result("softmax", std::move(out), {x}, [y, rows, cols](Node<T, B>& self) {
    if (T* gx = input_grad(self, 0)) {
      const T* py = y.data();
      const T* g = self.grad.data();
      MOTE_CALL_KERNEL(B, softmax_backward, py, g, rows, cols, gx);
    }
  });
}

template <Real T, Backend B>
Var<T, B> log_softmax(const Var<T, B>& x) {
  softmax_detail::expect_rows(x, "log_softmax");
  Tensor<T, B> out(x.shape());
  const std::int64_t rows = x.shape().prefix(-1), cols = x.shape().last();
  {
    const T* px = x.value().data();
    T* py = out.data();
    MOTE_CALL_KERNEL(B, log_softmax_forward, px, rows, cols, py);
  }
  Tensor<T, B> y = out;
  return make_result("log_softmax", std::move(out), {x}, [y, rows, cols](Node<T, B>& self) {
    if (T* gx = input_grad(self, 0)) {
      const T* py = y.data();
      const T* g = self.grad.data();
      MOTE_CALL_KERNEL(B, log_softmax_backward, py, g, rows, cols, gx);
    }
  });
}

}  // namespace mote::autograd

namespace mote {
using autograd::log_softmax;
using autograd::softmax;
}  // namespace mote
