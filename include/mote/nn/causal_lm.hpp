#pragma once
// CausalLM<Config, T, Backend>: embeddings, a flat vector of Blocks, the final norm and the LM head,
// with Hugging Face parameter names so checkpoints load by name.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/autograd/index.hpp"
#include "mote/autograd/loss.hpp"
#include "mote/autograd/var.hpp"
#include "mote/backend/traits.hpp"
#include "mote/core/error.hpp"
#include "mote/nn/config.hpp"
#include "mote/nn/decode.hpp"
#include "mote/nn/layers.hpp"
#include "mote/nn/parameters.hpp"
#include "mote/nn/token_adapter.hpp"

namespace mote::nn {

// Keys and values of every layer for incremental decoding; all sequences share one timeline.
template <Real T, Backend B = cpu>
struct KVCache {
  using value_type = T;
  using backend_type = B;
  std::vector<LayerCache<T, B>> layers;
  std::int64_t length() const { return layers.empty() ? 0 : layers.front().length(); }
  void clear() {
    for (auto& l : layers) {
      const kv_precision precision = l.precision();
      l = LayerCache<T, B>{};
      l.store_as(precision);
    }
  }
  // Every layer stores its keys and values as `precision` (LayerCache::store_as); before the first step.
  void store_as(kv_precision precision) {
    for (auto& l : layers) l.store_as(precision);
  }
  // Room for `rows` positions in every layer (LayerCache::reserve).
  void reserve(std::int64_t rows) {
    for (auto& l : layers) l.reserve(rows);
  }
};

template <Backend B = cpu>
struct ForwardOptions {
  // Absolute positions of the tokens, [B, L] or [L]; null means cached + 0 .. cached + L - 1.
  const Tensor<std::int32_t, B>* positions = nullptr;
  // Extra attention mask [B, L, S] or [L, S] (S = cached + L), combined with the causal one; 1 = may attend.
  const Tensor<std::uint8_t, B>* mask = nullptr;
  // Routing for attached adapters (for example lora::ExpertSet::route(step_ids)); null for none.
  std::shared_ptr<const AdapterContext> adapter = nullptr;
  // Logits of the last n positions only, [B, n, vocab]; 0 keeps every position. Generation needs
  // just the last one, and the LM head is a short prompt's largest product.
  std::int64_t logits_to_keep = 0;
  // A cached step of one token per sequence with no graph to record runs nn/decode.hpp's graph-free
  // step where the backend's traits choose it (backend_traits::decode_path; the CPU's do): without
  // adapters the same logits bit for bit, for less time per token. Attached adapters that can serve
  // it add their share unmerged (LoRA experts with step or single routers, token rows; equal up to
  // rounding); others, such as a learned top-k gate, go layer by layer.
  // false runs the layer-by-layer forward instead.
  bool graph_free_decode = true;
};

template <Real T, Backend B = cpu>
struct LossOptions {
  std::int32_t ignore_index = -100;
  const Tensor<T, B>* loss_mask = nullptr;  // per-token weights shaped like targets
  const Tensor<std::int32_t, B>* positions = nullptr;
  const Tensor<std::uint8_t, B>* mask = nullptr;
  std::shared_ptr<const AdapterContext> adapter = nullptr;
};

struct LoadOptions {
  // Every checkpoint entry must be used (or be a known buffer such as a tied lm_head.weight).
  bool strict = true;
};

// C is the compile-time description: the family (norm, activation, positions, bias, tied_embeddings)
// and the sizes. A run-time sized C (any size nn::dynamic, e.g. presets::gpt2_family) takes every
// size, eps and rope_theta from the Config given at construction; sizes() returns them either way.
template <Config C, Real T, Backend B = cpu>
class CausalLM : private Sized<C>, public ParameterAccess<CausalLM<C, T, B>, autograd::Var<T, B>> {
  static_assert(validate<C>::value);

 public:
  using V = autograd::Var<T, B>;
  static constexpr Config config = C;
  // The model's sizes (vocab, widths, layers, context, eps, rope_theta): for a compile-time Config a
  // static constexpr copy of `config`; for a run-time sized one the Config it was built with.
  using Sized<C>::sizes;

