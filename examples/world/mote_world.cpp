// mote-world: builds the shipped world from its recorded seeds.
//
//   mote-world questions --out DIR   the evaluation items: train.jsonl (self-generation) and test.jsonl
//   mote-world corpus --out FILE     the base model's corpus, one document per line (JSON strings)
//   mote-world base --out DIR        trains the tokenizer and the base model (resumable with --resume),
//                                    then writes the checkpoint, tokenizer.json and SHA256SUMS
//
// examples/world/base/ holds what `mote-world base` wrote; docs/world.md says how it was made.
#include <CLI/CLI.hpp>
#include <mote/mote.hpp>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "world.hpp"

namespace {

using namespace mote;
namespace fs = std::filesystem;
using Model = nn::CausalLM<presets::llama_family, float>;

constexpr const char* eos_token = "<|endoftext|>";

// The corpus as token rows: documents joined by end-of-sequence and cut into rows of `length` + 1
// tokens (each row's targets are its ids shifted by one), as language models are pretrained.
class TextRows {
 public:
  TextRows(const std::vector<std::vector<std::int32_t>>& docs, std::int32_t eos, std::int64_t length) : length_(length) {
    for (const auto& d : docs) {
      stream_.insert(stream_.end(), d.begin(), d.end());
      stream_.push_back(eos);
    }
    rows_ = (static_cast<std::int64_t>(stream_.size()) - 1) / length_;
  }
  std::size_t size() const { return static_cast<std::size_t>(rows_); }
  std::vector<std::string> group_names() const { return {}; }
  std::string fingerprint() const {
    return "world corpus: " + std::to_string(stream_.size()) + " tokens in rows of " + std::to_string(length_);
  }
  train::Batch<float> batch(std::span<const std::size_t> indices, std::uint64_t) const {
    const auto n = static_cast<std::int64_t>(indices.size());
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n * length_)), targets(ids.size());
    for (std::int64_t r = 0; r < n; ++r) {
      const auto begin = stream_.begin() + static_cast<std::ptrdiff_t>(indices[static_cast<std::size_t>(r)]) * length_;
      std::copy(begin, begin + length_, ids.begin() + r * length_);
      std::copy(begin + 1, begin + length_ + 1, targets.begin() + r * length_);
    }
    train::Batch<float> b;
    b.ids = Tensor<std::int32_t>::from_vector({n, length_}, ids);
    b.targets = Tensor<std::int32_t>::from_vector({n, length_}, targets);
    return b;
  }

 private:
  std::vector<std::int32_t> stream_;
  std::int64_t length_ = 0;
  std::int64_t rows_ = 0;
};

struct BaseArgs {
  fs::path out;
  std::int64_t vocab = 1024, width = 192, layers = 6, heads = 6, kv_heads = 2, ff = 512, context = 320;
  std::int64_t epochs = 8, batch = 16, row_length = 256;
  double lr = 2e-3;
  std::uint64_t seed = 2405;
  bool resume = false;
};

int run_questions(const fs::path& out) {
  const mote_world::Splits splits = mote_world::make_splits();
  fs::create_directories(out);
  for (const auto& [name, list] : {std::pair{"train.jsonl", &splits.train}, std::pair{"test.jsonl", &splits.test}}) {
    std::vector<io::json::Value> records;
    for (const auto& q : *list) records.push_back(mote_world::item_json(q));
    io::jsonl::write(out / name, records);
    std::cout << (out / name).string() << ": " << records.size() << " questions\n";
  }
  return 0;
}

std::vector<std::string> corpus() {
  return mote_world::pretraining_documents(mote_world::make_splits(), mote_world::Pipeline{});
}

int run_corpus(const fs::path& out) {
  std::vector<io::json::Value> lines;
  for (auto& d : corpus()) lines.emplace_back(std::move(d));
  io::jsonl::write(out, lines);
  std::cout << out.string() << ": " << lines.size() << " documents\n";
  return 0;
}

