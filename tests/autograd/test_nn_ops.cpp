// Neural-network ops (norms, activations, softmax, dropout, rope, attention, cross-entropy)
// through the generic op tester, plus their properties and their errors on bad input.
#include "op_harness.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace mote;
using testing::expect_error;
using testing::OpSpec;

namespace {

using mote::testing::value_of;

// A [B, T, S] mask (or [T, S] when batch == 0) with about `keep` of its entries set, from a seed.
Tensor<std::uint8_t> random_mask(std::int64_t batch, std::int64_t q_len, std::int64_t kv_len, double keep,
                                 std::uint64_t seed) {
  Rng rng(seed);
  const Shape shape = batch == 0 ? Shape{q_len, kv_len} : Shape{batch, q_len, kv_len};
  std::vector<std::uint8_t> m(static_cast<std::size_t>(shape.numel()));
  for (auto& x : m) x = rng.uniform() < keep ? 1 : 0;
  return Tensor<std::uint8_t>::from_vector(shape, m);
}

// Output and input gradients of build(inputs) on seeded normal inputs, in double.
std::vector<std::vector<double>> forward_backward(const std::vector<Shape>& shapes,
                                                  const std::function<Var<double>(std::vector<Var<double>>&)>& build) {
  Rng rng(99);
  std::vector<Var<double>> in;
  for (const auto& s : shapes) in.emplace_back(Tensor<double>::normal(s, 0, 1, rng), true);
  auto out = build(in);
  Rng seed_rng(7);
  out.backward(Tensor<double>::normal(out.shape(), 0, 1, seed_rng));
  std::vector<std::vector<double>> results{out.value().to_vector()};
  for (const auto& v : in) results.push_back(v.grad().to_vector());
  return results;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_nn_ops)

// ---------------------------------------------------------------- norms

BOOST_AUTO_TEST_CASE(layer_norm_normalizes_rows) {
  Rng rng(7);
  Var<double> x(Tensor<double>::normal({3, 8}, 2.0, 3.0, rng));
  Var<double> w(Tensor<double>::full({8}, 1.0)), b(Tensor<double>::zeros({8}));
  const auto y = layer_norm(x, w, b, 0.0).value();
  for (std::int64_t r = 0; r < 3; ++r) {
    double mean = 0, var = 0;
    for (std::int64_t c = 0; c < 8; ++c) mean += y.at({r, c}) / 8;
    for (std::int64_t c = 0; c < 8; ++c) var += (y.at({r, c}) - mean) * (y.at({r, c}) - mean) / 8;
    BOOST_TEST(std::abs(mean) < 1e-12);
    BOOST_TEST(std::abs(var - 1) < 1e-12);
  }
}

// ---------------------------------------------------------------- activations

BOOST_AUTO_TEST_CASE(activation_values) {
  Var<double> x(Tensor<double>::from_vector({4}, {-3.0, -0.5, 0.0, 2.0}));
  const auto g = gelu(x).value().to_vector();
  const auto s = silu(x).value().to_vector();
  const double k = std::sqrt(2.0 / std::acos(-1.0));
  const std::vector<double> xs = {-3.0, -0.5, 0.0, 2.0};
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i];
    BOOST_TEST(std::abs(g[i] - 0.5 * v * (1 + std::tanh(k * (v + 0.044715 * v * v * v)))) < 1e-15);
    BOOST_TEST(std::abs(s[i] - v / (1 + std::exp(-v))) < 1e-15);
  }
  // Far in the tails sigmoid saturates: silu must give 0 and x, never NaN.
  Var<float> big(Tensor<float>::from_vector({2}, {-200.0f, 200.0f}));
  const auto sb = silu(big).value().to_vector();
  BOOST_TEST(sb[0] == 0.0f);
  BOOST_TEST(sb[1] == 200.0f);
}

// ---------------------------------------------------------------- softmax

