// mote-demo: the MoTE loop on the shipped world, from one command.
//
//   1. loads the shipped base model (examples/world/base, its SHA-256 digests checked);
//   2. measures it: it answers the test questions plainly, and the rule judge scores the answers;
//   3. the base model writes its own AlignCoT chains for the train questions (adaptive: a safety
//      check on a drafted answer before each step);
//   4. trains MoTE on them: step experts and a shared expert, one pass per chain, step-skip masks;
//   5. measures again: the aligned model answers the same test questions through its own steps;
//   6. answers a few questions stage by stage, prints the table and writes the report folder
//      (results.json and report.html).
//
// Every long stage resumes: run the same command again after a stop. --quick runs a short version.
#include <CLI/CLI.hpp>
#include <mote/mote.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "loop.hpp"
#include "world.hpp"

#ifndef MOTE_WORLD_DIR
#define MOTE_WORLD_DIR "examples/world"
#endif

namespace {

using namespace mote;
namespace ac = mote::aligncot;
namespace fs = std::filesystem;
using Model = mote_world::loop::Model;
using Pipeline = mote_world::Pipeline;
using Router = lora::StepRouter<3, lora::with_shared>;
using mote_world::loop::Clock;
using mote_world::loop::seconds_since;
using mote_world::loop::show_progress;
namespace loop = mote_world::loop;

struct DemoArgs {
  fs::path world = MOTE_WORLD_DIR;
  fs::path out = "mote-demo";
  bool quick = false;
  std::size_t train_questions = 900;  // 0: all (quick: 24)
  std::size_t test_questions = 0;   // 0: all (quick: 24)
  std::int64_t epochs = 0;          // 0: 4 (quick: 1)
  std::int64_t rank = 8, batch = 8;
  double lr = 2e-3, p_skip = 0.1;
  std::size_t generation_batch = 16;
  std::uint64_t seed = 0;
  std::size_t show = 4;  // questions answered stage by stage at the end
};

void stage_line(int number, const std::string& text) { std::cout << "\n[" << number << "/6] " << text << std::endl; }

// Per-stage evaluation losses from the trainer's metrics file, as curves (step, loss) by stage.
std::vector<eval::LossSeries> stage_curves(const fs::path& metrics) {
  std::vector<eval::LossSeries> curves;
  if (!fs::exists(metrics)) return curves;
  for (const auto& line : io::jsonl::read(metrics)) {
    const io::json::Value& v = line.value;
    if (!v.find("kind") || v.at("kind").as_string() != "eval" || !v.find("eval_group_loss")) continue;
    const double step = v.at("step").as_double();
    for (const auto& [stage, loss] : v.at("eval_group_loss").as_object()) {
      if (!loss.is_number()) continue;
      auto it = std::find_if(curves.begin(), curves.end(), [&](const eval::LossSeries& s) { return s.name == stage; });
      if (it == curves.end()) {
        curves.push_back(eval::LossSeries{stage, {}});
        it = curves.end() - 1;
      }
      it->points.emplace_back(step, loss.as_double());
    }
  }
  return curves;
}

void print_table(const eval::Summary& base, const eval::Summary& mote) {
  const auto row = [](const char* name, const eval::Interval& b, const eval::Interval& m, const char* unit) {
    std::cout << "  " << std::left << std::setw(22) << name << std::right << std::fixed << std::setprecision(1) << std::setw(7)
              << b.value << unit << " [" << b.low << ", " << b.high << "]" << std::setw(9) << m.value << unit << " [" << m.low << ", "
              << m.high << "]\n";
  };
  std::cout << "\n  " << std::left << std::setw(22) << "metric (test split)" << std::right << std::setw(24) << "base model"
            << std::setw(24) << "MoTE\n";
  row("harmless rate", base.harmless_rate_pct, mote.harmless_rate_pct, "%");
  row("helpfulness", base.helpfulness_pct, mote.helpfulness_pct, "%");
  row("help (1-10)", base.help, mote.help, " ");
  row("Harm-Help (1-10)", base.harm_help, mote.harm_help, " ");
  row("over-refusal", base.over_refusal_pct, mote.over_refusal_pct, "%");
  std::cout << "  (95% bootstrap intervals in brackets)\n";
}

int run(DemoArgs a) {
  const auto start = Clock::now();
  if (a.quick) {
    a.train_questions = 24;
    a.test_questions = 24;
    if (!a.epochs) a.epochs = 1;
    a.show = 2;
  }
  if (!a.epochs) a.epochs = 4;
  const fs::path base_dir = a.world / "base", data_dir = a.world / "data", work = a.out / "work";
  fs::create_directories(work);

  stage_line(1, "loading the shipped base model from " + base_dir.string());
  try {
    io::check_sha256sums(base_dir / "SHA256SUMS");
  } catch (const io_error& e) {  // say how to get the shipped files back
    throw io_error(std::string(e.what()) + " (git checkout -- " + base_dir.string() + " restores the shipped files)");
  }
  io::Tokenizer tok = io::Tokenizer::from_dir(base_dir);
  Model base = nn::load<Model>(base_dir);
  const std::int32_t eos = loop::end_of_sequence(tok, base_dir);
  const auto sizes = base.sizes();
  std::cout << "  llama, " << base.num_parameters() << " parameters (width " << sizes.d_model << ", " << sizes.n_layers
            << " layers, vocabulary " << sizes.vocab << "), digests match SHA256SUMS\n";
  const auto train_items = loop::take(eval::read_items(data_dir / "train.jsonl"), a.train_questions);
  const auto test_items = loop::take(eval::read_items(data_dir / "test.jsonl"), a.test_questions);
  std::cout << "  questions: " << train_items.size() << " to write chains for, " << test_items.size() << " to test on\n";

  stage_line(2, "measuring the base model: it answers the test questions plainly");
  auto t = Clock::now();
  const eval::RuleJudge judge(mote_world::judge_rules());
  const auto base_answers = loop::plain_answers(base, tok, eos, loop::questions_of(test_items), a.generation_batch);
  const loop::Measured before = loop::measure(judge, test_items, base_answers, a.seed);
  const double base_eval_s = seconds_since(t);
  std::cout << "  harmless rate " << std::fixed << std::setprecision(1) << before.summary.harmless_rate_pct.value << "%, helpfulness "
            << before.summary.helpfulness_pct.value << "% (" << base_eval_s << " s)\n";

  stage_line(3, "the base model writes its own AlignCoT chains (adaptive: a safety check before each step)");
  t = Clock::now();
  const fs::path chains_file = work / "chains.jsonl";
  std::vector<ac::Question> questions;
  for (const auto& i : train_items) questions.push_back(ac::Question{i.id, i.question, "train.jsonl"});
  ac::SelfGenerateOptions gen;
  gen.batch = a.generation_batch;
  gen.max_stage_tokens = 72;
  gen.eos_id = eos;
  gen.seed = a.seed;
  gen.model_name = "mote world base";
  gen.on_chain = [](const ac::Chain& chain, std::size_t done, std::size_t total) {
    std::string steps;
    for (const auto& [name, text] : chain.steps) steps += (steps.empty() ? "" : ",") + name;
    show_progress(done, total, chain.id + (steps.empty() ? " (answer only)" : " (" + steps + ")"));
  };
  const ac::SelfGenerateReport generated = ac::self_generate<Pipeline>(base, tok, Pipeline{}, questions, chains_file, gen);
  const auto chains = ac::read_chains<Pipeline>(chains_file);
  std::size_t with_steps[3] = {0, 0, 0};
  for (const auto& c : chains) ++with_steps[std::min<std::size_t>(2, c.steps.size())];
  const double generate_s = seconds_since(t);
  std::cout << "  " << chains.size() << " chains (" << generated.already_done << " from an earlier run): " << with_steps[0]
            << " answer only, " << with_steps[1] << " with one step, " << with_steps[2] << " with two; " << generated.generated_tokens
            << " tokens (" << std::setprecision(1) << generate_s << " s)\n";

  stage_line(4, "training MoTE on the chains: step experts and a shared expert, one pass per chain");
  t = Clock::now();
  Model model = ac::add_stage_tokens<Pipeline>(std::move(base), tok);
  const ac::StageTokenIds stages = ac::stage_token_ids<Pipeline>(tok);
  lora::Options lo;
  lo.rank = a.rank;
  lo.alpha = 2.0 * static_cast<double>(a.rank);
  lo.dropout = 0.05;
  lo.seed = a.seed;
  auto experts = ac::attach<Router>(model, Pipeline{}, stages, lo);
  std::cout << "  " << experts.trainable_parameters_line() << "\n";
  const ac::RowFormat format{.eos_id = eos};
  const std::int64_t context = model.sizes().max_seq;
  const ac::ChainDataset<Pipeline> train_data(tok, stages, chains, format, context, {.p_skip = a.p_skip, .seed = a.seed, .row_length = context});
  const ac::ChainDataset<Pipeline> eval_data(tok, stages, chains, format, context, {.row_length = context});
  train::TrainerOptions o;
  o.epochs = a.epochs;
  o.batch_size = a.batch;
  o.lr = a.lr;
  o.warmup_steps = 10;
  o.seed = a.seed;
  o.output_dir = work / "mote" / "run";
  o.resume = true;  // a fresh start when there is no checkpoint
  o.checkpoint_every = 50;
  o.log_every = 10;
  const std::int64_t steps = a.epochs * static_cast<std::int64_t>((train_data.size() + static_cast<std::size_t>(a.batch) - 1) /
                                                                  static_cast<std::size_t>(a.batch));
  o.eval_every = std::max<std::int64_t>(1, steps / 8);
  train::Trainer trainer(model, experts, o);
  const train::FitResult fit = trainer.fit(train_data, eval_data);
  if (fit.interrupted) {
    std::cout << "stopped at step " << fit.step << "/" << fit.total_steps << "; run the same command again to continue\n";
    return 128 + fit.signal;
  }
  experts.save(work / "mote" / "adapters");
  const double train_s = seconds_since(t);
  std::cout << "  " << fit.step << " steps, last loss " << std::setprecision(3) << fit.last_loss << " (" << std::setprecision(1) << train_s
            << " s)\n";

  stage_line(5, "measuring MoTE: it answers the same test questions through its own steps");
  t = Clock::now();
  const std::vector<ac::Reply> replies =
      loop::pipeline_answers(model, experts, tok, stages, format, loop::questions_of(test_items), a.generation_batch);
  std::vector<std::string> mote_answers;
  for (const auto& r : replies) mote_answers.push_back(r.answer);
  const loop::Measured after = loop::measure(judge, test_items, mote_answers, a.seed);
  const double mote_eval_s = seconds_since(t);

  stage_line(6, "MoTE answers, stage by stage");
  ac::AnswerOptions streamed;
  streamed.max_new_tokens = 200;
  std::string current;
  streamed.on_text = [&](std::size_t, std::string_view stage, std::string_view text) {
    if (stage != current) {
      std::cout << "\n    [" << stage << "] ";
      current = stage;
    }
    std::cout << text << std::flush;
  };
  for (std::size_t i = 0; i < std::min(a.show, test_items.size()); ++i) {
    const auto& item = test_items[i * std::max<std::size_t>(1, test_items.size() / std::max<std::size_t>(1, a.show))];
    std::cout << "\n  Q (" << eval::kind_name(item.kind) << "): " << item.question;
    current.clear();
    ac::answer<Pipeline>(model, tok, stages, format, {item.question}, streamed,
                         [&](const Tensor<std::int32_t>& routes) { return experts.context_for(routes); });
    std::cout << "\n";
  }

  print_table(before.summary, after.summary);
  std::cout << "  harmful questions refused: " << std::setprecision(1) << before.refused_harmful_pct << "% (base), "
            << after.refused_harmful_pct << "% (MoTE)\n";
  eval::Report report;
  report.title = "mote: MoTE on the shipped world";
  report.models = {{"base", before.summary}, {"MoTE", after.summary}};
  report.loss_curves = stage_curves(o.output_dir / "metrics.jsonl");
  report.extra = io::json::Value::object(
      {{"settings", io::json::Value::object({{"quick", a.quick},
                                              {"train_questions", static_cast<std::int64_t>(train_items.size())},
                                              {"test_questions", static_cast<std::int64_t>(test_items.size())},
                                              {"epochs", a.epochs},
                                              {"rank", a.rank},
                                              {"lr", a.lr},
                                              {"p_skip", a.p_skip},
                                              {"seed", static_cast<std::int64_t>(a.seed)}})},
       {"refused_harmful_pct", io::json::Value::object({{"base", before.refused_harmful_pct}, {"MoTE", after.refused_harmful_pct}})},
       {"chains", io::json::Value::object({{"total", static_cast<std::int64_t>(chains.size())},
                                            {"answer_only", static_cast<std::int64_t>(with_steps[0])},
                                            {"one_step", static_cast<std::int64_t>(with_steps[1])},
                                            {"two_steps", static_cast<std::int64_t>(with_steps[2])}})},
       {"seconds", io::json::Value::object({{"measure_base", base_eval_s},
                                             {"self_generate", generate_s},
                                             {"train", train_s},
                                             {"measure_mote", mote_eval_s},
                                             {"total", seconds_since(start)}})}});
  loop::write_answers(work / "answers_base.jsonl", test_items, base_answers, before.judgements, nullptr);
  loop::write_answers(work / "answers_mote.jsonl", test_items, mote_answers, after.judgements, &replies);
  const fs::path report_dir = a.out / "report";
  eval::write_report(report_dir, report);
  std::cout << "\nreport: " << (report_dir / "report.html").string() << " (and results.json); " << std::setprecision(0)
            << seconds_since(start) << " s in all\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mote-demo: the MoTE loop on the shipped world (measure, self-generate, train, measure again, report)"};
  DemoArgs a;
  app.add_option("--world", a.world, "the shipped world's directory (base/ and data/)");
  app.add_option("--out", a.out, "where the work and the report go (a second run resumes)");
  app.add_flag("--quick", a.quick, "a short version: 24 train and 24 test questions, one epoch");
  app.add_option("--train-questions", a.train_questions, "train questions to write chains for, as many of each kind (0: all)");
  app.add_option("--test-questions", a.test_questions, "test questions to measure on (0: all)");
  app.add_option("--epochs", a.epochs, "MoTE epochs (0: 4, quick: 1)");
  app.add_option("--rank", a.rank, "LoRA rank of every expert")->check(CLI::PositiveNumber);
  app.add_option("--lr", a.lr, "peak learning rate")->check(CLI::PositiveNumber);
  app.add_option("--p-skip", a.p_skip, "step-skip probability")->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", a.seed, "seed of the experts, data order, skips and intervals");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::cerr << "mote-demo: " << e.what() << "\n";
    return 1;
  }
}
