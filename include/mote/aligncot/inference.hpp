#pragma once
// Adaptive inference: a model trained on chains answers through its steps. After the question it
// writes stage tokens itself (<|analysis|>, <|guidance|>, <|response|>), and every token is routed to
// the expert of the stage block it is in, exactly as the chain's tokens were routed in training.
// Modes: adaptive (the model picks which steps to write), a forced list of steps, or the answer only.
// Generation ends with end-of-sequence after the answer.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mote/aligncot/pipeline.hpp"
#include "mote/aligncot/rows.hpp"
#include "mote/core/error.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/io/utf8.hpp"
#include "mote/nn/generate.hpp"

namespace mote::aligncot {

// How many steps the model writes before its answer.
enum class StepMode {
  adaptive,     // the model chooses: after the question and after each step it opens any later stage
  forced,       // exactly AnswerOptions::steps, in pipeline order, then the answer
  answer_only,  // the answer stage straight after the question (the fixed-step deployment)
};

inline const char* step_mode_name(StepMode m) {
  switch (m) {
    case StepMode::adaptive: return "adaptive";
    case StepMode::forced: return "forced";
    case StepMode::answer_only: return "answer_only";
  }
  return "unknown";
}

// Routes tokens by the stage tokens in a sequence: a stage's start token and every token after it,
// up to the next stage's start token, go to that stage's expert; tokens before any stage token (the
// question) go to `question_route` (a step expert, or lora::unrouted for the router's own policy).
template <class P>
class StageRouting {
 public:
  StageRouting(StageTokenIds tokens, std::int32_t question_route) : tokens_(std::move(tokens)), question_route_(question_route) {
    if (tokens_.start.size() != P::size)
      throw value_error("mote: aligncot::StageRouting: StageTokenIds has " + std::to_string(tokens_.start.size()) +
                        " start tokens, the pipeline " + std::to_string(P::size) + " stages");
  }

  // The pipeline index of the stage `token` opens, or -1.
  std::int32_t stage_opened_by(std::int32_t token) const {
    for (std::size_t i = 0; i < P::size; ++i)
      if (tokens_.start[i] == token) return static_cast<std::int32_t>(i);
    return -1;
  }

  // Route ids of tokens [from, to) of every sequence, row-major [batch, to - from]; padding is unrouted.
  std::vector<std::int32_t> routes(const nn::RoutingRequest& request) const {
    std::vector<std::int32_t> out;
    out.reserve(request.history.size() * static_cast<std::size_t>(request.to - request.from));
    for (std::size_t b = 0; b < request.history.size(); ++b) {
      const std::vector<std::int32_t>& tokens = request.history[b];
      const std::int64_t pad = request.padding[b];
      std::int32_t route = question_route_;
      for (std::int64_t t = 0; t < request.to; ++t) {
        if (t >= pad)
          if (const std::int32_t stage = stage_opened_by(tokens[static_cast<std::size_t>(t)]); stage >= 0)
            route = P::experts[static_cast<std::size_t>(stage)] >= 0 ? P::experts[static_cast<std::size_t>(stage)] : lora::unrouted;
        if (t >= request.from) out.push_back(t < pad ? lora::unrouted : route);
      }
    }
    return out;
  }

  const StageTokenIds& tokens() const noexcept { return tokens_; }

 private:
  StageTokenIds tokens_;
  std::int32_t question_route_;
};

struct AnswerOptions {
  StepMode mode = StepMode::adaptive;
  std::vector<std::string> steps;    // StepMode::forced: the step stages to write, by name
  std::int64_t max_new_tokens = 256;  // for the whole reply, stage tokens included
  // Sampling (temperature 0: greedy); each question draws from a stream of its own (nn::GenerateOptions::seed).
  double temperature = 0.0;
  std::int64_t top_k = 0;
  double top_p = 1.0;
  std::uint64_t seed = 0;
  nn::kv_precision kv_cache = nn::kv_precision::full;  // bf16: half the bytes a token's attention reads (nn::GenerateOptions)
  // The expert the question's tokens go to; lora::unrouted leaves them to the router's policy.
  std::int32_t question_route = 0;
  // Streams each reply as it is written: question index, stage name, new text of that stage.
  std::function<void(std::size_t question, std::string_view stage, std::string_view text)> on_text;
};

// One stage of a reply: its text (the stage token excluded) and how many tokens it took.
struct StageReply {
  std::string stage;
  std::string text;
  std::int64_t tokens = 0;
};

struct Reply {
  std::vector<StageReply> stages;  // in the order written; the answer is last when present
  std::int64_t tokens = 0;         // every generated token, stage tokens and end-of-sequence included
  bool complete = false;           // the answer ended with end-of-sequence within max_new_tokens

