// Elementwise ops through the generic op tester.
#include "op_harness.hpp"

using namespace mote;
using testing::OpSpec;

BOOST_AUTO_TEST_SUITE(test_elementwise)

BOOST_AUTO_TEST_CASE(binary_ops_same_shape_and_broadcast) {
  const std::vector<std::pair<Shape, Shape>> shapes = {{{3, 4}, {3, 4}}, {{2, 3, 4}, {4}}, {{4}, {2, 3, 4}}, {{2, 3, 4}, {3, 4}}};
  for (const auto& [sa, sb] : shapes) {
    testing::check_op({.name = "add", .inputs = {sa, sb}}, [](auto& v) { return v[0] + v[1]; });
    testing::check_op({.name = "sub", .inputs = {sa, sb}}, [](auto& v) { return v[0] - v[1]; });
    testing::check_op({.name = "mul", .inputs = {sa, sb}}, [](auto& v) { return v[0] * v[1]; });
    testing::check_op({.name = "div", .inputs = {sa, sb}}, [](auto& v) { return v[0] / v[1]; });
  }
}

// add hands its gradient buffer on to its first input; these are the cases where it must not.
BOOST_AUTO_TEST_CASE(add_passes_its_gradient_on_safely) {
  testing::check_op({.name = "x + x", .inputs = {{3, 4}}}, [](auto& v) { return v[0] + v[0]; });
  testing::check_op({.name = "(a + b) * a", .inputs = {{3, 4}, {3, 4}}}, [](auto& v) { return (v[0] + v[1]) * v[0]; });
  testing::check_op({.name = "a * b + a", .inputs = {{3, 4}, {3, 4}}}, [](auto& v) { return v[0] * v[1] + v[0]; });
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

BOOST_AUTO_TEST_CASE(scale_op) {
  testing::check_op({.name = "scale", .inputs = {{2, 5}}}, [](auto& v) {
    using T = typename std::decay_t<decltype(v[0])>::value_type;
    return scale(v[0], T(-1.75));
  });
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
