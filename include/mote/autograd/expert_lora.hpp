#pragma once
// expert_lora: the fused LoRA expert mix of MoTE and its baselines. Tokens are grouped by expert,
// so each expert runs two skinny GEMMs over its own tokens only: the cost follows the number of
// (token, expert) assignments, not the number of experts. Backward is grouped the same way.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <typeindex>
#include <vector>

#include "mote/autograd/matmul.hpp"
#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/elementwise.hpp"
#include "mote/backend/cpu/gemm.hpp"
#include "mote/backend/cpu/index.hpp"
#include "mote/backend/cpu/reduce.hpp"
#include "mote/core/error.hpp"

namespace mote::autograd {

// Which tokens each expert serves, grouped by expert. An assignment is one (token, expert) pair
// with a constant weight; `source` keeps its position in the caller's order (for gate gradients).
struct ExpertPlan {
  std::int64_t tokens = 0;
  std::int64_t experts = 0;
  std::vector<std::int64_t> offsets;  // experts + 1 bounds into the arrays below
  std::vector<std::int32_t> token;    // row of x, ascending within each expert
  std::vector<double> weight;
  std::vector<std::int32_t> source;
  // No expert serves a token twice, so an expert's rows scatter back without colliding.
  bool distinct_tokens = true;
  // `token` in a device backend's memory, made by the first layer that gathers rows and shared by
  // the rest of the step's layers: each upload waits for the device to drain its queue.
  mutable std::map<std::type_index, std::shared_ptr<const void>> device_tokens;

  std::int64_t assignments() const { return static_cast<std::int64_t>(token.size()); }
  std::int64_t count(std::int64_t e) const { return offsets[static_cast<std::size_t>(e + 1)] - offsets[static_cast<std::size_t>(e)]; }
  std::int64_t begin(std::int64_t e) const { return offsets[static_cast<std::size_t>(e)]; }
  // Expert e's tokens form one run first, first + 1, ...: its rows of x can be used in place.
  bool contiguous(std::int64_t e) const {
    const std::int64_t n = count(e), b = begin(e);
    return n > 0 && token[static_cast<std::size_t>(b + n - 1)] - token[static_cast<std::size_t>(b)] == n - 1;
  }

