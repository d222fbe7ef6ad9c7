#pragma once
// ExpertSet: the expert layers attached to one model. attach<Router>(model, options) puts an
// ExpertLinear on every targeted projection, freezes the base model, and returns the set, which
// routes batches, lists the trainable parameters, merges experts into W0 and reads/writes PEFT files.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mote/autograd/elementwise.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/lora/adapter_io.hpp"
#include "mote/lora/expert_layer.hpp"
#include "mote/lora/options.hpp"
#include "mote/lora/routers.hpp"
#include "mote/lora/routing.hpp"

namespace mote::lora {

struct ParameterCounts {
  std::int64_t trainable = 0;
  std::int64_t total = 0;  // base plus adapters, as PEFT counts
};

// PEFT's module-matching rule: the whole name, or its last dotted components, equal a target.
// (`module_name`, not `module`: nvcc reads a line-leading `module` as the C++20 keyword and warns.)
inline bool module_matches(const std::string& module_name, const std::string& target) {
  if (module_name == target) return true;
  return module_name.size() > target.size() &&
         module_name.compare(module_name.size() - target.size(), target.size(), target) == 0 &&
         module_name[module_name.size() - target.size() - 1] == '.';
}

template <Router R, class Model>
class ExpertSet {
 public:
  using V = typename Model::V;
  using T = typename V::value_type;
  using B = typename V::backend_type;
  using Layer = ExpertLinear<R, T, B>;
  using router_type = R;
  static constexpr nn::Config config = Model::config;

  ExpertSet(Model& model, Options options) : model_(&model), options_(std::move(options)), rng_(options_.seed) {
    const std::string where = std::string("mote: lora::attach<") + R::name + ">";
    check_router_options<R>(options_, where);
    for (const auto& target : options_.targets) {
      bool found = false;
      model.for_each_linear([&](const std::string& name, auto&) { found = found || module_matches(name, target); });
      if (!found) {
        std::string names;
        model.for_each_linear([&](const std::string& name, auto&) {
          if (names.size() < 400) names += (names.empty() ? "" : ", ") + name;
        });
        throw value_error(where + ": target module '" + target + "' matches no linear layer of the model (it has: " + names + ")");
      }
    }
    Rng init_rng(options_.seed);
    std::uint64_t index = 0;
    model.for_each_linear([&](const std::string& name, auto& linear) {
      if (!targeted(name)) return;
      if (linear.adapter)
        throw value_error(where + ": module '" + name + "' already has an adapter; detach the other set first");
      auto layer = std::make_shared<Layer>(name, linear.in_features, linear.out_features, options_, index++, init_rng);
      linear.adapter = layer;
      layers_.push_back(Entry{name, layer, linear.weight, Tensor<T, B>()});
    });
    model.set_trainable(false);
  }

  const Options& options() const noexcept { return options_; }
  std::size_t size() const noexcept { return layers_.size(); }
  std::vector<std::string> modules() const {
    std::vector<std::string> out;
    for (const auto& e : layers_) out.push_back(e.module);
    return out;
  }
  Layer& layer(const std::string& module) {
    for (auto& e : layers_)
      if (e.module == module) return *e.layer;
    throw value_error("mote: lora: no adapter on module '" + module + "'");
  }
  std::vector<std::shared_ptr<Layer>> layers() const {
    std::vector<std::shared_ptr<Layer>> out;
    for (const auto& e : layers_) out.push_back(e.layer);
    return out;
  }

  // Routing for one batch of route ids [batch, length]: routed tokens carry 0 .. steps - 1, the others
  // lora::unrouted. Pass the result as ForwardOptions::adapter or LossOptions::adapter.
  std::shared_ptr<const Routing> route(const Tensor<std::int32_t, B>& step_ids)
    requires is_step_router<R>
  {
    if (!step_ids.defined() || step_ids.rank() != 2)
      throw shape_error("mote: lora::ExpertSet::route: step_ids must have shape [batch, length], got " +
                        (step_ids.defined() ? step_ids.shape().str() : std::string("an empty tensor")));
    auto routing = std::make_shared<Routing>();
    routing->batch = step_ids.size(0);
    routing->length = step_ids.size(1);
    routing->dropout_seed = rng_.next_u64();
    routing->plan = std::make_shared<const autograd::ExpertPlan>(
        step_plan<R>(step_ids.contiguous().to_vector(), routing->batch, routing->length, options_, rng_));
    return routing;
  }
  // A context with a fresh dropout seed only (any router): lets recomputed blocks redraw the same masks.
  std::shared_ptr<const Routing> context() {
    auto routing = std::make_shared<Routing>();
    routing->dropout_seed = rng_.next_u64();
    return routing;
  }
  // The context for one batch whatever the router: step routers route `routes` [batch, length] (route ids,
  // lora::unrouted for tokens without one); the others ignore it and get context(). Trainers call this.
  std::shared_ptr<const Routing> context_for(const Tensor<std::int32_t, B>& routes) {
    if constexpr (is_step_router<R>) {
      if (!routes.defined())
        throw value_error(std::string("mote: lora::ExpertSet::context_for: a ") + R::name +
                          " router needs the batch's route ids [batch, length], got an undefined tensor "
                          "(a train::Batch must set routes for step experts)");
      return route(routes);
    } else {
      return context();
    }
  }
  // Training mode turns adapter dropout on; eval() turns it off (for generation and evaluation).
  void train(bool on = true) {
    for (auto& e : layers_) e.layer->set_training(on);
  }
  void eval() { train(false); }

