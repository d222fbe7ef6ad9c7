#pragma once
// A pipeline's stage tokens in a tokenizer and a model: registering them as special tokens grows the
// tokenizer, and the model's embedding and LM head grow by the same rows (nn::resize_vocab, new rows
// at the mean of the old ones). A checkpoint that already has the tokens keeps its size.
#include <cstdint>
#include <string>
#include <vector>

#include "mote/aligncot/pipeline.hpp"
#include "mote/aligncot/rows.hpp"
#include "mote/core/error.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/nn/causal_lm.hpp"
#include "mote/nn/resize.hpp"

namespace mote::aligncot {

// The ids of P's stage tokens in a tokenizer that already has them; value_error naming the first
// one missing.
template <class P>
StageTokenIds stage_token_ids(const io::Tokenizer& tokenizer) {
  StageTokenIds ids;
  const auto find = [&](std::string_view token) {
    const auto id = tokenizer.token_to_id(token);
    if (!id || !tokenizer.is_special(*id))
      throw value_error("mote: aligncot: the tokenizer has no special token '" + std::string(token) +
                        "'; register the pipeline's stage tokens first (aligncot::add_stage_tokens)");
    return *id;
  };
  for (std::size_t i = 0; i < P::size; ++i) {
    ids.start.push_back(find(P::start_tokens[i]));
    ids.end.push_back(P::end_tokens[i].empty() ? -1 : find(P::end_tokens[i]));
  }
  return ids;
}

// Every stage token id, start tokens first, in the order of Pipeline::tokens().
inline std::vector<std::int32_t> all_ids(const StageTokenIds& ids) {
  std::vector<std::int32_t> out(ids.start.begin(), ids.start.end());
  for (std::int32_t id : ids.end)
    if (id >= 0) out.push_back(id);
  return out;
}

// Registers P's stage tokens in `tokenizer` (ids vocab .. vocab + P::token_count - 1) and returns a
// copy of `model` grown by as many rows. The tokenizer must describe exactly the model's rows and hold
// none of the tokens yet; for a checkpoint that has them already, use stage_token_ids.
template <class P, nn::Config C, Real T, Backend B>
nn::CausalLM<nn::with_added_vocab(C, static_cast<std::int64_t>(P::token_count)), T, B> add_stage_tokens(
    const nn::CausalLM<C, T, B>& model, io::Tokenizer& tokenizer, const nn::ResizeOptions& options = {}) {
  const std::string where = "mote: aligncot::add_stage_tokens";
  if (tokenizer.vocab_size() != model.sizes().vocab)
    throw value_error(where + ": the tokenizer has " + std::to_string(tokenizer.vocab_size()) + " ids but the model has " +
                      std::to_string(model.sizes().vocab) + " token rows; the stage tokens take the rows after the model's last");
  for (const std::string& token : P::tokens())
    if (tokenizer.token_to_id(token))
      throw value_error(where + ": the tokenizer already has '" + token +
                        "'; the model has its stage tokens already: use aligncot::stage_token_ids");
  for (const std::string& token : P::tokens()) tokenizer.add_special_token(token);
  return nn::add_vocab_rows<static_cast<std::int64_t>(P::token_count)>(model, options);
}

}  // namespace mote::aligncot