  // Groups assignments (token_of[i], expert_of[i], weight_of[i]) by expert with a stable counting sort.
  static ExpertPlan group(std::int64_t tokens, std::int64_t experts, const std::vector<std::int32_t>& token_of,
                          const std::vector<std::int32_t>& expert_of, const std::vector<double>& weight_of) {
    if (token_of.size() != expert_of.size() || token_of.size() != weight_of.size())
      throw value_error("mote: ExpertPlan::group: token, expert and weight lists differ in length (" +
                        std::to_string(token_of.size()) + ", " + std::to_string(expert_of.size()) + ", " +
                        std::to_string(weight_of.size()) + ")");
    ExpertPlan p;
    p.tokens = tokens;
    p.experts = experts;
    p.offsets.assign(static_cast<std::size_t>(experts + 1), 0);
    for (std::size_t i = 0; i < expert_of.size(); ++i) {
      if (expert_of[i] < 0 || expert_of[i] >= experts)
        throw value_error("mote: ExpertPlan::group: assignment " + std::to_string(i) + " names expert " +
                          std::to_string(expert_of[i]) + "; expected 0 <= expert < " + std::to_string(experts));
      if (token_of[i] < 0 || token_of[i] >= tokens)
        throw value_error("mote: ExpertPlan::group: assignment " + std::to_string(i) + " names token " +
                          std::to_string(token_of[i]) + "; expected 0 <= token < " + std::to_string(tokens));
      ++p.offsets[static_cast<std::size_t>(expert_of[i] + 1)];
    }
    for (std::int64_t e = 0; e < experts; ++e) p.offsets[static_cast<std::size_t>(e + 1)] += p.offsets[static_cast<std::size_t>(e)];
    const std::size_t m = token_of.size();
    p.token.resize(m);
    p.weight.resize(m);
    p.source.resize(m);
    std::vector<std::int64_t> next(p.offsets.begin(), p.offsets.end() - 1);
    for (std::size_t i = 0; i < m; ++i) {
      const auto at = static_cast<std::size_t>(next[static_cast<std::size_t>(expert_of[i])]++);
      p.token[at] = token_of[i];
      p.weight[at] = weight_of[i];
      p.source[at] = static_cast<std::int32_t>(i);
    }
    std::vector<std::int64_t> seen_by(static_cast<std::size_t>(tokens), -1);  // the last expert that served each token
    for (std::int64_t e = 0; e < experts && p.distinct_tokens; ++e)
      for (std::int64_t i = p.begin(e); i < p.begin(e) + p.count(e); ++i) {
        std::int64_t& seen = seen_by[static_cast<std::size_t>(p.token[static_cast<std::size_t>(i)])];
        p.distinct_tokens = p.distinct_tokens && seen != e;
        seen = e;
      }
    return p;
  }
};

namespace expert_detail {

template <Real T, Backend B>
void expect_expert_shapes(const std::vector<Var<T, B>>& lora_a, const std::vector<Var<T, B>>& lora_b, std::int64_t in,
                          std::int64_t out, std::int64_t experts) {
  if (static_cast<std::int64_t>(lora_a.size()) != experts || static_cast<std::int64_t>(lora_b.size()) != experts)
    throw value_error("mote: expert_lora: the plan routes to " + std::to_string(experts) + " experts but " +
                      std::to_string(lora_a.size()) + " A and " + std::to_string(lora_b.size()) + " B matrices were given");
  for (std::int64_t e = 0; e < experts; ++e) {
    const auto& a = lora_a[static_cast<std::size_t>(e)];
    const auto& b = lora_b[static_cast<std::size_t>(e)];
    expect_defined(a, "expert_lora", "lora_a");
    expect_defined(b, "expert_lora", "lora_b");
    const std::int64_t r = a.shape().rank() == 2 ? a.shape()[0] : -1;
    if (a.shape().rank() != 2 || a.shape()[1] != in || !(b.shape() == Shape{out, r}))
      throw shape_error("mote: expert_lora: expert " + std::to_string(e) + " has A " + a.shape().str() + " and B " +
                        b.shape().str() + "; expected A [r, " + std::to_string(in) + "] and B [" + std::to_string(out) +
                        ", r]");
  }
}

// Consecutive tokens one expert serves: rows token.. of x and y, rows offset.. of the expert's own
// [n, r] arrays (offset counts from the expert's first assignment).
struct Run {
  std::int64_t token, offset, length;
};

// Runs this short or shorter on average are gathered instead: a GEMM per run would cost more in
// calls than the gather and scatter save. On a device backend each GEMM is a kernel launch, and a
// step's runs (three per sequence) are many small launches, so only a single run stays in place.
template <Backend B>
inline constexpr std::int64_t min_mean_run = B::host_accessible ? 16 : std::numeric_limits<std::int64_t>::max();

// Expert e's runs when its rows are used in place (one run, or long ones such as a step's stretch
// of every sequence); empty when they are gathered and scattered instead.
inline std::vector<Run> in_place_runs(const ExpertPlan& plan, std::int64_t e, std::int64_t min_mean_run) {
  const std::int64_t n = plan.count(e), first = plan.begin(e);
  std::vector<Run> runs;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t token = plan.token[static_cast<std::size_t>(first + i)];
    if (!runs.empty() && runs.back().token + runs.back().length == token) ++runs.back().length;
    else runs.push_back({token, i, 1});
  }
  if (runs.size() > 1 && n / static_cast<std::int64_t>(runs.size()) < min_mean_run) runs.clear();
  return runs;
}

// An expert's runs share the threads of a host backend when they are several and each run's
// products are too small to be threaded inside gemm (under 2M multiply-adds), yet together worth
// a fork (1M): a step's stretch of each sequence.
inline bool runs_share_threads(const std::vector<Run>& runs, std::int64_t macs_per_row) {
  std::int64_t rows = 0;
  for (const Run& run : runs) rows += run.length;
  const double macs = double(rows) * double(macs_per_row);
  return runs.size() > 1 && macs >= double(1 << 20) && macs / double(runs.size()) < double(1 << 21);
}

// body(run) for every run, shared among the threads where runs_share_threads; each run writes its
// own rows, so they never collide.
template <Backend B, class Body>
void for_each_run(const std::vector<Run>& runs, std::int64_t macs_per_row, const Body& body) {
  if constexpr (B::host_accessible) {
    if (runs_share_threads(runs, macs_per_row)) {  // not an `if` clause: see gemm.hpp's batched GEMM
#pragma omp parallel for schedule(dynamic, 1)
      for (std::size_t i = 0; i < runs.size(); ++i) body(runs[i]);
      return;
    }
  }
  for (const Run& run : runs) body(run);
}

// body(lo, hi) over column ranges covering [0, columns): two halves on two threads where the runs
// share the threads (a weight gradient summed over short runs), else the whole range at once.
template <Backend B, class Body>
void for_column_ranges(std::int64_t columns, const std::vector<Run>& runs, std::int64_t macs_per_row,
                       const Body& body) {
  if constexpr (B::host_accessible) {
    if (columns >= 64 && runs_share_threads(runs, macs_per_row)) {
#pragma omp parallel for schedule(static)
      for (int half = 0; half < 2; ++half) body(columns * half / 2, columns * (half + 1) / 2);
      return;
    }
  }
  body(std::int64_t{0}, columns);
}

// The plan's token list where B's kernels can read it: the plan's own array on a host backend, a
// copy in B's memory otherwise (made once per op and kept for its backward).
template <Backend B>
struct TokenIndex {
  Tensor<std::int32_t, B> copy;
  const std::int32_t* data = nullptr;

