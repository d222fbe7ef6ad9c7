#pragma once
// Eval items and model answers, both JSON Lines.
//   items:   {"id": "t17", "question": "...", "kind": "harmful", "category": "weapons", "expected": ["local laws"]}
//   answers: {"id": "t17", "answer": "..."}
// "kind" is harmful, benign or lookalike (a benign question that a naive filter refuses); "expected"
// lists the keywords a good answer carries (for a harmful item: the safe redirect's content).
// "category" and "expected" may be absent; other fields are ignored, so generators may add their own.
// Every error is an io_error naming the file, the line and what was expected.
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/io/json.hpp"
#include "mote/io/jsonl.hpp"

namespace mote::eval {

enum class ItemKind { harmful, benign, lookalike };

inline constexpr std::string_view kind_name(ItemKind kind) noexcept {
  switch (kind) {
    case ItemKind::harmful: return "harmful";
    case ItemKind::benign: return "benign";
    case ItemKind::lookalike: return "lookalike";
  }
  return "?";
}

inline std::optional<ItemKind> parse_kind(std::string_view name) noexcept {
  for (ItemKind k : {ItemKind::harmful, ItemKind::benign, ItemKind::lookalike})
    if (kind_name(k) == name) return k;
  return std::nullopt;
}

struct EvalItem {
  std::string id;
  std::string question;
  ItemKind kind = ItemKind::benign;
  std::string category;
  std::vector<std::string> expected;  // keywords a good answer carries
};

struct Answer {
  std::string id;
  std::string answer;
};

namespace items_detail {

[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw io_error("mote: eval: " + where + ": " + what);
}

// Ids are strings; an integer id is accepted and kept as its decimal text.
inline std::string id_field(const io::json::Value& record, const std::string& where, std::string_view expected_shape) {
  const io::json::Value* id = record.find("id");
  if (!id) fail(where, "missing field \"id\"; expected " + std::string(expected_shape));
  if (id->is_string()) {
    if (id->as_string().empty()) fail(where, "field \"id\" is empty; expected a non-empty string");
    return id->as_string();
  }
  if (id->is_integer()) return std::to_string(id->as_int64());
  fail(where, std::string("field \"id\" is ") + io::json::type_name(id->type()) + "; expected a string");
}

inline const std::string& string_field(const io::json::Value& record, const char* key, const std::string& where,
                                       std::string_view expected_shape) {
  const io::json::Value* v = record.find(key);
  if (!v) fail(where, std::string("missing field \"") + key + "\"; expected " + std::string(expected_shape));
  if (!v->is_string()) fail(where, std::string("field \"") + key + "\" is " + io::json::type_name(v->type()) + "; expected a string");
  return v->as_string();
}

// Remembers the line of each id so a duplicate names both lines.
class IdRegistry {
 public:
  void add(const std::string& id, std::size_t line, const std::string& where) {
    const auto [it, fresh] = first_line_.emplace(id, line);
    if (!fresh)
      fail(where, "duplicate id \"" + id + "\" (first on line " + std::to_string(it->second) + "); expected unique ids");
  }

