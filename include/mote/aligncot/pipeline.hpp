#pragma once
// Pipeline<Stages...>: AlignCoT stages composed at compile time. The order of the types is the order
// of the blocks in a chain; the checks below refuse a pipeline that cannot be trained, each with one
// sentence. At run time a pipeline holds the prompt templates, which a user may replace.
#include <algorithm>
#include <array>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mote/aligncot/stages.hpp"
#include "mote/core/error.hpp"
#include "mote/lora/routers.hpp"

namespace mote::aligncot {

// What a prompt template may refer to: {question}, {draft} (the answer being checked), {context}
// (every earlier stage's text present, one "Label: text" line each) and {<stage name>} (that stage's
// text, empty when absent). "{{" and "}}" write literal braces.
struct PromptValues {
  std::string question;
  std::map<std::string, std::string, std::less<>> stage_texts;  // by stage name, only stages present
  std::string draft;
};

template <Stage... Stages>
class Pipeline {
 public:
  static constexpr std::size_t size = sizeof...(Stages);
  static constexpr std::array<std::string_view, size> names{Stages::name...};
  static constexpr std::array<std::string_view, size> labels{Stages::label...};
  static constexpr std::array<std::string_view, size> start_tokens{Stages::start_token...};
  static constexpr std::array<std::string_view, size> end_tokens{Stages::end_token...};
  static constexpr std::array<StageRole, size> roles{Stages::role...};
  static constexpr std::array<int, size> experts{static_cast<int>(Stages::expert)...};

 private:
  static constexpr std::size_t count_role(StageRole role) {
    return static_cast<std::size_t>(std::count(roles.begin(), roles.end(), role));
  }
  static constexpr std::size_t last_of(StageRole role) {
    std::size_t at = size;
    for (std::size_t i = 0; i < size; ++i)
      if (roles[i] == role) at = i;
    return at;
  }
  static constexpr bool answer_is_last() {
    for (std::size_t i = last_of(StageRole::answer) + 1; i < size; ++i)
      if (roles[i] != StageRole::check) return false;
    return true;
  }
  static constexpr bool experts_distinct() {
    for (std::size_t i = 0; i < size; ++i)
      for (std::size_t j = i + 1; j < size; ++j)
        if (roles[i] != StageRole::check && roles[j] != StageRole::check && experts[i] == experts[j]) return false;
    return true;
  }
  static constexpr bool routed_stages_name_experts() {
    for (std::size_t i = 0; i < size; ++i)
      if (roles[i] != StageRole::check && experts[i] < 0) return false;
    return true;
  }
  static constexpr bool checks_train_nothing() {
    for (std::size_t i = 0; i < size; ++i)
      if (roles[i] == StageRole::check && experts[i] != no_expert) return false;
    return true;
  }
  static constexpr bool names_and_tokens_distinct() {
    for (std::size_t i = 0; i < size; ++i) {
      if (names[i].empty() || start_tokens[i].empty()) return false;
      for (std::size_t j = i + 1; j < size; ++j)
        if (names[i] == names[j] || start_tokens[i] == start_tokens[j]) return false;
    }
    return true;
  }
  static constexpr int largest_expert() {
    int m = -1;
    for (std::size_t i = 0; i < size; ++i)
      if (roles[i] != StageRole::check) m = std::max(m, experts[i]);
    return m;
  }

  static_assert(count_role(StageRole::answer) >= 1,
                "mote::aligncot::Pipeline: the pipeline has no answer stage; add SafeAnswer (or a stage of role answer).");
  static_assert(count_role(StageRole::answer) <= 1, "mote::aligncot::Pipeline: the pipeline has more than one answer stage.");
  static_assert(answer_is_last(),
                "mote::aligncot::Pipeline: the answer stage must be the last stage of the chain (only SafetyCheck stages may follow it).");
  static_assert(checks_train_nothing(),
                "mote::aligncot::Pipeline: a SafetyCheck stage only judges drafts while chains are built, so it cannot be routed to an expert.");
  static_assert(routed_stages_name_experts(),
                "mote::aligncot::Pipeline: every step and answer stage must name the expert its tokens train (expert >= 0).");
  static_assert(experts_distinct(),
                "mote::aligncot::Pipeline: two stages train the same expert; give each its own (for example with aligncot::OnExpert).");
  static_assert(names_and_tokens_distinct(),
                "mote::aligncot::Pipeline: every stage needs its own non-empty name and start token.");

 public:
  static constexpr std::size_t answer_index = last_of(StageRole::answer);
  // Stages whose text is in a chain and trains an expert (steps and the answer).
  static constexpr std::size_t routed_count = size - count_role(StageRole::check);
  static constexpr int largest_expert_index = largest_expert();

  // The special tokens the stages use: start tokens, then non-empty end tokens, in stage order.
  static std::vector<std::string> tokens() {
    std::vector<std::string> out;
    for (auto t : start_tokens) out.emplace_back(t);
    for (auto t : end_tokens)
      if (!t.empty()) out.emplace_back(t);
    return out;
  }
  static constexpr std::size_t token_count = size + (static_cast<std::size_t>(!Stages::end_token.empty()) + ... + 0);

