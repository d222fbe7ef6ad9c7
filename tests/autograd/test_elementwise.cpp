// Elementwise ops through the generic op tester.
#include "op_harness.hpp"

using namespace mote;
using testing::OpSpec;

BOOST_AUTO_TEST_SUITE(test_elementwise)

// Past 4096 elements, same-shape operands are cut into chunks that threads share (a ragged last one
// here); a broadcast operand's gradient still sums over every row. Against the analytic gradients.
BOOST_AUTO_TEST_CASE(binary_ops_on_long_rows_match_their_formulas) {
  const std::int64_t rows = 3, cols = 4099;
  Rng rng(5);
  const auto a_value = Tensor<double>::uniform({rows, cols}, 0.5, 2.0, rng);
  const auto w = Tensor<double>::uniform({rows, cols}, -1.0, 1.0, rng);
  for (const bool broadcast : {false, true}) {
    const auto b_value = Tensor<double>::uniform(broadcast ? Shape{cols} : Shape{rows, cols}, 0.5, 2.0, rng);
    const std::vector<double> av = a_value.to_vector(), bv = b_value.to_vector(), wv = w.to_vector();
    for (const auto op : {backend::BinaryOp::add, backend::BinaryOp::sub, backend::BinaryOp::mul, backend::BinaryOp::div}) {
      Var<double> a = Var<double>::parameter(a_value.clone()), b = Var<double>::parameter(b_value.clone());
      const Var<double> y = op == backend::BinaryOp::add   ? a + b
                            : op == backend::BinaryOp::sub ? a - b
                            : op == backend::BinaryOp::mul ? a * b
                                                           : a / b;
      sum(y * Var<double>(w)).backward();
      const std::vector<double> yv = y.value().to_vector(), ga = a.grad().to_vector(), gb = b.grad().to_vector();
      std::vector<double> want_gb(bv.size(), 0.0);
      double worst = 0;
      for (std::size_t i = 0; i < av.size(); ++i) {
        const std::size_t j = broadcast ? i % static_cast<std::size_t>(cols) : i;
        const double x = av[i], z = bv[j], g = wv[i];
        const double want_y = op == backend::BinaryOp::add   ? x + z
                              : op == backend::BinaryOp::sub ? x - z
                              : op == backend::BinaryOp::mul ? x * z
                                                             : x / z;
        const double want_ga = op == backend::BinaryOp::mul ? g * z : op == backend::BinaryOp::div ? g / z : g;
        want_gb[j] += op == backend::BinaryOp::add   ? g
                      : op == backend::BinaryOp::sub ? -g
                      : op == backend::BinaryOp::mul ? g * x
                                                     : -g * x / (z * z);
        worst = std::max({worst, std::abs(yv[i] - want_y), std::abs(ga[i] - want_ga)});
      }
      for (std::size_t j = 0; j < bv.size(); ++j) worst = std::max(worst, std::abs(gb[j] - want_gb[j]));
      BOOST_TEST(worst < 1e-12, backend::binary_op_name(op) << (broadcast ? " (b broadcast)" : "") << ": " << worst);
    }
  }
}

// add hands its gradient buffer on to its first input (the op table holds the cases where it must
// not); a retained gradient stays with its own node.
BOOST_AUTO_TEST_CASE(add_passes_its_gradient_on_safely) {
  // A retained gradient stays with its node: both it and the input's gradient hold 2y.
  Var<double> a = Var<double>::parameter(Tensor<double>::from_vector({3}, {1.0, -2.0, 0.5}));
  Var<double> b = Var<double>::parameter(Tensor<double>::from_vector({3}, {0.25, 1.0, 3.0}));
  Var<double> y = a + b;
  y.retain_grad();
  sum(y * y).backward();
  const std::vector<double> expected{2.5, -2.0, 7.0};
  BOOST_TEST(y.grad().to_vector() == expected, boost::test_tools::per_element());
  BOOST_TEST(a.grad().to_vector() == expected, boost::test_tools::per_element());
  BOOST_TEST(b.grad().to_vector() == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(broadcast_mismatch_names_both_shapes) {
  Var<float> a(Tensor<float>::zeros({2, 3}));
  Var<float> b(Tensor<float>::zeros({2}));
  try {
    (void)(a + b);
    BOOST_FAIL("expected shape_error");
  } catch (const shape_error& e) {
    const std::string msg = e.what();
    BOOST_TEST(msg.find("[2, 3]") != std::string::npos);
    BOOST_TEST(msg.find("[2]") != std::string::npos);
  }
}

BOOST_AUTO_TEST_SUITE_END()
