#pragma once
// Transformer blocks as types templated on a Config: Norm, Attention, MLP and the pre-norm Block.
// Every projection is an nn::Linear, so adapters (mote/lora) can attach to any of them by name.
// Each layer reads its sizes through sizes() (nn::Sized): C itself, or the run-time Config it was
// built with when C is run-time sized.
//
// Attention, MLP and Block each describe their dataflow once, in a member template flow(run, x),
// over the ops of a runner: GraphRun below builds the autograd graph (training, prompts), and
// nn/decode.hpp's StepRun runs the same description as kernels on reused buffers (one decoded token).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/autograd/activation.hpp"
#include "mote/autograd/attention.hpp"
#include "mote/autograd/elementwise.hpp"
#include "mote/autograd/norm.hpp"
#include "mote/autograd/rope.hpp"
#include "mote/autograd/shape_ops.hpp"
#include "mote/autograd/var.hpp"
#include "mote/backend/concept.hpp"
#include "mote/core/rng.hpp"
#include "mote/core/tensor.hpp"
#include "mote/nn/config.hpp"
#include "mote/nn/linear.hpp"

namespace mote::nn {

template <Config C, Real T, Backend B = cpu>
using LinearVisitor = std::function<void(const std::string& module, Linear<C, T, B>& linear)>;

// What a KV cache stores: the model's own element type, or bf16 (keys and values rounded to 8
// significant bits, half the bytes each decoding step reads). bf16 is for float models on the CPU.
enum class kv_precision { full, bf16 };

inline const char* kv_precision_name(kv_precision p) noexcept { return p == kv_precision::bf16 ? "bf16" : "full"; }

// Whether backend B keeps a bf16 KV cache of T: float, in host memory, with the cache's kernels.
template <Real T, Backend B>
inline constexpr bool keeps_bf16_cache =
    std::is_same_v<T, float> && B::host_accessible &&
    requires(const float* f, float* out, const std::uint16_t* bits, std::uint16_t* into, const std::uint8_t* mask,
             std::int64_t n) {
      to_bf16(B{}, f, into, n);
      from_bf16(B{}, bits, out, n);
      attention_decode_bf16(B{}, f, bits, bits, mask, n, n, n, n, n, n, n, 1.0f, out, out);
    };

// Per-layer key/value cache, [B, Hkv, S, Dh] after RoPE. Without a graph to record, a step's keys
// and values are written into buffers [B, Hkv, capacity, Dh] that double when full, so a decoded
// token costs its own rows rather than a copy of the whole cache. A step that records a graph joins
// them by concatenation instead, so that gradients reach the cached keys and values.
template <Real T, Backend B = cpu>
class LayerCache {
 public:
  using V = autograd::Var<T, B>;

  std::int64_t length() const { return length_; }
  std::int64_t batch() const { return length_ > 0 ? (compact() ? bf16_.batch : keys_.size(0)) : 0; }
  // Views [B, Hkv, S, Dh] of the cached keys and values; their kv heads may sit capacity rows apart.
  // A bf16 cache gives contiguous float copies instead (exactly its rounded values).
  Tensor<T, B> keys() const { return compact() ? widened(bf16_.keys) : keys_.slice(2, 0, length_); }
  Tensor<T, B> values() const { return compact() ? widened(bf16_.values) : values_.slice(2, 0, length_); }
  // Whether the cached keys and values belong to a recorded graph.
  bool records() const { return graph_k_.defined() && (graph_k_.requires_grad() || graph_v_.requires_grad()); }