BOOST_AUTO_TEST_CASE(softmax_is_stable_for_large_logits) {
  Var<float> x(Tensor<float>::from_vector({1, 3}, {1000.0f, 1000.0f, -1000.0f}));
  const auto p = softmax(x).value().to_vector();
  BOOST_TEST(p[0] == 0.5f);
  BOOST_TEST(p[2] == 0.0f);
  const auto lp = log_softmax(x).value().to_vector();
  BOOST_TEST(std::abs(lp[0] - std::log(0.5f)) < 1e-6f);
  BOOST_TEST(std::isfinite(lp[2]));
}

// ---------------------------------------------------------------- dropout

BOOST_AUTO_TEST_CASE(dropout_keeps_about_one_minus_p_and_scales) {
  const double p = 0.25;
  Var<float> x(Tensor<float>::full({200, 500}, 2.0f));
  Rng rng(3);
  const auto y = dropout(x, float(p), rng).value().to_vector();
  std::size_t kept = 0;
  for (float v : y) {
    BOOST_REQUIRE(v == 0.0f || std::abs(v - 2.0f / 0.75f) < 1e-6f);
    kept += v != 0.0f;
  }
  const double fraction = static_cast<double>(kept) / static_cast<double>(y.size());
  BOOST_TEST(std::abs(fraction - (1 - p)) < 0.02, "kept fraction " << fraction);

  // One seed, one mask; the generator moves on, so the next call draws a different one.
  Rng again(3);
  BOOST_TEST(dropout(x, float(p), again).value().to_vector() == y);
  BOOST_TEST(dropout(x, float(p), again).value().to_vector() != y);
}

BOOST_AUTO_TEST_CASE(dropout_is_identity_in_eval_and_at_zero) {
  Var<double> x(Tensor<double>::full({3}, 1.5), true);
  Rng rng(1);
  BOOST_TEST(dropout(x, 0.5, rng, false).node() == x.node());
  BOOST_TEST(dropout(x, 0.0, rng).node() == x.node());
}

// ---------------------------------------------------------------- rope

BOOST_AUTO_TEST_CASE(rope_properties) {
  Rng rng(5);
  Var<double> x(Tensor<double>::normal({1, 2, 3, 4}, 0.0, 1.0, rng));
  // Position 0 turns nothing.
  const auto zero = Tensor<std::int32_t>::zeros({3});
  BOOST_TEST(testing::relative_error(rope(x, zero).value().to_vector(), x.value().to_vector()) < 1e-15);
  // A [T] row equals the same row repeated per batch; a rotation keeps each pair's length.
  const auto shared = Tensor<std::int32_t>::from_vector({3}, {4, 9, 2});
  const auto batched = Tensor<std::int32_t>::from_vector({1, 3}, {4, 9, 2});
  const auto a = rope(x, shared).value(), b = rope(x, batched).value();
  BOOST_TEST(a.to_vector() == b.to_vector());
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t t = 0; t < 3; ++t)
      for (std::int64_t i = 0; i < 2; ++i) {
        const double before = std::hypot(x.value().at({0, h, t, i}), x.value().at({0, h, t, i + 2}));
        const double after = std::hypot(a.at({0, h, t, i}), a.at({0, h, t, i + 2}));
        BOOST_TEST(std::abs(before - after) < 1e-14);
      }
}

// ---------------------------------------------------------------- attention

BOOST_AUTO_TEST_CASE(attention_fully_masked_row_is_zero_with_zero_gradient) {
  Rng rng(9);
  Var<double> q(Tensor<double>::normal({1, 2, 3, 4}, 0, 1, rng), true);
  Var<double> k(Tensor<double>::normal({1, 1, 3, 4}, 0, 1, rng), true);
  Var<double> v(Tensor<double>::normal({1, 1, 3, 4}, 0, 1, rng), true);
  auto mask = Tensor<std::uint8_t>::full({1, 3, 3}, 1);
  for (std::int64_t s = 0; s < 3; ++s) mask.at({0, 1, s}) = 0;
  auto out = scaled_dot_product_attention(q, k, v, {.mask = &mask});
  out.backward(Tensor<double>::full(out.shape(), 1.0));
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t d = 0; d < 4; ++d) {
      BOOST_TEST(out.value().at({0, h, 1, d}) == 0.0);
      BOOST_TEST(q.grad().at({0, h, 1, d}) == 0.0);
      BOOST_TEST(std::isfinite(k.grad().at({0, 0, 1, d})));
    }
}

