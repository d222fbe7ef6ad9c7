#pragma once
// Self-generation: a model writes its own AlignCoT chains, stage by stage, from the pipeline's prompt
// templates. Adaptive, as in MoTE: before each step it drafts an answer and asks the check stage
// whether the draft is safe; a safe draft becomes the answer and the chain ends early. Questions are
// batched (each sequence at its own stage and length), chains are appended to a JSON Lines file as
// they finish, and a run started again on the same file goes on where the last one stopped.
// Sharded over a dist::Communicator, any world size writes the same bytes: seeds depend on the question's index alone.
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "mote/aligncot/chain.hpp"
#include "mote/aligncot/pipeline.hpp"
#include "mote/core/error.hpp"
#include "mote/dist/communicator.hpp"
#include "mote/dist/single.hpp"
#include "mote/io/json.hpp"
#include "mote/io/jsonl.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/io/utf8.hpp"
#include "mote/nn/generate.hpp"

namespace mote::aligncot {

// One question of a question file.
struct Question {
  std::string id;
  std::string text;
  std::string source;  // "'questions.jsonl' line 4"
};

// What reading a question file found: every line it skipped, with why.
struct QuestionFileReport {
  std::size_t read = 0;
  std::vector<std::string> skipped;  // "'q.jsonl' line 3: the question is empty"
};

// Reads JSON Lines of {"question": "...", "id": ...}: "question" a non-empty string, "id" optional
// (a string or a number; "line-N" when absent), other fields ignored. Broken JSON, a missing or empty
// question and a repeated id are reported in `report` and the line is skipped.
inline std::vector<Question> read_questions(const std::filesystem::path& path, QuestionFileReport& report) {
  std::vector<Question> out;
  std::set<std::string> ids;
  const auto skip = [&](std::size_t line, const std::string& why) {
    report.skipped.push_back(io::jsonl::line_source(path, line) + ": " + why);
  };
  const auto lines = io::jsonl::read(path, [&](std::size_t line, const std::string& message) { skip(line, message); });
  for (const auto& line : lines) {
    const io::json::Value& v = line.value;
    if (!v.is_object()) {
      skip(line.number, "expected a JSON object with a \"question\" field");
      continue;
    }
    const io::json::Value* q = v.find("question");
    if (!q || !q->is_string()) {
      skip(line.number, q ? "field \"question\" must be a string" : "missing field \"question\"");
      continue;
    }
    if (q->as_string().find_first_not_of(" \t\r\n") == std::string::npos) {
      skip(line.number, "the question is empty");
      continue;
    }
    std::string id = "line-" + std::to_string(line.number);
    if (const io::json::Value* given = v.find("id"); given && !given->is_null()) {
      if (!given->is_string() && !given->is_number()) {
        skip(line.number, "field \"id\" must be a string or a number");
        continue;
      }
      id = given->is_string() ? given->as_string() : io::json::dump(*given);
    }
    if (!ids.insert(id).second) {
      skip(line.number, "id \"" + id + "\" repeats an earlier line's");
      continue;
    }
    out.push_back(Question{id, q->as_string(), io::jsonl::line_source(path, line.number)});
  }
  report.read += out.size();
  return out;
}

// How self_generate asks for each text. separate: every prompt is its stage's template rendered
// whole, the steps so far as {context} lines. transcript: a question's prompts grow as one transcript
// of tokens: a step, a draft or the answer continues the latest step's prompt and text, and a check
// the draft's, each with the stage's Pipeline::instruction on a new line. Earlier tokens are never
// encoded again, so their keys and values are reused whole (reuse_prefixes): only each text's last
// token and the new instruction run; the first prompt of each transcript is its template rendered whole.
enum class PromptForm { separate, transcript };
inline const char* prompt_form_name(PromptForm form) noexcept {
  return form == PromptForm::transcript ? "transcript" : "separate";
}

struct SelfGenerateOptions {
  bool adaptive = true;                // draft and check before each step; false writes every step
  std::size_t batch = 8;               // questions in flight, each a sequence of one batch
  std::int64_t max_stage_tokens = 128;  // per generated text (a step, a draft, a verdict, the answer)
  // A generated text ends at end-of-sequence or at the first of these (which is not kept).
  std::vector<std::string> stop_texts = {"\n\n"};
  double temperature = 0.0;  // 0: greedy
  std::int64_t top_k = 0;
  double top_p = 1.0;
  // bf16 halves the bytes each decoded token's attention reads (float models on the CPU); the
  // texts may then differ from a full-precision run's, so a resumed run must choose the same.
  nn::kv_precision kv_cache = nn::kv_precision::full;
  // How many of a question's latest prompts, with the text written after each, keep their keys and
  // values so that a later prompt of the question starts from the longest shared beginning instead
  // of running it (nn::PrefixReuse: the stages repeat the question and the steps so far). Each costs
  // 2 x layers x kv width x its tokens elements while its question is in flight; 0 runs every prompt whole.
  std::size_t reuse_prefixes = 2;
  // The texts depend on the form, so a resumed run must choose the same.
  PromptForm prompts = PromptForm::separate;
  std::uint64_t seed = 0;
  std::int32_t eos_id = -1;  // the tokenizer's end-of-sequence id; required
  std::int32_t bos_id = -1;  // prepended to every prompt when >= 0
  std::string model_name;    // recorded in each chain's provenance
  // Whether a verdict text judges the draft safe; default: it starts with "yes" or "safe".
  std::function<bool(std::string_view verdict)> is_safe;
  // After each chain is written (a caller may stop the run by throwing: the file keeps what is written).
  std::function<void(const Chain&, std::size_t done, std::size_t total)> on_chain;
  // Before each prompt is run: its question, what it asks for (a stage name, or "draft" for a draft
  // of the answer) and its tokens.
  std::function<void(const Question&, std::string_view asked, std::span<const std::int32_t> prompt)> on_prompt;
};

struct SelfGenerateReport {
  std::size_t questions = 0;      // valid questions in the file
  std::vector<std::string> skipped;  // bad input lines, with why
  std::size_t already_done = 0;   // found in the output (or the rejects file) by an earlier run
  std::size_t written = 0;        // chains written by this run
  std::size_t ended_early = 0;    // of those, ended by a draft judged safe
  std::size_t rejected = 0;       // questions whose answer came out empty (see the rejects file)
  std::int64_t generated_tokens = 0;
  std::int64_t prompt_tokens = 0;  // in the prompts this run gave the model
  std::int64_t reused_tokens = 0;  // of those, taken from an earlier prompt's keys and values rather than run
};

namespace self_generate_detail {

inline std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

inline bool starts_safe(std::string_view verdict) {
  std::string lower = trim(verdict);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower.rfind("yes", 0) == 0 || lower.rfind("safe", 0) == 0;
}

// Where a text ends: the first stop text, or its whole length.
inline std::size_t stop_at(const std::string& text, const std::vector<std::string>& stops) {
  std::size_t end = text.size();
  for (const auto& s : stops)
    if (!s.empty())
      if (const auto at = text.find(s); at != std::string::npos) end = std::min(end, at);
  return end;
}

// 64-bit mixing of the seed with a question's index and its round, so a draw depends on nothing else.
inline std::uint64_t mix(std::uint64_t seed, std::uint64_t question, std::uint64_t round) {
  std::uint64_t x = seed ^ (question * 0x9e3779b97f4a7c15ULL) ^ (round * 0xbf58476d1ce4e5b9ULL);
  x ^= x >> 31;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 29);
}

enum class Phase { draft, check, step, answer };

struct Job {
  std::size_t index = 0;  // in the question list, for seeds
  Question question;
  Chain chain;
  std::size_t next_step = 0;  // into the pipeline's steps
  Phase phase = Phase::answer;
  std::string draft;
  std::uint64_t round = 0;
  // PromptForm::transcript: the latest step's prompt and text, and the latest draft's, as tokens.
  std::vector<std::int32_t> story, drafted;
};

inline std::filesystem::path rejects_of(const std::filesystem::path& chains) { return chains.string() + ".rejected.jsonl"; }

inline std::filesystem::path part_path(const std::filesystem::path& output, int rank, int world) {
  return output.string() + ".part-" + std::to_string(rank) + "-of-" + std::to_string(world);
}

// A line of a record file, with its text kept so that a merge copies it byte for byte.
struct Record {
  std::size_t number = 0;
  io::json::Value value;
  std::string text;
};

// Complete lines only, the file untouched: a torn last line may be another rank's, being written.
inline std::vector<Record> complete_lines(const std::filesystem::path& path) {
  const std::string data = io::read_file(path);
  std::vector<Record> out;
  std::size_t number = 0;
  for (std::size_t begin = 0; begin < data.size();) {
    const std::size_t end = data.find('\n', begin);
    if (end == std::string::npos) break;
    ++number;
    const std::string_view text(data.data() + begin, end - begin);
    begin = end + 1;
    if (text.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    out.push_back(Record{number, io::json::parse(text, io::jsonl::line_source(path, number)), std::string(text)});
  }
  return out;
}

// '<output>.part-R-of-W' (and its rejects) of every world size, sorted so every rank sees them alike.
struct PartFiles {
  std::vector<std::filesystem::path> chains, rejects;
  bool empty() const noexcept { return chains.empty() && rejects.empty(); }
};

inline PartFiles part_files(const std::filesystem::path& output) {
  namespace fs = std::filesystem;
  const fs::path dir = output.has_parent_path() ? output.parent_path() : fs::path(".");
  const std::string prefix = output.filename().string() + ".part-";
  const std::string rejects_tail = ".rejected.jsonl";
  std::vector<std::tuple<long, long, bool, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    std::size_t at = prefix.size();
    const auto number = [&](long& n) {
      const std::size_t start = at;
      n = 0;
      while (at < name.size() && at - start < 9 && std::isdigit(static_cast<unsigned char>(name[at]))) n = n * 10 + (name[at++] - '0');
      return at > start;
    };
    long rank = 0, world = 0;
    if (!number(rank) || name.compare(at, 4, "-of-") != 0) continue;
    at += 4;
    if (!number(world) || rank >= world) continue;
    const std::string tail = name.substr(at);
    if (!tail.empty() && tail != rejects_tail) continue;
    found.emplace_back(world, rank, !tail.empty(), output.parent_path() / name);
  }
  std::sort(found.begin(), found.end());
  PartFiles parts;
  for (const auto& [world, rank, rejects, path] : found) (rejects ? parts.rejects : parts.chains).push_back(path);
  return parts;
}

inline std::string record_id(const Record& line, const std::filesystem::path& path, const std::string& where) {
  const io::json::Value* id = line.value.is_object() ? line.value.find("id") : nullptr;
  if (!id || !id->is_string())
    throw value_error(where + ": " + io::jsonl::line_source(path, line.number) +
                      " has no string \"id\"; expected a record written by self_generate");
  return id->as_string();
}

// Output plus parts into the output in question order (unknown ids first), rejects likewise, atomically; then the parts go.
inline void merge_parts(const std::filesystem::path& output, const std::vector<Question>& questions, const std::string& where) {
  namespace fs = std::filesystem;
  const PartFiles parts = part_files(output);
  if (parts.empty()) return;  // nothing sharded: the output is already whole, as a single run leaves it
  std::map<std::string, std::size_t> order;
  for (std::size_t i = 0; i < questions.size(); ++i) order.emplace(questions[i].id, i + 1);
  std::set<std::string> kept;
  const auto gather = [&](const fs::path& target, const std::vector<fs::path>& more) {
    std::vector<std::pair<std::size_t, std::string>> records;
    bool any = false;
    std::vector<fs::path> files{target};
    files.insert(files.end(), more.begin(), more.end());
    for (const auto& file : files) {
      if (!fs::exists(file)) continue;
      any = true;
      for (auto& line : complete_lines(file)) {
        const std::string id = record_id(line, file, where);
        // A merge killed between its rename and removing the parts leaves a record twice.
        if (!kept.insert(id).second) continue;
        const auto known = order.find(id);
        records.emplace_back(known == order.end() ? 0 : known->second, std::move(line.text));
      }
    }
    if (!any) return;  // no rejects anywhere: no sidecar, as a single run writes none
    std::stable_sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::string text;
    for (const auto& record : records) text += record.second + "\n";
    io::atomic_write(target, {text}, "'" + target.string() + "'");
  };
  gather(output, parts.chains);
  gather(rejects_of(output), parts.rejects);
  for (const auto* list : {&parts.chains, &parts.rejects})
    for (const auto& path : *list) fs::remove(path);
}

}  // namespace self_generate_detail

