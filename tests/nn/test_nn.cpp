// The nn room: configs, Hugging Face parameter names, whole-model parity with PyTorch (fixtures
// written by tests/reference/make_model_fixtures.py), checkpoint loading errors, generation (KV cache
// against full recomputation, batching with left padding, seeded sampling, stop tokens), and growing
// the vocabulary for added special tokens (resize_vocab, check_vocab).
#include "op_harness.hpp"
#include "test_files.hpp"
#include "tiny_tokenizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/io/safetensors.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/nn/nn.hpp"

using namespace mote;
using mote::testing::expect_error;

namespace {

constexpr nn::Config gpt2c = presets::tiny_gpt2;
constexpr nn::Config llamac = presets::tiny_llama;

using ModelFixture = mote::testing::TextFixture;

ModelFixture load_model_fixture(const std::string& stem) { return mote::testing::load_text_fixture(stem); }

std::vector<double> as_double(const auto& tensor) {
  std::vector<double> out;
  for (auto v : tensor.to_vector()) out.push_back(static_cast<double>(v));
  return out;
}

template <nn::Config C>
void expect_config_matches(const ModelFixture& f) {
  BOOST_TEST(f.attrs.at("vocab") == C.vocab);
  BOOST_TEST(f.attrs.at("d") == C.d_model);
  BOOST_TEST(f.attrs.at("layers") == C.n_layers);
  BOOST_TEST(f.attrs.at("heads") == C.n_heads);
  BOOST_TEST(f.attrs.at("kv_heads") == C.n_kv_heads);
  BOOST_TEST(f.attrs.at("ff") == C.d_ff);
  BOOST_TEST(f.attrs.at("max_seq") == C.max_seq);
}

// Loads the fixture's weights, runs forward and backward, and compares logits, loss and every gradient.
template <nn::Config C, class T>
void check_parity(const std::string& stem, double tol, bool recompute = false) {
  const ModelFixture f = load_model_fixture(stem);
  expect_config_matches<C>(f);
  nn::CausalLM<C, T> model(1);
  model.set_recompute(recompute);
  model.load_state_dict(f.with_prefix<T>("param."));
  const auto ids = f.tensor<std::int32_t>("ids");
  const auto targets = f.tensor<std::int32_t>("targets");

  const auto logits = model.logits(ids);
  BOOST_TEST(mote::testing::relative_error(as_double(logits.value()), f.entry("logits").values) < tol);
  auto loss = model.loss(ids, targets);
  BOOST_TEST(std::abs(static_cast<double>(loss.item()) - f.entry("loss").values[0]) < tol * std::abs(f.entry("loss").values[0]));
  loss.backward();
  std::size_t checked = 0;
  model.for_each_parameter([&](const std::string& name, Var<T>& p) {
    BOOST_TEST_CONTEXT(stem << " gradient of " << name) {
      BOOST_REQUIRE(p.grad().defined());
      const double err = mote::testing::relative_error(as_double(p.grad()), f.entry("grad." + name).values);
      BOOST_TEST(err < tol);
    }
    ++checked;
  });
  std::size_t expected = 0;
  for (const auto& [name, e] : f.tensors) expected += name.rfind("grad.", 0) == 0;
  BOOST_TEST(checked == expected);
}

std::vector<std::string> names_of(auto& model) {
  std::vector<std::string> out;
  for (const auto& [name, p] : model.named_parameters()) out.push_back(name);
  return out;
}

// Scales every matrix by `factor` so a freshly initialized tiny model has peaked, varied predictions.
template <class Model>
Model& sharpen(Model& model, double factor = 5.0) {
  model.for_each_parameter([&](const std::string&, auto& p) {
    if (p.shape().rank() != 2) return;
    auto v = p.value().to_vector();
    for (auto& x : v) x *= factor;
    p.mutable_value().copy_from(std::remove_cvref_t<decltype(p.value())>::from_vector(p.shape(), v));
  });
  return model;
}


// Llama layout with a tied LM head, so resizing is checked for tied and untied models of both layouts.
constexpr nn::Config tied_llamac = [] {
  nn::Config c = presets::tiny_llama;
  c.tied_embeddings = true;
  return c;
}();

// The parameters with one row per token: the embedding, and the LM head when it is not tied.
template <nn::Config C>
std::vector<std::string> token_row_names() {
  std::vector<std::string> names{C.gpt2_layout() ? "wte.weight" : "model.embed_tokens.weight"};
  if (!C.tied_embeddings) names.push_back("lm_head.weight");
  return names;
}

// The mean of the rows of a [rows, width] tensor, in double.
std::vector<double> mean_row(const auto& weight) {
  const std::int64_t rows = weight.size(0), width = weight.size(1);
  const std::vector<double> v = as_double(weight);
  std::vector<double> mean(static_cast<std::size_t>(width), 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < width; ++c) mean[static_cast<std::size_t>(c)] += v[static_cast<std::size_t>(r * width + c)];
  for (double& m : mean) m /= static_cast<double>(rows);
  return mean;
}

// Rows [first, first + count) of a [rows, width] tensor, flattened, in double.
std::vector<double> rows_of(const auto& weight, std::int64_t first, std::int64_t count) {
  return as_double(weight.slice(0, first, count).contiguous());
}

double sum_of_squares(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return s;
}

// Resizes a tiny model by 3 tokens and checks every weight, then the logits: the old columns as before
// and each new column the mean of the old ones (the new rows are the old rows' mean, and the head is linear).
template <nn::Config C, class T>
void check_resize_keeps_the_model(double logits_tol) {
  constexpr std::int64_t old_vocab = C.vocab, new_vocab = C.vocab + 3;
  nn::CausalLM<C, T> model(61);
  sharpen(model);
  auto resized = nn::resize_vocab<new_vocab>(model);
  static_assert(std::is_same_v<decltype(resized), nn::CausalLM<nn::with_vocab(C, new_vocab), T>>);
  static_assert(decltype(resized)::config.vocab == new_vocab && decltype(resized)::config.d_model == C.d_model);

  const auto before = model.state_dict();
  const auto after = resized.state_dict();
  BOOST_REQUIRE(names_of(resized) == names_of(model));
  const std::vector<std::string> token_rows = token_row_names<C>();
  for (const auto& [name, old] : before) {
    BOOST_TEST_CONTEXT("parameter " << name) {
      const auto& grown = after.at(name);
      BOOST_TEST(!grown.shares_storage_with(old));
      if (std::find(token_rows.begin(), token_rows.end(), name) == token_rows.end()) {
        BOOST_TEST(grown.shape() == old.shape());
        BOOST_TEST(as_double(grown) == as_double(old), boost::test_tools::per_element());
        continue;
      }
      BOOST_REQUIRE(grown.shape() == (Shape{new_vocab, C.d_model}));
      BOOST_TEST(rows_of(grown, 0, old_vocab) == as_double(old), boost::test_tools::per_element());
      const std::vector<double> mean = mean_row(old);
      for (std::int64_t r = old_vocab; r < new_vocab; ++r)
        BOOST_TEST(mote::testing::relative_error(rows_of(grown, r, 1), mean) < 1e-6, "row " << r);
    }
  }

  const auto ids = Tensor<std::int32_t>::from_vector({2, 5}, {1, 5, 9, 2, 63, 3, 4, 8, 6, 10});
  const std::vector<double> old_logits = as_double(model.logits(ids).value());
  const std::vector<double> new_logits = as_double(resized.logits(ids).value());
  BOOST_REQUIRE(new_logits.size() == 10 * static_cast<std::size_t>(new_vocab));
  std::vector<double> old_columns, new_columns, mean_of_old, fresh_columns;
  for (std::size_t t = 0; t < 10; ++t) {
    const auto old_row = old_logits.begin() + static_cast<std::ptrdiff_t>(t * old_vocab);
    const auto new_row = new_logits.begin() + static_cast<std::ptrdiff_t>(t * new_vocab);
    old_columns.insert(old_columns.end(), old_row, old_row + old_vocab);
    new_columns.insert(new_columns.end(), new_row, new_row + old_vocab);
    const double mean = std::accumulate(old_row, old_row + old_vocab, 0.0) / static_cast<double>(old_vocab);
    for (std::int64_t v = old_vocab; v < new_vocab; ++v) {
      mean_of_old.push_back(mean);
      fresh_columns.push_back(new_row[v]);
    }
  }
  // A tolerance, not equality: the GEMM may block a 67-column product differently from a 64-column one.
  BOOST_TEST(mote::testing::relative_error(new_columns, old_columns) < logits_tol);
  BOOST_TEST(mote::testing::relative_error(fresh_columns, mean_of_old) < logits_tol);
}

// A loss that feeds a new token and predicts new tokens reaches the new rows, and only the resized model.
template <nn::Config C>
void check_new_rows_get_gradients() {
  constexpr std::int64_t old_vocab = C.vocab, new_vocab = C.vocab + 3;
  nn::CausalLM<C, float> model(71);
  auto resized = nn::resize_vocab<new_vocab>(model);
  const auto first_new = static_cast<std::int32_t>(old_vocab), second_new = first_new + 1;
  const auto ids = Tensor<std::int32_t>::from_vector({1, 4}, {1, first_new, 5, 7});
  const auto targets = Tensor<std::int32_t>::from_vector({1, 4}, {first_new, 5, second_new, -100});
  auto loss = resized.loss(ids, targets);
  loss.backward();
  const auto params = resized.named_parameters();
  const auto grad_of = [&](const std::string& name) {
    for (const auto& [n, p] : params)
      if (n == name) return p.grad();
    throw std::runtime_error("no parameter " + name);
  };
  const std::string embedding = token_row_names<C>().front();
  BOOST_TEST(sum_of_squares(rows_of(grad_of(embedding), first_new, 1)) > 0.0);
  if constexpr (!C.tied_embeddings) {
    BOOST_TEST(sum_of_squares(rows_of(grad_of("lm_head.weight"), first_new, 1)) > 0.0);
    BOOST_TEST(sum_of_squares(rows_of(grad_of("lm_head.weight"), second_new, 1)) > 0.0);
    // An untied embedding row is reached only through its id in the input.
    BOOST_TEST(sum_of_squares(rows_of(grad_of(embedding), second_new, 1)) == 0.0);
  }
  for (const auto& [name, p] : model.named_parameters()) BOOST_TEST(!p.grad().defined(), name << " of the source got a gradient");
}

// An adapter that adds nothing, to check that resize_vocab refuses models with adapters attached.
struct IdentityAdapter final : nn::LinearAdapter<double> {
  Var<double> apply(const Var<double>&, const Var<double>& base, const nn::AdapterContext*) const override { return base; }
  std::vector<Var<double>> parameters() const override { return {}; }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(test_nn)

BOOST_AUTO_TEST_CASE(presets_are_valid_structural_configs) {
  static_assert(nn::validate<presets::gpt2>::value && nn::validate<presets::gpt2_medium>::value);
  static_assert(nn::validate<presets::llama2_7b>::value && nn::validate<presets::llama3_8b>::value);
  static_assert(presets::gpt2.head_dim() == 64 && presets::gpt2.tied_embeddings && presets::gpt2.gpt2_layout());
  static_assert(presets::gpt2_medium.d_model == 1024 && presets::gpt2_medium.n_layers == 24 && presets::gpt2_medium.n_heads == 16);
  static_assert(presets::llama2_7b.d_ff == 11008 && !presets::llama2_7b.bias && !presets::llama2_7b.gpt2_layout());
  static_assert(presets::llama3_8b.kv_dim() == 1024 && presets::llama3_8b.rope_theta == 500000.0);
  static_assert(nn::CausalLM<presets::tiny_llama, float>::config.n_kv_heads == 2);
  BOOST_TEST(true);
}

BOOST_AUTO_TEST_CASE(gpt2_names_and_shapes_follow_hugging_face) {
  nn::CausalLM<gpt2c, double> model(7);
  const auto names = names_of(model);
  const std::vector<std::string> head{"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.c_attn.weight",
                                      "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight", "h.0.attn.c_proj.bias", "h.0.ln_2.weight",
                                      "h.0.ln_2.bias", "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias", "h.0.mlp.c_proj.weight",
                                      "h.0.mlp.c_proj.bias"};
  BOOST_REQUIRE(names.size() == 2 + 12 * 2 + 2);
  BOOST_TEST(std::vector<std::string>(names.begin(), names.begin() + 14) == head, boost::test_tools::per_element());
  BOOST_TEST(names[names.size() - 2] == "ln_f.weight");
  BOOST_TEST(names.back() == "ln_f.bias");
  const auto sd = model.state_dict();
  BOOST_TEST(sd.at("h.1.attn.c_attn.weight").shape() == (Shape{32, 96}));  // Conv1D [in, out]
  BOOST_TEST(sd.at("h.1.mlp.c_proj.weight").shape() == (Shape{128, 32}));
  BOOST_TEST(sd.at("wpe.weight").shape() == (Shape{16, 32}));
  BOOST_TEST(model.num_parameters() == 64 * 32 + 16 * 32 + 2 * (4 * 32 + 32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32) + 64);
}

BOOST_AUTO_TEST_CASE(llama_names_and_shapes_follow_hugging_face) {
  nn::CausalLM<llamac, double> model(7);
  const auto names = names_of(model);
  const std::vector<std::string> layer{"model.layers.1.input_layernorm.weight", "model.layers.1.self_attn.q_proj.weight",
                                       "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
                                       "model.layers.1.self_attn.o_proj.weight", "model.layers.1.post_attention_layernorm.weight",
                                       "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
                                       "model.layers.1.mlp.down_proj.weight"};
  BOOST_REQUIRE(names.size() == 1 + 9 * 2 + 2);
  BOOST_TEST(names.front() == "model.embed_tokens.weight");
  BOOST_TEST(std::vector<std::string>(names.begin() + 10, names.begin() + 19) == layer, boost::test_tools::per_element());
  BOOST_TEST(names[names.size() - 2] == "model.norm.weight");
  BOOST_TEST(names.back() == "lm_head.weight");
  const auto sd = model.state_dict();
  BOOST_TEST(sd.at("model.layers.0.self_attn.k_proj.weight").shape() == (Shape{16, 32}));  // [out, in], 2 kv heads of 8
  BOOST_TEST(sd.at("model.layers.0.mlp.down_proj.weight").shape() == (Shape{32, 64}));
}

BOOST_AUTO_TEST_CASE(gpt2_matches_pytorch_double) { check_parity<gpt2c, double>("model_tiny_gpt2", 1e-10); }
BOOST_AUTO_TEST_CASE(gpt2_matches_pytorch_float) { check_parity<gpt2c, float>("model_tiny_gpt2", 1e-5); }
BOOST_AUTO_TEST_CASE(llama_matches_pytorch_double) { check_parity<llamac, double>("model_tiny_llama", 1e-10); }
BOOST_AUTO_TEST_CASE(llama_matches_pytorch_float) { check_parity<llamac, float>("model_tiny_llama", 1e-5); }
// Activation recomputation reruns each block in backward; the gradients must not change.
BOOST_AUTO_TEST_CASE(recomputed_blocks_match_pytorch) {
  check_parity<gpt2c, double>("model_tiny_gpt2", 1e-10, true);
  check_parity<llamac, double>("model_tiny_llama", 1e-10, true);
  nn::CausalLM<llamac, double> model(3);
  model.set_recompute(true);
  Rng rng(4);
  const auto x = Var<double>::parameter(Tensor<double>::normal({1, 3, 32}, 0, 1, rng));
  const auto pos = Tensor<std::int32_t>::from_vector({3}, {0, 1, 2});
  const auto y = model.blocks()[0](x, {.positions = &pos});
  BOOST_TEST(std::string(y.op()) == "block_recompute");
  {
    no_grad off;
    BOOST_TEST(std::string(model.blocks()[0](x, {.positions = &pos}).op()) != "block_recompute");
  }
}

BOOST_AUTO_TEST_CASE(safetensors_checkpoints_load_by_name) {
  // The fixture's weights as a hand-written F64 safetensors file under Hugging Face names, read as float.
  const ModelFixture f = load_model_fixture("model_tiny_llama");
  const auto file = io::safetensors::File::open(std::string(MOTE_TEST_FIXTURES) + "/model_tiny_llama.safetensors");
  std::map<std::string, Tensor<float>> weights;
  for (const auto& name : file.names()) weights.emplace(name, file.tensor<float>(name));
  nn::CausalLM<llamac, float> model(2);
  model.load_state_dict(weights);
  const auto logits = model.logits(f.tensor<std::int32_t>("ids"));
  BOOST_TEST(mote::testing::relative_error(as_double(logits.value()), f.entry("logits").values) < 1e-5);
}

BOOST_AUTO_TEST_CASE(load_state_dict_checks_names_and_shapes) {
  const ModelFixture f = load_model_fixture("model_tiny_gpt2");
  nn::CausalLM<gpt2c, double> model(3);
  auto weights = f.with_prefix<double>("param.");

  // GPT2LMHeadModel's prefixed names and its tied lm_head.weight load too.
  std::map<std::string, Tensor<double>> prefixed;
  for (const auto& [name, t] : weights) prefixed.emplace("transformer." + name, t);
  prefixed.emplace("lm_head.weight", weights.at("wte.weight"));
  prefixed.emplace("transformer.h.0.attn.bias", Tensor<double>::zeros({1}));
  model.load_state_dict(prefixed);
  BOOST_TEST(as_double(model.state_dict().at("h.1.mlp.c_fc.bias")) == f.entry("param.h.1.mlp.c_fc.bias").values,
             boost::test_tools::per_element());

  auto missing = weights;
  missing.erase("h.1.ln_2.bias");
  expect_error<value_error>([&] { model.load_state_dict(missing); }, {"h.1.ln_2.bias", "no tensor"});
  auto wrong = weights;
  wrong.at("h.0.attn.c_attn.weight") = Tensor<double>::zeros({96, 32});
  expect_error<shape_error>([&] { model.load_state_dict(wrong); }, {"h.0.attn.c_attn.weight", "[96, 32]", "[32, 96]"});
  auto extra = weights;
  extra.emplace("h.0.attn.q_proj.weight", Tensor<double>::zeros({32, 32}));
  expect_error<value_error>([&] { model.load_state_dict(extra); }, {"unexpected", "h.0.attn.q_proj.weight"});
  model.load_state_dict(extra, {.strict = false});
}

BOOST_AUTO_TEST_CASE(forward_rejects_bad_input) {
  nn::CausalLM<llamac, double> model(3);
  expect_error<shape_error>([&] { model.logits(Tensor<std::int32_t>::zeros({4})); }, {"ids", "[batch, length]"});
  expect_error<value_error>([&] { model.logits(Tensor<std::int32_t>::zeros({1, 17})); }, {"17", "max_seq = 16"});
  expect_error<value_error>([&] { model.logits(Tensor<std::int32_t>::full({1, 3}, 64)); }, {"64"});
  const auto pos = Tensor<std::int32_t>::from_vector({3}, {0, 1, 16});
  expect_error<value_error>([&] { model.logits(Tensor<std::int32_t>::zeros({1, 3}), {.positions = &pos}); }, {"positions", "16"});
}

BOOST_AUTO_TEST_CASE(cached_logits_equal_full_logits) {
  nn::CausalLM<llamac, double> model(11);
  const auto ids = Tensor<std::int32_t>::from_vector({2, 6}, {1, 5, 9, 2, 7, 3, 4, 8, 6, 10, 12, 0});
  const auto full = model.logits(ids).value();
  auto cache = model.make_cache();
  no_grad off;
  const auto first = model.logits(ids.slice(1, 0, 4).contiguous(), {}, &cache).value();
  const auto rest = model.logits(ids.slice(1, 4, 2).contiguous(), {}, &cache).value();
  BOOST_TEST(cache.length() == 6);
  BOOST_TEST(mote::testing::relative_error(as_double(rest), as_double(full.slice(1, 4, 2).contiguous())) < 1e-12);
  BOOST_TEST(mote::testing::relative_error(as_double(first), as_double(full.slice(1, 0, 4).contiguous())) < 1e-12);
}

BOOST_AUTO_TEST_CASE(logits_to_keep_gives_the_last_positions) {
  nn::CausalLM<gpt2c, double> model(14);
  const auto ids = Tensor<std::int32_t>::from_vector({2, 5}, {1, 5, 9, 2, 7, 3, 4, 8, 6, 10});
  const auto full = model.logits(ids).value();
  const auto last_two = model.logits(ids, {.logits_to_keep = 2}).value();
  BOOST_TEST(last_two.shape() == (Shape{2, 2, gpt2c.vocab}));
  BOOST_TEST(mote::testing::relative_error(as_double(last_two), as_double(full.slice(1, 3, 2).contiguous())) < 1e-12);
  BOOST_TEST(model.logits(ids, {.logits_to_keep = 5}).value().to_vector() == full.to_vector(),
             boost::test_tools::per_element());
  expect_error<value_error>([&] { model.logits(ids, {.logits_to_keep = 6}); }, {"logits_to_keep = 6", "[0, 5]"});
  expect_error<value_error>([&] { model.logits(ids, {.logits_to_keep = -1}); }, {"logits_to_keep = -1"});
}

BOOST_AUTO_TEST_CASE(kv_cache_generation_equals_recomputation) {
  nn::CausalLM<gpt2c, double> gpt(21);
  nn::CausalLM<llamac, double> llama(22);
  sharpen(gpt);
  sharpen(llama);
  const std::vector<std::vector<std::int32_t>> prompts{{3, 14, 15, 9}, {2, 6}};
  for (bool padded : {false, true}) {
    const auto p = padded ? prompts : std::vector<std::vector<std::int32_t>>{prompts[0]};
    const auto a = nn::generate(gpt, p, {.max_new_tokens = 8, .use_cache = true});
    const auto b = nn::generate(gpt, p, {.max_new_tokens = 8, .use_cache = false});
    BOOST_TEST(a == b);
    BOOST_TEST(a[0].size() == 8u);
    const auto c = nn::generate(llama, p, {.max_new_tokens = 8, .use_cache = true});
    const auto d = nn::generate(llama, p, {.max_new_tokens = 8, .use_cache = false});
    BOOST_TEST(c == d);
    // Tokens after the prompt run inside a held spinning team unless told not to: same tokens.
    BOOST_TEST(nn::generate(gpt, p, {.max_new_tokens = 8, .spin_threads = false}) == a);
  }
}

// Cache buffers start at 64 rows and double up to max_seq: decoding one token at a time across
// both growths must give, at every step, the logits of a full recomputation.
constexpr nn::Config long_llama = [] {
  nn::Config c = presets::tiny_llama;
  c.max_seq = 160;
  return c;
}();

BOOST_AUTO_TEST_CASE(kv_cache_grows_in_place_and_matches_recomputation) {
  nn::CausalLM<long_llama, double> model(12);
  Rng rng(5);
  std::vector<std::int32_t> ids(150);
  for (auto& id : ids) id = static_cast<std::int32_t>(rng.below(long_llama.vocab));
  const auto all = Tensor<std::int32_t>::from_vector({1, 150}, ids);
  no_grad off;
  const auto full = model.logits(all).value();
  auto cache = model.make_cache();
  auto error_of_step = [&](std::int64_t from, std::int64_t len) {
    const auto got = model.logits(all.slice(1, from, len).contiguous(), {}, &cache).value();
    return mote::testing::relative_error(as_double(got), as_double(full.slice(1, from, len).contiguous()));
  };
  BOOST_TEST(error_of_step(0, 5) < 1e-12);
  std::vector<std::int64_t> wrong_steps;
  for (std::int64_t t = 5; t < 150; ++t)
    if (!(error_of_step(t, 1) < 1e-12)) wrong_steps.push_back(t);
  BOOST_TEST(wrong_steps.empty(), "steps whose logits differ from a full recomputation: "
                                      << wrong_steps.size() << ", the first at position "
                                      << (wrong_steps.empty() ? -1 : wrong_steps.front()));
  BOOST_TEST(cache.length() == 150);
  BOOST_TEST(cache.layers[1].batch() == 1);
  BOOST_TEST(cache.layers[1].keys().size(2) == 150);
  BOOST_TEST(cache.layers[1].keys().stride(1) == 160 * long_llama.head_dim());  // grown to max_seq rows

  // A cache told how many positions are coming takes them at its first allocation and never moves
  // (nn::generate reserves the prompt and the new tokens); past the reservation it grows as before.
  auto reserved = model.make_cache();
  reserved.reserve(100);
  cache = std::move(reserved);
  BOOST_TEST(error_of_step(0, 5) < 1e-12);
  const double* first_buffer = cache.layers[1].keys().data();
  BOOST_TEST(cache.layers[1].keys().stride(1) == 100 * long_llama.head_dim());
  bool moved = false;
  for (std::int64_t t = 5; t < 100; ++t) {
    BOOST_TEST(error_of_step(t, 1) < 1e-12);
    moved = moved || cache.layers[1].keys().data() != first_buffer;
  }
  BOOST_TEST(!moved);
  BOOST_TEST(error_of_step(100, 1) < 1e-12);
  BOOST_TEST(cache.layers[1].keys().stride(1) == 160 * long_llama.head_dim());
}

// Cached one-token steps with nothing to record take nn/decode.hpp's graph-free path. It calls the
// layer-by-layer forward's kernels with the same arguments, so the two agree bit for bit: here for
// both layouts in float, on a batch with a left-padded row (its mask and per-row positions), across
// the cache's growth. The per-thread scratch shows which path a step took.
constexpr nn::Config long_gpt2 = [] {
  nn::Config c = presets::tiny_gpt2;
  c.max_seq = 96;
  return c;
}();

// Adds nothing: attached to a projection, it sends every step down the layer-by-layer path.
struct AddsNothing : nn::LinearAdapter<float> {
  autograd::Var<float> apply(const autograd::Var<float>&, const autograd::Var<float>& base,
                             const nn::AdapterContext*) const override {
    return base;
  }
  std::vector<autograd::Var<float>> parameters() const override { return {}; }
};

template <nn::Config C>
void check_graph_free_steps(std::uint64_t seed, nn::kv_precision precision = nn::kv_precision::full) {
  nn::CausalLM<C, float> model(seed);
  Rng rng(seed);
  // Biases start at 0 and norm weights at 1: move every parameter so that each one counts.
  model.for_each_parameter([&](const std::string&, auto& p) {
    auto v = p.value().to_vector();
    for (auto& x : v) x += static_cast<float>(rng.normal(0, 0.1));
    p.mutable_value().copy_from(Tensor<float>::from_vector(p.shape(), v));
  });
  auto& scratch = nn::decode_detail::Scratch<float, cpu>::for_this_thread();
  const std::int64_t batch = 3, prompt = 4, steps = 80, pad = 2;  // row 2 starts after `pad` pad tokens
  auto mask_for = [&](std::int64_t len, std::int64_t keys) {
    std::vector<std::uint8_t> m;
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t q = 0; q < len; ++q)
        for (std::int64_t k = 0; k < keys; ++k) m.push_back(b != 2 || k >= pad);
    return Tensor<std::uint8_t>::from_vector({batch, len, keys}, m);
  };
  auto position = [&](std::int64_t b, std::int64_t t) { return static_cast<std::int32_t>(b == 2 ? std::max<std::int64_t>(0, t - pad) : t); };
  auto token = [&] { return static_cast<std::int32_t>(rng.below(C.vocab)); };
  std::vector<std::int32_t> ids, pos;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < prompt; ++t) {
      ids.push_back(token());
      pos.push_back(position(b, t));
    }
  auto graph_free = model.make_cache(), layered = model.make_cache();
  graph_free.store_as(precision);
  layered.store_as(precision);
  no_grad off;
  {
    const auto first_ids = Tensor<std::int32_t>::from_vector({batch, prompt}, ids);
    const auto first_pos = Tensor<std::int32_t>::from_vector({batch, prompt}, pos);
    const auto first_mask = mask_for(prompt, prompt);
    (void)model.logits(first_ids, {.positions = &first_pos, .mask = &first_mask}, &graph_free);
    (void)model.logits(first_ids, {.positions = &first_pos, .mask = &first_mask}, &layered);
  }
  std::vector<std::int64_t> differing, layered_steps;
  for (std::int64_t t = prompt; t < prompt + steps; ++t) {
    std::vector<std::int32_t> step_ids, step_pos;
    for (std::int64_t b = 0; b < batch; ++b) {
      step_ids.push_back(token());
      step_pos.push_back(position(b, t));
    }
    const auto id_t = Tensor<std::int32_t>::from_vector({batch, 1}, step_ids);
    const auto pos_t = Tensor<std::int32_t>::from_vector({batch, 1}, step_pos);
    const auto mask_t = mask_for(1, t + 1);
    scratch = {};
    const auto fast = model.logits(id_t, {.positions = &pos_t, .mask = &mask_t}, &graph_free).value();
    if (!scratch.x.defined()) layered_steps.push_back(t);
    const auto slow = model.logits(id_t, {.positions = &pos_t, .mask = &mask_t, .graph_free_decode = false}, &layered).value();
    if (fast.to_vector() != slow.to_vector()) differing.push_back(t);
  }
  BOOST_TEST(layered_steps.empty(), layered_steps.size() << " steps did not take the graph-free path");
  BOOST_TEST(differing.empty(), differing.size() << " steps differ, the first at position "
                                                 << (differing.empty() ? -1 : differing.front()));
  BOOST_TEST(graph_free.layers[0].keys().to_vector() == layered.layers[0].keys().to_vector());
  // 84 rows: the buffers grew once, from 64 rows to 128 or to max_seq.
  const std::int64_t grown = std::min<std::int64_t>(C.max_seq, 128) * C.head_dim();
  if (precision == nn::kv_precision::full) BOOST_TEST(graph_free.layers[0].keys().stride(1) == grown);
  else BOOST_TEST(graph_free.layers[0].compact_stride() == grown);