  // GPT-2 style initialization from a seeded Rng: normal(0, 0.02), residual projections scaled by
  // 1 / sqrt(2 n_layers), norms at 1, biases at 0.
  explicit CausalLM(Rng& rng) requires(!C.runtime_sized()) : CausalLM(C, rng, checked_sizes{}) {}
  explicit CausalLM(std::uint64_t seed = 0) requires(!C.runtime_sized()) : CausalLM(seeded(seed)) {}
  // A run-time sized model of `sizes`, whose family fields must equal C's; the same initialization,
  // draw for draw, as the compile-time model of the same sizes. Bad sizes throw value_error.
  CausalLM(const Config& sizes, Rng& rng) requires(C.runtime_sized()) : CausalLM(check_sizes<C>(sizes), rng, checked_sizes{}) {}
  explicit CausalLM(const Config& sizes, std::uint64_t seed = 0) requires(C.runtime_sized())
      : CausalLM(check_sizes<C>(sizes), seeded(seed), checked_sizes{}) {}

  KVCache<T, B> make_cache() const {
    KVCache<T, B> cache;
    cache.layers.resize(static_cast<std::size_t>(sizes().n_layers));
    return cache;
  }

  // ids [B, L] -> logits [B, L, vocab]. With a cache, the ids continue the cached sequence and
  // their keys and values are appended to it.
  V logits(const Tensor<std::int32_t, B>& ids, const ForwardOptions<B>& options = {}, KVCache<T, B>* cache = nullptr) const {
    Tensor<std::int32_t, B> default_positions;
    const Tensor<std::int32_t, B>& positions = checked_inputs(ids, options, cache, default_positions);
    if constexpr (backend_traits<B>::decode_path == DecodePath::graph_free)
      if (takes_graph_free_step(ids, options, cache)) return V(graph_free_step(ids, positions, options.mask, options.adapter.get(), *cache));

    V x = trunk(ids, positions, options, cache);
    const std::int64_t len = ids.size(1);
    if (options.logits_to_keep > 0 && options.logits_to_keep < len)
      x = autograd::slice(x, 1, len - options.logits_to_keep, options.logits_to_keep);
    x = final_norm_(x);
    V out = autograd::linear(x, C.tied_embeddings ? tok_embed_ : lm_head_);
    return token_adapter_ ? token_adapter_->head(out, x) : out;
  }

  // ids [B, L] -> the final-normed hidden states [B, L, d_model]: what logits() feeds the LM head, for
  // heads of another shape (a score head). Every position of a fresh sequence: no cache, no logits_to_keep.
  V hidden_states(const Tensor<std::int32_t, B>& ids, const ForwardOptions<B>& options = {}) const {
    if (options.logits_to_keep != 0)
      throw value_error("mote: CausalLM::hidden_states: logits_to_keep = " + std::to_string(options.logits_to_keep) +
                        " has no meaning here; expected 0 (every position)");
    Tensor<std::int32_t, B> default_positions;
    const Tensor<std::int32_t, B>& positions = checked_inputs(ids, options, nullptr, default_positions);
    return final_norm_(trunk(ids, positions, options, nullptr));
  }

  // Mean next-token cross-entropy of logits(ids) against targets [B, L] (-100 = ignored).
  V loss(const Tensor<std::int32_t, B>& ids, const Tensor<std::int32_t, B>& targets, const LossOptions<T, B>& options = {}) const {
    const V out = logits(ids, ForwardOptions<B>{.positions = options.positions, .mask = options.mask, .adapter = options.adapter});
    return autograd::cross_entropy(out, targets,
                                   autograd::CrossEntropyOptions<T, B>{.ignore_index = options.ignore_index, .loss_mask = options.loss_mask});
  }