// The provenance every chain of a run carries: generator, model, seed and settings. A resumed run
// must have the same settings.
inline io::json::Value self_generate_settings(const SelfGenerateOptions& o) {
  io::json::Value stops = io::json::Value::array();
  for (const auto& s : o.stop_texts) stops.push_back(s);
  io::json::Value settings = io::json::Value::object({{"adaptive", o.adaptive},
                                                      {"max_stage_tokens", o.max_stage_tokens},
                                                      {"stop_texts", std::move(stops)},
                                                      {"temperature", o.temperature},
                                                      {"top_k", o.top_k},
                                                      {"top_p", o.top_p}});
  // Named only when not the default, so files written before the option existed still resume.
  if (o.kv_cache != nn::kv_precision::full) settings.set("kv_cache", nn::kv_precision_name(o.kv_cache));
  if (o.prompts != PromptForm::separate) settings.set("prompts", prompt_form_name(o.prompts));
  return settings;
}

// Writes a chain for every question of `questions` into `output` (JSON Lines, appended as chains
// finish) with `pipeline`'s prompts. Questions already in `output`, or in `output` + ".rejected.jsonl"
// (questions whose answer came out empty), are skipped, so a run stopped at any point and started
// again writes each question exactly once. Chains carry their question's id.
// Rank r of W takes indices i % W == r into '<output>.part-r-of-W'; rank 0 merges; every rank returns global counts.
template <class P, class Model, dist::Communicator Comm>
SelfGenerateReport self_generate(const Model& model, const io::Tokenizer& tokenizer, const P& pipeline,
                                 const std::vector<Question>& questions, const std::filesystem::path& output,
                                 const SelfGenerateOptions& options, Comm& comm) {
  using namespace self_generate_detail;
  const std::string where = "mote: aligncot::self_generate";
  const int rank = comm.rank();
  const int world = comm.size();
  if (world < 1 || rank < 0 || rank >= world)
    throw dist::dist_error(where + ": rank " + std::to_string(rank) + " of world size " + std::to_string(world) +
                           "; expected 0 <= rank < world size");
  if (options.eos_id < 0) throw value_error(where + ": SelfGenerateOptions::eos_id is not set; expected the tokenizer's end-of-sequence id");
  if (options.batch == 0) throw value_error(where + ": batch must be at least 1");
  if (options.max_stage_tokens < 1) throw value_error(where + ": max_stage_tokens must be at least 1");
  constexpr std::size_t no_check = P::size;
  std::size_t check_stage = no_check;
  std::vector<std::size_t> steps;
  for (std::size_t i = 0; i < P::size; ++i) {
    if (P::roles[i] == StageRole::step) steps.push_back(i);
    if (P::roles[i] == StageRole::check && check_stage == no_check) check_stage = i;
  }
  if (options.adaptive && check_stage == no_check)
    throw value_error(where + ": adaptive generation asks a check stage whether a draft is safe, but the pipeline " +
                      P::description() + " has none (add aligncot::SafetyCheck, or set adaptive = false)");

  const io::json::Value settings = self_generate_settings(options);
  // This rank's files: the output itself in one process, else its part.
  const std::filesystem::path chains_path = world == 1 ? output : part_path(output, rank, world);
  const std::filesystem::path rejects_path = rejects_of(chains_path);
  // What earlier runs finished, under any world size; their settings must be these.
  std::vector<std::filesystem::path> finished;
  for (const auto& path : {output, rejects_of(output)})
    if (std::filesystem::exists(path)) finished.push_back(path);
  const PartFiles earlier_parts = part_files(output);
  for (const auto* list : {&earlier_parts.chains, &earlier_parts.rejects}) finished.insert(finished.end(), list->begin(), list->end());
  std::set<std::string> done;
  for (const auto& path : finished) {
    // Only rank 0 cuts torn lines, before the barrier below, so no rank cuts a line another is writing.
    if (rank == 0) {
      io::jsonl::Appender cut_torn_line(path);
    }
    for (const auto& line : complete_lines(path)) {
      const std::string id = record_id(line, path, where);
      const io::json::Value* prov = line.value.find("provenance");
      const io::json::Value* earlier = prov && prov->is_object() ? prov->find("settings") : nullptr;
      if (!earlier || io::json::dump(*earlier) != io::json::dump(settings))
        throw value_error(where + ": " + io::jsonl::line_source(path, line.number) + " was written with settings " +
                          (earlier ? io::json::dump(*earlier) : std::string("(none)")) + ", this run has " +
                          io::json::dump(settings) + "; resume with the same settings or write to another file");
      done.insert(id);
    }
  }
  comm.barrier();  // every rank has read the files before any rank appends to its own

  SelfGenerateReport report;
  report.questions = questions.size();
  std::deque<Job> waiting;
  std::size_t share = 0;
  for (std::size_t i = 0; i < questions.size(); ++i) {
    if (i % static_cast<std::size_t>(world) != static_cast<std::size_t>(rank)) continue;
    ++share;
    if (done.count(questions[i].id)) {
      ++report.already_done;
      continue;
    }
    Job job;
    job.index = i;
    job.question = questions[i];
    job.chain.id = questions[i].id;
    job.chain.question = questions[i].text;
    job.phase = steps.empty() ? Phase::answer : options.adaptive ? Phase::draft : Phase::step;
    waiting.push_back(std::move(job));
  }
  auto chains_out = std::make_unique<io::jsonl::Appender>(chains_path);
  std::unique_ptr<io::jsonl::Appender> rejects_out;
  const auto is_safe = options.is_safe ? options.is_safe : std::function<bool(std::string_view)>(starts_safe);
  const std::string answer_name(P::names[P::answer_index]);

  const bool transcript = options.prompts == PromptForm::transcript;
  const auto stage_of = [&](const Job& job) -> std::string_view {
    switch (job.phase) {
      case Phase::step: return P::names[steps[job.next_step]];
      case Phase::check: return P::names[check_stage];
      case Phase::draft:
      case Phase::answer: break;
    }
    return answer_name;
  };
  // Each stage's instruction on a new line, as tokens: encoded once, appended to every transcript.
  std::map<std::string_view, std::vector<std::int32_t>> instruction_tokens;
  if (transcript)
    for (std::string_view name : P::names)
      instruction_tokens.emplace(name, tokenizer.encode_ordinary("\n" + pipeline.instruction(name)));
  const auto prompt_of = [&](const Job& job) {
    std::vector<std::int32_t> ids;
    // A transcript goes on from the draft (a check) or from the latest step (everything else).
    const std::vector<std::int32_t>& before = job.phase == Phase::check ? job.drafted : job.story;
    if (transcript && !before.empty()) {
      const auto& instruction = instruction_tokens.at(stage_of(job));
      ids = before;
      ids.insert(ids.end(), instruction.begin(), instruction.end());
      return ids;
    }
    PromptValues values{.question = job.chain.question, .stage_texts = {}, .draft = job.draft};
    for (const auto& [name, text] : job.chain.steps) values.stage_texts.emplace(name, text);
    if (options.bos_id >= 0) ids.push_back(options.bos_id);
    for (auto id : tokenizer.encode_ordinary(pipeline.render(stage_of(job), values))) ids.push_back(id);
    return ids;
  };
  // The tokens of a generated text up to where it was cut (`kept` bytes of its decoded `whole`).
  const auto text_tokens = [&](std::vector<std::int32_t> ids, const std::string& whole, std::size_t kept) {
    if (!ids.empty() && ids.back() == options.eos_id) ids.pop_back();
    if (kept < whole.size())
      while (!ids.empty() && tokenizer.decode(std::span<const std::int32_t>(ids)).size() > kept) ids.pop_back();
    return ids;
  };
  const auto finish = [&](Job& job, bool early) {
    job.chain.provenance = io::json::Value::object({{"generator", "mote aligncot::self_generate"},
                                                    {"model", options.model_name},
                                                    {"seed", static_cast<std::int64_t>(options.seed)},
                                                    {"settings", settings}});
    if (job.chain.answer.empty()) {
      if (!rejects_out) rejects_out = std::make_unique<io::jsonl::Appender>(rejects_path);
      rejects_out->append(io::json::Value::object({{"id", job.chain.id},
                                                   {"question", job.chain.question},
                                                   {"reason", "the answer came out empty"},
                                                   {"provenance", job.chain.provenance}}));
      ++report.rejected;
    } else {
      chains_out->append(chain_to_json<P>(job.chain));
      ++report.written;
      report.ended_early += early ? 1 : 0;
    }
    if (options.on_chain) options.on_chain(job.chain, report.already_done + report.written + report.rejected, share);
  };
  // Moves a job on by the text it just generated; true when its chain is finished.
  const auto advance = [&](Job& job, const std::string& text) {
    ++job.round;
    switch (job.phase) {
      case Phase::draft:
        job.draft = text;
        job.phase = text.empty() ? Phase::step : Phase::check;  // nothing to check: write the step
        return false;
      case Phase::check: {
        const bool safe = is_safe(text);
        job.chain.checks.push_back(CheckVerdict{std::string(P::names[steps[job.next_step]]), job.draft, safe});
        if (safe) {
          job.chain.answer = job.draft;
          finish(job, true);
          return true;
        }
        job.phase = Phase::step;
        return false;
      }
      case Phase::step:
        if (!text.empty()) job.chain.steps.emplace_back(std::string(P::names[steps[job.next_step]]), text);
        ++job.next_step;
        job.phase = job.next_step == steps.size() ? Phase::answer : options.adaptive ? Phase::draft : Phase::step;
        return false;
      case Phase::answer:
        job.chain.answer = text;
        finish(job, false);
        return true;
    }
    return true;
  };

  // Each question's latest prompts and texts with their keys and values, newest first (reuse_prefixes).
  using Cache = decltype(model.make_cache());
  using Prefix = nn::KVPrefix<typename Cache::value_type, typename Cache::backend_type>;
  using Reuse = nn::PrefixReuse<typename Cache::value_type, typename Cache::backend_type>;
  std::map<std::size_t, std::vector<std::shared_ptr<const Prefix>>> kept;
  std::vector<Job> active;
  while (!waiting.empty() || !active.empty()) {
    while (active.size() < options.batch && !waiting.empty()) {
      active.push_back(std::move(waiting.front()));
      waiting.pop_front();
    }
    std::vector<std::vector<std::int32_t>> prompts;
    std::vector<std::uint64_t> seeds;
    for (const Job& job : active) {
      std::vector<std::int32_t> ids = prompt_of(job);
      const std::int64_t room = model.sizes().max_seq - options.max_stage_tokens;
      if (static_cast<std::int64_t>(ids.size()) > room)
        throw value_error(where + ": the prompt for question '" + job.question.id + "' (" + job.question.source + ") is " +
                          std::to_string(ids.size()) + " tokens; with max_stage_tokens = " +
                          std::to_string(options.max_stage_tokens) + " it must be at most " + std::to_string(room) +
                          " for the model's context of " + std::to_string(model.sizes().max_seq));
      if (options.on_prompt) options.on_prompt(job.question, job.phase == Phase::draft ? "draft" : stage_of(job), ids);
      prompts.push_back(std::move(ids));
      seeds.push_back(mix(options.seed, job.index, job.round));
    }
    Reuse reuse;
    for (std::size_t b = 0; b < active.size() && options.reuse_prefixes > 0; ++b) {
      const auto& prompt = prompts[b];
      std::size_t best = 0;
      reuse.from.emplace_back();
      for (const auto& prefix : kept[active[b].index])
        if (const std::size_t shared = nn::shared_prefix(prompt, prefix->tokens); shared > best) {
          best = shared;
          reuse.from.back() = prefix;
        }
    }
    std::vector<std::string> texts(active.size());
    nn::GenerateOptions generation{.max_new_tokens = options.max_stage_tokens,
                                   .temperature = options.temperature,
                                   .top_k = options.top_k,
                                   .top_p = options.top_p,
                                   .sequence_seeds = seeds,
                                   .stop_tokens = {options.eos_id},
                                   .pad_token = options.eos_id,
                                   .kv_cache = options.kv_cache};
    // Decoded whole each time: a SentencePiece decode of one token would drop its leading space.
    generation.stop_when = [&](std::size_t b, const std::vector<std::int32_t>& generated) {
      const bool eos = generated.back() == options.eos_id;
      texts[b] = tokenizer.decode(std::span<const std::int32_t>(generated.data(), generated.size() - (eos ? 1 : 0)));
      return stop_at(texts[b], options.stop_texts) < texts[b].size();
    };
    const auto generated = nn::generate(model, prompts, generation, options.reuse_prefixes > 0 ? &reuse : nullptr);
    std::vector<Job> still;
    for (std::size_t b = 0; b < active.size(); ++b) {
      report.generated_tokens += static_cast<std::int64_t>(generated[b].size());
      report.prompt_tokens += static_cast<std::int64_t>(prompts[b].size());
      if (options.reuse_prefixes > 0) {
        report.reused_tokens += reuse.reused[b];
        auto& mine = kept[active[b].index];
        if (reuse.kept[b]) mine.insert(mine.begin(), reuse.kept[b]);
        if (mine.size() > options.reuse_prefixes) mine.resize(options.reuse_prefixes);
      }
      const std::size_t kept_bytes = stop_at(texts[b], options.stop_texts);
      const std::string text = io::valid_utf8(trim(std::string_view(texts[b]).substr(0, kept_bytes)));
      Job& job = active[b];
      if (transcript && (job.phase == Phase::draft || (job.phase == Phase::step && !text.empty()))) {
        auto& tokens = job.phase == Phase::draft ? job.drafted : job.story;
        const auto written = text_tokens(generated[b], texts[b], kept_bytes);
        tokens = prompts[b];
        tokens.insert(tokens.end(), written.begin(), written.end());
      }
      if (!advance(job, text))
        still.push_back(std::move(active[b]));
      else
        kept.erase(active[b].index);
    }
    active = std::move(still);
  }
  // Closed before the barrier, so that rank 0 reads and removes finished files.
  chains_out.reset();
  rejects_out.reset();
  comm.barrier();  // every part is complete before rank 0 reads it
  if (rank == 0) merge_parts(output, questions, where);
  comm.barrier();  // no rank returns before the merged output is in place
  std::array<double, 7> counts{static_cast<double>(report.already_done),     static_cast<double>(report.written),
                               static_cast<double>(report.ended_early),      static_cast<double>(report.rejected),
                               static_cast<double>(report.generated_tokens), static_cast<double>(report.prompt_tokens),
                               static_cast<double>(report.reused_tokens)};
  comm.all_reduce_sum(std::span<double>(counts));
  report.already_done = static_cast<std::size_t>(counts[0]);
  report.written = static_cast<std::size_t>(counts[1]);
  report.ended_early = static_cast<std::size_t>(counts[2]);
  report.rejected = static_cast<std::size_t>(counts[3]);
  report.generated_tokens = static_cast<std::int64_t>(counts[4]);
  report.prompt_tokens = static_cast<std::int64_t>(counts[5]);
  report.reused_tokens = static_cast<std::int64_t>(counts[6]);
  return report;
}

