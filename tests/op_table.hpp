#pragma once
// The one table of op cases. Each case is a spec (name, input shapes, how inputs are drawn, the
// tolerances) and a build function generic over the element type and the backend; every
// backend's suite visits the whole table: the CPU suite checks each case in double against finite
// differences and in float against double (tests/op_harness.hpp), the CUDA suite runs the float
// op on the device against the same double reference (tests/cuda/test_cuda.cu). A new op is one
// entry here and is then tested on every backend. Boost-free, so that nvcc compiles it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/mote.hpp"

namespace mote::testing {

struct OpSpec {
  std::string name;
  std::vector<Shape> inputs;
  std::vector<bool> differentiable;  // empty: all inputs
  double lo = 0.5, hi = 1.5;         // |x| is drawn in [lo, hi]
  bool positive = false;             // no random signs (inputs of div's denominator, log)
  double float_tol = 1e-5;           // relative error of float vs double, per tensor, on any backend
  double grad_tol = 1e-6;            // relative error of analytic vs finite-difference gradient
  double fd_step = 1e-6;
  std::uint64_t seed = 1234;
  bool finite_differences = true;    // false where probing each input element would take minutes
};

// The element type and the backend of the Vars a build function receives (std::vector<Var<T, B>>).
template <class Vars>
using value_of = typename std::decay_t<Vars>::value_type::value_type;
template <class Vars>
using backend_of = typename std::decay_t<Vars>::value_type::backend_type;

// Tensors on the backend of the Vars in v: ids, masks, and values of v's element type.
template <class Vars>
Tensor<std::int32_t, backend_of<Vars>> ids_like(const Vars&, const Shape& shape, const std::vector<std::int32_t>& values) {
  return Tensor<std::int32_t, backend_of<Vars>>::from_vector(shape, values);
}
template <class Vars>
Tensor<std::uint8_t, backend_of<Vars>> mask_like(const Vars&, const Shape& shape, const std::vector<std::uint8_t>& values) {
  return Tensor<std::uint8_t, backend_of<Vars>>::from_vector(shape, values);
}
template <class Vars>
Tensor<value_of<Vars>, backend_of<Vars>> values_like(const Vars&, const Shape& shape, const std::vector<double>& values) {
  using T = value_of<Vars>;
  return Tensor<T, backend_of<Vars>>::from_vector(shape, std::vector<T>(values.begin(), values.end()));
}

// max |a - b| / max(max |b|, tiny): one relative error per tensor. A size mismatch or a NaN on one
// side only is an infinite error (std::max would skip a NaN); NaN on both sides matches.
template <class A, class B>
double relative_error(const std::vector<A>& a, const std::vector<B>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, scale = 1e-12;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    if (std::isnan(x) || std::isnan(y)) {
      if (std::isnan(x) != std::isnan(y)) return std::numeric_limits<double>::infinity();
      continue;
    }
    diff = std::max(diff, std::abs(x - y));
    scale = std::max(scale, std::abs(y));
  }
  return diff / scale;
}

template <class T>
std::vector<double> as_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Seeded inputs with |x| in [lo, hi] and, unless positive, random signs.
inline std::vector<std::vector<double>> draw_inputs(const OpSpec& spec) {
  Rng rng(spec.seed);
  std::vector<std::vector<double>> out;
  for (const auto& s : spec.inputs) {
    std::vector<double> v(static_cast<std::size_t>(s.numel()));
    for (auto& x : v) {
      x = rng.uniform(spec.lo, spec.hi);
      if (!spec.positive && rng.uniform() < 0.5) x = -x;
    }
    out.push_back(std::move(v));
  }
  return out;
}

// The drawn values as Vars of element type T on backend B, differentiable as the spec says.
template <class T, class B>
std::vector<Var<T, B>> make_vars(const OpSpec& spec, const std::vector<std::vector<double>>& values) {
  std::vector<Var<T, B>> vars;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::vector<T> host(values[i].begin(), values[i].end());
    const bool diff = spec.differentiable.empty() || spec.differentiable[i];
    vars.emplace_back(Tensor<T, B>::from_vector(spec.inputs[i], host), diff);
  }
  return vars;
}