  kv_precision precision() const { return precision_; }
  bool compact() const { return precision_ == kv_precision::bf16; }
  // Stores keys and values as `precision` from the first step on.
  void store_as(kv_precision precision) {
    if (precision == precision_) return;
    if (length_ > 0)
      throw value_error(std::string("mote: LayerCache::store_as(") + kv_precision_name(precision) + "): the cache holds " +
                        std::to_string(length_) + " positions stored as " + kv_precision_name(precision_) +
                        "; choose the precision of an empty cache");
    if (precision == kv_precision::bf16 && !keeps_bf16_cache<T, B>)
      throw value_error(std::string("mote: a bf16 KV cache holds a float model's keys on a backend with its kernels "
                                    "(the CPU's); this model is ") +
                        dtype_name<T>() + " on " + B::name + "; use kv_precision::full");
    precision_ = precision;
  }
  // A bf16 cache's buffers: bf16 bit patterns [B, Hkv, capacity, Dh], kv heads compact_stride() apart.
  const std::uint16_t* compact_keys() const { return bf16_.keys.data(); }
  const std::uint16_t* compact_values() const { return bf16_.values.data(); }
  std::int64_t compact_stride() const { return bf16_.capacity * bf16_.dim; }

  // Room for `rows` positions at the next allocation (a generation's prompt and new tokens), so
  // that the buffers need not grow, and copy themselves, on the way there.
  void reserve(std::int64_t rows) { reserved_ = rows; }

  // Appends k and v [B, Hkv, L, Dh] in place, growing the buffers up to max_len rows.
  void append(const Tensor<T, B>& k, const Tensor<T, B>& v, std::int64_t max_len) {
    if (compact()) {
      append_bf16(k, v, max_len);
      return;
    }
    const std::int64_t total = length_ + k.size(2);
    graph_k_ = graph_v_ = V{};
    if (!(keys_.defined() && keys_.size(0) == k.size(0) && total <= keys_.size(2))) {
      Shape shape = k.shape();
      shape[2] = grown_capacity(total, max_len);
      Tensor<T, B> keys(shape), values(shape);
      if (length_ > 0) {
        write_rows(this->keys(), keys, 0);
        write_rows(this->values(), values, 0);
      }
      keys_ = std::move(keys);
      values_ = std::move(values);
    }
    write_rows(k, keys_, length_);
    write_rows(v, values_, length_);
    length_ = total;
  }

  // Sequence `row`'s positions [from, from + count) as a cache of their own: one sequence, this
  // cache's precision, no graph. A later prompt that starts with the same tokens begins from it.
  LayerCache sequence_span(std::int64_t row, std::int64_t from, std::int64_t count) const {
    if (row < 0 || row >= batch() || from < 0 || count < 0 || from + count > length_)
      throw value_error("mote: LayerCache::sequence_span(" + std::to_string(row) + ", " + std::to_string(from) + ", " +
                        std::to_string(count) + "): expected a sequence below " + std::to_string(batch()) +
                        " and positions within the " + std::to_string(length_) + " cached");
    LayerCache span;
    span.precision_ = precision_;
    span.length_ = count;
    if (compact()) {
      const Bf16Buffers& buf = bf16_;
      span.bf16_ = {{}, {}, 1, buf.heads, count, buf.dim};
      span.bf16_.keys.resize(static_cast<std::size_t>(buf.heads * count * buf.dim));
      span.bf16_.values.resize(span.bf16_.keys.size());
      const std::int64_t at = (row * buf.heads * buf.capacity + from) * buf.dim, run = count * buf.dim;
      copy_runs(buf.keys.data() + at, buf.capacity * buf.dim, span.bf16_.keys.data(), run, buf.heads, run);
      copy_runs(buf.values.data() + at, buf.capacity * buf.dim, span.bf16_.values.data(), run, buf.heads, run);
      return span;
    }
    const std::int64_t heads = keys_.size(1), dim = keys_.size(3);
    span.keys_ = Tensor<T, B>(Shape{1, heads, count, dim});
    span.values_ = Tensor<T, B>(Shape{1, heads, count, dim});
    const std::int64_t at = row * keys_.stride(0) + from * dim;
    copy_runs(keys_.data() + at, keys_.stride(1), span.keys_.data(), count * dim, heads, count * dim);
    copy_runs(values_.data() + at, values_.stride(1), span.values_.data(), count * dim, heads, count * dim);
    return span;
  }