BOOST_AUTO_TEST_CASE(attention_grouped_heads_equal_repeated_heads) {
  Rng rng(21);
  const auto q = Tensor<double>::normal({1, 4, 3, 2}, 0, 1, rng);
  const auto k = Tensor<double>::normal({1, 2, 3, 2}, 0, 1, rng);
  const auto v = Tensor<double>::normal({1, 2, 3, 2}, 0, 1, rng);
  // Query heads 0,1 read kv head 0; heads 2,3 read kv head 1.
  auto repeat = [](const Tensor<double>& t) {
    Tensor<double> r({1, 4, 3, 2});
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t s = 0; s < 3; ++s)
        for (std::int64_t d = 0; d < 2; ++d) r.at({0, h, s, d}) = t.at({0, h / 2, s, d});
    return r;
  };
  const auto grouped = scaled_dot_product_attention(Var<double>(q), Var<double>(k), Var<double>(v)).value();
  const auto repeated =
      scaled_dot_product_attention(Var<double>(q), Var<double>(repeat(k)), Var<double>(repeat(v))).value();
  BOOST_TEST(testing::relative_error(grouped.to_vector(), repeated.to_vector()) < 1e-15);
}

// A KV cache's keys and values are views of [B, Hkv, capacity, Dh] buffers: the kernel reads them
// in place (kv heads capacity rows apart) and must give what packed copies give, bit for bit; with
// q taking a gradient, that gradient must equal the packed path's too.
BOOST_AUTO_TEST_CASE(attention_reads_cache_views_in_place) {
  Rng rng(31);
  const std::int64_t capacity = 9, used = 6;
  const auto q = Tensor<double>::normal({2, 4, 2, 3}, 0, 1, rng);
  const auto k_rows = Tensor<double>::normal({2, 2, capacity, 3}, 0, 1, rng);
  const auto v_rows = Tensor<double>::normal({2, 2, capacity, 3}, 0, 1, rng);
  const auto k = k_rows.slice(2, 0, used), v = v_rows.slice(2, 0, used);
  BOOST_REQUIRE(!k.is_contiguous());
  auto mask = random_mask(2, 2, used, 0.7, 13);
  const AttentionOptions<cpu> options{.causal = true, .mask = &mask};
  const auto packed =
      scaled_dot_product_attention(Var<double>(q), Var<double>(k.contiguous()), Var<double>(v.contiguous()), options);
  {
    no_grad off;
    const auto viewed = scaled_dot_product_attention(Var<double>(q), k, v, options);
    BOOST_TEST(viewed.value().to_vector() == packed.value().to_vector(), boost::test_tools::per_element());
  }
  const Var<double> q_packed(q, true), q_viewed(q, true);
  const auto seed = Tensor<double>::normal(q.shape(), 0, 1, rng);
  scaled_dot_product_attention(q_packed, Var<double>(k.contiguous()), Var<double>(v.contiguous()), options).backward(seed);
  auto out = scaled_dot_product_attention(q_viewed, k, v, options);
  BOOST_TEST(out.requires_grad());
  out.backward(seed);
  BOOST_TEST(out.value().to_vector() == packed.value().to_vector(), boost::test_tools::per_element());
  BOOST_TEST(q_viewed.grad().to_vector() == q_packed.grad().to_vector(), boost::test_tools::per_element());
  double largest = 0;
  for (const double g : q_viewed.grad().to_vector()) largest = std::max(largest, std::abs(g));
  BOOST_TEST(largest > 1e-3);  // the gradient did reach q
  expect_error<value_error>([&] { (void)scaled_dot_product_attention(Var<double>(q), Tensor<double>(), v); },
                            {"scaled_dot_product_attention", "key and value"});
}