int run_base(const BaseArgs& a) {
  fs::create_directories(a.out);
  const std::vector<std::string> docs = corpus();
  const fs::path tokenizer_file = a.out / "tokenizer.json";
  io::BpeTrainerOptions bpe;
  bpe.vocab_size = a.vocab;
  bpe.special_tokens = {eos_token};
  io::train_bpe(docs, bpe).save(tokenizer_file);
  const io::Tokenizer tok = io::Tokenizer::from_tokenizer_json(tokenizer_file);
  const std::int32_t eos = *tok.token_to_id(eos_token);

  std::vector<std::vector<std::int32_t>> encoded;
  std::size_t tokens = 0, longest = 0;
  for (const auto& d : docs) {
    encoded.push_back(tok.encode_ordinary(d));
    tokens += encoded.back().size() + 1;
    longest = std::max(longest, encoded.back().size());
  }
  const TextRows rows(encoded, eos, a.row_length);
  std::cout << "corpus: " << docs.size() << " documents, " << tokens << " tokens (longest " << longest << "), "
            << rows.size() << " rows of " << a.row_length << "\n";

  nn::Config sizes = presets::llama_family;
  sizes.vocab = static_cast<std::int64_t>(tok.vocab_size());
  sizes.d_model = a.width;
  sizes.n_layers = a.layers;
  sizes.n_heads = a.heads;
  sizes.n_kv_heads = a.kv_heads;
  sizes.d_ff = a.ff;
  sizes.max_seq = a.context;
  Model model(sizes, a.seed);
  train::WholeModel<Model> whole(model);
  std::cout << "model: llama, " << model.num_parameters() << " parameters, width " << a.width << ", " << a.layers
            << " layers, " << a.heads << " heads (" << a.kv_heads << " kv), ff " << a.ff << ", vocabulary "
            << sizes.vocab << "\n";

  train::TrainerOptions o;
  o.epochs = a.epochs;
  o.batch_size = a.batch;
  o.lr = a.lr;
  o.warmup_steps = 50;
  o.min_lr_ratio = 0.1;
  o.weight_decay = 0.01;
  o.seed = a.seed;
  o.output_dir = a.out / "run";
  o.checkpoint_every = 200;
  o.resume = a.resume;
  o.log_every = 50;
  train::Trainer trainer(model, whole, o);
  const train::FitResult result = trainer.fit(rows);
  if (result.interrupted) {
    std::cout << "stopped at step " << result.step << "; run again with --resume\n";
    return 128 + result.signal;
  }
  nn::save(model, a.out, io::safetensors::Dtype::BF16);
  std::string sums;
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.json"})
    sums += io::sha256_file(a.out / file) + "  " + file + "\n";
  io::atomic_write(a.out / "SHA256SUMS", {sums}, "'" + (a.out / "SHA256SUMS").string() + "'");
  fs::remove_all(a.out / "run");
  std::cout << "trained " << result.step << " steps, last loss " << result.last_loss << "\n" << sums;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mote-world: builds the shipped world (questions, corpus, tokenizer and base model) from its seeds"};
  app.require_subcommand(1);
  fs::path questions_out, corpus_out;
  auto* q = app.add_subcommand("questions", "writes the evaluation items, train.jsonl and test.jsonl");
  q->add_option("--out", questions_out, "directory")->required();
  auto* c = app.add_subcommand("corpus", "writes the base model's corpus as JSON Lines of strings");
  c->add_option("--out", corpus_out, "file")->required();
  BaseArgs base;
  auto* b = app.add_subcommand("base", "trains the tokenizer and the base model, and writes the checkpoint");
  b->add_option("--out", base.out, "checkpoint directory")->required();
  b->add_option("--vocab", base.vocab, "tokenizer vocabulary (bytes, merges and <|endoftext|>)");
  b->add_option("--width", base.width);
  b->add_option("--layers", base.layers);
  b->add_option("--heads", base.heads);
  b->add_option("--kv-heads", base.kv_heads);
  b->add_option("--ff", base.ff);
  b->add_option("--context", base.context);
  b->add_option("--epochs", base.epochs);
  b->add_option("--batch", base.batch);
  b->add_option("--row-length", base.row_length);
  b->add_option("--lr", base.lr);
  b->add_option("--seed", base.seed);
  b->add_flag("--resume", base.resume, "continue from the newest checkpoint in OUT/run");
  CLI11_PARSE(app, argc, argv);
  try {
    if (app.got_subcommand("questions")) return run_questions(questions_out);
    if (app.got_subcommand("corpus")) return run_corpus(corpus_out);
    return run_base(base);
  } catch (const std::exception& e) {
    std::cerr << "mote-world: " << e.what() << "\n";
    return 1;
  }
}
