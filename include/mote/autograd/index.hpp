#pragma once
// Index ops: embedding (rows of a table by id), index_select (entries along a dim),
// index_add (entries added at positions along a dim) and index_copy (entries replaced there). Repeated indices accumulate in
// backward. Every index is checked against its range before any kernel runs.
#include <cstdint>
#include <string>
#include <vector>

#include "mote/autograd/shape_ops.hpp"
#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/elementwise.hpp"
#include "mote/backend/cpu/index.hpp"

namespace mote::autograd {

namespace index_detail {

// A flat position in `shape` written as a subscript, e.g. ids[1, 0].
inline std::string subscript(const char* arg, const Shape& shape, std::int64_t flat) {
  std::vector<std::int64_t> coords(static_cast<std::size_t>(shape.rank()));
  for (int i = shape.rank() - 1; i >= 0; --i) {
    coords[static_cast<std::size_t>(i)] = shape[i] == 0 ? 0 : flat % shape[i];
    flat = shape[i] == 0 ? 0 : flat / shape[i];
  }
  std::string s = std::string(arg) + "[";
  for (std::size_t i = 0; i < coords.size(); ++i) s += (i ? ", " : "") + std::to_string(coords[i]);
  return s + "]";
}

// The index tensor, packed, after checking every entry lies in [0, limit); `limit_meaning`
// says where the limit comes from, for the error message.
template <Backend B>
Tensor<std::int32_t, B> checked_indices(const char* op, const char* arg, const Tensor<std::int32_t, B>& index,
                                        std::int64_t limit, const std::string& limit_meaning) {
  if (!index.defined())
    throw value_error(std::string("mote: ") + op + ": argument '" + arg + "' is an empty tensor handle");
  Tensor<std::int32_t, B> packed = index.contiguous();
  std::vector<std::int32_t> copied;
  const std::int32_t* values = nullptr;
  if constexpr (B::host_accessible) {
    values = packed.data();
  } else {
    copied = packed.to_vector();  // one transfer, so that a bad index is an exception and not a fault
    values = copied.data();
  }
  for (std::int64_t i = 0; i < packed.numel(); ++i)
    if (values[i] < 0 || values[i] >= limit)
      throw value_error(std::string("mote: ") + op + ": " + subscript(arg, packed.shape(), i) + " = " +
                        std::to_string(values[i]) + " (" + arg + " shape " + packed.shape().str() +
                        ") is outside [0, " + std::to_string(limit) + "), " + limit_meaning);
  return packed;
}

template <Backend B>
void expect_vector_index(const char* op, const Tensor<std::int32_t, B>& index) {
  if (index.rank() != 1)
    throw shape_error(std::string("mote: ") + op + ": argument 'index' has shape " + index.shape().str() +
                      "; expected 1-D [M]");
}

// base viewed as [outer, n, inner] around dim, and src's m slices for the positions in index: the
// checked operands of index_add and index_copy.
template <Backend B>
struct SliceOperands {
  std::int64_t outer, n, inner, m;
  Tensor<std::int32_t, B> packed;
};

template <Real T, Backend B>
SliceOperands<B> slices_at(const char* op, const Var<T, B>& base, int dim, const Tensor<std::int32_t, B>& index,
                           const Var<T, B>& src) {
  expect_defined(base, op, "base");
  expect_defined(src, op, "src");
  expect_vector_index(op, index);
  const Shape& shape = base.shape();
  const int d = shape_detail::checked_dim(op, "base", shape, dim);
  const std::int64_t m = index.numel();
  Shape expected_src = shape;
  expected_src[d] = m;
  if (!(src.shape() == expected_src))
    throw shape_error(std::string("mote: ") + op + ": argument 'src' has shape " + src.shape().str() + " but base " +
                      shape.str() + " with dimension " + std::to_string(d) + " set to the " + std::to_string(m) +
                      " entries of index expects " + expected_src.str());
  return {shape.prefix(d), shape[d], shape.suffix(d + 1), m,
          checked_indices(op, "index", index, shape[d], "the size of dimension " + std::to_string(d) + " of base " + shape.str())};
}

}  // namespace index_detail

// weight [V, D] looked up at ids [...] gives [..., D]; backward adds each output row into
// the weight row it came from.
template <Real T, Backend B>
Var<T, B> embedding(const Var<T, B>& weight, const Tensor<std::int32_t, B>& ids) {
  expect_defined(weight, "embedding", "weight");
  const Shape& w_shape = weight.shape();
  if (w_shape.rank() != 2)
    throw shape_error("mote: embedding: argument 'weight' has shape " + w_shape.str() + "; expected 2-D [vocab, dim]");
  if (ids.rank() >= max_rank)
    throw shape_error("mote: embedding: argument 'ids' has shape " + ids.shape().str() + "; expected at most " +
                      std::to_string(max_rank - 1) + " dims, since the result [ids..., dim] has at most " +
                      std::to_string(max_rank));
  const std::int64_t vocab = w_shape[0], dim = w_shape[1];
  const Tensor<std::int32_t, B> packed_ids =
      index_detail::checked_indices("embedding", "ids", ids, vocab, "the vocabulary size of weight " + w_shape.str());
  Shape out_shape = ids.shape();
  out_shape.push_back(dim);
  Tensor<T, B> out(out_shape);
  const std::int64_t count = packed_ids.numel();
  if (out.numel() > 0) {
    const Tensor<T, B> w_value = weight.value().contiguous();
    const T* pw = w_value.data();
    const std::int32_t* pid = packed_ids.data();
    T* po = out.data();
    const std::int64_t outer = 1;
    MOTE_CALL_KERNEL(B, index_gather, pw, outer, vocab, dim, pid, count, po);
  }
  return make_result("embedding", std::move(out), {weight}, [packed_ids, vocab, dim, count](Node<T, B>& self) {
    T* gw = input_grad(self, 0);
    if (!gw || self.grad.numel() == 0) return;
    const T* g = self.grad.data();
    const std::int32_t* pid = packed_ids.data();
    const std::int64_t outer = 1;
    MOTE_CALL_KERNEL(B, index_scatter_add, g, outer, count, dim, pid, vocab, gw);
  });
}

// x viewed as [outer, N, inner] around dim, picked at index [M]: [outer, M, inner].
template <Real T, Backend B>
Var<T, B> index_select(const Var<T, B>& x, int dim, const Tensor<std::int32_t, B>& index) {
  expect_defined(x, "index_select", "x");
  index_detail::expect_vector_index("index_select", index);
  const Shape& shape = x.shape();
  const int d = shape_detail::checked_dim("index_select", "x", shape, dim);
  const std::int64_t outer = shape.prefix(d), n = shape[d], inner = shape.suffix(d + 1), m = index.numel();
  const Tensor<std::int32_t, B> packed = index_detail::checked_indices(
      "index_select", "index", index, n, "the size of dimension " + std::to_string(d) + " of x " + shape.str());
  Shape out_shape = shape;
  out_shape[d] = m;
  Tensor<T, B> out(out_shape);
  if (out.numel() > 0) {
    const Tensor<T, B> x_value = x.value().contiguous();
    const T* px = x_value.data();
    const std::int32_t* pi = packed.data();
    T* po = out.data();
    MOTE_CALL_KERNEL(B, index_gather, px, outer, n, inner, pi, m, po);
  }
  return make_result("index_select", std::move(out), {x}, [packed, outer, n, inner, m](Node<T, B>& self) {
    T* gx = input_grad(self, 0);
    if (!gx || self.grad.numel() == 0) return;
    const T* g = self.grad.data();
    const std::int32_t* pi = packed.data();
    MOTE_CALL_KERNEL(B, index_scatter_add, g, outer, m, inner, pi, n, gx);
  });
}

// base with src's M slices along dim added at the positions in index [M]; repeats accumulate.
// src has base's shape with dim replaced by M.
template <Real T, Backend B>
Var<T, B> index_add(const Var<T, B>& base, int dim, const Tensor<std::int32_t, B>& index, const Var<T, B>& src) {
  const auto [outer, n, inner, m, packed] = index_detail::slices_at("index_add", base, dim, index, src);
  Tensor<T, B> out = base.value().clone();
  if (src.numel() > 0) {
    const Tensor<T, B> src_value = src.value().contiguous();
    const T* ps = src_value.data();
    const std::int32_t* pi = packed.data();
    T* po = out.data();
    MOTE_CALL_KERNEL(B, index_scatter_add, ps, outer, m, inner, pi, n, po);
  }
  return make_result("index_add", std::move(out), {base, src}, [packed, outer, n, inner, m](Node<T, B>& self) {
    const T* g = self.grad.data();
    if (T* gbase = input_grad(self, 0)) {
      const std::int64_t count = self.grad.numel();
      MOTE_CALL_KERNEL(B, axpy, T(1), g, gbase, count);
    }
    T* gsrc = input_grad(self, 1);
    if (!gsrc || outer * m * inner == 0) return;
    const std::int32_t* pi = packed.data();
    MOTE_CALL_KERNEL(B, index_gather_add, g, outer, n, inner, pi, m, gsrc);
  });
}

// base with its slices along dim at the positions in index [M] replaced by src's M slices
// (torch.index_copy). The index must not repeat. Backward: base's gradient is the output's with those
// slices zeroed, src's is the output's at them, so replaced entries are exact, not base + (src - base).
template <Real T, Backend B>
Var<T, B> index_copy(const Var<T, B>& base, int dim, const Tensor<std::int32_t, B>& index, const Var<T, B>& src) {
  const auto [outer, n, inner, m, packed] = index_detail::slices_at("index_copy", base, dim, index, src);
  {
    const std::vector<std::int32_t> host = packed.to_vector();
    std::vector<bool> seen(static_cast<std::size_t>(n), false);
    for (std::size_t j = 0; j < host.size(); ++j) {
      if (seen[static_cast<std::size_t>(host[j])])
        throw value_error("mote: index_copy: index[" + std::to_string(j) + "] = " + std::to_string(host[j]) +
                          " repeats an earlier entry; expected distinct positions");
      seen[static_cast<std::size_t>(host[j])] = true;
    }
  }
  Tensor<T, B> out = base.value().clone();
  if (src.numel() > 0) {
    const Tensor<T, B> src_value = src.value().contiguous();
    const T* ps = src_value.data();
    const std::int32_t* pi = packed.data();
    T* po = out.data();
    MOTE_CALL_KERNEL(B, index_scatter_copy, ps, outer, m, inner, pi, n, po);
  }
  return make_result("index_copy", std::move(out), {base, src}, [packed, outer, n, inner, m](Node<T, B>& self) {
    const T* g = self.grad.data();
    const std::int32_t* pi = packed.data();
    if (T* gbase = input_grad(self, 0)) {
      Tensor<T, B> passed = self.grad.clone();
      if (outer * m * inner > 0) {
        const Tensor<T, B> zeros = Tensor<T, B>::zeros({outer, m, inner});
        const T* pz = zeros.data();
        T* pp = passed.data();
        MOTE_CALL_KERNEL(B, index_scatter_copy, pz, outer, m, inner, pi, n, pp);
      }
      const T* pp = passed.data();
      const std::int64_t count = passed.numel();
      MOTE_CALL_KERNEL(B, axpy, T(1), pp, gbase, count);
    }
    T* gsrc = input_grad(self, 1);
    if (!gsrc || outer * m * inner == 0) return;
    MOTE_CALL_KERNEL(B, index_gather_add, g, outer, n, inner, pi, m, gsrc);
  });
}

}  // namespace mote::autograd

namespace mote {
using autograd::embedding;
using autograd::index_add;
using autograd::index_copy;
using autograd::index_select;
}  // namespace mote