  // Visits every parameter once, in Hugging Face order, under its checkpoint name (GPT-2 names
  // without the "transformer." prefix, as in the released GPT-2 safetensors).
  template <class Visitor>
  void for_each_parameter(Visitor&& visitor) {
    const ParamVisitor<T, B> visit = [&](const std::string& name, V& p) { visitor(name, p); };
    if constexpr (C.gpt2_layout()) {
      visit("wte.weight", tok_embed_);
      if constexpr (C.positions == Positions::Learned) visit("wpe.weight", pos_embed_);
      for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].for_each_parameter("h." + std::to_string(i), visit);
      final_norm_.for_each_parameter("ln_f", visit);
    } else {
      visit("model.embed_tokens.weight", tok_embed_);
      if constexpr (C.positions == Positions::Learned) visit("model.embed_positions.weight", pos_embed_);
      for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].for_each_parameter("model.layers." + std::to_string(i), visit);
      final_norm_.for_each_parameter("model.norm", visit);
    }
    if constexpr (!C.tied_embeddings) visit("lm_head.weight", lm_head_);
  }

  // Visits every projection of every block under its Hugging Face module name (GPT-2: "h.0.attn.c_attn";
  // Llama: "model.layers.0.self_attn.q_proj"), the names adapters are attached by.
  template <class Visitor>
  void for_each_linear(Visitor&& visitor) {
    const LinearVisitor<C, T, B> visit = [&](const std::string& name, Linear<C, T, B>& l) { visitor(name, l); };
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      blocks_[i].for_each_linear((C.gpt2_layout() ? "h." : "model.layers.") + std::to_string(i), visit);
  }

  // name -> value (shared with the parameters, not copied), in Hugging Face names and layouts.
  std::map<std::string, Tensor<T, B>> state_dict() {
    std::map<std::string, Tensor<T, B>> out;
    for_each_parameter([&](const std::string& name, V& p) { out.emplace(name, p.value()); });
    return out;
  }

  // Copies checkpoint tensors into the parameters by Hugging Face name. GPT-2 names may carry the
  // "transformer." prefix of GPT2LMHeadModel. Missing or mis-shaped entries throw; with strict, so
  // does any entry that is not a parameter or a known buffer.
  void load_state_dict(const std::map<std::string, Tensor<T, B>>& weights, LoadOptions options = {}) {
    std::map<std::string, bool> used;
    for (const auto& [name, t] : weights) used[name] = false;
    for_each_parameter([&](const std::string& name, V& p) {
      auto it = weights.find(name);
      if (it == weights.end() && C.gpt2_layout()) it = weights.find("transformer." + name);
      if (it == weights.end())
        throw value_error("mote: load_state_dict: the checkpoint has no tensor '" + name + "' (expected shape " +
                          p.shape().str() + ")");
      if (!it->second.defined() || !(it->second.shape() == p.shape()))
        throw shape_error("mote: load_state_dict: tensor '" + it->first + "' has shape " +
                          (it->second.defined() ? it->second.shape().str() : std::string("(undefined)")) +
                          ", expected " + p.shape().str());
      used[it->first] = true;
    });
    if (options.strict)
      for (const auto& [name, was_used] : used)
        if (!was_used && !ignorable(name))
          throw value_error("mote: load_state_dict: unexpected tensor '" + name + "' in the checkpoint (strict load)");
    // Copy only after every check passed, so a failed load leaves the model as it was.
    for_each_parameter([&](const std::string& name, V& p) {
      auto it = weights.find(name);
      if (it == weights.end()) it = weights.find("transformer." + name);
      p.mutable_value().copy_from(it->second);
    });
  }

  const std::vector<Block<C, T, B>>& blocks() const { return blocks_; }

  // The adapter of the token rows (lora::TrainableTokens attaches one); null for none. Copies of the
  // model share it, as they share the parameters.
  void set_token_adapter(std::shared_ptr<const TokenAdapter<T, B>> adapter) { token_adapter_ = std::move(adapter); }
  const std::shared_ptr<const TokenAdapter<T, B>>& token_adapter() const noexcept { return token_adapter_; }
  // Turns activation recomputation on or off for every block (training memory for compute).
  void set_recompute(bool on) {
    for (auto& b : blocks_) b.recompute = on;
  }

 private:
  // Tags the constructor that trusts its sizes (C's own, or checked by check_sizes).
  struct checked_sizes {};
  CausalLM(const Config& sizes, Rng& rng, checked_sizes) : Sized<C>(sizes), final_norm_(sizes) {
    tok_embed_ = detail::normal_param<T, B>({sizes.vocab, sizes.d_model}, 0.02, rng);
    if constexpr (C.positions == Positions::Learned)
      pos_embed_ = detail::normal_param<T, B>({sizes.max_seq, sizes.d_model}, 0.01, rng);
    blocks_.reserve(static_cast<std::size_t>(sizes.n_layers));
    for (std::int64_t i = 0; i < sizes.n_layers; ++i) blocks_.emplace_back(sizes, rng);
    if constexpr (!C.tied_embeddings) lm_head_ = detail::normal_param<T, B>({sizes.vocab, sizes.d_model}, 0.02, rng);
  }

  static Rng& seeded(std::uint64_t seed) {
    thread_local Rng rng;
    rng.reseed(seed);
    return rng;
  }
  // Buffers Hugging Face checkpoints carry that are not parameters here.
  static bool ignorable(const std::string& name) {
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (C.tied_embeddings && name == "lm_head.weight") return true;
    return ends_with(".attn.bias") || ends_with(".attn.masked_bias") || ends_with(".rotary_emb.inv_freq");
  }

  // Checks ids, options and cache against each other and returns the positions to use (the defaults
  // are built in `default_positions`); nothing is computed or appended before this passes.
  const Tensor<std::int32_t, B>& checked_inputs(const Tensor<std::int32_t, B>& ids, const ForwardOptions<B>& options,
                                                const KVCache<T, B>* cache, Tensor<std::int32_t, B>& default_positions) const {
    if (!ids.defined() || ids.rank() != 2 || ids.size(0) == 0 || ids.size(1) == 0)
      throw shape_error("mote: CausalLM: ids must have shape [batch, length] with both > 0, got " +
                        (ids.defined() ? ids.shape().str() : std::string("an empty tensor")));
    const std::int64_t batch = ids.size(0), len = ids.size(1), max_seq = sizes().max_seq;
    const std::int64_t past = cache ? cache->length() : 0;
    if (cache && cache->layers.size() != static_cast<std::size_t>(sizes().n_layers))
      throw value_error("mote: CausalLM: cache has " + std::to_string(cache->layers.size()) + " layers, expected " +
                        std::to_string(sizes().n_layers) + "; make it with make_cache()");
    if (cache && past > 0 && cache->layers.front().batch() != batch)
      throw shape_error("mote: CausalLM: ids " + ids.shape().str() + " continue a cache of batch " +
                        std::to_string(cache->layers.front().batch()));
    if (options.logits_to_keep < 0 || options.logits_to_keep > len)
      throw value_error("mote: CausalLM: logits_to_keep = " + std::to_string(options.logits_to_keep) +
                        " must be in [0, " + std::to_string(len) + "] for ids " + ids.shape().str() +
                        " (0 keeps every position)");
    if (past + len > max_seq)
      throw value_error("mote: CausalLM: sequence length " + std::to_string(past + len) + " (" + std::to_string(past) +
                        " cached + " + std::to_string(len) + " new) exceeds max_seq = " + std::to_string(max_seq));
    // Checked here, before any layer appends to the cache, so a bad mask leaves the cache as it was.
    if (const Tensor<std::uint8_t, B>* mask = options.mask) {
      const Shape per_batch{batch, len, past + len}, shared{len, past + len};
      if (!mask->defined() || !(mask->shape() == per_batch || mask->shape() == shared))
        throw shape_error("mote: CausalLM: mask must have shape [B, L, S] = " + per_batch.str() + " or [L, S] = " +
                          shared.str() + " (S = cached + new tokens), got " +
                          (mask->defined() ? mask->shape().str() : std::string("an empty tensor")));
    }
    if (options.positions) {
      check_positions(*options.positions, batch, len);
      return *options.positions;
    }
    std::vector<std::int32_t> p(static_cast<std::size_t>(len));
    for (std::int64_t i = 0; i < len; ++i) p[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(past + i);
    default_positions = Tensor<std::int32_t, B>::from_vector({len}, p);
    return default_positions;
  }

  // Embeddings (with the token adapter's rows) and every block: the hidden states before the final norm.
  V trunk(const Tensor<std::int32_t, B>& ids, const Tensor<std::int32_t, B>& positions, const ForwardOptions<B>& options,
          KVCache<T, B>* cache) const {
    V x = autograd::embedding(tok_embed_, ids);
    if (token_adapter_) x = token_adapter_->embed(x, ids);
    if constexpr (C.positions == Positions::Learned) x = x + autograd::embedding(pos_embed_, positions);
    const LayerInputs<B> in{.positions = &positions, .mask = options.mask, .adapter = options.adapter};
    for (std::size_t i = 0; i < blocks_.size(); ++i) x = blocks_[i](x, in, cache ? &cache->layers[i] : nullptr);
    return x;
  }

  // Whether logits() may take the graph-free step: see ForwardOptions::graph_free_decode. An id
  // outside the vocab goes layer by layer, to get the embedding's error.
  bool takes_graph_free_step(const Tensor<std::int32_t, B>& ids, const ForwardOptions<B>& options,
                             const KVCache<T, B>* cache) const {
    if (!options.graph_free_decode || !cache || ids.size(1) != 1 || autograd::grad_enabled()) return false;
    if (token_adapter_ && !token_adapter_->serves_decode_step()) return false;
    for (const auto& block : blocks_)
      if (!decode_detail::adapters_serve_step(block, options.adapter.get())) return false;
    for (const std::int32_t id : ids.contiguous().to_vector())
      if (id < 0 || id >= sizes().vocab) return false;
    return true;
  }

  // logits [B, 1, vocab] of one new token per sequence, through decode_detail::block_step.
  Tensor<T, B> graph_free_step(const Tensor<std::int32_t, B>& ids, const Tensor<std::int32_t, B>& positions,
                               const Tensor<std::uint8_t, B>* mask, const AdapterContext* adapter, KVCache<T, B>& cache) const {
    using Scratch = decode_detail::Scratch<T, B>;
    Scratch& s = Scratch::for_this_thread();
    const std::int64_t rows = ids.size(0), d = sizes().d_model, vocab = sizes().vocab;
    const Tensor<std::int32_t, B> id = ids.contiguous(), pos = positions.contiguous();
    const Tensor<std::uint8_t, B> packed_mask = mask ? mask->contiguous() : Tensor<std::uint8_t, B>();
    const decode_detail::Step step{.rows = rows,
                                   .positions = pos.data(),
                                   .position_stride = pos.rank() == 2 ? 1 : 0,
                                   .mask = mask ? packed_mask.data() : nullptr,
                                   .mask_stride = mask && mask->rank() == 3 ? mask->size(2) : 0,
                                   .adapter = adapter};
    T* x = Scratch::fit(s.x, rows * d);
    const Tensor<T, B> table = tok_embed_.value().contiguous();
    MOTE_CALL_KERNEL(B, index_gather, table.data(), std::int64_t{1}, vocab, d, id.data(), rows, x);
    if (token_adapter_) token_adapter_->embed_decode_step(id.data(), rows, d, x);
    if constexpr (C.positions == Positions::Learned) {
      const Tensor<T, B> pos_table = pos_embed_.value().contiguous();
      for (std::int64_t r = 0; r < rows; ++r)  // one row each: the position may be shared (stride 0)
        MOTE_CALL_KERNEL(B, index_gather_add, pos_table.data(), std::int64_t{1}, sizes().max_seq, d,
                         pos.data() + r * step.position_stride, std::int64_t{1}, x + r * d);
    }
    for (std::size_t i = 0; i < blocks_.size(); ++i) decode_detail::block_step(blocks_[i], cache.layers[i], step, s);
    T* normed = Scratch::fit(s.normed, rows * d);
    decode_detail::normalize(final_norm_, x, rows, normed, s);
    Tensor<T, B> logits(Shape{rows, 1, vocab});
    const Tensor<T, B> head = (C.tied_embeddings ? tok_embed_ : lm_head_).value().contiguous();
    MOTE_CALL_KERNEL(B, gemm, false, true, rows, vocab, d, T(1), normed, d, head.data(), d, T(0), logits.data(), vocab);
    if (token_adapter_) token_adapter_->head_decode_step(normed, rows, d, logits.data(), vocab);
    return logits;
  }

  void check_positions(const Tensor<std::int32_t, B>& positions, std::int64_t batch, std::int64_t len) const {
    const std::int64_t max_seq = sizes().max_seq;
    if (!positions.defined() || !(positions.shape() == Shape{batch, len} || positions.shape() == Shape{len}))
      throw shape_error("mote: CausalLM: positions must have shape [B, L] = " + Shape{batch, len}.str() + " or [L] = " +
                        Shape{len}.str() + ", got " + (positions.defined() ? positions.shape().str() : std::string("an empty tensor")));
    const std::vector<std::int32_t> host = positions.contiguous().to_vector();
    for (std::size_t i = 0; i < host.size(); ++i)
      if (host[i] < 0 || host[i] >= max_seq)
        throw value_error("mote: CausalLM: positions holds " + std::to_string(host[i]) + " at flat index " + std::to_string(i) +
                          "; expected 0 <= position < max_seq = " + std::to_string(max_seq));
  }

  V tok_embed_, pos_embed_, lm_head_;
  std::shared_ptr<const TokenAdapter<T, B>> token_adapter_;
  std::vector<Block<C, T, B>> blocks_;
  NormLayer<C, T, B> final_norm_;
};

}  // namespace mote::nn