  // Makes this cache `length` positions of `batch` sequences of `heads` x `dim`, every one zero
  // (left padding, which the attention mask hides) until write_span fills them.
  void start_zeroed(std::int64_t batch, std::int64_t heads, std::int64_t dim, std::int64_t length, std::int64_t max_len) {
    graph_k_ = graph_v_ = V{};
    length_ = 0;
    const std::int64_t capacity = grown_capacity(length, max_len);
    if (compact()) {
      bf16_ = {{}, {}, batch, heads, capacity, dim};
      bf16_.keys.assign(static_cast<std::size_t>(batch * heads * capacity * dim), 0);
      bf16_.values.assign(bf16_.keys.size(), 0);
    } else {
      keys_ = Tensor<T, B>::zeros(Shape{batch, heads, capacity, dim});
      values_ = Tensor<T, B>::zeros(Shape{batch, heads, capacity, dim});
    }
    length_ = length;
  }

  // Sequence `source_row`'s positions [source_at, source_at + count) of `source` (this precision)
  // into sequence `row`'s positions [at, at + count).
  void write_span(std::int64_t row, std::int64_t at, const LayerCache& source, std::int64_t count, std::int64_t source_row = 0,
                  std::int64_t source_at = 0) {
    if (source.precision_ != precision_ || source_row < 0 || source_row >= source.batch() || source_at < 0 || count < 0 ||
        source_at + count > source.length_ || row < 0 || row >= batch() || at < 0 || at + count > length_)
      throw value_error(std::string("mote: LayerCache::write_span: expected a ") + kv_precision_name(precision_) +
                        " cache with positions [" + std::to_string(source_at) + ", " + std::to_string(source_at + count) +
                        ") of its sequence " + std::to_string(source_row) + ", written within this cache's " +
                        std::to_string(batch()) + " sequences and " + std::to_string(length_) + " positions; got a " +
                        kv_precision_name(source.precision_) + " cache of " + std::to_string(source.batch()) +
                        " sequences and " + std::to_string(source.length_) + " positions");
    if (compact()) {
      const Bf16Buffers &from = source.bf16_, &to = bf16_;
      const std::int64_t out = (source_row * from.heads * from.capacity + source_at) * from.dim;
      const std::int64_t into = (row * to.heads * to.capacity + at) * to.dim, run = count * to.dim;
      copy_runs(from.keys.data() + out, from.capacity * from.dim, bf16_.keys.data() + into, to.capacity * to.dim, to.heads, run);
      copy_runs(from.values.data() + out, from.capacity * from.dim, bf16_.values.data() + into, to.capacity * to.dim, to.heads, run);
      return;
    }
    const std::int64_t heads = keys_.size(1), dim = keys_.size(3), into = row * keys_.stride(0) + at * dim;
    const std::int64_t out = source_row * source.keys_.stride(0) + source_at * dim;
    copy_runs(source.keys_.data() + out, source.keys_.stride(1), keys_.data() + into, keys_.stride(1), heads, count * dim);
    copy_runs(source.values_.data() + out, source.values_.stride(1), values_.data() + into, values_.stride(1), heads, count * dim);
  }

  // Joins k and v [B, Hkv, L, Dh] to the cache as graph operations; returns the whole keys and values.
  std::pair<V, V> join(const V& k, const V& v) {
    if (compact())
      throw value_error("mote: LayerCache: a bf16 KV cache cannot record a graph through its keys and values; "
                        "record with kv_precision::full, or step under autograd::no_grad");
    if (length_ > 0) {
      const V past_k = graph_k_.defined() ? graph_k_ : V(keys()), past_v = graph_v_.defined() ? graph_v_ : V(values());
      graph_k_ = autograd::concat(std::vector<V>{past_k, k}, 2);
      graph_v_ = autograd::concat(std::vector<V>{past_v, v}, 2);
    } else {
      graph_k_ = k;
      graph_v_ = v;
    }
    keys_ = graph_k_.value();  // full: the next in-place append copies it into fresh buffers
    values_ = graph_v_.value();
    length_ = keys_.size(2);
    return {graph_k_, graph_v_};
  }

