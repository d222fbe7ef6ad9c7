// mote-ablation: the paper's ablation table and baselines on the shipped world, from one command.
//
//   1. loads the shipped base model and the questions;
//   2. the base model writes its AlignCoT chains for the train questions (as mote-demo does), and
//      its critiqued and revised plain answers for the Critique-Revise baseline;
//   3. trains the learned judge: a score head on the base model, on the world's labeled answers;
//   4. every row (ablation.hpp) at every seed: fresh experts on the base model, trained on the row's
//      data at the one setting, answering the test questions through the pipeline;
//   5. judges every answer (the base model's plain ones too) with the rule judge and the learned
//      judge, and writes the table (mean, standard deviation and range over the seeds) and the
//      judges' agreement.
//
// Every stage and every run resumes: run the same command again after a stop. --quick runs two rows
// at one seed on a few questions.
#include <CLI/CLI.hpp>
#include <mote/mote.hpp>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "ablation.hpp"
#include "loop.hpp"
#include "world.hpp"

#ifndef MOTE_WORLD_DIR
#define MOTE_WORLD_DIR "examples/world"
#endif

namespace {

using namespace mote;
namespace ac = mote::aligncot;
namespace fs = std::filesystem;
namespace json = mote::io::json;
namespace loop = mote_world::loop;
namespace ablation = mote_world::ablation;
using loop::Clock;
using loop::Model;
using loop::seconds_since;
using mote_world::Pipeline;
using Classifier = eval::SequenceClassifier<Model>;

struct Args {
  fs::path world = MOTE_WORLD_DIR;
  fs::path out = "mote-ablation";
  bool quick = false;
  std::size_t seeds = 3;
  std::vector<std::string> rows;  // empty: every row (quick: single_lora and mote)
  std::size_t generation_batch = 16;
};

// Everything the runs share: the base model, its tokenizer, the questions and the judges.
struct World {
  fs::path base_dir;
  Model base;
  io::Tokenizer tok;
  std::int32_t eos = -1;
  std::vector<eval::EvalItem> train_items, test_items;
  ablation::Setting setting;
};

World load_world(const Args& a) {
  ablation::Setting setting;
  if (a.quick) {
    setting.train_questions = 24;
    setting.epochs = 1;
  }
  const fs::path base_dir = a.world / "base";
  io::check_sha256sums(base_dir / "SHA256SUMS");
  io::Tokenizer tok = io::Tokenizer::from_dir(base_dir);
  const std::int32_t eos = loop::end_of_sequence(tok, base_dir);
  return World{base_dir,
               nn::load<Model>(base_dir),
               std::move(tok),
               eos,
               loop::take(eval::read_items(a.world / "data" / "train.jsonl"), setting.train_questions),
               loop::take(eval::read_items(a.world / "data" / "test.jsonl"), a.quick ? 24 : 0),
               setting};
}

// ---- the data every row trains on -----------------------------------------------------------

std::vector<ac::Chain> self_generated_chains(const World& w, const fs::path& file, std::size_t batch) {
  std::vector<ac::Question> questions;
  for (const auto& i : w.train_items) questions.push_back(ac::Question{i.id, i.question, "train.jsonl"});
  ac::SelfGenerateOptions gen;
  gen.batch = batch;
  gen.max_stage_tokens = 72;
  gen.eos_id = w.eos;
  gen.model_name = "mote world base";
  gen.on_chain = [](const ac::Chain& chain, std::size_t done, std::size_t total) { loop::show_progress(done, total, chain.id); };
  const auto report = ac::self_generate<Pipeline>(w.base, w.tok, Pipeline{}, questions, file, gen);
  std::cout << "  " << report.already_done << " chains from an earlier run, " << report.written << " written\n";
  return ac::read_chains<Pipeline>(file);
}

// The chains' safe answers alone: what SFT trains on.
std::vector<ac::Chain> safe_answers(std::vector<ac::Chain> chains) {
  for (auto& c : chains) c.steps.clear();
  return chains;
}

bool judged_safe(std::string_view verdict) {
  const auto b = verdict.find_first_not_of(" \t\n");
  return b != std::string_view::npos && (verdict.substr(b, 3) == "yes" || verdict.substr(b, 3) == "Yes");
}

// Critique-Revise: the base model answers plainly, checks its answer, and rewrites the answers it
// judged unsafe with its critique in front of it; the final answers become answer-only chains.
std::vector<ac::Chain> critique_revise_chains(const World& w, const fs::path& file, std::size_t batch) {
  if (fs::exists(file)) return ac::read_chains<Pipeline>(file);
  const Pipeline pipeline;
  const auto questions = loop::questions_of(w.train_items);
  const auto drafts = loop::plain_answers(w.base, w.tok, w.eos, questions, batch);
  std::vector<std::string> critique_prompts;
  for (std::size_t i = 0; i < questions.size(); ++i) critique_prompts.push_back(mote_world::critique_prompt(pipeline, questions[i], drafts[i]));
  const auto critiques = loop::complete(w.base, w.tok, w.eos, critique_prompts, batch, 24, "critiqued");
  std::vector<std::size_t> to_revise;
  std::vector<std::string> revision_prompts;
  for (std::size_t i = 0; i < questions.size(); ++i)
    if (!judged_safe(critiques[i])) {
      to_revise.push_back(i);
      revision_prompts.push_back(mote_world::revision_prompt(pipeline, questions[i], critiques[i]));
    }
  const auto revisions = loop::complete(w.base, w.tok, w.eos, revision_prompts, batch, 96, "revised");
  std::vector<std::string> finals = drafts;
  for (std::size_t k = 0; k < to_revise.size(); ++k) finals[to_revise[k]] = revisions[k];
  std::vector<ac::Chain> chains;
  for (std::size_t i = 0; i < questions.size(); ++i) {
    if (finals[i].empty()) continue;  // nothing to learn from
    ac::Chain c;
    c.id = w.train_items[i].id;
    c.question = questions[i];
    c.answer = finals[i];
    c.provenance = json::Value::object({{"method", "critique-revise"}, {"draft", drafts[i]}, {"critique", critiques[i]}});
    chains.push_back(std::move(c));
  }
  ac::write_chains<Pipeline>(file, chains);
  std::cout << "  " << to_revise.size() << " of " << questions.size() << " plain answers judged unsafe and revised\n";
  return chains;
}

// ---- the learned judge ------------------------------------------------------------------------

std::vector<eval::ClassificationExample> labeled(const World& w, const std::vector<mote_world::LabeledAnswer>& answers) {
  std::vector<eval::ClassificationExample> out;
  for (const auto& a : answers)
    out.push_back({w.tok.encode_ordinary(mote_world::judge_text(a.question, a.answer)), static_cast<std::int32_t>(a.label)});
  return out;
}

eval::ClassifierJudge<Classifier> judge_of(const Classifier& head, const io::Tokenizer& tok) {
  return eval::ClassifierJudge<Classifier>(
      head, tok, [](const eval::EvalItem& item, const std::string& answer) { return mote_world::judge_text(item.question, answer); },
      [](const eval::EvalItem& item, std::span<const double> p) { return mote_world::judge_verdict(item.kind, p); }, 32, "learned");
}

// How the head labels answers whose label is known: counts[true label][predicted label].
struct Confusion {
  std::vector<std::vector<std::size_t>> counts;
  double accuracy_pct() const {
    std::size_t right = 0, total = 0;
    for (std::size_t t = 0; t < counts.size(); ++t)
      for (std::size_t p = 0; p < counts[t].size(); ++p) {
        total += counts[t][p];
        if (t == p) right += counts[t][p];
      }
    return total ? 100.0 * static_cast<double>(right) / static_cast<double>(total) : 0.0;
  }
  json::Value to_json() const {
    json::Value out = json::Value::object({{"accuracy_pct", accuracy_pct()}});
    const auto& names = mote_world::answer_label_names();
    for (std::size_t t = 0; t < counts.size(); ++t) {
      json::Value row = json::Value::object();
      for (std::size_t p = 0; p < counts[t].size(); ++p) row.set(names[p], static_cast<std::int64_t>(counts[t][p]));
      out.set(names[t], std::move(row));
    }
    return out;
  }
};

Confusion confusion(const Classifier& head, const io::Tokenizer& tok, const std::vector<mote_world::LabeledAnswer>& answers) {
  std::vector<eval::EvalItem> items;
  std::vector<std::string> texts;
  for (std::size_t i = 0; i < answers.size(); ++i) {
    items.push_back(eval::EvalItem{"labeled-" + std::to_string(i), answers[i].question, eval::ItemKind::benign, "", {}});
    texts.push_back(answers[i].answer);
  }
  std::vector<std::size_t> predicted;
  const eval::ClassifierJudge<Classifier> reader(
      head, tok, [](const eval::EvalItem& item, const std::string& answer) { return mote_world::judge_text(item.question, answer); },
      [&predicted](const eval::EvalItem&, std::span<const double> p) {
        predicted.push_back(static_cast<std::size_t>(std::max_element(p.begin(), p.end()) - p.begin()));
        return eval::Judgement{};
      },
      32, "labels");
  reader.judge(items, texts);
  const std::size_t labels = mote_world::answer_label_names().size();
  Confusion c{std::vector<std::vector<std::size_t>>(labels, std::vector<std::size_t>(labels, 0))};
  for (std::size_t i = 0; i < answers.size(); ++i) ++c.counts[static_cast<std::size_t>(answers[i].label)][predicted[i]];
  return c;
}

// Trains the score head on the labeled answers to the train questions (or loads it), and reports its
// accuracy on labeled answers to the held-out test questions.
struct LearnedJudge {
  Classifier head;
  Confusion held_out;  // on labeled answers to the test questions
};

LearnedJudge learned_judge(const World& w, const fs::path& dir, bool quick, std::uint64_t seed) {
  const fs::path saved = dir / "classifier";
  const mote_world::Splits splits = mote_world::make_splits();
  if (!fs::exists(saved / "config.json")) {
    Classifier head(nn::load<Model>(w.base_dir), static_cast<std::int64_t>(mote_world::answer_label_names().size()), w.eos, seed,
                    mote_world::answer_label_names());
    std::vector<mote_world::Question> train_questions = splits.train;
    if (quick) train_questions.resize(64);
    const eval::ClassificationData<float> data(labeled(w, mote_world::judge_examples(train_questions, splits.tasks, seed)),
                                               head.data_options());
    train::WholeModel<Classifier> whole(head);
    train::TrainerOptions o;
    o.epochs = 1;
    o.max_steps = quick ? 8 : 0;
    o.batch_size = 16;
    o.lr = 5e-4;
    o.warmup_steps = 10;
    o.seed = seed;
    o.output_dir = dir / "run";
    o.resume = true;
    o.checkpoint_every = 100;
    o.log_every = 50;
    train::Trainer trainer(head, whole, o);
    const auto fit = trainer.fit(data);
    if (fit.interrupted) throw std::runtime_error("stopped while training the judge; run the same command again to continue");
    head.save(saved);
  }
  Classifier head = eval::load_classifier<Model>(saved);
  auto held_out = mote_world::judge_examples(splits.test, splits.tasks, seed + 1);
  if (quick) held_out.resize(64);
  Confusion c = confusion(head, w.tok, held_out);
  std::cout << "  labeled answers to the held-out test questions: " << std::fixed << std::setprecision(1) << c.accuracy_pct()
            << "% labeled right (" << held_out.size() << " answers); true label -> labels given:\n";
  const auto& names = mote_world::answer_label_names();
  for (std::size_t t = 0; t < names.size(); ++t) {
    std::cout << "    " << names[t] << " ->";
    for (std::size_t p = 0; p < names.size(); ++p) std::cout << " " << names[p] << " " << c.counts[t][p];
    std::cout << "\n";
  }
  return LearnedJudge{std::move(head), std::move(c)};
}

// ---- one run ------------------------------------------------------------------------------------

json::Value judgement_json(const eval::Judgement& j) {
  json::Value v = json::Value::object({{"harmless", j.harmless}, {"refused", j.refused}, {"helpful", j.helpful}});
  if (j.help) v.set("help", *j.help);
  return v;
}

// The answers a run wrote, in test-question order (the file that loop::write_answers wrote).
std::vector<std::string> read_answers(const fs::path& file, std::size_t expected) {
  std::vector<std::string> answers;
  for (const auto& line : io::jsonl::read(file)) answers.push_back(line.value.at("answer").as_string());
  if (answers.size() != expected)
    throw io_error("'" + file.string() + "' holds " + std::to_string(answers.size()) + " answers, expected " + std::to_string(expected) +
                   "; delete its run folder to run it again");
  return answers;
}

struct RunRecord {
  std::string key, title;
  std::uint64_t seed = 0;
  double train_s = 0;
  std::int64_t steps = 0;
  std::vector<std::string> answers;  // to the test questions, in order
};

template <class RowType>
RunRecord run_row(const World& w, const std::vector<ac::Chain>& chains, std::uint64_t seed,
                  const fs::path& dir) {
  RunRecord record{std::string(RowType::key), std::string(RowType::title), seed};
  const fs::path done = dir / "run.json";
  if (fs::exists(done)) {  // finished by an earlier run
    const json::Value v = json::parse_file(done);
    record.train_s = v.at("train_s").as_double();
    record.steps = v.at("steps").as_int64();
    record.answers = read_answers(dir / "answers.jsonl", w.test_items.size());
    return record;
  }
  io::Tokenizer tok = w.tok;  // each run registers the stage tokens in its own copy
  Model model = ac::add_stage_tokens<Pipeline>(w.base, tok);
  const ac::StageTokenIds stages = ac::stage_token_ids<Pipeline>(tok);
  auto experts = ac::attach<typename RowType::router>(model, Pipeline{}, stages, ablation::expert_options<RowType>(w.setting, seed));
  const ac::RowFormat format{.eos_id = w.eos};
  const std::int64_t context = model.sizes().max_seq;
  const double p_skip = RowType::step_skip ? w.setting.p_skip : 0.0;
  const ac::ChainDataset<Pipeline> data(tok, stages, chains, format, context, {.p_skip = p_skip, .seed = seed, .row_length = context});
  train::TrainerOptions o;
  o.epochs = w.setting.epochs;
  o.batch_size = w.setting.batch;
  o.lr = w.setting.lr;
  o.warmup_steps = 10;
  o.seed = seed;
  o.output_dir = dir / "run";
  o.resume = true;
  o.checkpoint_every = 50;
  o.progress = train::Progress::off;
  train::Trainer trainer(model, experts, o);
  const train::FitResult fit = trainer.fit(data);
  if (fit.interrupted) throw std::runtime_error("stopped at step " + std::to_string(fit.step) + "; run the same command again to continue");
  record.train_s = fit.timing.total_s;
  record.steps = fit.step;
  const auto replies = loop::pipeline_answers(model, experts, tok, stages, format, loop::questions_of(w.test_items), 16, false);
  for (const auto& r : replies) record.answers.push_back(r.answer);
  const auto rule = eval::run_judge(eval::RuleJudge(mote_world::judge_rules()), w.test_items, record.answers);
  loop::write_answers(dir / "answers.jsonl", w.test_items, record.answers, rule, &replies);
  io::json::write_file(done, json::Value::object({{"row", record.key}, {"seed", static_cast<std::int64_t>(seed)},
                                                   {"train_s", record.train_s}, {"steps", record.steps},
                                                   {"last_loss", fit.last_loss}}));
  return record;
}

// ---- the table ------------------------------------------------------------------------------------

struct Column {
  const char* name;
  eval::Interval eval::Summary::*metric;
  int decimals;
};
constexpr Column columns[] = {{"harmless %", &eval::Summary::harmless_rate_pct, 1},
                              {"helpful %", &eval::Summary::helpfulness_pct, 1},
                              {"Help", &eval::Summary::help, 2},
                              {"Harm-Help", &eval::Summary::harm_help, 2},
                              {"over-refusal %", &eval::Summary::over_refusal_pct, 1}};

std::string format_spread(const ablation::Spread& s, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << s.mean;
  if (s.n > 1) out << " ± " << s.sd;
  return out.str();
}

struct TableRow {
  std::string key, title;
  std::vector<eval::Summary> rule, learned;  // one per seed
  std::vector<double> train_s;
};

json::Value spread_json(const ablation::Spread& s) {
  return json::Value::object({{"mean", s.mean}, {"sd", s.sd}, {"min", s.low}, {"max", s.high}, {"n", static_cast<std::int64_t>(s.n)}});
}

// The markdown table of one judge's figures, and the same figures as JSON.
std::string markdown(const std::vector<TableRow>& rows, bool learned, json::Value& results) {
  std::ostringstream md;
  md << "| row | seeds |";
  for (const auto& c : columns) md << " " << c.name << " |";
  md << " train s |\n|---|---|";
  for (std::size_t i = 0; i < std::size(columns); ++i) md << "---|";
  md << "---|\n";
  for (const auto& r : rows) {
    const auto& summaries = learned ? r.learned : r.rule;
    md << "| " << r.title << " | " << summaries.size() << " |";
    json::Value figures = json::Value::object();
    for (const auto& c : columns) {
      std::vector<double> xs;
      for (const auto& s : summaries) xs.push_back((s.*c.metric).value);
      const auto sp = ablation::spread(xs);
      md << " " << format_spread(sp, c.decimals) << " |";
      figures.set(c.name, spread_json(sp));
    }
    const auto t = ablation::spread(r.train_s);
    md << " " << format_spread(t, 0) << " |\n";
    figures.set("train_s", spread_json(t));
    json::Value row = results.find(r.key) ? *results.find(r.key) : json::Value::object({{"title", r.title}});
    row.set(learned ? "learned" : "rule", std::move(figures));
    results.set(r.key, std::move(row));
  }
  return md.str();
}

std::string agreement_lines(const eval::Agreement& a) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1);
  for (const auto& v : a.verdicts)
    out << "- " << v.name << ": " << v.percent.value << "% [" << v.percent.low << ", " << v.percent.high << "] of " << v.percent.n
        << " answers, Cohen's kappa " << std::setprecision(2) << v.kappa << std::setprecision(1) << "\n";
  out << "- all verdicts: " << a.overall.value << "% [" << a.overall.low << ", " << a.overall.high << "] of " << a.overall.n << "\n";
  return out.str();
}

