// The lora room: the grouped expert_lora op, step / top-k / single routers and their ablations,
// PEFT adapter files against fixtures written by tests/reference/make_lora_fixtures.py (PyTorch,
// PEFT's formula), merge and unmerge, trainable-parameter accounting, bad input, and training.
#include "op_harness.hpp"
#include "test_files.hpp"

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mote/io/json.hpp"
#include "mote/io/safetensors.hpp"
#include "mote/lora/lora.hpp"
#include "mote/nn/nn.hpp"
#include "mote/optim/adamw.hpp"

using namespace mote;
using mote::testing::expect_error;
using mote::testing::relative_error;
using mote::testing::TempDir;
using mote::testing::value_of;
namespace fs = std::filesystem;

namespace {

template <class T>
using Gpt2 = nn::CausalLM<presets::tiny_gpt2, T>;
template <class T>
using Llama = nn::CausalLM<presets::tiny_llama, T>;

std::vector<double> as_double(const auto& tensor) {
  std::vector<double> out;
  for (auto v : tensor.to_vector()) out.push_back(static_cast<double>(v));
  return out;
}

// Gives every B non-zero values so the experts change the output (B starts at zero, as in PEFT).
template <class Set>
void randomize_experts(Set& set, std::uint64_t seed, double stddev = 0.2) {
  Rng rng(seed);
  for (auto& [name, p] : set.named_parameters())
    p.mutable_value().copy_from(Tensor<typename Set::T>::normal(p.shape(), 0.0, stddev, rng));
}

Tensor<std::int32_t> ids_2x6() { return Tensor<std::int32_t>::from_vector({2, 6}, {3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3}); }
Tensor<std::int32_t> filled(std::int32_t v) { return Tensor<std::int32_t>::full({2, 6}, v); }

// The plan of the op tests: 6 tokens, 3 experts, runs and scattered tokens, one token with two experts.
std::shared_ptr<const ExpertPlan> small_plan() {
  return std::make_shared<const ExpertPlan>(ExpertPlan::group(6, 3, {0, 0, 1, 2, 3, 3, 4, 5}, {0, 2, 1, 0, 1, 2, 2, 0},
                                                              {0.5, 0.5, 1.0, 0.7, 0.3, 0.2, 1.0, 1.0}));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_lora)

// ---------------------------------------------------------------- the grouped op

BOOST_AUTO_TEST_CASE(expert_plan_groups_by_expert) {
  const auto plan = small_plan();
  BOOST_TEST(plan->assignments() == 8);
  BOOST_TEST(plan->offsets == (std::vector<std::int64_t>{0, 3, 5, 8}));
  BOOST_TEST(plan->token == (std::vector<std::int32_t>{0, 2, 5, 1, 3, 0, 3, 4}));
  BOOST_TEST(plan->source == (std::vector<std::int32_t>{0, 3, 7, 2, 4, 1, 5, 6}));
  BOOST_TEST(!plan->contiguous(0));
  BOOST_TEST(!plan->contiguous(1));
  BOOST_TEST(!plan->contiguous(2));
  const auto run = ExpertPlan::group(4, 2, {0, 1, 2, 3}, {1, 1, 0, 0}, {1, 1, 1, 1});
  BOOST_TEST(run.contiguous(0));
  BOOST_TEST(run.contiguous(1));
  expect_error<value_error>([] { ExpertPlan::group(2, 2, {0, 1}, {0, 2}, {1, 1}); }, {"expert 2", "0 <= expert < 2"});
  expect_error<value_error>([] { ExpertPlan::group(2, 2, {0, 5}, {0, 1}, {1, 1}); }, {"token 5"});
  // A token served twice by one expert (but not once by each of two) makes the plan's scatters collide.
  BOOST_TEST(plan->distinct_tokens);
  BOOST_TEST(!ExpertPlan::group(3, 2, {0, 1, 1}, {1, 0, 0}, {1, 1, 1}).distinct_tokens);
}

// A repeated (token, expert) assignment adds up like one assignment of the summed weight, through
// the general scatter-add; the distinct kernel agrees with the general one when nothing repeats.
BOOST_AUTO_TEST_CASE(expert_lora_repeated_assignments_and_the_distinct_scatter) {
  Rng rng(21);
  const auto draw = [&](const Shape& s) { return Var<double>(Tensor<double>::normal(s, 0, 1, rng), true); };
  const Var<double> base = draw({4, 3}), x = draw({4, 5}), a = draw({2, 5}), b = draw({3, 2});
  auto repeated = std::make_shared<const ExpertPlan>(ExpertPlan::group(4, 1, {0, 2, 2, 3}, {0, 0, 0, 0}, {1, 0.25, 0.5, 1}));
  auto merged = std::make_shared<const ExpertPlan>(ExpertPlan::group(4, 1, {0, 2, 3}, {0, 0, 0}, {1, 0.75, 1}));
  BOOST_TEST(!repeated->distinct_tokens);
  const auto y_repeated = autograd::expert_lora(base, x, {a}, {b}, repeated, 1.5).value().to_vector();
  const auto y_merged = autograd::expert_lora(base, x, {a}, {b}, merged, 1.5).value().to_vector();
  BOOST_REQUIRE(y_repeated.size() == y_merged.size());
  for (std::size_t i = 0; i < y_merged.size(); ++i) BOOST_TEST(std::abs(y_repeated[i] - y_merged[i]) <= 1e-12);

  const std::vector<std::int32_t> index{4, 0, 2};
  std::vector<double> src(2 * 3 * 7), general(2 * 5 * 7, 1.0), distinct(general);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = 0.5 * static_cast<double>(i) - 3.0;
  backend::index_scatter_add(cpu{}, src.data(), 2, 3, 7, index.data(), 5, general.data());
  backend::index_scatter_add_distinct(cpu{}, src.data(), 2, 3, 7, index.data(), 5, distinct.data());
  BOOST_TEST(distinct == general, boost::test_tools::per_element());
}

// MoTE's layout: two sequences of 40 tokens, two step experts each serving one long stretch of
// both sequences (used in place, run by run), and a shared expert serving every token.
std::shared_ptr<const ExpertPlan> step_plan_of_long_runs() {
  std::vector<std::int32_t> token, expert;
  std::vector<double> weight;
  for (std::int32_t t = 0; t < 80; ++t) {
    token.push_back(t);
    expert.push_back((t % 40) < (t < 40 ? 18 : 20) ? 0 : 1);
    weight.push_back(0.5);
    token.push_back(t);
    expert.push_back(2);
    weight.push_back(0.5);
  }
  return std::make_shared<const ExpertPlan>(ExpertPlan::group(80, 3, token, expert, weight));
}

// Experts whose assignments share one coefficient are scaled by a scalar, with no per-row array.
BOOST_AUTO_TEST_CASE(expert_coefficients_are_scalars_when_uniform) {
  using Coefficients = autograd::expert_detail::Coefficients<double, cpu>;
  const Coefficients mix(*step_plan_of_long_runs(), 2.0, {});
  BOOST_TEST(!mix.per_assignment.defined());
  for (const auto& c : mix.uniform) BOOST_TEST((c && *c == 1.0));  // 2 * 0.5

  const auto plan = small_plan();
  const Coefficients varied(*plan, 2.0, {});
  BOOST_REQUIRE(varied.per_assignment.defined());
  BOOST_TEST(!varied.uniform[0].has_value());
  // Grouped order: expert 0 serves tokens 0, 2, 5 at weights 0.5, 0.7, 1.0.
  const std::vector<double> expected_first{1.0, 1.4, 2.0};
  const std::vector<double> all = varied.per_assignment.to_vector();
  BOOST_TEST(std::vector<double>(all.begin(), all.begin() + 3) == expected_first, boost::test_tools::per_element());
  std::vector<double> rows{1, 2, 3, 4, 5, 6}, scaled(6);
  varied.apply(*plan, 0, rows.data(), 2, scaled.data());
  BOOST_TEST(scaled == (std::vector<double>{1.0 * 1, 1.0 * 2, 1.4 * 3, 1.4 * 4, 2.0 * 5, 2.0 * 6}), boost::test_tools::per_element());

  // A gate multiplies in per assignment, found through the caller-order `source` of each.
  std::vector<double> gate(static_cast<std::size_t>(plan->assignments()), 1.0);
  gate[2] = 3.0;  // caller's assignment 2: token 1, expert 1
  const Coefficients gated(*step_plan_of_long_runs(), 1.0, std::vector<double>(160, 1.0));
  BOOST_TEST(!gated.per_assignment.defined());
  const Coefficients uneven(*plan, 1.0, gate);
  BOOST_TEST(uneven.per_assignment.to_vector()[static_cast<std::size_t>(plan->begin(1))] == 3.0);
}

BOOST_AUTO_TEST_CASE(expert_lora_uses_long_runs_in_place) {
  using autograd::expert_detail::in_place_runs;
  using autograd::expert_detail::Run;
  const auto plan = step_plan_of_long_runs();
  auto as_tuples = [](const std::vector<Run>& runs) {
    std::vector<std::array<std::int64_t, 3>> out;
    for (const Run& r : runs) out.push_back({r.token, r.offset, r.length});
    return out;
  };
  const std::int64_t host_min = autograd::expert_detail::min_mean_run<cpu>;
  BOOST_TEST((as_tuples(in_place_runs(*plan, 0, host_min)) == std::vector<std::array<std::int64_t, 3>>{{0, 0, 18}, {40, 18, 20}}));
  BOOST_TEST((as_tuples(in_place_runs(*plan, 1, host_min)) == std::vector<std::array<std::int64_t, 3>>{{18, 0, 22}, {60, 22, 20}}));
  BOOST_TEST((as_tuples(in_place_runs(*plan, 2, host_min)) == std::vector<std::array<std::int64_t, 3>>{{0, 0, 80}}));
  BOOST_TEST(in_place_runs(*small_plan(), 0, host_min).empty());  // tokens 0, 2, 5: gathered
  // A device backend's policy: only an expert that serves one run keeps its rows in place.
  const std::int64_t device_min = std::numeric_limits<std::int64_t>::max();
  BOOST_TEST(in_place_runs(*plan, 0, device_min).empty());
  BOOST_TEST((as_tuples(in_place_runs(*plan, 2, device_min)) == std::vector<std::array<std::int64_t, 3>>{{0, 0, 80}}));

  const std::vector<Shape> shapes{{80, 3}, {80, 3}, {2, 3}, {2, 3}, {3, 3}, {4, 2}, {4, 2}, {4, 3}, {3, 4}, {4}, {160}};
  testing::check_op({.name = "expert_lora fused, long runs in place, gate", .inputs = shapes}, [&](auto& v) {
    using T = value_of<decltype(v)>;
    const Projection<T> base{v[8], v[9], true};
    return expert_lora(base, v[0], v[1], {v[2], v[3], v[4]}, {v[5], v[6], v[7]}, plan, T(1.5), &v[10]);
  });
  testing::check_op({.name = "expert_lora, long runs in place", .inputs = {{80, 4}, {80, 3}, {2, 3}, {2, 3}, {3, 3}, {4, 2}, {4, 2}, {4, 3}}},
                    [&](auto& v) {
                      using T = value_of<decltype(v)>;
                      return expert_lora(v[0], v[1], {v[2], v[3], v[4]}, {v[5], v[6], v[7]}, plan, T(0.5));
                    });
}

// Step experts over many short runs (a step's stretch of each of 12 sequences), large enough that
// the runs' products, and the weight gradients summed over them, are shared among threads: equal to
// the same assignments with the tokens shuffled, where every expert gathers its rows instead.
BOOST_AUTO_TEST_CASE(expert_lora_runs_shared_among_threads_match_gathered_rows) {
  const std::int64_t sequences = 12, length = 64, tokens = sequences * length, in = 384, out = 320, r = 16;
  std::vector<std::int32_t> token, expert;
  std::vector<double> weight;
  for (std::int32_t t = 0; t < tokens; ++t) {
    const std::int64_t position = t % length;
    token.push_back(t), expert.push_back(position < 20 ? 0 : position < 41 ? 1 : 2), weight.push_back(0.5);
    token.push_back(t), expert.push_back(3), weight.push_back(0.5);  // the shared expert
  }
  std::vector<std::int32_t> moved(static_cast<std::size_t>(tokens));  // token t's row after the shuffle
  for (std::int32_t t = 0; t < tokens; ++t) moved[static_cast<std::size_t>(t)] = t;
  Rng rng(43);
  for (std::size_t i = moved.size() - 1; i > 0; --i) std::swap(moved[i], moved[rng.below(i + 1)]);
  std::vector<std::int32_t> shuffled_token;
  for (std::int32_t t : token) shuffled_token.push_back(moved[static_cast<std::size_t>(t)]);
  const auto runs = std::make_shared<const ExpertPlan>(ExpertPlan::group(tokens, 4, token, expert, weight));
  const auto gathered = std::make_shared<const ExpertPlan>(ExpertPlan::group(tokens, 4, shuffled_token, expert, weight));
  BOOST_TEST(autograd::expert_detail::in_place_runs(*runs, 0, autograd::expert_detail::min_mean_run<cpu>).size() == 12u);
  BOOST_TEST(autograd::expert_detail::in_place_runs(*gathered, 0, autograd::expert_detail::min_mean_run<cpu>).empty());

  auto normal = [&](Shape s) { return Tensor<float>::normal(s, 0.0, 1.0, rng); };
  const Tensor<float> x = normal({tokens, in}), base = normal({tokens, out}), upstream = normal({tokens, out});
  std::vector<Var<float>> a, b;
  for (int e = 0; e < 4; ++e) a.push_back(Var<float>::parameter(normal({r, in}))), b.push_back(Var<float>::parameter(normal({out, r})));
  // Rows of t moved to moved[t] (or back).
  auto shuffle = [&](const Tensor<float>& t, bool back) {
    const std::int64_t cols = t.shape()[1];
    const std::vector<float> from = t.to_vector();
    std::vector<float> to(from.size());
    for (std::int64_t i = 0; i < tokens; ++i) {
      const std::int64_t j = moved[static_cast<std::size_t>(i)], src = back ? j : i, dst = back ? i : j;
      std::copy_n(from.begin() + src * cols, cols, to.begin() + dst * cols);
    }
    return Tensor<float>::from_vector(t.shape(), to);
  };
  // Output, then the gradients of x, every A and every B, with x's rows in the unshuffled order.
  auto run = [&](const std::shared_ptr<const ExpertPlan>& plan, bool shuffled) {
    for (auto& v : a) v.zero_grad();
    for (auto& v : b) v.zero_grad();
    const Var<float> xv = Var<float>::parameter(shuffled ? shuffle(x, false) : x);
    const Var<float> y = expert_lora(Var<float>(shuffled ? shuffle(base, false) : base), xv, a, b, plan, 2.0f);
    sum(y * Var<float>(shuffled ? shuffle(upstream, false) : upstream)).backward();
    std::vector<std::vector<double>> values{as_double(shuffled ? shuffle(y.value(), true) : y.value()),
                                            as_double(shuffled ? shuffle(xv.grad(), true) : xv.grad())};
    for (auto& v : a) values.push_back(as_double(v.grad()));
    for (auto& v : b) values.push_back(as_double(v.grad()));
    return values;
  };
  const auto in_runs = run(runs, false), by_gathering = run(gathered, true);
  for (std::size_t i = 0; i < in_runs.size(); ++i)
    BOOST_TEST(relative_error(in_runs[i], by_gathering[i]) < 1e-5, "value " << i);
}

BOOST_AUTO_TEST_CASE(expert_lora_with_the_projection_inside_equals_base_plus_mix) {
  Rng rng(11);
  auto param = [&](Shape s) { return Var<double>::parameter(Tensor<double>::normal(s, 0.0, 1.0, rng)); };
  const Var<double> x = param({6, 4}), w = param({4, 3}), bias = param({3});
  const std::vector<Var<double>> a{param({2, 4}), param({2, 4})}, b{param({3, 2}), param({3, 2})};
  const auto plan = std::make_shared<const ExpertPlan>(
      ExpertPlan::group(6, 2, {0, 1, 2, 3, 4, 5, 2}, {0, 0, 1, 1, 1, 0, 1}, {1, 1, 1, 0.5, 1, 1, 0.25}));
  const Projection<double> base{w, bias, true};
  const auto fused = expert_lora(base, x, x, a, b, plan, 2.0).value().to_vector();
  const auto separate = expert_lora(base(x), x, a, b, plan, 2.0).value().to_vector();
  BOOST_TEST(fused.size() == separate.size());
  for (std::size_t i = 0; i < fused.size(); ++i) BOOST_TEST(fused[i] == separate[i], boost::test_tools::tolerance(1e-12));
  expect_error<shape_error>([&] { expert_lora(Projection<double>{param({5, 3}), Var<double>(), true}, x, x, a, b, plan, 1.0); },
                            {"projection weight [5, 3]", "4 input features"});
}

// At sizes where the covering expert's update rides inside the frozen product on the fp32 kernel
// (backend::gemm_sum), forward and gradients equal the unfused op's, in both weight layouts.
BOOST_AUTO_TEST_CASE(expert_lora_fused_into_the_frozen_product_matches_the_separate_products) {
  const std::int64_t tokens = 96, in = 48, out = 80, r = 8;
  std::vector<std::int32_t> token, expert;
  std::vector<double> weight;
  for (std::int32_t t = 0; t < tokens; ++t) {
    token.push_back(t), expert.push_back(0), weight.push_back(0.5);  // the shared expert: every token
    if (t % 3 == 0) token.push_back(t), expert.push_back(1), weight.push_back(0.5);
  }
  const auto plan = std::make_shared<const ExpertPlan>(ExpertPlan::group(tokens, 2, token, expert, weight));
  BOOST_TEST(backend::gemm_detail::fused_sum_applies(tokens, out, in, r) == backend::fp32_kernel_available());
  for (bool in_out : {false, true}) {
    Rng rng(41);
    auto param = [&](Shape s) { return Var<float>::parameter(Tensor<float>::normal(s, 0.0, 1.0, rng)); };
    const Var<float> x = param({tokens, in});
    Var<float> w = in_out ? param({in, out}) : param({out, in});
    w.set_requires_grad(false);
    const Var<float> bias = param({out});
    const std::vector<Var<float>> a{param({r, in}), param({r, in})}, b{param({out, r}), param({out, r})};
    const Tensor<float> upstream = Tensor<float>::normal({tokens, out}, 0.0, 1.0, rng);
    const Projection<float> base{w, bias, in_out};
    // Returns the output and the gradients of x, each A and each B.
    auto run = [&](bool fused) {
      std::vector<Var<float>> inputs{x, a[0], a[1], b[0], b[1]};
      for (auto& v : inputs) v.zero_grad();
      const Var<float> y = fused ? expert_lora(base, x, x, a, b, plan, 2.0f) : expert_lora(base(x), x, a, b, plan, 2.0f);
      sum(y * Var<float>(upstream)).backward();
      std::vector<std::vector<double>> values{as_double(y.value())};
      for (auto& v : inputs) values.push_back(as_double(v.grad()));
      return values;
    };
    const auto fused = run(true), separate = run(false);
    for (std::size_t i = 0; i < fused.size(); ++i)
      BOOST_TEST(relative_error(fused[i], separate[i]) < 1e-5, "in_out " << in_out << ", value " << i);
  }
}

BOOST_AUTO_TEST_CASE(expert_lora_leaves_unused_experts_without_gradient) {
  Rng rng(3);
  auto param = [&](Shape s) { return Var<double>::parameter(Tensor<double>::normal(s, 0.0, 1.0, rng)); };
  Var<double> base = param({3, 2}), x = param({3, 4});
  std::vector<Var<double>> a{param({2, 4}), param({2, 4})}, b{param({2, 2}), param({2, 2})};
  const auto plan = std::make_shared<const ExpertPlan>(ExpertPlan::group(3, 2, {0, 1, 2}, {1, 1, 1}, {1, 1, 1}));
  sum(expert_lora(base, x, a, b, plan, 1.0)).backward();
  BOOST_TEST(!a[0].grad().defined());  // AdamW then skips it, as PyTorch skips a parameter without .grad
  BOOST_TEST(!b[0].grad().defined());
  BOOST_TEST(a[1].grad().defined());
  BOOST_TEST(b[1].grad().defined());
}

// ---------------------------------------------------------------- routers on a model

BOOST_AUTO_TEST_CASE(attach_freezes_the_base_and_counts_parameters) {
  Llama<double> model(1);
  const std::int64_t base_count = model.num_parameters();
  auto experts = lora::attach<lora::StepRouter<3>>(model, {.rank = 4, .alpha = 8});
  BOOST_TEST(experts.size() == 14u);  // 2 layers x (q, k, v, o, gate, up, down)
  std::int64_t adapter_count = 0;
  for (const auto& p : experts.parameters()) adapter_count += p.numel();
  // Per layer and expert: A [4, in] + B [out, 4]; 4 experts (3 steps + shared).
  const std::int64_t d = 32, kv = 16, ff = 64, r = 4;
  const std::int64_t per_expert = 2 * (r * d + d * r) + 2 * (r * d + kv * r) + 2 * (r * d + ff * r) + (r * ff + d * r);
  BOOST_TEST(adapter_count == 2 * 4 * per_expert);
  const auto counts = experts.counts();
  BOOST_TEST(counts.trainable == adapter_count);
  BOOST_TEST(counts.total == adapter_count + base_count);
  char expected_line[160];
  std::snprintf(expected_line, sizeof expected_line, "trainable params: 16,384 || all params: %lld,%03lld || trainable%%: %.4f",
                static_cast<long long>(counts.total / 1000), static_cast<long long>(counts.total % 1000),
                100.0 * 16384.0 / static_cast<double>(counts.total));
  BOOST_TEST(counts.total < 1000000);
  BOOST_TEST(experts.trainable_parameters_line() == expected_line);

  randomize_experts(experts, 5);
  auto loss = model.loss(ids_2x6(), ids_2x6(), {.adapter = experts.route(filled(1))});
  loss.backward();
  model.for_each_parameter([](const std::string& name, Var<double>& p) {
    BOOST_TEST_CONTEXT(name) { BOOST_TEST(!p.grad().defined()); }  // frozen: no gradient computed at all
  });
  for (const auto& [name, p] : experts.named_parameters()) {
    const bool used = name.find(".step_1.") != std::string::npos || name.find(".shared.") != std::string::npos;
    BOOST_TEST_CONTEXT(name) { BOOST_TEST(p.grad().defined() == used); }
  }
}

BOOST_AUTO_TEST_CASE(targets_select_modules_by_hugging_face_name) {
  Gpt2<float> model(1);
  auto experts = lora::attach<lora::SingleLoRA<>>(model, {.rank = 2, .targets = {"c_attn", "h.1.mlp.c_fc"}});
  BOOST_TEST(experts.modules() == (std::vector<std::string>{"h.0.attn.c_attn", "h.1.attn.c_attn", "h.1.mlp.c_fc"}));
  Gpt2<float> other(1);
  expect_error<value_error>([&] { lora::attach<lora::SingleLoRA<>>(other, {.targets = {"q_proj"}}); },
                            {"target module 'q_proj'", "h.0.attn.c_attn"});
  expect_error<value_error>([&] { lora::attach<lora::SingleLoRA<>>(model, {.rank = 2}); }, {"already has an adapter", "h.0.attn.c_attn"});
  Gpt2<float> small(1);
  expect_error<value_error>([&] { lora::attach<lora::StepRouter<3>>(small, {.rank = 40}); },
                            {"module 'h.0.attn.c_attn'", "rank 40", "1 <= rank <= 32"});
}

// A StepRouter whose tokens all belong to step s computes one LoRA of rank 2r whose A stacks A_s
// over A_shared and whose B joins mix_alpha B_s and (1 - mix_alpha) B_shared.
BOOST_AUTO_TEST_CASE(one_step_equals_a_single_lora_of_step_and_shared) {
  Llama<double> moe_model(1), single_model(1);
  const double mix = 0.3;
  auto moe = lora::attach<lora::StepRouter<3>>(moe_model, {.rank = 4, .alpha = 8, .mix_alpha = mix});
  // Rank 8 with alpha 16 keeps the scale alpha / r = 2 of the rank-4 experts.
  auto single = lora::attach<lora::SingleLoRA<2>>(single_model, {.rank = 4, .alpha = 16});
  randomize_experts(moe, 11);
  const int step = 2, shared = 3;
  for (const auto& module : moe.modules()) {
    const auto& e = moe.layer(module).experts();
    auto& s = single.layer(module).experts()[0];
    const auto a = concat(std::vector<Var<double>>{e[step].lora_a, e[shared].lora_a}, 0);
    const auto b = concat(std::vector<Var<double>>{scale(e[step].lora_b, mix), scale(e[shared].lora_b, 1.0 - mix)}, 1);
    s.lora_a.mutable_value().copy_from(a.value());
    s.lora_b.mutable_value().copy_from(b.value());
  }
  no_grad off;
  const auto want = single_model.logits(ids_2x6()).value();
  const auto got = moe_model.logits(ids_2x6(), {.adapter = moe.route(filled(step))}).value();
  BOOST_TEST(relative_error(as_double(got), as_double(want)) < 1e-12);
  const auto base = [&] {
    Llama<double> plain(1);
    return plain.logits(ids_2x6()).value();
  }();
  BOOST_TEST(relative_error(as_double(got), as_double(base)) > 1e-3);  // the experts do change the output
}

// Copies expert `from` of one set into the single LoRA of another, on every module.
template <class From, class To>
void copy_expert(From& from, int expert, To& to) {
  for (const auto& module : from.modules()) {
    const auto& e = from.layer(module).experts()[static_cast<std::size_t>(expert)];
    auto& s = to.layer(module).experts()[0];
    s.lora_a.mutable_value().copy_from(e.lora_a.value());
    s.lora_b.mutable_value().copy_from(e.lora_b.value());
  }
}

BOOST_AUTO_TEST_CASE(ablations_compute_what_they_claim) {
  no_grad off;
  // Without the shared expert a step token gets its step expert alone, at weight 1.
  {
    Llama<double> m(1), ref(1);
    auto moe = lora::attach<lora::StepRouter<3, lora::without_shared>>(m, {.rank = 4, .alpha = 8});
    auto single = lora::attach<lora::SingleLoRA<>>(ref, {.rank = 4, .alpha = 8});
    BOOST_TEST(decltype(moe)::router_type::experts == 3);
    randomize_experts(moe, 12);
    copy_expert(moe, 1, single);
    BOOST_TEST(relative_error(as_double(m.logits(ids_2x6(), {.adapter = moe.route(filled(1))}).value()),
                              as_double(ref.logits(ids_2x6()).value())) < 1e-12);
  }
  // Question tokens routed shared-only get the shared expert alone, at weight 1.
  {
    Llama<double> m(1), ref(1);
    auto moe = lora::attach<lora::StepRouter<3>>(m, {.rank = 4, .alpha = 8, .unrouted = lora::UnroutedPolicy::SharedOnly});
    auto single = lora::attach<lora::SingleLoRA<>>(ref, {.rank = 4, .alpha = 8});
    randomize_experts(moe, 13);
    copy_expert(moe, 3, single);
    BOOST_TEST(relative_error(as_double(m.logits(ids_2x6(), {.adapter = moe.route(filled(lora::unrouted))}).value()),
                              as_double(ref.logits(ids_2x6()).value())) < 1e-12);
  }
  // Any alpha: mix_alpha = 1 leaves the shared expert out entirely.
  {
    Llama<double> m(1), ref(1);
    auto moe = lora::attach<lora::StepRouter<3>>(m, {.rank = 4, .alpha = 8, .mix_alpha = 1.0});
    auto single = lora::attach<lora::SingleLoRA<>>(ref, {.rank = 4, .alpha = 8});
    randomize_experts(moe, 14);
    copy_expert(moe, 0, single);
    BOOST_TEST(relative_error(as_double(m.logits(ids_2x6(), {.adapter = moe.route(filled(0))}).value()),
                              as_double(ref.logits(ids_2x6()).value())) < 1e-12);
  }
  Llama<double> m(1);
  expect_error<value_error>(
      [&] { lora::attach<lora::StepRouter<3, lora::without_shared>>(m, {.unrouted = lora::UnroutedPolicy::SharedOnly}); },
      {"shared_only", "without_shared"});
}

BOOST_AUTO_TEST_CASE(unrouted_tokens_follow_the_policy) {
  no_grad off;
  Llama<double> m(1);
  auto moe = lora::attach<lora::StepRouter<3>>(m, {.rank = 4, .alpha = 8, .seed = 9,
                                                   .unrouted = lora::UnroutedPolicy::FixedStep, .unrouted_expert = 2});
  randomize_experts(moe, 15);
  const auto as_step2 = as_double(m.logits(ids_2x6(), {.adapter = moe.route(filled(2))}).value());
  BOOST_TEST(relative_error(as_double(m.logits(ids_2x6(), {.adapter = moe.route(filled(lora::unrouted))}).value()), as_step2) < 1e-12);

  // Random: one expert per sequence, shared by every layer; the same seed gives the same draws.
  Llama<double> r(1);
  auto random = lora::attach<lora::StepRouter<3>>(r, {.rank = 4, .alpha = 8, .seed = 9});
  randomize_experts(random, 15);
  const auto routing = random.route(filled(lora::unrouted));
  const auto got = as_double(r.logits(ids_2x6(), {.adapter = routing}).value());
  std::vector<int> matched;
  for (int s = 0; s < 3; ++s) {
    const auto want = as_double(r.logits(ids_2x6(), {.adapter = random.route(filled(s))}).value());
    for (int seq = 0; seq < 2; ++seq) {
      const std::size_t half = want.size() / 2;
      const std::vector<double> a(got.begin() + seq * half, got.begin() + (seq + 1) * half);
      const std::vector<double> b(want.begin() + seq * half, want.begin() + (seq + 1) * half);
      if (relative_error(a, b) < 1e-12) matched.push_back(seq);
    }
  }
  BOOST_TEST(matched.size() == 2u);  // each sequence equals exactly one step expert's output
  random.reseed(9);
  BOOST_TEST(random.route(filled(lora::unrouted))->plan->token == routing->plan->token);
}

BOOST_AUTO_TEST_CASE(bad_routing_is_a_typed_error) {
  Llama<float> m(1);
  auto moe = lora::attach<lora::StepRouter<3>>(m, {.rank = 4});
  auto bad = filled(0);
  bad.data()[7] = 3;
  expect_error<value_error>([&] { moe.route(bad); }, {"route id 3", "[1, 1]", "3 step experts"});
  expect_error<value_error>([&] { m.logits(ids_2x6()); }, {"model.layers.0.self_attn.q_proj", "step ids"});
  const auto short_routing = moe.route(Tensor<std::int32_t>::full({1, 6}, 0));
  expect_error<shape_error>([&] { m.logits(ids_2x6(), {.adapter = short_routing}); }, {"covers 6 tokens", "has 12"});
  expect_error<value_error>([&] { lora::attach<lora::StepRouter<3>>(m, {.unrouted = lora::UnroutedPolicy::FixedStep, .unrouted_expert = 3}); },
                            {"unrouted_expert = 3"});
}

// Finite differences in double through a whole model for each router.
template <class Set, class Model>
void check_router_gradients(Model& model, Set& set, const nn::LossOptions<double>& options) {
  randomize_experts(set, 21);
  const auto ids = ids_2x6();
  auto loss_of = [&] {
    auto l = model.loss(ids, ids, options);
    if (auto aux = set.aux_loss(); aux.defined()) l = l + aux;
    return l;
  };
  for (auto& [name, p] : set.named_parameters()) p.zero_grad();
  loss_of().backward();
  int checked = 0;
  for (auto& [name, p] : set.named_parameters()) {
    if (++checked % 5 != 1) continue;  // a sample of tensors, several entries each
    for (std::int64_t i : {std::int64_t{0}, p.numel() / 2, p.numel() - 1}) {
      const double analytic = p.grad().defined() ? p.grad().data()[i] : 0.0;
      double* v = p.mutable_value().data() + i;
      const double keep = *v, h = 1e-6;
      double up, down;
      {
        no_grad off;
        *v = keep + h;
        up = loss_of().value().item();
        *v = keep - h;
        down = loss_of().value().item();
        *v = keep;
      }
      const double numeric = (up - down) / (2 * h);
      BOOST_TEST_CONTEXT(name << "[" << i << "]") { BOOST_TEST(std::abs(analytic - numeric) <= 1e-7 + 1e-5 * std::abs(numeric)); }
    }
  }
}

BOOST_AUTO_TEST_CASE(every_router_passes_finite_differences) {
  {
    Gpt2<double> m(1);
    auto set = lora::attach<lora::StepRouter<3>>(m, {.rank = 2, .alpha = 4, .seed = 3});
    auto steps = Tensor<std::int32_t>::from_vector({2, 6}, {-1, -1, 0, 0, 1, 2, -1, 0, 1, 1, 2, 2});
    check_router_gradients(m, set, {.adapter = set.route(steps)});
  }
  {
    Llama<double> m(1);
    auto set = lora::attach<lora::TopKRouter<4, 2>>(m, {.rank = 2, .alpha = 4, .aux_loss_coef = 0.5, .contrastive_coef = 0.3});
    check_router_gradients(m, set, {});
  }
  {
    Gpt2<double> m(1);
    auto set = lora::attach<lora::SingleLoRA<>>(m, {.rank = 2, .alpha = 4, .use_rslora = true});
    check_router_gradients(m, set, {});
  }
}

// Switch / Mixtral load balancing: coef * E * sum_e f_e P_e, f_e = share of top-k picks of e,
// P_e = mean gate probability of e. Gate rows pick out x's coordinates, so the logits are known.
BOOST_AUTO_TEST_CASE(topk_load_balance_loss_matches_its_formula) {
  Rng rng(1);
  lora::ExpertLinear<lora::TopKRouter<4, 2>, double> layer("probe", 3, 2, {.rank = 1, .aux_loss_coef = 0.01}, 0, rng);
  layer.gate().mutable_value().copy_from(
      Tensor<double>::from_vector({4, 3}, {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}));
  const Var<double> x(Tensor<double>::from_vector({3, 3}, {2, 0, 0, 0, 1, 0, 0, 0, 3}));
  const Var<double> base(Tensor<double>::zeros({3, 2}));
  layer.apply(x, base, nullptr);
  // logits per token: [2,0,0,0], [0,1,0,0], [0,0,3,0]; top-2 (ties to the lower index):
  // {0,1}, {1,0}, {2,0}, so f = [3, 2, 1, 0] / 3.
  auto probs = [](std::vector<double> z) {
    double s = 0;
    for (double& v : z) s += (v = std::exp(v));
    for (double& v : z) v /= s;
    return z;
  };
  const auto p0 = probs({2, 0, 0, 0}), p1 = probs({0, 1, 0, 0}), p2 = probs({0, 0, 3, 0});
  const double f[4] = {3.0 / 3, 2.0 / 3, 1.0 / 3, 0.0};
  double expected = 0;
  for (int e = 0; e < 4; ++e) expected += f[e] * (p0[e] + p1[e] + p2[e]) / 3.0;
  expected *= 0.01 * 4;
  BOOST_TEST(layer.aux_loss().value().item() == expected, boost::test_tools::tolerance(1e-14));
}

// The contrastive loss against its formula, evaluated here with plain loops.
BOOST_AUTO_TEST_CASE(topk_contrastive_loss_matches_its_formula) {
  Rng rng(2);
  const double temperature = 0.5, coef = 0.3;
  lora::ExpertLinear<lora::TopKRouter<2, 1>, double> layer(
      "probe", 4, 3, {.rank = 2, .aux_loss_coef = 0.0, .contrastive_coef = coef, .contrastive_temperature = temperature}, 0, rng);
  for (auto& p : layer.parameters()) p.mutable_value().copy_from(Tensor<double>::normal(p.shape(), 0.0, 1.0, rng));
  const Var<double> x(Tensor<double>::normal({3, 4}, 0.0, 1.0, rng));
  layer.apply(x, Var<double>(Tensor<double>::zeros({3, 3})), nullptr);
  // o[e][t] = B_e A_e x_t, normalized to unit length.
  std::vector<std::vector<double>> o;
  for (const auto& ex : layer.experts()) {
    const auto a = ex.lora_a.value().to_vector(), b = ex.lora_b.value().to_vector(), xv = x.value().to_vector();
    for (int t = 0; t < 3; ++t) {
      double h[2] = {0, 0};
      for (int r = 0; r < 2; ++r)
        for (int i = 0; i < 4; ++i) h[r] += a[static_cast<std::size_t>(r * 4 + i)] * xv[static_cast<std::size_t>(t * 4 + i)];
      std::vector<double> y(3, 0.0);
      double norm = 0;
      for (int j = 0; j < 3; ++j) {
        for (int r = 0; r < 2; ++r) y[static_cast<std::size_t>(j)] += b[static_cast<std::size_t>(j * 2 + r)] * h[r];
        norm += y[static_cast<std::size_t>(j)] * y[static_cast<std::size_t>(j)];
      }
      for (double& v : y) v /= std::sqrt(norm);
      o.push_back(y);
    }
  }
  double expected = 0;
  const int m = 6;
  for (int i = 0; i < m; ++i) {
    double denominator = 0;
    std::vector<double> logit(m);
    for (int j = 0; j < m; ++j) {
      double dot = 0;
      for (int d = 0; d < 3; ++d) dot += o[static_cast<std::size_t>(i)][static_cast<std::size_t>(d)] * o[static_cast<std::size_t>(j)][static_cast<std::size_t>(d)];
      logit[static_cast<std::size_t>(j)] = dot / temperature;
      if (j != i) denominator += std::exp(logit[static_cast<std::size_t>(j)]);
    }
    for (int j = 0; j < m; ++j)
      if (j != i && j / 3 == i / 3) expected -= 0.5 * (logit[static_cast<std::size_t>(j)] - std::log(denominator));
  }
  expected *= coef / m;
  BOOST_TEST(layer.aux_loss().value().item() == expected, boost::test_tools::tolerance(1e-10));
}

// ---------------------------------------------------------------- PEFT files against PyTorch

// Loads the base model from its fixture, the adapter from `dir`, and compares logits, loss and
// every LoRA gradient with the PyTorch reference.
template <class Model, class Set>
void check_adapter_fixture(Model& model, Set& set, const std::string& stem, const nn::LossOptions<double>& options, double tol) {
  const auto f = mote::testing::load_text_fixture(stem);
  const auto ids = f.tensor<std::int32_t>("ids"), targets = f.tensor<std::int32_t>("targets");
  const auto logits = model.logits(ids, {.adapter = options.adapter});
  BOOST_TEST(relative_error(as_double(logits.value()), f.entry("logits").values) < tol);
  auto loss = model.loss(ids, targets, options);
  BOOST_TEST(std::abs(loss.value().item() - f.entry("loss").values[0]) < tol);
  loss.backward();
  using R = typename Set::router_type;
  int compared = 0;
  for (const auto& layer : set.layers()) {
    const std::string module = (Model::config.gpt2_layout() ? "transformer." : "") + layer->module();
    for (int e = 0; e < R::experts; ++e) {
      const std::string folder = lora::is_single_lora<R> ? std::string() : R::expert_name(e) + "/";
      const auto& ex = layer->experts()[static_cast<std::size_t>(e)];
      for (const auto& [which, p] : {std::pair{"lora_A", ex.lora_a}, std::pair{"lora_B", ex.lora_b}}) {
        const std::string key = "grad." + folder + "base_model.model." + module + "." + which + ".weight";
        BOOST_TEST_CONTEXT(key) { BOOST_TEST(relative_error(as_double(p.grad()), f.entry(key).values) < tol); }
        ++compared;
      }
    }
  }
  BOOST_TEST(compared == static_cast<int>(set.size()) * R::experts * 2);
}

template <class Model>
void load_base(Model& model, const std::string& stem) {
  model.load_state_dict(mote::testing::load_text_fixture(stem).template with_prefix<typename Model::V::value_type>("param."));
}

BOOST_AUTO_TEST_CASE(peft_single_lora_matches_pytorch) {
  {
    Gpt2<double> model(1);
    load_base(model, "model_tiny_gpt2");
    auto set = lora::attach<lora::SingleLoRA<>>(model, {.rank = 4, .alpha = 8});
    set.load(mote::testing::fixture_path("lora_gpt2"));
    check_adapter_fixture(model, set, "lora_gpt2", {}, 1e-10);
  }
  {
    Llama<double> model(1);
    load_base(model, "model_tiny_llama");
    auto set = lora::attach<lora::SingleLoRA<>>(model, {.rank = 4, .alpha = 8, .use_rslora = true});
    set.load(mote::testing::fixture_path("lora_llama"));
    check_adapter_fixture(model, set, "lora_llama", {}, 1e-10);
  }
}

BOOST_AUTO_TEST_CASE(mote_experts_match_pytorch) {
  Llama<double> model(1);
  load_base(model, "model_tiny_llama");
  auto set = lora::attach<lora::StepRouter<3>>(model, {.rank = 4, .alpha = 8});
  set.load(mote::testing::fixture_path("mote_llama"));  // also sets the fixed_step unrouted policy, to expert 1
  BOOST_TEST(set.options().unrouted_expert == 1);
  BOOST_TEST((set.options().unrouted == lora::UnroutedPolicy::FixedStep));
  const auto f = mote::testing::load_text_fixture("mote_llama");
  check_adapter_fixture(model, set, "mote_llama", {.adapter = set.route(f.tensor<std::int32_t>("step_ids"))}, 1e-10);
  // Float within 1e-5 of the double reference.
  Llama<float> fmodel(1);
  load_base(fmodel, "model_tiny_llama");
  auto fset = lora::attach<lora::StepRouter<3>>(fmodel, {.rank = 4, .alpha = 8});
  fset.load(mote::testing::fixture_path("mote_llama"));
  const auto logits = fmodel.logits(f.tensor<std::int32_t>("ids"), {.adapter = fset.route(f.tensor<std::int32_t>("step_ids"))});
  BOOST_TEST(relative_error(as_double(logits.value()), f.entry("logits").values) < 1e-5);
}

// What mote writes has PEFT's names and config fields: the same keys as the reference file.
BOOST_AUTO_TEST_CASE(saved_adapters_follow_peft_layout) {
  namespace st = io::safetensors;
  Gpt2<float> model(1);
  auto set = lora::attach<lora::SingleLoRA<>>(model, {.rank = 4, .alpha = 8});
  TempDir dir("lora_layout");
  set.save(dir.path);
  const auto ours = st::File::open(dir.path / "adapter_model.safetensors");
  const auto reference = st::File::open(mote::testing::fixture_path("lora_gpt2/adapter_model.safetensors"));
  BOOST_TEST(std::set<std::string>(ours.names().begin(), ours.names().end()) ==
             std::set<std::string>(reference.names().begin(), reference.names().end()));
  const auto ours_cfg = io::json::parse_file(dir.path / "adapter_config.json");
  const auto ref_cfg = io::json::parse_file(mote::testing::fixture_path("lora_gpt2/adapter_config.json"));
  for (const char* key : {"peft_type", "r", "lora_alpha", "fan_in_fan_out", "bias", "task_type", "use_rslora", "use_dora"})
    BOOST_TEST_CONTEXT(key) { BOOST_TEST((ours_cfg.at(key) == ref_cfg.at(key))); }
  std::set<std::string> ours_targets, ref_targets;
  for (const auto& t : ours_cfg.at("target_modules").as_array()) ours_targets.insert(t.as_string());
  for (const auto& t : ref_cfg.at("target_modules").as_array()) ref_targets.insert(t.as_string());
  BOOST_TEST(ours_targets == ref_targets);
  for (const auto& key : ours_cfg.as_object()) BOOST_TEST_CONTEXT(key.first) { BOOST_TEST(ref_cfg.find(key.first) != nullptr); }
}

template <class Set>
std::vector<std::vector<float>> snapshot(const Set& set) {
  std::vector<std::vector<float>> out;
  for (const auto& [name, p] : set.named_parameters()) out.push_back(p.value().to_vector());
  return out;
}

BOOST_AUTO_TEST_CASE(adapters_round_trip_bit_exactly) {
  TempDir dir("lora_round_trip");
  {
    Llama<float> a(1), b(2);
    auto saved = lora::attach<lora::StepRouter<3>>(a, {.rank = 4, .mix_alpha = 0.25, .unrouted = lora::UnroutedPolicy::SharedOnly});
    randomize_experts(saved, 31);
    saved.save(dir.path / "mote");
    auto loaded = lora::attach<lora::StepRouter<3>>(b, {.rank = 4, .seed = 77});
    loaded.load(dir.path / "mote");
    BOOST_TEST((snapshot(loaded) == snapshot(saved)));
    BOOST_TEST(loaded.options().mix_alpha == 0.25);
    BOOST_TEST((loaded.options().unrouted == lora::UnroutedPolicy::SharedOnly));
    BOOST_TEST(fs::exists(dir.path / "mote" / "shared" / "adapter_config.json"));
  }
  {
    Gpt2<float> a(1), b(2);
    auto saved = lora::attach<lora::TopKRouter<4, 2>>(a, {.rank = 2});
    randomize_experts(saved, 32);
    saved.save(dir.path / "topk");
    auto loaded = lora::attach<lora::TopKRouter<4, 2>>(b, {.rank = 2, .seed = 5});
    loaded.load(dir.path / "topk");
    BOOST_TEST((snapshot(loaded) == snapshot(saved)));
  }
  {
    Gpt2<float> a(1), b(2);
    auto saved = lora::attach<lora::SingleLoRA<2>>(a, {.rank = 2});
    randomize_experts(saved, 33);
    saved.save(dir.path / "single");
    auto loaded = lora::attach<lora::SingleLoRA<2>>(b, {.rank = 2, .seed = 5});
    loaded.load(dir.path / "single");
    BOOST_TEST((snapshot(loaded) == snapshot(saved)));
  }
}

BOOST_AUTO_TEST_CASE(bad_adapter_files_are_typed_errors) {
  TempDir dir("lora_bad");
  const fs::path single = dir.path / "single";
  Gpt2<float> gpt2(1);
  auto set = lora::attach<lora::SingleLoRA<>>(gpt2, {.rank = 4, .alpha = 8});
  set.save(single);
  auto edit_config = [&](const std::string& key, io::json::Value value) {
    auto cfg = io::json::parse_file(single / "adapter_config.json");
    cfg.set(key, std::move(value));
    io::json::write_file(single / "adapter_config.json", cfg);
  };
  const auto before = snapshot(set);
  edit_config("mystery_option", 1);
  expect_error<value_error>([&] { set.load(single); }, {"adapter_config.json", "unknown field 'mystery_option'"});
  set.save(single);
  edit_config("r", 8);
  expect_error<value_error>([&] { set.load(single); }, {"r = 8", "rank 4"});
  set.save(single);
  edit_config("use_dora", true);
  expect_error<value_error>([&] { set.load(single); }, {"use_dora"});
  BOOST_TEST((snapshot(set) == before));  // failed loads change nothing

  // An adapter for another base model: Llama's adapter into GPT-2, and names that do not match.
  expect_error<value_error>([&] {
    Gpt2<double> g(1);
    auto s = lora::attach<lora::SingleLoRA<>>(g, {.rank = 4, .alpha = 8, .use_rslora = true});
    s.load(mote::testing::fixture_path("lora_llama"));
  }, {"fan_in_fan_out = false", "this model is the other kind"});
  expect_error<value_error>([&] {
    Gpt2<double> g(1);
    auto s = lora::attach<lora::SingleLoRA<>>(g, {.rank = 4, .alpha = 8, .targets = {"c_attn"}});
    s.load(mote::testing::fixture_path("lora_gpt2"));
  }, {"transformer.h.0.attn.c_proj", "matches no adapted module"});
  expect_error<shape_error>([&] {
    nn::CausalLM<nn::Config{.vocab = 64, .d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4, .d_ff = 96, .max_seq = 16}, double> g(1);
    auto s = lora::attach<lora::SingleLoRA<>>(g, {.rank = 4, .alpha = 8});
    s.load(mote::testing::fixture_path("lora_gpt2"));
  }, {"module 'h.0.mlp.c_fc'", "[128, 4]", "expected [96, 4]"});
  // mote_config.json of another router shape.
  Llama<float> llama(1);
  auto four = lora::attach<lora::StepRouter<4>>(llama, {.rank = 4, .alpha = 8});
  expect_error<value_error>([&] { four.load(mote::testing::fixture_path("mote_llama")); }, {"mote_config.json", "experts", "compiled router"});
  expect_error<io_error>([&] { four.load(dir.path / "missing"); }, {"mote_config.json", "does not exist"});
}

// ---------------------------------------------------------------- merging

BOOST_AUTO_TEST_CASE(merge_matches_unmerged_forward_and_unmerges_exactly) {
  no_grad off;
  auto check = [](auto& model, auto& set) {
    randomize_experts(set, 41, 0.03);  // deltas about the size of W0, as after training
    std::vector<std::vector<float>> weights;
    model.for_each_parameter([&](const std::string&, auto& p) { weights.push_back(p.value().to_vector()); });
    for (int step = 0; step < 3; ++step) {
      const auto routed = as_double(model.logits(ids_2x6(), {.adapter = set.route(filled(step))}).value());
      set.merge_step(step);
      const auto merged = as_double(model.logits(ids_2x6()).value());
      BOOST_TEST(relative_error(merged, routed) < 1e-6);
      expect_error<value_error>([&] { set.merge_expert(0); }, {"already merged"});
      set.unmerge();
      std::vector<std::vector<float>> after;
      model.for_each_parameter([&](const std::string&, auto& p) { after.push_back(p.value().to_vector()); });
      BOOST_TEST((after == weights));  // bit-exact
    }
  };
  Gpt2<float> g(1);
  auto gs = lora::attach<lora::StepRouter<3>>(g, {.rank = 4});
  check(g, gs);
  Llama<float> l(1);
  auto ls = lora::attach<lora::StepRouter<3>>(l, {.rank = 4});
  check(l, ls);
}

// ---------------------------------------------------------------- training

// The tiny presets' embeddings (std 0.02) bound the logits of a frozen model to about +-1, so the
// training tests widen them first: the experts then have room to fit the batch.
template <class Model>
void widen_embeddings(Model& model) {
  Rng rng(5);
  model.for_each_parameter([&](const std::string& name, auto& p) {
    if (name.find("wte") != std::string::npos || name.find("embed") != std::string::npos || name.find("lm_head") != std::string::npos)
      p.mutable_value().copy_from(Tensor<float>::normal(p.shape(), 0.0, 0.5, rng));
  });
}

template <class Set, class Model>
double train(Model& model, Set& set, int steps) {
  optim::AdamW<float> opt(set.parameters(), {.lr = 5e-3f, .weight_decay = 0.0f});
  const auto ids = ids_2x6();
  const auto targets = Tensor<std::int32_t>::from_vector({2, 6}, {14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 1});
  auto step_ids = Tensor<std::int32_t>::from_vector({2, 6}, {-1, 0, 0, 1, 2, 2, -1, -1, 0, 1, 1, 2});
  double first = 0, last = 0;
  for (int i = 0; i < steps; ++i) {
    opt.zero_grad();
    nn::LossOptions<float> options;
    if constexpr (lora::is_step_router<typename Set::router_type>) options.adapter = set.route(step_ids);
    else options.adapter = set.context();
    auto loss = model.loss(ids, targets, options);
    const double value = loss.value().item();
    if (auto aux = set.aux_loss(); aux.defined()) loss = loss + aux;
    loss.backward();
    opt.step();
    if (i == 0) first = value;
    last = value;
  }
  BOOST_TEST_MESSAGE("loss " << first << " -> " << last);
  return last / first;
}

BOOST_AUTO_TEST_CASE(every_router_trains_a_tiny_model) {
  {
    Gpt2<float> m(1);
    widen_embeddings(m);
    auto s = lora::attach<lora::StepRouter<3>>(m, {.rank = 4, .dropout = 0.1});
    BOOST_TEST(train(m, s, 40) < 0.5);
  }
  {
    Llama<float> m(1);
    widen_embeddings(m);
    auto s = lora::attach<lora::StepRouter<3, lora::without_shared>>(m, {.rank = 4});
    BOOST_TEST(train(m, s, 40) < 0.5);
  }
  {
    Gpt2<float> m(1);
    widen_embeddings(m);
    auto s = lora::attach<lora::TopKRouter<4, 2>>(m, {.rank = 4});
    BOOST_TEST(train(m, s, 40) < 0.5);
  }
  {
    Llama<float> m(1);
    widen_embeddings(m);
    auto s = lora::attach<lora::SingleLoRA<2>>(m, {.rank = 4});
    BOOST_TEST(train(m, s, 40) < 0.5);
  }
}

// Adapter dropout draws its mask from the routing's seed, so a recomputed block sees the same mask.
BOOST_AUTO_TEST_CASE(dropout_masks_survive_recomputation) {
  auto grads = [](bool recompute) {
    Llama<double> m(1);
    m.set_recompute(recompute);
    auto s = lora::attach<lora::StepRouter<3>>(m, {.rank = 4, .dropout = 0.3, .seed = 4});
    randomize_experts(s, 51);
    m.loss(ids_2x6(), ids_2x6(), {.adapter = s.route(filled(1))}).backward();
    std::vector<double> out;
    for (const auto& p : s.parameters())
      if (p.grad().defined())
        for (double v : p.grad().to_vector()) out.push_back(v);
    return out;
  };
  const auto plain = grads(false), recomputed = grads(true);
  BOOST_TEST(!plain.empty());
  BOOST_TEST(relative_error(recomputed, plain) < 1e-12);
}

// Trainable token rows (PEFT's TRAINABLE_TOKENS): a fresh set changes nothing; trained rows act as
// if written into the weights (merge gives the same logits); gradients match finite differences;
// files round-trip and refuse rows of other tokens.
template <class Model>
void check_trainable_tokens(const std::string& tag) {
  using TT = lora::TrainableTokens<Model>;
  TempDir dir(tag);
  Model m(1);
  const auto ids = ids_2x6();  // holds 9 three times and 3 twice
  std::vector<double> before;
  {
    no_grad off;
    before = as_double(m.logits(ids).value());
  }
  TT rows(m, {9, 3, 60});
  {
    no_grad off;  // the head's replaced columns come from their own product: equal up to its rounding
    BOOST_TEST(relative_error(as_double(m.logits(ids).value()), before) < 1e-13);
  }
  Rng rng(44);
  for (auto p : rows.parameters())
    p.mutable_value().copy_from(Tensor<double>::normal(p.shape(), 0.0, 0.5, rng));
  std::vector<double> adapted;
  {
    no_grad off;
    adapted = as_double(m.logits(ids).value());
  }
  BOOST_TEST(relative_error(adapted, before) > 1e-3);  // the rows took effect
  rows.merge();
  BOOST_TEST(!m.token_adapter());
  {
    no_grad off;
    BOOST_TEST(relative_error(as_double(m.logits(ids).value()), adapted) < 1e-12);
  }
  rows.unmerge();
  BOOST_TEST(m.token_adapter());
  {
    no_grad off;
    BOOST_TEST(as_double(m.logits(ids).value()) == adapted, boost::test_tools::per_element());
  }
  m.set_trainable(false);
  // Central differences in double on every row entry the batch touches.
  auto loss_of = [&] { return m.loss(ids, ids); };
  for (auto p : rows.parameters()) p.zero_grad();
  loss_of().backward();
  for (auto [name, p] : rows.named_parameters()) {
    BOOST_TEST(p.grad().defined());
    for (std::int64_t i = 0; i < p.numel(); i += 7) {
      double* v = p.mutable_value().data() + i;
      const double keep = *v, h = 1e-6;
      double up, down;
      {
        no_grad off;
        *v = keep + h;
        up = loss_of().value().item();
        *v = keep - h;
        down = loss_of().value().item();
        *v = keep;
      }
      const double numeric = (up - down) / (2 * h), analytic = p.grad().data()[i];
      BOOST_TEST_CONTEXT(name << "[" << i << "]") { BOOST_TEST(std::abs(analytic - numeric) <= 1e-8 + 1e-6 * std::abs(numeric)); }
    }
  }
  // Files: PEFT's names, bit-exact round trip, and refusals.
  rows.save(dir.path / "tokens");
  const auto file = io::safetensors::File::open(dir.path / "tokens" / "adapter_model.safetensors");
  for (const auto& [name, p] : rows.named_parameters()) BOOST_TEST(file.has(name), name);
  const auto cfg = io::json::parse_file(dir.path / "tokens" / "adapter_config.json");
  BOOST_TEST(cfg.at("peft_type").as_string() == "TRAINABLE_TOKENS");
  BOOST_TEST(cfg.at("token_indices").size() == 3u);
  Model other(2);
  TT loaded(other, {9, 3, 60});
  loaded.load(dir.path / "tokens");
  for (std::size_t k = 0; k < rows.parameters().size(); ++k)
    BOOST_TEST(loaded.parameters()[k].value().to_vector() == rows.parameters()[k].value().to_vector(),
               boost::test_tools::per_element());
  Model third(3);
  TT wrong(third, {9, 3, 61});
  expect_error<value_error>([&] { wrong.load(dir.path / "tokens"); }, {"adapter_config.json", "token_indices", "61"});
  expect_error<io_error>([&] { wrong.load(dir.path / "missing"); }, {"does not exist"});
}

BOOST_AUTO_TEST_CASE(trainable_token_rows_tied_and_untied) {
  check_trainable_tokens<Gpt2<double>>("tokens_gpt2");   // tied: one set of rows serves both ends
  check_trainable_tokens<Llama<double>>("tokens_llama");  // untied: embedding rows and LM head rows
  Llama<double> m(1);
  expect_error<value_error>([&] { lora::TrainableTokens<Llama<double>>(m, {}); }, {"no token ids"});
  expect_error<value_error>([&] { lora::TrainableTokens<Llama<double>>(m, {3, 64}); }, {"64", "[0, 64)"});
  expect_error<value_error>([&] { lora::TrainableTokens<Llama<double>>(m, {3, 3}); }, {"appears twice"});
  lora::TrainableTokens<Llama<double>> rows(m, {5});
  expect_error<value_error>([&] { lora::TrainableTokens<Llama<double>>(m, {6}); }, {"already has trainable token rows"});
  expect_error<value_error>([&] { (void)nn::resize_vocab<70>(m); }, {"trainable token rows"});
  // Decoding with the rows attached gives what the merged model gives.
  Rng rng(3);
  rows.embedding_rows().mutable_value().copy_from(Tensor<double>::normal({1, 32}, 0.0, 1.0, rng));
  rows.head_rows().mutable_value().copy_from(Tensor<double>::normal({1, 32}, 0.0, 1.0, rng));
  const std::vector<std::int32_t> prompt{5, 7, 5};
  const auto adapted = nn::generate(m, prompt, {.max_new_tokens = 6});
  rows.merge();
  BOOST_TEST(nn::generate(m, prompt, {.max_new_tokens = 6}) == adapted, boost::test_tools::per_element());
}

// ---------------------------------------------------------------- graph-free decoding with adapters

namespace {

// Cached one-token steps with per-row routes that change every step, through the graph-free step
// and through the layer-by-layer forward, on two caches of the same prompt. Returns the largest
// difference of their logits, and whether every step took the graph-free path.
template <class Model, class Set>
std::pair<double, bool> decode_both_ways(const Model& model, Set& set, const std::vector<std::int32_t>& fed) {
  no_grad off;
  const auto prompt = Tensor<std::int32_t>::from_vector({2, 3}, {3, 14, 15, 60, 8, 9});
  const auto prompt_routes = Tensor<std::int32_t>::from_vector({2, 3}, {0, 0, 1, 2, 2, 1});
  auto graph_free = model.make_cache(), layered = model.make_cache();
  (void)model.logits(prompt, {.adapter = set.context_for(prompt_routes)}, &graph_free);
  (void)model.logits(prompt, {.adapter = set.context_for(prompt_routes)}, &layered);
  auto& scratch = nn::decode_detail::Scratch<double, cpu>::for_this_thread();
  double worst = 0;
  bool every_step_graph_free = true;
  for (std::size_t k = 0; k < fed.size(); ++k) {
    const auto ids = Tensor<std::int32_t>::from_vector({2, 1}, {fed[k], fed[fed.size() - 1 - k]});
    const auto routes = Tensor<std::int32_t>::from_vector({2, 1}, {static_cast<std::int32_t>(k % 3), static_cast<std::int32_t>((k + 1) % 3)});
    const auto context = set.context_for(routes);
    scratch = {};
    const auto a = model.logits(ids, {.adapter = context}, &graph_free).value().to_vector();
    every_step_graph_free = every_step_graph_free && scratch.x.defined();
    const auto b = model.logits(ids, {.adapter = context, .graph_free_decode = false}, &layered).value().to_vector();
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return {worst, every_step_graph_free};
}

}  // namespace

BOOST_AUTO_TEST_CASE(graph_free_decode_serves_unmerged_experts_and_token_rows) {
  const std::vector<std::int32_t> fed{5, 60, 7, 61, 33, 2};  // 60 and 61 have trainable rows
  const auto check = [&](auto model, auto make_set, const char* what) {
    auto set = make_set(model);
    randomize_experts(set, 4);
    lora::TrainableTokens<decltype(model)> rows(model, {60, 61});
    Rng rng(8);
    for (auto p : rows.parameters()) p.mutable_value().copy_from(Tensor<double>::normal(p.shape(), 0.0, 0.5, rng));
    set.eval();
    BOOST_TEST_CONTEXT(what) {
      const auto [worst, graph_free] = decode_both_ways(model, set, fed);
      BOOST_TEST(graph_free);
      BOOST_TEST(worst < 1e-12);  // the experts' B and the rows are random: a share left out would show
    }
  };
  // Rank 8 takes the products' fixed-rank path, rank 2 (and 2 x 2 for the single router) the general one.
  check(Gpt2<double>(1), [](auto& m) { return lora::attach<lora::StepRouter<3>>(m, {.rank = 8, .alpha = 16}); }, "gpt2 step");
  check(Llama<double>(2), [](auto& m) { return lora::attach<lora::StepRouter<3>>(m, {.rank = 2, .alpha = 4, .mix_alpha = 0.7}); },
        "llama step");
  check(Llama<double>(3), [](auto& m) { return lora::attach<lora::SingleLoRA<2>>(m, {.rank = 2, .alpha = 4}); }, "llama single");
  // A learned gate goes layer by layer; so does a step with adapter dropout in training mode.
  {
    Llama<double> m(4);
    auto set = lora::attach<lora::TopKRouter<4, 2>>(m, {.rank = 2, .alpha = 4});
    randomize_experts(set, 5);
    set.eval();
    const auto [worst, graph_free] = decode_both_ways(m, set, fed);
    BOOST_TEST(!graph_free);
    BOOST_TEST(worst == 0.0);
  }
  {
    Llama<double> m(5);
    auto set = lora::attach<lora::StepRouter<3>>(m, {.rank = 2, .alpha = 4, .dropout = 0.1});
    const auto [worst, graph_free] = decode_both_ways(m, set, fed);
    BOOST_TEST(!graph_free);
  }
}

BOOST_AUTO_TEST_SUITE_END()
