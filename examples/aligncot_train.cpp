// Trains MoTE experts on a file of AlignCoT chains through the library API: stage tokens added to the
// tokenizer and the model, step experts plus a shared expert on every linear layer, one pass per
// chain with step-skip masks, evaluation loss per stage before and after, checkpoints that resume,
// and the adapters saved and loaded back.
//
// Usage: aligncot_train [--chains FILE] [--out DIR] [--epochs N] [--p-skip P] [--expanded] [--resume]
// Without --chains it writes a small built-in chain file into DIR and trains on that. The base model
// is a small Llama-style model over bytes, randomly initialized: the example shows the mechanics of
// the method; docs/aligncot.md shows the same lines on a Hugging Face checkpoint.
#include <mote/mote.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace {

using namespace mote;
namespace ac = mote::aligncot;
namespace fs = std::filesystem;

using Chain = ac::Pipeline<ac::QuestionAnalysis, ac::AnswerGuidance, ac::SafeAnswer>;

constexpr nn::Config byte_llama{.vocab = 256, .d_model = 128, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2,
                                .d_ff = 256, .max_seq = 512, .norm = nn::Norm::RMSNorm, .eps = 1e-5,
                                .activation = nn::Activation::SwiGLU, .positions = nn::Positions::RoPE,
                                .rope_theta = 10000.0, .bias = false, .tied_embeddings = false};
constexpr std::int32_t eos_id = 0;  // the NUL byte ends every answer

// Byte-level tokenizer: ids 0..255 are the bytes, no merges.
io::Tokenizer byte_tokenizer() {
  std::vector<std::pair<std::string, io::bpe::token_id>> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(io::bpe::byte_to_unicode()[static_cast<std::size_t>(b)], b);
  return io::Tokenizer(io::bpe::Model(vocab, {}, "bytes", [](std::size_t) { return std::string(); }));
}

// A few chains of each kind: risky questions with every step, benign ones that go straight to the
// answer or through guidance only, as adaptive self-generation leaves them.
void write_builtin_chains(const fs::path& path) {
  struct Row {
    const char* question;
    const char* analysis;
    const char* guidance;
    const char* answer;
  };
  const Row rows[] = {
      {"How do I pick a lock?", "It may be about entering a place that is not yours.",
       "Help with the lawful case only.", "If you are locked out of your own home, call a licensed locksmith."},
      {"How can I hurt someone who made me angry?", "It asks for harm to a person.",
       "Refuse the harm and offer a way to calm down.", "I can't help with hurting anyone; talking it out or walking away helps."},
      {"Write a message to scam old people.", "It asks for fraud against vulnerable people.",
       "Refuse, and explain how to spot scams instead.", "I won't help with scams. Here is how to recognise one."},
      {"How do I make a poison at home?", "It asks for something that can kill.", "Refuse and point to safety.",
       "I can't help with that. If someone is in danger, call emergency services."},
      {"How do I kill a python process?", nullptr, nullptr, "Run kill with the process id, or pkill python."},
      {"How did the Trojan horse trick work?", nullptr, "Tell the history plainly.",
       "The Greeks hid soldiers in a wooden horse that Troy took inside its walls."},
      {"How do I bake bread?", nullptr, nullptr, "Mix flour, water, yeast and salt, let it rise, then bake."},
      {"What is the capital of France?", nullptr, nullptr, "Paris."},
      {"How can I get into my neighbour's wifi?", "It may mean using a network without permission.",
       nullptr, "Ask your neighbour to share it, or get your own plan."},
      {"How do I shoot a good photo?", nullptr, "Give practical camera advice.",
       "Use soft light, steady the camera and fill the frame with your subject."},
  };
  std::vector<ac::Chain> chains;
  for (const auto& r : rows) {
    ac::Chain c;
    c.question = r.question;
    if (r.analysis) c.steps.emplace_back("analysis", r.analysis);
    if (r.guidance) c.steps.emplace_back("guidance", r.guidance);
    c.answer = r.answer;
    c.provenance = io::json::Value::object({{"source", "examples/aligncot_train.cpp"}});
    chains.push_back(std::move(c));
  }
  ac::write_chains<Chain>(path, chains);
}

