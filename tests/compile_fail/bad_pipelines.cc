// Must NOT compile for any MOTE_BAD_PIPELINE = 1..7: each case is a pipeline (or a pipeline meeting
// a router) that cannot be trained, refused by one static_assert sentence, which
// expect_bad_pipelines.cmake looks for. Without MOTE_BAD_PIPELINE it must compile (the control).
// Named .cc so that the test suite's *.cpp glob never builds it into mote_tests.
#include <mote/aligncot/pipeline.hpp>

namespace ac = mote::aligncot;

// A user's stage on the analysis expert, to collide with QuestionAnalysis.
struct Critique {
  static constexpr std::string_view name = "critique";
  static constexpr std::string_view label = "Critique";
  static constexpr std::string_view start_token = "<|critique|>";
  static constexpr std::string_view end_token = "";
  static constexpr ac::StageRole role = ac::StageRole::step;
  static constexpr int expert = 0;
  static constexpr std::string_view default_template = "{question}";
};

#if !defined(MOTE_BAD_PIPELINE)
using P = ac::Pipeline<ac::QuestionAnalysis, ac::AnswerGuidance, ac::SafeAnswer, ac::SafetyCheck>;
using R = mote::lora::StepRouter<3>;
#elif MOTE_BAD_PIPELINE == 1  // no answer stage
using P = ac::Pipeline<ac::QuestionAnalysis, ac::AnswerGuidance>;
using R = mote::lora::StepRouter<3>;
#elif MOTE_BAD_PIPELINE == 2  // the answer stage not last
using P = ac::Pipeline<ac::QuestionAnalysis, ac::SafeAnswer, ac::AnswerGuidance>;
using R = mote::lora::StepRouter<3>;
#elif MOTE_BAD_PIPELINE == 3  // two stages on one expert
using P = ac::Pipeline<ac::QuestionAnalysis, Critique, ac::SafeAnswer>;
using R = mote::lora::StepRouter<3>;
#elif MOTE_BAD_PIPELINE == 4  // more routed stages than the router has experts
using P = ac::Pipeline<ac::QuestionAnalysis, ac::AnswerGuidance, ac::SafeAnswer>;
using R = mote::lora::StepRouter<2>;
#elif MOTE_BAD_PIPELINE == 5  // SafetyCheck routed to an expert
using P = ac::Pipeline<ac::QuestionAnalysis, ac::SafeAnswer, ac::OnExpert<ac::SafetyCheck, 1>>;
using R = mote::lora::StepRouter<3>;
#elif MOTE_BAD_PIPELINE == 6  // a stage on an expert the router lacks
using P = ac::Pipeline<ac::OnExpert<ac::QuestionAnalysis, 5>, ac::SafeAnswer>;
using R = mote::lora::StepRouter<3>;
#elif MOTE_BAD_PIPELINE == 7  // two answer stages
using P = ac::Pipeline<ac::SafeAnswer, ac::OnExpert<ac::SafeAnswer, 1>>;
using R = mote::lora::StepRouter<3>;
#endif

int main() {
  P pipeline;
  P::require_router<R>();
  return pipeline.prompt_template(P::names[0]).empty() ? 1 : 0;
}
