#pragma once
// scaled_dot_product_attention: fused softmax(scale * q k^T + mask) v with grouped-query heads.
// Forward saves the attention probabilities; backward is hand-written from them (no graph of
// matmuls and softmaxes), which is what keeps attention's autograd cheap.
#include <cmath>
#include <cstdint>
#include <string>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/attention.hpp"

namespace mote::autograd {

template <Backend B = cpu>
struct AttentionOptions {
  // Query t of T sees keys at positions <= S - T + t: the queries are the last T of S positions.
  bool causal = true;
  // Boolean mask [B, T, S], or [T, S] for the whole batch; nonzero means "may attend". Combined with causal.
  const Tensor<std::uint8_t, B>* mask = nullptr;
  // Multiplies q k^T; 0 means 1/sqrt(Dh).
  double scale = 0;
};

namespace attention_detail {

// True when x [B, Hkv, S, Dh] has packed rows within each kv head and its kv heads head_stride
// (>= S * Dh) elements apart throughout: a slice of a [B, Hkv, capacity, Dh] buffer.
template <Real T, Backend B>
bool heads_apart(const Tensor<T, B>& x, std::int64_t head_stride) {
  const std::int64_t heads = x.size(1), len = x.size(2), dim = x.size(3);
  return x.stride(3) == 1 && x.stride(2) == dim && x.stride(1) == head_stride && head_stride >= len * dim &&
         x.stride(0) == heads * head_stride;
}

// What the forward pass computed, and what a backward pass needs of it.
template <Real T, Backend B>
struct Forward {
  Tensor<T, B> out, probs, q, k, v;  // q, k, v as the kernel read them
  T scale;
  std::int64_t batch, heads, kv_heads, q_len, kv_len, head_dim;
};

// Checks the operands and runs the forward kernel. `packed` asks for packed copies of k and v
// (a backward pass reads them packed); otherwise k and v may be read in place with their kv heads
// further apart, as a KV cache's views hold them.
template <Real T, Backend B>
Forward<T, B> forward(const Tensor<T, B>& q, const Tensor<T, B>& k, const Tensor<T, B>& v,
                      const AttentionOptions<B>& options, bool packed) {
  constexpr const char* op = "scaled_dot_product_attention";
  const Shape &qs = q.shape(), &ks = k.shape(), &vs = v.shape();
  if (qs.rank() != 4) throw shape_error(std::string("mote: ") + op + ": q must have shape [B, H, T, Dh], got " + qs.str());
  if (ks.rank() != 4) throw shape_error(std::string("mote: ") + op + ": k must have shape [B, Hkv, S, Dh], got " + ks.str());
  if (!(vs == ks))
    throw shape_error(std::string("mote: ") + op + ": v must have the shape of k " + ks.str() + ", got " + vs.str());
  const std::int64_t batch = qs[0], heads = qs[1], q_len = qs[2], head_dim = qs[3];
  const std::int64_t kv_heads = ks[1], kv_len = ks[2];
  if (ks[0] != batch || ks[3] != head_dim)
    throw shape_error(std::string("mote: ") + op + ": k " + ks.str() + " must match q " + qs.str() +
                      " in batch (dim 0) and head dim (dim 3)");
  if (kv_heads == 0 || heads % kv_heads != 0)
    throw shape_error(std::string("mote: ") + op + ": the query heads H of q " + qs.str() +
                      " must be a positive multiple of the kv heads Hkv of k " + ks.str());
  if (head_dim == 0) throw shape_error(std::string("mote: ") + op + ": the head dim Dh of q " + qs.str() + " must be > 0");
  if (options.causal && q_len > kv_len)
    throw shape_error(std::string("mote: ") + op + ": causal attention needs T <= S (the queries are the last T of S positions), got q " +
                      qs.str() + " and k " + ks.str());
  const Tensor<std::uint8_t, B>* mask = options.mask;
  std::int64_t mask_batch_stride = 0;
  Tensor<std::uint8_t, B> packed_mask;
  if (mask) {
    const Shape per_batch{batch, q_len, kv_len}, shared{q_len, kv_len};
    if (!mask->defined() || !(mask->shape() == per_batch || mask->shape() == shared))
      throw shape_error(std::string("mote: ") + op + ": mask must have shape [B, T, S] = " + per_batch.str() +
                        " or [T, S] = " + shared.str() + ", got " + (mask->defined() ? mask->shape().str() : "an empty tensor"));
    mask_batch_stride = mask->shape().rank() == 3 ? q_len * kv_len : 0;
    packed_mask = mask->contiguous();
  }
  if (!(options.scale >= 0) || !std::isfinite(options.scale))
    throw value_error(std::string("mote: ") + op + ": scale must be finite and >= 0 (0 means 1/sqrt(Dh)), got " +
                      std::to_string(options.scale));
  const T scale = static_cast<T>(options.scale == 0 ? 1.0 / std::sqrt(static_cast<double>(head_dim)) : options.scale);
  const std::int64_t head_stride = k.stride(1);
  const bool in_place = !packed && heads_apart(k, head_stride) && heads_apart(v, head_stride);
  Forward<T, B> f{Tensor<T, B>(qs), Tensor<T, B>(Shape{batch, heads, q_len, kv_len}), q.contiguous(),
                  in_place ? k : k.contiguous(), in_place ? v : v.contiguous(), scale, batch, heads, kv_heads, q_len,
                  kv_len, head_dim};
  const T* pq = f.q.data();
  const T* pk = f.k.data();
  const T* pv = f.v.data();
  const std::uint8_t* pm = mask ? packed_mask.data() : nullptr;
  T* po = f.out.data();
  T* pp = f.probs.data();
  MOTE_CALL_KERNEL(B, attention_forward, pq, pk, pv, pm, mask_batch_stride, batch, heads, kv_heads, q_len, kv_len,
                   head_dim, in_place ? head_stride : kv_len * head_dim, options.causal, scale, po, pp);
  return f;
}

}  // namespace attention_detail

// q [B, H, T, Dh], k and v [B, Hkv, S, Dh] with H % Hkv == 0 -> [B, H, T, Dh]. A query that may
// attend to nothing outputs zeros and passes back zero gradient.
template <Real T, Backend B>
Var<T, B> scaled_dot_product_attention(const Var<T, B>& q, const Var<T, B>& k, const Var<T, B>& v,
                                       const AttentionOptions<B>& options = {}) {
  constexpr const char* op = "scaled_dot_product_attention";
  expect_defined(q, op, "q");
  expect_defined(k, op, "k");
  expect_defined(v, op, "v");
  attention_detail::Forward<T, B> f = attention_detail::forward(q.value(), k.value(), v.value(), options, true);
  const Tensor<T, B> qv = f.q, kv = f.k, vv = f.v, probs = f.probs;
  const T scale = f.scale;
  const std::int64_t batch = f.batch, heads = f.heads, kv_heads = f.kv_heads, q_len = f.q_len, kv_len = f.kv_len,
                     head_dim = f.head_dim;
  return make_result(op, std::move(f.out), {q, k, v},
                     [qv, kv, vv, probs, scale, batch, heads, kv_heads, q_len, kv_len, head_dim](Node<T, B>& self) {
                       const T* pq = qv.data();
                       const T* pk = kv.data();
                       const T* pv = vv.data();
                       const T* pp = probs.data();
                       const T* g = self.grad.data();
                       T* gq = input_grad(self, 0);
                       T* gk = input_grad(self, 1);
                       T* gv = input_grad(self, 2);
                       MOTE_CALL_KERNEL(B, attention_backward, pq, pk, pv, pp, g, batch, heads, kv_heads, q_len, kv_len,
                                        head_dim, scale, gq, gk, gv);
                     });
}

// Against keys and values that take no gradient, such as a KV cache's views (whose kv heads may sit
// further apart than S rows: they are read in place). The gradient reaches q only.
template <Real T, Backend B>
Var<T, B> scaled_dot_product_attention(const Var<T, B>& q, const Tensor<T, B>& k, const Tensor<T, B>& v,
                                       const AttentionOptions<B>& options = {}) {
  constexpr const char* op = "scaled_dot_product_attention";
  expect_defined(q, op, "q");
  if (!k.defined() || !v.defined())
    throw value_error(std::string("mote: ") + op +
                      ": the key and value tensors must be defined (not default-constructed)");
  if (grad_enabled() && q.requires_grad()) return scaled_dot_product_attention(q, Var<T, B>(k), Var<T, B>(v), options);
  return Var<T, B>(std::move(attention_detail::forward(q.value(), k, v, options, false).out));
}

}  // namespace mote::autograd

namespace mote {
using autograd::AttentionOptions;
using autograd::scaled_dot_product_attention;
}  // namespace mote
