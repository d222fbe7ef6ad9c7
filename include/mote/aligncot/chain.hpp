#pragma once
// The chain format: JSON Lines, one AlignCoT chain per line.
//   {"id": "q17", "question": "...", "steps": {"analysis": "...", "guidance": "..."}, "answer": "...",
//    "checks": [{"before": "guidance", "draft": "...", "safe": false}], "provenance": {...}}
// "steps" holds only the steps present (adaptive chains skip some); "checks" records the safety
// verdicts on drafted answers while the chain was built; "id", "steps", "checks" and "provenance" may
// be absent. Every error names the file and the line.
#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "mote/aligncot/pipeline.hpp"
#include "mote/core/error.hpp"
#include "mote/io/json.hpp"
#include "mote/io/jsonl.hpp"

namespace mote::aligncot {

// A verdict of the SafetyCheck stage on an answer drafted before step `before` (or "answer").
struct CheckVerdict {
  std::string before;
  std::string draft;
  bool safe = false;
};

struct Chain {
  std::string id;
  std::string question;
  std::vector<std::pair<std::string, std::string>> steps;  // (stage name, text) in pipeline order
  std::string answer;
  std::vector<CheckVerdict> checks;
  io::json::Value provenance;  // any JSON object, or null
  std::string source;          // where the chain came from, for messages: "'chains.jsonl' line 3"

  // The text of step `name`, or nullptr when the chain skipped it.
  const std::string* step(std::string_view name) const {
    for (const auto& [stage, text] : steps)
      if (stage == name) return &text;
    return nullptr;
  }
};

namespace chain_detail {

inline const io::json::Value& string_field(const io::json::Value& record, const char* key, const std::string& where) {
  const io::json::Value* v = record.find(key);
  if (!v) throw value_error("mote: aligncot: " + where + ": missing field \"" + key + "\"");
  if (!v->is_string()) throw value_error("mote: aligncot: " + where + ": field \"" + key + "\" must be a string");
  return *v;
}

}  // namespace chain_detail

// One record checked against the pipeline: step names must be the pipeline's steps (not its answer
// or check stages), texts non-empty, the answer present and non-empty.
template <class P>
Chain chain_from_json(const io::json::Value& record, const std::string& where) {
  using chain_detail::string_field;
  const auto fail = [&](const std::string& what) { throw value_error("mote: aligncot: " + where + ": " + what); };
  if (!record.is_object()) fail("expected a JSON object (one chain per line)");
  for (const auto& [key, value] : record.as_object())
    if (key != "id" && key != "question" && key != "steps" && key != "answer" && key != "checks" && key != "provenance")
      fail("unknown field \"" + key + "\"; a chain has id, question, steps, answer, checks and provenance");
  Chain chain;
  chain.source = where;
  if (const io::json::Value* id = record.find("id")) {
    if (!id->is_string() && !id->is_number()) fail("field \"id\" must be a string or a number");
    chain.id = id->is_string() ? id->as_string() : io::json::dump(*id);
  }
  chain.question = string_field(record, "question", where).as_string();
  if (chain.question.empty()) fail("the question is empty");
  chain.answer = string_field(record, "answer", where).as_string();
  if (chain.answer.empty()) fail("the answer is empty; every chain ends with a non-empty answer");
  if (const io::json::Value* steps = record.find("steps"); steps && !steps->is_null()) {
    if (!steps->is_object()) fail("field \"steps\" must be an object of stage name -> text");
    std::vector<std::pair<std::size_t, std::pair<std::string, std::string>>> ordered;
    for (const auto& [name, text] : steps->as_object()) {
      const auto at = P::index_of(name);
      if (!at || P::roles[*at] != StageRole::step) {
        std::string known;
        for (std::size_t i = 0; i < P::size; ++i)
          if (P::roles[i] == StageRole::step) known += (known.empty() ? "" : ", ") + std::string(P::names[i]);
        fail("step \"" + name + "\" is not a step of the pipeline (its steps are " + (known.empty() ? "none" : known) + ")");
      }
      if (!text.is_string() || text.as_string().empty()) fail("step \"" + name + "\" must have non-empty text");
      ordered.emplace_back(*at, std::make_pair(name, text.as_string()));
    }
    std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [index, step] : ordered) chain.steps.push_back(std::move(step));
  }
  if (const io::json::Value* checks = record.find("checks"); checks && !checks->is_null()) {
    if (!checks->is_array()) fail("field \"checks\" must be an array of {before, draft, safe}");
    for (std::size_t i = 0; i < checks->size(); ++i) {
      const io::json::Value& c = checks->at(i);
      const std::string at = "checks[" + std::to_string(i) + "]";
      if (!c.is_object() || !c.find("before") || !c.at("before").is_string() || !c.find("safe") || !c.at("safe").is_bool())
        fail(at + " must be an object with a string \"before\" and a boolean \"safe\" (and optionally a string \"draft\")");
      const std::string before = c.at("before").as_string();
      if (before != "answer" && !P::index_of(before)) fail(at + ".before = \"" + before + "\" names no stage of the pipeline");
      const io::json::Value* draft = c.find("draft");
      if (draft && !draft->is_string()) fail(at + ".draft must be a string");
      chain.checks.push_back(CheckVerdict{before, draft ? draft->as_string() : std::string(), c.at("safe").as_bool()});
    }
  }
  if (const io::json::Value* p = record.find("provenance"); p && !p->is_null()) {
    if (!p->is_object()) fail("field \"provenance\" must be an object");
    chain.provenance = *p;
  }
  return chain;
}

template <class P>
io::json::Value chain_to_json(const Chain& chain) {
  using io::json::Value;
  Value record = Value::object();
  if (!chain.id.empty()) record.set("id", chain.id);
  record.set("question", chain.question);
  Value steps = Value::object();
  for (const auto& [name, text] : chain.steps) steps.set(name, text);
  record.set("steps", std::move(steps));
  record.set("answer", chain.answer);
  if (!chain.checks.empty()) {
    Value checks = Value::array();
    for (const auto& c : chain.checks)
      checks.push_back(Value::object({{"before", c.before}, {"draft", c.draft}, {"safe", c.safe}}));
    record.set("checks", std::move(checks));
  }
  if (chain.provenance.is_object()) record.set("provenance", chain.provenance);
  return record;
}

// Every chain of a JSON Lines file, checked against the pipeline P; the first bad line throws,
// naming the file and the line.
template <class P>
std::vector<Chain> read_chains(const std::filesystem::path& path) {
  std::vector<Chain> out;
  for (const auto& line : io::jsonl::read(path))
    out.push_back(chain_from_json<P>(line.value, io::jsonl::line_source(path, line.number)));
  return out;
}

// Writes the chains, one per line, atomically.
template <class P>
void write_chains(const std::filesystem::path& path, const std::vector<Chain>& chains) {
  std::vector<io::json::Value> records;
  records.reserve(chains.size());
  for (const auto& c : chains) records.push_back(chain_to_json<P>(c));
  io::jsonl::write(path, records);
}

}  // namespace mote::aligncot
