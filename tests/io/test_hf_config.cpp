// Hugging Face config.json: both families with their defaults, the errors for wrong types, missing keys
// and unknown model types, write-then-read round-trips, and differences() naming every mismatch.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "mote/io/hf_config.hpp"
#include "op_harness.hpp"

using namespace mote;
using io::HFConfig;
namespace fs = std::filesystem;
using testing::expect_error;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / ("mote_test_hf_config_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path write(const std::string& text, const std::string& name = "config.json") const {
    std::ofstream(path / name) << text;
    return path / name;
  }
};

const char* gpt2_json = R"({
  "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 64, "n_embd": 32, "n_layer": 2,
  "n_head": 4, "n_inner": 128, "n_positions": 16, "n_ctx": 16, "layer_norm_epsilon": 1e-05,
  "activation_function": "gelu_new", "tie_word_embeddings": true, "torch_dtype": "float64"})";

const char* llama_json = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64, "hidden_size": 32,
  "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "max_position_embeddings": 16, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
  "attention_bias": false, "tie_word_embeddings": false, "torch_dtype": "float64"})";

HFConfig from(const std::string& text) { return HFConfig::from_json(io::json::parse(text, "config.json")); }

}  // namespace

BOOST_AUTO_TEST_SUITE(test_hf_config)

BOOST_AUTO_TEST_CASE(reads_gpt2) {
  TempDir dir;
  const auto c = HFConfig::read(dir.write(gpt2_json));
  BOOST_TEST(c.model_type == "gpt2");
  BOOST_TEST(c.vocab_size == 64);
  BOOST_TEST(c.hidden_size == 32);
  BOOST_TEST(c.n_layers == 2);
  BOOST_TEST(c.n_heads == 4);
  BOOST_TEST(c.n_kv_heads == 4);
  BOOST_TEST(c.head_dim() == 8);
  BOOST_TEST(c.d_ff == 128);
  BOOST_TEST(c.max_positions == 16);
  BOOST_TEST(c.norm_eps == 1e-5);
  BOOST_TEST(c.rope_theta == 10000.0);
  BOOST_TEST(c.tie_word_embeddings);
  BOOST_TEST(c.activation == "gelu_new");
  BOOST_TEST(c.attention_bias);
  BOOST_TEST(c.mlp_bias);
}

BOOST_AUTO_TEST_CASE(gpt2_defaults) {
  const auto c = from(R"({"model_type": "gpt2", "vocab_size": 10, "n_embd": 16, "n_layer": 1, "n_head": 2,
                          "n_inner": null, "n_positions": 8})");
  BOOST_TEST(c.d_ff == 64);  // 4 * n_embd
  BOOST_TEST(c.norm_eps == 1e-5);
  BOOST_TEST(c.activation == "gelu_new");
  BOOST_TEST(c.tie_word_embeddings);
  BOOST_TEST(c.attention_bias);
}

BOOST_AUTO_TEST_CASE(reads_llama_and_its_defaults) {
  const auto c = from(llama_json);
  BOOST_TEST(c.model_type == "llama");
  BOOST_TEST(c.hidden_size == 32);
  BOOST_TEST(c.n_heads == 4);
  BOOST_TEST(c.n_kv_heads == 2);
  BOOST_TEST(c.d_ff == 64);
  BOOST_TEST(c.max_positions == 16);
  BOOST_TEST(c.norm_eps == 1e-5);
  BOOST_TEST(c.activation == "silu");
  BOOST_TEST(!c.tie_word_embeddings);
  BOOST_TEST(!c.attention_bias);
  BOOST_TEST(!c.mlp_bias);
  const auto d = from(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 16, "intermediate_size": 40,
                          "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 8,
                          "num_key_value_heads": null, "rope_scaling": null, "mlp_bias": true, "rope_theta": 500000})");
  BOOST_TEST(d.n_kv_heads == 4);
  BOOST_TEST(d.norm_eps == 1e-6);
  BOOST_TEST(d.rope_theta == 500000.0);
  BOOST_TEST(d.activation == "silu");
  BOOST_TEST(!d.tie_word_embeddings);
  BOOST_TEST(d.mlp_bias);
}

BOOST_AUTO_TEST_CASE(reads_the_reference_fixtures_when_present) {
  for (const char* name : {"model_tiny_gpt2_config.json", "model_tiny_llama_config.json"}) {
    const fs::path p = fs::path(MOTE_TEST_FIXTURES) / name;
    if (!fs::exists(p)) continue;
    const auto c = HFConfig::read(p);
    BOOST_TEST(c.vocab_size > 0);
    BOOST_TEST(c.differences(HFConfig::from_json(c.to_json())).empty());
  }
}

