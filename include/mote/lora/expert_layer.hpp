#pragma once
// ExpertLinear<Router, T, B>: the LoRA experts of one linear layer and the router that mixes them.
// It attaches to an nn::Linear as its adapter: y = W0 x (+ b) + sum over the token's experts of
// coef * scale * B_e A_e dropout(x), computed by the grouped autograd::expert_lora op.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "mote/autograd/dropout.hpp"
#include "mote/autograd/elementwise.hpp"
#include "mote/autograd/expert_lora.hpp"
#include "mote/autograd/index.hpp"
#include "mote/autograd/matmul.hpp"
#include "mote/autograd/norm.hpp"
#include "mote/autograd/reduce.hpp"
#include "mote/autograd/shape_ops.hpp"
#include "mote/autograd/softmax.hpp"
#include "mote/backend/traits.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/lora/options.hpp"
#include "mote/lora/routers.hpp"
#include "mote/lora/routing.hpp"
#include "mote/nn/linear.hpp"

namespace mote::lora {

// One LoRA expert: A [r, in] (Kaiming-uniform with a = sqrt(5), as PEFT draws it), B [out, r] (zeros).
template <Real T, Backend B = cpu>
struct Expert {
  autograd::Var<T, B> lora_a, lora_b;

  static Expert init(std::int64_t in, std::int64_t out, std::int64_t rank, Rng& rng) {
    // kaiming_uniform(a = sqrt(5)): gain sqrt(2 / (1 + 5)) times sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    return Expert{autograd::Var<T, B>::parameter(Tensor<T, B>::uniform({rank, in}, -bound, bound, rng)),
                  autograd::Var<T, B>::parameter(Tensor<T, B>::zeros({out, rank}))};
  }
};

template <Router R, Real T, Backend B = cpu>
class ExpertLinear final : public nn::LinearAdapter<T, B> {
 public:
  using V = autograd::Var<T, B>;
  static constexpr int num_experts = R::experts;

