#pragma once
// From chains to training sequences. A chain becomes one token sequence: the question, then each
// present stage as a block that opens with its start token, the answer ending with end-of-sequence.
// Each token carries its route (the question's tokens are unrouted, a block's go to its stage's
// expert), its position, and the target it predicts (none for question tokens: no loss on the
// question). Step skipping hides a whole earlier block from every later block while the question
// stays visible; later blocks' positions then close the gap, so what a later block sees is exactly
// the chain written without that step. The paper's expanded data (Appendix B) is every partial chain
// as a sequence of its own. Several sequences pack into one row with block-diagonal attention.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mote/aligncot/chain.hpp"
#include "mote/aligncot/pipeline.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/lora/options.hpp"

namespace mote::aligncot {

// Question tokens train no expert of their own: the router's unrouted policy places them.
inline constexpr std::int32_t question_route = lora::unrouted;
// The target of a token that predicts nothing (cross-entropy's ignore index).
inline constexpr std::int32_t no_target = -100;

// Token ids of each pipeline stage's start and end tokens (end -1 where a stage has none).
struct StageTokenIds {
  std::vector<std::int32_t> start, end;
};

// How a chain is written in tokens, besides the stage tokens.
struct RowFormat {
  std::int32_t eos_id = -1;             // ends the answer; required
  std::int32_t bos_id = -1;             // opens the sequence when >= 0 (Llama-style models)
  std::string question_suffix = "\n";  // written after the question, before the first block
};

// One stage's stretch [begin, end) of a tokenized chain.
struct Block {
  std::int32_t stage = 0;   // index in the pipeline
  std::int32_t expert = 0;  // route id of its tokens
  std::int64_t begin = 0, end = 0;
  std::int64_t length() const noexcept { return end - begin; }
};

struct TokenizedChain {
  std::vector<std::int32_t> ids;
  std::int64_t question_length = 0;
  std::vector<Block> blocks;  // in chain order; the last one is the answer, ending with eos
  std::string source;         // the chain's file and line, for messages
};

// Tokenizes a chain of pipeline P. Texts are encoded as ordinary text, so a question that spells out
// a stage token cannot open a block. A chain longer than `max_length` tokens is a value_error
// naming its source.
template <class P>
TokenizedChain tokenize_chain(const io::Tokenizer& tokenizer, const StageTokenIds& tokens, const Chain& chain,
                              const RowFormat& format, std::int64_t max_length) {
  const std::string where = "mote: aligncot: " + (chain.source.empty() ? std::string("chain") : chain.source);
  if (format.eos_id < 0) throw value_error(where + ": RowFormat::eos_id is not set; expected the tokenizer's end-of-sequence id");
  if (tokens.start.size() != P::size || tokens.end.size() != P::size)
    throw value_error(where + ": StageTokenIds has " + std::to_string(tokens.start.size()) + " stages, the pipeline " +
                      std::to_string(P::size));
  TokenizedChain out;
  out.source = chain.source;
  if (format.bos_id >= 0) out.ids.push_back(format.bos_id);
  for (auto id : tokenizer.encode_ordinary(chain.question + format.question_suffix)) out.ids.push_back(id);
  out.question_length = static_cast<std::int64_t>(out.ids.size());
  const auto add_block = [&](std::size_t stage, const std::string& text, bool last) {
    Block b{static_cast<std::int32_t>(stage), P::experts[stage], static_cast<std::int64_t>(out.ids.size()), 0};
    out.ids.push_back(tokens.start[stage]);
    for (auto id : tokenizer.encode_ordinary(text)) out.ids.push_back(id);
    if (tokens.end[stage] >= 0) out.ids.push_back(tokens.end[stage]);
    if (last) out.ids.push_back(format.eos_id);
    b.end = static_cast<std::int64_t>(out.ids.size());
    out.blocks.push_back(b);
  };
  for (std::size_t stage = 0; stage < P::size; ++stage) {
    if (P::roles[stage] != StageRole::step) continue;
    if (const std::string* text = chain.step(P::names[stage])) add_block(stage, *text, false);
  }
  add_block(P::answer_index, chain.answer, true);
  if (max_length > 0 && static_cast<std::int64_t>(out.ids.size()) > max_length)
    throw value_error(where + ": the chain is " + std::to_string(out.ids.size()) +
                      " tokens long, more than the model's context of " + std::to_string(max_length) + " tokens");
  return out;
}

// A training sequence (one chain, a partial chain, or several packed into a row), before padding.
// The attention mask is kept as a rule over per-token labels and drawn in full only for a batch.
struct Sequence {
  std::vector<std::int32_t> ids, targets, routes, positions;
  std::vector<std::int32_t> groups;    // the stage each target belongs to, -1 for no target
  std::vector<std::int32_t> segments;  // which packed sequence a token belongs to
  std::vector<std::int32_t> blocks;    // 0 for the question, k for the chain's k-th block
  std::vector<std::uint8_t> hidden;    // 1 when the token's block is skipped: later blocks cannot see it