BOOST_AUTO_TEST_CASE(errors_name_the_key_and_the_problem) {
  TempDir dir;
  const auto p = dir.write(R"({"model_type": "gpt2", "vocab_size": 64, "n_embd": 32, "n_layer": 2, "n_head": "4", "n_positions": 16})");
  expect_error<io_error>([&] { HFConfig::read(p); }, {p.string() + ": \"n_head\": expected an integer, got a string"});
  expect_error<io_error>([] { from(R"({"model_type": "gpt2", "vocab_size": 64, "n_embd": 32, "n_layer": 2, "n_positions": 16})"); },
                         {"config.json: missing key \"n_head\""});
  expect_error<io_error>([] { from(R"({"vocab_size": 3})"); }, {"missing key \"model_type\""});
  expect_error<io_error>([] { from(R"({"model_type": "bert"})"); }, {"\"model_type\"", "unsupported model_type \"bert\"", "gpt2, llama"});
  expect_error<io_error>([] { from(R"({"model_type": 3})"); }, {"\"model_type\": expected a string, got a number"});
  expect_error<io_error>([] { from("[]"); }, {"config.json: expected a config object, got an array"});
  expect_error<io_error>([] { from(R"({"model_type": "gpt2", "vocab_size": 64, "n_embd": 32, "n_layer": 0, "n_head": 4, "n_positions": 16})"); },
                         {"\"n_layer\"", "positive integer, got 0"});
  expect_error<io_error>([] { from(R"({"model_type": "gpt2", "vocab_size": 64, "n_embd": 30, "n_layer": 1, "n_head": 4, "n_positions": 16})"); },
                         {"hidden size 30 is not divisible by the head count 4"});
  expect_error<io_error>([] { from(R"({"model_type": "gpt2", "vocab_size": 64, "n_embd": 32, "n_layer": 1, "n_head": 4, "n_positions": 16, "tie_word_embeddings": 1})"); },
                         {"\"tie_word_embeddings\": expected a boolean, got a number"});
  expect_error<io_error>([] { from(R"({"model_type": "gpt2", "vocab_size": 64, "n_embd": 32, "n_layer": 1, "n_head": 4, "n_positions": 16, "layer_norm_epsilon": "1e-5"})"); },
                         {"\"layer_norm_epsilon\": expected a number, got a string"});
  const std::string llama_base = R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 16, "intermediate_size": 40,
      "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 8)";
  expect_error<io_error>([&] { from(llama_base + R"(, "num_key_value_heads": 3})"); }, {"not divisible by the key/value head count 3"});
  expect_error<io_error>([&] { from(llama_base + R"(, "rope_scaling": {"type": "linear", "factor": 2.0}})"); },
                         {"\"rope_scaling\"", "not supported"});
  expect_error<io_error>([&] { from(llama_base + R"(, "vocab_size": 4611686018427387904})"); }, {"duplicate key"});
  expect_error<io_error>([] { from(R"({"model_type": "gpt2", "vocab_size": 64, "n_embd": 4611686018427387904, "n_layer": 1, "n_head": 4, "n_positions": 16})"); },
                         {"\"n_embd\"", "at most 2^40"});
  expect_error<io_error>([&] { from(llama_base + R"(, "head_dim": 4611686018427387904})"); }, {"\"head_dim\""});
  expect_error<io_error>([&] { from(llama_base + R"(, "head_dim": 8})"); }, {"\"head_dim\"", "expected hidden_size / num_attention_heads = 4"});
  BOOST_TEST(from(llama_base + "}").n_kv_heads == 4);  // valid: nothing else is required
}

BOOST_AUTO_TEST_CASE(write_then_read_round_trips_in_family_field_names) {
  TempDir dir;
  for (const char* text : {gpt2_json, llama_json}) {
    const auto c = from(text);
    const auto p = dir.path / ("out_" + c.model_type + ".json");
    c.write(p);
    const auto back = HFConfig::read(p);
    BOOST_TEST((back == c));
    BOOST_TEST(back.differences(c).empty());
    const auto j = io::json::parse_file(p);
    if (c.model_type == "gpt2") {
      BOOST_TEST(j.at("n_embd").as_int64() == 32);
      BOOST_TEST(j.at("layer_norm_epsilon").as_double() == 1e-5);
      BOOST_TEST(!j.contains("hidden_size"));
    } else {
      BOOST_TEST(j.at("num_key_value_heads").as_int64() == 2);
      BOOST_TEST(j.at("rms_norm_eps").as_double() == 1e-5);
      BOOST_TEST(!j.contains("n_embd"));
    }
  }
  auto bad = from(gpt2_json);
  bad.n_kv_heads = 2;
  expect_error<value_error>([&] { bad.write(dir.path / "x.json"); }, {"n_kv_heads 2 must equal n_heads 4"});
  BOOST_TEST(!fs::exists(dir.path / "x.json"));
  bad = from(gpt2_json);
  bad.mlp_bias = false;
  expect_error<value_error>([&] { (void)bad.to_json(); }, {"biases"});
  bad.model_type = "t5";
  expect_error<value_error>([&] { (void)bad.to_json(); }, {"unsupported model_type \"t5\""});
}

BOOST_AUTO_TEST_CASE(differences_name_every_field_with_both_values) {
  const auto a = from(llama_json);
  auto b = a;
  BOOST_TEST(a.differences(b).empty());
  b.n_heads = 8;
  b.norm_eps = 1e-6;
  b.tie_word_embeddings = true;
  b.activation = "gelu";
  const auto d = a.differences(b);
  BOOST_TEST(d.size() == 4u);
  BOOST_TEST((d == std::vector<std::string>{"num_attention_heads: 4 vs 8", "rms_norm_eps: 1e-05 vs 1e-06",
                                             "tie_word_embeddings: false vs true", "hidden_act: \"silu\" vs \"gelu\""}));
  const auto g = from(gpt2_json);
  const auto all = a.differences(g);
  BOOST_TEST(testing::contains(all.front(), "model_type: \"llama\" vs \"gpt2\""));
  BOOST_TEST(all.size() == 7u);  // model_type, d_ff, n_kv_heads, tie, activation, attention_bias, mlp_bias
}

BOOST_AUTO_TEST_SUITE_END()