// Random weights w so that the checked scalar is sum(out * w): every output element matters.
inline std::vector<double> seed_weights(std::int64_t n, std::uint64_t seed) {
  Rng rng(seed ^ 0x5eedULL);
  std::vector<double> w(static_cast<std::size_t>(n));
  for (auto& x : w) x = rng.uniform(-1.0, 1.0);
  return w;
}

namespace op_table_detail {

// Three experts over 6 tokens, some tokens routed twice, with per-assignment weights.
inline std::shared_ptr<const autograd::ExpertPlan> small_plan() {
  return std::make_shared<const autograd::ExpertPlan>(autograd::ExpertPlan::group(
      6, 3, {0, 0, 1, 2, 3, 3, 4, 5}, {0, 2, 1, 0, 1, 2, 2, 0}, {0.5, 0.5, 1.0, 0.7, 0.3, 0.2, 1.0, 1.0}));
}

// A MoTE-shaped plan over 40 tokens: expert 0 serves tokens 0..19 as one run (used in place), expert 1
// every other token from 20 (gathered and scattered), expert 2 every token (the shared expert).
inline std::shared_ptr<const autograd::ExpertPlan> mixed_plan() {
  std::vector<std::int32_t> token, expert;
  std::vector<double> weight;
  for (std::int32_t t = 0; t < 40; ++t) {
    const std::int32_t step = t < 20 ? 0 : (t % 2 == 0 ? 1 : -1);
    if (step >= 0) {
      token.push_back(t);
      expert.push_back(step);
      weight.push_back(0.5);
    }
    token.push_back(t);
    expert.push_back(2);
    weight.push_back(0.5);
  }
  return std::make_shared<const autograd::ExpertPlan>(autograd::ExpertPlan::group(40, 3, token, expert, weight));
}

// A [B, T, S] mask (or [T, S] when batch == 0) with about `keep` of its entries set, from a seed;
// `closed_row` (when >= 0) of the first batch row is fully masked: its output and gradients are 0.
inline std::vector<std::uint8_t> random_mask(std::int64_t batch, std::int64_t q_len, std::int64_t kv_len, double keep,
                                             std::uint64_t seed, std::int64_t closed_row = -1) {
  Rng rng(seed);
  std::vector<std::uint8_t> m(static_cast<std::size_t>(std::max<std::int64_t>(batch, 1) * q_len * kv_len));
  for (auto& x : m) x = rng.uniform() < keep ? 1 : 0;
  if (closed_row >= 0)
    for (std::int64_t s = 0; s < kv_len; ++s) m[static_cast<std::size_t>(closed_row * kv_len + s)] = 0;
  return m;
}

template <class Visit>
void elementwise_cases(Visit& visit) {
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{3, 4}, {3, 4}}, {{2, 3, 4}, {4}}, {{4}, {2, 3, 4}}, {{2, 3, 4}, {3, 4}}, {{2, 3}, {}}};
  for (const auto& [sa, sb] : shapes) {
    const std::string suffix = " " + sa.str() + " with " + sb.str();
    visit(OpSpec{.name = "add" + suffix, .inputs = {sa, sb}}, [](auto& v) { return v[0] + v[1]; });
    visit(OpSpec{.name = "sub" + suffix, .inputs = {sa, sb}}, [](auto& v) { return v[0] - v[1]; });
    visit(OpSpec{.name = "mul" + suffix, .inputs = {sa, sb}}, [](auto& v) { return v[0] * v[1]; });
    visit(OpSpec{.name = "div" + suffix, .inputs = {sa, sb}}, [](auto& v) { return v[0] / v[1]; });
  }
  // add hands its gradient buffer on to its first input; these are the cases where it must not.
  visit(OpSpec{.name = "x + x", .inputs = {{3, 4}}}, [](auto& v) { return v[0] + v[0]; });
  visit(OpSpec{.name = "x * x", .inputs = {{5, 7}}}, [](auto& v) { return v[0] * v[0]; });
  visit(OpSpec{.name = "(a + b) * a", .inputs = {{3, 4}, {3, 4}}}, [](auto& v) { return (v[0] + v[1]) * v[0]; });
  visit(OpSpec{.name = "a * b + a", .inputs = {{3, 4}, {3, 4}}}, [](auto& v) { return v[0] * v[1] + v[0]; });
  visit(OpSpec{.name = "scale", .inputs = {{2, 5, 3}}}, [](auto& v) { return scale(v[0], value_of<decltype(v)>(-1.75)); });
  // Long enough for several chunks, blocks and grid-stride loops; the [1000] gradient sums 600 rows.
  visit(OpSpec{.name = "mul [600, 1000] with [1000]", .inputs = {{600, 1000}, {1000}}, .finite_differences = false},
        [](auto& v) { return v[0] * v[1]; });
}