  std::int64_t length() const noexcept { return static_cast<std::int64_t>(ids.size()); }
  // Whether token i may attend to token j: causal, within one packed sequence, and not into a
  // skipped block from a later block.
  bool may_attend(std::int64_t i, std::int64_t j) const {
    const auto a = static_cast<std::size_t>(i), b = static_cast<std::size_t>(j);
    return j <= i && segments[a] == segments[b] && !(hidden[b] && blocks[a] > blocks[b]);
  }
  // The whole [length, length] mask, row-major, 1 = may attend.
  std::vector<std::uint8_t> attention_mask() const {
    const std::int64_t n = length();
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(n * n), 0);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j <= i; ++j) mask[static_cast<std::size_t>(i * n + j)] = may_attend(i, j) ? 1 : 0;
    return mask;
  }
};

// Which blocks a chain hides this epoch: each block before the answer with probability p_skip.
inline std::vector<bool> draw_skips(const TokenizedChain& chain, double p_skip, Rng& rng) {
  std::vector<bool> skipped(chain.blocks.size(), false);
  for (std::size_t k = 0; k + 1 < chain.blocks.size(); ++k) skipped[k] = rng.uniform() < p_skip;
  return skipped;
}

// The seed of chain `index`'s skip draws in `epoch`: one stream per chain and epoch, so a batch is a
// pure function of its chains and epoch (exact resume rebuilds it).
inline std::uint64_t skip_seed(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index) {
  Rng mix(seed);
  const std::uint64_t a = mix.next_u64() ^ (epoch * 0x9e3779b97f4a7c15ULL);
  Rng mix2(a);
  return mix2.next_u64() ^ (index * 0xbf58476d1ce4e5b9ULL);
}