  // Shared positions [1] and no mask: one sequence.
  auto single = model.make_cache(), single_layered = model.make_cache();
  single.store_as(precision);
  single_layered.store_as(precision);
  for (std::int32_t t = 0; t < 3; ++t) {
    const auto id_t = Tensor<std::int32_t>::from_vector({1, 1}, {token()});
    const auto pos_t = Tensor<std::int32_t>::from_vector({1}, {t});
    const auto fast = model.logits(id_t, {.positions = &pos_t}, &single).value();
    const auto slow = model.logits(id_t, {.positions = &pos_t, .graph_free_decode = false}, &single_layered).value();
    BOOST_TEST(fast.to_vector() == slow.to_vector());
  }
}

BOOST_AUTO_TEST_CASE(graph_free_decode_steps_equal_layer_by_layer_steps) {
  check_graph_free_steps<long_gpt2>(31);
  check_graph_free_steps<long_llama>(32);
}

// Over a bf16 cache both paths attend over the same rounded keys and values (the graph-free step
// reads the bf16 bits, the layered one their float copies): the same logits bit for bit again.
BOOST_AUTO_TEST_CASE(graph_free_decode_over_a_bf16_cache_equals_layer_by_layer_steps) {
  check_graph_free_steps<long_gpt2>(35, nn::kv_precision::bf16);
  check_graph_free_steps<long_llama>(36, nn::kv_precision::bf16);
}

