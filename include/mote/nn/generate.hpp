#pragma once
// Autoregressive generation with a KV cache: greedy (temperature 0) or sampled with temperature,
// top-k and top-p from a seeded Rng per sequence. Prompts of different lengths are left-padded into
// one batch; an attention mask hides the padding and positions start at 0 at each prompt's first real
// token. Hooks let a caller route attached adapters per token, shape each sequence's next-token
// logits, and end a sequence on a condition of its own.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "mote/backend/traits.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/nn/causal_lm.hpp"

namespace mote::nn {

// What an adapter router is asked before each forward pass: the tokens [from, to) of every
// sequence in the pass are about to run. history[r] is the whole left-padded token history of the
// pass's row r (its first padding[r] tokens are padding, never attended to); it holds at least `to`
// tokens. A pass may hold some of the batch's sequences only (a prompt pass, or a step after
// finished sequences left): sequences[r] is row r's index in the batch (empty: every sequence, row
// r being sequence r).
struct RoutingRequest {
  std::span<const std::vector<std::int32_t>> history;
  std::span<const std::int64_t> padding;
  std::int64_t from = 0, to = 0;
  std::span<const std::size_t> sequences;
};

struct GenerateOptions {
  std::int64_t max_new_tokens = 32;
  double temperature = 0.0;  // 0: greedy
  std::int64_t top_k = 0;    // 0: no top-k cut
  double top_p = 1.0;        // 1: no nucleus cut
  // Sequence b samples from its own stream, seeded by sequence_seeds[b] when given (one per prompt),
  // else by seed + b * 0x9e3779b97f4a7c15: a sequence's draws do not depend on its batch-mates.
  std::uint64_t seed = 0;
  std::vector<std::uint64_t> sequence_seeds;
  std::vector<std::int32_t> stop_tokens;  // a sequence ends after emitting one of these (it is kept)
  std::function<void(std::size_t sequence, std::int32_t token)> on_token;
  // Routing of attached adapters per token: returns the ForwardOptions::adapter of the tokens a
  // forward pass is about to run (null: none). Unset, every pass runs without a routing context.
  std::function<std::shared_ptr<const AdapterContext>(const RoutingRequest&)> route;
  // Edits sequence b's next-token logits before the pick (for example, to forbid tokens).
  std::function<void(std::size_t sequence, std::span<double> logits)> shape_logits;
  // Ends sequence b after its latest token when it returns true (the token is kept).
  std::function<bool(std::size_t sequence, const std::vector<std::int32_t>& generated)> stop_when;
  bool use_cache = true;     // false recomputes the whole sequence each step (for checking the cache)
  // On the CPU with up to 63 sequences (8 without AVX-512), keep the OpenMP threads spinning
  // between the tokens after the prompt (backend::SpinTeam) instead of waking them for every product.
  bool spin_threads = true;
  std::int32_t pad_token = 0;  // fills left padding and finished sequences' steps; never attended to
  // What the cache stores: bf16 halves the bytes each token's attention reads, for logits close to
  // (not equal to) full precision's; float models on the CPU.
  kv_precision kv_cache = kv_precision::full;
  // The prompts run in several passes, each from where its own sequences' tokens to run begin,
  // when every further pass saves at least this many rows (positions x sequences) of work: a pass's
  // fixed cost, reading every weight once. Large: one pass from the earliest start.
  std::int64_t prefill_pass_rows = 16;
};

// The keys and values one sequence of a generation left in the cache (its prompt and the tokens it
// fed back), with those tokens. A later prompt that starts with some of them takes their keys and
// values instead of running them again: the stages of one chain share the question and its context.
// Valid for the same model and weights, and the same adapters and routing over those tokens.
template <Real T, Backend B>
struct KVPrefix {
  std::vector<std::int32_t> tokens;
  KVCache<T, B> cache;  // one sequence, tokens.size() positions
};

// Prompt caching for one call of generate. In: from[b], where prompt b's leading tokens may come
// from (null, or an empty list: none). Out: kept[b], what sequence b left (null when nothing ran);
// reused[b], how many of prompt b's tokens were not run. Every prompt runs at least its last token.
// A prompt pass runs one block of positions for its sequences, from where the one with the most
// tokens to run begins, so a sequence beside it runs some of its own prefix again
// (GenerateOptions::prefill_pass_rows says when to split the batch into passes instead).
template <Real T, Backend B>
struct PrefixReuse {
  std::vector<std::shared_ptr<const KVPrefix<T, B>>> from;
  std::vector<std::shared_ptr<const KVPrefix<T, B>>> kept;
  std::vector<std::int64_t> reused;
};

// How many leading tokens two sequences share.
inline std::size_t shared_prefix(std::span<const std::int32_t> a, std::span<const std::int32_t> b) {
  const std::size_t n = std::min(a.size(), b.size());
  return static_cast<std::size_t>(std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n), b.begin()).first - a.begin());
}

