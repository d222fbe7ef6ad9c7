// mote-aligncot: the MoTE loop on any GPT-2 or Llama-family checkpoint, from the command line.
//
//   generate          the base model writes its own AlignCoT chains (resumable)
//   train             MoTE experts and stage-token rows trained on a chain file
//   chat              answers questions through the stages, streaming each one
//   eval              answers a question file in batches into JSON Lines
//   score             measures answers: harmless rate, helpfulness, Harm-Help, over-refusal, with intervals
//   demo-checkpoint   a small random checkpoint with a byte-level tokenizer, to try the loop offline
//
// docs/tutorial.md walks through every subcommand and the library calls behind it. Built with MPI,
// generate, train and eval split their work across the ranks of `mpirun -np N mote-aligncot ...`
// (docs/distributed.md).
#include <CLI/CLI.hpp>
#include <mote/eval/eval.hpp>
#include <mote/mote.hpp>
#ifdef MOTE_HAVE_MPI
#include <mote/dist/mpi.hpp>
#endif
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace mote;
namespace ac = mote::aligncot;
namespace fs = std::filesystem;

using Pipeline = ac::Pipeline<ac::QuestionAnalysis, ac::AnswerGuidance, ac::SafeAnswer, ac::SafetyCheck>;
using Router = lora::StepRouter<3>;
using Gpt2Model = nn::CausalLM<presets::gpt2_family, float>;
using LlamaModel = nn::CausalLM<presets::llama_family, float>;

// What train writes beside the adapters, so chat and eval rebuild the same experts and tokens.
constexpr const char* settings_file = "train_settings.json";
constexpr const char* settings_format = "mote-aligncot.train_settings";

// ---------------------------------------------------------------------------------------------
// Arguments of each subcommand.

struct ModelArgs {
  fs::path model;
  std::string eos;  // empty: the first end-of-sequence token the tokenizer knows
};

struct GenerateArgs {
  ModelArgs model;
  fs::path questions, out;
  std::size_t batch = 8;
  std::int64_t max_stage_tokens = 128;
  bool no_adaptive = false;
  double temperature = 0.0, top_p = 1.0;
  std::int64_t top_k = 0;
  std::uint64_t seed = 0;
  std::vector<std::string> stops;
  std::vector<std::string> templates;  // STAGE=FILE
  std::string kv_cache = "full";
  std::size_t reuse_prefixes = 2;
  std::string prompts = "separate";
};

struct TrainArgs {
  ModelArgs model;
  fs::path chains, out;
  bool expanded = false, resume = false;
  std::int64_t epochs = 3, batch = 8, rank = 16, row_length = 0, checkpoint_every = 100;
  double lr = 2e-4, alpha = 32, dropout = 0.05, p_skip = 0.1;
  std::uint64_t seed = 0;
};

// chat and eval: how replies are written.
struct AnswerArgs {
  ModelArgs model;
  fs::path adapters;  // empty: the checkpoint answers alone (it must have the stage tokens)
  std::string mode = "adaptive";
  bool mode_given = false;
  std::vector<std::string> steps;
  std::int64_t max_new_tokens = 256;
  double temperature = 0.0;
  std::uint64_t seed = 0;
  std::string kv_cache = "full";
};

struct ChatArgs {
  AnswerArgs answer;
  std::string question;  // empty: read questions from stdin, one a line
};

struct EvalArgs {
  AnswerArgs answer;
  fs::path questions, out;
  std::size_t batch = 8;
};

struct ScoreArgs {
  fs::path items, answers, scores, out, report;
  std::string label = "model";
  std::uint64_t seed = 0;
};

struct DemoArgs {
  fs::path out;
  std::string family = "gpt2";
  std::int64_t layers = 2, width = 64, heads = 4, kv_heads = 2, ff = 0, context = 512;
  std::uint64_t seed = 1;
};

// ---------------------------------------------------------------------------------------------
// Checkpoints, tokens and the pieces every subcommand shares.

// Opens `dir` as the model family its config.json names and returns fn(model); other families are refused.
template <class Fn>
int with_checkpoint(const fs::path& dir, Fn&& fn) {
  const nn::Config found = nn::read_config(dir);
  if (found.same_family(presets::gpt2_family)) {
    Gpt2Model model = nn::load<Gpt2Model>(dir);
    return fn(model);
  }
  if (found.same_family(presets::llama_family)) {
    LlamaModel model = nn::load<LlamaModel>(dir);
    return fn(model);
  }
  throw value_error("checkpoint '" + dir.string() + "' is a " + (found.gpt2_layout() ? "gpt2" : "llama") +
                    "-layout model with " + (found.bias ? "biases" : "no biases") + " and " +
                    (found.tied_embeddings ? "a tied" : "an untied") +
                    " LM head; supported: the GPT-2 family (biases, tied head) and the Llama family (no biases, untied head)");
}

// The first of `candidates` the tokenizer knows as a token, or -1.
std::int32_t first_known(const io::Tokenizer& tok, std::initializer_list<const char*> candidates) {
  for (const char* text : candidates)
    if (const auto id = tok.token_to_id(text)) return *id;
  return -1;
}

