#pragma once
// Transformer blocks as types templated on a Config: Norm, Attention, MLP and the pre-norm Block.
// GPT-2-layout weights are stored as Hugging Face's Conv1D does, [in, out], and applied with
// matmul (no transpose); Llama-layout weights are nn.Linear's [out, in], applied with linear.
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mote/autograd/activation.hpp"
#include "mote/autograd/attention.hpp"
#include "mote/autograd/elementwise.hpp"
#include "mote/autograd/matmul.hpp"
#include "mote/autograd/norm.hpp"
#include "mote/autograd/rope.hpp"
#include "mote/autograd/shape_ops.hpp"
#include "mote/autograd/var.hpp"
#include "mote/core/rng.hpp"
#include "mote/core/tensor.hpp"
#include "mote/nn/config.hpp"

namespace mote::nn {

template <Real T, Backend B = cpu>
using ParamVisitor = std::function<void(const std::string& name, autograd::Var<T, B>& param)>;

namespace detail {

template <Real T, Backend B>
autograd::Var<T, B> normal_param(const Shape& shape, double stddev, Rng& rng) {
  return autograd::Var<T, B>::parameter(Tensor<T, B>::normal(shape, 0.0, stddev, rng));
}
template <Real T, Backend B>
autograd::Var<T, B> const_param(const Shape& shape, double value) {
  return autograd::Var<T, B>::parameter(Tensor<T, B>::full(shape, static_cast<T>(value)));
}

// One projection: Conv1D [in, out] weights for the GPT-2 layout, nn.Linear [out, in] otherwise.
template <Config C, Real T, Backend B>
autograd::Var<T, B> project(const autograd::Var<T, B>& x, const autograd::Var<T, B>& w, const autograd::Var<T, B>& b) {
  if constexpr (C.gpt2_layout()) {
    return b.defined() ? autograd::matmul(x, w, b) : autograd::matmul(x, w);
  } else {
    return b.defined() ? autograd::linear(x, w, b) : autograd::linear(x, w);
  }
}

// Weight shape of a projection from `in` to `out` features in the layout's storage order.
template <Config C>
Shape projection_shape(std::int64_t in, std::int64_t out) {
  if constexpr (C.gpt2_layout()) return Shape{in, out};
  else return Shape{out, in};
}

}  // namespace detail

// Per-layer key/value cache: k and v [B, Hkv, S, Dh] (after RoPE), grown by concatenation.
template <Real T, Backend B = cpu>
struct LayerCache {
  autograd::Var<T, B> k, v;
  std::int64_t length() const { return k.defined() ? k.shape()[2] : 0; }
};

// Run-time inputs shared by every layer of one forward pass.
template <Backend B = cpu>
struct LayerInputs {
  const Tensor<std::int32_t, B>* positions = nullptr;  // [B, L] or [L]; absolute positions of the new tokens
  const Tensor<std::uint8_t, B>* mask = nullptr;       // [B, L, S] or [L, S], S = cached + L; 1 = may attend
};

// LayerNorm (weight, bias) or RMSNorm (weight) over d_model.
template <Config C, Real T, Backend B = cpu>
struct NormLayer {
  static_assert(validate<C>::value);
  autograd::Var<T, B> weight, bias;

  NormLayer() : weight(detail::const_param<T, B>({C.d_model}, 1.0)) {
    if constexpr (C.norm == Norm::LayerNorm) bias = detail::const_param<T, B>({C.d_model}, 0.0);
  }
  autograd::Var<T, B> operator()(const autograd::Var<T, B>& x) const {
    if constexpr (C.norm == Norm::LayerNorm) return autograd::layer_norm(x, weight, bias, static_cast<T>(C.eps));
    else return autograd::rms_norm(x, weight, static_cast<T>(C.eps));
  }
  void for_each_parameter(const std::string& prefix, const ParamVisitor<T, B>& visit) {
    visit(prefix + ".weight", weight);
    if constexpr (C.norm == Norm::LayerNorm) visit(prefix + ".bias", bias);
  }
};

// Multi-head attention with grouped-query heads, optional RoPE, causal plus an optional mask, and
// an optional KV cache. GPT-2 layout: one fused c_attn [d, d + 2 kv_dim] whose output is split
// into q, k, v; Llama layout: q_proj, k_proj, v_proj, o_proj.
template <Config C, Real T, Backend B = cpu>
struct Attention {
  static_assert(validate<C>::value);
  using V = autograd::Var<T, B>;
  static constexpr std::int64_t d = C.d_model, kv = C.kv_dim(), dh = C.head_dim();
  V qkv_w, qkv_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;