  // The stage's reply, or nullptr when the model did not write it.
  const StageReply* stage(std::string_view name) const {
    for (const auto& s : stages)
      if (s.stage == name) return &s;
    return nullptr;
  }
  std::string answer;               // the answer stage's text; "" when the model wrote none
};

namespace inference_detail {

template <class Model>
struct model_backend;
template <nn::Config C, Real T, Backend B>
struct model_backend<nn::CausalLM<C, T, B>> {
  using type = B;
};

// Which stage tokens may come next, given the stage a sequence is in (-1: still the question).
template <class P>
struct NextStages {
  StepMode mode;
  std::vector<bool> forced;  // by pipeline index, for StepMode::forced

  // Whether a sequence in stage `current` may open stage `next`.
  bool allowed(std::int32_t current, std::size_t next) const {
    if (P::roles[next] == StageRole::check || static_cast<std::int32_t>(next) <= current) return false;
    if (current >= 0 && P::roles[static_cast<std::size_t>(current)] == StageRole::answer) return false;
    if (mode == StepMode::answer_only) return next == P::answer_index;
    if (mode == StepMode::adaptive) return true;
    // Forced: the first forced stage after `current`, or the answer when none is left.
    for (std::size_t i = static_cast<std::size_t>(current + 1); i < P::size; ++i)
      if (forced[i] || i == P::answer_index) return i == next;
    return false;
  }
};

// Whether text ends inside a UTF-8 character (its last lead byte lacks continuation bytes): streamed
// text is held back until the character is whole.
inline bool ends_mid_character(const std::string& text) {
  if (text.empty()) return false;
  std::size_t i = text.size() - 1, back = 0;
  while (i > 0 && back < 3 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i, ++back;
  const auto lead = static_cast<unsigned char>(text[i]);
  const std::size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
  return back < need;
}

}  // namespace inference_detail

// Answers every question through the stages, in one batch. `route_context` turns route ids
// [batch, length] into the adapters' routing (for example aligncot::Experts::context_for, or
// lora::ExpertSet::context_for); pass nullptr for a model without routed adapters (a merged expert).
template <class P, class Model, class RouteContext>
std::vector<Reply> answer(const Model& model, const io::Tokenizer& tokenizer, const StageTokenIds& stage_tokens,
                          const RowFormat& format, const std::vector<std::string>& questions,
                          const AnswerOptions& options, RouteContext&& route_context) {
  const std::string where = "mote: aligncot::answer";
  if (questions.empty()) throw value_error(where + ": no questions; expected at least one");
  if (format.eos_id < 0) throw value_error(where + ": RowFormat::eos_id is not set; expected the tokenizer's end-of-sequence id");
  if (stage_tokens.start.size() != P::size)
    throw value_error(where + ": StageTokenIds has " + std::to_string(stage_tokens.start.size()) + " start tokens, the pipeline " +
                      std::to_string(P::size) + " stages");
  const std::int64_t vocab = model.sizes().vocab;
  for (std::size_t i = 0; i < P::size; ++i)
    if (stage_tokens.start[i] < 0 || stage_tokens.start[i] >= vocab)
      throw value_error(where + ": stage token " + std::string(P::start_tokens[i]) + " has id " +
                        std::to_string(stage_tokens.start[i]) + ", outside the model's vocabulary of " + std::to_string(vocab) +
                        " (a checkpoint without the stage tokens cannot answer through the steps)");
  inference_detail::NextStages<P> next{options.mode, std::vector<bool>(P::size, false)};
  if (options.mode == StepMode::forced) {
    for (const std::string& name : options.steps) {
      const auto at = P::index_of(name);
      if (!at || P::roles[*at] != StageRole::step)
        throw value_error(where + ": forced step '" + name + "' is not a step of the pipeline " + P::description());
      next.forced[*at] = true;
    }
  } else if (!options.steps.empty()) {
    throw value_error(where + ": AnswerOptions::steps is set, but the mode is " + step_mode_name(options.mode) +
                      "; steps are for StepMode::forced");
  }

  const StageRouting<P> routing(stage_tokens, options.question_route);
  const std::size_t n = questions.size();
  std::vector<std::vector<std::int32_t>> prompts(n);
  std::vector<std::int32_t> stage_of(n, -1);  // the stage each sequence is writing
  for (std::size_t q = 0; q < n; ++q) {
    if (questions[q].empty()) throw value_error(where + ": question " + std::to_string(q) + " is empty");
    if (format.bos_id >= 0) prompts[q].push_back(format.bos_id);
    for (auto id : tokenizer.encode_ordinary(questions[q] + format.question_suffix)) prompts[q].push_back(id);
    // Forced and answer-only replies open their first stage themselves; adaptive ones let the model.
    if (options.mode != StepMode::adaptive)
      for (std::size_t i = 0; i < P::size; ++i)
        if (next.allowed(-1, i)) {
          prompts[q].push_back(stage_tokens.start[i]);
          stage_of[q] = static_cast<std::int32_t>(i);
          break;
        }
  }

  std::vector<Reply> replies(n);
  std::vector<std::vector<std::int32_t>> stage_ids(n);  // the current stage's text tokens
  std::vector<std::string> streamed(n);                 // the current stage's text already streamed
  const auto open_stage = [&](std::size_t q, std::int32_t stage) {
    replies[q].stages.push_back(StageReply{std::string(P::names[static_cast<std::size_t>(stage)]), "", 0});
    stage_ids[q].clear();
    streamed[q].clear();
    stage_of[q] = stage;
  };
  for (std::size_t q = 0; q < n; ++q)
    if (stage_of[q] >= 0) open_stage(q, stage_of[q]);

  nn::GenerateOptions generation{.max_new_tokens = options.max_new_tokens,
                                 .temperature = options.temperature,
                                 .top_k = options.top_k,
                                 .top_p = options.top_p,
                                 .seed = options.seed,
                                 .stop_tokens = {format.eos_id},
                                 .pad_token = format.eos_id,
                                 .kv_cache = options.kv_cache};
  constexpr double forbidden = -std::numeric_limits<double>::infinity();
  generation.shape_logits = [&](std::size_t q, std::span<double> logits) {
    const std::int32_t current = stage_of[q];
    for (std::size_t i = 0; i < P::size; ++i)
      if (!next.allowed(current, i)) logits[static_cast<std::size_t>(stage_tokens.start[i])] = forbidden;
    // Only the answer ends a reply; before it the model must open a stage (or keep writing one).
    const bool in_answer = current >= 0 && static_cast<std::size_t>(current) == P::answer_index;
    if (!in_answer) logits[static_cast<std::size_t>(format.eos_id)] = forbidden;
    if (current < 0)  // straight after the question, only a stage token
      for (std::size_t v = 0; v < logits.size(); ++v) {
        const std::int32_t stage = routing.stage_opened_by(static_cast<std::int32_t>(v));
        if (stage < 0 || !next.allowed(-1, static_cast<std::size_t>(stage))) logits[v] = forbidden;
      }
  };
  generation.on_token = [&](std::size_t q, std::int32_t token) {
    Reply& reply = replies[q];
    ++reply.tokens;
    if (const std::int32_t stage = routing.stage_opened_by(token); stage >= 0) {
      open_stage(q, stage);
      return;
    }
    if (token == format.eos_id) {
      reply.complete = true;
      return;
    }
    if (reply.stages.empty()) return;
    stage_ids[q].push_back(token);
    StageReply& current = reply.stages.back();
    ++current.tokens;
    current.text = tokenizer.decode(stage_ids[q]);
    if (options.on_text && !inference_detail::ends_mid_character(current.text) && current.text.size() > streamed[q].size()) {
      options.on_text(q, current.stage, io::valid_utf8(std::string_view(current.text).substr(streamed[q].size())));
      streamed[q] = current.text;
    }
  };
  if constexpr (!std::is_same_v<std::remove_cvref_t<RouteContext>, std::nullptr_t>) {
    generation.route = [&](const nn::RoutingRequest& request) -> std::shared_ptr<const nn::AdapterContext> {
      using Ids = Tensor<std::int32_t, typename inference_detail::model_backend<Model>::type>;
      const auto batch = static_cast<std::int64_t>(request.history.size());
      return route_context(Ids::from_vector({batch, request.to - request.from}, routing.routes(request)));
    };
  }
  nn::generate(model, prompts, generation);
  for (Reply& reply : replies) {
    for (StageReply& stage : reply.stages) stage.text = io::valid_utf8(stage.text);  // a model may write any bytes
    if (!reply.stages.empty() && reply.stages.back().stage == P::names[P::answer_index]) reply.answer = reply.stages.back().text;
  }
  return replies;
}

}  // namespace mote::aligncot