template <class Visit>
void matmul_cases(Visit& visit) {
  const std::int64_t m = 5, k = 7, n = 3;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      const Shape sa = ta ? Shape{k, m} : Shape{m, k};
      const Shape sb = tb ? Shape{n, k} : Shape{k, n};
      const std::string flags = std::string(" trans_a=") + (ta ? "1" : "0") + " trans_b=" + (tb ? "1" : "0");
      const MatmulOptions o{.trans_a = ta, .trans_b = tb};
      visit(OpSpec{.name = "matmul 2-D" + flags, .inputs = {sa, sb}}, [o](auto& v) { return matmul(v[0], v[1], o); });
      visit(OpSpec{.name = "matmul 2-D with bias" + flags, .inputs = {sa, sb, {n}}},
            [o](auto& v) { return matmul(v[0], v[1], v[2], o); });
      visit(OpSpec{.name = "matmul batched [2, 3, ...]" + flags, .inputs = {Shape{2, 3, sa[0], sa[1]}, Shape{2, 3, sb[0], sb[1]}}},
            [o](auto& v) { return matmul(v[0], v[1], o); });
      visit(OpSpec{.name = "matmul batched a, shared 2-D b" + flags, .inputs = {Shape{4, sa[0], sa[1]}, sb}},
            [o](auto& v) { return matmul(v[0], v[1], o); });
      visit(OpSpec{.name = "matmul shared 2-D a, batched b" + flags, .inputs = {sa, Shape{4, sb[0], sb[1]}}},
            [o](auto& v) { return matmul(v[0], v[1], o); });
    }
  visit(OpSpec{.name = "matmul x x^T", .inputs = {{3, 4}}}, [](auto& v) { return matmul(v[0], v[0], {.trans_b = true}); });
  visit(OpSpec{.name = "linear [2, 5, 7] x [3, 7] + [3]", .inputs = {{2, 5, 7}, {3, 7}, {3}}},
        [](auto& v) { return linear(v[0], v[1], v[2]); });
  visit(OpSpec{.name = "linear [5, 7] x [3, 7]", .inputs = {{5, 7}, {3, 7}}}, [](auto& v) { return linear(v[0], v[1]); });
  // A frozen weight (LoRA's base layers) and a frozen input: each case checks the other gradient.
  visit(OpSpec{.name = "linear, frozen weight", .inputs = {{2, 3, 4}, {5, 4}, {5}}, .differentiable = {true, false, false}},
        [](auto& v) { return linear(v[0], v[1], v[2]); });
  visit(OpSpec{.name = "matmul, frozen a", .inputs = {{2, 4, 3}, {4, 2}}, .differentiable = {false, true}},
        [](auto& v) { return matmul(v[0], v[1], {.trans_a = true}); });
  // Sizes past one cuBLAS tile and the CPU's packed blocks, with a bias gradient summed over many rows.
  visit(OpSpec{.name = "linear [300, 129] x [65, 129] + [65]", .inputs = {{300, 129}, {65, 129}, {65}},
               .float_tol = 2e-5, .finite_differences = false},
        [](auto& v) { return linear(v[0], v[1], v[2]); });
}