// A decoding step's single query per head takes its own path (one_query, AVX-512 for float heads of
// 64 or 128 lanes): against scores, softmax and weighted sums in double, with padded and fully
// masked sequences, grouped heads and cache-strided keys, on both the AVX-512 and the portable form.
// The same over a bf16 cache (attention_decode_bf16): its keys and values are the draws rounded to
// bf16, and the reference reads those rounded values.
BOOST_AUTO_TEST_CASE(one_query_attention_matches_a_double_reference) {
  const std::int64_t batch = 3, heads = 4, kv_heads = 2, kv_len = 37, capacity = 45;
  const bool kernel = backend::fp32_kernel_available();
  for (const std::int64_t dim : {64, 128, 24})
    for (const bool use_kernel : {true, false})
      for (const bool bf16 : {false, true}) {
        if (use_kernel && !kernel) continue;
        backend::fp32_detail::use_kernel().store(use_kernel);
        Rng rng(static_cast<std::uint64_t>(dim));
        auto draw = [&](std::int64_t n) {
          std::vector<float> v(static_cast<std::size_t>(n));
          for (auto& x : v) x = static_cast<float>(rng.uniform(-1, 1));
          return v;
        };
        const auto q = draw(batch * heads * dim);
        auto k = draw(batch * kv_heads * capacity * dim), v = draw(batch * kv_heads * capacity * dim);
        std::vector<std::uint16_t> k16(k.size()), v16(v.size());
        if (bf16)
          for (std::size_t i = 0; i < k.size(); ++i) {
            k16[i] = backend::bf16_detail::to_bf16(k[i]);
            v16[i] = backend::bf16_detail::to_bf16(v[i]);
            k[i] = backend::bf16_detail::from_bf16(k16[i]);
            v[i] = backend::bf16_detail::from_bf16(v16[i]);
          }
        // Sequence 0 sees every key, sequence 1 is left-padded by 5, sequence 2 sees none.
        std::vector<std::uint8_t> mask(static_cast<std::size_t>(batch * kv_len), 1);
        for (std::int64_t s = 0; s < kv_len; ++s) {
          if (s < 5) mask[static_cast<std::size_t>(kv_len + s)] = 0;
          mask[static_cast<std::size_t>(2 * kv_len + s)] = 0;
        }
        std::vector<float> out(q.size(), 99.0f), probs(static_cast<std::size_t>(batch * heads * kv_len), 99.0f);
        const double scale = 1.0 / std::sqrt(double(dim));
        if (bf16)
          backend::attention_decode_bf16(cpu{}, q.data(), k16.data(), v16.data(), mask.data(), kv_len, batch, heads, kv_heads,
                                         kv_len, dim, capacity * dim, static_cast<float>(scale), out.data(), probs.data());
        else
          backend::attention_forward(cpu{}, q.data(), k.data(), v.data(), mask.data(), kv_len, batch, heads, kv_heads,
                                     std::int64_t{1}, kv_len, dim, capacity * dim, true, static_cast<float>(scale),
                                     out.data(), probs.data());
        double worst_out = 0, worst_prob = 0;
        for (std::int64_t b = 0; b < batch; ++b)
          for (std::int64_t h = 0; h < heads; ++h) {
            const std::int64_t kv_head = b * kv_heads + h / (heads / kv_heads);
            const float* query = q.data() + (b * heads + h) * dim;
            std::vector<double> p(static_cast<std::size_t>(kv_len), 0.0);
            double top = -1e300, total = 0;
            for (std::int64_t s = 0; s < kv_len; ++s) {
              if (!mask[static_cast<std::size_t>(b * kv_len + s)]) continue;
              double dot = 0;
              for (std::int64_t d = 0; d < dim; ++d) dot += double(query[d]) * k[static_cast<std::size_t>((kv_head * capacity + s) * dim + d)];
              top = std::max(top, p[static_cast<std::size_t>(s)] = scale * dot);
            }
            for (std::int64_t s = 0; s < kv_len; ++s)
              if (mask[static_cast<std::size_t>(b * kv_len + s)]) total += p[static_cast<std::size_t>(s)] = std::exp(p[static_cast<std::size_t>(s)] - top);
            for (std::int64_t s = 0; s < kv_len; ++s) {
              const double want = total > 0 ? p[static_cast<std::size_t>(s)] / total : 0.0;
              p[static_cast<std::size_t>(s)] = want;
              worst_prob = std::max(worst_prob, std::abs(probs[static_cast<std::size_t>((b * heads + h) * kv_len + s)] - want));
            }
            for (std::int64_t d = 0; d < dim; ++d) {
              double want = 0;
              for (std::int64_t s = 0; s < kv_len; ++s) want += p[static_cast<std::size_t>(s)] * v[static_cast<std::size_t>((kv_head * capacity + s) * dim + d)];
              const float got = out[static_cast<std::size_t>((b * heads + h) * dim + d)];
              if (b == 2) BOOST_TEST(got == 0.0f);  // no key to see: exactly zero
              worst_out = std::max(worst_out, std::abs(got - want));
            }
          }
        const char* form = bf16 ? (use_kernel ? " AVX-512 bf16" : " portable bf16") : (use_kernel ? " AVX-512" : " portable");
        BOOST_TEST(worst_prob < 1e-6, "head_dim " << dim << form << ": probs off by " << worst_prob);
        BOOST_TEST(worst_out < 1e-5, "head_dim " << dim << form << ": output off by " << worst_out);
      }
  backend::fp32_detail::use_kernel().store(kernel);
}

