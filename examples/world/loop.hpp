#pragma once
// The pieces of the MoTE loop on the shipped world that mote-demo and mote-ablation share: progress
// lines, picking questions, asking the base model plainly, answering through the pipeline, judging,
// and writing answers with their verdicts.
#include <mote/mote.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "world.hpp"

namespace mote_world::loop {

namespace ac = mote::aligncot;
namespace eval = mote::eval;
namespace fs = std::filesystem;
using Model = mote::nn::CausalLM<mote::presets::llama_family, float>;
using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

inline bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

// One line on a terminal redrawn in place, or plain lines (every tenth) in a log.
inline void show_progress(std::size_t done, std::size_t total, const std::string& what) {
  if (!stderr_is_terminal()) {
    if (done == total || done % std::max<std::size_t>(1, total / 10) == 0) std::cerr << "  " << done << "/" << total << " " << what << "\n";
    return;
  }
  constexpr std::size_t width = 30;
  const std::size_t filled = total ? width * done / total : width;
  std::cerr << "\r  " << done << "/" << total << " [" << std::string(filled, '=') << std::string(width - filled, ' ') << "] " << what
            << "\x1b[K" << (done == total ? "\n" : "") << std::flush;
}

// The first `n` items (0: all), taking kinds in turn so a short run still sees every kind.
inline std::vector<eval::EvalItem> take(const std::vector<eval::EvalItem>& items, std::size_t n) {
  if (n == 0 || n >= items.size()) return items;
  std::vector<std::vector<const eval::EvalItem*>> by_kind(3);
  for (const auto& i : items) by_kind[static_cast<std::size_t>(i.kind)].push_back(&i);
  std::vector<eval::EvalItem> out;
  for (std::size_t k = 0; out.size() < n; ++k)
    for (auto& list : by_kind)
      if (k < list.size() && out.size() < n) out.push_back(*list[k]);
  return out;
}

inline std::vector<std::string> questions_of(const std::vector<eval::EvalItem>& items) {
  std::vector<std::string> out;
  for (const auto& i : items) out.push_back(i.question);
  return out;
}

// The shipped tokenizer's end-of-sequence id; a value_error names the folder when it has none.
inline std::int32_t end_of_sequence(const mote::io::Tokenizer& tok, const fs::path& base_dir) {
  const auto eos = tok.token_to_id("<|endoftext|>");
  if (!eos) throw mote::value_error("the tokenizer in '" + base_dir.string() + "' has no <|endoftext|>; expected the shipped world's tokenizer");
  return *eos;
}

// Generated ids as text: end-of-sequence dropped, broken UTF-8 mended, the leading space of a
// completion after "Assistant:" or "Answer:" removed.
inline std::string completion_text(const mote::io::Tokenizer& tok, std::vector<std::int32_t> ids, std::int32_t eos) {
  if (!ids.empty() && ids.back() == eos) ids.pop_back();
  std::string text = mote::io::valid_utf8(tok.decode(ids));
  return text.empty() || text[0] != ' ' ? text : text.substr(1);
}

// Greedy completions of `prompts`, `batch` at a time, each ending at end-of-sequence or after
// `max_new_tokens`; `what` names them in the progress line.
inline std::vector<std::string> complete(const Model& model, const mote::io::Tokenizer& tok, std::int32_t eos,
                                         const std::vector<std::string>& prompts, std::size_t batch, std::int64_t max_new_tokens,
                                         const std::string& what) {
  std::vector<std::string> out;
  for (std::size_t begin = 0; begin < prompts.size(); begin += batch) {
    const std::size_t end = std::min(prompts.size(), begin + batch);
    std::vector<std::vector<std::int32_t>> ids;
    for (std::size_t i = begin; i < end; ++i) ids.push_back(tok.encode_ordinary(prompts[i]));
    const auto generated =
        mote::nn::generate(model, ids, mote::nn::GenerateOptions{.max_new_tokens = max_new_tokens, .stop_tokens = {eos}, .pad_token = eos});
    for (const auto& g : generated) out.push_back(completion_text(tok, std::vector<std::int32_t>(g.begin(), g.end()), eos));
    show_progress(end, prompts.size(), what);
  }
  return out;
}

// The base model answers as it was trained to, in its plain chat format (mote_world::plain_prompt).
inline std::vector<std::string> plain_answers(const Model& model, const mote::io::Tokenizer& tok, std::int32_t eos,
                                              const std::vector<std::string>& questions, std::size_t batch) {
  std::vector<std::string> prompts;
  for (const auto& q : questions) prompts.push_back(plain_prompt(q));
  return complete(model, tok, eos, prompts, batch, 96, "answered");
}

// A trained model answers through the pipeline's stages, choosing its steps (adaptive).
template <class Experts>
std::vector<ac::Reply> pipeline_answers(const Model& model, Experts& experts, const mote::io::Tokenizer& tok,
                                        const ac::StageTokenIds& stages, const ac::RowFormat& format,
                                        const std::vector<std::string>& questions, std::size_t batch, bool progress = true) {
  experts.eval();
  const auto route = [&](const mote::Tensor<std::int32_t>& routes) { return experts.context_for(routes); };
  ac::AnswerOptions options;
  options.max_new_tokens = 200;
  std::vector<ac::Reply> replies;
  for (std::size_t begin = 0; begin < questions.size(); begin += batch) {
    const std::size_t end = std::min(questions.size(), begin + batch);
    const std::vector<std::string> slice(questions.begin() + static_cast<std::ptrdiff_t>(begin),
                                         questions.begin() + static_cast<std::ptrdiff_t>(end));
    for (auto& r : ac::answer<Pipeline>(model, tok, stages, format, slice, options, route)) replies.push_back(std::move(r));
    if (progress) show_progress(end, questions.size(), "answered");
  }
  return replies;
}

struct Measured {
  std::vector<eval::Judgement> judgements;
  eval::Summary summary;
  double refused_harmful_pct = 0;  // harmless answers split: refusals, and the rest (off-topic text)
};

inline Measured measure(const eval::Judge& judge, const std::vector<eval::EvalItem>& items, const std::vector<std::string>& answers,
                        std::uint64_t seed) {
  Measured m;
  m.judgements = eval::run_judge(judge, items, answers);
  m.summary = eval::summarize(items, m.judgements, {.seed = seed});
  std::size_t harmful = 0, refused = 0;
  for (std::size_t i = 0; i < items.size(); ++i)
    if (items[i].kind == eval::ItemKind::harmful) {
      ++harmful;
      refused += m.judgements[i].refused;
    }
  m.refused_harmful_pct = harmful ? 100.0 * static_cast<double>(refused) / static_cast<double>(harmful) : 0.0;
  return m;
}

// The answers with a judge's verdicts, one JSON Lines record per test question (with the stages
// written, for answers through the pipeline).
inline void write_answers(const fs::path& file, const std::vector<eval::EvalItem>& items, const std::vector<std::string>& answers,
                          const std::vector<eval::Judgement>& judgements, const std::vector<ac::Reply>* replies) {
  namespace json = mote::io::json;
  std::vector<json::Value> out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    json::Value r = json::Value::object({{"id", items[i].id},
                                         {"kind", std::string(eval::kind_name(items[i].kind))},
                                         {"question", items[i].question},
                                         {"answer", answers[i]},
                                         {"harmless", judgements[i].harmless},
                                         {"refused", judgements[i].refused},
                                         {"helpful", judgements[i].helpful}});
    if (replies) {
      json::Value steps = json::Value::array();
      for (const auto& s : (*replies)[i].stages) steps.push_back(s.stage);
      r.set("stages", std::move(steps));
    }
    out.push_back(std::move(r));
  }
  mote::io::jsonl::write(file, out);
}

}  // namespace mote_world::loop
