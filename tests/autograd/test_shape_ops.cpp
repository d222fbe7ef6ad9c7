// reshape, transpose, slice, concat and split through the generic op tester, their outputs
// against Tensor-level views, and their errors.
#include <string>
#include <vector>

#include "op_harness.hpp"

using namespace mote;
using testing::error_message;
using testing::contains;
using testing::OpSpec;

namespace {

// The values check_op draws for input i, as a packed tensor, to compare with Tensor-level views.
Tensor<double> drawn(const OpSpec& spec, std::size_t i) {
  return Tensor<double>::from_vector(spec.inputs[i], testing::draw_inputs(spec)[i]);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_shape_ops)

BOOST_AUTO_TEST_CASE(reshape_is_a_view_with_a_pass_through_gradient) {
  for (const Shape& to : {Shape{4, 6}, Shape{24}, Shape{2, 12, 1}, Shape{1, 2, 3, 4}}) {
    const OpSpec spec{.name = "reshape to " + to.str(), .inputs = {{2, 3, 4}}};
    const auto ref = testing::check_op(spec, [&](auto& v) { return reshape(v[0], to); });
    BOOST_TEST(ref.shape == to);
    BOOST_TEST(ref.output == drawn(spec, 0).to_vector(), boost::test_tools::per_element());
  }
  // The gradient buffer is handed on (the op table holds the cases where it must not be); a
  // retained gradient stays with its own node.
  Var<double> p = Var<double>::parameter(Tensor<double>::from_vector({2, 2}, {1.0, -2.0, 0.5, 3.0}));
  Var<double> flat = reshape(p, {4});
  flat.retain_grad();
  sum(flat * flat).backward();
  const std::vector<double> twice{2.0, -4.0, 1.0, 6.0};
  BOOST_TEST(flat.grad().to_vector() == twice, boost::test_tools::per_element());
  BOOST_TEST(p.grad().to_vector() == twice, boost::test_tools::per_element());
  BOOST_TEST(p.grad().shape() == (Shape{2, 2}));
  BOOST_TEST(!p.grad().shares_storage_with(flat.grad()));

  Var<float> x(Tensor<float>::zeros({2, 3}));
  BOOST_TEST(reshape(x, {3, 2}).value().shares_storage_with(x.value()));
  const auto msg = error_message<shape_error>([&] { (void)reshape(x, {4, 2}); });
  BOOST_TEST(contains(msg, "[2, 3]"));
  BOOST_TEST(contains(msg, "[4, 2]"));
}

BOOST_AUTO_TEST_CASE(transpose_every_pair_of_dims) {
  const Shape shape{2, 3, 1, 4};
  for (int d0 = 0; d0 < 4; ++d0)
    for (int d1 = d0; d1 < 4; ++d1) {
      const OpSpec spec{.name = "transpose " + std::to_string(d0) + " " + std::to_string(d1), .inputs = {shape}};
      // Negative dims on every other pair, to cover counting from the end.
      const int a = d0 % 2 ? d0 - 4 : d0, b = d1 % 2 ? d1 : d1 - 4;
      const auto ref = testing::check_op(spec, [&](auto& v) { return transpose(v[0], a, b); });
      const auto view = drawn(spec, 0).transpose(d0, d1);
      BOOST_TEST(ref.shape == view.shape());
      BOOST_TEST(ref.output == view.to_vector(), boost::test_tools::per_element());
    }
  const auto msg = error_message<shape_error>([] { (void)transpose(Var<float>(Tensor<float>::zeros({2, 3})), 0, 2); });
  BOOST_TEST(contains(msg, "transpose"));
  BOOST_TEST(contains(msg, "[2, 3]"));
}

BOOST_AUTO_TEST_CASE(transpose_large_tensors_both_copy_paths) {
  // Swapping two middle dims copies whole rows; swapping the last dim gathers single elements.
  Rng rng(4);
  const auto x = Tensor<float>::uniform({2, 40, 30, 33}, -1, 1, rng);
  for (const auto& [d0, d1] : std::vector<std::pair<int, int>>{{1, 2}, {2, 3}, {0, 3}}) {
    Var<float> xv(x, true);
    auto y = transpose(xv, d0, d1);
    BOOST_TEST(y.value().to_vector() == x.transpose(d0, d1).to_vector(), boost::test_tools::per_element());
    const auto seed = Tensor<float>::uniform(y.shape(), -1, 1, rng);
    y.backward(seed);
    BOOST_TEST(xv.grad().to_vector() == seed.transpose(d0, d1).to_vector(), boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(slice_along_every_dim) {
  const Shape shape{3, 4, 5};
  for (int dim = 0; dim < 3; ++dim)
    for (const auto& [start, length] :
         std::vector<std::pair<std::int64_t, std::int64_t>>{{0, 1}, {1, 2}, {0, shape[dim]}}) {
      const OpSpec spec{.name = "slice dim " + std::to_string(dim) + " [" + std::to_string(start) + ", +" +
                                std::to_string(length) + ")",
                        .inputs = {shape}};
      const auto ref = testing::check_op(spec, [&](auto& v) { return slice(v[0], dim, start, length); });
      const auto view = drawn(spec, 0).slice(dim, start, length);
      BOOST_TEST(ref.shape == view.shape());
      BOOST_TEST(ref.output == view.to_vector(), boost::test_tools::per_element());
    }
  Var<float> x(Tensor<float>::zeros({3, 4}), true);
  auto empty = slice(x, 1, 4, 0);
  BOOST_TEST(empty.shape() == (Shape{3, 0}));
  auto msg = error_message<shape_error>([&] { (void)slice(x, 1, 3, 2); });
  BOOST_TEST(contains(msg, "[3, 5)"));
  BOOST_TEST(contains(msg, "[3, 4]"));
  BOOST_CHECK_THROW((void)slice(x, 0, -1, 1), shape_error);
  BOOST_CHECK_THROW((void)slice(x, 2, 0, 1), shape_error);
}

BOOST_AUTO_TEST_CASE(concat_along_every_dim) {
  for (int dim = 0; dim < 3; ++dim) {
    std::vector<Shape> inputs;
    for (std::int64_t size : {2, 1, 3}) {
      Shape s{2, 3, 2};
      s[dim] = size;
      inputs.push_back(s);
    }
    const OpSpec spec{.name = "concat dim " + std::to_string(dim), .inputs = inputs};
    const auto ref = testing::check_op(spec, [&](auto& v) { return concat(v, dim - 3); });
    // Each input must reappear as a slice of the output.
    const auto out = Tensor<double>::from_vector(ref.shape, ref.output);
    std::int64_t offset = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      BOOST_TEST(out.slice(dim, offset, inputs[i][dim]).to_vector() == drawn(spec, i).to_vector(),
                 boost::test_tools::per_element());
      offset += inputs[i][dim];
    }
    BOOST_TEST(offset == ref.shape[dim]);
  }
}

BOOST_AUTO_TEST_CASE(concat_errors) {
  Var<float> a(Tensor<float>::zeros({2, 3})), b(Tensor<float>::zeros({4, 4})), c(Tensor<float>::zeros({2, 3, 1}));
  auto msg = error_message<shape_error>([&] { (void)concat(std::vector{a, b}, 0); });
  BOOST_TEST(contains(msg, "xs[1]"));
  BOOST_TEST(contains(msg, "[4, 4]"));
  BOOST_TEST(contains(msg, "[2, 3]"));
  BOOST_CHECK_THROW((void)concat(std::vector{a, c}, 1), shape_error);
  BOOST_CHECK_THROW((void)concat(std::vector{a, a}, 2), shape_error);
  BOOST_CHECK_THROW((void)concat(std::vector<Var<float>>{}, 0), value_error);
}

BOOST_AUTO_TEST_CASE(split_and_concat_round_trip) {
  for (int dim = 0; dim < 3; ++dim) {
    const Shape shape{5, 5, 5};
    const OpSpec spec{.name = "split dim " + std::to_string(dim) + " round trip", .inputs = {shape}};
    const auto round_trip = testing::check_op(spec, [&](auto& v) { return concat(split(v[0], dim, {1, 0, 4}), dim); });
    BOOST_TEST(round_trip.output == drawn(spec, 0).to_vector(), boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(split_sizes_must_add_up) {
  Var<float> x(Tensor<float>::zeros({3, 5}));
  const auto msg = error_message<shape_error>([&] { (void)split(x, 1, {2, 2}); });
  BOOST_TEST(contains(msg, "{2, 2}"));
  BOOST_TEST(contains(msg, "4"));
  BOOST_TEST(contains(msg, "[3, 5]"));
  BOOST_CHECK_THROW((void)split(x, 1, {6, -1}), value_error);
  BOOST_CHECK_THROW((void)split(x, 2, {3}), shape_error);
}

BOOST_AUTO_TEST_CASE(vars_made_from_tensor_views) {
  const auto base = Tensor<double>::from_vector({2, 3, 4}, [] {
    std::vector<double> v(24);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
    return v;
  }());
  // An offset, strided view (slice, then transpose) becomes a packed Var value.
  const auto view = base.slice(2, 1, 2).transpose(0, 2);  // [2, 3, 2]
  BOOST_TEST(!view.is_contiguous());
  Var<double> x(view, true);
  auto y = reshape(transpose(x, 1, 2), {4, 3});
  BOOST_TEST(y.value().to_vector() == view.transpose(1, 2).to_vector(), boost::test_tools::per_element());
  auto halves = split(x, 0, {1, 1});
  BOOST_TEST(halves[1].value().to_vector() == view.slice(0, 1, 1).to_vector(), boost::test_tools::per_element());
  sum(concat(halves, 1)).backward();
  BOOST_TEST(x.grad().to_vector() == std::vector<double>(12, 1.0), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
