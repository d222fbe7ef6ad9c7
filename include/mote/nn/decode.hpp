#pragma once
// The graph-free decoding step, on backends whose traits choose it (backend_traits::decode_path): one
// new token per sequence through a Block and its KV cache, written into buffers reused from step to
// step. It calls the backend's kernels by argument-dependent lookup, as autograd's ops do. Its
// products, norms, rotations, attention and activations are the layer-by-layer forward's kernels
// with the same arguments and equally aligned buffers, and its bias and residual additions add the
// same values, so its output is bit for bit the same. What it skips is the cost of each graph op
// (tensor allocations, shape checks, views and packed copies), a visible share of a step at small
// widths. Adapters that can (LinearAdapter::serves_decode_step) add their share, unmerged, as
// low-rank terms of each base projection; their sums are the adapted forward's up to rounding.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mote/backend/concept.hpp"
#include "mote/backend/kernel_ops.hpp"
#include "mote/backend/traits.hpp"
#include "mote/core/tensor.hpp"
#include "mote/nn/config.hpp"
#include "mote/nn/layers.hpp"

namespace mote::nn::decode_detail {

// A step's run-time inputs: `rows` sequences of one new token each.
struct Step {
  std::int64_t rows = 0;
  const std::int32_t* positions = nullptr;   // one position per sequence (stride 1) or one shared (stride 0)
  std::int64_t position_stride = 0;
  const std::uint8_t* mask = nullptr;        // [rows, 1, S] or [1, S] with S = cached + 1; null for none
  std::int64_t mask_stride = 0;
  const AdapterContext* adapter = nullptr;   // the step's routing for attached adapters
};

// Buffers a step writes, kept per thread between steps. Each is a tensor of its own so kernels
// see the alignment the layer-by-layer forward's fresh tensors give them.
template <Real T, Backend B>
struct Scratch {
  Tensor<T, B> x, normed, qkv, q, k, v, q_rotated, k_rotated, attended, projected, gate, hidden, probs, mean, rstd;

