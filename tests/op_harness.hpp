#pragma once
// The one generic op tester. For an op built by `build(inputs)`, it
//  - draws non-zero random inputs (seeded) and poisons every fresh allocation with NaN;
//  - checks the double-precision output is fully written and the float output matches it;
//  - checks every input gradient against central finite differences in double;
//  - checks a second backward adds into .grad rather than overwriting it;
//  - checks the float gradients match the double ones.
// check_backend<B> reruns the float op on another backend against the same double reference.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/mote.hpp"

namespace mote::testing {

// Runs fn, which must throw E; returns the message (fails the test when nothing or another type is thrown).
template <class E, class Fn>
std::string error_message(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  BOOST_FAIL("expected an exception of the named type");
  return {};
}

// Runs fn, which must throw E whose message contains every one of `needles`.
template <class E, class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> needles) {
  const std::string msg = error_message<E>(std::forward<Fn>(fn));
  for (const auto& n : needles)
    BOOST_TEST(msg.find(n) != std::string::npos, "message '" << msg << "' lacks '" << n << "'");
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The element type of the inputs a check_op build lambda receives (std::vector<Var<T>>).
template <class Vars>
using value_of = typename std::decay_t<Vars>::value_type::value_type;

struct OpSpec {
  std::string name;
  std::vector<Shape> inputs;
  std::vector<bool> differentiable;  // empty: all inputs
  double lo = 0.5, hi = 1.5;         // |x| is drawn in [lo, hi]
  bool positive = false;             // no random signs (inputs of div's denominator, log)
  double float_tol = 1e-5;           // relative error of float vs double, per tensor
  double grad_tol = 1e-6;            // relative error of analytic vs finite-difference gradient
  double fd_step = 1e-6;
  std::uint64_t seed = 1234;
};

// max |a - b| / max(max |b|, tiny): one relative error per tensor. A NaN on one side only is an
// infinite error (std::max would skip it); NaN on both sides matches.
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  double diff = 0, scale = 1e-12;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) {
      if (std::isnan(a[i]) != std::isnan(b[i])) return std::numeric_limits<double>::infinity();
      continue;
    }
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

template <class T>
std::vector<double> as_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

struct PoisonScope {
  PoisonScope() { debug::poison_allocations = true; }
  ~PoisonScope() { debug::poison_allocations = false; }
};

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