// ---------------------------------------------------------------- cross-entropy

// Under matmul_precision::bf16 the four backward products and the two forward ones of a head
// run through the bf16 kernel: close to fp32 (bf16 keeps 8 significant bits), not equal to it.
BOOST_AUTO_TEST_CASE(attention_under_bf16_precision_stays_close_to_fp32) {
  const std::int64_t batch = 2, heads = 4, kv_heads = 2, len = 48, dim = 40;
  Rng rng(41);
  auto draw = [&](std::int64_t n) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = static_cast<float>(rng.uniform(-1, 1));
    return v;
  };
  const auto q = draw(batch * heads * len * dim), k = draw(batch * kv_heads * len * dim),
             v = draw(batch * kv_heads * len * dim), dout = draw(batch * heads * len * dim);
  struct Result {
    std::vector<float> out, dq, dk, dv;
  };
  auto run = [&] {
    Result r{std::vector<float>(q.size()), std::vector<float>(q.size()), std::vector<float>(k.size()),
             std::vector<float>(v.size())};
    std::vector<float> probs(static_cast<std::size_t>(batch * heads * len * len));
    const float scale = 1.0f / std::sqrt(float(dim));
    backend::attention_forward(cpu{}, q.data(), k.data(), v.data(), nullptr, 0, batch, heads, kv_heads, len, len, dim,
                               len * dim, true, scale, r.out.data(), probs.data());
    backend::attention_backward(cpu{}, q.data(), k.data(), v.data(), probs.data(), dout.data(), batch, heads, kv_heads,
                                len, len, dim, scale, r.dq.data(), r.dk.data(), r.dv.data());
    return r;
  };
  auto relative = [](const std::vector<float>& got, const std::vector<float>& want) {
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
      norm += double(want[i]) * want[i];
    }
    return std::sqrt(diff / norm);
  };
  const Result fp32 = run();
  Result mixed;
  {
    const scoped_matmul_precision bf16(matmul_precision::bf16);
    mixed = run();
  }
  for (const auto& [name, got, want] : {std::tuple{"out", &mixed.out, &fp32.out}, std::tuple{"dq", &mixed.dq, &fp32.dq},
                                        std::tuple{"dk", &mixed.dk, &fp32.dk}, std::tuple{"dv", &mixed.dv, &fp32.dv}}) {
    const double error = relative(*got, *want);
    BOOST_TEST(error < 2e-2, name << ": relative error " << error);
    BOOST_TEST(error > 1e-5, name << ": bf16 products left no trace (" << error << ")");
  }
}