  // Reseeds the stream behind the random placement of unrouted tokens and the dropout seeds.
  void reseed(std::uint64_t seed) { rng_.reseed(seed); }

  // Every random stream of the set, for checkpoints: "routing" (unrouted-token draws and dropout seeds),
  // then "dropout.<module>" per layer (masks drawn without a routing context), in layer order.
  std::vector<RngStreamState> random_state() const {
    std::vector<RngStreamState> out;
    out.reserve(layers_.size() + 1);
    out.push_back({"routing", rng_.state()});
    for (const auto& e : layers_) out.push_back({"dropout." + e.module, e.layer->dropout_random_state()});
    return out;
  }
  // Restores what random_state() returned; the stream names must match this set's, in order. Checked
  // before anything is assigned, so a mismatch leaves the streams as they were.
  void set_random_state(const std::vector<RngStreamState>& streams) {
    const std::string where = "mote: lora::ExpertSet::set_random_state";
    if (streams.size() != layers_.size() + 1)
      throw value_error(where + ": got " + std::to_string(streams.size()) + " streams, expected " +
                        std::to_string(layers_.size() + 1) + " (routing plus one dropout stream per adapted module)");
    const std::vector<RngStreamState> mine = random_state();
    for (std::size_t i = 0; i < streams.size(); ++i) {
      if (streams[i].name != mine[i].name)
        throw value_error(where + ": stream " + std::to_string(i) + " is named '" + streams[i].name + "', expected '" +
                          mine[i].name + "'");
      Rng probe;
      probe.set_state(streams[i].state);  // rejects an all-zero state before anything changes
    }
    rng_.set_state(streams[0].state);
    for (std::size_t i = 0; i < layers_.size(); ++i) layers_[i].layer->set_dropout_random_state(streams[i + 1].state);
  }

  // The tensors that train: every expert's A and B (and the gates of a TopKRouter).
  std::vector<V> parameters() const {
    std::vector<V> out;
    for (const auto& e : layers_)
      for (const V& p : e.layer->parameters()) out.push_back(p);
    return out;
  }
  // PEFT's in-memory names: "<module>.lora_A.<expert>.weight", "<module>.router.weight".
  std::vector<std::pair<std::string, V>> named_parameters() const {
    std::vector<std::pair<std::string, V>> out;
    for (const auto& e : layers_) {
      const auto& experts = e.layer->experts();
      for (int x = 0; x < R::experts; ++x) {
        out.emplace_back(e.module + ".lora_A." + R::expert_name(x) + ".weight", experts[static_cast<std::size_t>(x)].lora_a);
        out.emplace_back(e.module + ".lora_B." + R::expert_name(x) + ".weight", experts[static_cast<std::size_t>(x)].lora_b);
      }
      if (e.layer->gate().defined()) out.emplace_back(e.module + ".router.weight", e.layer->gate());
    }
    return out;
  }

  ParameterCounts counts() const {
    ParameterCounts c;
    model_->for_each_parameter([&](const std::string&, V& p) {
      c.total += p.numel();
      if (p.requires_grad()) c.trainable += p.numel();
    });
    for (const V& p : parameters()) {
      c.total += p.numel();
      if (p.requires_grad()) c.trainable += p.numel();
    }
    return c;
  }
  // PEFT's print_trainable_parameters line: "trainable params: 1,234 || all params: 5,678 || trainable%: 21.7305".
  std::string trainable_parameters_line() const {
    const ParameterCounts c = counts();
    char pct[32];
    std::snprintf(pct, sizeof pct, "%.4f", c.total ? 100.0 * static_cast<double>(c.trainable) / static_cast<double>(c.total) : 0.0);
    return "trainable params: " + grouped(c.trainable) + " || all params: " + grouped(c.total) + " || trainable%: " + pct;
  }

  // TopKRouter: the sum over layers of the load-balancing losses of the latest forward pass, to add
  // to the training loss; undefined for routers without one.
  V aux_loss() const {
    V total;
    for (const auto& e : layers_) {
      const V& l = e.layer->aux_loss();
      if (!l.defined()) continue;
      total = total.defined() ? total + l : l;
    }
    return total;
  }

