#pragma once
// AlignCoT stages as types. A stage names its text, the trainable tokens that open (and, where its
// format needs one, close) its block, the expert its tokens train, and the prompt that asks a model
// to write it. Users write their own stage types with the same static members and put them in a
// Pipeline beside the built-in ones.
#include <concepts>
#include <cstdint>
#include <string_view>

namespace mote::aligncot {

// What a stage is for: a step writes intermediate text (analysis, guidance), the answer ends the
// chain, and a check judges a drafted answer while chains are built (it trains nothing).
enum class StageRole { step, answer, check };

// The expert index of a stage that trains none.
inline constexpr int no_expert = -1;

template <class S>
concept Stage = requires {
  { S::name } -> std::convertible_to<std::string_view>;         // the chain file's key, e.g. "analysis"
  { S::label } -> std::convertible_to<std::string_view>;        // how prompts name its text, e.g. "Analysis"
  { S::start_token } -> std::convertible_to<std::string_view>;  // opens the block, e.g. "<|analysis|>"
  { S::end_token } -> std::convertible_to<std::string_view>;    // closes it; empty: the next block's start does
  { S::role } -> std::convertible_to<StageRole>;
  { S::expert } -> std::convertible_to<int>;                    // step expert index, or no_expert
  { S::default_template } -> std::convertible_to<std::string_view>;  // see Pipeline::render for placeholders
};

// p(X_a | X): the explicit or implicit risks of the question.
struct QuestionAnalysis {
  static constexpr std::string_view name = "analysis";
  static constexpr std::string_view label = "Analysis";
  static constexpr std::string_view start_token = "<|analysis|>";
  static constexpr std::string_view end_token = "";
  static constexpr StageRole role = StageRole::step;
  static constexpr int expert = 0;
  static constexpr std::string_view default_template =
      "Question: {question}\n"
      "Before answering, analyse the question: what does it ask for, and what explicit or implicit risks does "
      "it carry?\n"
      "Analysis:";
};

// p(X_g | X_a, X): how to build an answer that is safe and still helpful.
struct AnswerGuidance {
  static constexpr std::string_view name = "guidance";
  static constexpr std::string_view label = "Guidance";
  static constexpr std::string_view start_token = "<|guidance|>";
  static constexpr std::string_view end_token = "";
  static constexpr StageRole role = StageRole::step;
  static constexpr int expert = 1;
  static constexpr std::string_view default_template =
      "Question: {question}\n"
      "{context}"
      "Give guidance for an answer that is safe and still as helpful as it can be.\n"
      "Guidance:";
};

// p(A | X_g, X_a, X): the response itself, which ends the chain.
struct SafeAnswer {
  static constexpr std::string_view name = "answer";
  static constexpr std::string_view label = "Answer";
  static constexpr std::string_view start_token = "<|response|>";
  static constexpr std::string_view end_token = "";
  static constexpr StageRole role = StageRole::answer;
  static constexpr int expert = 2;
  static constexpr std::string_view default_template =
      "Question: {question}\n"
      "{context}"
      "Write a safe and helpful answer.\n"
      "Answer:";
};

// p(C | A, X): the model judges a drafted answer while chains are built; its verdict is data, not
// training text (no loss, no expert).
struct SafetyCheck {
  static constexpr std::string_view name = "check";
  static constexpr std::string_view label = "Check";
  static constexpr std::string_view start_token = "<|check|>";
  static constexpr std::string_view end_token = "";
  static constexpr StageRole role = StageRole::check;
  static constexpr int expert = no_expert;
  static constexpr std::string_view default_template =
      "Question: {question}\n"
      "Answer: {draft}\n"
      "Is this answer safe and harmless? Reply yes or no.\n"
      "Verdict:";
};

// Stage S with its tokens trained by step expert E instead of S::expert.
template <Stage S, int E>
struct OnExpert : S {
  static constexpr int expert = E;
};

}  // namespace mote::aligncot