// A bf16 cache stores each key and value rounded to nearest (ties to even) and decodes close to a
// full cache; it is chosen before the first step, for float models, and records no graph.
BOOST_AUTO_TEST_CASE(bf16_kv_cache_rounds_keys_and_values_and_decodes_close_to_full) {
  nn::CausalLM<long_llama, float> model(37);
  Rng rng(37);
  std::vector<std::int32_t> ids;
  for (int t = 0; t < 2 * 9; ++t) ids.push_back(static_cast<std::int32_t>(rng.below(long_llama.vocab)));
  const auto prompt = Tensor<std::int32_t>::from_vector({2, 9}, ids);
  auto full = model.make_cache(), compact = model.make_cache();
  compact.store_as(nn::kv_precision::bf16);
  // With gradients on, the parameters' keys would record a graph: refused.
  expect_error<value_error>([&] { (void)model.logits(prompt, {}, &compact); }, {"bf16 KV cache cannot record a graph"});
  compact.clear();
  no_grad off;
  (void)model.logits(prompt, {}, &full);
  (void)model.logits(prompt, {}, &compact);
  // The first layer's keys and values come before any attention, so the two caches' differ only by
  // the rounding (later layers see attention over rounded values).
  auto want_k = full.layers[0].keys().contiguous().to_vector(), want_v = full.layers[0].values().contiguous().to_vector();
  for (auto& x : want_k) x = backend::bf16_detail::round_to_bf16(x);
  for (auto& x : want_v) x = backend::bf16_detail::round_to_bf16(x);
  BOOST_TEST(compact.layers[0].keys().to_vector() == want_k);
  BOOST_TEST(compact.layers[0].values().to_vector() == want_v);
  BOOST_TEST(compact.layers[0].keys().shape() == full.layers[0].keys().shape());
  BOOST_TEST(compact.layers[0].keys().to_vector() != full.layers[0].keys().contiguous().to_vector());
  BOOST_TEST((compact.layers[0].precision() == nn::kv_precision::bf16));
  // Decoding steps: logits within bf16's rounding of the full cache's, and not all equal to them.
  double worst = 0, largest = 0;
  for (std::int32_t t = 9; t < 20; ++t) {
    const auto step = Tensor<std::int32_t>::from_vector({2, 1}, {t, t + 1});
    const auto a = model.logits(step, {}, &full).value().to_vector(), b = model.logits(step, {}, &compact).value().to_vector();
    for (std::size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, double(std::abs(a[i] - b[i])));
      largest = std::max(largest, double(std::abs(a[i])));
    }
  }
  BOOST_TEST(worst > 0.0);
  BOOST_TEST(worst < 0.02 * largest, "bf16 cache logits off by " << worst << " of " << largest);
  // Cleared, it stays bf16; a cache already in use keeps its precision.
  compact.clear();
  BOOST_TEST((compact.layers[0].precision() == nn::kv_precision::bf16));
  expect_error<value_error>([&] { full.store_as(nn::kv_precision::bf16); }, {"store_as(bf16)", "holds 20 positions", "empty cache"});
  // Only float models; no graph through its keys.
  nn::CausalLM<long_llama, double> wide(37);
  auto wide_cache = wide.make_cache();
  expect_error<value_error>([&] { wide_cache.store_as(nn::kv_precision::bf16); }, {"bf16 KV cache", "float64"});
  expect_error<value_error>([&] { (void)nn::generate(wide, std::vector<std::int32_t>{1, 2}, {.kv_cache = nn::kv_precision::bf16}); },
                            {"bf16 KV cache", "float64"});
  // Greedy generation through it: batched equals one by one, as with a full cache.
  const std::vector<std::vector<std::int32_t>> prompts{{5, 9, 2, 7}, {3, 1}};
  const nn::GenerateOptions greedy{.max_new_tokens = 12, .kv_cache = nn::kv_precision::bf16};
  const auto batched = nn::generate(model, prompts, greedy);
  for (std::size_t b = 0; b < prompts.size(); ++b) BOOST_TEST(batched[b] == nn::generate(model, prompts[b], greedy));
}