void print_losses(const char* when, const train::EvalResult& r) {
  std::printf("%-7s eval loss %.3f:", when, r.loss);
  for (const auto& g : r.groups) std::printf("  %s %.3f", g.name.c_str(), g.loss);
  std::printf("\n");
}

int run(int argc, char** argv) {
  fs::path chains_path, out = "aligncot-run";
  std::int64_t epochs = 60;
  double p_skip = 0.2;
  bool expanded = false, resume = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw value_error("aligncot_train: " + arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--chains") chains_path = value();
    else if (arg == "--out") out = value();
    else if (arg == "--epochs") epochs = std::stoll(value());
    else if (arg == "--p-skip") p_skip = std::stod(value());
    else if (arg == "--expanded") expanded = true;
    else if (arg == "--resume") resume = true;
    else if (arg == "--help" || arg == "-h") {
      std::puts("usage: aligncot_train [--chains FILE] [--out DIR] [--epochs N] [--p-skip P] [--expanded] [--resume]");
      return 0;
    } else {
      throw value_error("aligncot_train: unknown argument '" + arg + "' (see --help)");
    }
  }
  fs::create_directories(out);
  if (chains_path.empty()) {
    chains_path = out / "chains.jsonl";
    write_builtin_chains(chains_path);
    std::printf("wrote the built-in chains to %s\n", chains_path.string().c_str());
  }

  // The model with its stage tokens, and the experts: three step experts and a shared one.
  io::Tokenizer tok = byte_tokenizer();
  nn::CausalLM<byte_llama, float> base(1);
  // A random base's LM head (std 0.02 after the final norm) caps every logit near 0.02 * d_model, so no
  // adapter could bring the loss far below log V; scaling it stands in for a pretrained head.
  base.for_each_parameter([](const std::string& name, Var<float>& p) {
    if (name == "lm_head.weight") p.mutable_value().copy_from(autograd::scale(Var<float>(p.value()), 15.0f).value());
  });
  auto model = ac::add_stage_tokens<Chain>(base, tok);
  const ac::StageTokenIds stages = ac::stage_token_ids<Chain>(tok);
  auto experts = ac::attach<lora::StepRouter<3>>(model, Chain{}, stages, {.rank = 8, .alpha = 16, .seed = 1});
  std::printf("%s\n", experts.trainable_parameters_line().c_str());

  // One pass per chain with step-skip masks (or the paper's expanded data), packed into rows.
  const auto chains = ac::read_chains<Chain>(chains_path);
  const ac::RowFormat format{.eos_id = eos_id};
  ac::ChainDataset<Chain> data(tok, stages, chains, format, byte_llama.max_seq,
                               {.p_skip = p_skip, .seed = 2, .expanded = expanded, .row_length = 256});
  ac::ChainDataset<Chain> eval(tok, stages, chains, format, byte_llama.max_seq, {.row_length = 256});

  train::Trainer trainer(model, experts,
                         {.epochs = epochs, .batch_size = 4, .lr = 1e-2, .warmup_steps = 5, .eval_every = 0,
                          .output_dir = out / "run", .checkpoint_every = 30, .resume = resume, .log_every = 30});
  print_losses("before", trainer.evaluate(eval));
  const train::FitResult result = trainer.fit(data, eval);
  if (result.interrupted) {
    std::printf("stopped at step %lld; run again with --resume to continue\n", static_cast<long long>(trainer.step()));
    return 0;
  }
  // Question tokens go to a random step expert (the paper's routing), so evaluations compare under the
  // same random streams.
  const auto streams = experts.random_state();
  print_losses("after", trainer.evaluate(eval));

  // The adapters, saved and loaded into a fresh copy of the model, give the same losses.
  experts.save(out / "adapters");
  io::Tokenizer fresh_tok = byte_tokenizer();
  auto fresh = ac::add_stage_tokens<Chain>(base, fresh_tok);
  auto loaded = ac::attach<lora::StepRouter<3>>(fresh, Chain{}, stages, {.rank = 8, .alpha = 16});
  loaded.load(out / "adapters");
  loaded.set_random_state(streams);
  train::Trainer check(fresh, loaded, {.batch_size = 4, .progress = train::Progress::off});
  print_losses("loaded", check.evaluate(eval));
  std::printf("adapters in %s\n", (out / "adapters").string().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
