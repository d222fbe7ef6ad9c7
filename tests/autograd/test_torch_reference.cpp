// The neural-network ops against PyTorch: fixtures written by tests/reference/make_op_fixtures.py
// (torch in float64, Hugging Face formulas) hold inputs, outputs and the gradients of sum(out * seed).
// mote runs each case in double (relative error < 1e-10) and in float (< 1e-5).
#include "op_harness.hpp"
#include "test_files.hpp"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace mote;

namespace {

using Fixture = mote::testing::TextFixture;

Fixture load_fixture(const std::string& stem) { return mote::testing::load_text_fixture(stem); }

// The differentiated inputs of each op, in argument order.
std::vector<std::string> differentiated_inputs(const std::string& op) {
  if (op == "layer_norm") return {"x", "weight", "bias"};
  if (op == "rms_norm") return {"x", "weight"};
  if (op == "swiglu") return {"gate", "up"};
  if (op == "attention") return {"q", "k", "v"};
  if (op == "cross_entropy") return {"logits"};
  return {"x"};
}

template <class T>
Var<T> run_op(const Fixture& f, const std::vector<Var<T>>& in) {
  if (f.op == "layer_norm") return layer_norm(in[0], in[1], in[2], static_cast<T>(f.attr("eps")));
  if (f.op == "rms_norm") return rms_norm(in[0], in[1], static_cast<T>(f.attr("eps")));
  if (f.op == "gelu") return gelu(in[0]);
  if (f.op == "silu") return silu(in[0]);
  if (f.op == "swiglu") return swiglu(in[0], in[1]);
  if (f.op == "softmax") return softmax(in[0]);
  if (f.op == "log_softmax") return log_softmax(in[0]);
  if (f.op == "rope") return rope(in[0], f.tensor<std::int32_t>("positions"), f.attr("theta"));
  if (f.op == "attention") {
    const Tensor<std::uint8_t> mask = f.has("mask") ? f.tensor<std::uint8_t>("mask") : Tensor<std::uint8_t>();
    return scaled_dot_product_attention(in[0], in[1], in[2],
                                        {.causal = f.attr("causal") != 0,
                                         .mask = f.has("mask") ? &mask : nullptr,
                                         .scale = f.attr("scale")});
  }
  if (f.op == "cross_entropy") {
    const Tensor<T> loss_mask = f.has("loss_mask") ? f.tensor<T>("loss_mask") : Tensor<T>();
    return cross_entropy(in[0], f.tensor<std::int32_t>("targets"),
                         {.ignore_index = static_cast<std::int32_t>(f.attr("ignore_index")),
                          .loss_mask = f.has("loss_mask") ? &loss_mask : nullptr});
  }
  throw value_error("no runner for fixture op '" + f.op + "'");
}

template <class T>
void check_against_torch(const Fixture& f, double tolerance) {
  std::vector<Var<T>> inputs;
  const auto names = differentiated_inputs(f.op);
  for (const auto& name : names) inputs.emplace_back(f.tensor<T>(name), true);
  Var<T> out = run_op<T>(f, inputs);
  BOOST_TEST(out.shape() == f.entry("out").shape, "output shape " << out.shape().str() << " vs torch "
                                                                   << f.entry("out").shape.str());
  const double out_err = testing::relative_error(testing::as_double(out.value().to_vector()), f.entry("out").values);
  BOOST_TEST(out_err < tolerance, dtype_name<T>() << " output vs torch: relative error " << out_err);

  out.backward(f.tensor<T>("seed"));
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto& expected = f.entry("grad_" + names[i]);
    const double err = testing::relative_error(testing::as_double(inputs[i].grad().to_vector()), expected.values);
    BOOST_TEST(err < tolerance, dtype_name<T>() << " gradient of " << names[i] << " vs torch: relative error " << err);
  }
}

void check_fixture(const std::string& stem) {
  BOOST_TEST_CONTEXT("fixture " << stem) {
    const Fixture f = load_fixture(stem);
    check_against_torch<double>(f, 1e-10);
    check_against_torch<float>(f, 1e-5);
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_torch_reference)

BOOST_AUTO_TEST_CASE(layer_norm_vs_torch) { check_fixture("op_layer_norm"); }
BOOST_AUTO_TEST_CASE(rms_norm_vs_torch) { check_fixture("op_rms_norm"); }
BOOST_AUTO_TEST_CASE(gelu_vs_torch) { check_fixture("op_gelu"); }
BOOST_AUTO_TEST_CASE(silu_vs_torch) { check_fixture("op_silu"); }
BOOST_AUTO_TEST_CASE(swiglu_vs_torch) { check_fixture("op_swiglu"); }
BOOST_AUTO_TEST_CASE(softmax_vs_torch) { check_fixture("op_softmax"); }
BOOST_AUTO_TEST_CASE(log_softmax_vs_torch) { check_fixture("op_log_softmax"); }
BOOST_AUTO_TEST_CASE(rope_vs_torch) { check_fixture("op_rope"); }
BOOST_AUTO_TEST_CASE(rope_shared_positions_vs_torch) { check_fixture("op_rope_shared_positions"); }
BOOST_AUTO_TEST_CASE(attention_causal_gqa_vs_torch) { check_fixture("op_attention_causal_gqa"); }
BOOST_AUTO_TEST_CASE(attention_masked_vs_torch) { check_fixture("op_attention_masked"); }
BOOST_AUTO_TEST_CASE(attention_full_scaled_vs_torch) { check_fixture("op_attention_full_scaled"); }
BOOST_AUTO_TEST_CASE(cross_entropy_vs_torch) { check_fixture("op_cross_entropy"); }
BOOST_AUTO_TEST_CASE(cross_entropy_masked_vs_torch) { check_fixture("op_cross_entropy_masked"); }

BOOST_AUTO_TEST_SUITE_END()