template <class Visit>
void reduce_cases(Visit& visit) {
  const Shape shape{3, 4, 5};
  for (const int dim : {0, 1, 2, -1})
    for (const bool keepdim : {false, true}) {
      const std::string what = " dim=" + std::to_string(dim) + (keepdim ? " keepdim" : "");
      visit(OpSpec{.name = "sum [3, 4, 5]" + what, .inputs = {shape}}, [dim, keepdim](auto& v) { return sum(v[0], dim, keepdim); });
      visit(OpSpec{.name = "mean [3, 4, 5]" + what, .inputs = {shape}},
            [dim, keepdim](auto& v) { return mean(v[0], dim, keepdim); });
    }
  visit(OpSpec{.name = "sum of all [3, 4, 5]", .inputs = {shape}}, [](auto& v) { return sum(v[0]); });
  visit(OpSpec{.name = "mean of all [3, 4, 5]", .inputs = {shape}}, [](auto& v) { return mean(v[0]); });
  visit(OpSpec{.name = "mean(sum(x, 1), -1)", .inputs = {{2, 3, 4}}}, [](auto& v) { return mean(sum(v[0], 1), -1); });
  // Rows longer than a block, and a column reduction over many rows; float sums of thousands of
  // random-signed terms lose a few more bits against their (smaller) result.
  visit(OpSpec{.name = "sum [7, 3000] dim=1", .inputs = {{7, 3000}}, .float_tol = 1e-4, .finite_differences = false},
        [](auto& v) { return sum(v[0], 1); });
  visit(OpSpec{.name = "mean [2000, 70] dim=0", .inputs = {{2000, 70}}, .float_tol = 1e-4, .finite_differences = false},
        [](auto& v) { return mean(v[0], 0); });
  visit(OpSpec{.name = "sum of all [50000]", .inputs = {{50000}}, .float_tol = 1e-4, .finite_differences = false},
        [](auto& v) { return sum(v[0]); });
}

template <class Visit>
void softmax_cases(Visit& visit) {
  for (const Shape& s : {Shape{2, 3, 5}, Shape{4, 1}, Shape{7}, Shape{4, 37}}) {
    visit(OpSpec{.name = "softmax " + s.str(), .inputs = {s}, .hi = 3.0}, [](auto& v) { return softmax(v[0]); });
    visit(OpSpec{.name = "log_softmax " + s.str(), .inputs = {s}, .hi = 3.0}, [](auto& v) { return log_softmax(v[0]); });
  }
  visit(OpSpec{.name = "softmax [2, 3, 300]", .inputs = {{2, 3, 300}}}, [](auto& v) { return softmax(v[0]); });
  visit(OpSpec{.name = "log_softmax [4, 300]", .inputs = {{4, 300}}}, [](auto& v) { return log_softmax(v[0]); });
  // Logits up to 150 overflow a naive exp in float; the row max must be subtracted first.
  visit(OpSpec{.name = "softmax of large logits [3, 40]", .inputs = {{3, 40}}},
        [](auto& v) { return softmax(scale(v[0], value_of<decltype(v)>(100))); });
}

template <class Visit>
void shape_cases(Visit& visit) {
  visit(OpSpec{.name = "transpose(1, 2) of [2, 3, 4, 5]", .inputs = {{2, 3, 4, 5}}}, [](auto& v) { return transpose(v[0], 1, 2); });
  visit(OpSpec{.name = "slice dim 1 of [3, 8, 5]", .inputs = {{3, 8, 5}}}, [](auto& v) { return slice(v[0], 1, 2, 4); });
  visit(OpSpec{.name = "concat dim 1 of [2, 3, 4] and [2, 5, 4]", .inputs = {{2, 3, 4}, {2, 5, 4}}},
        [](auto& v) { return concat(std::vector{v[0], v[1]}, 1); });
  visit(OpSpec{.name = "concat of one var twice", .inputs = {{2, 3}}}, [](auto& v) { return concat(std::vector{v[0], v[0]}, 0); });
  visit(OpSpec{.name = "reshape then transpose [6, 20]", .inputs = {{2, 3, 20}}},
        [](auto& v) { return transpose(reshape(v[0], Shape{6, 20}), 0, 1); });
  // reshape hands its gradient buffer on; these are the cases where it must not, or must be added to.
  visit(OpSpec{.name = "reshape(x) * reshape(x)", .inputs = {{2, 3}}},
        [](auto& v) { return reshape(v[0], {3, 2}) * reshape(v[0], {3, 2}); });
  visit(OpSpec{.name = "reshape(x) + reshape(x * x)", .inputs = {{2, 3}}},
        [](auto& v) { return reshape(v[0], {6}) + reshape(v[0] * v[0], {6}); });
  // Pieces joined in another order, so that each piece's gradient must land in its own place.
  for (const int dim : {0, 1, 2})
    visit(OpSpec{.name = "split dim " + std::to_string(dim) + " of [5, 5, 5], reordered", .inputs = {{5, 5, 5}}}, [dim](auto& v) {
      auto pieces = split(v[0], dim, {2, 1, 2});
      return concat(std::vector{pieces[2], pieces[0], pieces[1]}, dim);
    });
}

