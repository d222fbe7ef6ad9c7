// matmul, fused bias and linear through the generic op tester, checked against a naive product;
// the GEMM kernels directly at sizes that reach Eigen's blocked and threaded paths.
#include <array>
#include <bit>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "op_harness.hpp"

using namespace mote;
using testing::error_message;
using testing::contains;
using testing::OpSpec;

namespace {

// Stored shape of an operand whose op() is [rows, cols] after the optional transpose.
Shape stored(Shape lead, std::int64_t rows, std::int64_t cols, bool transposed) {
  lead.push_back(transposed ? cols : rows);
  lead.push_back(transposed ? rows : cols);
  return lead;
}

// Element (i, j) of op(x) for the matrix starting at x, stored [rows, cols] row-major.
double op_at(const double* x, std::int64_t cols, bool transposed, std::int64_t i, std::int64_t j) {
  return transposed ? x[j * cols + i] : x[i * cols + j];
}

// The textbook triple loop over every product of the batch (a stride of 0 shares an operand).
std::vector<double> naive_matmul(const std::vector<double>& a, const Shape& sa, const std::vector<double>& b,
                                 const Shape& sb, MatmulOptions o, const std::vector<double>* bias) {
  const std::int64_t m = o.trans_a ? sa[-1] : sa[-2], k = o.trans_a ? sa[-2] : sa[-1];
  const std::int64_t n = o.trans_b ? sb[-2] : sb[-1];
  const std::int64_t batch_a = sa.numel() / (sa[-1] * sa[-2]), batch_b = sb.numel() / (sb[-1] * sb[-2]);
  const std::int64_t batch = std::max(batch_a, batch_b);
  std::vector<double> c(static_cast<std::size_t>(batch * m * n));
  for (std::int64_t p = 0; p < batch; ++p) {
    const double* pa = a.data() + (batch_a > 1 ? p : 0) * sa[-1] * sa[-2];
    const double* pb = b.data() + (batch_b > 1 ? p : 0) * sb[-1] * sb[-2];
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double s = bias ? (*bias)[static_cast<std::size_t>(j)] : 0.0;
        for (std::int64_t q = 0; q < k; ++q)
          s += op_at(pa, sa[-1], o.trans_a, i, q) * op_at(pb, sb[-1], o.trans_b, q, j);
        c[static_cast<std::size_t>((p * m + i) * n + j)] = s;
      }
  }
  return c;
}

// check_op on matmul(a, b[, bias]) plus a comparison of its output with the naive product.
void check_matmul(const Shape& sa, const Shape& sb, MatmulOptions o, bool with_bias) {
  const std::int64_t n = o.trans_b ? sb[-2] : sb[-1];
  OpSpec spec{.name = std::string("matmul a") + sa.str() + (o.trans_a ? "^T" : "") + " b" + sb.str() +
                      (o.trans_b ? "^T" : "") + (with_bias ? " + bias" : ""),
              .inputs = {sa, sb}};
  if (with_bias) spec.inputs.push_back(Shape{n});
  const auto ref =
      testing::check_op(spec, [&](auto& v) { return with_bias ? matmul(v[0], v[1], v[2], o) : matmul(v[0], v[1], o); });
  const auto values = testing::draw_inputs(spec);
  const auto expected = naive_matmul(values[0], sa, values[1], sb, o, with_bias ? &values[2] : nullptr);
  BOOST_TEST(testing::relative_error(ref.output, expected) < 1e-12,
             spec.name << ": output differs from a naive product");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_matmul)

BOOST_AUTO_TEST_CASE(two_d_every_transpose_combination_with_and_without_bias) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool bias : {false, true})
        check_matmul(stored({}, 3, 4, ta), stored({}, 4, 5, tb), {.trans_a = ta, .trans_b = tb}, bias);
}

BOOST_AUTO_TEST_CASE(batched_rank_3_and_4) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const MatmulOptions o{.trans_a = ta, .trans_b = tb};
      check_matmul(stored({2}, 3, 2, ta), stored({2}, 2, 4, tb), o, false);
      check_matmul(stored({2, 2}, 2, 3, ta), stored({2, 2}, 3, 2, tb), o, ta != tb);
    }
}

BOOST_AUTO_TEST_CASE(shared_weight_across_leading_dims) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const MatmulOptions o{.trans_a = ta, .trans_b = tb};
      // Untransposed a folds its leading dims into one GEMM; transposed a runs one GEMM per matrix.
      check_matmul(stored({2}, 3, 4, ta), stored({}, 4, 2, tb), o, false);
      check_matmul(stored({2, 2}, 2, 3, ta), stored({}, 3, 2, tb), o, true);
      // The mirror case: a 2-D a shared across b's leading dims.
      check_matmul(stored({}, 2, 3, ta), stored({2}, 3, 4, tb), o, tb);
    }
}

