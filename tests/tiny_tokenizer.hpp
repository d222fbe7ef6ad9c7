#pragma once
// A byte-level tokenizer for the tiny presets: 63 single characters (62 letters and digits and GPT-2's
// space "Ġ") with no merges, plus <|endoftext|>: 64 ids, the presets' vocab; '0' is id 0.
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "mote/io/tokenizer.hpp"

namespace mote::testing {

inline io::Tokenizer tiny_tokenizer() {
  using id = io::Tokenizer::token_id;
  std::vector<std::pair<std::string, id>> vocab;
  for (const char* range : {"09", "az", "AZ"})
    for (char c = range[0]; c <= range[1]; ++c) vocab.emplace_back(std::string(1, c), static_cast<id>(vocab.size()));
  vocab.emplace_back("\xC4\xA0", static_cast<id>(vocab.size()));
  io::Tokenizer tok(io::bpe::Model(vocab, {}, "tiny vocabulary", [](std::size_t) { return std::string("tiny merges"); }));
  tok.add_special_token("<|endoftext|>");
  return tok;
}

}  // namespace mote::testing