  // `needed`: some expert gathers rows; otherwise nothing is copied.
  TokenIndex(const ExpertPlan& plan, bool needed) {
    if constexpr (B::host_accessible) {
      data = plan.token.data();
    } else if (needed && !plan.token.empty()) {
      std::shared_ptr<const void>& cached = plan.device_tokens[std::type_index(typeid(B))];
      if (!cached)
        cached = std::make_shared<const Tensor<std::int32_t, B>>(
            Tensor<std::int32_t, B>::from_vector({plan.assignments()}, plan.token));
      copy = *static_cast<const Tensor<std::int32_t, B>*>(cached.get());
      data = copy.data();
    }
  }
};

// Each assignment's coefficient, scale * weight * gate. An expert whose assignments share one value
// (no gate: a single LoRA, MoTE's alpha mix) is scaled by that scalar, and the per-assignment array
// is copied to B only when some expert's values differ.
template <Real T, Backend B>
struct Coefficients {
  std::vector<std::optional<T>> uniform;  // per expert
  Tensor<T, B> per_assignment;            // defined when some expert is not uniform

  Coefficients(const ExpertPlan& plan, T scale, const std::vector<T>& gate_values) {
    std::vector<T> host(static_cast<std::size_t>(plan.assignments()));
    for (std::size_t i = 0; i < host.size(); ++i)
      host[i] = scale * static_cast<T>(plan.weight[i]) *
                (gate_values.empty() ? T(1) : gate_values[static_cast<std::size_t>(plan.source[i])]);
    bool all_uniform = true;
    for (std::int64_t e = 0; e < plan.experts; ++e) {
      const auto first = host.begin() + plan.begin(e), last = first + plan.count(e);
      const bool same = first == last || std::all_of(first, last, [&](T c) { return c == *first; });
      uniform.push_back(same && first != last ? std::optional<T>(*first) : std::nullopt);
      all_uniform = all_uniform && same;
    }
    if (!all_uniform) per_assignment = Tensor<T, B>::from_vector({plan.assignments()}, host);
  }

