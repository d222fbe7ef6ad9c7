// embedding, index_select, index_add (with repeated indices) and index_copy through the generic op tester,
// against naive loops; their range and shape errors; the kernels at sizes that run threaded.
#include <cstdint>
#include <string>
#include <vector>

#include "op_harness.hpp"

using namespace mote;
using testing::error_message;
using testing::contains;
using testing::OpSpec;

namespace {

using Ids = Tensor<std::int32_t>;

struct Around {
  std::int64_t outer, n, inner;
};
Around around(const Shape& s, int dim) { return {s.prefix(dim), s[dim], s.suffix(dim + 1)}; }

// out[o, j, :] = x[o, index[j], :], the definition written as loops.
std::vector<double> naive_select(const std::vector<double>& x, const Shape& s, int dim,
                                 const std::vector<std::int32_t>& index) {
  const auto [outer, n, inner] = around(s, dim);
  const auto m = static_cast<std::int64_t>(index.size());
  std::vector<double> out(static_cast<std::size_t>(outer * m * inner));
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t j = 0; j < m; ++j)
      for (std::int64_t i = 0; i < inner; ++i)
        out[static_cast<std::size_t>((o * m + j) * inner + i)] =
            x[static_cast<std::size_t>((o * n + index[static_cast<std::size_t>(j)]) * inner + i)];
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_index_ops)

