#pragma once
// Run-time options of LoRA experts: rank, scaling, dropout, which modules get adapters, and the
// routing knobs of the MoTE and top-k routers. Routers ignore the knobs that are not theirs.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace mote::lora {

// Where a StepRouter sends question tokens (step id lora::question_step).
enum class QuestionRouting {
  RandomStep,  // one step expert drawn per sequence from the set's seeded Rng (the paper's choice)
  FixedStep,   // always step expert Options::question_expert
  SharedOnly,  // the shared expert alone, at weight 1
};

inline const char* question_routing_name(QuestionRouting q) {
  switch (q) {
    case QuestionRouting::RandomStep: return "random_step";
    case QuestionRouting::FixedStep: return "fixed_step";
    case QuestionRouting::SharedOnly: return "shared_only";
  }
  return "unknown";
}

// The step id of a question token; step tokens carry 0 .. steps - 1.
inline constexpr std::int32_t question_step = -1;

struct Options {
  std::int64_t rank = 16;
  double alpha = 32.0;       // lora_alpha; each expert is scaled by alpha / rank
  double dropout = 0.0;      // on the adapter's input (training only)
  bool use_rslora = false;   // scale by alpha / sqrt(rank) instead (rsLoRA)
  // Hugging Face module names, or their last component ("q_proj", "c_attn"); empty = every linear layer.
  std::vector<std::string> targets = {};
  std::uint64_t seed = 0;    // adapter initialization, dropout masks and random question routing

  // StepRouter: y = W0 x + mix_alpha * E_step(x) + (1 - mix_alpha) * E_shared(x).
  double mix_alpha = 0.5;
  QuestionRouting question = QuestionRouting::RandomStep;
  std::int32_t question_expert = 0;
  // AlignCoT step tokens, recorded in mote_config.json so a reader knows which token starts which step.
  std::vector<std::string> step_tokens = {};

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