// Prompt caching: a generation keeps each sequence's keys and values with the tokens they came from
// (PrefixReuse::kept), and a later prompt starting with some of those tokens runs only the rest:
// the same logits as running it whole, whichever sequences of the batch have a prefix.
template <nn::Config C, class T>
void check_prefix_reuse(std::uint64_t seed, nn::kv_precision precision, double tolerance) {
  no_grad off;
  nn::CausalLM<C, T> model(seed);
  sharpen(model);
  const std::vector<std::vector<std::int32_t>> first{{3, 14, 15, 9, 26, 5}, {35, 8, 9}};
  nn::PrefixReuse<T, cpu> earlier;
  const auto generated = nn::generate(model, first, {.max_new_tokens = 7, .kv_cache = precision}, &earlier);
  BOOST_REQUIRE(earlier.kept.size() == 2);
  for (std::size_t b = 0; b < 2; ++b) {
    // The prompt and every new token but the last, which was never fed back.
    std::vector<std::int32_t> fed = first[b];
    fed.insert(fed.end(), generated[b].begin(), generated[b].end() - 1);
    BOOST_TEST(earlier.kept[b]->tokens == fed);
    BOOST_TEST(earlier.kept[b]->cache.length() == static_cast<std::int64_t>(fed.size()));
    BOOST_TEST((earlier.kept[b]->cache.layers[0].precision() == precision));
    BOOST_TEST(earlier.reused[b] == 0);
    // Its keys are those a fresh pass over the same tokens writes.
    auto fresh = model.make_cache();
    fresh.store_as(precision);
    (void)model.logits(Tensor<std::int32_t>::from_vector({1, static_cast<std::int64_t>(fed.size())}, fed), {}, &fresh);
    for (std::size_t l = 0; l < fresh.layers.size(); ++l) {
      BOOST_TEST(mote::testing::relative_error(as_double(earlier.kept[b]->cache.layers[l].keys().contiguous()),
                                               as_double(fresh.layers[l].keys().contiguous())) < tolerance);
      BOOST_TEST(mote::testing::relative_error(as_double(earlier.kept[b]->cache.layers[l].values().contiguous()),
                                               as_double(fresh.layers[l].values().contiguous())) < tolerance);
    }
  }
  // Later prompts: part of the first sequence's, one unrelated, and the second's whole history and more.
  const auto& a = earlier.kept[0]->tokens;
  const auto& c = earlier.kept[1]->tokens;
  std::vector<std::int32_t> shares_four(a.begin(), a.begin() + 4), extends(c.begin(), c.end());
  shares_four.insert(shares_four.end(), {40, 41, 42});
  extends.insert(extends.end(), {7, 11});
  const std::vector<std::int32_t> unrelated{60, 2, 33, 4, 21};
  // Logits of every step, with and without the prefixes.
  const auto run = [&](const std::vector<std::vector<std::int32_t>>& prompts, nn::PrefixReuse<T, cpu>* reuse,
                       std::int64_t pass_rows = 1000) {
    std::vector<std::vector<double>> seen;
    nn::GenerateOptions options{.max_new_tokens = 5, .kv_cache = precision, .prefill_pass_rows = pass_rows};
    options.shape_logits = [&](std::size_t, std::span<double> row) { seen.emplace_back(row.begin(), row.end()); };
    const auto tokens = nn::generate(model, prompts, options, reuse);
    return std::make_pair(tokens, seen);
  };
  const auto worst = [](const std::vector<std::vector<double>>& x, const std::vector<std::vector<double>>& y) {
    double error = 0;
    for (std::size_t i = 0; i < x.size(); ++i) error = std::max(error, mote::testing::relative_error(x[i], y[i]));
    return error;
  };
  const std::vector<std::vector<std::int32_t>> later{shares_four, unrelated, extends};
  const auto whole = run(later, nullptr);
  nn::PrefixReuse<T, cpu> reuse{.from = {earlier.kept[0], nullptr, earlier.kept[1]}, .kept = {}, .reused = {}};
  const auto cached = run(later, &reuse);
  BOOST_TEST(cached.first == whole.first);
  BOOST_TEST(worst(cached.second, whole.second) < tolerance);
  // The unrelated prompt has nothing to reuse, so the batch runs all of its tokens' positions; the
  // others, left-padded to the longest, skip what lies before them.
  const auto longest = static_cast<std::int64_t>(extends.size());
  const std::int64_t start = longest - static_cast<std::int64_t>(unrelated.size());
  BOOST_TEST(reuse.reused == (std::vector<std::int64_t>{std::max<std::int64_t>(0, start - (longest - 7)), 0, start}));
  // Without the unrelated prompt both skip their whole shared beginnings, up to the batch's start.
  const std::vector<std::vector<std::int32_t>> two{shares_four, extends};
  nn::PrefixReuse<T, cpu> both{.from = {earlier.kept[0], earlier.kept[1]}, .kept = {}, .reused = {}};
  const auto two_cached = run(two, &both), two_whole = run(two, nullptr);
  BOOST_TEST(two_cached.first == two_whole.first);
  BOOST_TEST(worst(two_cached.second, two_whole.second) < tolerance);
  const std::int64_t two_start = std::min<std::int64_t>((longest - 7) + 4, static_cast<std::int64_t>(c.size()));
  BOOST_TEST(both.reused == (std::vector<std::int64_t>{two_start - (longest - 7), two_start}));
  // A pass per start: each prompt skips its whole shared beginning, for the same tokens and logits.
  nn::PrefixReuse<T, cpu> split{.from = {earlier.kept[0], nullptr, earlier.kept[1]}, .kept = {}, .reused = {}};
  const auto split_cached = run(later, &split, 0);
  BOOST_TEST(split_cached.first == whole.first);
  BOOST_TEST(worst(split_cached.second, whole.second) < tolerance);
  BOOST_TEST(split.reused == (std::vector<std::int64_t>{4, 0, static_cast<std::int64_t>(c.size())}));
  // What the split batch kept serves a later prompt as the one-pass batch's does.
  for (std::size_t b = 0; b < later.size(); ++b) {
    BOOST_TEST(split.kept[b]->tokens == reuse.kept[b]->tokens);
    for (std::size_t l = 0; l < split.kept[b]->cache.layers.size(); ++l)
      BOOST_TEST(mote::testing::relative_error(as_double(split.kept[b]->cache.layers[l].keys().contiguous()),
                                               as_double(reuse.kept[b]->cache.layers[l].keys().contiguous())) < tolerance);
  }
  // Alone, a prompt that is all prefix still runs its last token.
  nn::PrefixReuse<T, cpu> alone{.from = {earlier.kept[1]}, .kept = {}, .reused = {}};
  const auto one = run({c}, &alone);
  BOOST_TEST(alone.reused == (std::vector<std::int64_t>{static_cast<std::int64_t>(c.size()) - 1}));
  BOOST_TEST(one.first == run({c}, nullptr).first);
}

BOOST_AUTO_TEST_CASE(prompts_that_share_a_prefix_reuse_its_keys_and_values) {
  check_prefix_reuse<long_llama, double>(41, nn::kv_precision::full, 1e-10);
  check_prefix_reuse<long_gpt2, double>(42, nn::kv_precision::full, 1e-10);
  check_prefix_reuse<long_llama, float>(43, nn::kv_precision::bf16, 2e-2);
  // Refused: a prefix per prompt or none; kept by a cache of the same precision; a cache to keep.
  nn::CausalLM<long_llama, float> model(44);
  nn::PrefixReuse<float, cpu> kept;
  (void)nn::generate(model, std::vector<std::vector<std::int32_t>>{{1, 2, 3}}, {.max_new_tokens = 2}, &kept);
  nn::PrefixReuse<float, cpu> two_for_one{.from = {kept.kept[0], kept.kept[0]}, .kept = {}, .reused = {}};
  expect_error<value_error>([&] { (void)nn::generate(model, std::vector<std::vector<std::int32_t>>{{1, 2, 5}}, {}, &two_for_one); },
                            {"PrefixReuse::from has 2 prefixes for 1 prompts"});
  nn::PrefixReuse<float, cpu> other_precision{.from = {kept.kept[0]}, .kept = {}, .reused = {}};
  expect_error<value_error>(
      [&] { (void)nn::generate(model, std::vector<std::vector<std::int32_t>>{{1, 2, 5}}, {.kv_cache = nn::kv_precision::bf16}, &other_precision); },
      {"PrefixReuse::from[0]", "kept by a full cache", "this generation's is bf16"});
  expect_error<value_error>([&] { (void)nn::generate(model, std::vector<std::vector<std::int32_t>>{{1, 2, 5}}, {.use_cache = false}, &kept); },
                            {"use_cache = false"});
}