template <class T, class B>
std::vector<Var<T, B>> make_vars(const OpSpec& spec, const std::vector<std::vector<double>>& values) {
  std::vector<Var<T, B>> vars;
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::vector<T> host(values[i].begin(), values[i].end());
    const bool diff = spec.differentiable.empty() || spec.differentiable[i];
    vars.emplace_back(Tensor<T, cpu>::from_vector(spec.inputs[i], host).template to<B>(), diff);
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

struct Reference {
  std::vector<double> output;
  Shape shape;
  std::vector<std::vector<double>> grads;  // empty vector for non-differentiable inputs
};

template <class Build>
Reference check_op(const OpSpec& spec, Build build) {
  BOOST_TEST_CONTEXT("op " << spec.name) {
    const auto values = draw_inputs(spec);
    Reference ref;

    // Double-precision run with poisoned allocations: every output element must be written.
    auto vars = make_vars<double, cpu>(spec, values);
    Var<double> out;
    {
      PoisonScope poison;
      out = build(vars);
    }
    ref.output = out.value().to_vector();
    ref.shape = out.shape();
    for (std::size_t i = 0; i < ref.output.size(); ++i)
      BOOST_REQUIRE_MESSAGE(std::isfinite(ref.output[i]), spec.name << ": output element " << i << " was not written");

    const auto w = seed_weights(out.numel(), spec.seed);
    const auto seed_d = Tensor<double>::from_vector(out.shape(), w);
    if (out.requires_grad()) {
      out.backward(seed_d, {.retain_graph = true});
      for (std::size_t i = 0; i < vars.size(); ++i)
        ref.grads.push_back(vars[i].requires_grad() ? vars[i].grad().to_vector() : std::vector<double>{});

      // Central finite differences of sum(out * w) in double.
      auto objective = [&](std::vector<Var<double>>& in) {
        no_grad off;
        const auto y = build(in).value().to_vector();
        double s = 0;
        for (std::size_t k = 0; k < y.size(); ++k) s += y[k] * w[k];
        return s;
      };
      for (std::size_t i = 0; i < vars.size(); ++i) {
        if (!vars[i].requires_grad()) continue;
        std::vector<double> numeric(values[i].size());
        auto probe = make_vars<double, cpu>(spec, values);
        for (std::size_t k = 0; k < numeric.size(); ++k) {
          double* x = probe[i].mutable_value().data() + k;
          const double keep = *x;
          *x = keep + spec.fd_step;
          const double up = objective(probe);
          *x = keep - spec.fd_step;
          const double down = objective(probe);
          *x = keep;
          numeric[k] = (up - down) / (2 * spec.fd_step);
        }
        const double err = relative_error(ref.grads[i], numeric);
        BOOST_TEST(err < spec.grad_tol, spec.name << ": gradient of input " << i << " vs finite differences: relative error " << err);
      }

      // A second backward adds the same amount again.
      out.backward(seed_d);
      for (std::size_t i = 0; i < vars.size(); ++i) {
        if (!vars[i].requires_grad()) continue;
        const auto twice = vars[i].grad().to_vector();
        std::vector<double> doubled(ref.grads[i].size());
        for (std::size_t k = 0; k < doubled.size(); ++k) doubled[k] = 2 * ref.grads[i][k];
        BOOST_TEST(relative_error(twice, doubled) < 1e-12, spec.name << ": backward overwrote .grad of input " << i);
      }
    }

    // Float on the CPU against the double reference.
    auto vars_f = make_vars<float, cpu>(spec, values);
    auto out_f = build(vars_f);
    BOOST_TEST(out_f.shape() == ref.shape);
    const double ferr = relative_error(as_double(out_f.value().to_vector()), ref.output);
    BOOST_TEST(ferr < spec.float_tol, spec.name << ": float output vs double: relative error " << ferr);
    if (out_f.requires_grad()) {
      std::vector<float> wf(w.begin(), w.end());
      out_f.backward(Tensor<float>::from_vector(out_f.shape(), wf));
      for (std::size_t i = 0; i < vars_f.size(); ++i) {
        if (!vars_f[i].requires_grad()) continue;
        const double gerr = relative_error(as_double(vars_f[i].grad().to_vector()), ref.grads[i]);
        BOOST_TEST(gerr < spec.float_tol * 10, spec.name << ": float gradient of input " << i << " vs double: " << gerr);
      }
    }
    return ref;
  }
  return {};
}

// The float op on backend B against a double CPU reference from check_op.
template <class B, class Build>
void check_backend(const OpSpec& spec, const Reference& ref, Build build) {
  const auto values = draw_inputs(spec);
  auto vars = make_vars<float, B>(spec, values);
  auto out = build(vars);
  const double err = relative_error(as_double(out.value().to_vector()), ref.output);
  BOOST_TEST(err < spec.float_tol, spec.name << " on " << B::name << ": output relative error " << err);
  if (!out.requires_grad()) return;
  const auto w = seed_weights(out.numel(), spec.seed);
  std::vector<float> wf(w.begin(), w.end());
  out.backward(Tensor<float, cpu>::from_vector(out.shape(), wf).template to<B>());
  for (std::size_t i = 0; i < vars.size(); ++i) {
    if (!vars[i].requires_grad()) continue;
    const double gerr = relative_error(as_double(vars[i].grad().to_vector()), ref.grads[i]);
    BOOST_TEST(gerr < spec.float_tol * 10, spec.name << " on " << B::name << ": gradient of input " << i << ": " << gerr);
  }
}

}  // namespace mote::testing
