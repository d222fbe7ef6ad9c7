#pragma once
// sum and mean along one dimension (negative dims count from the end) or over all elements,
// which gives a rank-0 scalar. Backward spreads the output gradient back along the dimension.
#include <cstdint>
#include <string>

#include "mote/autograd/shape_ops.hpp"
#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/reduce.hpp"

namespace mote::autograd {

namespace reduce_detail {

// x viewed as [outer, dim, inner] around the reduced dimension, and the result's shape.
struct Axis {
  std::int64_t outer = 1, dim = 1, inner = 1;
  Shape out_shape;
};

inline Axis along(const char* op, const Shape& shape, int dim, bool keepdim) {
  const int d = shape_detail::checked_dim(op, "x", shape, dim);
  Axis axis;
  axis.outer = shape.prefix(d);
  axis.dim = shape[d];
  axis.inner = shape.suffix(d + 1);
  for (int i = 0; i < shape.rank(); ++i) {
    if (i != d)
      axis.out_shape.push_back(shape[i]);
    else if (keepdim)
      axis.out_shape.push_back(1);
  }
  return axis;
}

inline Axis whole(const Shape& shape) {
  Axis axis;
  axis.dim = shape.numel();
  return axis;  // out_shape stays rank 0
}

// A mean over nothing has no value; say so rather than return NaN.
inline void expect_nonempty(const std::string& what, std::int64_t count) {
  if (count == 0) throw value_error("mote: mean: " + what + "; a mean needs at least one element");
}

template <Real T, Backend B>
Var<T, B> reduce(const char* op, const Var<T, B>& x, const Axis& axis, T scale) {
  const Tensor<T, B> x_value = x.value().contiguous();
  Tensor<T, B> out(axis.out_shape);
  {
    const T* px = x_value.data();
    T* po = out.data();
    MOTE_CALL_KERNEL(B, reduce_sum, px, axis.outer, axis.dim, axis.inner, scale, po);
  }
  return make_result(op, std::move(out), {x}, [axis, scale](Node<T, B>& self) {
    if (T* gx = input_grad(self, 0)) {
      const T* g = self.grad.data();
      MOTE_CALL_KERNEL(B, broadcast_add, g, axis.outer, axis.dim, axis.inner, scale, gx);
    }
  });
}

}  // namespace reduce_detail

// Sum along dim; keepdim leaves it as size 1.
template <Real T, Backend B>
Var<T, B> sum(const Var<T, B>& x, int dim, bool keepdim = false) {
  expect_defined(x, "sum", "x");
  return reduce_detail::reduce("sum", x, reduce_detail::along("sum", x.shape(), dim, keepdim), T(1));
}

// Mean along dim; keepdim leaves it as size 1.
template <Real T, Backend B>
Var<T, B> mean(const Var<T, B>& x, int dim, bool keepdim = false) {
  expect_defined(x, "mean", "x");
  const auto axis = reduce_detail::along("mean", x.shape(), dim, keepdim);
  reduce_detail::expect_nonempty("dimension " + std::to_string(dim) + " of x " + x.shape().str() + " has size 0",
                                 axis.dim);
  return reduce_detail::reduce("mean", x, axis, T(1) / static_cast<T>(axis.dim));
}

// Sum of every element, as a rank-0 scalar.
template <Real T, Backend B>
Var<T, B> sum(const Var<T, B>& x) {
  expect_defined(x, "sum", "x");
  return reduce_detail::reduce("sum", x, reduce_detail::whole(x.shape()), T(1));
}

// Mean of every element, as a rank-0 scalar.
template <Real T, Backend B>
Var<T, B> mean(const Var<T, B>& x) {
  expect_defined(x, "mean", "x");
  const auto axis = reduce_detail::whole(x.shape());
  reduce_detail::expect_nonempty("x " + x.shape().str() + " has no elements", axis.dim);
  return reduce_detail::reduce("mean", x, axis, T(1) / static_cast<T>(axis.dim));
}

}  // namespace mote::autograd

namespace mote {
using autograd::mean;
using autograd::sum;
}  // namespace mote