BOOST_AUTO_TEST_CASE(cross_entropy_value) {
  // Two tokens with uniform logits over 4 classes: each costs log 4; weights 1 and 3.
  Var<double> logits(Tensor<double>::zeros({2, 4}), true);
  const auto targets = Tensor<std::int32_t>::from_vector({2}, {1, 2});
  const auto mask = Tensor<double>::from_vector({2}, {1.0, 3.0});
  auto loss = cross_entropy(logits, targets, {.loss_mask = &mask});
  BOOST_TEST(loss.shape().rank() == 0);
  BOOST_TEST(std::abs(loss.item() - std::log(4.0)) < 1e-15);
  loss.backward();
  // Row 0: (0.25 - onehot) * 1/4; row 1: (0.25 - onehot) * 3/4.
  BOOST_TEST(std::abs(logits.grad().at({0, 1}) - (0.25 - 1) / 4) < 1e-15);
  BOOST_TEST(std::abs(logits.grad().at({1, 0}) - 0.25 * 3 / 4) < 1e-15);
}

BOOST_AUTO_TEST_CASE(cross_entropy_is_stable_for_large_logits) {
  Var<float> logits(Tensor<float>::from_vector({1, 3}, {1000.0f, 1000.0f, -1000.0f}), true);
  auto loss = cross_entropy(logits, Tensor<std::int32_t>::from_vector({1}, {0}));
  BOOST_TEST(std::abs(loss.item() - std::log(2.0f)) < 1e-6f);
  loss.backward();
  const auto g = logits.grad().to_vector();
  BOOST_TEST(std::abs(g[0] + 0.5f) < 1e-6f);
  BOOST_TEST(std::abs(g[1] - 0.5f) < 1e-6f);
  BOOST_TEST(g[2] == 0.0f);
}

BOOST_AUTO_TEST_CASE(cross_entropy_with_nothing_counted_is_zero) {
  Var<float> logits(Tensor<float>::full({2, 3}, 0.5f), true);
  const auto targets = Tensor<std::int32_t>::from_vector({2}, {-100, -100});
  auto loss = cross_entropy(logits, targets);
  BOOST_TEST(loss.item() == 0.0f);
  loss.backward();
  for (float g : logits.grad().to_vector()) BOOST_TEST(g == 0.0f);

  const auto zero_weights = Tensor<float>::zeros({2});
  const auto real_targets = Tensor<std::int32_t>::from_vector({2}, {0, 1});
  BOOST_TEST(cross_entropy(logits, real_targets, {.loss_mask = &zero_weights}).item() == 0.0f);
}

// ---------------------------------------------------------------- threads

BOOST_AUTO_TEST_CASE(threaded_kernels_match_one_thread) {
#ifdef _OPENMP
  // Sizes above the kernels' parallel thresholds, so the OpenMP paths (and their reductions) run.
  const auto targets = [] {
    std::vector<std::int32_t> t(64);
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = i % 9 == 0 ? -100 : static_cast<std::int32_t>((i * 37) % 600);
    return Tensor<std::int32_t>::from_vector({64}, t);
  }();
  const auto positions = [] {
    std::vector<std::int32_t> p(64);
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::int32_t>(3 * i + 1);
    return Tensor<std::int32_t>::from_vector({64}, p);
  }();
  auto mask = random_mask(2, 32, 32, 0.7, 5);
  const std::vector<std::pair<std::string, std::pair<std::vector<Shape>, std::function<Var<double>(std::vector<Var<double>>&)>>>>
      cases = {
          {"layer_norm", {{{64, 600}, {600}, {600}}, [](auto& v) { return layer_norm(v[0], v[1], v[2]); }}},
          {"rms_norm", {{{64, 600}, {600}}, [](auto& v) { return rms_norm(v[0], v[1]); }}},
          {"softmax", {{{64, 600}}, [](auto& v) { return softmax(v[0]); }}},
          {"log_softmax", {{{64, 600}}, [](auto& v) { return log_softmax(v[0]); }}},
          {"gelu", {{{40000}}, [](auto& v) { return gelu(v[0]); }}},
          {"swiglu", {{{40000}, {40000}}, [](auto& v) { return swiglu(v[0], v[1]); }}},
          {"rope", {{{2, 4, 64, 80}}, [&](auto& v) { return rope(v[0], positions); }}},
          {"attention", {{{2, 4, 32, 8}, {2, 2, 32, 8}, {2, 2, 32, 8}},
                         [&](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2], {.mask = &mask}); }}},
          {"cross_entropy", {{{64, 600}}, [&](auto& v) { return cross_entropy(v[0], targets); }}},
      };
  const int saved = omp_get_max_threads();
  for (const auto& [name, c] : cases) {
    omp_set_num_threads(1);
    const auto one = forward_backward(c.first, c.second);
    omp_set_num_threads(2);
    const auto two = forward_backward(c.first, c.second);
    for (std::size_t i = 0; i < one.size(); ++i)
      BOOST_TEST(testing::relative_error(two[i], one[i]) < 1e-13, name << ": result " << i << " differs across threads");
  }
  omp_set_num_threads(saved);