 private:
  // bf16 bit patterns [batch, heads, capacity, dim]; rows [0, length_) are in use.
  struct Bf16Buffers {
    std::vector<std::uint16_t> keys, values;
    std::int64_t batch = 0, heads = 0, capacity = 0, dim = 0;
  };
  Tensor<T, B> keys_, values_;  // [B, Hkv, capacity, Dh]; rows [0, length_) are in use
  Bf16Buffers bf16_;
  kv_precision precision_ = kv_precision::full;
  std::int64_t length_ = 0;
  std::int64_t reserved_ = 0;
  V graph_k_, graph_v_;  // the recorded keys and values, when the last step recorded a graph

  std::int64_t grown_capacity(std::int64_t total, std::int64_t max_len) const {
    return std::max(total, std::min(max_len, std::max({2 * length_, std::int64_t{64}, reserved_})));
  }

  // `runs` runs of `run` elements, `from_stride` apart, to places `to_stride` apart: one per kv head.
  template <class E>
  static void copy_runs(const E* from, std::int64_t from_stride, E* to, std::int64_t to_stride, std::int64_t runs,
                        std::int64_t run) {
    for (std::int64_t i = 0; i < runs; ++i) {
      if constexpr (std::is_same_v<E, T>) B::copy(from + i * from_stride, to + i * to_stride, static_cast<std::size_t>(run));
      else std::copy_n(from + i * from_stride, run, to + i * to_stride);  // a bf16 cache's host buffers
    }
  }

  // rows [B, Hkv, n, Dh] into rows [at, at + n) of buffer, one contiguous run per kv head.
  static void write_rows(const Tensor<T, B>& rows, const Tensor<T, B>& buffer, std::int64_t at) {
    const Tensor<T, B> packed = rows.contiguous();
    const std::int64_t run = packed.size(2) * packed.size(3);
    copy_runs(packed.data(), run, buffer.data() + at * buffer.size(3), buffer.stride(1), packed.size(0) * packed.size(1), run);
  }

  // The same into the bf16 buffers, rounding each element to nearest, ties to even.
  void append_bf16(const Tensor<T, B>& k, const Tensor<T, B>& v, std::int64_t max_len) {
    if constexpr (keeps_bf16_cache<T, B>) {
      const std::int64_t total = length_ + k.size(2);
      Bf16Buffers& buf = bf16_;
      if (!(buf.batch == k.size(0) && total <= buf.capacity)) {
        Bf16Buffers grown{{}, {}, k.size(0), k.size(1), grown_capacity(total, max_len), k.size(3)};
        const auto size = static_cast<std::size_t>(grown.batch * grown.heads * grown.capacity * grown.dim);
        grown.keys.resize(size);
        grown.values.resize(size);
        const std::int64_t runs = length_ > 0 ? grown.batch * grown.heads : 0, run = length_ * grown.dim;
        copy_runs(buf.keys.data(), buf.capacity * buf.dim, grown.keys.data(), grown.capacity * grown.dim, runs, run);
        copy_runs(buf.values.data(), buf.capacity * buf.dim, grown.values.data(), grown.capacity * grown.dim, runs, run);
        buf = std::move(grown);
      }
      const auto round_rows = [&](const Tensor<T, B>& rows, std::vector<std::uint16_t>& into) {
        const Tensor<T, B> packed = rows.contiguous();
        const std::int64_t heads = packed.size(0) * packed.size(1), run = packed.size(2) * packed.size(3);
        for (std::int64_t h = 0; h < heads; ++h)
          MOTE_CALL_KERNEL(B, to_bf16, packed.data() + h * run,
                           into.data() + h * buf.capacity * buf.dim + length_ * buf.dim, run);
      };
      round_rows(k, buf.keys);
      round_rows(v, buf.values);
      length_ = total;
    } else {
      (void)k, (void)v, (void)max_len;  // store_as admits bf16 only where keeps_bf16_cache holds
    }
  }