  // Folds experts into the base weights for fixed-step deployment: W0 += sum_e weight_e * scale * B_e A_e.
  // Every expert layer then passes the base output through unchanged. unmerge() restores W0 bit-exactly
  // from a copy kept at merge time.
  void merge(const std::vector<std::pair<int, double>>& expert_weights) {
    for (const auto& [e, w] : expert_weights)
      if (e < 0 || e >= R::experts)
        throw value_error("mote: lora::ExpertSet::merge: expert " + std::to_string(e) + " is outside 0.." +
                          std::to_string(R::experts - 1));
    for (auto& entry : layers_)
      if (entry.layer->merged())
        throw value_error("mote: lora::ExpertSet::merge: module '" + entry.module + "' is already merged; unmerge() first");
    for (auto& entry : layers_) {
      const T scale = static_cast<T>(options_.scale(entry.layer->rank()));
      entry.original = entry.weight.value().clone();
      Tensor<T, B>& w = entry.weight.mutable_value();
      const std::int64_t in = entry.layer->in_features(), out = entry.layer->out_features();
      for (const auto& [e, weight] : expert_weights) {
        const auto& ex = entry.layer->experts()[static_cast<std::size_t>(e)];
        const std::int64_t r = ex.lora_a.shape()[0];
        const T alpha = scale * static_cast<T>(weight);
        const T* pa = ex.lora_a.value().data();
        const T* pb = ex.lora_b.value().data();
        T* pw = w.data();
        if constexpr (config.gpt2_layout())  // W0 [in, out] += (B A)^T = A^T B^T
          MOTE_CALL_KERNEL(B, gemm, true, true, in, out, r, alpha, pa, in, pb, r, T(1), pw, out);
        else  // W0 [out, in] += B A
          MOTE_CALL_KERNEL(B, gemm, false, false, out, in, r, alpha, pb, r, pa, in, T(1), pw, in);
      }
      entry.layer->set_merged(true);
    }
  }
  // Merges one expert at weight 1.
  void merge_expert(int expert) { merge({{expert, 1.0}}); }
  // StepRouter: merges what a token of `step` computes, mix_alpha * E_step + (1 - mix_alpha) * E_shared.
  void merge_step(int step)
    requires is_step_router<R>
  {
    if (step < 0 || step >= R::steps)
      throw value_error("mote: lora::ExpertSet::merge_step: step " + std::to_string(step) + " is outside 0.." +
                        std::to_string(R::steps - 1));
    if constexpr (R::shared) merge({{step, options_.mix_alpha}, {R::steps, 1.0 - options_.mix_alpha}});
    else merge({{step, 1.0}});
  }
  void unmerge() {
    for (auto& entry : layers_) {
      if (!entry.layer->merged()) continue;
      entry.weight.mutable_value().copy_from(entry.original);
      entry.original = Tensor<T, B>();
      entry.layer->set_merged(false);
    }
  }

  // Removes the adapters from the model and makes its parameters trainable again.
  void detach() {
    unmerge();
    model_->for_each_linear([&](const std::string&, auto& linear) {
      for (const auto& e : layers_)
        if (linear.adapter == e.layer) linear.adapter.reset();
    });
    layers_.clear();
    model_->set_trainable(true);
  }

  // PEFT layout: adapter_model.safetensors + adapter_config.json (SingleLoRA), or one such folder per
  // expert plus mote_config.json (step and top-k routers; top-k gates in router.safetensors).
  void save(const std::filesystem::path& dir) const { save_adapters(*this, dir); }
  // Reads what save() wrote (or PEFT wrote) into these experts; every mismatch is a typed error
  // naming the file, the module and what differs. Routing options come from mote_config.json.
  void load(const std::filesystem::path& dir) { load_adapters(*this, dir); }

  // Used by the adapter I/O: routing options read from mote_config.json.
  void set_routing_options(const Options& options) {
    check_router_options<R>(options, "mote: lora::ExpertSet::load");
    options_ = options;
    for (auto& e : layers_) e.layer->set_options(options_);
  }

 private:
  struct Entry {
    std::string module;
    std::shared_ptr<Layer> layer;
    V weight;               // the base weight (shares the model's tensor)
    Tensor<T, B> original;  // W0 before merge()
  };

  bool targeted(const std::string& module) const {
    if (options_.targets.empty()) return true;
    return std::any_of(options_.targets.begin(), options_.targets.end(),
                       [&](const std::string& t) { return module_matches(module, t); });
  }
  static std::string grouped(std::int64_t n) {
    std::string digits = std::to_string(n), out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
      if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
      out += digits[i];
    }
    return out;
  }

  Model* model_;
  Options options_;
  Rng rng_;
  std::vector<Entry> layers_;
};

// Attaches Router experts to every targeted linear layer of `model` (all of them by default) and
// freezes the model's own parameters. The set must not outlive the model.
template <Router R, class Model>
ExpertSet<R, Model> attach(Model& model, Options options = {}) {
  return ExpertSet<R, Model>(model, std::move(options));
}

}  // namespace mote::lora