namespace generate_detail {

// Picks the next token from one row of logits.
inline std::int32_t pick(const std::vector<double>& logits, const GenerateOptions& o, Rng& rng) {
  const std::size_t n = logits.size();
  if (o.temperature == 0.0 || o.top_k == 1)
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  // Highest logit first; ties by lower id so the draw is reproducible.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return logits[a] > logits[b]; });
  std::size_t keep = n;
  if (o.top_k > 0) keep = std::min<std::size_t>(keep, static_cast<std::size_t>(o.top_k));
  std::vector<double> p(keep);
  const double top = logits[order[0]];
  double total = 0;
  for (std::size_t i = 0; i < keep; ++i) total += p[i] = std::exp((logits[order[i]] - top) / o.temperature);
  if (o.top_p < 1.0) {
    double cumulative = 0;
    std::size_t cut = keep;
    for (std::size_t i = 0; i < keep; ++i) {
      cumulative += p[i] / total;
      if (cumulative >= o.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = std::accumulate(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  }
  double u = rng.uniform() * total;
  for (std::size_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u < 0) return static_cast<std::int32_t>(order[i]);
  }
  return static_cast<std::int32_t>(order[keep - 1]);
}

// The first position each prompt must run: those before it are its left padding or tokens its
// prefix holds (every prompt runs at least its last token, whose logits pick the first new one).
template <Config C, Real T, Backend B>
std::vector<std::int64_t> prompt_starts(const CausalLM<C, T, B>& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                        const std::vector<std::int64_t>& pad, const GenerateOptions& options,
                                        const PrefixReuse<T, B>* reuse) {
  std::vector<std::int64_t> starts(pad);
  for (std::size_t b = 0; b < prompts.size() && reuse && !reuse->from.empty(); ++b) {
    const KVPrefix<T, B>* prefix = reuse->from[b].get();
    if (!prefix || prefix->tokens.empty()) continue;
    const std::string which = "mote: generate: PrefixReuse::from[" + std::to_string(b) + "]";
    const std::size_t layers = static_cast<std::size_t>(model.sizes().n_layers);
    if (prefix->cache.layers.size() != layers || prefix->cache.length() != static_cast<std::int64_t>(prefix->tokens.size()))
      throw value_error(which + " holds " + std::to_string(prefix->cache.layers.size()) + " layers of " +
                        std::to_string(prefix->cache.length()) + " positions for " + std::to_string(prefix->tokens.size()) +
                        " tokens; expected a prefix this model's generate kept (" + std::to_string(layers) + " layers)");
    if (prefix->cache.layers.front().precision() != options.kv_cache)
      throw value_error(which + " was kept by a " + kv_precision_name(prefix->cache.layers.front().precision()) +
                        " cache; this generation's is " + kv_precision_name(options.kv_cache) + "; expected the same");
    starts[b] += static_cast<std::int64_t>(std::min(shared_prefix(prompts[b], prefix->tokens), prompts[b].size() - 1));
  }
  return starts;
}

// One prompt pass: these sequences run positions [start, end) together.
struct PromptPass {
  std::int64_t start = 0;
  std::vector<std::size_t> sequences;
};

// Splits the sequences into prompt passes that run the fewest rows, counting `pass_rows` for each
// pass: sorted by start, each pass takes a run of them from its first (earliest) start to `end`.
inline std::vector<PromptPass> prompt_passes(const std::vector<std::int64_t>& starts, std::int64_t end, std::int64_t pass_rows) {
  const std::size_t n = starts.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return starts[a] < starts[b]; });
  // cost[i]: the least work for the first i sequences in order; first[i]: where its last pass begins.
  std::vector<std::int64_t> cost(n + 1, 0);
  std::vector<std::size_t> first(n + 1, 0);
  for (std::size_t i = 1; i <= n; ++i) {
    cost[i] = -1;
    for (std::size_t j = 0; j < i; ++j) {
      const std::int64_t work = cost[j] + static_cast<std::int64_t>(i - j) * (end - starts[order[j]]) + pass_rows;
      if (cost[i] < 0 || work < cost[i]) cost[i] = work, first[i] = j;
    }
  }
  std::vector<PromptPass> passes;
  for (std::size_t i = n; i > 0; i = first[i])
    passes.push_back({starts[order[first[i]]], std::vector<std::size_t>(order.begin() + static_cast<std::ptrdiff_t>(first[i]),
                                                                         order.begin() + static_cast<std::ptrdiff_t>(i))});
  std::reverse(passes.begin(), passes.end());
  return passes;
}

// Starts `cache` (sequences[r] of the batch in its row r) at position `start`: each sequence's
// positions before it are its prefix's, left padding zero.
template <Config C, Real T, Backend B>
void start_from_prefixes(const CausalLM<C, T, B>& model, std::span<const std::size_t> sequences, const std::vector<std::int64_t>& pad,
                         std::int64_t start, const PrefixReuse<T, B>& reuse, KVCache<T, B>& cache) {
  if (start == 0) return;
  const std::int64_t heads = model.sizes().n_kv_heads, dim = model.sizes().head_dim();
  for (std::size_t l = 0; l < cache.layers.size(); ++l) {
    auto& layer = cache.layers[l];
    layer.start_zeroed(static_cast<std::int64_t>(sequences.size()), heads, dim, start, model.sizes().max_seq);
    for (std::size_t r = 0; r < sequences.size(); ++r)
      if (const std::size_t b = sequences[r]; start > pad[b])
        layer.write_span(static_cast<std::int64_t>(r), pad[b], reuse.from[b]->cache.layers[l], start - pad[b]);
  }
}

inline void check_options(const GenerateOptions& o) {
  if (o.max_new_tokens < 0)
    throw value_error("mote: generate: max_new_tokens must be >= 0, got " + std::to_string(o.max_new_tokens));
  if (!(o.temperature >= 0.0) || !std::isfinite(o.temperature))
    throw value_error("mote: generate: temperature must be finite and >= 0, got " + std::to_string(o.temperature));
  if (o.top_k < 0) throw value_error("mote: generate: top_k must be >= 0 (0 = off), got " + std::to_string(o.top_k));
  if (!(o.top_p > 0.0 && o.top_p <= 1.0))
    throw value_error("mote: generate: top_p must be in (0, 1], got " + std::to_string(o.top_p));
  if (o.prefill_pass_rows < 0)
    throw value_error("mote: generate: prefill_pass_rows must be >= 0, got " + std::to_string(o.prefill_pass_rows));
}

}  // namespace generate_detail