#else
  BOOST_TEST_MESSAGE("built without OpenMP: nothing to compare");
#endif
}

// ---------------------------------------------------------------- bad input

BOOST_AUTO_TEST_CASE(norm_errors) {
  Var<float> x(Tensor<float>::zeros({2, 5})), w4(Tensor<float>::zeros({4})), w5(Tensor<float>::zeros({5}));
  expect_error<shape_error>([&] { (void)layer_norm(x, w4, w5); }, {"layer_norm", "weight", "[5]", "[4]", "[2, 5]"});
  expect_error<shape_error>([&] { (void)layer_norm(x, w5, w4); }, {"layer_norm", "bias", "[5]", "[4]"});
  expect_error<value_error>([&] { (void)layer_norm(x, w5, w5, -1.0f); }, {"layer_norm", "eps"});
  expect_error<shape_error>([&] { (void)rms_norm(x, w4); }, {"rms_norm", "weight", "[5]", "[4]"});
  Var<float> scalar(Tensor<float>::zeros(Shape{}));
  expect_error<shape_error>([&] { (void)rms_norm(scalar, w5); }, {"rms_norm", "x", "last dimension"});
  expect_error<autograd_error>([&] { (void)rms_norm(Var<float>(), w5); }, {"rms_norm", "'x'"});
}

BOOST_AUTO_TEST_CASE(activation_softmax_dropout_errors) {
  Var<float> a(Tensor<float>::zeros({2, 3})), b(Tensor<float>::zeros({3, 2}));
  expect_error<shape_error>([&] { (void)swiglu(a, b); }, {"swiglu", "gate", "up", "[2, 3]", "[3, 2]"});
  Var<float> scalar(Tensor<float>::zeros(Shape{}));
  expect_error<shape_error>([&] { (void)softmax(scalar); }, {"softmax", "x"});
  expect_error<shape_error>([&] { (void)log_softmax(scalar); }, {"log_softmax", "x"});
  Rng rng(1);
  for (float p : {1.0f, -0.1f, 2.0f, std::nanf("")})
    expect_error<value_error>([&] { (void)dropout(a, p, rng); }, {"dropout", "p must be in [0, 1)"});
  // A bad p is an error even where dropout would be the identity.
  expect_error<value_error>([&] { (void)dropout(a, 1.0f, rng, false); }, {"dropout", "p"});
}

BOOST_AUTO_TEST_CASE(rope_errors) {
  Var<float> odd(Tensor<float>::zeros({1, 2, 3, 5}));
  const auto positions = Tensor<std::int32_t>::zeros({3});
  expect_error<value_error>([&] { (void)rope(odd, positions); }, {"rope", "even", "[1, 2, 3, 5]"});
  Var<float> x(Tensor<float>::zeros({2, 2, 3, 4}));
  expect_error<shape_error>([&] { (void)rope(x, Tensor<std::int32_t>::zeros({2, 4})); },
                            {"rope", "positions", "[2, 3]", "[3]", "[2, 4]"});
  Var<float> rank3(Tensor<float>::zeros({2, 3, 4}));
  expect_error<shape_error>([&] { (void)rope(rank3, positions); }, {"rope", "[B, H, T, Dh]", "[2, 3, 4]"});
  expect_error<value_error>([&] { (void)rope(x, positions, -1.0); }, {"rope", "theta"});
}