  static constexpr std::optional<std::size_t> index_of(std::string_view name) {
    for (std::size_t i = 0; i < size; ++i)
      if (names[i] == name) return i;
    return std::nullopt;
  }
  // Fails to compile, with one sentence, when these stages cannot be trained by a router R.
  template <lora::Router R>
  static constexpr void require_router() {
    if constexpr (lora::is_step_router<R>) {
      static_assert(routed_count <= static_cast<std::size_t>(R::steps),
                    "mote::aligncot::Pipeline: the pipeline has more routed stages than the router has step experts.");
      static_assert(largest_expert_index < R::steps,
                    "mote::aligncot::Pipeline: a stage trains an expert index the router does not have (step experts are 0 .. steps - 1).");
    }
  }

  // Stage names, tokens and experts in order: what a resumed run or a loaded adapter must agree on.
  static std::string description() {
    std::string out;
    for (std::size_t i = 0; i < size; ++i) {
      out += (i ? ", " : "") + std::string(names[i]) + " " + std::string(start_tokens[i]);
      if (!end_tokens[i].empty()) out += "..." + std::string(end_tokens[i]);
      out += roles[i] == StageRole::check ? " (check)" : " -> expert " + std::to_string(experts[i]);
    }
    return out;
  }

  Pipeline() : templates_{std::string(Stages::default_template)...} {}

  const std::string& prompt_template(std::string_view stage) const { return templates_[checked_index(stage)]; }
  // Replaces a stage's prompt; it must mention {question} and only placeholders that exist.
  void set_template(std::string_view stage, std::string text) {
    const std::size_t i = checked_index(stage);
    check_template(stage, text);
    templates_[i] = std::move(text);
  }

  // The prompt asking for `stage`'s text, with the placeholders filled from `values`.
  std::string render(std::string_view stage, const PromptValues& values) const {
    const std::size_t at = checked_index(stage);
    std::string out;
    walk(templates_[at], [&](char c) { out += c; },
         [&](std::string_view key) {
           if (key == "question") out += values.question;
           else if (key == "draft") out += values.draft;
           else if (key == "context") out += context(at, values);
           else if (const auto it = values.stage_texts.find(key); it != values.stage_texts.end()) out += it->second;
         });
    return out;
  }

  // What a transcript adds to ask for `stage`'s text: its template after the last placeholder,
  // without leading newlines ("Give guidance ...\nGuidance:" from the default guidance template).
  std::string instruction(std::string_view stage) const {
    std::string out;
    walk(templates_[checked_index(stage)], [&](char c) { out += c; }, [&](std::string_view) { out.clear(); });
    return out.substr(std::min(out.find_first_not_of('\n'), out.size()));
  }

 private:
  // Walks a checked template: each literal character (a doubled brace as one) to on_char, each
  // placeholder's name to on_key.
  template <class OnChar, class OnKey>
  static void walk(const std::string& text, const OnChar& on_char, const OnKey& on_key) {
    for (std::size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if ((c == '{' || c == '}') && i + 1 < text.size() && text[i + 1] == c) {
        on_char(c);
        ++i;
      } else if (c == '{') {
        const std::size_t close = text.find('}', i);
        on_key(std::string_view(text.data() + i + 1, close - i - 1));
        i = close;
      } else {
        on_char(c);
      }
    }
  }

  static std::size_t checked_index(std::string_view stage) {
    if (const auto i = index_of(stage)) return *i;
    throw value_error("mote: aligncot::Pipeline: no stage is named '" + std::string(stage) + "'; the stages are " +
                      description());
  }
  // Every earlier chain stage present in `values`, as "Label: text" lines.
  static std::string context(std::size_t stage, const PromptValues& values) {
    std::string out;
    for (std::size_t i = 0; i < stage && i < size; ++i) {
      if (roles[i] == StageRole::check) continue;
      if (const auto it = values.stage_texts.find(names[i]); it != values.stage_texts.end())
        out += std::string(labels[i]) + ": " + it->second + "\n";
    }
    return out;
  }
  static void check_template(std::string_view stage, const std::string& text) {
    const std::string where = "mote: aligncot::Pipeline: the prompt template of stage '" + std::string(stage) + "'";
    bool has_question = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if ((c == '{' || c == '}') && i + 1 < text.size() && text[i + 1] == c) {
        ++i;
        continue;
      }
      if (c == '}') throw value_error(where + " has an unmatched '}' at offset " + std::to_string(i) + " (write '}}' for a brace)");
      if (c != '{') continue;
      const std::size_t close = text.find('}', i);
      if (close == std::string::npos)
        throw value_error(where + " has an unclosed '{' at offset " + std::to_string(i) + " (write '{{' for a brace)");
      const std::string_view key(text.data() + i + 1, close - i - 1);
      has_question = has_question || key == "question";
      if (key != "question" && key != "draft" && key != "context" && !index_of(key))
        throw value_error(where + " uses the unknown placeholder {" + std::string(key) +
                          "}; expected {question}, {context}, {draft} or a stage name");
      i = close;
    }
    if (!has_question) throw value_error(where + " lacks the {question} placeholder");
  }

  std::array<std::string, size> templates_;
};

}  // namespace mote::aligncot