  explicit Attention(Rng& rng) {
    const double init_std = 0.02, residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(C.n_layers));
    auto bias = [](std::int64_t n) { return C.bias ? detail::const_param<T, B>({n}, 0.0) : V(); };
    if constexpr (C.gpt2_layout()) {
      qkv_w = detail::normal_param<T, B>(detail::projection_shape<C>(d, d + 2 * kv), init_std, rng);
      qkv_b = bias(d + 2 * kv);
    } else {
      q_w = detail::normal_param<T, B>(detail::projection_shape<C>(d, d), init_std, rng);
      k_w = detail::normal_param<T, B>(detail::projection_shape<C>(d, kv), init_std, rng);
      v_w = detail::normal_param<T, B>(detail::projection_shape<C>(d, kv), init_std, rng);
      q_b = bias(d);
      k_b = bias(kv);
      v_b = bias(kv);
    }
    o_w = detail::normal_param<T, B>(detail::projection_shape<C>(d, d), residual_std, rng);
    o_b = bias(d);
  }

  // x [B, L, d] -> [B, L, d]; appends this step's keys and values to `cache` when given.
  V operator()(const V& x, const LayerInputs<B>& in, LayerCache<T, B>* cache = nullptr) const {
    const std::int64_t batch = x.shape()[0], len = x.shape()[1];
    V q, k, v;
    if constexpr (C.gpt2_layout()) {
      auto parts = autograd::split(detail::project<C>(x, qkv_w, qkv_b), -1, {d, kv, kv});
      q = parts[0];
      k = parts[1];
      v = parts[2];
    } else {
      q = detail::project<C>(x, q_w, q_b);
      k = detail::project<C>(x, k_w, k_b);
      v = detail::project<C>(x, v_w, v_b);
    }
    auto heads = [&](const V& t, std::int64_t h) { return autograd::transpose(autograd::reshape(t, {batch, len, h, dh}), 1, 2); };
    q = heads(q, C.n_heads);
    k = heads(k, C.n_kv_heads);
    v = heads(v, C.n_kv_heads);
    if constexpr (C.positions == Positions::RoPE) {
      q = autograd::rope(q, *in.positions, C.rope_theta);
      k = autograd::rope(k, *in.positions, C.rope_theta);
    }
    if (cache) {
      if (cache->k.defined()) {
        k = autograd::concat(std::vector<V>{cache->k, k}, 2);
        v = autograd::concat(std::vector<V>{cache->v, v}, 2);
      }
      cache->k = k;
      cache->v = v;
    }
    const V y = autograd::scaled_dot_product_attention(q, k, v, autograd::AttentionOptions<B>{.causal = true, .mask = in.mask});
    return detail::project<C>(autograd::reshape(autograd::transpose(y, 1, 2), {batch, len, d}), o_w, o_b);
  }

  void for_each_parameter(const std::string& prefix, const ParamVisitor<T, B>& visit) {
    auto both = [&](const std::string& name, V& w, V& b) {
      visit(prefix + "." + name + ".weight", w);
      if (b.defined()) visit(prefix + "." + name + ".bias", b);
    };
    if constexpr (C.gpt2_layout()) {
      both("c_attn", qkv_w, qkv_b);
      both("c_proj", o_w, o_b);
    } else {
      both("q_proj", q_w, q_b);
      both("k_proj", k_w, k_b);
      both("v_proj", v_w, v_b);
      both("o_proj", o_w, o_b);
    }
  }
};