  // `module` is the Hugging Face module name (for messages and files); `layer_index` keys the dropout stream.
  ExpertLinear(std::string module, std::int64_t in, std::int64_t out, const Options& options, std::uint64_t layer_index,
               Rng& rng)
      : module_(std::move(module)), in_(in), out_(out), options_(options), layer_index_(layer_index) {
    const std::int64_t rank = options.rank * R::rank_multiplier;
    if (rank < 1 || rank > std::min(in, out))
      throw value_error("mote: lora: module '" + module_ + "' [in " + std::to_string(in) + ", out " + std::to_string(out) +
                        "] cannot take rank " + std::to_string(rank) + "; expected 1 <= rank <= " +
                        std::to_string(std::min(in, out)));
    if (!(options.dropout >= 0.0 && options.dropout < 1.0))
      throw value_error("mote: lora: dropout must be in [0, 1), got " + std::to_string(options.dropout));
    experts_.reserve(static_cast<std::size_t>(R::experts));
    for (int e = 0; e < R::experts; ++e) experts_.push_back(Expert<T, B>::init(in, out, rank, rng));
    if constexpr (is_topk_router<R>) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));  // nn.Linear's default init
      gate_ = V::parameter(Tensor<T, B>::uniform({R::experts, in}, -bound, bound, rng));
    }
    dropout_rng_.reseed(options.seed ^ (0x9e3779b97f4a7c15ULL * (layer_index + 1)));
  }

  V apply(const V& x, const V& base, const nn::AdapterContext* context) const override {
    if (merged_) return base;  // the experts already live in W0
    return adapted(x, context, [&](const V& xa, const std::vector<V>& a, const std::vector<V>& b,
                                   std::shared_ptr<const autograd::ExpertPlan> plan, T scale, const V* gate) {
      return autograd::expert_lora(base, xa, a, b, std::move(plan), scale, gate);
    });
  }

  // The base product runs inside the expert op, so it costs no extra pass over its output.
  V project(const V& x, const autograd::Projection<T, B>& base, const nn::AdapterContext* context) const override {
    if (merged_) return base(x);
    return adapted(x, context, [&](const V& xa, const std::vector<V>& a, const std::vector<V>& b,
                                   std::shared_ptr<const autograd::ExpertPlan> plan, T scale, const V* gate) {
      return autograd::expert_lora(base, x, xa, a, b, std::move(plan), scale, gate);
    });
  }

  // The graph-free decoding step serves step and single-LoRA routers where host code may add their
  // share (backend_traits::host_decode_adapters: the CPU), outside training dropout; a learned gate
  // goes layer by layer.
  bool serves_decode_step(const nn::AdapterContext* context) const override {
    if constexpr (!backend_traits<B>::host_decode_adapters || is_topk_router<R>) {
      return false;
    } else {
      if (merged_) return true;
      if (training_ && options_.dropout != 0.0) return false;
      for (const auto& ex : experts_)
        if (!ex.lora_a.value().is_contiguous() || !ex.lora_b.value().is_contiguous()) return false;
      if constexpr (is_step_router<R>) {
        const auto* routing = dynamic_cast<const Routing*>(context);
        return routing && routing->plan;
      }
      return true;
    }
  }

  // One term coef * scale * B_e (A_e x) for each (token, expert, coef) of the routing, expert by expert.
  void append_decode_terms(std::int64_t rows, const nn::AdapterContext* context,
                           std::vector<backend::LowRankTerm<T>>& terms) const override {
    if constexpr (backend_traits<B>::host_decode_adapters && !is_topk_router<R>) {
      if (merged_) return;
      const double scale = options_.scale(rank());
      const auto term = [&](std::int64_t row, std::size_t e, double coef) {
        terms.push_back({row, experts_[e].lora_a.value().data(), experts_[e].lora_b.value().data(), rank(),
                         static_cast<T>(coef * scale)});
      };
      if constexpr (is_step_router<R>) {
        const autograd::ExpertPlan& plan = *dynamic_cast<const Routing&>(*context).plan;
        if (plan.tokens != rows)
          throw shape_error("mote: lora: module '" + module_ + "': the routing covers " + std::to_string(plan.tokens) +
                            " tokens but this decoding step has " + std::to_string(rows) + "; route() this step's ids");
        for (std::int64_t e = 0; e < plan.experts; ++e)
          for (std::int64_t i = plan.begin(e); i < plan.begin(e) + plan.count(e); ++i)
            term(plan.token[static_cast<std::size_t>(i)], static_cast<std::size_t>(e), plan.weight[static_cast<std::size_t>(i)]);
      } else {
        for (std::int64_t row = 0; row < rows; ++row) term(row, 0, 1.0);
      }
    }
  }

  std::vector<V> parameters() const override {
    std::vector<V> out;
    for (const auto& ex : experts_) {
      out.push_back(ex.lora_a);
      out.push_back(ex.lora_b);
    }
    if (gate_.defined()) out.push_back(gate_);
    return out;
  }

  const std::string& module() const noexcept { return module_; }
  std::int64_t rank() const noexcept { return options_.rank * R::rank_multiplier; }
  std::int64_t in_features() const noexcept { return in_; }
  std::int64_t out_features() const noexcept { return out_; }
  const Options& options() const noexcept { return options_; }
  std::vector<Expert<T, B>>& experts() noexcept { return experts_; }
  const std::vector<Expert<T, B>>& experts() const noexcept { return experts_; }
  // TopKRouter: the gate [experts, in]; undefined otherwise.
  V& gate() noexcept { return gate_; }
  // TopKRouter: coef * load-balancing loss (plus the contrastive loss, when on) of the latest forward
  // pass in training mode.
  const V& aux_loss() const noexcept { return aux_loss_; }
  bool merged() const noexcept { return merged_; }
  // Dropout acts only in training mode (on by default, as for a PyTorch module).
  bool training() const noexcept { return training_; }
  void set_training(bool on) noexcept { training_ = on; }
  void set_merged(bool on) noexcept { merged_ = on; }
  void set_options(const Options& options) { options_ = options; }
  // The stream behind dropout masks drawn without a routing context, saved and restored for exact resume.
  Rng::State dropout_random_state() const noexcept { return dropout_rng_.state(); }
  void set_dropout_random_state(const Rng::State& state) { dropout_rng_.set_state(state); }

 private:
  // Routes this forward pass and hands the experts to `mix` (which adds them to the base product).
  template <class Mix>
  V adapted(const V& x, const nn::AdapterContext* context, const Mix& mix) const {
    const auto* routing = dynamic_cast<const Routing*>(context);
    if (context && !routing)
      throw value_error("mote: lora: module '" + module_ + "' was given an adapter context that is not a lora::Routing");
    const std::int64_t tokens = x.numel() / in_;
    const V xa = adapter_input(x, routing);
    const T scale = static_cast<T>(options_.scale(rank()));
    std::vector<V> a, b;
    for (const auto& ex : experts_) {
      a.push_back(ex.lora_a);
      b.push_back(ex.lora_b);
    }
    if constexpr (is_step_router<R>) {
      if (!routing || !routing->plan)
        throw value_error("mote: lora: StepRouter module '" + module_ +
                          "' needs the batch's step ids: pass ForwardOptions{.adapter = experts.route(step_ids)}");
      if (routing->plan->tokens != tokens)
        throw shape_error("mote: lora: module '" + module_ + "': the routing covers " + std::to_string(routing->plan->tokens) +
                          " tokens but this forward has " + std::to_string(tokens) + "; route() this batch's step ids");
      return mix(xa, a, b, routing->plan, scale, nullptr);
    } else if constexpr (is_single_lora<R>) {
      std::vector<std::int32_t> token(static_cast<std::size_t>(tokens)), expert(static_cast<std::size_t>(tokens), 0);
      for (std::int64_t t = 0; t < tokens; ++t) token[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(t);
      auto plan = std::make_shared<const autograd::ExpertPlan>(
          autograd::ExpertPlan::group(tokens, 1, token, expert, std::vector<double>(static_cast<std::size_t>(tokens), 1.0)));
      return mix(xa, a, b, std::move(plan), scale, nullptr);
    } else {
      return topk(x, xa, a, b, scale, tokens, mix);
    }
  }

  V adapter_input(const V& x, const Routing* routing) const {
    if (options_.dropout == 0.0 || !training_) return x;
    // With a routing context the mask is a function of (routing seed, layer), so a recomputed
    // block redraws the same mask; without one the layer's own stream advances.
    if (routing) {
      Rng mask_rng(routing->dropout_seed ^ (0x9e3779b97f4a7c15ULL * (layer_index_ + 1)));
      return autograd::dropout(x, static_cast<T>(options_.dropout), mask_rng);
    }
    return autograd::dropout(x, static_cast<T>(options_.dropout), dropout_rng_);
  }

  // Softmax gate over the experts, top-k per token, weights renormalized over the chosen k
  // (softmax of the chosen logits, as Mixtral), and the Switch load-balancing loss
  // coef * E * sum_e f_e P_e (f_e: share of assignments to e; P_e: mean gate probability).
  template <class Mix>
  V topk(const V& x, const V& xa, const std::vector<V>& a, const std::vector<V>& b, T scale, std::int64_t tokens,
         const Mix& mix) const {
    constexpr int E = R::experts, K = R::top_k;
    const V logits = autograd::linear(autograd::reshape(x, {tokens, in_}), gate_);
    const V probs = autograd::softmax(logits);
    const std::vector<T> p = probs.value().to_vector();
    std::vector<std::int32_t> flat(static_cast<std::size_t>(tokens * K)), token_of(flat.size()), expert_of(flat.size());
    std::vector<std::int64_t> counts(E, 0);
    std::vector<int> order(E);
    for (std::int64_t t = 0; t < tokens; ++t) {
      for (int e = 0; e < E; ++e) order[static_cast<std::size_t>(e)] = e;
      const T* row = p.data() + t * E;
      std::partial_sort(order.begin(), order.begin() + K, order.end(), [row](int i, int j) {
        return row[i] > row[j] || (row[i] == row[j] && i < j);  // ties go to the lower index
      });
      for (int j = 0; j < K; ++j) {
        const auto m = static_cast<std::size_t>(t * K + j);
        const int e = order[static_cast<std::size_t>(j)];
        flat[m] = static_cast<std::int32_t>(t * E + e);
        token_of[m] = static_cast<std::int32_t>(t);
        expert_of[m] = e;
        ++counts[static_cast<std::size_t>(e)];
      }
    }
    const Tensor<std::int32_t, B> picked = Tensor<std::int32_t, B>::from_vector({tokens * K}, flat);
    const V chosen = autograd::reshape(autograd::index_select(autograd::reshape(logits, {tokens * E}), 0, picked), {tokens, K});
    const V weights = autograd::reshape(autograd::softmax(chosen), {tokens * K});
    auto plan = std::make_shared<const autograd::ExpertPlan>(
        autograd::ExpertPlan::group(tokens, E, token_of, expert_of, std::vector<double>(flat.size(), 1.0)));
    aux_loss_ = V();
    if (training_ && options_.aux_loss_coef != 0.0) {
      std::vector<T> share(E);
      for (int e = 0; e < E; ++e) share[static_cast<std::size_t>(e)] = static_cast<T>(counts[static_cast<std::size_t>(e)]) / static_cast<T>(tokens);
      const V f(Tensor<T, B>::from_vector({E}, share));
      aux_loss_ = autograd::scale(autograd::sum(autograd::mean(probs, 0) * f), static_cast<T>(options_.aux_loss_coef * E));
    }
    if (training_ && options_.contrastive_coef != 0.0) {
      const V c = contrastive_loss(xa, a, b, tokens);
      aux_loss_ = aux_loss_.defined() ? aux_loss_ + c : c;
    }
    return mix(xa, a, b, std::move(plan), scale, &weights);
  }

  // Supervised-contrastive (InfoNCE with several positives) loss over the unit-normalized outputs
  // o_{e,t} = B_e A_e x_t of every expert e on the first S tokens t:
  //   coef * mean over anchors i of -(1 / |P_i|) sum_{p in P_i} log softmax_{j != i}(cos(o_i, o_j) / temperature)[p],
  // where P_i holds the same expert's outputs on the other tokens.
  V contrastive_loss(const V& xa, const std::vector<V>& a, const std::vector<V>& b, std::int64_t tokens) const {
    const std::int64_t samples = std::min(tokens, options_.contrastive_tokens), E = R::experts, m = E * samples;
    if (samples < 2) return V(Tensor<T, B>::zeros({1}));
    const V xs = autograd::slice(autograd::reshape(xa, {tokens, in_}), 0, 0, samples);
    std::vector<V> outputs;
    for (int e = 0; e < E; ++e) outputs.push_back(autograd::linear(autograd::linear(xs, a[static_cast<std::size_t>(e)]), b[static_cast<std::size_t>(e)]));
    // rms_norm with unit weight gives rows of norm sqrt(out), so z z^T / out is the cosine.
    const V z = autograd::rms_norm(autograd::concat(outputs, 0), V(Tensor<T, B>::full({out_}, T(1))), T(1e-12));
    std::vector<T> self_mask(static_cast<std::size_t>(m * m), T(0)), positive(self_mask.size(), T(0));
    for (std::int64_t i = 0; i < m; ++i) {
      self_mask[static_cast<std::size_t>(i * m + i)] = T(-1e4);  // an anchor is not its own candidate
      for (std::int64_t j = 0; j < m; ++j)
        if (j != i && i / samples == j / samples) positive[static_cast<std::size_t>(i * m + j)] = T(1) / T(samples - 1);
    }
    const V logits = autograd::scale(autograd::matmul(z, z, {.trans_b = true}),
                                     static_cast<T>(1.0 / (static_cast<double>(out_) * options_.contrastive_temperature))) +
                     V(Tensor<T, B>::from_vector({m, m}, self_mask));
    const V picked = autograd::log_softmax(logits) * V(Tensor<T, B>::from_vector({m, m}, positive));
    return autograd::scale(autograd::sum(picked), static_cast<T>(-options_.contrastive_coef / static_cast<double>(m)));
  }

  std::string module_;
  std::int64_t in_ = 0, out_ = 0;
  Options options_;
  std::uint64_t layer_index_ = 0;
  std::vector<Expert<T, B>> experts_;
  V gate_;
  mutable V aux_loss_;
  mutable Rng dropout_rng_;
  bool merged_ = false;
  bool training_ = true;
};

}  // namespace mote::lora