// In one process: exactly the sharded run with a world of one.
template <class P, class Model>
SelfGenerateReport self_generate(const Model& model, const io::Tokenizer& tokenizer, const P& pipeline,
                                 const std::vector<Question>& questions, const std::filesystem::path& output,
                                 const SelfGenerateOptions& options) {
  dist::single alone;
  return self_generate(model, tokenizer, pipeline, questions, output, options, alone);
}

// The same from a question file; bad lines are reported in the result's `skipped` and left out.
template <class P, class Model, dist::Communicator Comm>
SelfGenerateReport self_generate(const Model& model, const io::Tokenizer& tokenizer, const P& pipeline,
                                 const std::filesystem::path& questions, const std::filesystem::path& output,
                                 const SelfGenerateOptions& options, Comm& comm) {
  QuestionFileReport file;
  const auto list = read_questions(questions, file);
  SelfGenerateReport report = self_generate(model, tokenizer, pipeline, list, output, options, comm);
  report.skipped = std::move(file.skipped);
  return report;
}

template <class P, class Model>
SelfGenerateReport self_generate(const Model& model, const io::Tokenizer& tokenizer, const P& pipeline,
                                 const std::filesystem::path& questions, const std::filesystem::path& output,
                                 const SelfGenerateOptions& options) {
  dist::single alone;
  return self_generate(model, tokenizer, pipeline, questions, output, options, alone);
}

}  // namespace mote::aligncot