  // A bf16 buffer's rows in use as float [B, Hkv, length, Dh].
  Tensor<T, B> widened(const std::vector<std::uint16_t>& bits) const {
    if constexpr (keeps_bf16_cache<T, B>) {
      const Bf16Buffers& buf = bf16_;
      Tensor<T, B> out(Shape{buf.batch, buf.heads, length_, buf.dim});
      const std::int64_t run = length_ * buf.dim;
      for (std::int64_t h = 0; h < buf.batch * buf.heads; ++h)
        MOTE_CALL_KERNEL(B, from_bf16, bits.data() + h * buf.capacity * buf.dim, out.data() + h * run, run);
      return out;
    } else {
      (void)bits;
      return {};
    }
  }
};

// Run-time inputs shared by every layer of one forward pass.
template <Backend B = cpu>
struct LayerInputs {
  const Tensor<std::int32_t, B>* positions = nullptr;  // [B, L] or [L]; absolute positions of the new tokens
  const Tensor<std::uint8_t, B>* mask = nullptr;       // [B, L, S] or [L, S], S = cached + L; 1 = may attend
  std::shared_ptr<const AdapterContext> adapter;       // routing for the attached adapters, if any
};

// LayerNorm (weight, bias) or RMSNorm (weight) over d_model.
template <Config C, Real T, Backend B = cpu>
struct NormLayer : Sized<C> {
  static_assert(validate<C>::value);
  using Sized<C>::sizes;
  autograd::Var<T, B> weight, bias;

  NormLayer() requires(!C.runtime_sized()) : NormLayer(C) {}
  explicit NormLayer(const Config& sizes)
      : Sized<C>(sizes), weight(detail::const_param<T, B>({sizes.d_model}, 1.0)) {
    if constexpr (C.norm == Norm::LayerNorm) bias = detail::const_param<T, B>({sizes.d_model}, 0.0);
  }
  autograd::Var<T, B> operator()(const autograd::Var<T, B>& x) const {
    const T eps = static_cast<T>(sizes().eps);
    if constexpr (C.norm == Norm::LayerNorm) return autograd::layer_norm(x, weight, bias, eps);
    else return autograd::rms_norm(x, weight, eps);
  }
  void for_each_parameter(const std::string& prefix, const ParamVisitor<T, B>& visit) {
    visit(prefix + ".weight", weight);
    if constexpr (C.norm == Norm::LayerNorm) visit(prefix + ".bias", bias);
  }
};

// The layer-by-layer forward's ops on graph values, for the layers' flow(): every op is an autograd
// op, so the result can be differentiated. `cache`, when given, receives the keys and values.
template <Real T, Backend B = cpu>
struct GraphRun {
  using value = autograd::Var<T, B>;
  const LayerInputs<B>& in;
  LayerCache<T, B>* cache = nullptr;

