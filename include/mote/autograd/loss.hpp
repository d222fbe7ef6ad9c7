#pragma once
// cross_entropy: fused log-softmax + negative log-likelihood + masked mean, as one op. Forward
// keeps each row's max and log-sum-exp; backward writes (softmax - onehot) * m_i * dloss / sum m directly.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/loss.hpp"

namespace mote::autograd {

template <Real T, Backend B = cpu>
struct CrossEntropyOptions {
  // Tokens whose target equals this neither count nor receive gradient (PyTorch's default).
  std::int32_t ignore_index = -100;
  // Per-token weights m_i >= 0, shaped like targets; null means 1 for every token.
  const Tensor<T, B>* loss_mask = nullptr;
};

namespace loss_detail {
// "[i, j]" for flat index `flat` within `shape`, so messages point at the token, not at memory.
inline std::string index_string(const Shape& shape, std::int64_t flat) {
  std::vector<std::int64_t> index(static_cast<std::size_t>(shape.rank()));
  for (int d = shape.rank() - 1; d >= 0; --d) {
    index[static_cast<std::size_t>(d)] = shape[d] == 0 ? 0 : flat % shape[d];
    flat = shape[d] == 0 ? 0 : flat / shape[d];
  }
  std::string s = "[";
  for (std::size_t d = 0; d < index.size(); ++d) s += (d ? ", " : "") + std::to_string(index[d]);
  return s + "]";
}
}  // namespace loss_detail

// logits [N, V] with targets [N], or [B, T, V] with [B, T] (any leading dims) -> rank-0 loss
// sum_i m_i * -log softmax(logits_i)[t_i] / sum_i m_i over tokens whose target != ignore_index;
// 0, with zero gradient, when no token counts.
template <Real T, Backend B>
Var<T, B> cross_entropy(const Var<T, B>& logits, const Tensor<std::int32_t, B>& targets,
                        const CrossEntropyOptions<T, B>& options = {}) {
  expect_defined(logits, "cross_entropy", "logits");
  const Shape& ls = logits.shape();
  if (ls.rank() < 2 || ls.last() == 0)
    throw shape_error("mote: cross_entropy: logits must have shape [N, V] or [B, T, V] with V > 0, got " + ls.str());
  const Shape expected(ls.begin(), ls.end() - 1);
  if (!targets.defined() || !(targets.shape() == expected))
    throw shape_error("mote: cross_entropy: targets must have shape " + expected.str() + " (logits " + ls.str() +
                      " without its last dim), got " + (targets.defined() ? targets.shape().str() : "an empty tensor"));
  const std::int64_t rows = expected.numel(), vocab = ls.last();
  const std::int32_t ignore_index = options.ignore_index;

  const Tensor<std::int32_t, B> packed_targets = targets.contiguous();
  const std::vector<std::int32_t> host_targets = packed_targets.to_vector();
  for (std::int64_t i = 0; i < rows; ++i) {
    const std::int32_t t = host_targets[static_cast<std::size_t>(i)];
    if (t != ignore_index && (t < 0 || t >= vocab))
      throw value_error("mote: cross_entropy: target " + std::to_string(t) + " at position " +
                        loss_detail::index_string(expected, i) + " is outside [0, V) with V = " + std::to_string(vocab) +
                        " and is not ignore_index " + std::to_string(ignore_index));
  }
  Tensor<T, B> packed_mask;
  if (options.loss_mask) {
    const Tensor<T, B>& m = *options.loss_mask;
    if (!m.defined() || !(m.shape() == expected))
      throw shape_error("mote: cross_entropy: loss_mask must have the shape of targets " + expected.str() + ", got " +
                        (m.defined() ? m.shape().str() : "an empty tensor"));
    packed_mask = m.contiguous();
    const std::vector<T> host_mask = packed_mask.to_vector();
    for (std::int64_t i = 0; i < rows; ++i) {
      const T w = host_mask[static_cast<std::size_t>(i)];
      if (!(w >= T(0)) || !std::isfinite(w))
        throw value_error("mote: cross_entropy: loss_mask must be finite and >= 0, got " + std::to_string(w) +
                          " at position " + loss_detail::index_string(expected, i));
    }
  }

  const Tensor<T, B> lv = logits.value();
  Tensor<T, B> loss(Shape{}), row_max(Shape{rows}), row_log_sum(Shape{rows}), weight_sum(Shape{1});
  {
    const T* px = lv.data();
    const std::int32_t* pt = packed_targets.data();
    const T* pm = options.loss_mask ? packed_mask.data() : nullptr;
    T* pl = loss.data();
    T* pmax = row_max.data();
    T* plog = row_log_sum.data();
    T* pw = weight_sum.data();
    MOTE_CALL_KERNEL(B, cross_entropy_forward, px, pt, pm, rows, vocab, ignore_index, pl, pmax, plog, pw);
  }
  const bool has_mask = options.loss_mask != nullptr;
  return make_result("cross_entropy", std::move(loss), {logits},
                     [lv, packed_targets, packed_mask, has_mask, row_max, row_log_sum, weight_sum, rows, vocab,
                      ignore_index](Node<T, B>& self) {
                       if (T* gx = input_grad(self, 0)) {
                         const T* px = lv.data();
                         const std::int32_t* pt = packed_targets.data();
                         const T* pm = has_mask ? packed_mask.data() : nullptr;
                         const T* pmax = row_max.data();
                         const T* plog = row_log_sum.data();
                         const T* pw = weight_sum.data();
                         const T* g = self.grad.data();
                         MOTE_CALL_KERNEL(B, cross_entropy_backward, px, pt, pm, pmax, plog, pw, g, rows, vocab,
                                          ignore_index, gx);
                       }
                     });
}

}  // namespace mote::autograd

namespace mote {
using autograd::cross_entropy;
using autograd::CrossEntropyOptions;
}  // namespace mote