BOOST_AUTO_TEST_CASE(embedding_with_repeated_ids) {
  const std::vector<std::int32_t> id_values{3, 0, 3, 4, 3, 0};  // row 3 three times, row 0 twice, rows 1, 2 never
  for (const Shape& id_shape : {Shape{6}, Shape{2, 3}, Shape{1, 2, 3}}) {
    const Ids ids = Ids::from_vector(id_shape, id_values);
    const OpSpec spec{.name = "embedding ids " + id_shape.str(), .inputs = {{5, 3}}};
    const auto ref = testing::check_op(spec, [&](auto& v) { return embedding(v[0], ids); });
    Shape expected_shape = id_shape;
    expected_shape.push_back(3);
    BOOST_TEST(ref.shape == expected_shape);
    BOOST_TEST(ref.output == naive_select(testing::draw_inputs(spec)[0], {5, 3}, 0, id_values),
               boost::test_tools::per_element());
    // Rows never looked up get no gradient; a repeated row gets the sum of its positions' gradients.
    BOOST_TEST(ref.grads[0][3] == 0.0);
    BOOST_TEST(ref.grads[0][8] == 0.0);
  }
  // A rank-0 id gives one row.
  Var<double> table(Tensor<double>::from_vector({3, 2}, {0, 1, 2, 3, 4, 5}));
  BOOST_TEST(embedding(table, Ids::from_vector({}, {2})).value().to_vector() == (std::vector<double>{4, 5}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(embedding_rejects_ids_outside_the_vocabulary) {
  Var<float> weight(Tensor<float>::zeros({5, 3}), true);
  const auto msg = error_message<value_error>([&] {
    (void)embedding(weight, Ids::from_vector({2, 3}, {0, 1, 2, 3, 4, 5}));
  });
  BOOST_TEST(contains(msg, "embedding"));
  BOOST_TEST(contains(msg, "ids[1, 2] = 5"));  // the id and its position
  BOOST_TEST(contains(msg, "[0, 5)"));         // the vocabulary size
  BOOST_TEST(contains(msg, "[5, 3]"));
  BOOST_CHECK_THROW((void)embedding(weight, Ids::from_vector({2}, {1, -1})), value_error);
  BOOST_CHECK_THROW((void)embedding(Var<float>(Tensor<float>::zeros({5})), Ids::from_vector({1}, {0})), shape_error);
  BOOST_CHECK_THROW((void)embedding(weight, Ids::zeros({1, 1, 1, 1})), shape_error);
  BOOST_CHECK_THROW((void)embedding(weight, Ids()), value_error);
}

BOOST_AUTO_TEST_CASE(ids_from_tensor_views) {
  Var<double> weight(Tensor<double>::from_vector({4, 2}, {0, 1, 10, 11, 20, 21, 30, 31}));
  const Ids ids = Ids::from_vector({2, 3}, {0, 1, 2, 3, 2, 1});
  const Ids view = ids.transpose(0, 1).slice(0, 1, 2);  // [[1, 2], [2, 1]], strided and offset
  BOOST_TEST(!view.is_contiguous());
  const auto out = embedding(weight, view).value().to_vector();
  BOOST_TEST(out == (std::vector<double>{10, 11, 20, 21, 20, 21, 10, 11}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(index_select_dims_0_1_2_with_duplicates) {
  const Shape shape{4, 3, 5};
  const std::vector<std::int32_t> picks{2, 0, 2, 1, 2};
  for (int dim = 0; dim < 3; ++dim) {
    std::vector<std::int32_t> index;
    for (auto p : picks) index.push_back(p % static_cast<std::int32_t>(shape[dim]));
    const Ids idx = Ids::from_vector({static_cast<std::int64_t>(index.size())}, index);
    const OpSpec spec{.name = "index_select dim " + std::to_string(dim), .inputs = {shape}};
    const auto ref = testing::check_op(spec, [&](auto& v) { return index_select(v[0], dim == 2 ? -1 : dim, idx); });
    Shape expected_shape = shape;
    expected_shape[dim] = static_cast<std::int64_t>(index.size());
    BOOST_TEST(ref.shape == expected_shape);
    BOOST_TEST(ref.output == naive_select(testing::draw_inputs(spec)[0], shape, dim, index),
               boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(index_add_dims_0_and_1_with_duplicates) {
  const Shape base{4, 3, 2};
  const std::vector<std::int32_t> index{1, 0, 1, 1};
  const Ids idx = Ids::from_vector({4}, index);
  for (int dim = 0; dim < 2; ++dim) {
    Shape src = base;
    src[dim] = 4;
    const OpSpec spec{.name = "index_add dim " + std::to_string(dim), .inputs = {base, src}};
    const auto ref = testing::check_op(spec, [&](auto& v) { return index_add(v[0], dim, idx, v[1]); });
    BOOST_TEST(ref.shape == base);
    // Expected: base plus each src slice added at its index.
    const auto values = testing::draw_inputs(spec);
    auto expected = values[0];
    const auto [outer, n, inner] = around(base, dim);
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t j = 0; j < 4; ++j)
        for (std::int64_t i = 0; i < inner; ++i)
          expected[static_cast<std::size_t>((o * n + index[static_cast<std::size_t>(j)]) * inner + i)] +=
              values[1][static_cast<std::size_t>((o * 4 + j) * inner + i)];
    BOOST_TEST(testing::relative_error(ref.output, expected) < 1e-15, spec.name);
    // d src is d out gathered at the index; d base is d out.
    BOOST_TEST(ref.grads[0] == testing::seed_weights(base.numel(), spec.seed), boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(index_copy_dims_0_and_2) {
  const Shape base{4, 3, 5};
  const std::vector<std::int32_t> index{2, 0};
  const Ids idx = Ids::from_vector({2}, index);
  for (int dim : {0, 2}) {
    Shape src = base;
    src[dim] = 2;
    const OpSpec spec{.name = "index_copy dim " + std::to_string(dim), .inputs = {base, src}};
    const auto ref = testing::check_op(spec, [&](auto& v) { return index_copy(v[0], dim, idx, v[1]); });
    BOOST_TEST(ref.shape == base);
    // Expected: base with the indexed slices replaced by src's, exactly.
    const auto values = testing::draw_inputs(spec);
    auto expected = values[0];
    auto base_grad = testing::seed_weights(base.numel(), spec.seed);
    const auto [outer, n, inner] = around(base, dim);
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t j = 0; j < 2; ++j)
        for (std::int64_t i = 0; i < inner; ++i) {
          const auto at = static_cast<std::size_t>((o * n + index[static_cast<std::size_t>(j)]) * inner + i);
          expected[at] = values[1][static_cast<std::size_t>((o * 2 + j) * inner + i)];
          base_grad[at] = 0.0;  // a replaced entry passes nothing back to base
        }
    BOOST_TEST(ref.output == expected, boost::test_tools::per_element());
    BOOST_TEST(ref.grads[0] == base_grad, boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(index_copy_refuses_repeats_and_wrong_shapes) {
  Var<float> x(Tensor<float>::zeros({3, 2}));
  Var<float> rows(Tensor<float>::zeros({2, 2}));
  auto msg = error_message<value_error>([&] { (void)index_copy(x, 0, Ids::from_vector({2}, {1, 1}), rows); });
  BOOST_TEST(contains(msg, "index_copy"));
  BOOST_TEST(contains(msg, "index[1] = 1"));
  BOOST_TEST(contains(msg, "distinct"));
  msg = error_message<shape_error>([&] { (void)index_copy(x, 1, Ids::from_vector({1}, {0}), rows); });
  BOOST_TEST(contains(msg, "src"));
  BOOST_TEST(contains(msg, "[3, 1]"));
  BOOST_CHECK_THROW((void)index_copy(x, 0, Ids::from_vector({2}, {0, 3}), rows), value_error);
}

BOOST_AUTO_TEST_CASE(index_errors_name_the_index_and_shapes) {
  Var<float> x(Tensor<float>::zeros({2, 3}));
  auto msg = error_message<value_error>([&] { (void)index_select(x, 1, Ids::from_vector({3}, {0, 3, 1})); });
  BOOST_TEST(contains(msg, "index_select"));
  BOOST_TEST(contains(msg, "index[1] = 3"));
  BOOST_TEST(contains(msg, "[0, 3)"));
  BOOST_TEST(contains(msg, "[2, 3]"));
  BOOST_CHECK_THROW((void)index_select(x, 0, Ids::from_vector({1}, {-2})), value_error);
  BOOST_CHECK_THROW((void)index_select(x, 0, Ids::zeros({1, 1})), shape_error);
  BOOST_CHECK_THROW((void)index_select(x, 2, Ids::zeros({1})), shape_error);

  Var<float> src(Tensor<float>::zeros({2, 2}));
  msg = error_message<shape_error>([&] { (void)index_add(x, 1, Ids::from_vector({3}, {0, 1, 2}), src); });
  BOOST_TEST(contains(msg, "src"));
  BOOST_TEST(contains(msg, "[2, 2]"));
  BOOST_TEST(contains(msg, "[2, 3]"));
  Var<float> rows(Tensor<float>::zeros({2, 3}));
  msg = error_message<value_error>([&] { (void)index_add(x, 0, Ids::from_vector({2}, {0, 2}), rows); });
  BOOST_TEST(contains(msg, "index[1] = 2"));
  BOOST_TEST(contains(msg, "[0, 2)"));
}

BOOST_AUTO_TEST_CASE(kernels_on_large_inputs) {
  // Enough rows and a ragged set of column blocks for the threaded gather and scatter paths.
  const std::int64_t outer = 3, n = 50, inner = 600, m = 64;
  Rng rng(21);
  std::vector<double> x(static_cast<std::size_t>(outer * n * inner));
  for (auto& v : x) v = rng.uniform(-1, 1);
  std::vector<std::int32_t> index(static_cast<std::size_t>(m));
  for (auto& i : index) i = static_cast<std::int32_t>(rng.below(7));  // many repeats
  const Shape shape{outer, n, inner};

  std::vector<double> gathered(static_cast<std::size_t>(outer * m * inner));
  backend::index_gather(cpu{}, x.data(), outer, n, inner, index.data(), m, gathered.data());
  BOOST_TEST(gathered == naive_select(x, shape, 1, index), boost::test_tools::per_element());

  std::vector<double> doubled(gathered);
  backend::index_gather_add(cpu{}, x.data(), outer, n, inner, index.data(), m, doubled.data());
  std::vector<double> twice(gathered);
  for (auto& v : twice) v *= 2;
  BOOST_TEST(doubled == twice, boost::test_tools::per_element());

  std::vector<double> scattered(x.size(), 0.0), expected(x.size(), 0.0);
  backend::index_scatter_add(cpu{}, gathered.data(), outer, m, inner, index.data(), n, scattered.data());
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t j = 0; j < m; ++j)
      for (std::int64_t i = 0; i < inner; ++i)
        expected[static_cast<std::size_t>((o * n + index[static_cast<std::size_t>(j)]) * inner + i)] +=
            gathered[static_cast<std::size_t>((o * m + j) * inner + i)];
  // Same order of additions per element as the loop above, so equal exactly.
  BOOST_TEST(scattered == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