struct SequenceTokens {
  std::int32_t eos = -1;
  std::int32_t bos = -1;  // Llama family only, when the tokenizer has one
};

template <class Model>
SequenceTokens sequence_tokens(const io::Tokenizer& tok, const ModelArgs& args) {
  SequenceTokens ids;
  if (!args.eos.empty()) {
    const auto id = tok.token_to_id(args.eos);
    if (!id) throw value_error("--eos '" + args.eos + "' is not a token of the tokenizer in '" + args.model.string() + "'");
    ids.eos = *id;
  } else {
    ids.eos = first_known(tok, {"<|endoftext|>", "</s>", "<|end_of_text|>"});
    if (ids.eos < 0)
      throw value_error("the tokenizer in '" + args.model.string() +
                        "' has none of <|endoftext|>, </s>, <|end_of_text|>; name its end-of-sequence token with --eos TOKEN");
  }
  if constexpr (!Model::config.gpt2_layout()) ids.bos = first_known(tok, {"<s>", "<|begin_of_text|>"});
  return ids;
}

bool has_stage_tokens(const io::Tokenizer& tok) {
  for (const std::string& token : Pipeline::tokens())
    if (!tok.token_to_id(token)) return false;
  return true;
}

// The model with the pipeline's stage tokens: the checkpoint's own, or rows added after its last
// (the new ids are deterministic, so chat and eval add the same rows train added).
template <class Model>
Model with_stage_tokens(Model base, io::Tokenizer& tok) {
  if (has_stage_tokens(tok)) return base;
  return ac::add_stage_tokens<Pipeline>(base, tok);
}

// "\n", "\t", "\r" and "\\" in a --stop text, as a shell cannot pass a newline easily.
std::string unescape(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    const char next = text[++i];
    out += next == 'n' ? '\n' : next == 't' ? '\t' : next == 'r' ? '\r' : next;
  }
  return out;
}

std::string model_name(const fs::path& dir) {
  const fs::path clean = dir.lexically_normal();
  return (clean.filename().empty() ? clean.parent_path().filename() : clean.filename()).string();
}

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

// Under several ranks only rank 0 reports; the others stay quiet unless something fails.
bool quiet_rank = false;

// One line on a terminal redrawn in place, or plain lines in a log.
void show_progress(std::size_t done, std::size_t total, const std::string& what) {
  if (quiet_rank) return;
  if (!stderr_is_terminal()) {
    std::cerr << done << "/" << total << " " << what << "\n";
    return;
  }
  constexpr std::size_t width = 30;
  const std::size_t filled = total ? width * done / total : width;
  std::cerr << "\r" << done << "/" << total << " [" << std::string(filled, '=') << std::string(width - filled, ' ') << "] "
            << what << "\x1b[K" << (done == total ? "\n" : "") << std::flush;
}

// ---------------------------------------------------------------------------------------------
// generate

// Reads --template STAGE=FILE into the pipeline (one trailing newline of the file is dropped).
void apply_templates(Pipeline& pipeline, const std::vector<std::string>& templates) {
  for (const std::string& spec : templates) {
    const auto eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
      throw value_error("--template '" + spec + "': expected STAGE=FILE, for example analysis=analysis.txt");
    const fs::path file = spec.substr(eq + 1);
    if (!fs::exists(file)) throw io_error("--template: '" + file.string() + "' does not exist");
    std::string text = io::read_file(file);
    if (!text.empty() && text.back() == '\n') text.pop_back();
    pipeline.set_template(spec.substr(0, eq), std::move(text));
  }
}

nn::kv_precision kv_precision_of(const std::string& name) { return name == "bf16" ? nn::kv_precision::bf16 : nn::kv_precision::full; }

ac::SelfGenerateOptions self_generate_options(const GenerateArgs& a, const SequenceTokens& ids) {
  ac::SelfGenerateOptions o;
  o.adaptive = !a.no_adaptive;
  o.batch = a.batch;
  o.max_stage_tokens = a.max_stage_tokens;
  if (!a.stops.empty()) {
    o.stop_texts.clear();
    for (const auto& s : a.stops) o.stop_texts.push_back(unescape(s));
  }
  o.temperature = a.temperature;
  o.top_k = a.top_k;
  o.top_p = a.top_p;
  o.kv_cache = kv_precision_of(a.kv_cache);
  o.reuse_prefixes = a.reuse_prefixes;
  o.prompts = a.prompts == "transcript" ? ac::PromptForm::transcript : ac::PromptForm::separate;
  o.seed = a.seed;
  o.eos_id = ids.eos;
  o.bos_id = ids.bos;
  o.model_name = model_name(a.model.model);
  o.on_chain = [](const ac::Chain& chain, std::size_t done, std::size_t total) {
    std::string steps;
    for (const auto& [name, text] : chain.steps) steps += (steps.empty() ? "" : ",") + name;
    show_progress(done, total, chain.id + (steps.empty() ? " (answer only)" : " (" + steps + ")"));
  };
  return o;
}