// The chain as one sequence, its blocks in `skipped` hidden from the later blocks. With
// close_gaps, a later block's positions continue as if the hidden blocks were absent.
inline Sequence single_pass(const TokenizedChain& chain, const std::vector<bool>& skipped, bool close_gaps = true) {
  if (skipped.size() != chain.blocks.size())
    throw value_error("mote: aligncot::single_pass: " + std::to_string(skipped.size()) + " skip flags for " +
                      std::to_string(chain.blocks.size()) + " blocks");
  if (!skipped.empty() && skipped.back())
    throw value_error("mote: aligncot::single_pass: the answer block cannot be skipped (nothing follows it)");
  Sequence s;
  const std::int64_t n = static_cast<std::int64_t>(chain.ids.size());
  s.ids = chain.ids;
  s.targets.assign(static_cast<std::size_t>(n), no_target);
  s.routes.assign(static_cast<std::size_t>(n), question_route);
  s.positions.resize(static_cast<std::size_t>(n));
  s.groups.assign(static_cast<std::size_t>(n), -1);
  s.segments.assign(static_cast<std::size_t>(n), 0);
  s.blocks.assign(static_cast<std::size_t>(n), 0);
  s.hidden.assign(static_cast<std::size_t>(n), 0);
  for (std::int64_t t = 0; t < chain.question_length; ++t) s.positions[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(t);
  std::int64_t gap = 0;
  for (std::size_t k = 0; k < chain.blocks.size(); ++k) {
    const Block& b = chain.blocks[k];
    for (std::int64_t t = b.begin; t < b.end; ++t) {
      const auto u = static_cast<std::size_t>(t);
      s.routes[u] = b.expert;
      s.positions[u] = static_cast<std::int32_t>(t - gap);
      s.blocks[u] = static_cast<std::int32_t>(k + 1);
      s.hidden[u] = skipped[k] ? 1 : 0;
      // The token before each block token predicts it; the question's last token predicts the first block's start.
      s.targets[u - 1] = chain.ids[u];
      s.groups[u - 1] = b.stage;
    }
    if (skipped[k] && close_gaps) gap += b.length();
  }
  return s;
}

// The paper's expanded data: for each block, the question with every subset of the earlier blocks
// before it, each as its own sequence with loss on that block only. A chain of analysis, guidance and
// answer gives 1 + 2 + 4 = 7 sequences.
inline std::vector<Sequence> expanded(const TokenizedChain& chain) {
  std::vector<Sequence> out;
  for (std::size_t j = 0; j < chain.blocks.size(); ++j) {
    for (std::uint64_t subset = 0; subset < (std::uint64_t{1} << j); ++subset) {
      Sequence s;
      const auto push = [&](std::int64_t t, std::int32_t route, std::int32_t block) {
        s.ids.push_back(chain.ids[static_cast<std::size_t>(t)]);
        s.targets.push_back(no_target);
        s.routes.push_back(route);
        s.positions.push_back(static_cast<std::int32_t>(s.positions.size()));
        s.groups.push_back(-1);
        s.segments.push_back(0);
        s.blocks.push_back(block);
        s.hidden.push_back(0);
      };
      for (std::int64_t t = 0; t < chain.question_length; ++t) push(t, question_route, 0);
      std::int32_t count = 0;
      for (std::size_t k = 0; k <= j; ++k) {
        if (k < j && !((subset >> k) & 1U)) continue;
        const Block& b = chain.blocks[k];
        ++count;
        for (std::int64_t t = b.begin; t < b.end; ++t) {
          if (k == j) {  // loss on the target block only, its start token included
            s.targets.back() = chain.ids[static_cast<std::size_t>(t)];
            s.groups.back() = b.stage;
          }
          push(t, b.expert, count);
        }
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

// Packs sequences in order into rows of at most row_length tokens (a sequence starts a new row when
// it does not fit); each keeps its positions and sees only itself.
inline std::vector<Sequence> pack(const std::vector<Sequence>& sequences, std::int64_t row_length) {
  std::vector<Sequence> rows;
  std::int32_t segment = 0;
  for (const Sequence& s : sequences) {
    if (s.length() > row_length)
      throw value_error("mote: aligncot::pack: a sequence of " + std::to_string(s.length()) +
                        " tokens does not fit in rows of " + std::to_string(row_length));
    if (rows.empty() || rows.back().length() + s.length() > row_length) {
      rows.emplace_back();
      segment = 0;
    }
    Sequence& row = rows.back();
    const auto append = [](auto& to, const auto& from) { to.insert(to.end(), from.begin(), from.end()); };
    append(row.ids, s.ids);
    append(row.targets, s.targets);
    append(row.routes, s.routes);
    append(row.positions, s.positions);
    append(row.groups, s.groups);
    append(row.blocks, s.blocks);
    append(row.hidden, s.hidden);
    row.segments.insert(row.segments.end(), s.ids.size(), segment++);
  }
  return rows;
}

}  // namespace mote::aligncot