  template <class Norm>
  value norm(const Norm& layer, const value& x) const { return layer(x); }
  template <class Projection>
  value project(const Projection& linear, const value& x) const { return linear(x, in.adapter.get()); }
  // x [B, L, a + b + c] into its three parts along the last dimension.
  std::array<value, 3> split(const value& x, std::int64_t a, std::int64_t b, std::int64_t c) const {
    auto parts = autograd::split(x, -1, {a, b, c});
    return {parts[0], parts[1], parts[2]};
  }
  // [B, L, heads * Dh] -> [B, heads, L, Dh] and back.
  value to_heads(const value& t, std::int64_t heads, const Config& c) const {
    return autograd::transpose(autograd::reshape(t, {t.shape()[0], t.shape()[1], heads, c.head_dim()}), 1, 2);
  }
  value from_heads(const value& y, const Config& c) const {
    return autograd::reshape(autograd::transpose(y, 1, 2), {y.shape()[0], y.shape()[2], c.d_model});
  }
  value rope(const value& t, std::int64_t /*heads*/, const Config& c) const {
    return autograd::rope(t, *in.positions, c.rope_theta);
  }
  // Causal attention of q over k and v [B, H(kv), L, Dh], after the cached keys and values if any.
  value attend(const value& q, const value& k, const value& v, const Config& c) const {
    const autograd::AttentionOptions<B> options{.causal = true, .mask = in.mask};
    if (!cache) return autograd::scaled_dot_product_attention(q, k, v, options);
    if (autograd::grad_enabled() && (k.requires_grad() || v.requires_grad() || cache->records())) {
      const auto [all_k, all_v] = cache->join(k, v);
      return autograd::scaled_dot_product_attention(q, all_k, all_v, options);
    }
    cache->append(k.value(), v.value(), c.max_seq);
    return autograd::scaled_dot_product_attention(q, cache->keys(), cache->values(), options);
  }
  value residual(const value& x, const value& branch) const { return x + branch; }
  value gelu(const value& h) const { return autograd::gelu(h); }
  value swiglu(const value& gate, const value& up) const { return autograd::swiglu(gate, up); }
};

// Multi-head attention with grouped-query heads, optional RoPE, causal plus an optional mask, and
// an optional KV cache. GPT-2 layout: one fused c_attn [d, d + 2 kv_dim] whose output is split
// into q, k, v; Llama layout: q_proj, k_proj, v_proj, o_proj.
template <Config C, Real T, Backend B = cpu>
struct Attention : Sized<C> {
  static_assert(validate<C>::value);
  using V = autograd::Var<T, B>;
  using Sized<C>::sizes;
  Linear<C, T, B> qkv, q, k, v, o;  // qkv (GPT-2) or q, k, v (Llama); o is c_proj / o_proj

  explicit Attention(Rng& rng) requires(!C.runtime_sized()) : Attention(C, rng) {}
  Attention(const Config& sizes, Rng& rng) : Sized<C>(sizes) {
    const std::int64_t d = sizes.d_model, kv = sizes.kv_dim();
    const double init_std = 0.02, residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(sizes.n_layers));
    if constexpr (C.gpt2_layout()) {
      qkv = Linear<C, T, B>(d, d + 2 * kv, init_std, rng);
    } else {
      q = Linear<C, T, B>(d, d, init_std, rng);
      k = Linear<C, T, B>(d, kv, init_std, rng);
      v = Linear<C, T, B>(d, kv, init_std, rng);
    }
    o = Linear<C, T, B>(d, d, residual_std, rng);
  }

  // x [B, L, d] -> [B, L, d]; appends this step's keys and values to `cache` when given.
  V operator()(const V& x, const LayerInputs<B>& in, LayerCache<T, B>* cache = nullptr) const {
    const GraphRun<T, B> run{in, cache};
    return flow(run, x);
  }

  // The attention's dataflow: project, split into heads, rotate (RoPE), attend, project back.
  template <class Run>
  typename Run::value flow(const Run& run, const typename Run::value& x) const {
    const Config& c = sizes();
    typename Run::value qs, ks, vs;
    if constexpr (C.gpt2_layout()) {
      const auto parts = run.split(run.project(qkv, x), c.d_model, c.kv_dim(), c.kv_dim());
      qs = parts[0];
      ks = parts[1];
      vs = parts[2];
    } else {
      qs = run.project(q, x);
      ks = run.project(k, x);
      vs = run.project(v, x);
    }
    qs = run.to_heads(qs, c.n_heads, c);
    ks = run.to_heads(ks, c.n_kv_heads, c);
    vs = run.to_heads(vs, c.n_kv_heads, c);
    if constexpr (C.positions == Positions::RoPE) {
      qs = run.rope(qs, c.n_heads, c);
      ks = run.rope(ks, c.n_kv_heads, c);
    }
    return run.project(o, run.from_heads(run.attend(qs, ks, vs, c), c));
  }

