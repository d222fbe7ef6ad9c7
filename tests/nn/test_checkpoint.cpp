// Checkpoint directories: loading the PyTorch fixtures through config.json + safetensors, config
// mismatches, damaged checkpoints, shards, save/load round trips, and the run-time dispatcher.
#include "op_harness.hpp"
#include "test_files.hpp"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <type_traits>
#include <vector>


#include "mote/io/hf_config.hpp"
#include "mote/io/json.hpp"
#include "mote/io/safetensors.hpp"
#include "mote/nn/nn.hpp"

using namespace mote;
using mote::testing::expect_error;
namespace fs = std::filesystem;
namespace st = mote::io::safetensors;

namespace {

using Gpt2 = nn::CausalLM<presets::tiny_gpt2, float>;
using Llama = nn::CausalLM<presets::tiny_llama, float>;

using mote::testing::TempDir;

fs::path fixture(const std::string& name) { return fs::path(MOTE_TEST_FIXTURES) / name; }

// Copies a model fixture into `dir` under the names a Hugging Face checkpoint uses.
void copy_fixture(const std::string& stem, const fs::path& dir) {
  fs::copy_file(fixture(stem + ".safetensors"), dir / "model.safetensors", fs::copy_options::overwrite_existing);
  fs::copy_file(fixture(stem + "_config.json"), dir / "config.json", fs::copy_options::overwrite_existing);
}

// The fixture loaded the way test_nn does: safetensors by hand, then load_state_dict.
template <class Model>
Model load_by_hand(const std::string& stem) {
  const auto file = st::File::open(fixture(stem + ".safetensors"));
  std::map<std::string, Tensor<float>> weights;
  for (const auto& name : file.names()) weights.emplace(name, file.tensor<float>(name));
  Model model(5);
  model.load_state_dict(weights);
  return model;
}

Tensor<std::int32_t> sample_ids() {
  return Tensor<std::int32_t>::from_vector({2, 6}, {1, 7, 3, 63, 0, 12, 5, 5, 40, 2, 9, 31});
}

template <class Model>
std::vector<float> logits_of(const Model& model) {
  return model.logits(sample_ids()).value().contiguous().to_vector();
}

template <nn::Config C, class T>
std::map<std::string, std::vector<T>> values_of(nn::CausalLM<C, T>& model) {
  std::map<std::string, std::vector<T>> out;
  for (const auto& [name, t] : model.state_dict()) out.emplace(name, t.contiguous().to_vector());
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_checkpoint)

BOOST_AUTO_TEST_CASE(hf_config_of_presets_matches_the_fixtures) {
  BOOST_TEST(nn::config_differences<presets::tiny_gpt2>(io::HFConfig::read(fixture("model_tiny_gpt2_config.json"))).empty());
  BOOST_TEST(nn::config_differences<presets::tiny_llama>(io::HFConfig::read(fixture("model_tiny_llama_config.json"))).empty());
  BOOST_TEST(nn::to_hf_config<presets::gpt2>().model_type == "gpt2");
  BOOST_TEST(nn::to_hf_config<presets::llama3_8b>().model_type == "llama");
  BOOST_TEST(nn::to_hf_config<presets::llama3_8b>().n_kv_heads == 8);
  // A config no config.json can say (GPT-2 layout with RoPE) is a difference, not a silent match.
  constexpr nn::Config gpt2_rope = [] {
    nn::Config c = presets::tiny_gpt2;
    c.positions = nn::Positions::RoPE;
    return c;
  }();
  expect_error<value_error>([] { nn::to_hf_config<gpt2_rope>(); }, {"GPT-2-layout", "learned positions"});
  BOOST_TEST(nn::config_differences<gpt2_rope>(nn::to_hf_config<presets::tiny_gpt2>()).size() == 1u);
}

BOOST_AUTO_TEST_CASE(fixtures_load_from_a_checkpoint_directory) {
  TempDir g("gpt2"), l("llama");
  copy_fixture("model_tiny_gpt2", g.path);
  copy_fixture("model_tiny_llama", l.path);
  const Gpt2 gpt2 = nn::load<Gpt2>(g.path);
  const Llama llama = nn::load<Llama>(l.path);
  BOOST_TEST(logits_of(gpt2) == logits_of(load_by_hand<Gpt2>("model_tiny_gpt2")), boost::test_tools::per_element());
  BOOST_TEST(logits_of(llama) == logits_of(load_by_hand<Llama>("model_tiny_llama")), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(mismatched_config_lists_every_difference) {
  TempDir d("mismatch");
  copy_fixture("model_tiny_gpt2", d.path);
  io::HFConfig c = io::HFConfig::read(d.path / "config.json");
  c.n_heads = c.n_kv_heads = 8;
  c.n_layers = 3;
  c.vocab_size = 100;
  c.write(d.path / "config.json");
  expect_error<io_error>([&] { nn::load<Gpt2>(d.path); },
                         {(d.path / "config.json").string(), "vocab_size: 100 vs 64", "n_layer: 3 vs 2", "n_head: 8 vs 4"});
  // A Llama config for a GPT-2 model reports the family too.
  copy_fixture("model_tiny_llama", d.path);
  expect_error<io_error>([&] { nn::load<Gpt2>(d.path); }, {"model_type: \"llama\" vs \"gpt2\"", "intermediate_size: 64 vs 128"});
  fs::remove(d.path / "config.json");
  expect_error<io_error>([&] { nn::load<Gpt2>(d.path); }, {d.path.string(), "no config.json"});
}

BOOST_AUTO_TEST_CASE(damaged_checkpoints_throw_typed_errors) {
  TempDir d("damaged");
  Llama model(3);
  nn::save(model, d.path);
  auto weights = model.state_dict();
  const auto rewrite = [&](const std::map<std::string, Tensor<float>>& w) {
    st::NamedTensors<float> list(w.begin(), w.end());
    st::save<float>(d.path / "model.safetensors", list);
  };

  auto missing = weights;
  missing.erase("model.layers.1.mlp.up_proj.weight");
  rewrite(missing);
  expect_error<value_error>([&] { nn::load<Llama>(d.path); }, {"model.layers.1.mlp.up_proj.weight", "no tensor", d.path.string()});

  auto wrong = weights;
  wrong.at("model.norm.weight") = Tensor<float>::zeros({31});
  rewrite(wrong);
  expect_error<shape_error>([&] { nn::load<Llama>(d.path); }, {"model.norm.weight", "[31]", "[32]"});

  auto extra = weights;
  extra.emplace("model.layers.0.extra.weight", Tensor<float>::zeros({2}));
  rewrite(extra);
  expect_error<value_error>([&] { nn::load<Llama>(d.path); }, {"unexpected", "model.layers.0.extra.weight"});
  BOOST_TEST(nn::load<Llama>(d.path, {.strict = false}).num_parameters() == model.num_parameters());

  // Integer tensors under a parameter's name are not weights.
  rewrite(weights);
  {
    st::NamedTensors<std::int32_t> ints{{"model.norm.weight", Tensor<std::int32_t>::zeros({32})}};
    for (const auto& [name, t] : weights)
      if (name != "model.norm.weight") ints.emplace_back(name, Tensor<std::int32_t>::zeros(t.shape()));
    st::save<std::int32_t>(d.path / "model.safetensors", ints);
    expect_error<io_error>([&] { nn::load<Llama>(d.path); }, {"model.norm.weight", "I32", "expected F32, F64, F16 or BF16"});
  }

  nn::save(model, d.path);
  const auto size = fs::file_size(d.path / "model.safetensors");
  fs::resize_file(d.path / "model.safetensors", size - 10);
  expect_error<io_error>([&] { nn::load<Llama>(d.path); }, {"model.safetensors"});
  fs::remove(d.path / "model.safetensors");
  expect_error<io_error>([&] { nn::load<Llama>(d.path); }, {"model.safetensors"});
}

BOOST_AUTO_TEST_CASE(sharded_checkpoints_load_the_same) {
  TempDir d("sharded");
  copy_fixture("model_tiny_llama", d.path);
  const auto whole = st::File::open(d.path / "model.safetensors");
  st::NamedTensors<double> first, second;
  io::json::Value map = io::json::Value::object();
  for (std::size_t i = 0; i < whole.names().size(); ++i) {
    const std::string& name = whole.names()[i];
    const bool in_first = i % 2 == 0;
    (in_first ? first : second).emplace_back(name, whole.tensor<double>(name));
    map.set(name, in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors");
  }
  st::save<double>(d.path / "model-00001-of-00002.safetensors", first);
  st::save<double>(d.path / "model-00002-of-00002.safetensors", second);
  io::json::write_file(d.path / "model.safetensors.index.json",
                       io::json::Value::object({{"metadata", io::json::Value::object()}, {"weight_map", map}}));
  fs::remove(d.path / "model.safetensors");
  BOOST_TEST(logits_of(nn::load<Llama>(d.path)) == logits_of(load_by_hand<Llama>("model_tiny_llama")),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(save_then_load_is_bit_exact) {
  TempDir f("f32"), g("f64");
  Gpt2 gpt2(11);
  nn::save(gpt2, f.path);
  Gpt2 gpt2_back = nn::load<Gpt2>(f.path);
  BOOST_TEST((values_of(gpt2_back) == values_of(gpt2)));
  // GPT2LMHeadModel's names: the "transformer." prefix, no tied lm_head.
  const auto file = st::File::open(f.path / "model.safetensors");
  BOOST_TEST(file.has("transformer.h.1.attn.c_attn.weight"));
  BOOST_TEST(!file.has("lm_head.weight"));
  BOOST_TEST(file.info("transformer.wte.weight").dtype == st::Dtype::F32);
  BOOST_TEST(nn::config_differences<presets::tiny_gpt2>(io::HFConfig::read(f.path / "config.json")).empty());

  using Llama64 = nn::CausalLM<presets::tiny_llama, double>;
  Llama64 llama(12);
  nn::save(llama, g.path, st::Dtype::F64);
  Llama64 llama_back = nn::load<Llama64>(g.path);
  BOOST_TEST((values_of(llama_back) == values_of(llama)));
  BOOST_TEST(st::File::open(g.path / "model.safetensors").has("lm_head.weight"));
}

BOOST_AUTO_TEST_CASE(bf16_save_loads_the_rounded_values) {
  TempDir d("bf16");
  Llama model(13);
  nn::save(model, d.path, st::Dtype::BF16);
  BOOST_TEST(st::File::open(d.path / "model.safetensors").info("model.norm.weight").dtype == st::Dtype::BF16);
  Llama back = nn::load<Llama>(d.path);
  const auto original = values_of(model);
  for (const auto& [name, values] : values_of(back)) {
    const std::vector<float>& want = original.at(name);
    BOOST_REQUIRE(values.size() == want.size());
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < values.size(); ++i)
      if (values[i] != static_cast<float>(st::detail::bf16_to_double(st::detail::double_to_bf16(want[i])))) ++wrong;
    BOOST_TEST(wrong == 0u, name);
  }
}

BOOST_AUTO_TEST_CASE(saving_over_a_sharded_checkpoint_drops_the_stale_index) {
  TempDir d("stale");
  nn::save(Llama(1), d.path);
  io::json::write_file(d.path / "model.safetensors.index.json",
                       io::json::Value::object({{"weight_map", io::json::Value::object()}}));
  const Llama fresh(2);
  nn::save(fresh, d.path);
  BOOST_TEST(!fs::exists(d.path / "model.safetensors.index.json"));
  BOOST_TEST(logits_of(nn::load<Llama>(d.path)) == logits_of(fresh), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(dispatcher_picks_the_matching_model) {
  TempDir g("dispatch_gpt2"), l("dispatch_llama");
  copy_fixture("model_tiny_gpt2", g.path);
  copy_fixture("model_tiny_llama", l.path);
  const auto which = [](auto& model) -> std::string {
    return std::remove_cvref_t<decltype(model)>::config.gpt2_layout() ? "gpt2" : "llama";
  };
  BOOST_TEST((nn::with_matching_model<Llama, Gpt2>(g.path, which)) == "gpt2");
  BOOST_TEST((nn::with_matching_model<Gpt2, Llama>(l.path, which)) == "llama");
  // The model fn sees is the loaded one.
  const auto logits = nn::with_matching_model<Gpt2>(g.path, [](auto& m) { return logits_of(m); });
  BOOST_TEST(logits == logits_of(load_by_hand<Gpt2>("model_tiny_gpt2")), boost::test_tools::per_element());

  using Gpt2Small = nn::CausalLM<presets::gpt2, float>;
  expect_error<io_error>([&] { nn::with_matching_model<Gpt2Small, Llama>(g.path, which); },
                         {"no candidate model matches", (g.path / "config.json").string(), "candidate 1: vocab_size: 64 vs 50257",
                          "candidate 2: model_type: \"gpt2\" vs \"llama\""});
}

// Run-time sized models: any GPT-2's sizes come from config.json; saving writes them back; a
// directory of another family is a typed error naming the file; read_config tells the family.
BOOST_AUTO_TEST_CASE(runtime_sized_models_save_and_load_any_sizes) {
  using AnyGpt2 = nn::CausalLM<presets::gpt2_family, float>;
  using AnyLlama = nn::CausalLM<presets::llama_family, float>;
  nn::Config sizes = presets::tiny_gpt2;  // sizes no preset has: 3 layers, d_model 24, 3 heads
  sizes.n_layers = 3;
  sizes.d_model = 24;
  sizes.n_heads = sizes.n_kv_heads = 3;
  sizes.d_ff = 96;
  sizes.max_seq = 20;
  sizes.eps = 1e-6;
  TempDir d("runtime_gpt2");
  AnyGpt2 model(sizes, std::uint64_t{21});
  nn::save(model, d.path);
  const io::HFConfig written = io::HFConfig::read(d.path / "config.json");
  BOOST_TEST(written.n_layers == 3);
  BOOST_TEST(written.hidden_size == 24);
  BOOST_TEST(written.norm_eps == 1e-6);
  AnyGpt2 back = nn::load<AnyGpt2>(d.path);
  BOOST_TEST(back.sizes().n_layers == 3);
  BOOST_TEST(back.sizes().max_seq == 20);
  BOOST_TEST((values_of(back) == values_of(model)));
  BOOST_TEST(logits_of(back) == logits_of(model), boost::test_tools::per_element());

  // Which family the directory holds.
  const nn::Config found = nn::read_config(d.path);
  BOOST_TEST(found.same_family(presets::gpt2_family));
  BOOST_TEST(!found.same_family(presets::llama_family));
  BOOST_TEST(found.n_heads == 3);
  // Another family is refused, naming the file and model_type; so is a compile-time model of other sizes.
  const std::string cfg = (d.path / "config.json").string();
  expect_error<io_error>([&] { nn::load<AnyLlama>(d.path); }, {cfg, "model_type: \"gpt2\" vs \"llama\""});
  expect_error<io_error>([&] { nn::load<Gpt2>(d.path); }, {cfg, "n_layer: 3 vs 2", "n_embd: 24 vs 32"});
  // The dispatcher takes run-time sized candidates too: the first that matches wins.
  const auto layers = [](auto& m) { return m.sizes().n_layers; };
  BOOST_TEST((nn::with_matching_model<Gpt2, AnyLlama, AnyGpt2>(d.path, layers)) == 3);

  // The PyTorch fixtures load into the families as into the compile-time models.
  TempDir g("runtime_fixture_gpt2"), l("runtime_fixture_llama");
  copy_fixture("model_tiny_gpt2", g.path);
  copy_fixture("model_tiny_llama", l.path);
  BOOST_TEST(logits_of(nn::load<AnyGpt2>(g.path)) == logits_of(nn::load<Gpt2>(g.path)), boost::test_tools::per_element());
  BOOST_TEST(logits_of(nn::load<AnyLlama>(l.path)) == logits_of(nn::load<Llama>(l.path)), boost::test_tools::per_element());
  BOOST_TEST(nn::read_config(l.path).same_family(presets::llama_family));
  expect_error<io_error>([&] { nn::load<AnyGpt2>(l.path); },
                         {(l.path / "config.json").string(), "model_type: \"llama\" vs \"gpt2\""});

  // Sizes config.json can hold but the model cannot (an odd RoPE head dim): value_error naming the file.
  io::HFConfig odd = io::HFConfig::read(l.path / "config.json");
  odd.hidden_size = 36;  // 4 heads of 9
  odd.write(l.path / "config.json");
  expect_error<value_error>([&] { nn::load<AnyLlama>(l.path); },
                            {"RoPE needs an even head dim", "hidden_size (d_model) 36", (l.path / "config.json").string()});
}

BOOST_AUTO_TEST_SUITE_END()