// What the graph-free step does not take goes layer by layer: a graph to record, an attached
// adapter, more than one new token; bad input gets the layer-by-layer path's errors.
BOOST_AUTO_TEST_CASE(graph_free_decode_leaves_other_steps_to_the_layered_path) {
  nn::CausalLM<gpt2c, float> model(33);
  auto& scratch = nn::decode_detail::Scratch<float, cpu>::for_this_thread();
  auto cache = model.make_cache();
  const auto one = Tensor<std::int32_t>::from_vector({1, 1}, {5});
  const auto two = Tensor<std::int32_t>::from_vector({1, 2}, {5, 6});
  scratch = {};
  const auto recorded = model.logits(one, {}, &cache);  // grad on, parameters train: recorded
  BOOST_TEST(recorded.requires_grad());
  no_grad off;
  (void)model.logits(two, {}, &cache);
  BOOST_TEST(!scratch.x.defined());
  expect_error<value_error>([&] { model.logits(Tensor<std::int32_t>::from_vector({1, 1}, {64}), {}, &cache); }, {"64"});
  const auto bad_mask = Tensor<std::uint8_t>::full({1, 1, 3}, 1);
  expect_error<shape_error>([&] { model.logits(one, {.mask = &bad_mask}, &cache); }, {"mask", "[1, 1, 4]"});
  BOOST_TEST(!scratch.x.defined());
  const auto plain = model.logits(one, {}, &cache).value();
  BOOST_TEST(scratch.x.defined());

  nn::CausalLM<gpt2c, float> adapted(33);
  adapted.for_each_linear([](const std::string& name, auto& linear) {
    if (name == "h.1.mlp.c_fc") linear.adapter = std::make_shared<AddsNothing>();
  });
  auto adapted_cache = adapted.make_cache();
  (void)adapted.logits(one, {}, &adapted_cache);
  (void)adapted.logits(two, {}, &adapted_cache);
  scratch = {};
  const auto layered = adapted.logits(one, {}, &adapted_cache).value();
  BOOST_TEST(!scratch.x.defined());
  BOOST_TEST(layered.to_vector() == plain.to_vector());  // the same model, so the same logits
}

// A tag that meets the Backend contract and states nothing more: backend_traits supplies the defaults.
struct states_nothing {
  static constexpr const char* name = "states_nothing";
  static constexpr bool host_accessible = true;
  template <class T>
  static T* allocate(std::size_t n);
  template <class T>
  static void deallocate(T* p, std::size_t n);
  template <class T>
  static void copy_to_host(const T* src, T* dst, std::size_t n);
  template <class T>
  static void copy_from_host(const T* src, T* dst, std::size_t n);
  template <class T>
  static void copy(const T* src, T* dst, std::size_t n);
  template <class T>
  static void fill(T* p, std::size_t n, T value);
  static void synchronize();
};
static_assert(Backend<states_nothing>);
static_assert(backend_traits<states_nothing>::host_access);
static_assert(backend_traits<states_nothing>::decode_path == DecodePath::layered);
static_assert(!backend_traits<states_nothing>::host_decode_adapters);
static_assert(std::is_same_v<backend_traits<states_nothing>::stream_type, no_stream>);
static_assert(backend_traits<cpu>::decode_path == DecodePath::graph_free && backend_traits<cpu>::host_decode_adapters);
static_assert(std::is_same_v<backend_traits<cpu>::stream_type, no_stream>);

// The CPU with the layer-by-layer decode path stated instead; its kernels are the CPU's.
struct cpu_layered : cpu {
  static constexpr DecodePath decode_path = DecodePath::layered;
};

// Model code asks the traits, not the type: on a tag that states `layered` a cached one-token step
// runs layer by layer, with the same logits and tokens as the CPU's graph-free step.
BOOST_AUTO_TEST_CASE(backend_traits_choose_the_decode_path) {
  int loops = 0;
  const float weight = 1.0f;
  backend_traits<states_nothing>::run_decode_loop({.rows = 3}, [&] { ++loops; });
  // Up to 8 rows the CPU's loop packs nothing; above, the weights it was told of are packable.
  backend_traits<cpu>::run_decode_loop({.rows = 3, .constants = {&weight}}, [&] {
    loops += backend::WeightPanels::active() == nullptr;
  });
  backend_traits<cpu>::run_decode_loop({.rows = 30, .constants = {&weight}}, [&] {
    loops += backend::WeightPanels::active() != nullptr && backend::WeightPanels::active()->is_constant(&weight);
  });
  BOOST_TEST(loops == 3);
  BOOST_TEST(backend::WeightPanels::active() == nullptr);

  const nn::CausalLM<gpt2c, float> model(34);
  const nn::CausalLM<gpt2c, float, cpu_layered> stated(34);  // the same seed draws the same weights
  auto& scratch = nn::decode_detail::Scratch<float, cpu>::for_this_thread();
  auto& stated_scratch = nn::decode_detail::Scratch<float, cpu_layered>::for_this_thread();
  scratch = {};
  stated_scratch = {};
  auto cache = model.make_cache();
  auto stated_cache = stated.make_cache();
  no_grad off;
  const std::vector<std::int32_t> prompt = {3, 9, 4}, next = {7};
  (void)model.logits(Tensor<std::int32_t>::from_vector({1, 3}, prompt), {}, &cache);
  (void)stated.logits(Tensor<std::int32_t, cpu_layered>::from_vector({1, 3}, prompt), {}, &stated_cache);
  const auto fast = model.logits(Tensor<std::int32_t>::from_vector({1, 1}, next), {}, &cache).value().to_vector();
  const auto slow =
      stated.logits(Tensor<std::int32_t, cpu_layered>::from_vector({1, 1}, next), {}, &stated_cache).value().to_vector();
  BOOST_TEST(scratch.x.defined());
  BOOST_TEST(!stated_scratch.x.defined());
  BOOST_TEST(fast == slow);  // the graph-free step is the layered forward bit for bit
  const std::vector<std::vector<std::int32_t>> prompts = {{1, 2, 3}, {4, 5}};
  BOOST_TEST(nn::generate(stated, prompts, {.max_new_tokens = 5}) == nn::generate(model, prompts, {.max_new_tokens = 5}));
  BOOST_TEST(!stated_scratch.x.defined());
}

// A step that records a graph joins the cache by concatenation, so the gradient of later logits
// reaches the earlier tokens through their cached keys and values, as in one full pass; in-place
// steps may follow it and precede it.
BOOST_AUTO_TEST_CASE(kv_cache_steps_that_record_a_graph_pass_gradients_to_cached_keys) {
  nn::CausalLM<gpt2c, double> whole(13), stepped(13);
  const auto ids = Tensor<std::int32_t>::from_vector({1, 12}, {4, 9, 1, 33, 17, 8, 60, 2, 5, 41, 7, 22});
  Rng rng(6);
  const auto seed = Tensor<double>::normal({1, 4, gpt2c.vocab}, 0, 1, rng);
  const auto full = whole.logits(ids.slice(1, 0, 10).contiguous());
  autograd::slice(full, 1, 6, 4).backward(seed);
  auto cache = stepped.make_cache();
  (void)stepped.logits(ids.slice(1, 0, 6).contiguous(), {}, &cache);
  auto later = stepped.logits(ids.slice(1, 6, 4).contiguous(), {}, &cache);
  const auto full_later = autograd::slice(full, 1, 6, 4).value();
  BOOST_TEST(mote::testing::relative_error(as_double(later.value()), as_double(full_later)) < 1e-12);
  later.backward(seed);
  const auto whole_params = whole.named_parameters(), stepped_params = stepped.named_parameters();
  for (std::size_t i = 0; i < whole_params.size(); ++i) {
    const auto& [name, p] = whole_params[i];
    BOOST_TEST_CONTEXT(name) {
      BOOST_REQUIRE(stepped_params[i].second.grad().defined());
      BOOST_TEST(mote::testing::relative_error(as_double(stepped_params[i].second.grad()), as_double(p.grad())) < 1e-10);
    }
  }
  const auto reference = whole.logits(ids).value();
  {
    no_grad off;  // in place after a recorded step: the buffers start from the joined keys
    const auto next = stepped.logits(ids.slice(1, 10, 1).contiguous(), {}, &cache).value();
    BOOST_TEST(mote::testing::relative_error(as_double(next), as_double(reference.slice(1, 10, 1).contiguous())) < 1e-12);
  }
  const auto recorded = stepped.logits(ids.slice(1, 11, 1).contiguous(), {}, &cache);  // recorded after in place
  BOOST_TEST(recorded.requires_grad());
  const auto reference_last = reference.slice(1, 11, 1).contiguous();
  BOOST_TEST(mote::testing::relative_error(as_double(recorded.value()), as_double(reference_last)) < 1e-12);
  BOOST_TEST(cache.length() == 12);
}

BOOST_AUTO_TEST_CASE(batched_prompts_equal_single_prompts) {
  nn::CausalLM<llamac, double> llama(23);
  nn::CausalLM<gpt2c, double> gpt(24);
  sharpen(llama);
  sharpen(gpt);
  const std::vector<std::int32_t> a{3, 14, 15, 9, 26}, b{5, 35};
  const auto batched = nn::generate(llama, {a, b}, {.max_new_tokens = 6});
  BOOST_TEST(batched[0] == nn::generate(llama, a, {.max_new_tokens = 6}));
  BOOST_TEST(batched[1] == nn::generate(llama, b, {.max_new_tokens = 6}));
  const auto batched_gpt = nn::generate(gpt, {a, b}, {.max_new_tokens = 6});
  BOOST_TEST(batched_gpt[1] == nn::generate(gpt, b, {.max_new_tokens = 6}));
}

// Prompts of very different lengths, run as one pass over the left-padded batch or as a pass per
// length that skips each one's padding: the same tokens as each prompt alone.
BOOST_AUTO_TEST_CASE(prompt_passes_skip_left_padding) {
  nn::CausalLM<llamac, double> llama(25);
  nn::CausalLM<gpt2c, double> gpt(26);
  sharpen(llama);
  sharpen(gpt);
  const std::vector<std::vector<std::int32_t>> prompts{{5, 35}, {3, 14, 15, 9, 26, 5, 35, 8, 9}, {2, 7, 18, 28, 18}, {4}};  // 9 + 6 <= max_seq
  for (const std::int64_t pass_rows : {std::int64_t{0}, std::int64_t{16}, std::int64_t{1000}})
    BOOST_TEST_CONTEXT("prefill_pass_rows " << pass_rows) {
      const auto batched = nn::generate(llama, prompts, {.max_new_tokens = 6, .prefill_pass_rows = pass_rows});
      const auto batched_gpt = nn::generate(gpt, prompts, {.max_new_tokens = 6, .prefill_pass_rows = pass_rows});
      for (std::size_t b = 0; b < prompts.size(); ++b) {
        BOOST_TEST(batched[b] == nn::generate(llama, prompts[b], {.max_new_tokens = 6}));
        BOOST_TEST(batched_gpt[b] == nn::generate(gpt, prompts[b], {.max_new_tokens = 6}));
      }
    }
  // The split that runs the fewest rows, a pass costing `pass_rows`: starts 10, 0, 7, 11 to 12.
  const std::vector<std::int64_t> starts{10, 0, 7, 11};
  const auto shape = [](const std::vector<nn::generate_detail::PromptPass>& passes) {
    std::vector<std::pair<std::int64_t, std::vector<std::size_t>>> out;
    for (const auto& p : passes) out.emplace_back(p.start, p.sequences);
    return out;
  };
  using Passes = std::vector<std::pair<std::int64_t, std::vector<std::size_t>>>;
  BOOST_TEST((shape(nn::generate_detail::prompt_passes(starts, 12, 1000)) == Passes{{0, {1, 2, 0, 3}}}));
  // Rows 12 + 5 + ... : {1} alone saves 3 x 12 - 3 x 5 = 21 rows, more than a pass's 16.
  BOOST_TEST((shape(nn::generate_detail::prompt_passes(starts, 12, 16)) == Passes{{0, {1}}, {7, {2, 0, 3}}}));
  BOOST_TEST((shape(nn::generate_detail::prompt_passes(starts, 12, 0)) == Passes{{0, {1}}, {7, {2}}, {10, {0}}, {11, {3}}}));
}