  // Hugging Face module names under `prefix` (e.g. "h.0.attn" or "model.layers.0.self_attn").
  void for_each_linear(const std::string& prefix, const LinearVisitor<C, T, B>& visit) {
    if constexpr (C.gpt2_layout()) {
      visit(prefix + ".c_attn", qkv);
      visit(prefix + ".c_proj", o);
    } else {
      visit(prefix + ".q_proj", q);
      visit(prefix + ".k_proj", k);
      visit(prefix + ".v_proj", v);
      visit(prefix + ".o_proj", o);
    }
  }
  void for_each_parameter(const std::string& prefix, const ParamVisitor<T, B>& visit) {
    for_each_linear(prefix, [&](const std::string& name, Linear<C, T, B>& l) { l.for_each_parameter(name, visit); });
  }
};

// GPT-2: c_proj(gelu_tanh(c_fc(x))); Llama: down_proj(silu(gate_proj(x)) * up_proj(x)).
template <Config C, Real T, Backend B = cpu>
struct MLP : Sized<C> {
  static_assert(validate<C>::value);
  using V = autograd::Var<T, B>;
  using Sized<C>::sizes;
  Linear<C, T, B> up, gate, down;  // up = c_fc / up_proj, down = c_proj / down_proj; gate for SwiGLU

  explicit MLP(Rng& rng) requires(!C.runtime_sized()) : MLP(C, rng) {}
  MLP(const Config& sizes, Rng& rng) : Sized<C>(sizes) {
    const double init_std = 0.02, residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(sizes.n_layers));
    if constexpr (C.activation == Activation::SwiGLU) gate = Linear<C, T, B>(sizes.d_model, sizes.d_ff, init_std, rng);
    up = Linear<C, T, B>(sizes.d_model, sizes.d_ff, init_std, rng);
    down = Linear<C, T, B>(sizes.d_ff, sizes.d_model, residual_std, rng);
  }

  V operator()(const V& x, const LayerInputs<B>& in = {}) const {
    const GraphRun<T, B> run{in};
    return flow(run, x);
  }

  // The feed-forward dataflow (up before gate, so adapters' random draws come in one order).
  template <class Run>
  typename Run::value flow(const Run& run, const typename Run::value& x) const {
    if constexpr (C.activation == Activation::SwiGLU) {
      const auto up_x = run.project(up, x);
      const auto gate_x = run.project(gate, x);
      return run.project(down, run.swiglu(gate_x, up_x));
    } else {
      return run.project(down, run.gelu(run.project(up, x)));
    }
  }

  void for_each_linear(const std::string& prefix, const LinearVisitor<C, T, B>& visit) {
    if constexpr (C.gpt2_layout()) {
      visit(prefix + ".c_fc", up);
      visit(prefix + ".c_proj", down);
    } else {
      visit(prefix + ".gate_proj", gate);
      visit(prefix + ".up_proj", up);
      visit(prefix + ".down_proj", down);
    }
  }
  void for_each_parameter(const std::string& prefix, const ParamVisitor<T, B>& visit) {
    for_each_linear(prefix, [&](const std::string& name, Linear<C, T, B>& l) { l.for_each_parameter(name, visit); });
  }
};

// Pre-norm residual block: x + attn(norm1(x)), then + mlp(norm2(x)).
template <Config C, Real T, Backend B = cpu>
struct Block : Sized<C> {
  static_assert(validate<C>::value);
  using V = autograd::Var<T, B>;
  using Sized<C>::sizes;
  NormLayer<C, T, B> norm1;
  Attention<C, T, B> attn;
  NormLayer<C, T, B> norm2;
  MLP<C, T, B> mlp;

  // Activation recomputation: keep only the block's input, rerun its forward during backward.
  bool recompute = false;

  explicit Block(Rng& rng) requires(!C.runtime_sized()) : Block(C, rng) {}
  Block(const Config& sizes, Rng& rng) : Sized<C>(sizes), norm1(sizes), attn(sizes, rng), norm2(sizes), mlp(sizes, rng) {}

  V operator()(const V& x, const LayerInputs<B>& in, LayerCache<T, B>* cache = nullptr) const {
    if (!recompute || cache || !autograd::grad_enabled()) return forward(x, in, cache);
    return checkpointed(x, in);
  }