// Generates up to max_new_tokens after each prompt; returns only the new tokens of each sequence.
// Stops a sequence at a stop token, and all of them when the context reaches max_seq.
// With `reuse`, prompts start from earlier sequences' keys and values and leave theirs (PrefixReuse).
template <Config C, Real T, Backend B>
std::vector<std::vector<std::int32_t>> generate(const CausalLM<C, T, B>& model,
                                                const std::vector<std::vector<std::int32_t>>& prompts,
                                                const GenerateOptions& options = {}, PrefixReuse<T, B>* reuse = nullptr) {
  generate_detail::check_options(options);
  const std::int64_t vocab = model.sizes().vocab, max_seq = model.sizes().max_seq;
  if (prompts.empty()) throw value_error("mote: generate: prompts is empty; expected at least one prompt");
  std::size_t longest = 0;
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) throw value_error("mote: generate: prompts[" + std::to_string(b) + "] is empty");
    if (static_cast<std::int64_t>(prompts[b].size()) > max_seq)
      throw value_error("mote: generate: prompts[" + std::to_string(b) + "] has " + std::to_string(prompts[b].size()) +
                        " tokens, more than max_seq = " + std::to_string(max_seq));
    for (std::size_t j = 0; j < prompts[b].size(); ++j)
      if (prompts[b][j] < 0 || prompts[b][j] >= vocab)
        throw value_error("mote: generate: prompts[" + std::to_string(b) + "][" + std::to_string(j) + "] = " +
                          std::to_string(prompts[b][j]) + " is outside [0, vocab) with vocab = " + std::to_string(vocab));
    longest = std::max(longest, prompts[b].size());
  }
  if (options.pad_token < 0 || options.pad_token >= vocab)
    throw value_error("mote: generate: pad_token " + std::to_string(options.pad_token) + " is outside [0, vocab)");
  if (!options.sequence_seeds.empty() && options.sequence_seeds.size() != prompts.size())
    throw value_error("mote: generate: sequence_seeds has " + std::to_string(options.sequence_seeds.size()) +
                      " seeds for " + std::to_string(prompts.size()) + " prompts; expected one per prompt or none");

  if (reuse && !reuse->from.empty() && reuse->from.size() != prompts.size())
    throw value_error("mote: generate: PrefixReuse::from has " + std::to_string(reuse->from.size()) + " prefixes for " +
                      std::to_string(prompts.size()) + " prompts; expected one (or null) per prompt, or none");
  if (reuse && !options.use_cache)
    throw value_error("mote: generate: PrefixReuse keeps keys and values, which use_cache = false does not; set use_cache");

  autograd::no_grad off;
  const std::size_t batch = prompts.size();
  if (reuse) {
    reuse->reused.assign(batch, 0);
    reuse->kept.assign(batch, nullptr);
  }
  const auto nb = static_cast<std::int64_t>(batch);
  std::vector<std::int64_t> pad(batch);
  bool padded = false;
  for (std::size_t b = 0; b < batch; ++b) padded |= (pad[b] = static_cast<std::int64_t>(longest - prompts[b].size())) > 0;

  // The whole (left-padded) token history, [batch][time].
  std::vector<std::vector<std::int32_t>> history(batch);
  for (std::size_t b = 0; b < batch; ++b) {
    history[b].assign(static_cast<std::size_t>(pad[b]), options.pad_token);
    history[b].insert(history[b].end(), prompts[b].begin(), prompts[b].end());
  }

  // Runs tokens [from, to) of the listed sequences' histories and writes the logits of step to - 1
  // into their rows, [batch][vocab].
  std::vector<std::vector<double>> rows(batch, std::vector<double>(static_cast<std::size_t>(vocab)));
  std::vector<std::size_t> everyone(batch);
  std::iota(everyone.begin(), everyone.end(), std::size_t{0});
  auto run = [&](std::span<const std::size_t> sequences, std::int64_t from, std::int64_t to, KVCache<T, B>* cache) {
    const std::int64_t len = to - from, n = static_cast<std::int64_t>(sequences.size());
    std::vector<std::int32_t> ids, pos;
    for (const std::size_t b : sequences)
      for (std::int64_t t = from; t < to; ++t) {
        ids.push_back(history[b][static_cast<std::size_t>(t)]);
        pos.push_back(static_cast<std::int32_t>(std::max<std::int64_t>(0, t - pad[b])));
      }
    const auto id_t = Tensor<std::int32_t, B>::from_vector({n, len}, ids);
    const auto pos_t = Tensor<std::int32_t, B>::from_vector({n, len}, pos);
    Tensor<std::uint8_t, B> mask_t;
    if (padded) {
      std::vector<std::uint8_t> m;
      for (const std::size_t b : sequences)
        for (std::int64_t q = 0; q < len; ++q)
          for (std::int64_t k = 0; k < to; ++k) m.push_back(k >= pad[b] ? 1 : 0);
      mask_t = Tensor<std::uint8_t, B>::from_vector({n, len, to}, m);
    }
    std::shared_ptr<const AdapterContext> routing;
    if (options.route) {
      if (sequences.size() == batch) {
        routing = options.route(RoutingRequest{.history = history, .padding = pad, .from = from, .to = to, .sequences = {}});
      } else {  // some of the sequences (a prompt pass, or steps after finished ones left): theirs alone
        std::vector<std::vector<std::int32_t>> theirs;
        std::vector<std::int64_t> their_pad;
        for (const std::size_t b : sequences) theirs.push_back(history[b]), their_pad.push_back(pad[b]);
        routing = options.route(RoutingRequest{.history = theirs, .padding = their_pad, .from = from, .to = to, .sequences = sequences});
      }
    }
    const auto out = model.logits(id_t,
                                  ForwardOptions<B>{.positions = &pos_t, .mask = padded ? &mask_t : nullptr,
                                                    .adapter = std::move(routing), .logits_to_keep = 1},
                                  cache);
    const std::vector<T> last = out.value().to_vector();
    for (std::size_t r = 0; r < sequences.size(); ++r)
      for (std::int64_t v = 0; v < vocab; ++v)
        rows[sequences[r]][static_cast<std::size_t>(v)] =
            static_cast<double>(last[r * static_cast<std::size_t>(vocab) + static_cast<std::size_t>(v)]);
  };

  std::vector<Rng> streams;
  streams.reserve(batch);
  for (std::size_t b = 0; b < batch; ++b)
    streams.emplace_back(options.sequence_seeds.empty() ? options.seed + b * 0x9e3779b97f4a7c15ULL : options.sequence_seeds[b]);
  std::vector<std::vector<std::int32_t>> generated(batch);
  std::vector<bool> done(batch, false);
  const std::int64_t room = static_cast<std::int64_t>(longest) + options.max_new_tokens;
  // An empty cache of this generation's precision, with room for `positions`.
  const auto new_cache = [&](std::int64_t positions) {
    KVCache<T, B> fresh = model.make_cache();
    fresh.store_as(options.kv_cache);
    fresh.reserve(positions);
    return fresh;
  };
  // Makes `into` hold `rows` sequences of `positions` zeroed positions (left padding, until written).
  const auto start_zeroed = [&](KVCache<T, B>& into, std::size_t rows, std::int64_t positions) {
    for (auto& layer : into.layers)
      layer.start_zeroed(static_cast<std::int64_t>(rows), model.sizes().n_kv_heads, model.sizes().head_dim(), positions, max_seq);
  };
  // Sequence b's positions, after its padding, from row from_row of `from` into row into_row of `into`.
  const auto copy_sequence = [&](KVCache<T, B>& into, std::size_t into_row, const KVCache<T, B>& from, std::size_t from_row,
                                 std::size_t b) {
    for (std::size_t l = 0; l < into.layers.size(); ++l)
      into.layers[l].write_span(static_cast<std::int64_t>(into_row), pad[b], from.layers[l], from.length() - pad[b],
                                static_cast<std::int64_t>(from_row), pad[b]);
  };
  KVCache<T, B> cache = new_cache(room);
  auto length = static_cast<std::int64_t>(longest);
  // Runs the prompts' tokens that their prefixes do not hold, into the cache. Several passes, each
  // into a cache of its own whose rows are then copied into the batch's, when that is less work.
  const auto run_prompts = [&] {
    const std::vector<std::int64_t> starts = generate_detail::prompt_starts(model, prompts, pad, options, reuse);
    const auto passes = generate_detail::prompt_passes(starts, length, options.prefill_pass_rows);
    const PrefixReuse<T, B> none;
    const PrefixReuse<T, B>& from = reuse ? *reuse : none;
    if (passes.size() == 1) {
      generate_detail::start_from_prefixes(model, everyone, pad, passes.front().start, from, cache);
      run(everyone, passes.front().start, length, &cache);
    } else {
      start_zeroed(cache, batch, length);
      for (const auto& pass : passes) {
        KVCache<T, B> part = new_cache(length);
        generate_detail::start_from_prefixes(model, pass.sequences, pad, pass.start, from, part);
        run(pass.sequences, pass.start, length, &part);
        for (std::size_t r = 0; r < pass.sequences.size(); ++r) copy_sequence(cache, pass.sequences[r], part, r, pass.sequences[r]);
      }
    }
    if (!reuse) return;
    for (const auto& pass : passes)
      for (const std::size_t b : pass.sequences) reuse->reused[b] = std::max<std::int64_t>(0, pass.start - pad[b]);
  };
  // The sequences whose rows the cache holds, in row order.
  std::vector<std::size_t> live = everyone;
  // Sequence b's prefix for a later prompt, from cache row r: the positions it ran or took, and their tokens.
  const auto keep_row = [&](std::size_t b, std::size_t r) {
    const std::int64_t count = std::min(static_cast<std::int64_t>(longest + generated[b].size()), cache.length()) - pad[b];
    if (count <= 0) return;  // no new token asked for: a sequence whose padding outlasts the copied prefixes
    auto prefix = std::make_shared<KVPrefix<T, B>>();
    prefix->tokens.assign(history[b].begin() + pad[b], history[b].begin() + pad[b] + count);
    for (const auto& layer : cache.layers) prefix->cache.layers.push_back(layer.sequence_span(static_cast<std::int64_t>(r), pad[b], count));
    reuse->kept[b] = std::move(prefix);
  };
  const auto keep = [&] {
    if (!reuse || cache.length() == 0) return;
    for (std::size_t r = 0; r < live.size(); ++r) keep_row(live[r], r);
  };
  // Once a quarter of the cache's rows belong to finished sequences, they leave it (their prefixes
  // kept first): each later step runs the others alone, for one copy of the cache.
  const auto drop_finished = [&] {
    std::vector<std::size_t> staying;
    for (const std::size_t b : live)
      if (!done[b]) staying.push_back(b);
    const std::size_t finished = live.size() - staying.size();
    if (finished == 0 || staying.empty() || 4 * finished < live.size()) return;
    KVCache<T, B> smaller = new_cache(room);
    start_zeroed(smaller, staying.size(), cache.length());
    for (std::size_t r = 0, kept_row = 0; r < live.size(); ++r) {
      const std::size_t b = live[r];
      if (done[b] && reuse) keep_row(b, r);
      if (!done[b]) copy_sequence(smaller, kept_row++, cache, r, b);
    }
    cache = std::move(smaller);
    live = std::move(staying);
  };
  // One token for every sequence; false once all are done or the context is full.
  auto advance = [&](std::int64_t step) {
    if (!options.use_cache) run(everyone, 0, length, nullptr);
    else if (step == 0) run_prompts();
    else run(live, length - 1, length, &cache);
    bool all_done = true;
    for (std::size_t b = 0; b < batch; ++b) {
      std::int32_t token = options.pad_token;
      if (!done[b]) {
        if (options.shape_logits) options.shape_logits(b, rows[b]);
        token = generate_detail::pick(rows[b], options, streams[b]);
        generated[b].push_back(token);
        if (options.on_token) options.on_token(b, token);
        done[b] = std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token) != options.stop_tokens.end() ||
                  (options.stop_when && options.stop_when(b, generated[b]));
      }
      history[b].push_back(token);
      all_done = all_done && done[b];
    }
    ++length;
    const bool going_on = !all_done && length <= max_seq;  // the next step would feed more than max_seq tokens
    if (going_on && options.use_cache) drop_finished();
    return going_on;
  };
  if (options.max_new_tokens == 0 || !advance(0)) {
    keep();
    return generated;
  }
  auto rest = [&] {
    for (std::int64_t step = 1; step < options.max_new_tokens; ++step)
      if (!advance(step)) break;
  };
  // The prompt ran with every thread free for its large products; each later token is a handful of
  // small ones, around which the backend may hold resources (the CPU a spinning thread team).
  if (options.use_cache) {
    DecodeLoop decode{.rows = nb, .spin_threads = options.spin_threads, .constants = {}};
    // The visitor only reads: the weights are named constant for the loop, which changes none.
    const_cast<CausalLM<C, T, B>&>(model).for_each_parameter(
        [&](const std::string&, autograd::Var<T, B>& p) { decode.constants.push_back(p.value().data()); });
    backend_traits<B>::run_decode_loop(decode, rest);
  } else {
    rest();
  }
  keep();
  return generated;
}

// One prompt.
template <Config C, Real T, Backend B>
std::vector<std::int32_t> generate(const CausalLM<C, T, B>& model, const std::vector<std::int32_t>& prompt,
                                   const GenerateOptions& options = {}) {
  return generate(model, std::vector<std::vector<std::int32_t>>{prompt}, options).front();
}

}  // namespace mote::nn