// Sequences that end after 1, 2, 4, 6 and 8 tokens: the finished ones leave the batch (a quarter of
// its rows at a time), every sequence gets the tokens and logits it gets alone, and what each kept
// holds the keys and values of its tokens.
BOOST_AUTO_TEST_CASE(finished_sequences_leave_the_batch) {
  no_grad off;
  nn::CausalLM<llamac, double> model(27);
  sharpen(model);
  const std::vector<std::vector<std::int32_t>> prompts{{5, 35, 8}, {3, 14, 15, 9, 26}, {2, 7}, {4, 40, 1, 9}, {11, 6, 30, 21, 8, 3}};
  const std::vector<std::size_t> ends{1, 2, 4, 6, 100};
  const auto run = [&](const std::vector<std::size_t>& which, std::vector<std::size_t>* step_rows) {
    std::vector<std::vector<std::int32_t>> these;
    for (const std::size_t i : which) these.push_back(prompts[i]);
    std::vector<std::vector<std::vector<double>>> seen(which.size());
    nn::GenerateOptions options{.max_new_tokens = 8};
    options.stop_when = [&](std::size_t b, const std::vector<std::int32_t>& generated) { return generated.size() == ends[which[b]]; };
    options.shape_logits = [&](std::size_t b, std::span<double> row) { seen[b].emplace_back(row.begin(), row.end()); };
    options.route = [&](const nn::RoutingRequest& request) -> std::shared_ptr<const nn::AdapterContext> {
      if (step_rows && request.to - request.from == 1) step_rows->push_back(request.history.size());
      return nullptr;
    };
    nn::PrefixReuse<double, cpu> reuse;
    const auto tokens = nn::generate(model, these, options, &reuse);
    return std::make_tuple(tokens, seen, reuse.kept);
  };
  std::vector<std::size_t> step_rows;
  const auto [tokens, seen, kept] = run({0, 1, 2, 3, 4}, &step_rows);
  // Two finished of five leave after the second token; then one of three, one of two.
  BOOST_TEST(step_rows == (std::vector<std::size_t>{5, 3, 3, 2, 2, 1, 1}));
  for (std::size_t i = 0; i < prompts.size(); ++i)
    BOOST_TEST_CONTEXT("sequence " << i) {
      const auto [alone, alone_seen, alone_kept] = run({i}, nullptr);
      BOOST_TEST(tokens[i].size() == std::min<std::size_t>(ends[i], 8));
      BOOST_TEST(tokens[i] == alone[0]);
      BOOST_REQUIRE(seen[i].size() == alone_seen[0].size());
      for (std::size_t k = 0; k < seen[i].size(); ++k) BOOST_TEST(mote::testing::relative_error(seen[i][k], alone_seen[0][k]) < 1e-10);
      // What it kept: its prompt and the tokens it fed back (alone, a finished sequence feeds none),
      // with the keys and values a fresh pass over them writes.
      BOOST_REQUIRE(kept[i]);
      const auto& fed = kept[i]->tokens;
      const auto& alone_fed = alone_kept[0]->tokens;
      BOOST_REQUIRE((fed.size() == alone_fed.size() || fed.size() == alone_fed.size() + 1));
      BOOST_TEST(std::equal(alone_fed.begin(), alone_fed.end(), fed.begin()));
      std::vector<std::int32_t> history = prompts[i];
      history.insert(history.end(), tokens[i].begin(), tokens[i].end());
      BOOST_TEST(std::equal(fed.begin(), fed.end(), history.begin()));
      auto fresh = model.make_cache();
      (void)model.logits(Tensor<std::int32_t>::from_vector({1, static_cast<std::int64_t>(fed.size())}, fed), {}, &fresh);
      for (std::size_t l = 0; l < fresh.layers.size(); ++l) {
        BOOST_TEST(mote::testing::relative_error(as_double(kept[i]->cache.layers[l].keys().contiguous()),
                                                 as_double(fresh.layers[l].keys().contiguous())) < 1e-10);
        BOOST_TEST(mote::testing::relative_error(as_double(kept[i]->cache.layers[l].values().contiguous()),
                                                 as_double(fresh.layers[l].values().contiguous())) < 1e-10);
      }
    }
}

// Wide enough that a decoding step of 12 or 16 sequences takes the packed kernel in every projection
// and the LM head (13 to 16 rows as 8-row tiles).
constexpr nn::Config packed_gpt2{.vocab = 128, .d_model = 96, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4,
                                 .d_ff = 256, .max_seq = 32, .norm = nn::Norm::LayerNorm, .eps = 1e-5,
                                 .activation = nn::Activation::GeluTanhMLP, .positions = nn::Positions::Learned,
                                 .rope_theta = 10000.0, .bias = true, .tied_embeddings = true};

// Above 8 sequences the decoding loop names the weights constant and they are packed once for it
// (backend::WeightPanels): every step's logits equal, bit for bit, those of steps run one by one
// outside the loop.
BOOST_AUTO_TEST_CASE(batched_decoding_on_packed_weights_equals_plain_steps) {
  nn::CausalLM<packed_gpt2, float> model(25);
  for (std::int64_t batch : {12, 16}) {
    std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(batch));
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int32_t t = 0; t < 5; ++t) prompts[static_cast<std::size_t>(b)].push_back(static_cast<std::int32_t>((b * 7 + t * 13) % 128));
    const std::int64_t steps = 6;
    std::vector<std::vector<double>> seen;  // [step * batch + b][vocab]
    std::size_t packed_in_loop = 0;
    nn::GenerateOptions options{.max_new_tokens = steps};
    options.shape_logits = [&](std::size_t, std::span<double> row) {
      seen.emplace_back(row.begin(), row.end());
      if (const auto* weights = backend::WeightPanels::active()) packed_in_loop = std::max(packed_in_loop, weights->size());
    };
    const auto generated = nn::generate(model, prompts, options);
    BOOST_TEST(backend::WeightPanels::active() == nullptr);
    // The same greedy steps by hand, outside any decoding loop.
    auto cache = model.make_cache();
    std::vector<std::int32_t> ids;
    for (const auto& p : prompts) ids.insert(ids.end(), p.begin(), p.end());
    Tensor<std::int32_t> input = Tensor<std::int32_t>::from_vector({batch, 5}, ids);
    double worst = 0;
    bool same_tokens = true;
    for (std::int64_t step = 0; step < steps; ++step) {
      const std::vector<float> logits = model.logits(input, {.logits_to_keep = 1}, &cache).value().to_vector();
      std::vector<std::int32_t> next(static_cast<std::size_t>(batch));
      for (std::int64_t b = 0; b < batch; ++b) {
        const float* row = logits.data() + b * packed_gpt2.vocab;
        next[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(std::max_element(row, row + packed_gpt2.vocab) - row);
        const auto& got = seen.at(static_cast<std::size_t>(step * batch + b));
        for (std::int64_t v = 0; v < packed_gpt2.vocab; ++v) worst = std::max(worst, std::abs(got[static_cast<std::size_t>(v)] - double(row[v])));
        same_tokens = same_tokens && generated[static_cast<std::size_t>(b)][static_cast<std::size_t>(step)] == next[static_cast<std::size_t>(b)];
      }
      input = Tensor<std::int32_t>::from_vector({batch, 1}, next);
    }
    BOOST_TEST(worst == 0.0, "batch " << batch << ": largest logit difference " << worst);
    BOOST_TEST(same_tokens, "batch " << batch);
    // Where the CPU has the packed kernel the loop held every weight it multiplied by, packed:
    // per block the fused qkv, output, MLP up and down projections, and the tied LM head.
    if (backend::fp32_kernel_available()) BOOST_TEST(packed_in_loop == std::size_t(4 * packed_gpt2.n_layers + 1));
  }
}

BOOST_AUTO_TEST_CASE(left_padding_with_a_mask_leaves_logits_unchanged) {
  nn::CausalLM<llamac, double> llama(25);
  nn::CausalLM<gpt2c, double> gpt(26);
  // Row 1 is [pad, pad, 7, 8, 9]: positions restart at its first real token and the mask hides the pads.
  const auto ids = Tensor<std::int32_t>::from_vector({2, 5}, {1, 2, 3, 4, 5, 0, 0, 7, 8, 9});
  const auto pos = Tensor<std::int32_t>::from_vector({2, 5}, {0, 1, 2, 3, 4, 0, 0, 0, 1, 2});
  std::vector<std::uint8_t> m;
  for (int b = 0; b < 2; ++b)
    for (int q = 0; q < 5; ++q)
      for (int k = 0; k < 5; ++k) m.push_back(b == 0 || k >= 2);
  const auto mask = Tensor<std::uint8_t>::from_vector({2, 5, 5}, m);
  const auto alone = Tensor<std::int32_t>::from_vector({1, 3}, {7, 8, 9});
  auto check = [&](auto& model) {
    const auto padded = model.logits(ids, {.positions = &pos, .mask = &mask}).value();
    const auto single = model.logits(alone).value();
    BOOST_TEST(mote::testing::relative_error(as_double(padded.slice(0, 1, 1).slice(1, 2, 3).contiguous()), as_double(single)) < 1e-12);
  };
  check(llama);
  check(gpt);
}

BOOST_AUTO_TEST_CASE(sampling_is_seeded_and_top_k_one_is_greedy) {
  nn::CausalLM<gpt2c, double> model(31);
  const std::vector<std::int32_t> prompt{1, 2, 3};
  const nn::GenerateOptions sample{.max_new_tokens = 10, .temperature = 1.5, .top_k = 20, .top_p = 0.95, .seed = 5};
  const auto x = nn::generate(model, prompt, sample);
  BOOST_TEST(x == nn::generate(model, prompt, sample));
  auto other = sample;
  other.seed = 6;
  auto other2 = sample;
  other2.seed = 7;
  BOOST_TEST((nn::generate(model, prompt, other) != x || nn::generate(model, prompt, other2) != x));
  const auto greedy = nn::generate(model, prompt, {.max_new_tokens = 10});
  BOOST_TEST(nn::generate(model, prompt, {.max_new_tokens = 10, .temperature = 1.0, .top_k = 1, .seed = 9}) == greedy);
  for (auto t : x) BOOST_TEST((t >= 0 && t < 64));
}