// The keys of every row, in table order.
std::vector<std::string> row_keys() {
  return std::apply([](auto... rows) { return std::vector<std::string>{std::string(decltype(rows)::key)...}; }, ablation::Rows{});
}

int run(const Args& a) {
  const auto start = Clock::now();
  std::cout << "[1/5] loading the shipped base model and the questions\n";
  const World w = load_world(a);
  const fs::path work = a.out / "work";
  fs::create_directories(work);

  std::cout << "[2/5] the base model writes its chains, and its critiqued and revised answers\n";
  const auto chains = self_generated_chains(w, work / "chains.jsonl", a.generation_batch);
  const auto sft_data = safe_answers(chains);
  const auto critique_revise = critique_revise_chains(w, work / "critique_revise.jsonl", a.generation_batch);

  std::cout << "[3/5] the learned judge: a score head on the base model, trained on the world's labeled answers\n";
  const LearnedJudge judge = learned_judge(w, work / "judge", a.quick, 2405);
  const auto learned = judge_of(judge.head, w.tok);

  const fs::path base_answers_file = work / "answers_base.jsonl";
  RunRecord base_record{"base", "base model (asked plainly)", 0, 0, 0, {}};
  if (fs::exists(base_answers_file)) {
    base_record.answers = read_answers(base_answers_file, w.test_items.size());
  } else {
    base_record.answers = loop::plain_answers(w.base, w.tok, w.eos, loop::questions_of(w.test_items), a.generation_batch);
    const auto rule = eval::run_judge(eval::RuleJudge(mote_world::judge_rules()), w.test_items, base_record.answers);
    loop::write_answers(base_answers_file, w.test_items, base_record.answers, rule, nullptr);
  }

  const std::vector<std::string> chosen = a.rows.empty() ? (a.quick ? std::vector<std::string>{"single_lora", "mote"} : row_keys()) : a.rows;
  const std::size_t row_count = chosen.size(), total = row_count * a.seeds;
  std::cout << "[4/5] " << row_count << " rows x " << a.seeds << " seeds = " << total << " runs, each: train, answer, judge\n";
  std::vector<RunRecord> records;
  std::size_t index = 0;
  for (std::uint64_t seed = 0; seed < a.seeds; ++seed) {
    const auto one = [&]<class RowType>(RowType) {
      if (std::find(chosen.begin(), chosen.end(), RowType::key) == chosen.end()) return;
      const auto t = Clock::now();
      const auto& data = RowType::data == ablation::Data::chains          ? chains
                         : RowType::data == ablation::Data::safe_answers ? sft_data
                                                                          : critique_revise;
      std::cout << "  [run " << ++index << "/" << total << "] " << RowType::title << ", seed " << seed << ": " << std::flush;
      RunRecord r = run_row<RowType>(w, data, seed, a.out / "runs" / std::string(RowType::key) / ("seed-" + std::to_string(seed)));
      const auto s = eval::summarize(w.test_items, eval::run_judge(eval::RuleJudge(mote_world::judge_rules()), w.test_items, r.answers),
                                     {.seed = seed});
      std::cout << std::fixed << std::setprecision(1) << "harmless " << s.harmless_rate_pct.value << "%, helpful " << s.helpfulness_pct.value
                << "%, over-refusal " << s.over_refusal_pct.value << "% (train " << std::setprecision(0) << r.train_s << " s, "
                << seconds_since(t) << " s in all)" << std::endl;
      records.push_back(std::move(r));
    };
    std::apply([&](auto... rows) { (one(rows), ...); }, ablation::Rows{});
  }

  std::cout << "[5/5] the table\n";
  // Every answer is judged here, by both judges, so that a retrained judge rescores every run.
  const eval::RuleJudge rule(mote_world::judge_rules());
  std::vector<TableRow> rows;
  std::vector<eval::Judgement> all_rule, all_learned;
  std::vector<eval::EvalItem> all_items;
  std::vector<json::Value> verdicts;  // every answer with both judges' verdicts, for reading disagreements
  records.insert(records.begin(), base_record);
  for (const auto& r : records) {
    auto it = std::find_if(rows.begin(), rows.end(), [&](const TableRow& t) { return t.key == r.key; });
    if (it == rows.end()) {
      rows.push_back(TableRow{r.key, r.title, {}, {}, {}});
      it = rows.end() - 1;
    }
    const auto by_rule = eval::run_judge(rule, w.test_items, r.answers), by_learned = eval::run_judge(learned, w.test_items, r.answers);
    it->rule.push_back(eval::summarize(w.test_items, by_rule, {.seed = r.seed}));
    it->learned.push_back(eval::summarize(w.test_items, by_learned, {.seed = r.seed}));
    it->train_s.push_back(r.train_s);
    all_rule.insert(all_rule.end(), by_rule.begin(), by_rule.end());
    all_learned.insert(all_learned.end(), by_learned.begin(), by_learned.end());
    all_items.insert(all_items.end(), w.test_items.begin(), w.test_items.end());
    for (std::size_t i = 0; i < r.answers.size(); ++i)
      verdicts.push_back(json::Value::object({{"row", r.key},
                                              {"seed", static_cast<std::int64_t>(r.seed)},
                                              {"id", w.test_items[i].id},
                                              {"kind", std::string(eval::kind_name(w.test_items[i].kind))},
                                              {"question", w.test_items[i].question},
                                              {"answer", r.answers[i]},
                                              {"rule", judgement_json(by_rule[i])},
                                              {"learned", judgement_json(by_learned[i])}}));
  }
  io::jsonl::write(a.out / "judgements.jsonl", verdicts);
  json::Value results = json::Value::object();
  const std::string rule_md = markdown(rows, false, results), learned_md = markdown(rows, true, results);
  const eval::Agreement agreement = eval::agreement(all_items, all_rule, all_learned);
  std::ostringstream md;
  md << "## Rule judge\n\n" << rule_md << "\n## Learned judge\n\n" << learned_md << "\n## Agreement of the two judges\n\n"
     << agreement_lines(agreement);
  md << "\nMean ± sample standard deviation over the seeds; " << w.test_items.size() << " test questions, "
     << w.train_items.size() << " train questions, " << w.setting.epochs << " epochs, rank " << w.setting.rank << ".\n";
  io::atomic_write(a.out / "table.md", {md.str()}, "'" + (a.out / "table.md").string() + "'");
  json::Value doc = json::Value::object({{"format", "mote-ablation"},
                                          {"quick", a.quick},
                                          {"seeds", static_cast<std::int64_t>(a.seeds)},
                                          {"rows", std::move(results)},
                                          {"agreement", eval::to_json(agreement)},
                                          {"judge_held_out", judge.held_out.to_json()},
                                          {"seconds", seconds_since(start)}});
  io::json::write_file(a.out / "results.json", doc);
  std::cout << "\n" << md.str() << "\ntable: " << (a.out / "table.md").string() << " (and results.json); " << std::setprecision(0)
            << seconds_since(start) << " s\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mote-ablation: the paper's ablation table and baselines on the shipped world, scored by the rule judge and a learned judge"};
  Args a;
  app.add_option("--world", a.world, "the shipped world's directory (base/ and data/)");
  app.add_option("--out", a.out, "where the runs, the table and results.json go (a second run resumes)");
  app.add_flag("--quick", a.quick, "two rows, one seed, 24 train and 24 test questions, one epoch");
  app.add_option("--seeds", a.seeds, "seeds per row (quick: 1)")->check(CLI::PositiveNumber);
  app.add_option("--rows", a.rows, "the rows to run, by key (default: all; quick: single_lora,mote)")
      ->delimiter(',')
      ->check(CLI::IsMember(row_keys()));
  CLI11_PARSE(app, argc, argv);
  try {
    if (a.quick) a.seeds = 1;
    return run(a);
  } catch (const std::exception& e) {
    std::cerr << "mote-ablation: " << e.what() << "\n";
    return 1;
  }
}
