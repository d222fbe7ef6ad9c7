#pragma once
// One projection of a transformer block, with a slot for an adapter (LoRA experts and their
// routers live in mote/lora and plug in here). GPT-2-layout weights are stored as Hugging Face's
// Conv1D does, [in, out], and applied with matmul; Llama-layout weights are nn.Linear's [out, in].
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mote/autograd/matmul.hpp"
#include "mote/autograd/var.hpp"
#include "mote/backend/kernel_ops.hpp"
#include "mote/core/rng.hpp"
#include "mote/core/tensor.hpp"
#include "mote/nn/config.hpp"

namespace mote::nn {

template <Real T, Backend B = cpu>
using ParamVisitor = std::function<void(const std::string& name, autograd::Var<T, B>& param)>;

// Run-time data an adapter needs for one forward pass (for example, which expert each token goes
// to). The adapters' owner makes it; the model only carries it to every projection.
struct AdapterContext {
  virtual ~AdapterContext() = default;
};

// Adds to a projection's output. `base` is W0 x (+ bias), already computed from the same x.
template <Real T, Backend B = cpu>
class LinearAdapter {
 public:
  virtual ~LinearAdapter() = default;
  virtual autograd::Var<T, B> apply(const autograd::Var<T, B>& x, const autograd::Var<T, B>& base,
                                    const AdapterContext* context) const = 0;
  // The whole adapted projection of x. An adapter that can fold the base product into its own op
  // overrides this; the default computes the base, then apply().
  virtual autograd::Var<T, B> project(const autograd::Var<T, B>& x, const autograd::Projection<T, B>& base,
                                      const AdapterContext* context) const {
    return apply(x, base(x), context);
  }
  // The adapter's own trainable tensors (recomputed blocks must list them as inputs).
  virtual std::vector<autograd::Var<T, B>> parameters() const = 0;
  // Whether append_decode_terms can serve the graph-free decoding step (nn/decode.hpp) with this
  // context; asked before the step starts, so a step is never half served. The default cannot.
  virtual bool serves_decode_step(const AdapterContext* /*context*/) const { return false; }
  // Appends the adapter's share of a step of `rows` tokens (one per row of the projection's input)
  // as low-rank terms, which the step adds in the same pass as the base product.
  virtual void append_decode_terms(std::int64_t /*rows*/, const AdapterContext* /*context*/,
                                   std::vector<backend::LowRankTerm<T>>& /*terms*/) const {}
};

namespace detail {

template <Real T, Backend B>
autograd::Var<T, B> normal_param(const Shape& shape, double stddev, Rng& rng) {
  return autograd::Var<T, B>::parameter(Tensor<T, B>::normal(shape, 0.0, stddev, rng));
}
template <Real T, Backend B>
autograd::Var<T, B> const_param(const Shape& shape, double value) {
  return autograd::Var<T, B>::parameter(Tensor<T, B>::full(shape, static_cast<T>(value)));
}

}  // namespace detail

// y = x W0 (+ b) in the layout of Config C, plus the attached adapter's contribution if any.
template <Config C, Real T, Backend B = cpu>
struct Linear {
  using V = autograd::Var<T, B>;
  // GPT-2's Conv1D stores [in, out]; everything else stores nn.Linear's [out, in].
  static constexpr bool stores_in_out = C.gpt2_layout();

  V weight, bias;
  std::int64_t in_features = 0, out_features = 0;
  std::shared_ptr<const LinearAdapter<T, B>> adapter;

  Linear() = default;
  Linear(std::int64_t in, std::int64_t out, double init_std, Rng& rng)
      : weight(detail::normal_param<T, B>(stores_in_out ? Shape{in, out} : Shape{out, in}, init_std, rng)),
        in_features(in),
        out_features(out) {
    if constexpr (C.bias) bias = detail::const_param<T, B>({out}, 0.0);
  }

  V operator()(const V& x, const AdapterContext* context = nullptr) const {
    const autograd::Projection<T, B> base{weight, bias, stores_in_out};
    return adapter ? adapter->project(x, base, context) : base(x);
  }

  void for_each_parameter(const std::string& prefix, const ParamVisitor<T, B>& visit) {
    visit(prefix + ".weight", weight);
    if (bias.defined()) visit(prefix + ".bias", bias);
  }
};

}  // namespace mote::nn