  // dst [n, cols] = the coefficient of each of expert e's n rows times src (src may be dst).
  // (Not named scale_rows: a member of that name would hide the kernel from the call below.)
  void apply(const ExpertPlan& plan, std::int64_t e, const T* src, std::int64_t cols, T* dst) const {
    const std::int64_t n = plan.count(e);
    if (const auto& c = uniform[static_cast<std::size_t>(e)]) {
      const T factor = *c;
      const std::int64_t count = n * cols;
      MOTE_CALL_KERNEL(B, scale_forward, src, factor, dst, count);
    } else {
      const T* row_coef = per_assignment.data() + plan.begin(e);
      MOTE_CALL_KERNEL(B, scale_rows, src, row_coef, n, cols, dst);
    }
  }
};

// Rows of `src` [tokens, cols] that expert e serves, gathered into `scratch`.
template <Real T, Backend B>
const T* expert_rows(const ExpertPlan& plan, const TokenIndex<B>& tokens, std::int64_t e, const T* src,
                     std::int64_t cols, Tensor<T, B>& scratch) {
  const std::int64_t n = plan.count(e);
  scratch = Tensor<T, B>({n, cols});
  T* dst = scratch.data();
  const std::int32_t* index = tokens.data + plan.begin(e);
  MOTE_CALL_KERNEL(B, index_gather, src, std::int64_t{1}, plan.tokens, cols, index, n, dst);
  return scratch.data();
}

// dst rows of expert e += rows [n, cols], by a scatter-add (every element at once when no token repeats).
template <Real T, Backend B>
void add_expert_rows(const ExpertPlan& plan, const TokenIndex<B>& tokens, std::int64_t e, const T* rows,
                     std::int64_t cols, T* dst) {
  const std::int64_t n = plan.count(e);
  const std::int32_t* index = tokens.data + plan.begin(e);
  if (plan.distinct_tokens)
    MOTE_CALL_KERNEL(B, index_scatter_add_distinct, rows, std::int64_t{1}, n, cols, index, plan.tokens, dst);
  else
    MOTE_CALL_KERNEL(B, index_scatter_add, rows, std::int64_t{1}, n, cols, index, plan.tokens, dst);
}

// C = first + second + beta * C: one pass over C where the backend fuses a shallow second term
// into the first product (gemm_sum), two products elsewhere.
template <Real T, Backend B>
void gemm_plus(std::int64_t m, std::int64_t n, const backend::GemmTerm<T>& first, const backend::GemmTerm<T>& second,
               T beta, T* c, std::int64_t ldc) {
  if constexpr (requires { gemm_sum(B{}, m, n, T(1), first, second, beta, c, ldc); }) {
    gemm_sum(B{}, m, n, T(1), first, second, beta, c, ldc);
  } else {
    MOTE_CALL_KERNEL(B, gemm, first.trans_a, first.trans_b, m, n, first.k, T(1), first.a, first.lda, first.b, first.ldb,
                     beta, c, ldc);
    MOTE_CALL_KERNEL(B, gemm, second.trans_a, second.trans_b, m, n, second.k, T(1), second.a, second.lda, second.b,
                     second.ldb, T(1), c, ldc);
  }
}

// The expert that serves every token as one run, or -1.
inline std::int64_t covering_expert(const ExpertPlan& plan) {
  for (std::int64_t e = 0; e < plan.experts; ++e)
    if (plan.tokens > 0 && plan.count(e) == plan.tokens && plan.contiguous(e)) return e;
  return -1;
}

// Where the frozen product comes from: a Var computed before (the mix is added to a copy of it),
// or a projection's weights, multiplied here so its output and gradient take no extra pass.
template <Real T, Backend B>
struct BaseSource {
  const Var<T, B>* base = nullptr;
  const Projection<T, B>* projection = nullptr;
  const Var<T, B>* x = nullptr;  // the projection's input
};

template <Real T, Backend B>
Var<T, B> mix(BaseSource<T, B> source, const Var<T, B>& x, const std::vector<Var<T, B>>& lora_a,
              const std::vector<Var<T, B>>& lora_b, std::shared_ptr<const ExpertPlan> plan, T scale,
              const Var<T, B>* gate) {
  expect_defined(x, "expert_lora", "x");
  if (!plan) throw value_error("mote: expert_lora: no routing plan was given");
  const std::int64_t in = x.shape()[-1];
  const std::int64_t tokens = x.numel() / std::max<std::int64_t>(in, 1);
  if (tokens != plan->tokens)
    throw shape_error("mote: expert_lora: x " + x.shape().str() + " must have the plan's " + std::to_string(plan->tokens) +
                      " token rows");
  std::int64_t out = 0;
  const Projection<T, B>* proj = source.projection;
  if (proj) {
    expect_defined(proj->weight, "expert_lora", "projection weight");
    expect_defined(*source.x, "expert_lora", "projection input");
    if (proj->weight.shape().rank() != 2 || proj->in_features() != in || !(source.x->shape() == x.shape()))
      throw shape_error("mote: expert_lora: projection weight " + proj->weight.shape().str() + " and its input " +
                        source.x->shape().str() + " must match x " + x.shape().str() + " (" + std::to_string(in) +
                        " input features)");
    out = proj->out_features();
    if (proj->bias.defined() && !(proj->bias.shape() == Shape{out}))
      throw shape_error("mote: expert_lora: projection bias " + proj->bias.shape().str() + "; expected [" +
                        std::to_string(out) + "]");
  } else {
    expect_defined(*source.base, "expert_lora", "base");
    out = source.base->shape()[-1];
    if (source.base->numel() != tokens * out)
      throw shape_error("mote: expert_lora: x " + x.shape().str() + " and base " + source.base->shape().str() +
                        " must both have the plan's " + std::to_string(plan->tokens) + " token rows");
  }
  const std::int64_t experts = plan->experts;
  expect_expert_shapes(lora_a, lora_b, in, out, experts);
  if (gate) {
    expect_defined(*gate, "expert_lora", "gate");
    if (gate->numel() != plan->assignments())
      throw shape_error("mote: expert_lora: gate " + gate->shape().str() + " must hold one weight per assignment (" +
                        std::to_string(plan->assignments()) + ")");
  }

  const Coefficients<T, B> coef(*plan, scale, gate ? gate->value().contiguous().to_vector() : std::vector<T>{});
  const Tensor<T, B> xv = x.value().contiguous();
  std::vector<std::vector<Run>> runs(static_cast<std::size_t>(experts));
  bool gathers = false;
  for (std::int64_t e = 0; e < experts; ++e) {
    runs[static_cast<std::size_t>(e)] = in_place_runs(*plan, e, min_mean_run<B>);
    gathers = gathers || (plan->count(e) > 0 && runs[static_cast<std::size_t>(e)].empty());
  }
  const TokenIndex<B> token_index(*plan, gathers);

  std::vector<Tensor<T, B>> a_values, b_values, hidden(static_cast<std::size_t>(experts));
  for (std::int64_t e = 0; e < experts; ++e) {
    a_values.push_back(lora_a[static_cast<std::size_t>(e)].value().contiguous());
    b_values.push_back(lora_b[static_cast<std::size_t>(e)].value().contiguous());
  }
  // An expert that serves every token as one run (a single LoRA, MoTE's shared expert) goes first:
  // its rank-r update rides inside the frozen product (gemm_plus), which writes y (and, in
  // backward, x's gradient) outright, so no pass over y is spent on the update alone.
  const std::int64_t cover = covering_expert(*plan);
  std::vector<std::int64_t> order;
  if (cover >= 0) order.push_back(cover);
  for (std::int64_t e = 0; e < experts; ++e)
    if (e != cover) order.push_back(e);

  const bool in_out = proj && proj->weight_in_out;
  const std::int64_t ldw = in_out ? out : in;
  Tensor<T, B> y, weight_value, base_input;
  bool projected = false;
  // y = x_base W (+ bias) + update + beta * y, with an optional rank-r update hs B^T.
  auto write_projection = [&](T beta, const T* scaled_hidden, const T* up, std::int64_t r) {
    const backend::GemmTerm<T> frozen{false, !in_out, in, base_input.data(), in, weight_value.data(), ldw};
    if (scaled_hidden)
      gemm_plus<T, B>(tokens, out, frozen, {false, true, r, scaled_hidden, r, up, r}, beta, y.data(), out);
    else
      MOTE_CALL_KERNEL(B, gemm, false, !in_out, tokens, out, in, T(1), base_input.data(), in, weight_value.data(), ldw,
                       beta, y.data(), out);
    if (proj->bias.defined()) {
      const Tensor<T, B> bias_value = proj->bias.value().contiguous();
      MOTE_CALL_KERNEL(B, add_row_vector, y.data(), bias_value.data(), tokens, out);
    }
    projected = true;
  };
  if (proj) {
    Shape out_shape = x.shape();
    out_shape[out_shape.rank() - 1] = out;
    y = Tensor<T, B>(out_shape);
    weight_value = proj->weight.value().contiguous();
    base_input = source.x->value().contiguous();
    if (cover < 0) write_projection(T(0), nullptr, nullptr, 0);
  } else {
    y = source.base->value().clone();
  }
  for (const std::int64_t e : order) {
    const std::int64_t n = plan->count(e);
    if (n == 0) continue;
    const auto es = static_cast<std::size_t>(e);
    const std::int64_t r = a_values[es].shape()[0];
    Tensor<T, B> h({n, r}), hs({n, r});
    if (!runs[es].empty()) {
      for_each_run<B>(runs[es], r * in, [&](const Run& run) {
        MOTE_CALL_KERNEL(B, gemm, false, true, run.length, r, in, T(1), xv.data() + run.token * in, in,
                         a_values[es].data(), in, T(0), h.data() + run.offset * r, r);
      });
    } else {
      Tensor<T, B> gathered;
      const T* xe = expert_rows(*plan, token_index, e, xv.data(), in, gathered);
      MOTE_CALL_KERNEL(B, gemm, false, true, n, r, in, T(1), xe, in, a_values[es].data(), in, T(0), h.data(), r);
    }
    coef.apply(*plan, e, h.data(), r, hs.data());
    if (proj && !projected && e == cover) {  // one run over every token
      write_projection(T(0), hs.data(), b_values[es].data(), r);
    } else if (!runs[es].empty()) {
      for_each_run<B>(runs[es], out * r, [&](const Run& run) {
        MOTE_CALL_KERNEL(B, gemm, false, true, run.length, out, r, T(1), hs.data() + run.offset * r, r,
                         b_values[es].data(), r, T(1), y.data() + run.token * out, out);
      });
    } else {
      Tensor<T, B> delta({n, out});
      MOTE_CALL_KERNEL(B, gemm, false, true, n, out, r, T(1), hs.data(), r, b_values[es].data(), r, T(0), delta.data(), out);
      add_expert_rows<T, B>(*plan, token_index, e, delta.data(), out, y.data());
    }
    hidden[es] = std::move(h);  // unscaled x A^T, for the B and gate gradients
  }
  if (proj && !projected) write_projection(T(1), nullptr, nullptr, 0);

  // Inputs: x, every A, every B, the gate, then the base (or the projection's input, weight, bias).
  std::vector<Var<T, B>> inputs{x};
  inputs.insert(inputs.end(), lora_a.begin(), lora_a.end());
  inputs.insert(inputs.end(), lora_b.begin(), lora_b.end());
  if (gate) inputs.push_back(*gate);
  const std::size_t tail = inputs.size();
  if (proj) {
    inputs.push_back(*source.x);
    inputs.push_back(proj->weight);
    if (proj->bias.defined()) inputs.push_back(proj->bias);
  } else {
    inputs.push_back(*source.base);
  }
  const bool has_gate = gate != nullptr, fused = proj != nullptr, has_bias = proj && proj->bias.defined();
  // The weight gradient needs the projection's input; keep it only when the weight trains.
  if (!(proj && proj->weight.requires_grad())) base_input = Tensor<T, B>();
  // The experts read x_base itself when there is no dropout: then both gradients share one buffer.
  const bool same_input = proj && source.x->node() == x.node();
  auto backward = [plan, token_index, runs, xv, a_values, b_values, hidden, coef, in, out, experts, order, cover, has_gate, scale, tail,
                   fused, same_input, has_bias, in_out, ldw, weight_value, base_input](Node<T, B>& self) {
    const T* g = self.grad.data();
    const std::int64_t tokens = plan->tokens;
    auto a_index = [](std::int64_t e) { return static_cast<std::size_t>(1 + e); };
    auto b_index = [experts](std::int64_t e) { return static_cast<std::size_t>(1 + experts + e); };
    auto project_back = [&](T* gxb, T beta) {  // gxb = g W^T (in the weight's layout) + beta * gxb
      MOTE_CALL_KERNEL(B, gemm, false, in_out, tokens, in, out, T(1), g, out, weight_value.data(), ldw, beta, gxb, in);
    };
    // x's gradient: a new buffer is written first by the covering expert (beta 0), else by the
    // frozen product's input gradient when x_base is x, else zero-filled.
    GradSlot<T> gx = input_grad_slot(self, 0);
    bool projected_back = false;
    if (gx.data && gx.beta == T(0) && cover < 0) {
      if (same_input) {
        project_back(gx.data, T(0));
        projected_back = true;
      } else {
        B::fill(gx.data, static_cast<std::size_t>(tokens * in), T(0));
      }
      gx.beta = T(1);
    }
    Tensor<T, B> coef_grad;  // d loss / d coef, grouped order, before the gate's own factor
    if (has_gate) coef_grad = Tensor<T, B>::zeros({std::max<std::int64_t>(plan->assignments(), 1)});
    for (const std::int64_t e : order) {
      const std::int64_t n = plan->count(e);
      if (n == 0) continue;
      const auto es = static_cast<std::size_t>(e);
      const std::int64_t r = a_values[es].shape()[0];
      // In place, the expert's rows of g and x are read run by run at their own positions; the
      // weight gradients then sum over the runs. Gathered, each is one run at token 0.
      const bool in_place = !runs[es].empty();
      Tensor<T, B> g_scratch, x_scratch;
      const T* g_rows = in_place ? g : expert_rows(*plan, token_index, e, g, out, g_scratch);
      const std::vector<Run> gathered_run{{0, 0, n}};
      const std::vector<Run>& row_runs = in_place ? runs[es] : gathered_run;
      Tensor<T, B> gh({n, r});  // d loss / d (coef * h) = g B
      for_each_run<B>(row_runs, r * out, [&](const Run& run) {
        MOTE_CALL_KERNEL(B, gemm, false, false, run.length, r, out, T(1), g_rows + run.token * out, out,
                         b_values[es].data(), r, T(0), gh.data() + run.offset * r, r);
      });
      if (const GradSlot<T> gb = input_grad_slot(self, b_index(e)); gb.data) {
        Tensor<T, B> hs({n, r});
        coef.apply(*plan, e, hidden[es].data(), r, hs.data());
        // B's gradient [out, r] sums over the runs: each thread takes rows of it.
        for_column_ranges<B>(out, row_runs, out * r, [&](std::int64_t lo, std::int64_t hi) {
          T beta = gb.beta;
          for (const Run& run : row_runs) {
            MOTE_CALL_KERNEL(B, gemm, true, false, hi - lo, r, run.length, T(1), g_rows + run.token * out + lo, out,
                             hs.data() + run.offset * r, r, beta, gb.data + lo * r, r);
            beta = T(1);
          }
        });
      }
      if (has_gate) MOTE_CALL_KERNEL(B, row_dot, gh.data(), hidden[es].data(), n, r, coef_grad.data() + plan->begin(e));
      coef.apply(*plan, e, gh.data(), r, gh.data());  // now d loss / d h
      if (const GradSlot<T> ga = input_grad_slot(self, a_index(e)); ga.data) {
        const T* x_rows = in_place ? xv.data() : expert_rows(*plan, token_index, e, xv.data(), in, x_scratch);
        for_column_ranges<B>(in, row_runs, r * in, [&](std::int64_t lo, std::int64_t hi) {
          T beta = ga.beta;
          for (const Run& run : row_runs) {
            MOTE_CALL_KERNEL(B, gemm, true, false, r, hi - lo, run.length, T(1), gh.data() + run.offset * r, r,
                             x_rows + run.token * in + lo, in, beta, ga.data + lo, in);
            beta = T(1);
          }
        });
      }
      if (gx.data && same_input && !projected_back && e == cover) {  // one run over every token
        gemm_plus<T, B>(tokens, in, {false, in_out, out, g, out, weight_value.data(), ldw},
                        {false, false, r, gh.data(), r, a_values[es].data(), in}, gx.beta, gx.data, in);
        projected_back = true;
        gx.beta = T(1);
      } else if (gx.data) {
        if (in_place) {
          for_each_run<B>(runs[es], in * r, [&](const Run& run) {
            MOTE_CALL_KERNEL(B, gemm, false, false, run.length, in, r, T(1), gh.data() + run.offset * r, r,
                             a_values[es].data(), in, gx.beta, gx.data + run.token * in, in);
          });
        } else {
          Tensor<T, B> dx({n, in});
          MOTE_CALL_KERNEL(B, gemm, false, false, n, in, r, T(1), gh.data(), r, a_values[es].data(), in, T(0), dx.data(), in);
          add_expert_rows<T, B>(*plan, token_index, e, dx.data(), in, gx.data);
        }
        gx.beta = T(1);  // only the covering expert, first in order, meets beta 0 here
      }
    }
    if (has_gate) {
      if (T* ggate = input_grad(self, static_cast<std::size_t>(1 + 2 * experts))) {
        const std::vector<T> cg = coef_grad.to_vector();
        std::vector<T> host(static_cast<std::size_t>(plan->assignments()), T(0));
        for (std::size_t i = 0; i < host.size(); ++i)
          host[static_cast<std::size_t>(plan->source[i])] = scale * static_cast<T>(plan->weight[i]) * cg[i];
        const Tensor<T, B> add = Tensor<T, B>::from_vector({static_cast<std::int64_t>(host.size())}, host);
        MOTE_CALL_KERNEL(B, axpy, T(1), add.data(), ggate, static_cast<std::int64_t>(host.size()));
      }
    }
    if (!fused) {
      pass_grad(self, tail);  // d loss / d base is g itself; last use of g
      return;
    }
    if (!projected_back) {
      if (same_input) {
        if (gx.data) project_back(gx.data, T(1));
      } else if (const GradSlot<T> gxb = input_grad_slot(self, tail); gxb.data) {
        project_back(gxb.data, gxb.beta);
      }
    }
    if (const GradSlot<T> gw = base_input.defined() ? input_grad_slot(self, tail + 1) : GradSlot<T>{}; gw.data) {
      if (in_out)
        MOTE_CALL_KERNEL(B, gemm, true, false, in, out, tokens, T(1), base_input.data(), in, g, out, gw.beta, gw.data, out);
      else
        MOTE_CALL_KERNEL(B, gemm, true, false, out, in, tokens, T(1), g, out, base_input.data(), in, gw.beta, gw.data, in);
    }
    if (has_bias)
      if (T* gbias = input_grad(self, tail + 2)) MOTE_CALL_KERNEL(B, sum_rows, g, tokens, out, gbias);
  };
  return make_result("expert_lora", std::move(y), inputs, std::move(backward));
}

}  // namespace expert_detail

