#pragma once
// The graph-free decoding step, on backends whose traits choose it (backend_traits::decode_path): one
// new token per sequence through a Block and its KV cache, written into buffers reused from step to
// step. It runs the block's own dataflow (Block::flow, the description the layer-by-layer forward
// runs too) through StepRun, whose ops call the backend's kernels by argument-dependent lookup. Its
// products, norms, rotations, attention and activations are the layer-by-layer forward's kernels
// with the same arguments and equally aligned buffers, and its bias and residual additions add the
// same values, so its output is bit for bit the same. What it skips is the cost of each graph op
// (tensor allocations, shape checks, views and packed copies), a visible share of a step at small
// widths. Adapters that can (LinearAdapter::serves_decode_step) add their share, unmerged, as
// low-rank terms of each base projection; their sums are the adapted forward's up to rounding.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <deque>
#include <type_traits>
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
  Tensor<T, B> x, normed, mean, rstd;  // the residual stream, the final norm's output, norm statistics
  // One buffer per op output of a block, in the order the block's flow asks for them: every block
  // and every step asks in the same order, so each buffer keeps its size from step to step.
  std::deque<Tensor<T, B>> outputs;
  std::size_t next_output = 0;

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

// The block's ops for one new token per sequence, on raw buffers: what Block::flow computes through
// in the graph-free step. A value is the first `count` elements of one of the scratch's buffers,
// [rows, width]; with one token per sequence, the heads layout is the projections' own row layout,
// so to_heads and from_heads move nothing.
template <Real T, Backend B>
struct StepRun {
  struct value {
    Tensor<T, B>* buffer = nullptr;
    std::int64_t count = 0;
    T* data() const { return buffer->data(); }
  };
  using S = Scratch<T, B>;
  const Step& step;
  LayerCache<T, B>& cache;
  S& s;

  // The next output buffer, holding at least `count` elements.
  value fresh(std::int64_t count) const {
    if (s.next_output == s.outputs.size()) s.outputs.emplace_back();
    Tensor<T, B>& t = s.outputs[s.next_output++];
    S::fit(t, count);
    return {&t, count};
  }
  template <class Norm>
  value norm(const Norm& layer, value x) const {
    const value y = fresh(x.count);
    normalize(layer, x.data(), step.rows, y.data(), s);
    return y;
  }
  template <class Projection>
  value project(const Projection& linear, value x) const {
    const value y = fresh(step.rows * linear.out_features);
    nn::decode_detail::project(linear, x.data(), step.rows, y.data(), step.adapter);
    return y;
  }
  std::array<value, 3> split(value x, std::int64_t a, std::int64_t b, std::int64_t c) const {
    const std::int64_t rows = step.rows, width = a + b + c;
    const std::array<value, 3> parts{fresh(rows * a), fresh(rows * b), fresh(rows * c)};
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* row = x.data() + r * width;
      B::copy(row, parts[0].data() + r * a, static_cast<std::size_t>(a));
      B::copy(row + a, parts[1].data() + r * b, static_cast<std::size_t>(b));
      B::copy(row + a + b, parts[2].data() + r * c, static_cast<std::size_t>(c));
    }
    return parts;
  }
  value to_heads(value t, std::int64_t /*heads*/, const Config&) const { return t; }
  value from_heads(value y, const Config&) const { return y; }
  value rope(value t, std::int64_t heads, const Config& c) const {
    const value y = fresh(t.count);
    MOTE_CALL_KERNEL(B, rope_forward, t.data(), step.positions, step.position_stride, step.rows, heads, std::int64_t{1},
                     c.head_dim(), c.rope_theta, y.data());
    return y;
  }
  // Appends k and v as the cache's newest position, then attends over every cached one.
  value attend(value q, value k, value v, const Config& c) const {
    const std::int64_t rows = step.rows, dh = c.head_dim();
    const Shape kv_shape{rows, c.n_kv_heads, 1, dh};
    cache.append(S::view(*k.buffer, kv_shape), S::view(*v.buffer, kv_shape), c.max_seq);
    const value probs = fresh(rows * c.n_heads * c.max_seq);
    const value y = fresh(q.count);
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
    if constexpr (keeps_bf16_cache<T, B>) {
      if (cache.compact()) {
        MOTE_CALL_KERNEL(B, attention_decode_bf16, q.data(), cache.compact_keys(), cache.compact_values(), step.mask,
                         step.mask_stride, rows, c.n_heads, c.n_kv_heads, cache.length(), dh, cache.compact_stride(),
                         scale, y.data(), probs.data());
        return y;
      }
    }
    const Tensor<T, B> keys = cache.keys(), values = cache.values();
    MOTE_CALL_KERNEL(B, attention_forward, q.data(), keys.data(), values.data(), step.mask, step.mask_stride, rows,
                     c.n_heads, c.n_kv_heads, std::int64_t{1}, cache.length(), dh, keys.stride(1), true, scale, y.data(),
                     probs.data());
    return y;
  }
  // The residual stream is added to in place.
  value residual(value x, value branch) const {
    MOTE_CALL_KERNEL(B, axpy, T(1), branch.data(), x.data(), x.count);
    return x;
  }
  value gelu(value h) const {
    MOTE_CALL_KERNEL(B, gelu_forward, h.data(), h.count, h.data());
    return h;
  }
  value swiglu(value gate, value up) const {
    MOTE_CALL_KERNEL(B, swiglu_forward, gate.data(), up.data(), up.count, up.data());
    return up;
  }
};

// s.x [rows, d] <- block(s.x), appending this step's keys and values to `cache`.
template <Config C, Real T, Backend B>
void block_step(const Block<C, T, B>& block, LayerCache<T, B>& cache, const Step& step, Scratch<T, B>& s) {
  s.next_output = 0;
  const StepRun<T, B> run{step, cache, s};
  (void)block.flow(run, {&s.x, step.rows * block.sizes().d_model});
}

}  // namespace mote::nn::decode_detail
