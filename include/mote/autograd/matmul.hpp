#pragma once
// matmul: 2-D, batched over equal leading dims, or with a 2-D operand shared across the
// other's leading dims; an optional fused bias; and linear in the Hugging Face layout.
// Forward and backward are GEMMs only, and each gradient is computed only when needed.
#include <cstdint>
#include <string>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/gemm.hpp"

namespace mote::autograd {

// Transpose flags for the last two dims of each operand.
struct MatmulOptions {
  bool trans_a = false;
  bool trans_b = false;
};

namespace matmul_detail {

// How one matmul maps onto GEMM calls: `batch` products of op(a)[m,k] * op(b)[k,n].
struct Plan {
  std::int64_t m = 0, n = 0, k = 0;
  std::int64_t lda = 0, ldb = 0;  // row strides of the stored a and b
  std::int64_t batch = 1;
  std::int64_t stride_a = 0, stride_b = 0;  // 0: that operand is shared by every product
  Shape out_shape;
};

inline std::string transposed_note(bool trans) { return trans ? " (transposed)" : ""; }

inline Plan plan(const char* op, const Shape& a, const Shape& b, MatmulOptions options) {
  auto expect_matrix = [op](const Shape& shape, const char* arg) {
    if (shape.rank() < 2)
      throw shape_error(std::string("mote: ") + op + ": argument '" + arg + "' has shape " + shape.str() +
                        "; expected at least 2 dims [..., rows, cols]");
  };
  expect_matrix(a, "a");
  expect_matrix(b, "b");
  Plan p;
  const std::int64_t a_rows = a[-2], a_cols = a[-1], b_rows = b[-2], b_cols = b[-1];
  p.m = options.trans_a ? a_cols : a_rows;
  p.k = options.trans_a ? a_rows : a_cols;
  const std::int64_t k_b = options.trans_b ? b_cols : b_rows;
  p.n = options.trans_b ? b_rows : b_cols;
  p.lda = a_cols;
  p.ldb = b_cols;
  if (p.k != k_b)
    throw shape_error(std::string("mote: ") + op + ": inner dimensions differ: a " + a.str() +
                      transposed_note(options.trans_a) + " gives [" + std::to_string(p.m) + ", " + std::to_string(p.k) +
                      "] and b " + b.str() + transposed_note(options.trans_b) + " gives [" + std::to_string(k_b) +
                      ", " + std::to_string(p.n) + "]; expected [M, K] times [K, N]");

  const int lead_a = a.rank() - 2, lead_b = b.rank() - 2;
  bool same_lead = lead_a == lead_b;
  for (int i = 0; same_lead && i < lead_a; ++i) same_lead = a[i] == b[i];
  if (lead_a > 0 && lead_b > 0 && !same_lead)
    throw shape_error(std::string("mote: ") + op + ": the leading (batch) dims of a " + a.str() + " and b " + b.str() +
                      " must be equal, or one operand must be 2-D");
  const Shape& batched = lead_a > 0 ? a : b;
  for (int i = 0; i < batched.rank() - 2; ++i) {
    p.out_shape.push_back(batched[i]);
    p.batch *= batched[i];
  }
  p.out_shape.push_back(p.m);
  p.out_shape.push_back(p.n);
  p.stride_a = lead_a > 0 ? a_rows * a_cols : 0;
  p.stride_b = lead_b > 0 ? b_rows * b_cols : 0;
  // A shared, untransposed b lets a's leading dims fold into m: one large GEMM instead of many.
  if (lead_a > 0 && lead_b == 0 && !options.trans_a) {
    p.m *= p.batch;
    p.batch = 1;
    p.stride_a = 0;
  }
  return p;
}

// c_i = op(a_i) * op(b_i) + beta * c_i for every product i; a shared c (stride 0) is summed into
// sequentially, beta applying to the first product only.
template <Real T, Backend B>
void accumulate_products(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                         std::int64_t lda, std::int64_t stride_a, const T* b, std::int64_t ldb, std::int64_t stride_b,
                         T* c, std::int64_t ldc, std::int64_t stride_c, std::int64_t batch, T beta) {
  const T one = T(1);
  if (batch == 1) {
    MOTE_CALL_KERNEL(B, gemm, trans_a, trans_b, m, n, k, one, a, lda, b, ldb, beta, c, ldc);
  } else if (stride_c != 0) {
    MOTE_CALL_KERNEL(B, gemm_strided_batched, trans_a, trans_b, m, n, k, one, a, lda, stride_a, b, ldb, stride_b, beta,
                     c, ldc, stride_c, batch);
  } else {
    for (std::int64_t i = 0; i < batch; ++i) {
      const T* a_i = a + i * stride_a;
      const T* b_i = b + i * stride_b;
      MOTE_CALL_KERNEL(B, gemm, trans_a, trans_b, m, n, k, one, a_i, lda, b_i, ldb, i == 0 ? beta : one, c, ldc);
    }
  }
}

template <Real T, Backend B>
Var<T, B> matmul_impl(const char* op, const Var<T, B>& a, const Var<T, B>& b, const Var<T, B>* bias,
                      MatmulOptions options) {
  expect_defined(a, op, "a");
  expect_defined(b, op, "b");
  const Plan p = plan(op, a.shape(), b.shape(), options);
  if (bias) {
    expect_defined(*bias, op, "bias");
    if (bias->shape().rank() != 1 || bias->shape()[0] != p.n)
      throw shape_error(std::string("mote: ") + op + ": argument 'bias' has shape " + bias->shape().str() +
                        "; expected [" + std::to_string(p.n) + "] to match the output " + p.out_shape.str());
  }
  const Tensor<T, B> a_value = a.value().contiguous(), b_value = b.value().contiguous();
  Tensor<T, B> out(p.out_shape);
  {
    const T* pa = a_value.data();
    const T* pb = b_value.data();
    T* pc = out.data();
    const T one = T(1), zero = T(0);
    const std::int64_t stride_c = p.m * p.n;
    MOTE_CALL_KERNEL(B, gemm_strided_batched, options.trans_a, options.trans_b, p.m, p.n, p.k, one, pa, p.lda,
                     p.stride_a, pb, p.ldb, p.stride_b, zero, pc, p.n, stride_c, p.batch);
  }
  Tensor<T, B> bias_value;
  if (bias) {
    bias_value = bias->value().contiguous();
    T* pc = out.data();
    const T* pbias = bias_value.data();
    const std::int64_t rows = p.batch * p.m;
    MOTE_CALL_KERNEL(B, add_row_vector, pc, pbias, rows, p.n);
  }
  // Each gradient needs only the other operand, so keep an operand only when its partner trains.
  const Tensor<T, B> saved_a = b.requires_grad() ? a_value : Tensor<T, B>();
  const Tensor<T, B> saved_b = a.requires_grad() ? b_value : Tensor<T, B>();
  auto backward = [p, options, saved_a, saved_b, has_bias = bias != nullptr](Node<T, B>& self) {
    const T* g = self.grad.data();
    const std::int64_t stride_g = p.m * p.n;
    const bool ta = options.trans_a, tb = options.trans_b;
    // A new gradient buffer is written with beta 0 (each product covers all of it), not zero-filled first.
    if (const GradSlot<T> ga = saved_b.defined() ? input_grad_slot(self, 0) : GradSlot<T>{}; ga.data) {
      const T* pb = saved_b.data();
      if (!ta)  // da += g * op(b)^T
        accumulate_products<T, B>(false, !tb, p.m, p.k, p.n, g, p.n, stride_g, pb, p.ldb, p.stride_b, ga.data, p.lda,
                                  p.stride_a, p.batch, ga.beta);
      else  // stored a is op(a)^T: da += op(b) * g^T
        accumulate_products<T, B>(tb, true, p.k, p.m, p.n, pb, p.ldb, p.stride_b, g, p.n, stride_g, ga.data, p.lda,
                                  p.stride_a, p.batch, ga.beta);
    }
    if (const GradSlot<T> gb = saved_a.defined() ? input_grad_slot(self, 1) : GradSlot<T>{}; gb.data) {
      const T* pa = saved_a.data();
      if (!tb)  // db += op(a)^T * g
        accumulate_products<T, B>(!ta, false, p.k, p.n, p.m, pa, p.lda, p.stride_a, g, p.n, stride_g, gb.data, p.ldb,
                                  p.stride_b, p.batch, gb.beta);
      else  // stored b is op(b)^T: db += g^T * op(a)
        accumulate_products<T, B>(true, ta, p.n, p.k, p.m, g, p.n, stride_g, pa, p.lda, p.stride_a, gb.data, p.ldb,
                                  p.stride_b, p.batch, gb.beta);
    }
    if (has_bias) {
      if (T* gbias = input_grad(self, 2)) {
        const std::int64_t rows = p.batch * p.m;
        MOTE_CALL_KERNEL(B, sum_rows, g, rows, p.n, gbias);
      }
    }
  };
  if (bias) return make_result(op, std::move(out), {a, b, *bias}, std::move(backward));
  return make_result(op, std::move(out), {a, b}, std::move(backward));
}

// Names linear's own arguments in its errors, before matmul's checks see them.
template <Real T, Backend B>
void check_linear(const Var<T, B>& x, const Var<T, B>& weight) {
  expect_defined(x, "linear", "x");
  expect_defined(weight, "linear", "weight");
  if (weight.shape().rank() != 2)
    throw shape_error("mote: linear: argument 'weight' has shape " + weight.shape().str() +
                      "; expected 2-D [out_features, in_features]");
  if (x.shape().rank() < 2)
    throw shape_error("mote: linear: input 'x' has shape " + x.shape().str() + "; expected [..., rows, in_features]");
  if (x.shape()[-1] != weight.shape()[1])
    throw shape_error("mote: linear: input 'x' has shape " + x.shape().str() + " but weight " + weight.shape().str() +
                      " expects a last dim of in_features = " + std::to_string(weight.shape()[1]));
}

}  // namespace matmul_detail

// op(a) * op(b): a [..., M, K] with b [..., K, N] (equal leading dims) or with b [K, N] shared
// (and the mirror case, a 2-D and b batched). The transpose flags act on the last two dims.
template <Real T, Backend B>
Var<T, B> matmul(const Var<T, B>& a, const Var<T, B>& b, MatmulOptions options = {}) {
  return matmul_detail::matmul_impl<T, B>("matmul", a, b, nullptr, options);
}

// op(a) * op(b) + bias, with bias [N] added to every output row.
template <Real T, Backend B>
Var<T, B> matmul(const Var<T, B>& a, const Var<T, B>& b, const Var<T, B>& bias, MatmulOptions options = {}) {
  return matmul_detail::matmul_impl<T, B>("matmul", a, b, &bias, options);
}

// x [..., in] times weight [out, in] transposed: the Hugging Face (and PyTorch) layout.
template <Real T, Backend B>
Var<T, B> linear(const Var<T, B>& x, const Var<T, B>& weight) {
  matmul_detail::check_linear(x, weight);
  return matmul_detail::matmul_impl<T, B>("linear", x, weight, nullptr, {.trans_b = true});
}

// linear plus bias [out].
template <Real T, Backend B>
Var<T, B> linear(const Var<T, B>& x, const Var<T, B>& weight, const Var<T, B>& bias) {
  matmul_detail::check_linear(x, weight);
  return matmul_detail::matmul_impl<T, B>("linear", x, weight, &bias, {.trans_b = true});
}

// A projection's weights as a value: y = x W (+ bias), W stored [out, in] (nn.Linear) or, when
// `weight_in_out`, [in, out] (GPT-2's Conv1D). Adapters receive it to fold the base product in.
template <Real T, Backend B = cpu>
struct Projection {
  Var<T, B> weight;
  Var<T, B> bias;  // undefined: no bias
  bool weight_in_out = false;

  std::int64_t in_features() const { return weight.shape()[weight_in_out ? 0 : 1]; }
  std::int64_t out_features() const { return weight.shape()[weight_in_out ? 1 : 0]; }
  Var<T, B> operator()(const Var<T, B>& x) const {
    if (weight_in_out) return bias.defined() ? matmul(x, weight, bias) : matmul(x, weight);
    return bias.defined() ? linear(x, weight, bias) : linear(x, weight);
  }
};

}  // namespace mote::autograd

namespace mote {
using autograd::linear;
using autograd::matmul;
using autograd::MatmulOptions;
using autograd::Projection;
}  // namespace mote
