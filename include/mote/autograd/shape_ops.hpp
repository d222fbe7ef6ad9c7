#pragma once
// Shape ops: reshape (a view, no copy), transpose (a packed copy), slice, concat and split.
// Each backward routes the output gradient back to the input elements it came from.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/elementwise.hpp"
#include "mote/backend/cpu/shape_ops.hpp"

namespace mote::autograd {

namespace shape_detail {

// dim mapped into [0, rank), or shape_error naming the op and the argument's shape.
inline int checked_dim(const char* op, const char* arg, const Shape& shape, int dim) {
  const int rank = shape.rank();
  const int d = dim < 0 ? dim + rank : dim;
  if (d < 0 || d >= rank)
    throw shape_error(std::string("mote: ") + op + ": dimension " + std::to_string(dim) + " is out of range for " +
                      arg + " " + shape.str() + "; expected a dim in [" + std::to_string(-rank) + ", " +
                      std::to_string(rank) + ")");
  return d;
}

// Dims and strides padded in front to rank 4, the form the strided kernels take.
struct Padded {
  std::int64_t shape[4] = {1, 1, 1, 1};
  std::int64_t strides[4] = {0, 0, 0, 0};
};

// The packed layout of `shape` with dims d0 and d1 swapped: reading x through it transposes x.
inline Padded transposed_view(const Shape& shape, int d0, int d1) {
  std::int64_t strides[4] = {0, 0, 0, 0}, dims[4] = {0, 0, 0, 0};
  std::int64_t step = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    strides[i] = step;
    dims[i] = shape[i];
    step *= shape[i];
  }
  std::swap(strides[d0], strides[d1]);
  std::swap(dims[d0], dims[d1]);
  Padded p;
  const int pad = max_rank - shape.rank();
  for (int i = 0; i < shape.rank(); ++i) {
    p.shape[pad + i] = dims[i];
    p.strides[pad + i] = strides[i];
  }
  return p;
}

template <Real T, Backend B>
Var<T, B> slice_impl(const char* op, const Var<T, B>& x, int dim, std::int64_t start, std::int64_t length) {
  const Shape& shape = x.shape();
  const int d = checked_dim(op, "x", shape, dim);
  const std::int64_t n = shape[d];
  if (start < 0 || length < 0 || start > n - length)
    throw shape_error(std::string("mote: ") + op + ": range [" + std::to_string(start) + ", " +
                      std::to_string(start + length) + ") is outside dimension " + std::to_string(d) + " (size " +
                      std::to_string(n) + ") of x " + shape.str());
  const std::int64_t outer = shape.prefix(d), inner = shape.suffix(d + 1);
  Shape out_shape = shape;
  out_shape[d] = length;
  Tensor<T, B> out(out_shape);
  if (out.numel() > 0) {
    const Tensor<T, B> x_value = x.value().contiguous();
    const T* src = x_value.data() + start * inner;
    T* dst = out.data();
    const std::int64_t src_stride = n * inner, row_len = length * inner;
    MOTE_CALL_KERNEL(B, strided_block_copy, src, src_stride, dst, row_len, outer, row_len);
  }
  return make_result(op, std::move(out), {x}, [outer, n, inner, start, length](Node<T, B>& self) {
    T* gx = input_grad(self, 0);
    if (!gx || self.grad.numel() == 0) return;
    const T* g = self.grad.data();
    T* dst = gx + start * inner;
    const std::int64_t dst_stride = n * inner, row_len = length * inner;
    MOTE_CALL_KERNEL(B, strided_block_add, g, row_len, dst, dst_stride, outer, row_len);
  });
}

}  // namespace shape_detail

// The same elements in a new shape of equal size; the result shares x's storage.
template <Real T, Backend B>
Var<T, B> reshape(const Var<T, B>& x, const Shape& shape) {
  expect_defined(x, "reshape", "x");
  if (shape.numel() != x.numel())
    throw shape_error("mote: reshape: x " + x.shape().str() + " has " + std::to_string(x.numel()) +
                      " elements, but the requested shape " + shape.str() + " holds " + std::to_string(shape.numel()));
  Tensor<T, B> out = x.value().contiguous().reshape(shape);
  return make_result("reshape", std::move(out), {x}, [](Node<T, B>& self) { pass_grad(self, 0); });
}