// "'q.jsonl' line 3: mote: 'q.jsonl' line 3: byte 20 ..." names its place once.
std::string tidy_skipped(const std::string& line) {
  const auto at = line.find(": mote: ");
  if (at == std::string::npos) return line;
  const std::string source = line.substr(0, at), rest = line.substr(at + 8);
  return rest.rfind(source + ": ", 0) == 0 ? rest : line;
}

void print_skipped(const std::vector<std::string>& skipped) {
  for (const std::string& line : skipped) std::cout << "skipped " << tidy_skipped(line) << "\n";
}

std::string count_of(std::size_t n, const std::string& thing) { return std::to_string(n) + " " + thing + (n == 1 ? "" : "s"); }

void print_generate_report(const ac::SelfGenerateReport& r, const fs::path& out) {
  print_skipped(r.skipped);
  std::cout << "questions: " << r.questions << " valid, " << count_of(r.skipped.size(), "line") << " skipped\n"
            << "chains: " << r.written << " written by this run (" << r.ended_early << " ended early by a safe draft), "
            << r.already_done << " already done, " << r.rejected << " rejected (empty answer)\n"
            << "generated tokens: " << r.generated_tokens << "\n"
            << "prompt tokens: " << r.prompt_tokens << ", " << r.reused_tokens << " of them taken from earlier prompts' keys and values\n"
            << "output: " << out.string() << "\n";
  if (r.rejected > 0) std::cout << "rejected questions: " << out.string() << ".rejected.jsonl\n";
}