template <class Visit>
void nn_cases(Visit& visit) {
  visit(OpSpec{.name = "layer_norm [2, 3, 5]", .inputs = {{2, 3, 5}, {5}, {5}}}, [](auto& v) { return layer_norm(v[0], v[1], v[2]); });
  visit(OpSpec{.name = "layer_norm [4, 6] eps=1e-2", .inputs = {{4, 6}, {6}, {6}}},
        [](auto& v) { return layer_norm(v[0], v[1], v[2], value_of<decltype(v)>(1e-2)); });
  visit(OpSpec{.name = "layer_norm, x only", .inputs = {{3, 4}, {4}, {4}}, .differentiable = {true, false, false}},
        [](auto& v) { return layer_norm(v[0], v[1], v[2]); });
  visit(OpSpec{.name = "layer_norm [6, 300]", .inputs = {{6, 300}, {300}, {300}}}, [](auto& v) { return layer_norm(v[0], v[1], v[2]); });
  visit(OpSpec{.name = "rms_norm [2, 3, 6]", .inputs = {{2, 3, 6}, {6}}}, [](auto& v) { return rms_norm(v[0], v[1]); });
  visit(OpSpec{.name = "rms_norm [5, 4] eps=0.1", .inputs = {{5, 4}, {4}}},
        [](auto& v) { return rms_norm(v[0], v[1], value_of<decltype(v)>(0.1)); });
  visit(OpSpec{.name = "rms_norm [5, 70]", .inputs = {{5, 70}, {70}}}, [](auto& v) { return rms_norm(v[0], v[1]); });
  // Activations over a wide range of inputs, through their curved parts and tails.
  visit(OpSpec{.name = "gelu [3, 7]", .inputs = {{3, 7}}, .lo = 0.05, .hi = 4.0}, [](auto& v) { return gelu(v[0]); });
  visit(OpSpec{.name = "silu [3, 7]", .inputs = {{3, 7}}, .lo = 0.05, .hi = 4.0}, [](auto& v) { return silu(v[0]); });
  visit(OpSpec{.name = "swiglu [2, 3, 4]", .inputs = {{2, 3, 4}, {2, 3, 4}}, .lo = 0.05, .hi = 4.0},
        [](auto& v) { return swiglu(v[0], v[1]); });
  visit(OpSpec{.name = "gelu [3, 1000]", .inputs = {{3, 1000}}}, [](auto& v) { return gelu(v[0]); });
  visit(OpSpec{.name = "silu [3, 100]", .inputs = {{3, 100}}}, [](auto& v) { return silu(v[0]); });
  visit(OpSpec{.name = "swiglu [4, 50]", .inputs = {{4, 50}, {4, 50}}}, [](auto& v) { return swiglu(v[0], v[1]); });
  // The seed is recreated inside the build so that every finite-difference probe sees one mask.
  visit(OpSpec{.name = "dropout p=0.3", .inputs = {{4, 5}}}, [](auto& v) {
    Rng rng(42);
    return dropout(v[0], value_of<decltype(v)>(0.3), rng);
  });

  // Repeated ids: their rows' gradients must add up.
  static const std::vector<std::int32_t> ids = {3, 0, 3, 7, 1, 3};
  visit(OpSpec{.name = "embedding [8, 33] at 6 ids with repeats", .inputs = {{8, 33}}},
        [](auto& v) { return embedding(v[0], ids_like(v, {2, 3}, ids)); });
  // Many rows onto few destinations, in no order: long sorted segments, summed by one thread each.
  std::vector<std::int32_t> many(2000);
  for (std::size_t j = 0; j < many.size(); ++j) many[j] = static_cast<std::int32_t>((j * 5 + j / 7) % 7);
  visit(OpSpec{.name = "embedding [7, 40] at 2000 ids", .inputs = {{7, 40}}, .float_tol = 2e-5},
        [&many](auto& v) { return embedding(v[0], ids_like(v, {4, 500}, many)); });
  visit(OpSpec{.name = "index_select dim 1 of [2, 8, 5]", .inputs = {{2, 8, 5}}},
        [](auto& v) { return index_select(v[0], 1, ids_like(v, {6}, ids)); });
  visit(OpSpec{.name = "index_add dim 0 of [8, 5]", .inputs = {{8, 5}, {6, 5}}},
        [](auto& v) { return index_add(v[0], 0, ids_like(v, {6}, ids), v[1]); });
  // Only one side trained: a frozen base, as when experts add into a frozen stream, or when a few
  // trainable token rows replace rows of a frozen embedding.
  visit(OpSpec{.name = "index_add, frozen base", .inputs = {{3, 2}, {4, 2}}, .differentiable = {false, true}},
        [](auto& v) { return index_add(v[0], 0, ids_like(v, {4}, {2, 0, 2, 1}), v[1]); });
  visit(OpSpec{.name = "index_copy, frozen base", .inputs = {{6, 2}, {2, 2}}, .differentiable = {false, true}},
        [](auto& v) { return index_copy(v[0], 0, ids_like(v, {2}, {5, 1}), v[1]); });

  visit(OpSpec{.name = "rope [2, 3, 4, 6], positions [2, 4]", .inputs = {{2, 3, 4, 6}}},
        [](auto& v) { return rope(v[0], ids_like(v, {2, 4}, {3, 7, 0, 100, 5, 2, 9, 1})); });
  visit(OpSpec{.name = "rope [2, 2, 4, 8], positions [4], theta=500", .inputs = {{2, 2, 4, 8}}},
        [](auto& v) { return rope(v[0], ids_like(v, {4}, {11, 12, 13, 14}), 500.0); });
  visit(OpSpec{.name = "rope [2, 3, 4, 16], positions [2, 4]", .inputs = {{2, 3, 4, 16}}},
        [](auto& v) { return rope(v[0], ids_like(v, {2, 4}, {0, 1, 2, 3, 9, 10, 11, 12}), 10000.0); });
  visit(OpSpec{.name = "rope [2, 3, 4, 16], positions [4]", .inputs = {{2, 3, 4, 16}}},
        [](auto& v) { return rope(v[0], ids_like(v, {4}, {5, 6, 7, 8}), 10000.0); });

  visit(OpSpec{.name = "cross_entropy [6, 5], ignore_index", .inputs = {{6, 5}}, .hi = 3.0},
        [](auto& v) { return cross_entropy(v[0], ids_like(v, {6}, {0, 4, -100, 2, 2, 1})); });
  visit(OpSpec{.name = "cross_entropy [2, 3, 4], loss_mask, ignore_index=7", .inputs = {{2, 3, 4}}, .hi = 3.0}, [](auto& v) {
    using T = value_of<decltype(v)>;
    using B = backend_of<decltype(v)>;
    const auto mask = values_like(v, {2, 3}, {1.0, 0.5, 0.0, 2.0, 1.0, 0.25});
    return cross_entropy(v[0], ids_like(v, {2, 3}, {1, 3, 0, 7, 3, 2}), CrossEntropyOptions<T, B>{.ignore_index = 7, .loss_mask = &mask});
  });
  visit(OpSpec{.name = "cross_entropy [6, 50], an ignored target", .inputs = {{6, 50}}},
        [](auto& v) { return cross_entropy(v[0], ids_like(v, {6}, {4, -100, 49, 0, 17, 4})); });
}

