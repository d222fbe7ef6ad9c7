// Text generation from a Hugging Face checkpoint directory (config.json, model.safetensors or an
// index and shards, and a tokenizer): the compiled model type is picked from config.json at run
// time, and the continuation is printed as it is generated.
//
// Usage: generate <checkpoint_dir> [prompt] [max_new_tokens]   (default prompt: the end-of-text
// token, default 32 new tokens). Candidates: gpt2, gpt2_medium, tiny_gpt2, tiny_llama.
//        generate --make-demo <dir>   writes a randomly initialised tiny_gpt2 checkpoint with a
// 64-token byte-level tokenizer (letters, digits, space) to try the pipeline end to end.
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

void usage() {
  std::cerr << "usage: generate <checkpoint_dir> [prompt] [max_new_tokens]\n"
               "  checkpoint_dir holds config.json, model.safetensors (or model.safetensors.index.json and its\n"
               "  shards) and a tokenizer (tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe).\n"
               "  Supported configs: gpt2, gpt2-medium, and the test-sized tiny_gpt2 / tiny_llama.\n"
               "  Decoding is greedy; it stops at the end-of-text token or after max_new_tokens (default 32).\n"
               "       generate --make-demo <dir>\n"
               "  writes a random tiny_gpt2 checkpoint whose tokenizer knows only letters, digits and space.\n";
}

// The first of the usual end-of-sequence tokens the tokenizer knows, if any.
std::optional<token_id> end_token(const io::Tokenizer& tok) {
  for (const char* s : {"<|endoftext|>", "</s>", "<|end_of_text|>"})
    if (auto id = tok.token_to_id(s)) return id;
  return std::nullopt;
}

template <class Model>
int run(Model& model, const io::Tokenizer& tok, const std::string& prompt, std::int64_t max_new_tokens) {
  constexpr nn::Config C = Model::config;
  if (tok.vocab_size() > C.vocab) {
    std::cerr << "generate: the tokenizer has " << tok.vocab_size() << " tokens but the model's vocabulary has " << C.vocab
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
  if (static_cast<std::int64_t>(ids.size()) >= C.max_seq) {
    std::cerr << "generate: the prompt is " << ids.size() << " tokens; the model's context is " << C.max_seq << "\n";
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

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    usage();
    return 2;
  }
  if (std::string(argv[1]) == "--make-demo") {
    if (argc != 3) {
      usage();
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
    const io::Tokenizer tok = io::Tokenizer::from_dir(dir);
    // Only these types are compiled; the 7B/8B presets would work the same but cost compile time.
    return nn::with_matching_model<nn::CausalLM<presets::gpt2, float>, nn::CausalLM<presets::gpt2_medium, float>,
                                   nn::CausalLM<presets::tiny_gpt2, float>, nn::CausalLM<presets::tiny_llama, float>>(
        dir, [&](auto& model) { return run(model, tok, prompt, max_new_tokens); });
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