// base [..., out] plus, for every assignment m = (token t, expert e), coef_m * scale * B_e A_e x_t,
// where coef_m = plan.weight[m] * gate[plan.source[m]] (gate: optional Var with one entry per
// assignment in the caller's order). x is [..., in] with plan.tokens rows; A_e [r_e, in], B_e [out, r_e].
// Gradients reach base, x, every A and B of an expert that served tokens, and the gate.
template <Real T, Backend B>
Var<T, B> expert_lora(const Var<T, B>& base, const Var<T, B>& x, const std::vector<Var<T, B>>& lora_a,
                      const std::vector<Var<T, B>>& lora_b, std::shared_ptr<const ExpertPlan> plan,
                      std::type_identity_t<T> scale, const Var<T, B>* gate = nullptr) {
  expect_defined(base, "expert_lora", "base");
  return expert_detail::mix<T, B>({.base = &base}, x, lora_a, lora_b, std::move(plan), scale, gate);
}

// The same mix added to projection(x_base), computed inside the op: no copy of the base output
// and no separate gradient buffer for it. x (the experts' input) may be x_base after dropout.
template <Real T, Backend B>
Var<T, B> expert_lora(const Projection<T, B>& projection, const Var<T, B>& x_base, const Var<T, B>& x,
                      const std::vector<Var<T, B>>& lora_a, const std::vector<Var<T, B>>& lora_b,
                      std::shared_ptr<const ExpertPlan> plan, std::type_identity_t<T> scale,
                      const Var<T, B>* gate = nullptr) {
  return expert_detail::mix<T, B>({.projection = &projection, .x = &x_base}, x, lora_a, lora_b, std::move(plan),
                                  scale, gate);
}

}  // namespace mote::autograd

namespace mote {
using autograd::expert_lora;
using autograd::ExpertPlan;
}  // namespace mote