// x with dims d0 and d1 swapped, as a packed copy.
template <Real T, Backend B>
Var<T, B> transpose(const Var<T, B>& x, int d0, int d1) {
  expect_defined(x, "transpose", "x");
  const int a = shape_detail::checked_dim("transpose", "x", x.shape(), d0);
  const int b = shape_detail::checked_dim("transpose", "x", x.shape(), d1);
  Shape out_shape = x.shape();
  std::swap(out_shape[a], out_shape[b]);
  const shape_detail::Padded view = shape_detail::transposed_view(x.shape(), a, b);
  Tensor<T, B> out(out_shape);
  if (out.numel() > 0) {
    const Tensor<T, B> x_value = x.value().contiguous();
    const T* src = x_value.data();
    T* dst = out.data();
    MOTE_CALL_KERNEL(B, strided_gather, src, view.shape, view.strides, dst);
  }
  // The gradient's elements in x's order: the same transpose of the output's shape.
  const shape_detail::Padded back = shape_detail::transposed_view(out_shape, a, b);
  return make_result("transpose", std::move(out), {x}, [view, back](Node<T, B>& self) {
    const GradSlot<T> gx = input_grad_slot(self, 0);
    if (!gx.data || self.grad.numel() == 0) return;
    const T* g = self.grad.data();
    if (gx.beta == T(0))  // a new buffer: written once through a gather, with no zero fill first
      MOTE_CALL_KERNEL(B, strided_gather, g, back.shape, back.strides, gx.data);
    else
      MOTE_CALL_KERNEL(B, strided_scatter_add, g, view.shape, view.strides, gx.data);
  });
}

// `length` entries of dim starting at `start`, as a packed copy.
template <Real T, Backend B>
Var<T, B> slice(const Var<T, B>& x, int dim, std::int64_t start, std::int64_t length) {
  expect_defined(x, "slice", "x");
  return shape_detail::slice_impl("slice", x, dim, start, length);
}

// The inputs joined along dim; every other dim must agree.
template <Real T, Backend B>
Var<T, B> concat(const std::vector<Var<T, B>>& xs, int dim) {
  if (xs.empty()) throw value_error("mote: concat: argument 'xs' is empty; expected at least one input");
  for (std::size_t i = 0; i < xs.size(); ++i)
    expect_defined(xs[i], "concat", ("xs[" + std::to_string(i) + "]").c_str());
  const Shape& first = xs[0].shape();
  const int d = shape_detail::checked_dim("concat", "xs[0]", first, dim);
  std::vector<std::int64_t> sizes, offsets;
  std::int64_t total = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Shape& s = xs[i].shape();
    bool match = s.rank() == first.rank();
    for (int j = 0; match && j < s.rank(); ++j) match = j == d || s[j] == first[j];
    if (!match)
      throw shape_error("mote: concat: xs[" + std::to_string(i) + "] has shape " + s.str() + " but xs[0] has shape " +
                        first.str() + "; every dim except dimension " + std::to_string(d) + " must match");
    sizes.push_back(s[d]);
    offsets.push_back(total);
    total += s[d];
  }
  Shape out_shape = first;
  out_shape[d] = total;
  const std::int64_t outer = first.prefix(d), inner = first.suffix(d + 1);
  Tensor<T, B> out(out_shape);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (outer * sizes[i] * inner == 0) continue;
    const Tensor<T, B> x_value = xs[i].value().contiguous();
    const T* src = x_value.data();
    T* dst = out.data() + offsets[i] * inner;
    const std::int64_t row_len = sizes[i] * inner, dst_stride = total * inner;
    MOTE_CALL_KERNEL(B, strided_block_copy, src, row_len, dst, dst_stride, outer, row_len);
  }
  return make_result("concat", std::move(out), xs, [sizes, offsets, outer, inner, total](Node<T, B>& self) {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      T* gx = input_grad(self, i);
      if (!gx || outer * sizes[i] * inner == 0) continue;
      const T* src = self.grad.data() + offsets[i] * inner;
      const std::int64_t row_len = sizes[i] * inner, src_stride = total * inner;
      MOTE_CALL_KERNEL(B, strided_block_add, src, src_stride, gx, row_len, outer, row_len);
    }
  });
}

// x cut along dim into consecutive pieces of the given sizes, which must add up to that dim.
template <Real T, Backend B>
std::vector<Var<T, B>> split(const Var<T, B>& x, int dim, const std::vector<std::int64_t>& sizes) {
  expect_defined(x, "split", "x");
  const int d = shape_detail::checked_dim("split", "x", x.shape(), dim);
  std::int64_t total = 0;
  std::string listed;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0)
      throw value_error("mote: split: sizes[" + std::to_string(i) + "] is " + std::to_string(sizes[i]) +
                        "; sizes must be non-negative");
    total += sizes[i];
    listed += (i ? ", " : "") + std::to_string(sizes[i]);
  }
  if (total != x.shape()[d])
    throw shape_error("mote: split: sizes {" + listed + "} add up to " + std::to_string(total) + ", but dimension " +
                      std::to_string(d) + " of x " + x.shape().str() + " has size " + std::to_string(x.shape()[d]));
  std::vector<Var<T, B>> pieces;
  pieces.reserve(sizes.size());
  std::int64_t start = 0;
  for (const auto size : sizes) {
    pieces.push_back(shape_detail::slice_impl("split", x, d, start, size));
    start += size;
  }
  return pieces;
}

}  // namespace mote::autograd

namespace mote {
using autograd::concat;
using autograd::reshape;
using autograd::slice;
using autograd::split;
using autograd::transpose;
}  // namespace mote