BOOST_AUTO_TEST_CASE(attention_errors) {
  auto var = [](const Shape& s) { return Var<float>(Tensor<float>::zeros(s)); };
  const auto q = var({1, 4, 3, 4}), k = var({1, 3, 3, 4}), good_k = var({1, 2, 3, 4});
  expect_error<shape_error>([&] { (void)scaled_dot_product_attention(q, k, k); },
                            {"scaled_dot_product_attention", "multiple", "[1, 4, 3, 4]", "[1, 3, 3, 4]"});
  expect_error<shape_error>([&] { (void)scaled_dot_product_attention(q, good_k, var({1, 2, 4, 4})); },
                            {"v", "[1, 2, 3, 4]", "[1, 2, 4, 4]"});
  expect_error<shape_error>([&] { (void)scaled_dot_product_attention(q, var({1, 2, 3, 8}), var({1, 2, 3, 8})); },
                            {"head dim", "[1, 2, 3, 8]"});
  const auto short_k = var({1, 2, 2, 4});
  expect_error<shape_error>([&] { (void)scaled_dot_product_attention(q, short_k, short_k); }, {"causal", "T <= S"});
  BOOST_CHECK_NO_THROW((void)scaled_dot_product_attention(q, short_k, short_k, {.causal = false}));
  const auto bad_mask = Tensor<std::uint8_t>::zeros({1, 3, 4});
  expect_error<shape_error>([&] { (void)scaled_dot_product_attention(q, good_k, good_k, {.mask = &bad_mask}); },
                            {"mask", "[1, 3, 3]", "[3, 3]", "[1, 3, 4]"});
  expect_error<value_error>([&] { (void)scaled_dot_product_attention(q, good_k, good_k, {.scale = -1.0}); }, {"scale"});
  expect_error<shape_error>([&] { (void)scaled_dot_product_attention(var({4, 3, 4}), good_k, good_k); }, {"q", "[4, 3, 4]"});
}

BOOST_AUTO_TEST_CASE(cross_entropy_errors) {
  Var<float> logits(Tensor<float>::zeros({2, 3, 5}));
  const auto out_of_range = Tensor<std::int32_t>::from_vector({2, 3}, {0, 1, 2, 3, 4, 5});
  expect_error<value_error>([&] { (void)cross_entropy(logits, out_of_range); },
                            {"cross_entropy", "target 5", "[1, 2]", "V = 5", "-100"});
  const auto negative = Tensor<std::int32_t>::from_vector({2, 3}, {0, -1, 2, 3, 4, 0});
  expect_error<value_error>([&] { (void)cross_entropy(logits, negative); }, {"target -1", "[0, 1]"});
  expect_error<shape_error>([&] { (void)cross_entropy(logits, Tensor<std::int32_t>::zeros({6})); },
                            {"cross_entropy", "targets", "[2, 3]", "[6]"});
  const auto targets = Tensor<std::int32_t>::zeros({2, 3});
  const auto wrong_mask = Tensor<float>::zeros({3, 2});
  expect_error<shape_error>([&] { (void)cross_entropy(logits, targets, {.loss_mask = &wrong_mask}); },
                            {"loss_mask", "[2, 3]", "[3, 2]"});
  const auto negative_mask = Tensor<float>::full({2, 3}, -1.0f);
  expect_error<value_error>([&] { (void)cross_entropy(logits, targets, {.loss_mask = &negative_mask}); },
                            {"loss_mask", ">= 0"});
  Var<float> flat(Tensor<float>::zeros({5}));
  expect_error<shape_error>([&] { (void)cross_entropy(flat, Tensor<std::int32_t>::zeros(Shape{})); },
                            {"cross_entropy", "logits", "[5]"});
}

BOOST_AUTO_TEST_SUITE_END()