BOOST_AUTO_TEST_CASE(stop_tokens_and_limits) {
  nn::CausalLM<llamac, double> model(41);
  const std::vector<std::int32_t> prompt{7, 8, 9};
  const auto greedy = nn::generate(model, prompt, {.max_new_tokens = 8});
  std::vector<std::int32_t> seen;
  const auto stopped = nn::generate(model, prompt, {.max_new_tokens = 8, .stop_tokens = {greedy[2]},
                                                    .on_token = [&](std::size_t, std::int32_t t) { seen.push_back(t); }});
  const auto first_stop = std::find(greedy.begin(), greedy.end(), greedy[2]);
  BOOST_TEST(stopped == std::vector<std::int32_t>(greedy.begin(), first_stop + 1));
  BOOST_TEST(seen == stopped);
  // The context ends at max_seq = 16: a 14-token prompt leaves room for 3 new tokens.
  const std::vector<std::int32_t> long_prompt(14, 3);
  BOOST_TEST(nn::generate(model, long_prompt, {.max_new_tokens = 10}).size() == 3u);
  expect_error<value_error>([&] { nn::generate(model, std::vector<std::int32_t>(17, 1)); }, {"prompts[0]", "max_seq = 16"});
  expect_error<value_error>([&] { nn::generate(model, prompt, {.temperature = -1}); }, {"temperature"});
  expect_error<value_error>([&] { nn::generate(model, prompt, {.top_p = 0}); }, {"top_p"});
  expect_error<value_error>([&] { nn::generate(model, prompt, {.prefill_pass_rows = -1}); }, {"prefill_pass_rows", "-1"});
  expect_error<value_error>([&] { nn::generate(model, std::vector<std::int32_t>{1, 99}); }, {"prompts[0][1]", "99"});
}

BOOST_AUTO_TEST_CASE(training_steps_lower_the_loss) {
  nn::CausalLM<gpt2c, float> model(51);
  optim::AdamW<float> opt(model.parameters(), {.lr = 1e-2f, .weight_decay = 0.0f});
  const auto ids = Tensor<std::int32_t>::from_vector({1, 8}, {1, 2, 3, 4, 5, 6, 7, 8});
  const auto targets = Tensor<std::int32_t>::from_vector({1, 8}, {2, 3, 4, 5, 6, 7, 8, 9});
  float first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    opt.zero_grad();
    auto loss = model.loss(ids, targets);
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item();
  }
  BOOST_TEST(last < 0.5f * first);
}

// Large enough that q, o, the MLP and the LM head pass the bf16 cutoff (128 tokens, sides over 32);
// k and v (32 wide) and the 16-wide attention heads stay fp32.
constexpr nn::Config bf16_llama{.vocab = 128, .d_model = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                                .d_ff = 128, .max_seq = 32, .norm = nn::Norm::RMSNorm, .eps = 1e-5,
                                .activation = nn::Activation::SwiGLU, .positions = nn::Positions::RoPE,
                                .rope_theta = 10000.0, .bias = false, .tied_embeddings = false};

BOOST_AUTO_TEST_CASE(bf16_matmul_precision_trains_close_to_fp32) {
  nn::CausalLM<bf16_llama, float> model(61);
  Rng rng(5);
  std::vector<std::int32_t> id_values(4 * 32), target_values(4 * 32);
  for (auto& v : id_values) v = static_cast<std::int32_t>(rng.below(bf16_llama.vocab));
  for (std::size_t i = 0; i < target_values.size(); ++i) target_values[i] = (id_values[i] * 7 + 3) % 128;
  const auto ids = Tensor<std::int32_t>::from_vector({4, 32}, id_values);
  const auto targets = Tensor<std::int32_t>::from_vector({4, 32}, target_values);
  // Loss and every gradient of one pass, under the precision currently set.
  auto pass = [&] {
    model.zero_grad();
    auto loss = model.loss(ids, targets);
    loss.backward();
    std::map<std::string, std::vector<float>> grads;
    model.for_each_parameter([&](const std::string& name, Var<float>& p) { grads[name] = p.grad().to_vector(); });
    return std::make_pair(double(loss.item()), grads);
  };
  const auto [fp32_loss, fp32_grads] = pass();
  backend::scoped_matmul_precision bf16(backend::matmul_precision::bf16);
  const auto [bf16_loss, bf16_grads] = pass();
  // bf16 keeps 8 significant bits: close, but not the fp32 numbers.
  BOOST_TEST(std::abs(bf16_loss - fp32_loss) < 1e-2 * fp32_loss);
  BOOST_TEST(bf16_loss != fp32_loss);
  for (const auto& [name, want] : fp32_grads) {
    const auto& got = bf16_grads.at(name);
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
      norm += double(want[i]) * want[i];
    }
    BOOST_TEST(std::sqrt(diff) < 0.05 * std::sqrt(norm) + 1e-12, name << ": relative gradient error "
                                                                      << std::sqrt(diff / std::max(norm, 1e-300)));
  }
  optim::AdamW<float> opt(model.parameters(), {.lr = 1e-2f, .weight_decay = 0.0f});
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    auto loss = model.loss(ids, targets);
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item();
  }
  BOOST_TEST(last < 0.3 * first);
}

BOOST_AUTO_TEST_CASE(resize_vocab_keeps_old_logits_and_starts_new_rows_at_the_mean) {
  check_resize_keeps_the_model<gpt2c, double>(1e-12);  // tied
  check_resize_keeps_the_model<llamac, double>(1e-12);  // untied
  check_resize_keeps_the_model<tied_llamac, double>(1e-12);
  check_resize_keeps_the_model<gpt2c, float>(1e-6);
  check_resize_keeps_the_model<llamac, float>(1e-6);
}

BOOST_AUTO_TEST_CASE(resize_vocab_new_rows_get_gradients) {
  check_new_rows_get_gradients<gpt2c>();
  check_new_rows_get_gradients<llamac>();
  check_new_rows_get_gradients<tied_llamac>();
}

BOOST_AUTO_TEST_CASE(resize_vocab_copies_flags_and_the_same_vocab_is_an_exact_copy) {
  static_assert(nn::with_vocab(gpt2c, 67).vocab == 67 && nn::with_vocab(gpt2c, 67).n_heads == gpt2c.n_heads);
  nn::CausalLM<llamac, double> model(81);
  model.set_recompute(true);
  auto same = nn::resize_vocab<llamac.vocab>(model);
  static_assert(std::is_same_v<decltype(same), nn::CausalLM<llamac, double>>);
  BOOST_TEST(same.blocks().back().recompute);
  const auto original = model.state_dict();
  for (const auto& [name, t] : same.state_dict()) {
    BOOST_TEST(as_double(t) == as_double(original.at(name)), boost::test_tools::per_element());
    BOOST_TEST(!t.shares_storage_with(original.at(name)), name);
  }

  // Frozen except the embedding, as when training only the new tokens: the copy is frozen alike.
  model.set_trainable(false);
  model.set_recompute(false);
  model.for_each_parameter([](const std::string& name, Var<double>& p) {
    if (name == "model.embed_tokens.weight") p.set_requires_grad(true);
  });
  auto grown = nn::resize_vocab<llamac.vocab + 2>(model);
  BOOST_TEST(!grown.blocks().front().recompute);
  std::size_t trainable = 0;
  for (const auto& [name, p] : grown.named_parameters()) {
    BOOST_TEST(p.requires_grad() == (name == "model.embed_tokens.weight"), name);
    trainable += p.requires_grad();
  }
  BOOST_TEST(trainable == 1u);

  // NewRows::normal keeps the resized type's own seeded initialization for the new rows.
  using Grown = nn::CausalLM<nn::with_vocab(llamac, llamac.vocab + 2), double>;
  auto drawn = nn::resize_vocab<llamac.vocab + 2>(model, {.new_rows = nn::NewRows::normal, .seed = 9});
  Grown fresh(9);
  for (const std::string name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    BOOST_TEST_CONTEXT(name) {
      const auto rows = drawn.state_dict().at(name), fresh_rows = fresh.state_dict().at(name);
      BOOST_TEST(rows_of(rows, 0, llamac.vocab) == as_double(original.at(name)), boost::test_tools::per_element());
      BOOST_TEST(rows_of(rows, llamac.vocab, 2) == rows_of(fresh_rows, llamac.vocab, 2), boost::test_tools::per_element());
      BOOST_TEST(mote::testing::relative_error(rows_of(rows, llamac.vocab, 1), mean_row(original.at(name))) > 0.1);
    }
  }

  std::string attached_to;
  model.for_each_linear([&](const std::string& name, auto& linear) {
    if (!attached_to.empty()) return;
    linear.adapter = std::make_shared<IdentityAdapter>();
    attached_to = name;
  });
  expect_error<value_error>([&] { nn::resize_vocab<llamac.vocab + 1>(model); }, {"adapter", attached_to});
}

BOOST_AUTO_TEST_CASE(special_tokens_fit_after_resize_vocab) {
  io::Tokenizer tok = testing::tiny_tokenizer();
  nn::CausalLM<gpt2c, float> model(91);
  BOOST_REQUIRE(tok.vocab_size() == gpt2c.vocab);
  nn::check_vocab(tok.vocab_size(), model);

  // AlignCoT's step tokens: three new ids after the vocabulary, so three more rows.
  constexpr std::int64_t step_tokens = 3;
  const auto analysis = tok.add_special_token("<|analysis|>");
  tok.add_special_token("<|guidance|>");
  const auto answer = tok.add_special_token("<|answer|>");
  BOOST_TEST(analysis == gpt2c.vocab);
  BOOST_TEST(answer == gpt2c.vocab + step_tokens - 1);
  BOOST_TEST(tok.vocab_size() == gpt2c.vocab + step_tokens);
  expect_error<value_error>([&] { nn::check_vocab(tok.vocab_size(), model); }, {"67", "64", "resize_vocab<67>"});
  expect_error<value_error>([&] { nn::check_vocab(-1, model); }, {"-1"});

  const auto resized = nn::resize_vocab<gpt2c.vocab + step_tokens>(model);
  nn::check_vocab(tok.vocab_size(), resized);
  const std::vector<io::Tokenizer::token_id> ids = tok.encode("<|analysis|>ab c<|guidance|>d<|answer|>e");
  BOOST_TEST(ids.front() == analysis);
  BOOST_TEST(*std::max_element(ids.begin(), ids.end()) == answer);
  const auto batch = Tensor<std::int32_t>::from_vector({1, static_cast<std::int64_t>(ids.size())}, ids);
  BOOST_TEST(resized.logits(batch).shape() == (Shape{1, static_cast<std::int64_t>(ids.size()), gpt2c.vocab + step_tokens}));
  expect_error<value_error>([&] { model.logits(batch); }, {"64"});
}

