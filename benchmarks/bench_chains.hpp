#pragma once
// Synthetic AlignCoT chains for the training benchmarks: steps present at the paper's rates (analysis
// 71.5%, guidance 61.4%, the answer always), lengths drawn per chain (question 16-40 tokens, each step
// 32-64, the answer 64-128), random letters under a byte-level tokenizer.
#include <mote/mote.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mote_bench {

using Chain = mote::aligncot::Pipeline<mote::aligncot::QuestionAnalysis, mote::aligncot::AnswerGuidance, mote::aligncot::SafeAnswer>;

inline mote::io::Tokenizer byte_tokenizer() {
  std::vector<std::pair<std::string, mote::io::bpe::token_id>> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(mote::io::bpe::byte_to_unicode()[static_cast<std::size_t>(b)], b);
  mote::io::Tokenizer tok(mote::io::bpe::Model(vocab, {}, "bytes", [](std::size_t) { return std::string(); }));
  for (const auto& t : Chain::tokens()) tok.add_special_token(t);
  return tok;
}

inline std::string letters(mote::Rng& rng, std::int64_t lo, std::int64_t hi) {
  const auto n = lo + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(hi - lo + 1)));
  std::string s;
  for (std::int64_t i = 0; i < n; ++i) s += static_cast<char>(i % 6 == 5 ? ' ' : 'a' + static_cast<int>(rng.below(26)));
  return s;
}

inline std::vector<mote::aligncot::Chain> synthetic_chains(std::size_t count, std::uint64_t seed) {
  mote::Rng rng(seed);
  std::vector<mote::aligncot::Chain> out;
  for (std::size_t i = 0; i < count; ++i) {
    mote::aligncot::Chain c;
    c.question = letters(rng, 16, 39);  // the question suffix "\n" makes it 16-40 tokens
    if (rng.uniform() < 0.715) c.steps.emplace_back("analysis", letters(rng, 31, 63));
    if (rng.uniform() < 0.614) c.steps.emplace_back("guidance", letters(rng, 31, 63));
    c.answer = letters(rng, 62, 126);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace mote_bench