  V forward(const V& x, const LayerInputs<B>& in, LayerCache<T, B>* cache = nullptr) const {
    const GraphRun<T, B> run{in, cache};
    return flow(run, x);
  }

  // The block's dataflow, shared by the layer-by-layer forward and the graph-free decoding step.
  template <class Run>
  typename Run::value flow(const Run& run, typename Run::value x) const {
    x = run.residual(x, attn.flow(run, run.norm(norm1, x)));
    return run.residual(x, mlp.flow(run, run.norm(norm2, x)));
  }

  // Every tensor the block's output depends on that may train: its parameters and its adapters'.
  std::vector<V> parameters() const {
    Block copy = *this;  // handles share the parameters; the visitors need non-const access
    std::vector<V> out;
    copy.for_each_parameter("", [&](const std::string&, V& p) { out.push_back(p); });
    copy.for_each_linear("", [&](const std::string&, Linear<C, T, B>& l) {
      if (l.adapter)
        for (const V& p : l.adapter->parameters()) out.push_back(p);
    });
    return out;
  }

  // Every projection under its Hugging Face module name; prefix as for for_each_parameter.
  void for_each_linear(const std::string& prefix, const LinearVisitor<C, T, B>& visit) {
    attn.for_each_linear(prefix + (C.gpt2_layout() ? ".attn" : ".self_attn"), visit);
    mlp.for_each_linear(prefix + ".mlp", visit);
  }

  // prefix is "h.{i}" (GPT-2) or "model.layers.{i}" (Llama).
  void for_each_parameter(const std::string& prefix, const ParamVisitor<T, B>& visit) {
    if constexpr (C.gpt2_layout()) {
      norm1.for_each_parameter(prefix + ".ln_1", visit);
      attn.for_each_parameter(prefix + ".attn", visit);
      norm2.for_each_parameter(prefix + ".ln_2", visit);
      mlp.for_each_parameter(prefix + ".mlp", visit);
    } else {
      norm1.for_each_parameter(prefix + ".input_layernorm", visit);
      attn.for_each_parameter(prefix + ".self_attn", visit);
      norm2.for_each_parameter(prefix + ".post_attention_layernorm", visit);
      mlp.for_each_parameter(prefix + ".mlp", visit);
    }
  }

 private:
  // One graph node whose backward reruns the block with grad on and back-propagates through it:
  // parameter gradients accumulate directly into the parameters, the input's is passed on.
  V checkpointed(const V& x, const LayerInputs<B>& in) const {
    Tensor<T, B> out;
    {
      autograd::no_grad off;
      out = forward(x, in).value();
    }
    // The run-time inputs are copied (handles) so backward does not depend on the caller's tensors.
    const Tensor<std::int32_t, B> positions = in.positions ? *in.positions : Tensor<std::int32_t, B>();
    const Tensor<std::uint8_t, B> mask = in.mask ? *in.mask : Tensor<std::uint8_t, B>();
    std::vector<V> inputs{x};
    for (const V& p : parameters()) inputs.push_back(p);
    return autograd::make_result(
        "block_recompute", std::move(out), inputs,
        [block = *this, xv = x.value(), x_grad = x.requires_grad(), positions, mask, adapter = in.adapter](autograd::Node<T, B>& self) {
          autograd::detail::FlagScope grad_on(autograd::detail::grad_enabled, true);
          V xin(xv, x_grad);
          const LayerInputs<B> again{.positions = positions.defined() ? &positions : nullptr,
                                     .mask = mask.defined() ? &mask : nullptr,
                                     .adapter = adapter};
          V y = block.forward(xin, again);
          y.backward(self.grad);
          if (T* gx = autograd::input_grad(self, 0)) {
            const T* g = xin.grad().data();
            const std::int64_t n = xin.numel();
            MOTE_CALL_KERNEL(B, axpy, T(1), g, gx, n);
          }
        });
  }
};

}  // namespace mote::nn