BOOST_AUTO_TEST_CASE(linear_with_and_without_bias) {
  for (const Shape& x : {Shape{3, 4}, Shape{2, 3, 4}}) {
    OpSpec with_bias{.name = "linear " + x.str() + " + bias", .inputs = {x, {5, 4}, {5}}};
    const auto ref = testing::check_op(with_bias, [](auto& v) { return linear(v[0], v[1], v[2]); });
    const auto values = testing::draw_inputs(with_bias);
    const auto expected = naive_matmul(values[0], x, values[1], {5, 4}, {.trans_b = true}, &values[2]);
    BOOST_TEST(testing::relative_error(ref.output, expected) < 1e-12);
    BOOST_TEST(ref.shape == (x.rank() == 2 ? Shape{3, 5} : Shape{2, 3, 5}));

    OpSpec without{.name = "linear " + x.str(), .inputs = {x, {5, 4}}};
    testing::check_op(without, [](auto& v) { return linear(v[0], v[1]); });
  }
}

BOOST_AUTO_TEST_CASE(gradients_only_for_inputs_that_require_them) {
  // A frozen operand gets no gradient, the other one does (the op table checks them by finite differences).
  Var<double> a(Tensor<double>::full({2, 3}, 1.0), true), b(Tensor<double>::full({3, 2}, 1.0));
  auto y = matmul(a, b);
  y.backward(Tensor<double>::full({2, 2}, 1.0));
  BOOST_TEST(a.grad().defined());
  BOOST_TEST(!b.grad().defined());
  BOOST_TEST(a.grad().to_vector() == std::vector<double>(6, 2.0), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(var_from_a_transposed_tensor_view) {
  Rng rng(7);
  const auto stored_a = Tensor<double>::uniform({4, 3}, -1, 1, rng);
  const auto b = Tensor<double>::uniform({4, 2}, -1, 1, rng);
  const Tensor<double> view = stored_a.transpose(0, 1);  // [3, 4], not packed
  BOOST_TEST(!view.is_contiguous());
  const auto from_view = matmul(Var<double>(view), Var<double>(b), {.trans_b = false});
  const auto from_flag = matmul(Var<double>(stored_a), Var<double>(b), {.trans_a = true});
  BOOST_TEST(from_view.shape() == (Shape{3, 2}));
  BOOST_TEST(from_view.value().to_vector() == from_flag.value().to_vector(), boost::test_tools::per_element());

  // A sliced (offset, strided) view as the shared weight.
  const auto wide = Tensor<double>::uniform({4, 6}, -1, 1, rng);
  const auto sliced = matmul(Var<double>(view), Var<double>(wide.slice(1, 2, 2)));
  const auto packed = matmul(Var<double>(view.contiguous()), Var<double>(wide.slice(1, 2, 2).contiguous()));
  BOOST_TEST(sliced.value().to_vector() == packed.value().to_vector(), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(errors_name_the_arguments_and_shapes) {
  Var<float> a(Tensor<float>::zeros({2, 3})), b(Tensor<float>::zeros({4, 5}));
  auto msg = error_message<shape_error>([&] { (void)matmul(a, b); });
  BOOST_TEST(contains(msg, "matmul"));
  BOOST_TEST(contains(msg, "[2, 3]"));
  BOOST_TEST(contains(msg, "[4, 5]"));

  msg = error_message<shape_error>([&] { (void)matmul(a, b, {.trans_a = true}); });
  BOOST_TEST(contains(msg, "transposed"));

  Var<float> batched_a(Tensor<float>::zeros({2, 2, 3})), batched_b(Tensor<float>::zeros({3, 3, 4}));
  msg = error_message<shape_error>([&] { (void)matmul(batched_a, batched_b); });
  BOOST_TEST(contains(msg, "[2, 2, 3]"));
  BOOST_TEST(contains(msg, "[3, 3, 4]"));
  BOOST_TEST(contains(msg, "leading"));

  Var<float> rank4_b(Tensor<float>::zeros({1, 2, 3, 4}));
  msg = error_message<shape_error>([&] { (void)matmul(batched_a, rank4_b); });
  BOOST_TEST(contains(msg, "[1, 2, 3, 4]"));

  Var<float> vector(Tensor<float>::zeros({3}));
  msg = error_message<shape_error>([&] { (void)matmul(vector, b); });
  BOOST_TEST(contains(msg, "'a'"));
  BOOST_TEST(contains(msg, "[3]"));

  Var<float> good_b(Tensor<float>::zeros({3, 5})), bad_bias(Tensor<float>::zeros({4}));
  msg = error_message<shape_error>([&] { (void)matmul(a, good_b, bad_bias); });
  BOOST_TEST(contains(msg, "bias"));
  BOOST_TEST(contains(msg, "[4]"));
  BOOST_TEST(contains(msg, "[5]"));

  Var<float> weight(Tensor<float>::zeros({5, 4}));
  msg = error_message<shape_error>([&] { (void)linear(a, weight); });
  BOOST_TEST(contains(msg, "linear"));
  BOOST_TEST(contains(msg, "[2, 3]"));
  BOOST_TEST(contains(msg, "[5, 4]"));
  msg = error_message<shape_error>([&] { (void)linear(a, Var<float>(Tensor<float>::zeros({3}))); });
  BOOST_TEST(contains(msg, "weight"));

  BOOST_CHECK_THROW((void)matmul(Var<float>(), b), autograd_error);
}

BOOST_AUTO_TEST_CASE(gemm_kernel_beta_cases_and_padded_strides) {
  // Sizes past Eigen's small-product cutoff, so its blocked (and threaded) kernel runs; then
  // matrix-vector shapes, which the kernel splits across threads by output columns or rows; then
  // the few-row path: several left rows, a ragged last chunk, columns cut as well (k = 70), serial.
  const std::int64_t pad = 3;
  Rng rng(11);
  for (const auto& [m, n, k] : std::vector<std::array<std::int64_t, 3>>{
           {67, 45, 83}, {1, 1100, 1000}, {1100, 1, 1000}, {3, 700, 701}, {4, 2000, 70}, {2, 33, 9}, {8, 700, 701},
           {7, 2000, 70}})
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const std::int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
      const std::int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
      std::vector<double> a(static_cast<std::size_t>(a_rows * lda)), b(static_cast<std::size_t>(b_rows * ldb));
      for (auto& x : a) x = rng.uniform(-1, 1);
      for (auto& x : b) x = rng.uniform(-1, 1);
      std::vector<double> product(static_cast<std::size_t>(m * n));
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (std::int64_t q = 0; q < k; ++q) s += op_at(a.data(), lda, ta, i, q) * op_at(b.data(), ldb, tb, q, j);
          product[static_cast<std::size_t>(i * n + j)] = s;
        }
      for (double beta : {0.0, 1.0, -0.5}) {
        const double old = 2.0, alpha = 1.5;
        // beta 0 must not read C: fill it with NaN. The padding columns must stay untouched.
        std::vector<double> c(static_cast<std::size_t>(m * ldc),
                              beta == 0.0 ? std::numeric_limits<double>::quiet_NaN() : old);
        for (std::int64_t i = 0; i < m; ++i) c[static_cast<std::size_t>(i * ldc + n)] = 42.0;
        const std::vector<double> c_before = c;
        backend::gemm(cpu{}, ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
        // Threads claim chunks in any order; the sums must not depend on it.
        std::vector<double> again = c_before;
        backend::gemm(cpu{}, ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, again.data(), ldc);
        for (std::size_t i = 0; i < c.size(); ++i)
          if (!std::isnan(c[i])) BOOST_REQUIRE_EQUAL(c[i], again[i]);
        double err = 0;
        for (std::int64_t i = 0; i < m; ++i) {
          for (std::int64_t j = 0; j < n; ++j) {
            const double want = alpha * product[static_cast<std::size_t>(i * n + j)] + (beta == 0.0 ? 0.0 : beta * old);
            err = std::max(err, std::abs(c[static_cast<std::size_t>(i * ldc + j)] - want));
          }
          BOOST_TEST(c[static_cast<std::size_t>(i * ldc + n)] == 42.0);
        }
        BOOST_TEST(err < 1e-10, "gemm " << m << "x" << n << "x" << k << " ta=" << ta << " tb=" << tb << " beta=" << beta
                                        << ": max error " << err);
      }
    }
}

BOOST_AUTO_TEST_CASE(spin_team_runs_every_chunk_once_and_gemm_gives_the_same_bits) {
  using backend::SpinTeam;
  Rng rng(21);
  const std::int64_t n = 700, k = 701;  // past the threshold where the few-row kernel uses threads
  std::vector<float> a(static_cast<std::size_t>(k)), b(static_cast<std::size_t>(k * n)), outside(n), inside(n);
  for (auto& x : a) x = static_cast<float>(rng.uniform(-1, 1));
  for (auto& x : b) x = static_cast<float>(rng.uniform(-1, 1));
  backend::gemm(cpu{}, false, false, 1, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, outside.data(), n);

  bool active_inside = false, nested_ran = false;
  std::int64_t wrong_counts = 0;
  SpinTeam::hold([&] {
    active_inside = SpinTeam::active();
    for (std::int64_t job = 0; job < 300; ++job) {
      const std::int64_t chunks = 1 + job % 37;
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(chunks));
      SpinTeam::run(chunks, [&](std::int64_t c) { hits[static_cast<std::size_t>(c)].fetch_add(1); });
      for (const auto& h : hits) wrong_counts += h.load() != 1;
    }
    backend::gemm(cpu{}, false, false, 1, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, inside.data(), n);
    SpinTeam::hold([&] { nested_ran = SpinTeam::active(); });  // nested: runs inline on the leader
  });
  const bool team = backend::gemm_detail::max_threads() > 1;  // with one thread, hold just calls the leader
  BOOST_TEST(active_inside == team);
  BOOST_TEST(nested_ran == team);
  BOOST_TEST(!SpinTeam::active());
  BOOST_TEST(wrong_counts == 0);
  BOOST_TEST(inside == outside);  // same chunks, same order of partial sums

  // An exception from the leader reaches the caller, and the team can be held again afterwards.
  BOOST_CHECK_THROW(SpinTeam::hold([] { throw value_error("leader failed"); }), value_error);
  int ran = 0;
  SpinTeam::hold([&] { SpinTeam::run(5, [&](std::int64_t) {}), ++ran; });
  BOOST_TEST(ran == 1);
}

// A projection with unmerged LoRA experts in one pass: C = A op(B) + each term's
// coef * up (down a[row]). Few rows run the terms inside the product's threaded job, more rows
// after it; both must match plain loops, and inside a held team give the same bits as outside.
BOOST_AUTO_TEST_CASE(gemm_low_rank_adds_each_term_to_its_row) {
  using backend::LowRankTerm;
  Rng rng(23);
  const auto uniform = [&](std::int64_t count) {
    std::vector<double> v(static_cast<std::size_t>(count));
    for (auto& x : v) x = rng.uniform(-1, 1);
    return v;
  };
  for (const auto& [m, n, k] : std::vector<std::array<std::int64_t, 3>>{{1, 700, 701}, {3, 300, 130}, {8, 520, 64}, {12, 90, 70}})
    for (bool tb : {false, true})
      for (std::int64_t rank : {16, 3}) {  // a rank the kernel knows at compile time, and one it does not
        const std::int64_t ldc = n + 2;
        const auto a = uniform(m * k), b = uniform(k * n);
        std::vector<std::vector<double>> downs, ups;
        std::vector<LowRankTerm<double>> terms;
        for (std::int64_t t = 0; t < 2 * m; ++t) {  // two terms a row, the second rows first
          downs.push_back(uniform(rank * k));
          ups.push_back(uniform(n * rank));
          terms.push_back({(t + m) % m, nullptr, nullptr, rank, 0.25 * static_cast<double>(t + 1)});
        }
        for (std::size_t t = 0; t < terms.size(); ++t) {
          terms[t].down = downs[t].data();
          terms[t].up = ups[t].data();
        }
        std::vector<double> want(static_cast<std::size_t>(m * n));
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (std::int64_t q = 0; q < k; ++q) s += a[static_cast<std::size_t>(i * k + q)] * op_at(b.data(), tb ? k : n, tb, q, j);
            want[static_cast<std::size_t>(i * n + j)] = s;
          }
        for (std::size_t t = 0; t < terms.size(); ++t) {
          std::vector<double> h(static_cast<std::size_t>(rank), 0.0);
          for (std::int64_t r = 0; r < rank; ++r)
            for (std::int64_t q = 0; q < k; ++q)
              h[static_cast<std::size_t>(r)] += downs[t][static_cast<std::size_t>(r * k + q)] * a[static_cast<std::size_t>(terms[t].row * k + q)];
          for (std::int64_t j = 0; j < n; ++j)
            for (std::int64_t r = 0; r < rank; ++r)
              want[static_cast<std::size_t>(terms[t].row * n + j)] +=
                  terms[t].coef * ups[t][static_cast<std::size_t>(j * rank + r)] * h[static_cast<std::size_t>(r)];
        }
        const auto run = [&] {
          std::vector<double> c(static_cast<std::size_t>(m * ldc), std::numeric_limits<double>::quiet_NaN());
          for (std::int64_t i = 0; i < m; ++i)  // padding, untouched; the NaN elsewhere must never be read
            c[static_cast<std::size_t>(i * ldc + n)] = c[static_cast<std::size_t>(i * ldc + n + 1)] = 42.0;
          backend::gemm_low_rank(cpu{}, tb, m, n, k, a.data(), k, b.data(), tb ? k : n, terms.data(),
                                 static_cast<std::int64_t>(terms.size()), c.data(), ldc);
          return c;
        };
        const auto outside = run();
        std::vector<double> inside;
        backend::SpinTeam::hold([&] { inside = run(); });
        double err = 0;
        for (std::int64_t i = 0; i < m; ++i) {
          for (std::int64_t j = 0; j < n; ++j)
            err = std::max(err, std::abs(outside[static_cast<std::size_t>(i * ldc + j)] - want[static_cast<std::size_t>(i * n + j)]));
          BOOST_TEST(outside[static_cast<std::size_t>(i * ldc + n)] == 42.0);
        }
        BOOST_TEST(err < 1e-10, "gemm_low_rank " << m << "x" << n << "x" << k << " tb=" << tb << " rank " << rank
                                                 << ": max error " << err);
        BOOST_TEST(inside == outside, "gemm_low_rank " << m << "x" << n << "x" << k << " tb=" << tb
                                                       << ": the held team changed the bits");
      }
  // A term naming a row the product does not have is refused before anything is written.
  const std::vector<double> a(4 * 5, 1.0), b(5 * 6, 1.0), down(2 * 5, 1.0), up(6 * 2, 1.0);
  std::vector<double> c(4 * 6, 0.0);
  const LowRankTerm<double> outside_rows[] = {{4, down.data(), up.data(), 2, 1.0}};
  BOOST_CHECK_EXCEPTION(backend::gemm_low_rank(cpu{}, false, 4, 6, 5, a.data(), 5, b.data(), 6, outside_rows, 1, c.data(), 6),
                        shape_error, [](const shape_error& e) { return std::string(e.what()).find("row 4") != std::string::npos; });
  BOOST_TEST(c == std::vector<double>(4 * 6, 0.0));
}

// Float terms whose rank fills whole AVX-512 vectors fold sixteen outputs' sums in registers; the
// outputs past the last sixteen take the portable loop. Both paths against double sums.
BOOST_AUTO_TEST_CASE(low_rank_row_folds_float_vectors_in_output_order) {
  const bool kernel = backend::fp32_kernel_available();
  if (!kernel) BOOST_TEST_MESSAGE("no AVX-512 here: only the portable path of low_rank_row is checked");
  Rng rng(29);
  const std::int64_t k = 45;
  for (std::int64_t rank : {16, 32, 48, 8})
    for (std::int64_t n : {16, 50, 333}) {
      std::vector<float> down(static_cast<std::size_t>(rank * k)), up(static_cast<std::size_t>(n * rank)), x(k);
      for (auto* v : {&down, &up, &x})
        for (auto& e : *v) e = static_cast<float>(rng.uniform(-1, 1));
      std::vector<double> want(static_cast<std::size_t>(n), 0.0);
      for (std::int64_t j = 0; j < rank; ++j) {
        double h = 0;
        for (std::int64_t i = 0; i < k; ++i) h += double(down[static_cast<std::size_t>(j * k + i)]) * double(x[static_cast<std::size_t>(i)]);
        for (std::int64_t o = 0; o < n; ++o) want[static_cast<std::size_t>(o)] += -0.5 * double(up[static_cast<std::size_t>(o * rank + j)]) * h;
      }
      for (bool use_kernel : {true, false}) {
        if (use_kernel && !kernel) continue;
        backend::fp32_detail::use_kernel().store(use_kernel);
        std::vector<float> out(static_cast<std::size_t>(n), std::numeric_limits<float>::quiet_NaN());
        backend::low_rank_row(backend::LowRankTerm<float>{0, down.data(), up.data(), rank, -0.5f}, x.data(), k, n, out.data());
        double err = 0;
        for (std::int64_t o = 0; o < n; ++o) err = std::max(err, std::abs(double(out[static_cast<std::size_t>(o)]) - want[static_cast<std::size_t>(o)]));
        BOOST_TEST(err < 1e-4, "low_rank_row rank " << rank << " n " << n << (use_kernel ? " AVX-512" : " portable")
                                                    << ": max error " << err);
      }
      backend::fp32_detail::use_kernel().store(kernel);
    }
}

BOOST_AUTO_TEST_CASE(strided_batched_gemm_matches_one_gemm_per_matrix) {
  // Many small products (threads across the batch) and a few large ones (Eigen's own threads).
  Rng rng(5);
  for (const auto& [m, n, k, batch] : std::vector<std::array<std::int64_t, 4>>{{9, 7, 5, 40}, {130, 140, 150, 3}}) {
    const std::int64_t stride_c = m * n + 1;  // a gap between matrices must stay untouched
    std::vector<float> a(static_cast<std::size_t>(batch * m * k)), b(static_cast<std::size_t>(batch * k * n));
    for (auto& x : a) x = static_cast<float>(rng.uniform(-1, 1));
    for (auto& x : b) x = static_cast<float>(rng.uniform(-1, 1));
    std::vector<float> batched(static_cast<std::size_t>(batch * stride_c), -7.0f), single(batched);
    backend::gemm_strided_batched(cpu{}, false, true, m, n, k, 1.0f, a.data(), k, m * k, b.data(), k, k * n, 0.0f,
                                  batched.data(), n, stride_c, batch);
    for (std::int64_t p = 0; p < batch; ++p)
      backend::gemm(cpu{}, false, true, m, n, k, 1.0f, a.data() + p * m * k, k, b.data() + p * k * n, k, 0.0f,
                    single.data() + p * stride_c, n);
    BOOST_TEST(batched == single, boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(bias_kernels) {
  const std::int64_t rows = 300, cols = 517;  // past the parallel thresholds, with a ragged column block
  std::vector<double> x(static_cast<std::size_t>(rows * cols)), bias(static_cast<std::size_t>(cols));
  Rng rng(3);
  for (auto& v : x) v = rng.uniform(-1, 1);
  for (auto& v : bias) v = rng.uniform(-1, 1);
  std::vector<double> summed(static_cast<std::size_t>(cols), 1.0), want(summed);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < cols; ++j)
      want[static_cast<std::size_t>(j)] += x[static_cast<std::size_t>(r * cols + j)];
  backend::sum_rows(cpu{}, x.data(), rows, cols, summed.data());
  BOOST_TEST(testing::relative_error(summed, want) < 1e-12);

  auto shifted = x;
  backend::add_row_vector(cpu{}, shifted.data(), bias.data(), rows, cols);
  double err = 0;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < cols; ++j) {
      const auto i = static_cast<std::size_t>(r * cols + j);
      err = std::max(err, std::abs(shifted[i] - x[i] - bias[static_cast<std::size_t>(j)]));
    }
  BOOST_TEST(err < 1e-15);
}

BOOST_AUTO_TEST_CASE(bf16_rounding_is_nearest_even_and_keeps_infinities_and_nans) {
  using backend::bf16_detail::from_bf16;
  using backend::bf16_detail::to_bf16;
  auto bits = [](std::uint32_t b) { return std::bit_cast<float>(b); };
  BOOST_TEST(to_bf16(1.0f) == 0x3f80u);
  BOOST_TEST(to_bf16(-2.5f) == 0xc020u);
  BOOST_TEST(to_bf16(bits(0x3f808000u)) == 0x3f80u);  // a tie rounds to the even 0x3f80
  BOOST_TEST(to_bf16(bits(0x3f818000u)) == 0x3f82u);  // a tie rounds to the even 0x3f82
  BOOST_TEST(to_bf16(bits(0x3f808001u)) == 0x3f81u);  // just past the tie rounds up
  BOOST_TEST(to_bf16(bits(0x3f807fffu)) == 0x3f80u);  // just short of it rounds down
  BOOST_TEST(to_bf16(bits(0x7f7fffffu)) == 0x7f80u);  // float's largest rounds to infinity
  BOOST_TEST(to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80u);
  BOOST_TEST(std::isnan(from_bf16(to_bf16(bits(0x7f800001u)))));  // payload only in the low half
  BOOST_TEST(from_bf16(to_bf16(0.15625f)) == 0.15625f);            // exactly representable
}

// Runs product(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) against a double product of
// round(a) and round(b): every transpose and beta case, padded strides (the padding must stay
// untouched), and operands where every seventh one is exactly halfway between two bf16 values.
template <class Product, class Round>
void check_against_double_product(const std::string& label, const std::vector<std::array<std::int64_t, 3>>& shapes,
                                  Product product, Round round) {
  const std::int64_t pad = 5;
  Rng rng(31);
  for (const auto& [m, n, k] : shapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const std::int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
        const std::int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
        std::vector<float> a(static_cast<std::size_t>(a_rows * lda)), b(static_cast<std::size_t>(b_rows * ldb));
        for (auto& x : a) x = static_cast<float>(rng.uniform(-1, 1));
        for (auto& x : b) x = static_cast<float>(rng.uniform(-1, 1));
        const float ties[] = {std::bit_cast<float>(0x3f808000u), std::bit_cast<float>(0xbf818000u)};
        for (std::size_t i = 0; i < a.size(); i += 7) a[i] = ties[(i / 7) % 2];
        for (std::size_t i = 3; i < b.size(); i += 7) b[i] = ties[(i / 7) % 2];
        for (float beta : {0.0f, 1.0f, -0.5f}) {
          const float old = 2.0f, alpha = 1.5f;
          std::vector<float> c(static_cast<std::size_t>(m * ldc),
                               beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : old);
          for (std::int64_t i = 0; i < m; ++i) c[static_cast<std::size_t>(i * ldc + n)] = 42.0f;
          product(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
          double worst = 0;
          for (std::int64_t i = 0; i < m; ++i) {
            for (std::int64_t j = 0; j < n; ++j) {
              double sum = 0, magnitude = 0;
              for (std::int64_t q = 0; q < k; ++q) {
                const float x = ta ? a[static_cast<std::size_t>(q * lda + i)] : a[static_cast<std::size_t>(i * lda + q)];
                const float y = tb ? b[static_cast<std::size_t>(j * ldb + q)] : b[static_cast<std::size_t>(q * ldb + j)];
                const double term = double(round(x)) * double(round(y));
                sum += term;
                magnitude += std::abs(term);
              }
              const double want = alpha * sum + (beta == 0.0f ? 0.0 : double(beta) * old);
              const double got = c[static_cast<std::size_t>(i * ldc + j)];
              worst = std::max(worst, std::isnan(got) ? 1.0 : std::abs(got - want) / (alpha * magnitude + 1));
            }
            BOOST_TEST(c[static_cast<std::size_t>(i * ldc + n)] == 42.0f);
          }
          // Float sums of k products: a few float epsilons of the summed magnitudes.
          BOOST_TEST(worst < 1e-6, label << " " << m << "x" << n << "x" << k << " ta=" << ta << " tb=" << tb
                                         << " beta=" << beta << ": relative error " << worst);
        }
      }
}

// Both bf16 paths (the AVX512-BF16 kernel where the CPU has it, and the portable rounding), called
// directly past gemm's size cutoff so that small and ragged shapes reach the kernel too: odd
// depths, several k blocks, row and column blocks, short tiles, and both threads' bands.
BOOST_AUTO_TEST_CASE(bf16_gemm_matches_a_double_product_of_rounded_operands) {
  const bool kernel = backend::bf16_kernel_available();
  BOOST_TEST_MESSAGE("AVX512-BF16 kernel on this CPU: " << kernel);
  for (bool use_kernel : {true, false}) {
    if (use_kernel && !kernel) continue;
    backend::bf16_detail::use_kernel().store(use_kernel);
    check_against_double_product(use_kernel ? "bf16 kernel" : "bf16 portable",
                                 {{13, 40, 131}, {37, 70, 301}, {200, 45, 601}, {9, 2100, 40}, {300, 29, 17}, {5, 3, 2}},
                                 backend::gemm_detail::bf16_gemm, backend::bf16_detail::round_to_bf16);
  }
  backend::bf16_detail::use_kernel().store(kernel);
}

// The fp32 kernel (where the CPU has AVX-512) directly on the same ragged shapes, and gemm itself
// with and without it on shapes large enough to choose it: each against a double product.
BOOST_AUTO_TEST_CASE(fp32_gemm_matches_a_double_product) {
  const bool kernel = backend::fp32_kernel_available();
  BOOST_TEST_MESSAGE("AVX-512 fp32 kernel on this CPU: " << kernel);
  const auto identity = [](float x) { return x; };
#if MOTE_AVX512_KERNELS
  const auto fp32_kernel = [](bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                              const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                              std::int64_t ldc) {
    using backend::packed_gemm::Operand;
    backend::fp32_detail::gemm(m, n, alpha, {Operand::of(a, lda, ta), Operand::of(b, ldb, tb), k}, nullptr, beta, c,
                               ldc);
  };
  if (kernel)
    check_against_double_product(
        "fp32 kernel", {{13, 40, 131}, {37, 70, 301}, {200, 45, 601}, {9, 2100, 40}, {300, 29, 17}, {5, 3, 2}},
        fp32_kernel, identity);
#endif
  const auto through_gemm = [](bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                               const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                               std::int64_t ldc) {
    backend::gemm(cpu{}, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  };
  for (bool use_kernel : {true, false}) {
    if (use_kernel && !kernel) continue;
    backend::fp32_detail::use_kernel().store(use_kernel);
    BOOST_TEST(backend::fp32_kernel_available() == use_kernel);
    check_against_double_product(use_kernel ? "gemm, fp32 kernel" : "gemm, Eigen",
                                 {{64, 64, 16}, {130, 96, 800}, {64, 2100, 40}, {300, 70, 33}, {600, 16, 384},
                                  {9, 1536, 48}, {16, 384, 160}, {37, 96, 64}},
                                 through_gemm, identity);
  }
  // Decoding batches above the matrix-vector kernel's 8 rows reach the kernel; 8 rows do not.
  BOOST_TEST(backend::fp32_detail::worthwhile(9, 1536, 384));
  BOOST_TEST(backend::fp32_detail::worthwhile(16, 384, 1536));
  BOOST_TEST(!backend::fp32_detail::worthwhile(8, 1536, 384));
  BOOST_TEST(!backend::fp32_detail::worthwhile(64, 16, 384));
  backend::fp32_detail::use_kernel().store(kernel);
}

// Inside a WeightPanels scope a product whose B the scope names constant runs on B packed once
// (the whole of op(B), kept for the scope): 12-row tiles, 8-row ones for 13 to 16 rows, several
// k blocks, ragged panels, alone and inside a held team. Each call checked against a double
// product; a B the scope does not name is packed per call as before.
BOOST_AUTO_TEST_CASE(weights_packed_once_match_a_double_product) {
  if (!backend::fp32_kernel_available()) {
    BOOST_TEST_MESSAGE("no AVX-512 on this CPU: products never reach the packed kernel");
    return;
  }
  int packed_once = 0, not_packed = 0;
  const auto named = [&](bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                         std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
    backend::WeightPanels::Scope scope({static_cast<const void*>(b)});
    // A first product packs B; the checked one (into c) reuses the packed copy.
    std::vector<float> first(static_cast<std::size_t>(m * ldc));
    backend::gemm(cpu{}, ta, tb, m, n, k, alpha, a, lda, b, ldb, 0.0f, first.data(), ldc);
    const std::size_t after_first = backend::WeightPanels::active()->size();
    backend::SpinTeam::hold([&] { backend::gemm(cpu{}, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); });
    const std::size_t after_second = backend::WeightPanels::active()->size();
    // A^T B with a narrow side stays on the narrow-side kernel, which reads B in place.
    const bool narrow = backend::skinny_gemm::applies(ta, tb, m, n, k);
    packed_once += !narrow && after_first == 1 && after_second == 1;
    not_packed += narrow && after_first == 0 && after_second == 0;
  };
  const std::vector<std::array<std::int64_t, 3>> shapes{{9, 64, 384},  {12, 100, 130}, {13, 70, 800}, {16, 1152, 384},
                                                        {16, 96, 1536}, {30, 250, 200}, {63, 64, 40},  {100, 64, 900}};
  check_against_double_product("gemm on packed weights", shapes, named, [](float x) { return x; });
  // Each shape runs 4 transposes x 3 betas; A^T B of the shapes with at most 32 rows is narrow.
  BOOST_TEST(packed_once == (4 * 8 - 6) * 3);
  BOOST_TEST(not_packed == 6 * 3);
  BOOST_TEST(backend::WeightPanels::active() == nullptr);
  BOOST_TEST(backend::fp32_detail::eight_row_tiles(16));
  BOOST_TEST(!backend::fp32_detail::eight_row_tiles(12));
  BOOST_TEST(!backend::fp32_detail::eight_row_tiles(24));
  // A B outside the scope's names is not packed for it.
  std::vector<float> a(16 * 384, 0.5f), b(384 * 256, 0.25f), other(4), c(16 * 256);
  backend::WeightPanels::Scope scope({static_cast<const void*>(other.data())});
  backend::gemm(cpu{}, false, false, 16, 256, 384, 1.0f, a.data(), 384, b.data(), 256, 0.0f, c.data(), 256);
  BOOST_TEST(backend::WeightPanels::active()->size() == 0u);
  BOOST_TEST(c == std::vector<float>(16 * 256, 48.0f), boost::test_tools::per_element());
}

// The narrow-side kernels (a LoRA rank against tokens) directly: a narrow output of a row-major
// op(A), and both sides of A^T B, with ragged tiles, two vectors or two groups of sixteen on the
// narrow side, and both threads' shares; the other transposes stay with Eigen.
BOOST_AUTO_TEST_CASE(skinny_gemm_matches_a_double_product) {
  if (!backend::fp32_kernel_available()) {
    BOOST_TEST_MESSAGE("no AVX-512 on this CPU: the narrow-side kernels do not run");
    return;
  }
#if MOTE_AVX512_KERNELS
  int on_kernel = 0;
  const auto skinny = [&](bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                          std::int64_t ldc) {
    if (backend::skinny_gemm::applies(ta, tb, m, n, k)) {
      ++on_kernel;
      backend::skinny_gemm::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
      backend::gemm_detail::eigen_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
  };
  // Three transposes of each narrow-output shape take the kernels, and A^T B of each narrow-rows
  // shape. (m = 101, not 100: with lda 105 all of A's first column would be tie values, whose 384
  // products with a tie column of B share one sign, and the in-order float sum, Eigen's too, drifts
  // past the tolerance.)
  check_against_double_product("skinny kernels",
                               {{101, 16, 384}, {37, 5, 200}, {200, 29, 33}, {20, 32, 600}, {1000, 16, 384},
                                {300, 16, 1000}, {70, 20, 45}, {16, 700, 300}, {29, 100, 17}},
                               skinny, [](float x) { return x; });
  BOOST_TEST(on_kernel == (7 * 3 + 2) * 3);
#endif
}

// gemm_sum(first, second) over the two parts of one product's depth, k = k1 + k2, checked as that
// product: op(A)'s columns [k1, k) and op(B)'s rows [k1, k) form the second term.
static void gemm_sum_as_one_product(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                                    const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta,
                                    float* c, std::int64_t ldc) {
  const std::int64_t k2 = std::min<std::int64_t>(k / 2, 40), k1 = k - k2;
  const backend::GemmTerm<float> first{ta, tb, k1, a, lda, b, ldb};
  const backend::GemmTerm<float> second{ta, tb, k2, ta ? a + k1 * lda : a + k1, lda, tb ? b + k1 : b + k1 * ldb, ldb};
  backend::gemm_sum(cpu{}, m, n, alpha, first, second, beta, c, ldc);
}

// The second term rides inside the first's tiles on the fp32 kernel (deep products too, where it
// joins the last k block) and is a second product on Eigen.
BOOST_AUTO_TEST_CASE(gemm_sum_matches_a_double_product) {
  const bool kernel = backend::fp32_kernel_available();
  const auto identity = [](float x) { return x; };
  for (bool use_kernel : {true, false}) {
    if (use_kernel && !kernel) continue;
    backend::fp32_detail::use_kernel().store(use_kernel);
    BOOST_TEST(backend::gemm_detail::fused_sum_applies(130, 96, 760, 40) == use_kernel);
    check_against_double_product(use_kernel ? "gemm_sum, fp32 kernel" : "gemm_sum, Eigen",
                                 {{64, 64, 24}, {130, 96, 800}, {64, 2100, 71}, {300, 70, 50}, {5, 3, 2}},
                                 gemm_sum_as_one_product, identity);
  }
  backend::fp32_detail::use_kernel().store(kernel);
}

BOOST_AUTO_TEST_CASE(bf16_precision_is_opt_in_scoped_and_leaves_decode_products_in_fp32) {
  using backend::bf16_detail::round_to_bf16;
  Rng rng(37);
  const std::int64_t m = 64, n = 48, k = 96;
  std::vector<float> a(static_cast<std::size_t>(m * k)), b(static_cast<std::size_t>(k * n));
  for (auto& x : a) x = static_cast<float>(rng.uniform(-1, 1));
  for (auto& x : b) x = static_cast<float>(rng.uniform(-1, 1));
  // Element (i, j) of a rows x n product, in double, from full or rounded operands.
  auto reference = [&](std::int64_t i, std::int64_t j, bool rounded) {
    double s = 0;
    for (std::int64_t q = 0; q < k; ++q) {
      const float x = a[static_cast<std::size_t>(i * k + q)], y = b[static_cast<std::size_t>(q * n + j)];
      s += rounded ? double(round_to_bf16(x)) * round_to_bf16(y) : double(x) * y;
    }
    return s;
  };
  // Largest distance of C[rows, n] from either reference.
  auto distance = [&](const std::vector<float>& c, std::int64_t rows, bool rounded) {
    double worst = 0;
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < n; ++j)
        worst = std::max(worst, std::abs(c[static_cast<std::size_t>(i * n + j)] - reference(i, j, rounded)));
    return worst;
  };
  auto product = [&](std::int64_t rows) {
    std::vector<float> c(static_cast<std::size_t>(rows * n));
    backend::gemm(cpu{}, false, false, rows, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
    return c;
  };
  BOOST_TEST((backend::get_matmul_precision() == backend::matmul_precision::fp32));
  const auto fp32 = product(m);
  BOOST_TEST(distance(fp32, m, false) < 1e-5);
  BOOST_TEST(distance(fp32, m, true) > 1e-3);  // rounding the operands moves the result visibly
  {
    const backend::scoped_matmul_precision bf16(backend::matmul_precision::bf16);
    BOOST_TEST((backend::get_matmul_precision() == backend::matmul_precision::bf16));
    const auto mixed = product(m);
    BOOST_TEST(distance(mixed, m, true) < 1e-5);
    BOOST_TEST(distance(mixed, m, false) > 1e-3);
    // A side of at most 32 (here two rows against a weight matrix, as in decode) stays fp32.
    BOOST_TEST(distance(product(2), 2, false) < 1e-5);
  }
  BOOST_TEST((backend::get_matmul_precision() == backend::matmul_precision::fp32));
}

BOOST_AUTO_TEST_SUITE_END()