template <class Visit>
void attention_cases(Visit& visit) {
  // B = 2, H = 4, Hkv = 2: grouped-query heads, queries after a cache (T < S) and not.
  for (const bool causal : {true, false})
    for (const std::int64_t q_len : {3, 4, 5}) {
      const std::int64_t kv_len = causal ? 5 : 4;
      visit(OpSpec{.name = std::string("attention ") + (causal ? "causal" : "full") + " T=" + std::to_string(q_len) +
                           " S=" + std::to_string(kv_len),
                   .inputs = {{2, 4, q_len, 4}, {2, 2, kv_len, 4}, {2, 2, kv_len, 4}}},
            [causal](auto& v) {
              return scaled_dot_product_attention(v[0], v[1], v[2], AttentionOptions<backend_of<decltype(v)>>{.causal = causal});
            });
    }
  // A [B, T, S] mask with one query row closed entirely, under causality.
  visit(OpSpec{.name = "attention causal + mask [B, T, S], T < S", .inputs = {{2, 4, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 4}}},
        [](auto& v) {
          const auto mask = mask_like(v, {2, 3, 5}, random_mask(2, 3, 5, 0.6, 11, 3));
          return scaled_dot_product_attention(v[0], v[1], v[2],
                                              AttentionOptions<backend_of<decltype(v)>>{.causal = true, .mask = &mask});
        });
  // A shared [T, S] mask, no causality, plain multi-head (H = Hkv) and a chosen scale.
  visit(OpSpec{.name = "attention mask [T, S] scale=0.7", .inputs = {{2, 2, 4, 4}, {2, 2, 4, 4}, {2, 2, 4, 4}}}, [](auto& v) {
    const auto mask = mask_like(v, {4, 4}, random_mask(0, 4, 4, 0.5, 12, 2));
    return scaled_dot_product_attention(
        v[0], v[1], v[2], AttentionOptions<backend_of<decltype(v)>>{.causal = false, .mask = &mask, .scale = 0.7});
  });
  struct Case {
    const char* name;
    std::int64_t batch, heads, kv_heads, q_len, kv_len, head_dim;
    bool causal, masked, probe;
  };
  const Case cases[] = {
      {"causal, 4 heads", 2, 4, 4, 7, 7, 16, true, false, true},
      {"causal GQA 6 heads on 2, queries after a cache", 2, 6, 2, 3, 9, 8, true, false, true},
      {"not causal, with a [B, T, S] mask", 2, 2, 1, 5, 6, 8, false, true, true},
      {"long rows (300 keys)", 1, 2, 2, 4, 300, 16, true, false, false},
  };
  for (const Case& c : cases) {
    std::vector<std::uint8_t> mask_values;
    for (std::int64_t i = 0; i < c.batch * c.q_len * c.kv_len; ++i) mask_values.push_back((i * 7) % 5 != 0 ? 1 : 0);
    visit(OpSpec{.name = std::string("attention ") + c.name,
                 .inputs = {{c.batch, c.heads, c.q_len, c.head_dim}, {c.batch, c.kv_heads, c.kv_len, c.head_dim},
                            {c.batch, c.kv_heads, c.kv_len, c.head_dim}},
                 .finite_differences = c.probe},
          [&c, &mask_values](auto& v) {
            const auto mask = mask_like(v, {c.batch, c.q_len, c.kv_len}, mask_values);
            return scaled_dot_product_attention(
                v[0], v[1], v[2],
                AttentionOptions<backend_of<decltype(v)>>{.causal = c.causal, .mask = c.masked ? &mask : nullptr});
          });
  }
}