// GPT-2: c_proj(gelu_tanh(c_fc(x))); Llama: down_proj(silu(gate_proj(x)) * up_proj(x)).
template <Config C, Real T, Backend B = cpu>
struct MLP {
  static_assert(validate<C>::value);
  using V = autograd::Var<T, B>;
  V in_w, in_b, gate_w, gate_b, out_w, out_b;  // in = c_fc / up_proj, out = c_proj / down_proj

  explicit MLP(Rng& rng) {
    const double init_std = 0.02, residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(C.n_layers));
    auto bias = [](std::int64_t n) { return C.bias ? detail::const_param<T, B>({n}, 0.0) : V(); };
    if constexpr (C.activation == Activation::SwiGLU) {
      gate_w = detail::normal_param<T, B>(detail::projection_shape<C>(C.d_model, C.d_ff), init_std, rng);
      gate_b = bias(C.d_ff);
    }
    in_w = detail::normal_param<T, B>(detail::projection_shape<C>(C.d_model, C.d_ff), init_std, rng);
    in_b = bias(C.d_ff);
    out_w = detail::normal_param<T, B>(detail::projection_shape<C>(C.d_ff, C.d_model), residual_std, rng);
    out_b = bias(C.d_model);
  }

  V operator()(const V& x) const {
    if constexpr (C.activation == Activation::SwiGLU)
      return detail::project<C>(autograd::swiglu(detail::project<C>(x, gate_w, gate_b), detail::project<C>(x, in_w, in_b)),
                                out_w, out_b);
    else
      return detail::project<C>(autograd::gelu(detail::project<C>(x, in_w, in_b)), out_w, out_b);
  }

  void for_each_parameter(const std::string& prefix, const ParamVisitor<T, B>& visit) {
    auto both = [&](const std::string& name, V& w, V& b) {
      visit(prefix + "." + name + ".weight", w);
      if (b.defined()) visit(prefix + "." + name + ".bias", b);
    };
    if constexpr (C.gpt2_layout()) {
      both("c_fc", in_w, in_b);
      both("c_proj", out_w, out_b);
    } else {
      if constexpr (C.activation == Activation::SwiGLU) both("gate_proj", gate_w, gate_b);
      both("up_proj", in_w, in_b);
      both("down_proj", out_w, out_b);
    }
  }
};

// Pre-norm residual block: x + attn(norm1(x)), then + mlp(norm2(x)).
template <Config C, Real T, Backend B = cpu>
struct Block {
  static_assert(validate<C>::value);
  using V = autograd::Var<T, B>;
  NormLayer<C, T, B> norm1;
  Attention<C, T, B> attn;
  NormLayer<C, T, B> norm2;
  MLP<C, T, B> mlp;

  // Activation recomputation: keep only the block's input, rerun its forward during backward.
  bool recompute = false;

  explicit Block(Rng& rng) : norm1(), attn(rng), norm2(), mlp(rng) {}

  V operator()(const V& x, const LayerInputs<B>& in, LayerCache<T, B>* cache = nullptr) const {
    if (!recompute || cache || !autograd::grad_enabled()) return forward(x, in, cache);
    return checkpointed(x, in);
  }

  V forward(const V& x, const LayerInputs<B>& in, LayerCache<T, B>* cache = nullptr) const {
    const V h = x + attn(norm1(x), in, cache);
    return h + mlp(norm2(h));
  }

  std::vector<V> parameters() const {
    Block copy = *this;  // handles share the parameters; the visitor needs non-const access
    std::vector<V> out;
    copy.for_each_parameter("", [&](const std::string&, V& p) { out.push_back(p); });
    return out;
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
        [block = *this, xv = x.value(), x_grad = x.requires_grad(), positions, mask](autograd::Node<T, B>& self) {
          autograd::detail::FlagScope grad_on(autograd::detail::grad_enabled, true);
          V xin(xv, x_grad);
          const LayerInputs<B> again{.positions = positions.defined() ? &positions : nullptr,
                                     .mask = mask.defined() ? &mask : nullptr};
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
