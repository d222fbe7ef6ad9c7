#pragma once
// The one generic op tester. For an op built by `build(inputs)`, it
//  - draws non-zero random inputs (seeded) and poisons every fresh allocation with NaN;
//  - checks the double-precision output is fully written and the float output matches it;
//  - checks every input gradient against central finite differences in double;
//  - checks a second backward adds into .grad rather than overwriting it;
//  - checks the float gradients match the double ones.
// Its cases are the table's (op_table.hpp) plus checks of single ops elsewhere in the suite.
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
#include "op_table.hpp"

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

struct PoisonScope {
  PoisonScope() { debug::poison_allocations = true; }
  ~PoisonScope() { debug::poison_allocations = false; }
};

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
      for (std::size_t i = 0; i < vars.size() && spec.finite_differences; ++i) {
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

}  // namespace mote::testing