template <class Visit>
void expert_cases(Visit& visit) {
  const auto plan = small_plan();
  // base, x, A0..A2 (ranks 2, 3, 2), B0..B2, gate (one per assignment)
  const std::vector<Shape> shapes{{2, 3, 5}, {2, 3, 4}, {2, 4}, {3, 4}, {2, 4}, {5, 2}, {5, 3}, {5, 2}, {8}};
  visit(OpSpec{.name = "expert_lora with a gate", .inputs = shapes}, [&plan](auto& v) {
    return expert_lora(v[0], v[1], {v[2], v[3], v[4]}, {v[5], v[6], v[7]}, plan, value_of<decltype(v)>(1.5), &v[8]);
  });
  visit(OpSpec{.name = "expert_lora, constant weights", .inputs = {shapes.begin(), shapes.end() - 1}}, [&plan](auto& v) {
    return expert_lora(v[0], v[1], {v[2], v[3], v[4]}, {v[5], v[6], v[7]}, plan, value_of<decltype(v)>(0.5));
  });
  // Runs of tokens are used in place (no gather): the same checks through that path.
  const auto runs = std::make_shared<const autograd::ExpertPlan>(
      autograd::ExpertPlan::group(4, 2, {0, 1, 2, 3, 0, 1, 2, 3}, {0, 0, 1, 1, 1, 1, 0, 0}, std::vector<double>(8, 0.5)));
  visit(OpSpec{.name = "expert_lora, runs", .inputs = {{4, 3}, {4, 5}, {2, 5}, {2, 5}, {3, 2}, {3, 2}}}, [&runs](auto& v) {
    return expert_lora(v[0], v[1], {v[2], v[3]}, {v[4], v[5]}, runs, value_of<decltype(v)>(2));
  });

  // The base product x_base W (+ bias) inside the op: x_base, x, A0..A2, B0..B2, weight, bias, gate.
  const std::vector<Shape> linear_layout{{2, 3, 4}, {2, 3, 4}, {2, 4}, {3, 4}, {2, 4}, {5, 2}, {5, 3}, {5, 2}, {5, 4}, {5}, {8}};
  visit(OpSpec{.name = "expert_lora fused, linear layout, gate", .inputs = linear_layout}, [&plan](auto& v) {
    using T = value_of<decltype(v)>;
    const autograd::Projection<T, backend_of<decltype(v)>> base{v[8], v[9], false};
    return expert_lora(base, v[0], v[1], {v[2], v[3], v[4]}, {v[5], v[6], v[7]}, plan, T(1.5), &v[10]);
  });
  // GPT-2's Conv1D layout [in, out], no bias, and the experts reading the base's own input.
  const std::vector<Shape> conv1d_layout{{2, 3, 4}, {2, 4}, {3, 4}, {2, 4}, {5, 2}, {5, 3}, {5, 2}, {4, 5}};
  visit(OpSpec{.name = "expert_lora fused, Conv1D layout, shared input", .inputs = conv1d_layout}, [&plan](auto& v) {
    using T = value_of<decltype(v)>;
    using B = backend_of<decltype(v)>;
    const autograd::Projection<T, B> base{v[7], Var<T, B>(), true};
    return expert_lora(base, v[0], v[0], {v[1], v[2], v[3]}, {v[4], v[5], v[6]}, plan, T(0.5));
  });
  // Expert 0 serves every token as one run (MoTE's shared expert), so it writes the output and x's
  // gradient first; expert 1 serves a scattered few.
  const auto covered = std::make_shared<const autograd::ExpertPlan>(
      autograd::ExpertPlan::group(6, 2, {0, 1, 2, 3, 4, 5, 1, 4}, {0, 0, 0, 0, 0, 0, 1, 1}, std::vector<double>(8, 0.5)));
  const std::vector<Shape> covering{{6, 4}, {6, 4}, {2, 4}, {3, 4}, {5, 2}, {5, 3}, {5, 4}, {5}};
  visit(OpSpec{.name = "expert_lora fused, covering expert, dropped-out input", .inputs = covering}, [&covered](auto& v) {
    using T = value_of<decltype(v)>;
    const autograd::Projection<T, backend_of<decltype(v)>> base{v[6], v[7], false};
    return expert_lora(base, v[0], v[1], {v[2], v[3]}, {v[4], v[5]}, covered, T(2));
  });
  visit(OpSpec{.name = "expert_lora fused, covering expert, shared input", .inputs = {covering.begin() + 1, covering.end()}},
        [&covered](auto& v) {
          using T = value_of<decltype(v)>;
          const autograd::Projection<T, backend_of<decltype(v)>> base{v[5], v[6], false};
          return expert_lora(base, v[0], v[0], {v[1], v[2]}, {v[3], v[4]}, covered, T(2));
        });

  // MoTE's mix over 40 tokens: a run in place, a gathered expert and the shared expert.
  const auto mixed = mixed_plan();
  const std::int64_t in = 24, out = 18, r = 4;
  const Shape a{r, in}, b{out, r};
  visit(OpSpec{.name = "expert_lora, 3 experts (in place, gathered, shared)", .inputs = {{40, out}, {40, in}, a, a, a, b, b, b}},
        [&mixed](auto& v) {
          return expert_lora(v[0], v[1], {v[2], v[3], v[4]}, {v[5], v[6], v[7]}, mixed, value_of<decltype(v)>(0.75));
        });
  visit(OpSpec{.name = "expert_lora, 3 experts with a gate", .inputs = {{40, out}, {40, in}, a, a, a, b, b, b, {mixed->assignments()}}},
        [&mixed](auto& v) {
          return expert_lora(v[0], v[1], {v[2], v[3], v[4]}, {v[5], v[6], v[7]}, mixed, value_of<decltype(v)>(0.75), &v[8]);
        });
}

}  // namespace op_table_detail

// visit(spec, build) for every case of the table; build(std::vector<Var<T, B>>&) returns the op's output.
template <class Visit>
void for_each_op_case(Visit&& visit) {
  op_table_detail::elementwise_cases(visit);
  op_table_detail::matmul_cases(visit);
  op_table_detail::reduce_cases(visit);
  op_table_detail::softmax_cases(visit);
  op_table_detail::shape_cases(visit);
  op_table_detail::nn_cases(visit);
  op_table_detail::attention_cases(visit);
  op_table_detail::expert_cases(visit);
}

}  // namespace mote::testing