 private:
  std::unordered_map<std::string, std::size_t> first_line_;
};

}  // namespace items_detail

// "t3", "t9", "t12" and 4 more: a readable excerpt of a long id list for error messages.
inline std::string list_ids(std::span<const std::string> ids, std::size_t shown = 5) {
  std::string out;
  for (std::size_t i = 0; i < ids.size() && i < shown; ++i) out += (i ? ", \"" : "\"") + ids[i] + "\"";
  if (ids.size() > shown) out += " and " + std::to_string(ids.size() - shown) + " more";
  return out;
}

inline constexpr std::string_view item_shape =
    "an item {\"id\", \"question\", \"kind\" (harmful, benign or lookalike), \"category\", \"expected\": [keywords]}";

// One item record; `where` names it in errors ("'items.jsonl' line 4").
inline EvalItem item_from_json(const io::json::Value& record, const std::string& where) {
  using items_detail::fail;
  if (!record.is_object()) fail(where, std::string("got ") + io::json::type_name(record.type()) + "; expected " + std::string(item_shape));
  EvalItem item;
  item.id = items_detail::id_field(record, where, item_shape);
  item.question = items_detail::string_field(record, "question", where, item_shape);
  if (item.question.empty()) fail(where, "field \"question\" is empty; expected the question's text");
  const std::string& kind = items_detail::string_field(record, "kind", where, item_shape);
  const auto parsed = parse_kind(kind);
  if (!parsed) fail(where, "field \"kind\" is \"" + kind + "\"; expected one of harmful, benign, lookalike");
  item.kind = *parsed;
  if (const io::json::Value* c = record.find("category"); c && !c->is_null()) {
    if (!c->is_string()) fail(where, std::string("field \"category\" is ") + io::json::type_name(c->type()) + "; expected a string");
    item.category = c->as_string();
  }
  if (const io::json::Value* e = record.find("expected"); e && !e->is_null()) {
    if (!e->is_array()) fail(where, std::string("field \"expected\" is ") + io::json::type_name(e->type()) + "; expected an array of keyword strings");
    for (std::size_t i = 0; i < e->size(); ++i) {
      const io::json::Value& k = e->at(i);
      const std::string at = "expected[" + std::to_string(i) + "]";
      if (!k.is_string()) fail(where, at + " is " + io::json::type_name(k.type()) + "; expected a keyword string");
      // An empty keyword would be found in every answer.
      if (k.as_string().empty()) fail(where, at + " is empty; expected a non-empty keyword");
      item.expected.push_back(k.as_string());
    }
  }
  return item;
}

inline io::json::Value item_to_json(const EvalItem& item) {
  return io::json::Value::object({{"id", item.id},
                                  {"question", item.question},
                                  {"kind", std::string(kind_name(item.kind))},
                                  {"category", item.category},
                                  {"expected", item.expected}});
}

// Every item of a JSON Lines file; the first bad line throws io_error naming the file and the line.
inline std::vector<EvalItem> read_items(const std::filesystem::path& path) {
  std::vector<EvalItem> items;
  items_detail::IdRegistry ids;
  for (const auto& line : io::jsonl::read(path)) {
    const std::string where = io::jsonl::line_source(path, line.number);
    items.push_back(item_from_json(line.value, where));
    ids.add(items.back().id, line.number, where);
  }
  return items;
}

inline void write_items(const std::filesystem::path& path, std::span<const EvalItem> items) {
  std::vector<io::json::Value> records;
  records.reserve(items.size());
  for (const auto& item : items) records.push_back(item_to_json(item));
  io::jsonl::write(path, records);
}

inline constexpr std::string_view answer_shape = "an answer {\"id\", \"answer\"}";

// Every answer of a JSON Lines file (fields other than id and answer are ignored); an empty answer
// is kept, since a model may well say nothing.
inline std::vector<Answer> read_answers(const std::filesystem::path& path) {
  using items_detail::fail;
  std::vector<Answer> answers;
  items_detail::IdRegistry ids;
  for (const auto& line : io::jsonl::read(path)) {
    const std::string where = io::jsonl::line_source(path, line.number);
    if (!line.value.is_object())
      fail(where, std::string("got ") + io::json::type_name(line.value.type()) + "; expected " + std::string(answer_shape));
    Answer a{items_detail::id_field(line.value, where, answer_shape),
             items_detail::string_field(line.value, "answer", where, answer_shape)};
    ids.add(a.id, line.number, where);
    answers.push_back(std::move(a));
  }
  return answers;
}

// One line per answer, atomically.
inline void write_answers(const std::filesystem::path& path, std::span<const Answer> answers) {
  std::vector<io::json::Value> records;
  records.reserve(answers.size());
  for (const auto& a : answers) records.push_back(io::json::Value::object({{"id", a.id}, {"answer", a.answer}}));
  io::jsonl::write(path, records);
}

// The answer texts in item order, as Judge::judge takes them. Items without an answer and answers
// for no item are an io_error naming `source` (the answers file) and listing some of the ids.
inline std::vector<std::string> answers_in_item_order(std::span<const EvalItem> items, std::span<const Answer> answers,
                                                      const std::string& source) {
  std::unordered_map<std::string, std::size_t> by_id;
  for (std::size_t i = 0; i < answers.size(); ++i)
    if (!by_id.emplace(answers[i].id, i).second)
      throw io_error("mote: eval: " + source + ": duplicate answer id \"" + answers[i].id + "\"");
  std::vector<std::string> texts, unanswered, unknown;
  std::unordered_set<std::string> item_ids;
  for (const auto& item : items) {
    item_ids.insert(item.id);
    const auto it = by_id.find(item.id);
    if (it == by_id.end()) unanswered.push_back(item.id);
    else texts.push_back(answers[it->second].answer);
  }
  for (const auto& a : answers)
    if (!item_ids.count(a.id)) unknown.push_back(a.id);
  if (!unanswered.empty() || !unknown.empty()) {
    std::string what;
    if (!unanswered.empty())
      what += std::to_string(unanswered.size()) + " item(s) have no answer: " + list_ids(unanswered);
    if (!unknown.empty())
      what += (what.empty() ? "" : "; ") + std::to_string(unknown.size()) + " answer(s) match no item: " + list_ids(unknown);
    throw io_error("mote: eval: " + source + ": " + what + "; expected one answer per item");
  }
  return texts;
}

}  // namespace mote::eval
