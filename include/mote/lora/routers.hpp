#pragma once
// Router policies of an expert layer, chosen at compile time. Ablations are type changes:
//   StepRouter<3>                  MoTE: three step experts plus the shared expert
//   StepRouter<3, without_shared>  MoTE without the shared expert
//   TopKRouter<4, 2>               a learned softmax gate picking 2 of 4 experts (MoE / MixLoRA)
//   SingleLoRA<>, SingleLoRA<2>    one adapter of rank r, or 2r
#include <cstdint>
#include <string>
#include <type_traits>

namespace mote::lora {

struct with_shared {};
struct without_shared {};

template <int Steps, class SharedPolicy = with_shared>
struct StepRouter {
  static_assert(Steps >= 1, "mote::lora::StepRouter: a MoTE layer needs at least one step expert");
  static_assert(std::is_same_v<SharedPolicy, with_shared> || std::is_same_v<SharedPolicy, without_shared>,
                "mote::lora::StepRouter: the second argument must be lora::with_shared or lora::without_shared");
  static constexpr int steps = Steps;
  static constexpr bool shared = std::is_same_v<SharedPolicy, with_shared>;
  static constexpr int experts = Steps + (shared ? 1 : 0);
  static constexpr int rank_multiplier = 1;
  static constexpr const char* name = "step";
  // Expert folder names: step_0 .. step_{N-1}, then shared.
  static std::string expert_name(int e) { return e == Steps ? std::string("shared") : "step_" + std::to_string(e); }
};

template <int Experts, int K = 2>
struct TopKRouter {
  static_assert(Experts >= 2, "mote::lora::TopKRouter: a learned gate needs at least two experts");
  static_assert(K >= 1 && K <= Experts, "mote::lora::TopKRouter: K must be between 1 and the number of experts");
  static constexpr int experts = Experts;
  static constexpr int top_k = K;
  static constexpr bool shared = false;
  static constexpr int rank_multiplier = 1;
  static constexpr const char* name = "topk";
  static std::string expert_name(int e) { return "expert_" + std::to_string(e); }
};

template <int RankMultiplier = 1>
struct SingleLoRA {
  static_assert(RankMultiplier >= 1, "mote::lora::SingleLoRA: the rank multiplier must be at least 1");
  static constexpr int experts = 1;
  static constexpr bool shared = false;
  static constexpr int rank_multiplier = RankMultiplier;
  static constexpr const char* name = "single";
  static std::string expert_name(int) { return "default"; }
};

template <class R>
inline constexpr bool is_step_router = false;
template <int N, class S>
inline constexpr bool is_step_router<StepRouter<N, S>> = true;

template <class R>
inline constexpr bool is_topk_router = false;
template <int E, int K>
inline constexpr bool is_topk_router<TopKRouter<E, K>> = true;

template <class R>
inline constexpr bool is_single_lora = false;
template <int M>
inline constexpr bool is_single_lora<SingleLoRA<M>> = true;

template <class R>
concept Router = is_step_router<R> || is_topk_router<R> || is_single_lora<R>;

}  // namespace mote::lora
