#pragma once
// ChainDataset: AlignCoT chains as a train::Dataset. Chains are tokenized once; each batch draws the
// step-skip pattern of each of its chains for the epoch (a seeded stream per chain and epoch), builds
// the sequences (one per chain, or the expanded partial chains), packs them into rows and pads the
// rows into one batch with its attention mask.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "mote/aligncot/chain.hpp"
#include "mote/aligncot/pipeline.hpp"
#include "mote/aligncot/rows.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/core/tensor.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/train/batch.hpp"

namespace mote::aligncot {

struct DatasetOptions {
  double p_skip = 0.0;           // per earlier block, per chain and epoch
  std::uint64_t seed = 0;        // of the skip draws
  bool expanded = false;         // the paper's Appendix B data instead of one pass per chain
  std::int64_t row_length = 0;   // pack sequences into rows of at most this many tokens; 0: one per row
  bool close_skipped_gaps = true;
};

// Pads rows to the longest and lays them out as one batch: padding predicts nothing, attends only to
// itself and goes to route 0 (its outputs are never used).
template <Real T, Backend B = cpu>
train::Batch<T, B> to_batch(const std::vector<Sequence>& rows, std::int64_t examples, std::int32_t pad_id) {
  std::int64_t length = 0, tokens = 0;
  for (const auto& r : rows) {
    length = std::max(length, r.length());
    tokens += r.length();
  }
  const auto count = static_cast<std::int64_t>(rows.size());
  const auto cells = static_cast<std::size_t>(count * length);
  std::vector<std::int32_t> ids(cells, pad_id), targets(cells, no_target), positions(cells, 0), routes(cells, 0), groups(cells, -1);
  std::vector<std::uint8_t> mask(cells * static_cast<std::size_t>(length), 0);
  for (std::int64_t r = 0; r < count; ++r) {
    const Sequence& s = rows[static_cast<std::size_t>(r)];
    const std::int64_t n = s.length();
    const auto at = static_cast<std::size_t>(r * length);
    std::copy(s.ids.begin(), s.ids.end(), ids.begin() + static_cast<std::ptrdiff_t>(at));
    std::copy(s.targets.begin(), s.targets.end(), targets.begin() + static_cast<std::ptrdiff_t>(at));
    std::copy(s.positions.begin(), s.positions.end(), positions.begin() + static_cast<std::ptrdiff_t>(at));
    std::copy(s.routes.begin(), s.routes.end(), routes.begin() + static_cast<std::ptrdiff_t>(at));
    std::copy(s.groups.begin(), s.groups.end(), groups.begin() + static_cast<std::ptrdiff_t>(at));
    std::uint8_t* m = mask.data() + at * static_cast<std::size_t>(length);
    for (std::int64_t i = 0; i < length; ++i) {
      std::uint8_t* row = m + i * length;
      if (i >= n) {
        row[i] = 1;
        continue;
      }
      for (std::int64_t j = 0; j <= i; ++j) row[j] = s.may_attend(i, j) ? 1 : 0;
    }
  }
  train::Batch<T, B> batch;
  const Shape shape{count, length};
  batch.ids = Tensor<std::int32_t, B>::from_vector(shape, ids);
  batch.targets = Tensor<std::int32_t, B>::from_vector(shape, targets);
  batch.positions = Tensor<std::int32_t, B>::from_vector(shape, positions);
  batch.routes = Tensor<std::int32_t, B>::from_vector(shape, routes);
  batch.mask = Tensor<std::uint8_t, B>::from_vector({count, length, length}, mask);
  batch.target_groups = std::move(groups);
  batch.examples = examples;
  batch.tokens = tokens;
  return batch;
}

template <class P, Real T = float, Backend B = cpu>
class ChainDataset {
 public:
  using pipeline_type = P;

  // Tokenizes every chain; one longer than max_length (the model's context) is a value_error
  // naming its file and line.
  ChainDataset(const io::Tokenizer& tokenizer, const StageTokenIds& stage_tokens, const std::vector<Chain>& chains,
               const RowFormat& format, std::int64_t max_length, DatasetOptions options = {})
      : options_(options), pad_id_(format.eos_id) {
    if (!(options_.p_skip >= 0.0 && options_.p_skip <= 1.0))
      throw value_error("mote: aligncot::ChainDataset: p_skip = " + std::to_string(options_.p_skip) + " is outside [0, 1]");
    if (options_.row_length < 0 || (max_length > 0 && options_.row_length > max_length))
      throw value_error("mote: aligncot::ChainDataset: row_length = " + std::to_string(options_.row_length) +
                        "; expected 0 (one sequence per row) or at most the model's context of " + std::to_string(max_length));
    chains_.reserve(chains.size());
    for (const auto& c : chains) chains_.push_back(tokenize_chain<P>(tokenizer, stage_tokens, c, format, max_length));
  }

  std::size_t size() const noexcept { return chains_.size(); }
  const std::vector<TokenizedChain>& chains() const noexcept { return chains_; }
  const DatasetOptions& options() const noexcept { return options_; }

  // The sequences of chain `index` in `epoch`: one pass with this epoch's skips, or the expanded set.
  std::vector<Sequence> sequences(std::size_t index, std::uint64_t epoch) const {
    const TokenizedChain& chain = chains_.at(index);
    if (options_.expanded) return expanded(chain);
    Rng rng(skip_seed(options_.seed, epoch, index));
    return {single_pass(chain, draw_skips(chain, options_.p_skip, rng), options_.close_skipped_gaps)};
  }

  train::Batch<T, B> batch(std::span<const std::size_t> indices, std::uint64_t epoch) const {
    std::vector<Sequence> all;
    for (std::size_t index : indices) {
      if (index >= chains_.size())
        throw value_error("mote: aligncot::ChainDataset: chain index " + std::to_string(index) + " is outside 0.." +
                          std::to_string(chains_.size()) + " (exclusive)");
      for (auto& s : sequences(index, epoch)) all.push_back(std::move(s));
    }
    const std::vector<Sequence> rows = options_.row_length > 0 ? pack(all, options_.row_length) : std::move(all);
    return to_batch<T, B>(rows, static_cast<std::int64_t>(indices.size()), pad_id_);
  }

  // Evaluation loss is reported per pipeline stage.
  std::vector<std::string> group_names() const {
    std::vector<std::string> out;
    for (auto name : P::names) out.emplace_back(name);
    return out;
  }

  // What a resumed run must find again: the pipeline, the data's size and content, the settings.
  std::string fingerprint() const {
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    for (const auto& c : chains_)
      for (std::int32_t id : c.ids) hash = (hash ^ static_cast<std::uint32_t>(id)) * 0x100000001b3ULL;
    return "aligncot chains: " + std::to_string(chains_.size()) + " chains, token hash " + std::to_string(hash) +
           ", pipeline [" + P::description() + "], " + (options_.expanded ? "expanded" : "single pass") +
           ", p_skip " + std::to_string(options_.p_skip) + ", skip seed " + std::to_string(options_.seed) +
           ", row_length " + std::to_string(options_.row_length);
  }

 private:
  DatasetOptions options_;
  std::int32_t pad_id_;
  std::vector<TokenizedChain> chains_;
};

}  // namespace mote::aligncot
