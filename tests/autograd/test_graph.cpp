// The autograd graph itself: accumulation, misuse errors, no_grad, anomaly mode, very long
// chains, release of saved tensors, retain_grad and detach.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "mote/mote.hpp"
#include "op_harness.hpp"

using namespace mote;
using testing::expect_error;
using autograd::Node;

namespace {

Var<double> scalar(double v, bool requires_grad = false) {
  return Var<double>(Tensor<double>::full({1}, v), requires_grad);
}

// An identity op whose closure owns `token`, so the token's use_count shows whether the closure is alive.
Var<double> tracked_identity(const Var<double>& x, std::shared_ptr<int> token) {
  return autograd::make_result("tracked", x.value().clone(), {x}, [token](Node<double, cpu>& self) {
    if (double* g = autograd::input_grad(self, 0)) g[0] += self.grad.data()[0];
  });
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_graph)

BOOST_AUTO_TEST_CASE(gradients_accumulate_into_leaves) {
  auto x = scalar(3.0, true);
  (x * x).backward();
  BOOST_TEST(x.grad().item() == 6.0);
  (x * x).backward();  // a second graph adds to the same leaf
  BOOST_TEST(x.grad().item() == 12.0);
  x.zero_grad();
  BOOST_TEST(!x.grad().defined());
  (x * x).backward();
  BOOST_TEST(x.grad().item() == 6.0);
}

BOOST_AUTO_TEST_CASE(shared_subexpressions_sum_their_paths) {
  // y = h*h + h with h = x*x: dy/dx = (2h + 1) * 2x = 114 at x = 3.
  auto x = scalar(3.0, true);
  const auto h = x * x;
  auto y = h * h + h;
  y.backward();
  BOOST_TEST(x.grad().item() == 114.0);
  BOOST_TEST(!h.grad().defined());  // intermediate gradients are not kept by default
}

BOOST_AUTO_TEST_CASE(backward_misuse_throws_autograd_error) {
  auto x = Var<double>(Tensor<double>::full({2, 2}, 1.0), true);
  auto y = x * x;
  expect_error<autograd_error>([&] { y.backward(); }, {"scalar", "'mul'", "[2, 2]"});
  BOOST_CHECK_THROW(y.backward(Tensor<double>::full({4}, 1.0)), shape_error);
  y.backward(Tensor<double>::full({2, 2}, 1.0));  // an explicit seed is fine
  BOOST_TEST(x.grad().to_vector() == std::vector<double>(4, 2.0));

  auto c = scalar(1.0);
  auto z = c * c;
  expect_error<autograd_error>([&] { z.backward(); }, {"'mul'", "requires grad"});
  expect_error<autograd_error>([] { Var<double>().backward(); }, {"empty Var"});
  expect_error<autograd_error>([&] { y.set_requires_grad(false); }, {"leaf", "'mul'"});
}

BOOST_AUTO_TEST_CASE(second_backward_needs_retain_graph) {
  auto x = scalar(2.0, true);
  auto y = x * x;
  y.backward();
  expect_error<autograd_error>([&] { y.backward(); }, {"second time", "retain_graph"});

  auto r = x * x;
  x.zero_grad();
  r.backward({.retain_graph = true});
  r.backward();
  BOOST_TEST(x.grad().item() == 8.0);

  // Another root reaching an intermediate that an earlier backward released.
  const auto h = x * x;
  (h + x).backward();
  expect_error<autograd_error>([&] { (h * x).backward(); }, {"'mul'", "retain_graph"});
}

BOOST_AUTO_TEST_CASE(no_grad_records_nothing_and_restores) {
  auto x = scalar(2.0, true);
  BOOST_TEST(autograd::grad_enabled());
  {
    no_grad off;
    BOOST_TEST(!autograd::grad_enabled());
    const auto y = x * x;
    BOOST_TEST(!y.requires_grad());
    BOOST_TEST(y.is_leaf());
    BOOST_TEST(y.item() == 4.0);
    {
      no_grad nested;
      BOOST_TEST(!autograd::grad_enabled());
    }
    BOOST_TEST(!autograd::grad_enabled());
  }
  BOOST_TEST(autograd::grad_enabled());
  BOOST_TEST((x * x).requires_grad());
}

BOOST_AUTO_TEST_CASE(requires_grad_propagates) {
  auto a = scalar(1.0, true);
  auto b = scalar(2.0);
  BOOST_TEST(a.requires_grad());
  BOOST_TEST(!b.requires_grad());
  BOOST_TEST((a + b).requires_grad());
  BOOST_TEST((b + a).requires_grad());
  BOOST_TEST(!(b * b).requires_grad());
  BOOST_TEST(!(a + b).is_leaf());
  auto y = a * b;
  y.backward();
  BOOST_TEST(a.grad().item() == 2.0);
  BOOST_TEST(!b.grad().defined());
  b.set_requires_grad(true);
  auto y2 = a * b;
  y2.backward();
  BOOST_TEST(b.grad().item() == 1.0);
  auto p = Var<double>::parameter(Tensor<double>::zeros({2}));
  BOOST_TEST(p.requires_grad());
  BOOST_TEST(p.is_leaf());
}

BOOST_AUTO_TEST_CASE(anomaly_mode_names_the_op) {
  auto x = scalar(1.0, true);
  auto zero = scalar(0.0);
  {
    detect_anomaly on;
    BOOST_TEST(autograd::anomaly_enabled());
    expect_error<nan_error>([&] { (void)(x / zero); }, {"'div'", "infinity"});
    auto nan_numerator = scalar(0.0, true);
    expect_error<nan_error>([&] { (void)(nan_numerator / zero); }, {"'div'", "NaN"});

    // A finite forward whose backward overflows: d(a/b)/db = -a/b^2 with b^2 underflowing to 0.
    auto a = scalar(1e-300, true);
    auto b = scalar(1e-200, true);
    auto q = a / b;
    BOOST_TEST(std::isfinite(q.item()));
    expect_error<nan_error>([&] { q.backward(); }, {"backward of 'div'"});

    // Any op's backward, named by the name it was recorded with.
    auto bad = autograd::make_result("poisoned_backward", x.value().clone(), {x}, [](Node<double, cpu>& self) {
      if (double* g = autograd::input_grad(self, 0)) g[0] = std::numeric_limits<double>::quiet_NaN();
    });
    expect_error<nan_error>([&] { bad.backward(); }, {"'poisoned_backward'", "NaN"});
  }
  BOOST_TEST(!autograd::anomaly_enabled());
  const auto inf = x / zero;  // unchecked outside the scope
  BOOST_TEST(std::isinf(inf.item()));
}

BOOST_AUTO_TEST_CASE(very_long_chain_backprops_and_frees_without_recursion) {
  constexpr int length = 200000;
  auto x = scalar(0.5, true);
  const auto c = scalar(1.0);
  {
    auto y = x;
    for (int i = 0; i < length; ++i) y = y + c;
    BOOST_TEST(y.item() == 0.5 + length);
    y.backward();
    BOOST_TEST(x.grad().item() == 1.0);
  }
  {
    // Dropped without backward: the whole chain is still linked when its last handle goes.
    auto y = x;
    for (int i = 0; i < length; ++i) y = y + c;
    y = Var<double>();
  }
  {
    // Kept alive by retain_graph, then dropped.
    auto y = x;
    for (int i = 0; i < length; ++i) y = y * c;
    x.zero_grad();
    y.backward({.retain_graph = true});
    BOOST_TEST(x.grad().item() == 1.0);
  }
  BOOST_TEST(x.is_leaf());
}

BOOST_AUTO_TEST_CASE(backward_releases_saved_tensors) {
  auto x = scalar(2.0, true);
  auto token = std::make_shared<int>(0);
  auto y = tracked_identity(x, token) * x;
  BOOST_TEST(token.use_count() == 2);
  y.backward();
  BOOST_TEST(token.use_count() == 1);  // the closure, and what it captured, are gone
  BOOST_TEST(y.node()->released);
  BOOST_TEST(y.node()->inputs.empty());
  BOOST_TEST(!y.node()->backward_fn);
  BOOST_TEST(!y.is_leaf());
  BOOST_TEST(x.grad().item() == 4.0);

  // The mul's closure held x's value; after release only x itself (and no graph) holds it.
  auto z = x * x;
  const auto saved = z.node()->inputs.size();
  BOOST_TEST(saved == 2u);
  z.backward();
  BOOST_TEST(z.node()->inputs.empty());

  // With retain_graph the closure survives until the graph goes.
  auto kept_token = std::make_shared<int>(0);
  {
    auto k = tracked_identity(x, kept_token) * x;
    k.backward({.retain_graph = true});
    BOOST_TEST(kept_token.use_count() == 2);
    BOOST_TEST(!k.node()->released);
  }
  BOOST_TEST(kept_token.use_count() == 1);
}

BOOST_AUTO_TEST_CASE(retain_grad_keeps_an_intermediate_gradient) {
  auto x = scalar(3.0, true);
  auto h = x * x;
  h.retain_grad();
  auto y = h * h;
  y.backward({.retain_graph = true});
  BOOST_TEST(h.grad().item() == 18.0);   // dy/dh = 2h
  BOOST_TEST(x.grad().item() == 108.0);  // dy/dx = 2h * 2x
  y.backward();
  BOOST_TEST(h.grad().item() == 36.0);  // accumulates like a leaf's
  BOOST_TEST(x.grad().item() == 216.0);
}

BOOST_AUTO_TEST_CASE(detach_cuts_the_graph) {
  auto x = scalar(3.0, true);
  auto h = x * x;
  auto d = h.detach();
  BOOST_TEST(!d.requires_grad());
  BOOST_TEST(d.is_leaf());
  BOOST_TEST(d.value().shares_storage_with(h.value()));
  auto y = d * x;  // d is a constant 9 here
  y.backward();
  BOOST_TEST(x.grad().item() == 9.0);
  BOOST_TEST(!d.grad().defined());
}

BOOST_AUTO_TEST_SUITE_END()
