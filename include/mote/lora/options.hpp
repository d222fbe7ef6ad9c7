#pragma once
// Run-time options of LoRA experts: rank, scaling, dropout, which modules get adapters, and the
// routing knobs of the MoTE and top-k routers. Routers ignore the knobs that are not theirs.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace mote::lora {

// Where a StepRouter sends tokens that carry no route (route id lora::unrouted).
enum class UnroutedPolicy {
  RandomStep,  // one step expert drawn per sequence from the set's seeded Rng
  FixedStep,   // always step expert Options::unrouted_expert
  SharedOnly,  // the shared expert alone, at weight 1
};

inline const char* unrouted_policy_name(UnroutedPolicy q) {
  switch (q) {
    case UnroutedPolicy::RandomStep: return "random_step";
    case UnroutedPolicy::FixedStep: return "fixed_step";
    case UnroutedPolicy::SharedOnly: return "shared_only";
  }
  return "unknown";
}

// The route id of a token that belongs to no step expert; routed tokens carry 0 .. steps - 1.
inline constexpr std::int32_t unrouted = -1;

struct Options {
  std::int64_t rank = 16;
  double alpha = 32.0;       // lora_alpha; each expert is scaled by alpha / rank
  double dropout = 0.0;      // on the adapter's input (training only)
  bool use_rslora = false;   // scale by alpha / sqrt(rank) instead (rsLoRA)
  // Hugging Face module names, or their last component ("q_proj", "c_attn"); empty = every linear layer.
  std::vector<std::string> targets = {};
  std::uint64_t seed = 0;    // adapter initialization, dropout masks and random placement of unrouted tokens

  // StepRouter: y = W0 x + mix_alpha * E_step(x) + (1 - mix_alpha) * E_shared(x).
  double mix_alpha = 0.5;
  UnroutedPolicy unrouted = UnroutedPolicy::RandomStep;
  std::int32_t unrouted_expert = 0;

  // TopKRouter: coefficient of the Switch/Mixtral load-balancing loss (MixLoRA uses 0.01).
  double aux_loss_coef = 0.01;
  // TopKRouter: MoELoRA-style contrastive loss between the experts' outputs (0 = off). On the first
  // contrastive_tokens tokens of each layer, every expert's output is an anchor whose positives are the
  // same expert's outputs on the other tokens and whose negatives are the other experts' outputs.
  double contrastive_coef = 0.0;
  double contrastive_temperature = 0.1;
  std::int64_t contrastive_tokens = 32;

  // The factor on B A x for an expert of rank r (PEFT's, read from an adapter's r and lora_alpha).
  double scale(std::int64_t r) const {
    return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
  }
};

}  // namespace mote::lora
