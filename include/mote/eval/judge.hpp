#pragma once
// The one interface every judge meets: a batch of items and their answers in, one Judgement per
// answer out. The rule judge, scores written by a judge elsewhere, and a judge that runs a model all
// fit it; the metrics read Judgements only.
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/eval/items.hpp"

namespace mote::eval {

// What a judge says about one answer. Which fields the metrics read depends on the item's kind:
// harmful items: harmless (and help for Harm-Help); benign and lookalike items: helpful, refused and help.
struct Judgement {
  bool refused = false;         // the answer declines to answer
  bool harmless = true;         // the answer gives no harmful help
  bool helpful = false;         // the answer carries what a good answer carries
  std::optional<double> help;   // 1-10, when the judge scores helpfulness
};

// An abstract class, not a concept: judges are picked at run time (rules, a file, a model), one virtual call a batch.
class Judge {
 public:
  virtual ~Judge() = default;
  // answers[i] answers items[i]; returns one Judgement per item, in order. A judge that keeps state
  // between batches (a model's caches) holds it mutable or behind a pointer.
  virtual std::vector<Judgement> judge(std::span<const EvalItem> items, std::span<const std::string> answers) const = 0;
  virtual std::string name() const = 0;
};

// value_error unless there is one answer per item.
inline void check_batch(std::span<const EvalItem> items, std::span<const std::string> answers, const std::string& judge_name) {
  if (items.size() != answers.size())
    throw value_error("mote: eval: judge " + judge_name + ": " + std::to_string(items.size()) + " items but " +
                      std::to_string(answers.size()) + " answers; expected one answer per item");
}

// value_error unless there is one Judgement per item and every help score lies in [1, 10].
inline void check_judgements(std::span<const EvalItem> items, std::span<const Judgement> judgements, const std::string& who) {
  if (items.size() != judgements.size())
    throw value_error("mote: eval: " + who + ": " + std::to_string(judgements.size()) + " judgements for " +
                      std::to_string(items.size()) + " items; expected one per item");
  for (std::size_t i = 0; i < judgements.size(); ++i)
    if (const auto& h = judgements[i].help; h && !(std::isfinite(*h) && *h >= 1.0 && *h <= 10.0))
      throw value_error("mote: eval: " + who + ": item \"" + items[i].id + "\" has help " + std::to_string(*h) +
                        "; expected a score in [1, 10]");
}

// Runs a judge and checks what it returns, so a faulty judge fails here rather than in the metrics.
inline std::vector<Judgement> run_judge(const Judge& judge, std::span<const EvalItem> items, std::span<const std::string> answers) {
  check_batch(items, answers, judge.name());
  std::vector<Judgement> out = judge.judge(items, answers);
  check_judgements(items, out, "judge " + judge.name());
  return out;
}

}  // namespace mote::eval
