#pragma once
// Growing a model's vocabulary for tokens added to its tokenizer (step tokens, chat markers):
// resize_vocab returns a CausalLM of a larger compile-time vocab (or, for a run-time sized model, the
// same type with a larger run-time vocab) with every weight copied and the new embedding (and untied
// LM head) rows filled as Hugging Face's resize_token_embeddings does.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"
#include "mote/nn/causal_lm.hpp"
#include "mote/nn/config.hpp"

namespace mote::nn {

// How resize_vocab fills the rows of the new tokens.
enum class NewRows {
  // The mean of the old rows, as transformers' default mean_resizing does, without its small random
  // spread: a new token's logit starts at the mean of the old logits, so the outputs barely move.
  mean,
  // The resized model's own initialization from ResizeOptions::seed, normal(0, 0.02), as
  // transformers does with mean_resizing=False.
  normal,
};

struct ResizeOptions {
  NewRows new_rows = NewRows::mean;
  std::uint64_t seed = 0;  // used only by NewRows::normal
};

namespace resize_detail {

// old [V, d] -> rows [V', d] (V' >= V): the first V rows copied exactly, the rest as `new_rows` says
// (NewRows::normal keeps what `rows` already holds).
template <Real T, Backend B>
void grow_rows(const Tensor<T, B>& old, Tensor<T, B>& rows, NewRows new_rows) {
  if (old.rank() != 2 || rows.rank() != 2 || rows.size(0) < old.size(0) || rows.size(1) != old.size(1))
    throw shape_error("mote: resize_vocab: cannot grow a " + old.shape().str() + " weight into " + rows.shape().str() +
                      "; only the token rows of the embedding and the LM head may change");
  const std::int64_t old_count = old.size(0), new_count = rows.size(0) - old_count, width = old.size(1);
  rows.slice(0, 0, old_count).copy_from(old);
  if (new_count == 0 || new_rows != NewRows::mean) return;
  // Summed in double so that a float model's mean rows are as exact as its type allows.
  const std::vector<T> host = old.to_vector();
  std::vector<double> sum(static_cast<std::size_t>(width), 0.0);
  for (std::size_t i = 0; i < host.size(); ++i) sum[i % sum.size()] += static_cast<double>(host[i]);
  std::vector<T> mean_rows(static_cast<std::size_t>(new_count * width));
  for (std::size_t i = 0; i < mean_rows.size(); ++i)
    mean_rows[i] = static_cast<T>(sum[i % sum.size()] / static_cast<double>(old_count));
  rows.slice(0, old_count, new_count).copy_from(Tensor<T, B>::from_vector({new_count, width}, mean_rows));
}

// `resized` (of `new_vocab` rows, freshly initialized) takes every parameter of `model` as resize_vocab says.
template <class Resized, class Model>
void copy_into_grown(const Model& model, Resized& resized, const ResizeOptions& options) {
  using V = typename Model::V;
  Model source = model;  // handles share the parameters; the visitors need non-const access
  source.for_each_linear([](const std::string& name, auto& linear) {
    if (linear.adapter)
      throw value_error("mote: resize_vocab: module '" + name +
                        "' has an adapter attached; resize the vocabulary before attaching adapters, or detach them first");
  });
  if (model.token_adapter())
    throw value_error("mote: resize_vocab: the model has trainable token rows attached; resize the vocabulary before "
                      "attaching them, or detach them first");
  std::map<std::string, V> old_params;
  source.for_each_parameter([&](const std::string& name, V& p) { old_params.emplace(name, p); });
  resized.for_each_parameter([&](const std::string& name, V& p) {
    const V& old = old_params.at(name);  // the same Config but for vocab: the same names
    if (p.shape() == old.shape()) p.mutable_value().copy_from(old.value());
    else grow_rows(old.value(), p.mutable_value(), options.new_rows);
    p.set_requires_grad(old.requires_grad());
  });
  // set_recompute is model-wide, so every block shares the first one's setting.
  resized.set_recompute(!model.blocks().empty() && model.blocks().front().recompute);
}

}  // namespace resize_detail

// A copy of `model` with NewVocab token rows: every parameter copied by its Hugging Face name, the old
// embedding (and untied lm_head) rows exactly, the new ones per `options`; requires-grad flags and
// activation recomputation as in `model`, gradients not copied. NewVocab == vocab gives an exact copy.
// Resize before attaching adapters: a model with one attached throws value_error.
template <std::int64_t NewVocab, Config C, Real T, Backend B>
  requires(!C.runtime_sized())
CausalLM<with_vocab(C, NewVocab), T, B> resize_vocab(const CausalLM<C, T, B>& model, const ResizeOptions& options = {}) {
  static_assert(NewVocab >= C.vocab, "mote::nn::resize_vocab: NewVocab must be at least the model's vocab; shrinking is not supported");
  CausalLM<with_vocab(C, NewVocab), T, B> resized(options.seed);
  resize_detail::copy_into_grown(model, resized, options);
  return resized;
}

// The same for a run-time sized model: a model of the same type with `new_vocab` token rows (at least
// the model's vocab; value_error otherwise).
template <Config C, Real T, Backend B>
  requires(C.runtime_sized())
CausalLM<C, T, B> resize_vocab(const CausalLM<C, T, B>& model, std::int64_t new_vocab, const ResizeOptions& options = {}) {
  if (new_vocab < model.sizes().vocab)
    throw value_error("mote: resize_vocab: new_vocab " + std::to_string(new_vocab) + " is below the model's vocab " +
                      std::to_string(model.sizes().vocab) + "; shrinking is not supported");
  CausalLM<C, T, B> resized(with_vocab(model.sizes(), new_vocab), options.seed);
  resize_detail::copy_into_grown(model, resized, options);
  return resized;
}

// A copy of `model` with Added more token rows, for either kind of model: resize_vocab<vocab + Added>
// for a compile-time Config, resize_vocab(model, vocab + Added) for a run-time sized one.
template <std::int64_t Added, Config C, Real T, Backend B>
CausalLM<with_added_vocab(C, Added), T, B> add_vocab_rows(const CausalLM<C, T, B>& model, const ResizeOptions& options = {}) {
  static_assert(Added >= 0, "mote::nn::add_vocab_rows: Added must be >= 0; shrinking is not supported");
  if constexpr (C.runtime_sized()) return resize_vocab(model, model.sizes().vocab + Added, options);
  else return resize_vocab<C.vocab + Added>(model, options);
}

// Throws value_error when a tokenizer hands out ids the model has no embedding row for; pass
// Tokenizer::vocab_size() after registering special tokens.
template <Config C, Real T, Backend B>
void check_vocab(std::int64_t tokenizer_vocab_size, const CausalLM<C, T, B>& model) {
  const std::int64_t vocab = model.sizes().vocab;
  const std::string grow = C.runtime_sized() ? "nn::resize_vocab(model, " + std::to_string(tokenizer_vocab_size) + ")"
                                             : "nn::resize_vocab<" + std::to_string(tokenizer_vocab_size) + ">(model)";
  if (tokenizer_vocab_size < 0)
    throw value_error("mote: check_vocab: the tokenizer's vocab_size is " + std::to_string(tokenizer_vocab_size) +
                      "; expected a count >= 0");
  if (tokenizer_vocab_size > vocab)
    throw value_error("mote: check_vocab: the tokenizer's vocab_size is " + std::to_string(tokenizer_vocab_size) +
                      " but the model's vocab is " + std::to_string(vocab) + "; grow the model with " + grow);
}

}  // namespace mote::nn
