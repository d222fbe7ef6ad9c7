// sum and mean along every dim (with and without keepdim) and over everything, against a naive
// reduction; the reduction kernels at sizes that take their parallel paths.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "op_harness.hpp"

using namespace mote;
using testing::contains;
using testing::OpSpec;

namespace {

// Naive reduction of x (shape s) along d, as the mean when `average`.
std::vector<double> naive_reduce(const std::vector<double>& x, const Shape& s, int d, bool average) {
  const std::int64_t outer = s.prefix(d), dim = s[d], inner = s.suffix(d + 1);
  std::vector<double> out(static_cast<std::size_t>(outer * inner), 0.0);
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t j = 0; j < dim; ++j)
      for (std::int64_t i = 0; i < inner; ++i)
        out[static_cast<std::size_t>(o * inner + i)] += x[static_cast<std::size_t>((o * dim + j) * inner + i)];
  if (average)
    for (auto& v : out) v /= static_cast<double>(dim);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_reduce)

BOOST_AUTO_TEST_CASE(sum_and_mean_along_every_dim) {
  const Shape shape{2, 3, 4};
  for (int dim = -3; dim < 3; ++dim)
    for (bool keepdim : {false, true})
      for (bool average : {false, true}) {
        const OpSpec spec{
            .name = std::string(average ? "mean" : "sum") + " dim " + std::to_string(dim) + (keepdim ? " keepdim" : ""),
            .inputs = {shape}};
        const auto ref = testing::check_op(
            spec, [&](auto& v) { return average ? mean(v[0], dim, keepdim) : sum(v[0], dim, keepdim); });
        const int d = dim < 0 ? dim + 3 : dim;
        Shape expected_shape;
        for (int i = 0; i < 3; ++i)
          if (i != d || keepdim) expected_shape.push_back(i == d ? 1 : shape[i]);
        BOOST_TEST(ref.shape == expected_shape, spec.name << ": shape " << ref.shape.str());
        const auto expected = naive_reduce(testing::draw_inputs(spec)[0], shape, d, average);
        BOOST_TEST(testing::relative_error(ref.output, expected) < 1e-12, spec.name);
      }
}

BOOST_AUTO_TEST_CASE(sum_and_mean_over_everything_give_a_rank_0_scalar) {
  for (const Shape& shape : {Shape{5}, Shape{2, 3}, Shape{2, 1, 3, 2}}) {
    for (bool average : {false, true}) {
      const OpSpec spec{.name = std::string(average ? "mean " : "sum ") + shape.str(), .inputs = {shape}};
      const auto ref = testing::check_op(spec, [&](auto& v) { return average ? mean(v[0]) : sum(v[0]); });
      BOOST_TEST(ref.shape.rank() == 0);
      BOOST_TEST(ref.shape.numel() == 1);
      const Shape flat{shape.numel()};
      const auto expected = naive_reduce(testing::draw_inputs(spec)[0], flat, 0, average);
      BOOST_TEST(testing::relative_error(ref.output, expected) < 1e-12, spec.name);
    }
  }
  // A rank-1 tensor summed along its only dim is rank 0 too, and backward() from it works.
  Var<double> x(Tensor<double>::from_vector({3}, {1.0, 2.0, 4.0}), true);
  auto total = sum(x, 0);
  BOOST_TEST(total.shape().rank() == 0);
  BOOST_TEST(total.item() == 7.0);
  mean(x).backward();
  BOOST_TEST(x.grad().to_vector() == std::vector<double>(3, 1.0 / 3.0), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(reductions_chain_and_accept_a_transposed_view) {
  const auto stored = Tensor<double>::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  const auto rows = sum(Var<double>(stored.transpose(0, 1)), 1);  // the view is [3, 2]
  BOOST_TEST(rows.value().to_vector() == (std::vector<double>{5, 7, 9}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(errors_name_the_dim_and_shape) {
  Var<float> x(Tensor<float>::zeros({2, 3}));
  try {
    (void)sum(x, 2);
    BOOST_FAIL("expected shape_error");
  } catch (const shape_error& e) {
    const std::string msg = e.what();
    BOOST_TEST(contains(msg, "sum"));
    BOOST_TEST(contains(msg, "2"));
    BOOST_TEST(contains(msg, "[2, 3]"));
  }
  BOOST_CHECK_THROW((void)mean(x, -3), shape_error);
  Var<float> empty(Tensor<float>::zeros({2, 0}));
  try {
    (void)mean(empty, 1);
    BOOST_FAIL("expected value_error");
  } catch (const value_error& e) {
    BOOST_TEST(contains(e.what(), "[2, 0]"));
  }
  BOOST_CHECK_THROW((void)mean(empty), value_error);
  // Summing an empty dim is fine: zeros.
  BOOST_TEST(sum(empty, 1).value().to_vector() == std::vector<float>(2, 0.0f), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(kernels_on_large_inputs) {
  Rng rng(9);
  for (const Shape& shape : {Shape{3, 100, 300}, Shape{1, 200, 700}, Shape{400, 300, 1}}) {
    std::vector<double> x(static_cast<std::size_t>(shape.numel()));
    for (auto& v : x) v = rng.uniform(-1, 1);
    const std::int64_t outer = shape[0], dim = shape[1], inner = shape[2];
    std::vector<double> out(static_cast<std::size_t>(outer * inner), std::numeric_limits<double>::quiet_NaN());
    backend::reduce_sum(cpu{}, x.data(), outer, dim, inner, 0.5, out.data());
    auto expected = naive_reduce(x, shape, 1, false);
    for (auto& v : expected) v *= 0.5;
    BOOST_TEST(testing::relative_error(out, expected) < 1e-12, "reduce_sum " << shape.str());

    std::vector<double> g(out.size()), dx(x.size(), 1.0);
    for (auto& v : g) v = rng.uniform(-1, 1);
    backend::broadcast_add(cpu{}, g.data(), outer, dim, inner, 2.0, dx.data());
    double err = 0;
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t d = 0; d < dim; ++d)
        for (std::int64_t i = 0; i < inner; ++i)
          err = std::max(err, std::abs(dx[static_cast<std::size_t>((o * dim + d) * inner + i)] -
                                       (1.0 + 2.0 * g[static_cast<std::size_t>(o * inner + i)])));
    BOOST_TEST(err < 1e-15, "broadcast_add " << shape.str());
  }
}

BOOST_AUTO_TEST_SUITE_END()
