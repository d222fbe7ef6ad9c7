#pragma once
// Routing for one forward pass: which expert each token goes to, resolved once per batch and
// shared by every expert layer (so an unrouted token meets the same random expert in every layer).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mote/autograd/expert_lora.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/lora/options.hpp"
#include "mote/lora/routers.hpp"
#include "mote/nn/linear.hpp"

namespace mote::lora {

// Passed to the model as ForwardOptions::adapter (or LossOptions::adapter).
struct Routing : nn::AdapterContext {
  std::uint64_t dropout_seed = 0;                      // each layer derives its adapter-dropout mask from it
  std::shared_ptr<const autograd::ExpertPlan> plan;    // StepRouter: tokens grouped by expert
  std::int64_t batch = 0, length = 0;
};

// The StepRouter's assignments for route ids [batch, length] (row-major in `route_ids`): a routed token
// goes to its step expert at weight mix_alpha and to the shared expert at 1 - mix_alpha (or to its
// step expert alone at weight 1 without the shared expert); unrouted tokens follow options.unrouted.
template <class R>
  requires is_step_router<R>
autograd::ExpertPlan step_plan(const std::vector<std::int32_t>& route_ids, std::int64_t batch, std::int64_t length,
                               const Options& options, Rng& rng) {
  constexpr std::int32_t steps = R::steps, shared = R::steps;
  if (static_cast<std::int64_t>(route_ids.size()) != batch * length)
    throw shape_error("mote: lora::StepRouter: " + std::to_string(route_ids.size()) + " route ids for a batch of [" +
                      std::to_string(batch) + ", " + std::to_string(length) + "] tokens");
  std::vector<std::int32_t> token_of, expert_of;
  std::vector<double> weight_of;
  token_of.reserve(route_ids.size() * 2);
  expert_of.reserve(route_ids.size() * 2);
  weight_of.reserve(route_ids.size() * 2);
  auto add = [&](std::int64_t t, std::int32_t e, double w) {
    if (w == 0.0) return;  // a zero-weight expert contributes nothing and needs no gradient
    token_of.push_back(static_cast<std::int32_t>(t));
    expert_of.push_back(e);
    weight_of.push_back(w);
  };
  const double step_weight = R::shared ? options.mix_alpha : 1.0;
  for (std::int64_t b = 0; b < batch; ++b) {
    // One draw per sequence, unrouted tokens or not, so the stream does not depend on the data.
    const auto drawn = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(steps)));
    for (std::int64_t i = 0; i < length; ++i) {
      const std::int64_t t = b * length + i;
      std::int32_t s = route_ids[static_cast<std::size_t>(t)];
      if (s == unrouted) {
        if (options.unrouted == UnroutedPolicy::SharedOnly) {
          add(t, shared, 1.0);
          continue;
        }
        s = options.unrouted == UnroutedPolicy::RandomStep ? drawn : options.unrouted_expert;
      } else if (s < 0 || s >= steps) {
        throw value_error("mote: lora::StepRouter: route id " + std::to_string(s) + " at [" + std::to_string(b) + ", " +
                          std::to_string(i) + "] is outside 0.." + std::to_string(steps - 1) + " (" +
                          std::to_string(steps) + " step experts) and is not lora::unrouted (-1)");
      }
      add(t, s, step_weight);
      if constexpr (R::shared) add(t, shared, 1.0 - options.mix_alpha);
    }
  }
  return autograd::ExpertPlan::group(batch * length, R::experts, token_of, expert_of, weight_of);
}

// Checks the router options that do not depend on the batch; `where` names the caller.
template <class R>
void check_router_options(const Options& options, const std::string& where) {
  if constexpr (is_step_router<R>) {
    if (options.unrouted == UnroutedPolicy::SharedOnly && !R::shared)
      throw value_error(where + ": unrouted policy shared_only needs the shared expert, but the router is "
                        "StepRouter<" + std::to_string(R::steps) + ", without_shared>");
    if (options.unrouted == UnroutedPolicy::FixedStep && (options.unrouted_expert < 0 || options.unrouted_expert >= R::steps))
      throw value_error(where + ": unrouted_expert = " + std::to_string(options.unrouted_expert) + " is outside 0.." +
                        std::to_string(R::steps - 1));
    if (!(options.mix_alpha >= 0.0 && options.mix_alpha <= 1.0))
      throw value_error(where + ": mix_alpha = " + std::to_string(options.mix_alpha) + " is outside [0, 1]");
  }
}

}  // namespace mote::lora