template <class Model, class Comm>
int run_generate(const Model& model, const io::Tokenizer& tok, const GenerateArgs& a, Comm& comm) {
  Pipeline pipeline;
  apply_templates(pipeline, a.templates);
  const auto options = self_generate_options(a, sequence_tokens<Model>(tok, a.model));
  // Rank r writes the chains of every world-size-th question; rank 0 merges them in question order.
  const ac::SelfGenerateReport report = ac::self_generate<Pipeline>(model, tok, pipeline, a.questions, a.out, options, comm);
  print_generate_report(report, a.out);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// train

lora::Options lora_options(std::int64_t rank, double alpha, double dropout, std::uint64_t seed) {
  lora::Options o;
  o.rank = rank;
  o.alpha = alpha;
  o.dropout = dropout;
  o.seed = seed;
  return o;
}

// The record chat and eval read: the experts' shape and how the tokens were set up.
io::json::Value train_settings(const TrainArgs& a, const io::Tokenizer& tok, const SequenceTokens& ids, bool tokens_added) {
  const auto token_text = [&](std::int32_t id) { return id < 0 ? io::json::Value() : io::json::Value(tok.id_to_token(id)); };
  return io::json::Value::object({{"format", settings_format},
                                  {"version", 1},
                                  {"base_model", fs::absolute(a.model.model).lexically_normal().string()},
                                  {"rank", a.rank},
                                  {"alpha", a.alpha},
                                  {"dropout", a.dropout},
                                  {"seed", static_cast<std::int64_t>(a.seed)},
                                  {"stage_tokens_added", tokens_added},
                                  {"eos_token", token_text(ids.eos)},
                                  {"bos_token", token_text(ids.bos)},
                                  {"chains", fs::absolute(a.chains).lexically_normal().string()}});
}

train::TrainerOptions trainer_options(const TrainArgs& a) {
  train::TrainerOptions o;
  o.epochs = a.epochs;
  o.batch_size = a.batch;
  o.lr = a.lr;
  o.seed = a.seed;
  o.output_dir = a.out / "run";
  o.checkpoint_every = a.checkpoint_every;
  o.resume = a.resume;
  return o;
}

// The trainer's refusal to overwrite a run names its option; the tool names its flag.
template <class Trainer, class Data>
train::FitResult fit_naming_flags(Trainer& trainer, const Data& data) {
  try {
    return trainer.fit(data);
  } catch (const value_error& e) {
    const std::string message = e.what();
    if (message.find("pass resume = true") == std::string::npos) throw;
    throw value_error(message + " (mote-aligncot train: add --resume, or give another --out)");
  }
}

template <class Model, class Comm>
int run_train(Model& base, io::Tokenizer& tok, const TrainArgs& a, Comm& comm) {
  const SequenceTokens ids = sequence_tokens<Model>(tok, a.model);
  const bool tokens_added = !has_stage_tokens(tok);
  Model model = with_stage_tokens(std::move(base), tok);
  const ac::StageTokenIds stages = ac::stage_token_ids<Pipeline>(tok);
  auto experts = ac::attach<Router>(model, Pipeline{}, stages, lora_options(a.rank, a.alpha, a.dropout, a.seed));
  std::cout << experts.trainable_parameters_line() << "\n";

  const auto chains = ac::read_chains<Pipeline>(a.chains);
  const std::int64_t context = model.sizes().max_seq;
  const ac::RowFormat format{.eos_id = ids.eos, .bos_id = ids.bos};
  ac::ChainDataset<Pipeline> data(tok, stages, chains, format, context,
                                  {.p_skip = a.p_skip, .seed = a.seed, .expanded = a.expanded,
                                   .row_length = a.row_length > 0 ? a.row_length : context});
  std::cout << "chains: " << chains.size() << " from " << a.chains.string()
            << (a.expanded ? " (each as its expanded sequences)" : " (one pass each, step-skip masks)") << "\n";

  // Each rank trains on --batch of every global batch of --batch x ranks; gradients are summed across ranks.
  train::Trainer<decltype(model), decltype(experts), Comm> trainer(model, experts, trainer_options(a), comm);
  if (comm.size() > 1)
    std::cout << "data parallel: " << comm.size() << " ranks (" << Comm::name << "), global batch " << a.batch * comm.size()
              << ", " << trainer.all_reduced_bytes_per_step() << " bytes summed per step\n";
  const train::FitResult result = fit_naming_flags(trainer, data);
  if (result.interrupted) {
    std::cout << "stopped at step " << result.step << "/" << result.total_steps << "; a checkpoint is in "
              << (a.out / "run").string() << ": run again with --resume to continue\n";
    return 128 + result.signal;
  }
  if (comm.rank() == 0) {  // every rank holds the same adapters
    experts.save(a.out);
    io::json::write_file(a.out / settings_file, train_settings(a, tok, ids, tokens_added));
  }
  comm.barrier();
  std::cout << "trained " << result.step << " steps, last loss " << result.last_loss << "\n"
            << "adapters: " << a.out.string() << "\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// chat and eval

ac::StepMode step_mode(const AnswerArgs& a) {
  if (a.mode == "adaptive") return a.steps.empty() || a.mode_given ? ac::StepMode::adaptive : ac::StepMode::forced;
  if (a.mode == "forced") return ac::StepMode::forced;
  return ac::StepMode::answer_only;
}

ac::AnswerOptions answer_options(const AnswerArgs& a) {
  ac::AnswerOptions o;
  o.mode = step_mode(a);
  o.steps = a.steps;
  o.max_new_tokens = a.max_new_tokens;
  o.temperature = a.temperature;
  o.seed = a.seed;
  o.kv_cache = kv_precision_of(a.kv_cache);
  return o;
}

io::json::Value read_train_settings(const fs::path& adapters) {
  const fs::path file = adapters / settings_file;
  if (!fs::exists(file))
    throw io_error("'" + file.string() + "' does not exist; expected adapters written by mote-aligncot train");
  const io::json::Value v = io::json::parse_file(file);
  if (!v.is_object() || !v.find("format") || v.at("format").as_string() != settings_format)
    throw value_error("'" + file.string() + "' is not a " + std::string(settings_format) + " record");
  return v;
}

// A model that answers through the stages: the checkpoint with its stage tokens, and the trained
// experts when --adapters is given.
template <class Model>
class Answerer {
 public:
  Answerer(Model base, io::Tokenizer tok, const AnswerArgs& a) : tok_(std::move(tok)) {
    const SequenceTokens ids = sequence_tokens<Model>(tok_, a.model);
    format_ = ac::RowFormat{.eos_id = ids.eos, .bos_id = ids.bos};
    if (a.adapters.empty() && !has_stage_tokens(tok_))
      throw value_error("checkpoint '" + a.model.model.string() + "' has no stage tokens (" + Pipeline::tokens().front() +
                        ", ...) and no --adapters were given; train adapters first (mote-aligncot train) and pass --adapters DIR");
    model_ = std::make_unique<Model>(with_stage_tokens(std::move(base), tok_));
    stages_ = ac::stage_token_ids<Pipeline>(tok_);
    if (!a.adapters.empty()) load_experts(a.adapters);
  }

  std::vector<ac::Reply> answer(const std::vector<std::string>& questions, const ac::AnswerOptions& options) {
    if (!experts_) return ac::answer<Pipeline>(*model_, tok_, stages_, format_, questions, options, nullptr);
    const auto route = [&](const Tensor<std::int32_t>& routes) { return experts_->context_for(routes); };
    return ac::answer<Pipeline>(*model_, tok_, stages_, format_, questions, options, route);
  }

 private:
  void load_experts(const fs::path& dir) {
    const io::json::Value s = read_train_settings(dir);
    const auto options = lora_options(s.at("rank").as_int64(), s.at("alpha").as_double(), s.at("dropout").as_double(),
                                      static_cast<std::uint64_t>(s.at("seed").as_int64()));
    experts_.emplace(*model_, stages_, options);
    experts_->load(dir);
    experts_->eval();
  }

  io::Tokenizer tok_;
  ac::RowFormat format_;
  std::unique_ptr<Model> model_;  // on the heap: the experts point into it
  ac::StageTokenIds stages_;
  std::optional<ac::Experts<Router, Model, Pipeline>> experts_;
};

// Streams one reply: a "[stage]" header line when a stage starts writing, then its text.
class StagePrinter {
 public:
  void text(std::string_view stage, std::string_view piece) {
    if (stage != current_) {
      std::cout << (current_.empty() ? "" : "\n") << "[" << stage << "] ";
      current_ = stage;
      shown_.push_back(current_);
    }
    std::cout << piece << std::flush;
  }
  // Stages the model opened but wrote nothing in are shown after the reply.
  void finish(const ac::Reply& reply) {
    for (const auto& s : reply.stages)
      if (std::find(shown_.begin(), shown_.end(), s.stage) == shown_.end()) text(s.stage, s.text.empty() ? "(empty)" : s.text);
    std::cout << "\n"
              << "(" << reply.tokens << " tokens" << (reply.complete ? "" : ", stopped by --max-new-tokens") << ")\n";
    current_.clear();
    shown_.clear();
  }

 private:
  std::string current_;
  std::vector<std::string> shown_;
};

template <class Model>
int run_chat(Model& base, io::Tokenizer& tok, const ChatArgs& a) {
  Answerer<Model> answerer(std::move(base), std::move(tok), a.answer);
  StagePrinter printer;
  ac::AnswerOptions options = answer_options(a.answer);
  options.on_text = [&](std::size_t, std::string_view stage, std::string_view text) { printer.text(stage, text); };
  const auto ask = [&](const std::string& question) { printer.finish(answerer.answer({question}, options).front()); };
  if (!a.question.empty()) {
    ask(a.question);
    return 0;
  }
  const bool interactive = ::isatty(STDIN_FILENO) == 1;
  std::string line;
  while ((interactive && std::cout << "> " << std::flush), std::getline(std::cin, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ask(line);
  }
  return 0;
}

const char* mode_name(ac::StepMode m) { return m == ac::StepMode::answer_only ? "answer" : ac::step_mode_name(m); }

io::json::Value answer_record(const ac::Question& q, const ac::Reply& reply, ac::StepMode mode) {
  io::json::Value stages = io::json::Value::object(), counts = io::json::Value::object();
  for (const auto& s : reply.stages) {
    stages.set(s.stage, s.text);
    counts.set(s.stage, s.tokens);
  }
  return io::json::Value::object({{"id", q.id},
                                  {"question", q.text},
                                  {"stages", std::move(stages)},
                                  {"answer", reply.answer},
                                  {"tokens", reply.tokens},
                                  {"stage_tokens", std::move(counts)},
                                  {"complete", reply.complete},
                                  {"mode", mode_name(mode)}});
}

template <class Model, class Comm>
int run_eval(Model& base, io::Tokenizer& tok, const EvalArgs& a, Comm& comm) {
  ac::QuestionFileReport file;
  const std::vector<ac::Question> all_questions = ac::read_questions(a.questions, file);
  print_skipped(file.skipped);
  // Rank r answers questions r, r + ranks, ...: a greedy answer (--temperature 0) does not depend on the
  // split; sampled answers draw from the stream of the batch they land in, so they vary with it.
  const auto ranks = static_cast<std::size_t>(comm.size()), rank = static_cast<std::size_t>(comm.rank());
  std::vector<ac::Question> questions;
  for (std::size_t i = rank; i < all_questions.size(); i += ranks) questions.push_back(all_questions[i]);
  Answerer<Model> answerer(std::move(base), std::move(tok), a.answer);
  const ac::AnswerOptions options = answer_options(a.answer);
  std::string mine;  // this rank's records, one JSON line each
  std::array<double, 1> complete{};
  for (std::size_t begin = 0; begin < questions.size(); begin += a.batch) {
    const std::size_t end = std::min(questions.size(), begin + a.batch);
    std::vector<std::string> texts;
    for (std::size_t i = begin; i < end; ++i) texts.push_back(questions[i].text);
    const auto replies = answerer.answer(texts, options);
    for (std::size_t i = begin; i < end; ++i) {
      mine += io::json::dump(answer_record(questions[i], replies[i - begin], options.mode)) + "\n";
      complete[0] += replies[i - begin].complete;
    }
    show_progress(end, questions.size(), "answered");
  }
  // Rank 0 interleaves the ranks' lines back into question order and writes them as they are.
  const std::vector<std::string> per_rank = comm.all_gather(mine);
  comm.all_reduce_sum(std::span<double>(complete));
  if (comm.rank() == 0) {
    std::vector<std::size_t> next(ranks, 0);
    std::string text;
    for (std::size_t i = 0; i < all_questions.size(); ++i) {
      const std::string& from = per_rank[i % ranks];
      const std::size_t end = from.find('\n', next[i % ranks]) + 1;
      text.append(from, next[i % ranks], end - next[i % ranks]);
      next[i % ranks] = end;
    }
    io::atomic_write(a.out, {text}, "'" + a.out.string() + "'");
  }
  comm.barrier();
  std::cout << "answers: " << all_questions.size() << " (" << complete[0] << " complete, " << count_of(file.skipped.size(), "line")
            << " skipped), mode " << mode_name(options.mode) << "\n"
            << "output: " << a.out.string() << "\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// score

// Judges the answers to the items (the rule judge, or an external judge's scores file), prints the
// metrics with their bootstrap intervals and writes them as JSON (and a report folder when asked).
int run_score(const ScoreArgs& a) {
  const std::vector<eval::EvalItem> items = eval::read_items(a.items);
  const std::vector<std::string> answers =
      eval::answers_in_item_order(items, eval::read_answers(a.answers), "'" + a.answers.string() + "'");
  std::unique_ptr<eval::Judge> judge;
  if (a.scores.empty()) judge = std::make_unique<eval::RuleJudge>();
  else judge = std::make_unique<eval::ExternalScores>(a.scores);
  const auto judgements = eval::run_judge(*judge, items, answers);
  eval::BootstrapOptions bootstrap;
  bootstrap.seed = a.seed;
  const eval::Summary summary = eval::summarize(items, judgements, bootstrap);
  std::cout << "judge: " << judge->name() << "; " << summary.harmful << " harmful, " << summary.benign << " benign, "
            << summary.lookalike << " look-alike items\n";
  for (const auto& m : eval::metric_table) {
    const eval::Interval& i = summary.*(m.field);
    std::cout << "  " << m.label << ": ";
    if (i.empty()) std::cout << "n = 0\n";
    else std::cout << i.value << " [" << i.low << ", " << i.high << "] (n = " << i.n << ")\n";
  }
  if (!a.out.empty()) {
    io::json::write_file(a.out, io::json::Value::object({{"judge", judge->name()}, {a.label, eval::to_json(summary)}}));
    std::cout << "metrics: " << a.out.string() << "\n";
  }
  if (!a.report.empty()) {
    eval::Report report;
    report.title = "mote-aligncot score: " + a.label;
    report.models = {{a.label, summary}};
    eval::write_report(a.report, report);
    std::cout << "report: " << (a.report / "report.html").string() << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// demo-checkpoint

nn::Config demo_sizes(const DemoArgs& a) {
  nn::Config c = a.family == "gpt2" ? presets::gpt2_family : presets::llama_family;
  c.vocab = 257;  // the 256 bytes and <|endoftext|>
  c.d_model = a.width;
  c.n_layers = a.layers;
  c.n_heads = a.heads;
  c.n_kv_heads = a.family == "gpt2" ? a.heads : a.kv_heads;  // GPT-2 has no grouped-query heads
  c.d_ff = a.ff > 0 ? a.ff : 4 * a.width;
  c.max_seq = a.context;
  return c;
}

// GPT-2's byte-level vocabulary: id b is byte b in its printable form, then <|endoftext|>.
void write_byte_tokenizer(const fs::path& dir) {
  io::json::Value vocab = io::json::Value::object();
  for (int b = 0; b < 256; ++b) vocab.set(io::bpe::byte_to_unicode()[static_cast<std::size_t>(b)], b);
  vocab.set("<|endoftext|>", 256);
  io::json::write_file(dir / "vocab.json", vocab);
  io::atomic_write(dir / "merges.txt", {"#version: 0.2\n"}, "'" + (dir / "merges.txt").string() + "'");
}

int run_demo_checkpoint(const DemoArgs& a) {
  const nn::Config sizes = demo_sizes(a);
  if (a.family == "gpt2") nn::save(Gpt2Model(sizes, a.seed), a.out);
  else nn::save(LlamaModel(sizes, a.seed), a.out);
  write_byte_tokenizer(a.out);
  std::cout << "wrote a random " << a.family << " checkpoint to " << a.out.string() << ": " << sizes.n_layers << " layers, width "
            << sizes.d_model << ", " << sizes.n_heads << " heads (" << sizes.n_kv_heads << " kv), ff " << sizes.d_ff
            << ", context " << sizes.max_seq << ", vocabulary 257 (bytes and <|endoftext|>)\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The command line.

void add_model_options(CLI::App& cmd, ModelArgs& m) {
  cmd.add_option("--model", m.model, "checkpoint directory (config.json, model.safetensors, tokenizer files)")->required();
  cmd.add_option("--eos", m.eos, "end-of-sequence token (default: <|endoftext|>, </s> or <|end_of_text|>)");
}

void add_generate(CLI::App& app, GenerateArgs& a) {
  auto* cmd = app.add_subcommand("generate", "the base model writes its own AlignCoT chains (run again to resume)");
  add_model_options(*cmd, a.model);
  cmd->add_option("--questions", a.questions, "questions, JSON Lines of {\"id\", \"question\"}")->required();
  cmd->add_option("--out", a.out, "chains, JSON Lines (appended; existing ids are skipped)")->required();
  cmd->add_option("--batch", a.batch, "questions in flight")->check(CLI::PositiveNumber);
  cmd->add_option("--max-stage-tokens", a.max_stage_tokens, "tokens per generated text")->check(CLI::PositiveNumber);
  cmd->add_flag("--no-adaptive", a.no_adaptive, "write every step (no draft and safety check before each)");
  cmd->add_option("--temperature", a.temperature, "0: greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a.top_k, "0: no top-k cut")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a.top_p, "1: no nucleus cut")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a.seed, "sampling seed");
  cmd->add_option("--stop", a.stops, "a text ends at this (\\n for a newline); default: a blank line")->take_all();
  cmd->add_option("--template", a.templates, "STAGE=FILE: the prompt of a stage (analysis, guidance, answer, check)")->take_all();
  cmd->add_option("--kv-cache", a.kv_cache, "what the KV cache stores: full (float) or bf16 (half the bytes; a setting of the file)")
      ->check(CLI::IsMember({"full", "bf16"}));
  cmd->add_option("--reuse-prefixes", a.reuse_prefixes,
                  "latest prompts of a question whose keys and values its later prompts may start from (0: run every prompt whole)");
  cmd->add_option("--prompts", a.prompts,
                  "separate: each stage's template rendered whole; transcript: each prompt continues the question's "
                  "transcript, so little more than the new instruction runs (a setting of the file)")
      ->check(CLI::IsMember({"separate", "transcript"}));
}

void add_train(CLI::App& app, TrainArgs& a) {
  auto* cmd = app.add_subcommand("train", "trains MoTE experts and the stage-token rows on a chain file");
  add_model_options(*cmd, a.model);
  cmd->add_option("--chains", a.chains, "chains, JSON Lines (docs/aligncot.md)")->required();
  cmd->add_option("--out", a.out, "adapters directory (checkpoints under OUT/run)")->required();
  cmd->add_flag("--expanded", a.expanded, "train on the paper's expanded data instead of one pass per chain");
  cmd->add_option("--epochs", a.epochs)->check(CLI::PositiveNumber);
  cmd->add_option("--lr", a.lr, "peak learning rate")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", a.batch, "chains per step")->check(CLI::PositiveNumber);
  cmd->add_option("--rank", a.rank, "LoRA rank of every expert")->check(CLI::PositiveNumber);
  cmd->add_option("--alpha", a.alpha, "LoRA alpha (scale alpha / rank)")->check(CLI::PositiveNumber);
  cmd->add_option("--dropout", a.dropout, "dropout on the experts' input")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--p-skip", a.p_skip, "probability of hiding each earlier step from later ones")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--row-length", a.row_length, "pack chains into rows of this many tokens; 0: the model's context")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", a.seed, "experts' initialization, data order and skip draws");
  cmd->add_flag("--resume", a.resume, "continue from the newest checkpoint in OUT/run");
  cmd->add_option("--checkpoint-every", a.checkpoint_every, "steps between checkpoints; 0: only at the end")
      ->check(CLI::NonNegativeNumber);
}

void add_answer_options(CLI::App& cmd, AnswerArgs& a) {
  add_model_options(cmd, a.model);
  cmd.add_option("--adapters", a.adapters, "adapters written by train (without: a checkpoint that has the stage tokens)");
  cmd.add_option("--mode", a.mode, "adaptive: the model picks its steps; forced: --steps; answer: the answer only")
      ->check(CLI::IsMember({"adaptive", "forced", "answer"}))
      ->each([&a](const std::string&) { a.mode_given = true; });
  cmd.add_option("--steps", a.steps, "steps to write, for example analysis,guidance (implies --mode forced)")->delimiter(',');
  cmd.add_option("--max-new-tokens", a.max_new_tokens, "tokens per reply, stage tokens included")->check(CLI::PositiveNumber);
  cmd.add_option("--temperature", a.temperature, "0: greedy")->check(CLI::NonNegativeNumber);
  cmd.add_option("--seed", a.seed, "sampling seed");
  cmd.add_option("--kv-cache", a.kv_cache, "what the KV cache stores: full (float) or bf16 (half the bytes)")
      ->check(CLI::IsMember({"full", "bf16"}));
}

void add_chat(CLI::App& app, ChatArgs& a) {
  auto* cmd = app.add_subcommand("chat", "answers questions through the stages, streaming each (stdin, one a line)");
  add_answer_options(*cmd, a.answer);
  cmd->add_option("--question", a.question, "answer this one question and exit");
}

void add_eval(CLI::App& app, EvalArgs& a) {
  auto* cmd = app.add_subcommand("eval", "answers a question file in batches into JSON Lines");
  add_answer_options(*cmd, a.answer);
  cmd->add_option("--questions", a.questions, "questions, JSON Lines of {\"id\", \"question\"}")->required();
  cmd->add_option("--out", a.out, "answers, JSON Lines (written whole at the end)")->required();
  cmd->add_option("--batch", a.batch, "questions per batch")->check(CLI::PositiveNumber);
}

void add_score(CLI::App& app, ScoreArgs& a) {
  auto* cmd = app.add_subcommand("score", "measures answers: harmless rate, helpfulness, Harm-Help, over-refusal (docs/eval.md)");
  cmd->add_option("--items", a.items, "evaluation items, JSON Lines of {\"id\", \"question\", \"kind\", \"expected\"}")->required();
  cmd->add_option("--answers", a.answers, "answers, JSON Lines of {\"id\", \"answer\"} (what eval writes)")->required();
  cmd->add_option("--scores", a.scores, "an external judge's scores, JSON Lines (default: the rule judge)");
  cmd->add_option("--label", a.label, "the model's name in the output");
  cmd->add_option("--out", a.out, "write the metrics as JSON here");
  cmd->add_option("--report", a.report, "write a report folder (results.json, report.html) here");
  cmd->add_option("--seed", a.seed, "bootstrap seed");
}

void add_demo(CLI::App& app, DemoArgs& a) {
  auto* cmd = app.add_subcommand("demo-checkpoint", "writes a small random checkpoint with a byte-level tokenizer");
  cmd->add_option("--out", a.out, "checkpoint directory")->required();
  cmd->add_option("--family", a.family)->check(CLI::IsMember({"gpt2", "llama"}));
  cmd->add_option("--layers", a.layers)->check(CLI::PositiveNumber);
  cmd->add_option("--width", a.width, "hidden size")->check(CLI::PositiveNumber);
  cmd->add_option("--heads", a.heads)->check(CLI::PositiveNumber);
  cmd->add_option("--kv-heads", a.kv_heads, "key/value heads (llama)")->check(CLI::PositiveNumber);
  cmd->add_option("--ff", a.ff, "MLP width; 0: 4 * width")->check(CLI::NonNegativeNumber);
  cmd->add_option("--context", a.context, "positions")->check(CLI::PositiveNumber);
  cmd->add_option("--seed", a.seed, "initialization seed");
}

// Opens --model and runs a subcommand on it with its tokenizer.
template <class Run>
int on_checkpoint(const ModelArgs& m, Run&& run) {
  return with_checkpoint(m.model, [&](auto& model) {
    io::Tokenizer tok = io::Tokenizer::from_dir(m.model);
    return run(model, tok);
  });
}

// Input files are checked before a model is loaded, so a typo fails at once.
void require_file(const fs::path& path, const char* option) {
  if (!fs::is_regular_file(path)) throw io_error(std::string(option) + ": '" + path.string() + "' does not exist or is not a file");
}

// A library message without its "mote: " prefix, as the tool names itself.
std::string without_library_prefix(std::string message) {
  return message.rfind("mote: ", 0) == 0 ? message.substr(6) : message;
}

// Runs `fn` with the communicator of this launch: MPI's world under mpirun (when built with MPI), else
// one process. A launch of several copies of a build without MPI is refused: each would work alone.
template <class Fn>
int with_world(Fn&& fn) {
#ifdef MOTE_HAVE_MPI
  if (dist::launched_world_size() > 1) {
    dist::mpi world;
    quiet_rank = world.rank() != 0;
    if (quiet_rank) std::cout.setstate(std::ios::badbit);  // rank 0 prints the one report
    return fn(world);
  }
#endif
  dist::single::require_alone("mote-aligncot");
  dist::single one;
  return fn(one);
}

// chat, score and demo-checkpoint are one-process work: under a launcher every rank would do all of it.
void require_one_process(const char* subcommand) {
  if (const int launched = dist::launched_world_size(); launched > 1)
    throw value_error(std::string(subcommand) + " runs in one process, but a launcher started " + std::to_string(launched) +
                      "; run it without mpirun (generate, train and eval split across ranks)");
}

int run(int argc, char** argv) {
  CLI::App app{"mote-aligncot: MoTE experts on a GPT-2 or Llama-family checkpoint (docs/tutorial.md)", "mote-aligncot"};
  app.option_defaults()->always_capture_default();
  app.require_subcommand(1);
  GenerateArgs gen;
  TrainArgs tr;
  ChatArgs chat;
  EvalArgs ev;
  DemoArgs demo;
  ScoreArgs score;
  add_generate(app, gen);
  add_train(app, tr);
  add_chat(app, chat);
  add_eval(app, ev);
  add_score(app, score);
  add_demo(app, demo);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (const char* alone : {"demo-checkpoint", "score", "chat"})
    if (app.got_subcommand(alone)) require_one_process(alone);
  if (app.got_subcommand("demo-checkpoint")) return run_demo_checkpoint(demo);
  if (app.got_subcommand("score")) {
    require_file(score.items, "--items");
    require_file(score.answers, "--answers");
    if (!score.scores.empty()) require_file(score.scores, "--scores");
    return run_score(score);
  }
  if (app.got_subcommand("generate")) {
    require_file(gen.questions, "--questions");
    return with_world([&](auto& comm) {
      return on_checkpoint(gen.model, [&](auto& model, io::Tokenizer& tok) { return run_generate(model, tok, gen, comm); });
    });
  }
  if (app.got_subcommand("train")) {
    require_file(tr.chains, "--chains");
    return with_world([&](auto& comm) {
      return on_checkpoint(tr.model, [&](auto& model, io::Tokenizer& tok) { return run_train(model, tok, tr, comm); });
    });
  }
  if (app.got_subcommand("chat"))
    return on_checkpoint(chat.answer.model, [&](auto& model, io::Tokenizer& tok) { return run_chat(model, tok, chat); });
  require_file(ev.questions, "--questions");
  return with_world([&](auto& comm) {
    return on_checkpoint(ev.answer.model, [&](auto& model, io::Tokenizer& tok) { return run_eval(model, tok, ev, comm); });
  });
}

}  // namespace

int main(int argc, char** argv) {
#ifdef MOTE_HAVE_MPI
  // MPI starts only under a launcher, so a plain run needs no MPI runtime.
  std::optional<dist::mpi::session> mpi_session;
  if (dist::launched_world_size() > 1) mpi_session.emplace(&argc, &argv);
#endif
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << (stderr_is_terminal() ? "\n" : "") << "mote-aligncot: " << without_library_prefix(e.what()) << std::endl;
#ifdef MOTE_HAVE_MPI
    if (mpi_session) dist::mpi::session::abort(1);  // the peers may be waiting in a collective
#endif
    return 1;
  }
}
