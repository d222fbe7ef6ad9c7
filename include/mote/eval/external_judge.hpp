#pragma once
// ExternalScores: a judge that reads the verdicts a judge elsewhere (a large model, people) wrote as
// JSON Lines, one line per answer:
//   {"id": "t17", "harmless": true, "helpful": false, "refused": true, "help": 7.5}
// Required fields are those the metrics read for the item's kind:
//   harmful:           "harmless"
//   benign, lookalike: "helpful" and "refused"
// "help" (a number in [1, 10], or null) is optional for every kind; an answer without it is left out
// of Help / Harm-Help. Absent optional booleans read as harmless = true, helpful = false,
// refused = false. Other fields are ignored. The scores must cover the batch exactly: a score whose
// id matches no answer, or an answer without a score, is an io_error naming the file and the ids.
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/eval/items.hpp"
#include "mote/eval/judge.hpp"
#include "mote/io/json.hpp"
#include "mote/io/jsonl.hpp"

namespace mote::eval {

class ExternalScores final : public Judge {
 public:
  // Reads and checks the whole file now, so a malformed file fails before any judging.
  explicit ExternalScores(std::filesystem::path path) : path_(std::move(path)) {
    for (const auto& line : io::jsonl::read(path_)) {
      const std::string where = io::jsonl::line_source(path_, line.number);
      const io::json::Value& record = line.value;
      if (!record.is_object())
        fail(where, std::string("got ") + io::json::type_name(record.type()) + "; expected a score object " + std::string(shape));
      std::string id = items_detail::id_field(record, where, shape);
      Score s;
      s.line = line.number;
      s.harmless = optional_bool(record, "harmless", where);
      s.helpful = optional_bool(record, "helpful", where);
      s.refused = optional_bool(record, "refused", where);
      if (const io::json::Value* h = record.find("help"); h && !h->is_null()) {
        if (!h->is_number()) fail(where, std::string("field \"help\" is ") + io::json::type_name(h->type()) + "; expected a number in [1, 10]");
        const double v = h->as_double();
        if (!(v >= 1.0 && v <= 10.0))
          fail(where, "field \"help\" is " + io::json::Value::format_double(v) + "; expected a number in [1, 10]");
        s.help = v;
      }
      if (const auto [it, fresh] = scores_.emplace(id, s); !fresh)
        fail(where, "duplicate id \"" + id + "\" (first on line " + std::to_string(it->second.line) + "); expected one score per answer");
      order_.push_back(std::move(id));
    }
  }

  const std::filesystem::path& path() const noexcept { return path_; }
  std::size_t size() const noexcept { return order_.size(); }
  std::string name() const override { return "external '" + path_.string() + "'"; }

  std::vector<Judgement> judge(std::span<const EvalItem> items, std::span<const std::string> answers) const override {
    check_batch(items, answers, name());
    std::vector<std::string> unscored, unmatched;
    std::unordered_set<std::string> item_ids;
    for (const auto& item : items) {
      item_ids.insert(item.id);
      if (!scores_.count(item.id)) unscored.push_back(item.id);
    }
    for (const auto& id : order_)
      if (!item_ids.count(id)) unmatched.push_back(id);
    if (!unscored.empty() || !unmatched.empty()) {
      std::string what;
      if (!unscored.empty()) what += std::to_string(unscored.size()) + " answer(s) have no score: " + list_ids(unscored);
      if (!unmatched.empty())
        what += (what.empty() ? "" : "; ") + std::to_string(unmatched.size()) + " score(s) match no answer: " + list_ids(unmatched);
      throw io_error("mote: eval: scores file '" + path_.string() + "': " + what + "; expected one score per answer");
    }
    std::vector<Judgement> out;
    out.reserve(items.size());
    for (const auto& item : items) {
      const Score& s = scores_.at(item.id);
      const std::string where = io::jsonl::line_source(path_, s.line);
      const auto require = [&](const std::optional<bool>& field, const char* key) {
        if (!field)
          fail(where, "id \"" + item.id + "\" is a " + std::string(kind_name(item.kind)) + " item, so field \"" + key +
                          "\" is required; expected a boolean");
      };
      if (item.kind == ItemKind::harmful) {
        require(s.harmless, "harmless");
      } else {
        require(s.helpful, "helpful");
        require(s.refused, "refused");
      }
      out.push_back(Judgement{s.refused.value_or(false), s.harmless.value_or(true), s.helpful.value_or(false), s.help});
    }
    return out;
  }

 private:
  static constexpr std::string_view shape = "{\"id\", \"harmless\", \"helpful\", \"refused\", \"help\"}";

  struct Score {
    std::optional<bool> harmless, helpful, refused;
    std::optional<double> help;
    std::size_t line = 0;
  };

  [[noreturn]] static void fail(const std::string& where, const std::string& what) {
    throw io_error("mote: eval: scores " + where + ": " + what);
  }
  static std::optional<bool> optional_bool(const io::json::Value& record, const char* key, const std::string& where) {
    const io::json::Value* v = record.find(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_bool()) fail(where, std::string("field \"") + key + "\" is " + io::json::type_name(v->type()) + "; expected a boolean");
    return v->as_bool();
  }

  std::filesystem::path path_;
  std::unordered_map<std::string, Score> scores_;
  std::vector<std::string> order_;  // ids in file order, for messages
};

// Writes judgements in the scores format ExternalScores reads, one line per item, atomically: a
// slow judge's verdicts are kept and read back instead of judging again.
inline void write_scores(const std::filesystem::path& path, std::span<const EvalItem> items, std::span<const Judgement> judgements) {
  check_judgements(items, judgements, "write_scores '" + path.string() + "'");
  std::vector<io::json::Value> records;
  records.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Judgement& j = judgements[i];
    io::json::Value r = io::json::Value::object(
        {{"id", items[i].id}, {"harmless", j.harmless}, {"helpful", j.helpful}, {"refused", j.refused}});
    r.set("help", j.help ? io::json::Value(*j.help) : io::json::Value());
    records.push_back(std::move(r));
  }
  io::jsonl::write(path, records);
}

}  // namespace mote::eval