// Run-time sized models (presets::gpt2_family, llama_family, every size nn::dynamic) against the
// compile-time model of the same sizes: the same parameters draw for draw, the same logits on a batch
// with a mask and positions, the same loss and gradients, and the same cached one-token steps on the
// graph-free path, all bit for bit.
template <nn::Config Compiled, nn::Config Family>
void check_runtime_sized_equals_compiled(std::uint64_t seed) {
  using Fixed = nn::CausalLM<Compiled, float>;
  using Sized = nn::CausalLM<Family, float>;
  static_assert(!Fixed::config.runtime_sized() && Sized::config.runtime_sized());
  static_assert(Fixed::sizes().vocab == Compiled.vocab);  // still constexpr for a compile-time model
  Fixed fixed(seed);
  Sized sized(Compiled, seed);
  BOOST_TEST(sized.sizes().n_layers == Compiled.n_layers);
  BOOST_TEST(sized.sizes().d_ff == Compiled.d_ff);
  BOOST_TEST(sized.blocks().size() == static_cast<std::size_t>(Compiled.n_layers));
  BOOST_TEST(fixed.num_parameters() == sized.num_parameters());
  const auto a = fixed.named_parameters(), b = sized.named_parameters();
  BOOST_REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    BOOST_TEST(a[i].first == b[i].first);
    BOOST_TEST(a[i].second.shape() == b[i].second.shape(), a[i].first);
    BOOST_TEST((a[i].second.value().to_vector() == b[i].second.value().to_vector()), a[i].first << " differs");
  }
  // Row 1 is left-padded by one token: its mask hides the pad and its positions start after it.
  const std::int64_t batch = 2, len = 5;
  const auto ids = Tensor<std::int32_t>::from_vector({batch, len}, {3, 17, 5, 60, 9, 0, 41, 8, 22, 13});
  const auto targets = Tensor<std::int32_t>::from_vector({batch, len}, {17, 5, 60, 9, 2, -100, 8, 22, 13, 7});
  const auto positions = Tensor<std::int32_t>::from_vector({batch, len}, {0, 1, 2, 3, 4, 0, 0, 1, 2, 3});
  std::vector<std::uint8_t> m;
  for (std::int64_t r = 0; r < batch; ++r)
    for (std::int64_t q = 0; q < len; ++q)
      for (std::int64_t k = 0; k < len; ++k) m.push_back(r == 0 || k > 0 || q == 0);
  const auto mask = Tensor<std::uint8_t>::from_vector({batch, len, len}, m);
  const nn::ForwardOptions<> forward{.positions = &positions, .mask = &mask};
  BOOST_TEST((fixed.logits(ids, forward).value().to_vector() == sized.logits(ids, forward).value().to_vector()));
  const nn::LossOptions<float> loss_options{.positions = &positions, .mask = &mask};
  auto fixed_loss = fixed.loss(ids, targets, loss_options), sized_loss = sized.loss(ids, targets, loss_options);
  BOOST_TEST(fixed_loss.item() == sized_loss.item());
  fixed_loss.backward();
  sized_loss.backward();
  for (std::size_t i = 0; i < a.size(); ++i)
    BOOST_TEST((a[i].second.grad().to_vector() == b[i].second.grad().to_vector()), "gradient of " << a[i].first << " differs");

  // Cached steps: a prompt, then one token at a time on the graph-free path.
  auto& scratch = nn::decode_detail::Scratch<float, cpu>::for_this_thread();
  no_grad off;
  auto fixed_cache = fixed.make_cache(), sized_cache = sized.make_cache();
  BOOST_TEST(sized_cache.layers.size() == static_cast<std::size_t>(Compiled.n_layers));
  const auto prompt = Tensor<std::int32_t>::from_vector({1, 3}, {4, 33, 12});
  BOOST_TEST((fixed.logits(prompt, {}, &fixed_cache).value().to_vector() == sized.logits(prompt, {}, &sized_cache).value().to_vector()));
  for (std::int32_t token : {7, 50, 1, 63}) {
    const auto step = Tensor<std::int32_t>::from_vector({1, 1}, {token});
    scratch = {};
    const auto want = fixed.logits(step, {}, &fixed_cache).value().to_vector();
    BOOST_TEST(scratch.x.defined(), "the compile-time model's step did not take the graph-free path");
    scratch = {};
    const auto got = sized.logits(step, {}, &sized_cache).value().to_vector();
    BOOST_TEST(scratch.x.defined(), "the run-time sized model's step did not take the graph-free path");
    BOOST_TEST((got == want), "step with token " << token << " differs");
  }
  BOOST_TEST(sized_cache.length() == 7);
  // The run-time sizes bound the input as the compiled ones do.
  const auto too_long = Tensor<std::int32_t>::zeros({1, Compiled.max_seq + 1});
  expect_error<value_error>([&] { sized.logits(too_long); }, {"max_seq = " + std::to_string(Compiled.max_seq)});
}

BOOST_AUTO_TEST_CASE(runtime_sized_models_equal_compile_time_models) {
  static_assert(presets::gpt2_family.runtime_sized() && presets::llama_family.runtime_sized() && !gpt2c.runtime_sized());
  static_assert(presets::gpt2_family.same_family(gpt2c) && presets::llama_family.same_family(llamac) &&
                !presets::gpt2_family.same_family(llamac));
  static_assert(nn::validate<presets::gpt2_family>::value && nn::validate<presets::llama_family>::value);
  // Zero cost for compile-time Configs: a layer stores no sizes.
  static_assert(sizeof(nn::NormLayer<gpt2c, float>) == 2 * sizeof(autograd::Var<float>));
  static_assert(sizeof(nn::NormLayer<presets::gpt2_family, float>) > 2 * sizeof(autograd::Var<float>));
  check_runtime_sized_equals_compiled<gpt2c, presets::gpt2_family>(41);
  check_runtime_sized_equals_compiled<llamac, presets::llama_family>(42);
}

// A run-time sized model no preset has, and its run-time vocab grown as a compile-time model's is.
BOOST_AUTO_TEST_CASE(runtime_sized_models_take_any_sizes_and_resize_their_vocab) {
  nn::Config sizes = presets::tiny_llama;
  sizes.n_layers = 3;
  sizes.d_model = 24;
  sizes.n_heads = 6;
  sizes.n_kv_heads = 3;
  sizes.rope_theta = 500000.0;
  nn::CausalLM<presets::llama_family, float> model(sizes, std::uint64_t{5});
  BOOST_TEST(model.blocks().size() == 3u);
  BOOST_TEST(model.sizes().rope_theta == 500000.0);
  BOOST_TEST(model.blocks().front().attn.k.weight.shape() == (Shape{12, 24}));  // 3 kv heads of 4
  const auto ids = Tensor<std::int32_t>::from_vector({1, 4}, {1, 2, 3, 4});
  BOOST_TEST(model.logits(ids).shape() == (Shape{1, 4, 64}));

  nn::CausalLM<llamac, float> fixed(std::uint64_t{6});
  nn::CausalLM<presets::llama_family, float> sized(llamac, std::uint64_t{6});
  const auto grown_fixed = nn::resize_vocab<70>(fixed);
  const nn::CausalLM<presets::llama_family, float> grown = nn::resize_vocab(sized, 70);
  BOOST_TEST(grown.sizes().vocab == 70);
  BOOST_TEST((grown_fixed.logits(ids).value().to_vector() == grown.logits(ids).value().to_vector()));
  const auto added = nn::add_vocab_rows<3>(sized);
  static_assert(std::is_same_v<decltype(added), const nn::CausalLM<presets::llama_family, float>>);
  static_assert(std::is_same_v<decltype(nn::add_vocab_rows<3>(fixed)), nn::CausalLM<nn::with_vocab(llamac, 67), float>>);
  BOOST_TEST(added.sizes().vocab == 67);
  expect_error<value_error>([&] { nn::check_vocab(67, sized); }, {"resize_vocab(model, 67)"});
  nn::check_vocab(67, added);
  expect_error<value_error>([&] { (void)nn::resize_vocab(sized, 10); }, {"new_vocab 10", "shrinking"});
}

// Bad run-time sizes are value_errors that name the field by the family's config.json key.
BOOST_AUTO_TEST_CASE(bad_runtime_sizes_name_the_config_json_key) {
  using Gpt2 = nn::CausalLM<presets::gpt2_family, float>;
  using Llama = nn::CausalLM<presets::llama_family, float>;
  nn::Config g = gpt2c;
  g.d_model = 30;
  expect_error<value_error>([&] { Gpt2 m(g); }, {"n_embd (d_model) 30 is not divisible by n_head (n_heads) 4"});
  nn::Config l = llamac;
  l.d_model = 30;
  expect_error<value_error>([&] { Llama m(l); }, {"hidden_size (d_model) 30 is not divisible by num_attention_heads (n_heads) 4"});
  l = llamac;
  l.n_kv_heads = 3;
  expect_error<value_error>([&] { Llama m(l); }, {"num_attention_heads (n_heads) 4 is not divisible by num_key_value_heads (n_kv_heads) 3"});
  l = llamac;
  l.n_layers = 0;
  expect_error<value_error>([&] { Llama m(l); }, {"num_hidden_layers (n_layers) is 0", "positive"});
  g = gpt2c;
  g.vocab = -1;  // nn::dynamic is no size for a model
  expect_error<value_error>([&] { Gpt2 m(g); }, {"vocab_size (vocab) is -1"});
  g = gpt2c;
  g.d_ff = 0;
  expect_error<value_error>([&] { Gpt2 m(g); }, {"n_inner (d_ff) is 0"});
  l = llamac;
  l.d_model = 36;  // head dim 9
  expect_error<value_error>([&] { Llama m(l); }, {"RoPE needs an even head dim", "hidden_size (d_model) 36"});
  l = llamac;
  l.eps = 0;
  expect_error<value_error>([&] { Llama m(l); }, {"rms_norm_eps (eps)"});
  // The family fields are compile-time and must match.
  expect_error<value_error>([&] { Gpt2 m(llamac); }, {"norm is RMSNorm but the compiled family has LayerNorm"});
  nn::Config untied = gpt2c;
  untied.tied_embeddings = false;
  expect_error<value_error>([&] { Gpt2 m(untied); }, {"tied_embeddings is false"});
  // A Config that fixes some sizes and leaves others dynamic checks the fixed ones.
  constexpr nn::Config vocab_64 = nn::with_vocab(presets::gpt2_family, 64);
  static_assert(vocab_64.runtime_sized());
  nn::Config wide = gpt2c;
  wide.vocab = 65;
  expect_error<value_error>([&] { nn::CausalLM<vocab_64, float> m(wide); }, {"vocab_size (vocab) is 65", "fixes it at 64"});
  nn::CausalLM<vocab_64, float> ok(gpt2c, std::uint64_t{1});
  BOOST_TEST(ok.sizes().vocab == 64);
}

// copy_parameters: a double model's weights land, rounded, in a float model of the same architecture.
BOOST_AUTO_TEST_CASE(copy_parameters_converts_across_element_types) {
  nn::CausalLM<llamac, double> source(std::uint64_t{3});
  nn::CausalLM<llamac, float> dest(std::uint64_t{4});
  nn::copy_parameters(source, dest);
  const auto from = source.named_parameters();
  const auto to = dest.named_parameters();
  BOOST_REQUIRE(from.size() == to.size());
  for (std::size_t i = 0; i < from.size(); ++i) {
    std::vector<double> rounded;
    for (double v : from[i].second.value().to_vector()) rounded.push_back(static_cast<double>(static_cast<float>(v)));
    BOOST_TEST(as_double(to[i].second.value()) == rounded, boost::test_tools::per_element());
  }
  const auto ids = Tensor<std::int32_t>::from_vector({1, 4}, {1, 5, 9, 2});
  const std::vector<double> expected = source.logits(ids).value().to_vector();
  const std::vector<double> got = as_double(dest.logits(ids).value());
  BOOST_REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) BOOST_TEST(std::abs(got[i] - expected[i]) <= 1e-4 * (1 + std::abs(expected[i])));
  // Another architecture: the first differing parameter is named.
  nn::CausalLM<gpt2c, float> other(std::uint64_t{5});
  expect_error<shape_error>([&] { nn::copy_parameters(source, other); }, {"copy_parameters", "model.embed_tokens.weight", "wte.weight"});
}

BOOST_AUTO_TEST_SUITE_END()