  static Scratch& for_this_thread() {
    thread_local Scratch scratch;
    return scratch;
  }
  // The first `count` elements of t, which is reallocated only when it holds fewer.
  static T* fit(Tensor<T, B>& t, std::int64_t count) {
    if (!t.defined() || t.numel() < count) t = Tensor<T, B>(Shape{count});
    return t.data();
  }
  // The first elements of t viewed as `shape`.
  static Tensor<T, B> view(const Tensor<T, B>& t, const Shape& shape) {
    return t.slice(0, 0, shape.numel()).reshape(shape);
  }
};

// Whether every adapter attached to the block's projections can serve a graph-free step with
// this routing (LinearAdapter::serves_decode_step); a block without adapters can.
template <Config C, Real T, Backend B>
bool adapters_serve_step(const Block<C, T, B>& block, const AdapterContext* context) {
  const auto& a = block.attn;
  const auto& m = block.mlp;
  for (const auto* linear : {&a.qkv, &a.q, &a.k, &a.v, &a.o, &m.up, &m.gate, &m.down})
    if (linear->adapter && !linear->adapter->serves_decode_step(context)) return false;
  return true;
}

// y = norm(x) over rows of d_model.
template <Config C, Real T, Backend B>
void normalize(const NormLayer<C, T, B>& norm, const T* x, std::int64_t rows, T* y, Scratch<T, B>& s) {
  const T eps = static_cast<T>(norm.sizes().eps);
  const std::int64_t d = norm.sizes().d_model;
  T* rstd = Scratch<T, B>::fit(s.rstd, rows);
  if constexpr (C.norm == Norm::LayerNorm) {
    T* mean = Scratch<T, B>::fit(s.mean, rows);
    MOTE_CALL_KERNEL(B, layer_norm_forward, x, norm.weight.value().data(), norm.bias.value().data(), rows, d, eps, y, mean, rstd);
  } else {
    MOTE_CALL_KERNEL(B, rms_norm_forward, x, norm.weight.value().data(), rows, d, eps, y, rstd);
  }
}

// y = x W (+ bias) for rows of x, as autograd::Projection computes it, plus the attached adapter's
// share, unmerged: its low-rank terms ride in the base product's own pass (gemm_low_rank).
template <Config C, Real T, Backend B>
void project(const Linear<C, T, B>& linear, const T* x, std::int64_t rows, T* y, const AdapterContext* adapter) {
  const std::int64_t in = linear.in_features, out = linear.out_features;
  const Tensor<T, B> w = linear.weight.value().contiguous();
  constexpr bool trans_w = !Linear<C, T, B>::stores_in_out;  // [out, in], as nn.Linear stores it
  const std::int64_t ldw = trans_w ? in : out;
  bool adapted = false;
  if constexpr (backend_traits<B>::host_decode_adapters) {
    thread_local std::vector<backend::LowRankTerm<T>> terms;  // reused: every projection of every token
    terms.clear();
    if (linear.adapter) linear.adapter->append_decode_terms(rows, adapter, terms);
    if (!terms.empty()) {
      MOTE_CALL_KERNEL(B, gemm_low_rank, trans_w, rows, out, in, x, in, w.data(), ldw, terms.data(),
                       static_cast<std::int64_t>(terms.size()), y, out);
      adapted = true;
    }
  }
  if (!adapted) MOTE_CALL_KERNEL(B, gemm, false, trans_w, rows, out, in, T(1), x, in, w.data(), ldw, T(0), y, out);
  if (linear.bias.defined()) MOTE_CALL_KERNEL(B, add_row_vector, y, linear.bias.value().data(), rows, out);
}

// s.x [rows, d] <- block(s.x), appending this step's keys and values to `cache`.
template <Config C, Real T, Backend B>
void block_step(const Block<C, T, B>& block, LayerCache<T, B>& cache, const Step& step, Scratch<T, B>& s) {
  using S = Scratch<T, B>;
  const Config& c = block.sizes();  // C itself for a compile-time Config: the sizes fold to constants
  const std::int64_t d = c.d_model, kv = c.kv_dim(), dh = c.head_dim();
  const std::int64_t rows = step.rows;
  T* x = s.x.data();
  T* normed = S::fit(s.normed, rows * d);
  normalize(block.norm1, x, rows, normed, s);

  // Queries [rows, H, 1, Dh] and keys and values [rows, Hkv, 1, Dh]: with one token per sequence,
  // the heads layout is the projections' own row layout.
  T* q = S::fit(s.q, rows * d);
  T* k = S::fit(s.k, rows * kv);
  T* v = S::fit(s.v, rows * kv);
  if constexpr (C.gpt2_layout()) {
    T* qkv = S::fit(s.qkv, rows * (d + 2 * kv));
    project(block.attn.qkv, normed, rows, qkv, step.adapter);
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* row = qkv + r * (d + 2 * kv);
      B::copy(row, q + r * d, static_cast<std::size_t>(d));
      B::copy(row + d, k + r * kv, static_cast<std::size_t>(kv));
      B::copy(row + d + kv, v + r * kv, static_cast<std::size_t>(kv));
    }
  } else {
    project(block.attn.q, normed, rows, q, step.adapter);
    project(block.attn.k, normed, rows, k, step.adapter);
    project(block.attn.v, normed, rows, v, step.adapter);
  }
  const Tensor<T, B>* keys = &s.k;
  if constexpr (C.positions == Positions::RoPE) {
    T* q_rotated = S::fit(s.q_rotated, rows * d);
    T* k_rotated = S::fit(s.k_rotated, rows * kv);
    MOTE_CALL_KERNEL(B, rope_forward, q, step.positions, step.position_stride, rows, c.n_heads, std::int64_t{1}, dh,
                     c.rope_theta, q_rotated);
    MOTE_CALL_KERNEL(B, rope_forward, k, step.positions, step.position_stride, rows, c.n_kv_heads, std::int64_t{1}, dh,
                     c.rope_theta, k_rotated);
    q = q_rotated;
    keys = &s.k_rotated;
  }
  const Shape kv_shape{rows, c.n_kv_heads, 1, dh};
  cache.append(S::view(*keys, kv_shape), S::view(s.v, kv_shape), c.max_seq);

  const std::int64_t kv_len = cache.length();
  const Tensor<T, B> cached_keys = cache.keys(), cached_values = cache.values();
  T* probs = S::fit(s.probs, rows * c.n_heads * c.max_seq);
  T* attended = S::fit(s.attended, rows * d);
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
  MOTE_CALL_KERNEL(B, attention_forward, q, cached_keys.data(), cached_values.data(), step.mask, step.mask_stride, rows,
                   c.n_heads, c.n_kv_heads, std::int64_t{1}, kv_len, dh, cached_keys.stride(1), true, scale, attended, probs);
  T* projected = S::fit(s.projected, rows * d);
  project(block.attn.o, attended, rows, projected, step.adapter);
  MOTE_CALL_KERNEL(B, axpy, T(1), projected, x, rows * d);  // the residual connection

  normalize(block.norm2, x, rows, normed, s);
  T* hidden = S::fit(s.hidden, rows * c.d_ff);
  project(block.mlp.up, normed, rows, hidden, step.adapter);
  if constexpr (C.activation == Activation::SwiGLU) {
    T* gate = S::fit(s.gate, rows * c.d_ff);
    project(block.mlp.gate, normed, rows, gate, step.adapter);
    MOTE_CALL_KERNEL(B, swiglu_forward, gate, hidden, rows * c.d_ff, hidden);
  } else {
    MOTE_CALL_KERNEL(B, gelu_forward, hidden, rows * c.d_ff, hidden);
  }
  project(block.mlp.down, hidden, rows, projected, step.adapter);
  MOTE_CALL_KERNEL(B, axpy, T(1), projected, x, rows * d);  // the residual connection
}

}  // namespace mote::nn::decode_detail
