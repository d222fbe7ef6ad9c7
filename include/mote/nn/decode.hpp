#pragma once
// The graph-free decoding step on the CPU: one new token per sequence through a Block and its KV
// cache, written into buffers reused from step to step. Its products, norms, rotations, attention
// and activations are the layer-by-layer forward's kernels with the same arguments and equally
// aligned buffers, and its bias and residual additions add the same values, so its output is bit
// for bit the same. What it skips is the cost of each graph op (tensor allocations, shape checks, views
// and packed copies), which is a visible share of a step at small widths. Adapters that can
// (LinearAdapter::serves_decode_step) add their share, unmerged, after each base projection; their
// sums are the adapted forward's up to rounding, not bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "mote/backend/cpu/activation.hpp"
#include "mote/backend/cpu/attention.hpp"
#include "mote/backend/cpu/elementwise.hpp"
#include "mote/backend/cpu/gemm.hpp"
#include "mote/backend/cpu/norm.hpp"
#include "mote/backend/cpu/rope.hpp"
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
template <Real T>
struct Scratch {
  Tensor<T, cpu> x, normed, qkv, q, k, v, q_rotated, k_rotated, attended, projected, gate, hidden, probs, mean, rstd;

  static Scratch& for_this_thread() {
    thread_local Scratch scratch;
    return scratch;
  }
  // The first `count` elements of t, which is reallocated only when it holds fewer.
  static T* fit(Tensor<T, cpu>& t, std::int64_t count) {
    if (!t.defined() || t.numel() < count) t = Tensor<T, cpu>(Shape{count});
    return t.data();
  }
  // The first elements of t viewed as `shape`.
  static Tensor<T, cpu> view(const Tensor<T, cpu>& t, const Shape& shape) {
    return t.slice(0, 0, shape.numel()).reshape(shape);
  }
};

// Whether every adapter attached to the block's projections can serve a graph-free step with
// this routing (LinearAdapter::serves_decode_step); a block without adapters can.
template <Config C, Real T>
bool adapters_serve_step(const Block<C, T, cpu>& block, const AdapterContext* context) {
  const auto& a = block.attn;
  const auto& m = block.mlp;
  for (const auto* linear : {&a.qkv, &a.q, &a.k, &a.v, &a.o, &m.up, &m.gate, &m.down})
    if (linear->adapter && !linear->adapter->serves_decode_step(context)) return false;
  return true;
}

// y = norm(x) over rows of d_model.
template <Config C, Real T>
void normalize(const NormLayer<C, T, cpu>& norm, const T* x, std::int64_t rows, T* y, Scratch<T>& s) {
  const T eps = static_cast<T>(norm.sizes().eps);
  const std::int64_t d = norm.sizes().d_model;
  T* rstd = Scratch<T>::fit(s.rstd, rows);
  if constexpr (C.norm == Norm::LayerNorm) {
    T* mean = Scratch<T>::fit(s.mean, rows);
    backend::layer_norm_forward(cpu{}, x, norm.weight.value().data(), norm.bias.value().data(), rows, d, eps, y, mean, rstd);
  } else {
    backend::rms_norm_forward(cpu{}, x, norm.weight.value().data(), rows, d, eps, y, rstd);
  }
}

// y = x W (+ bias) for rows of x, as autograd::Projection computes it: the product, then the bias;
// then the attached adapter's share, unmerged.
template <Config C, Real T>
void project(const Linear<C, T, cpu>& linear, const T* x, std::int64_t rows, T* y, const AdapterContext* adapter) {
  const std::int64_t in = linear.in_features, out = linear.out_features;
  const Tensor<T, cpu> w = linear.weight.value().contiguous();
  if constexpr (Linear<C, T, cpu>::stores_in_out)
    backend::gemm(cpu{}, false, false, rows, out, in, T(1), x, in, w.data(), out, T(0), y, out);
  else
    backend::gemm(cpu{}, false, true, rows, out, in, T(1), x, in, w.data(), in, T(0), y, out);
  if (linear.bias.defined()) backend::add_row_vector(cpu{}, y, linear.bias.value().data(), rows, out);
  if (linear.adapter) linear.adapter->add_decode_step(x, rows, y, adapter);
}

// s.x [rows, d] <- block(s.x), appending this step's keys and values to `cache`.
template <Config C, Real T>
void block_step(const Block<C, T, cpu>& block, LayerCache<T, cpu>& cache, const Step& step, Scratch<T>& s) {
  using S = Scratch<T>;
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
      std::copy(row, row + d, q + r * d);
      std::copy(row + d, row + d + kv, k + r * kv);
      std::copy(row + d + kv, row + d + 2 * kv, v + r * kv);
    }
  } else {
    project(block.attn.q, normed, rows, q, step.adapter);
    project(block.attn.k, normed, rows, k, step.adapter);
    project(block.attn.v, normed, rows, v, step.adapter);
  }
  const Tensor<T, cpu>* keys = &s.k;
  if constexpr (C.positions == Positions::RoPE) {
    T* q_rotated = S::fit(s.q_rotated, rows * d);
    T* k_rotated = S::fit(s.k_rotated, rows * kv);
    backend::rope_forward(cpu{}, q, step.positions, step.position_stride, rows, c.n_heads, 1, dh, c.rope_theta, q_rotated);
    backend::rope_forward(cpu{}, k, step.positions, step.position_stride, rows, c.n_kv_heads, 1, dh, c.rope_theta,
                          k_rotated);
    q = q_rotated;
    keys = &s.k_rotated;
  }
  const Shape kv_shape{rows, c.n_kv_heads, 1, dh};
  cache.append(S::view(*keys, kv_shape), S::view(s.v, kv_shape), c.max_seq);

  const std::int64_t kv_len = cache.length();
  const Tensor<T, cpu> cached_keys = cache.keys(), cached_values = cache.values();
  T* probs = S::fit(s.probs, rows * c.n_heads * c.max_seq);
  T* attended = S::fit(s.attended, rows * d);
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
  backend::attention_forward(cpu{}, q, cached_keys.data(), cached_values.data(), step.mask, step.mask_stride, rows,
                             c.n_heads, c.n_kv_heads, 1, kv_len, dh, cached_keys.stride(1), true, scale, attended, probs);
  T* projected = S::fit(s.projected, rows * d);
  project(block.attn.o, attended, rows, projected, step.adapter);
  backend::axpy(cpu{}, T(1), projected, x, rows * d);  // the residual connection

  normalize(block.norm2, x, rows, normed, s);
  T* hidden = S::fit(s.hidden, rows * c.d_ff);
  project(block.mlp.up, normed, rows, hidden, step.adapter);
  if constexpr (C.activation == Activation::SwiGLU) {
    T* gate = S::fit(s.gate, rows * c.d_ff);
    project(block.mlp.gate, normed, rows, gate, step.adapter);
    backend::swiglu_forward(cpu{}, gate, hidden, rows * c.d_ff, hidden);
  } else {
    backend::gelu_forward(cpu{}, hidden, rows * c.d_ff, hidden);
  }
  project(block.mlp.down, hidden, rows, projected, step.adapter);
  backend::axpy(cpu{}, T(1), projected, x, rows * d);  // the residual connection
}

}  // namespace mote::nn::decode_detail
