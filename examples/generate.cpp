// Text generation from a Hugging Face checkpoint directory (config.json, model.safetensors or an
// index and shards, and a tokenizer): any GPT-2 or Llama-family checkpoint, whatever its sizes (the
// model is run-time sized, its family picked from config.json), and the continuation is printed as
// it is generated.
//
// Usage: generate <checkpoint_dir> [prompt] [max_new_tokens]   (default prompt: the end-of-text
// token, default 32 new tokens).
//        generate --make-demo <dir>   writes a randomly initialised tiny_gpt2 checkpoint with a
// 64-token byte-level tokenizer (letters, digits, space) to try the pipeline end to end.
//        generate --help
#include <mote/mote.hpp>
#include <mote/io/tokenizer.hpp>
#include <mote/nn/nn.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using namespace mote;
using token_id = io::Tokenizer::token_id;

void usage(std::ostream& out) {
  out << "usage: generate <checkpoint_dir> [prompt] [max_new_tokens]\n"
               "  checkpoint_dir holds config.json, model.safetensors (or model.safetensors.index.json and its\n"
               "  shards) and a tokenizer (tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe).\n"
               "  Any GPT-2 or Llama-family checkpoint, whatever its sizes (config.json names the family).\n"
               "  Decoding is greedy; it stops at the end-of-text token or after max_new_tokens (default 32).\n"
               "       generate --make-demo <dir>\n"
               "  writes a random tiny_gpt2 checkpoint whose tokenizer knows only letters, digits and space.\n"
               "       generate --help\n";
}

// The first of the usual end-of-sequence tokens the tokenizer knows, if any.
std::optional<token_id> end_token(const io::Tokenizer& tok) {
  for (const char* s : {"<|endoftext|>", "</s>", "<|end_of_text|>"})
    if (auto id = tok.token_to_id(s)) return id;
  return std::nullopt;
}

template <class Model>
int run(Model& model, const io::Tokenizer& tok, const std::string& prompt, std::int64_t max_new_tokens) {
  const nn::Config sizes = model.sizes();
  if (tok.vocab_size() > sizes.vocab) {
    std::cerr << "generate: the tokenizer has " << tok.vocab_size() << " tokens but the model's vocabulary has " << sizes.vocab
              << "\n";
    return 1;
  }
  const std::optional<token_id> eos = end_token(tok);
  std::vector<token_id> ids = tok.encode(prompt);
  if (ids.empty()) {
    if (!eos) {
      std::cerr << "generate: empty prompt and the tokenizer has no end-of-text token to start from\n";
      return 1;
    }
    ids.push_back(*eos);
  }
  if (static_cast<std::int64_t>(ids.size()) >= sizes.max_seq) {
    std::cerr << "generate: the prompt is " << ids.size() << " tokens; the model's context is " << sizes.max_seq << "\n";
    return 1;
  }

  // Decoding the whole text each step and printing the new bytes keeps spaces that depend on
  // context (SentencePiece drops a leading one per decode call).
  std::vector<token_id> all = ids;
  std::size_t printed = tok.decode(all).size();
  std::cout << prompt << std::flush;
  nn::GenerateOptions options;
  options.max_new_tokens = max_new_tokens;
  if (eos) options.stop_tokens.push_back(*eos);
  options.on_token = [&](std::size_t, std::int32_t token) {
    if (eos && token == *eos) return;  // the stop token ends the text; it is not part of it
    all.push_back(token);
    const std::string text = tok.decode(all);
    if (text.size() > printed) std::cout << text.substr(printed) << std::flush;
    printed = std::max(printed, text.size());
  };
  nn::generate(model, ids, options);
  std::cout << "\n";
  return 0;
}

// tiny_gpt2 has 64 token ids: 62 letters and digits, the space and <|endoftext|> fill them exactly, so
// every id the random model can emit decodes (arbitrary bytes would need 256 ids).
int make_demo(const std::filesystem::path& dir) {
  nn::save(nn::CausalLM<presets::tiny_gpt2, float>(std::uint64_t{1}), dir);
  const std::string chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  io::json::Value vocab = io::json::Value::object();
  std::int64_t id = 0;
  for (char c : chars) vocab.set(std::string(1, c), id++);
  vocab.set("\xC4\xA0", id++);  // U+0120, GPT-2's byte-level form of a space
  vocab.set("<|endoftext|>", id++);
  io::json::write_file(dir / "vocab.json", vocab);
  io::atomic_write(dir / "merges.txt", {"#version: 0.2\n"}, "'" + (dir / "merges.txt").string() + "'");
  std::cout << "wrote " << dir.string() << " (" << id << " tokens); try: generate " << dir.string() << " \"hello world\" 8\n";
  return 0;
}

// Loads `dir` as the family its config.json names, with its own sizes, and returns fn(model).
template <class Fn>
int with_checkpoint(const std::filesystem::path& dir, Fn&& fn) {
  const nn::Config found = nn::read_config(dir);
  if (found.same_family(presets::gpt2_family)) {
    auto model = nn::load<nn::CausalLM<presets::gpt2_family, float>>(dir);
    return fn(model);
  }
  if (found.same_family(presets::llama_family)) {
    auto model = nn::load<nn::CausalLM<presets::llama_family, float>>(dir);
    return fn(model);
  }
  std::cerr << "generate: '" << dir.string() << "' holds a " << (found.gpt2_layout() ? "gpt2" : "llama")
            << "-layout model outside the supported families (GPT-2: biases, tied head; Llama: no biases, untied head)\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    usage(std::cout);
    return 0;
  }
  if (argc < 2 || argc > 4) {
    usage(std::cerr);
    return 2;
  }
  if (std::string(argv[1]) == "--make-demo") {
    if (argc != 3) {
      usage(std::cerr);
      return 2;
    }
    try {
      return make_demo(argv[2]);
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  }
  const std::string dir = argv[1];
  const std::string prompt = argc > 2 ? argv[2] : "";
  std::int64_t max_new_tokens = 32;
  if (argc > 3) {
    char* end = nullptr;
    max_new_tokens = std::strtoll(argv[3], &end, 10);
    if (*end != '\0' || max_new_tokens <= 0) {
      std::cerr << "generate: max_new_tokens must be a positive integer, got '" << argv[3] << "'\n";
      return 2;
    }
  }
  try {
    return with_checkpoint(dir, [&](auto& model) {
      const io::Tokenizer tok = io::Tokenizer::from_dir(dir);
      return run(model, tok, prompt, max_new_tokens);
    });
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
