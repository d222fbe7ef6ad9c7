#pragma once
// Hugging Face config.json for the GPT-2 and Llama families, read into one plain runtime struct and
// written back in the family's own field names; differences() lists every field two configs disagree on.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/io/json.hpp"

namespace mote::io {

struct HFConfig {
  std::string model_type;          // "gpt2" or "llama"
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;    // GPT-2 n_embd, Llama hidden_size
  std::int64_t n_layers = 0;       // n_layer / num_hidden_layers
  std::int64_t n_heads = 0;        // n_head / num_attention_heads
  std::int64_t n_kv_heads = 0;     // num_key_value_heads (GPT-2: n_heads)
  std::int64_t d_ff = 0;           // n_inner (null: 4 * n_embd) / intermediate_size
  std::int64_t max_positions = 0;  // n_positions / max_position_embeddings
  double norm_eps = 1e-5;          // layer_norm_epsilon / rms_norm_eps
  double rope_theta = 10000.0;     // Llama only; GPT-2 keeps the default
  bool tie_word_embeddings = true;
  std::string activation;          // activation_function / hidden_act, e.g. gelu_new, silu
  bool attention_bias = true;      // GPT-2 always; Llama attention_bias
  bool mlp_bias = true;            // GPT-2 always; Llama mlp_bias

  static constexpr const char* supported_types = "gpt2, llama";

  std::int64_t head_dim() const { return n_heads ? hidden_size / n_heads : 0; }

  // Reads a parsed config.json; errors name the source and the key (`config.json: "n_head": expected an integer, got a string`).
  static HFConfig from_json(const json::Value& root) {
    if (!root.is_object()) root.fail(std::string("expected a config object, got ") + json::type_name(root.type()));
    HFConfig c;
    c.model_type = root.at("model_type").as_string();
    const auto opt = [&](const char* key) -> const json::Value* {
      const json::Value* v = root.find(key);
      return v && !v->is_null() ? v : nullptr;
    };
    const auto positive = [&](const char* key) {
      const std::int64_t v = root.at(key).as_int64();
      if (v <= 0) root.at(key).fail("expected a positive integer, got " + std::to_string(v));
      // A cap far above any real model keeps derived sizes (4 * n_embd, products) from overflowing.
      if (v > (std::int64_t{1} << 40)) root.at(key).fail("expected at most 2^40, got " + std::to_string(v));
      return v;
    };
    if (c.model_type == "gpt2") {
      c.vocab_size = positive("vocab_size");
      c.hidden_size = positive("n_embd");
      c.n_layers = positive("n_layer");
      c.n_heads = positive("n_head");
      c.n_kv_heads = c.n_heads;
      c.d_ff = opt("n_inner") ? positive("n_inner") : 4 * c.hidden_size;
      c.max_positions = positive("n_positions");
      c.norm_eps = opt("layer_norm_epsilon") ? root.at("layer_norm_epsilon").as_double() : 1e-5;
      c.activation = opt("activation_function") ? root.at("activation_function").as_string() : "gelu_new";
      c.tie_word_embeddings = opt("tie_word_embeddings") ? root.at("tie_word_embeddings").as_bool() : true;
      c.attention_bias = c.mlp_bias = true;
    } else if (c.model_type == "llama") {
      c.vocab_size = positive("vocab_size");
      c.hidden_size = positive("hidden_size");
      c.n_layers = positive("num_hidden_layers");
      c.n_heads = positive("num_attention_heads");
      c.n_kv_heads = opt("num_key_value_heads") ? positive("num_key_value_heads") : c.n_heads;
      c.d_ff = positive("intermediate_size");
      c.max_positions = positive("max_position_embeddings");
      c.norm_eps = opt("rms_norm_eps") ? root.at("rms_norm_eps").as_double() : 1e-6;
      c.rope_theta = opt("rope_theta") ? root.at("rope_theta").as_double() : 10000.0;
      c.activation = opt("hidden_act") ? root.at("hidden_act").as_string() : "silu";
      c.tie_word_embeddings = opt("tie_word_embeddings") ? root.at("tie_word_embeddings").as_bool() : false;
      c.attention_bias = opt("attention_bias") ? root.at("attention_bias").as_bool() : false;
      c.mlp_bias = opt("mlp_bias") ? root.at("mlp_bias").as_bool() : false;
      // Silently ignoring these would give a model that loads but computes something else.
      if (opt("rope_scaling")) root.at("rope_scaling").fail("rope scaling is not supported; expected null or absent");
      if (opt("head_dim") && root.at("head_dim").as_int64() != c.hidden_size / c.n_heads)
        root.at("head_dim").fail("expected hidden_size / num_attention_heads = " + std::to_string(c.hidden_size / c.n_heads) +
                                 " (a separate head_dim is not supported), got " +
                                 std::to_string(root.at("head_dim").as_int64()));
    } else {
      root.at("model_type").fail("unsupported model_type \"" + c.model_type + "\"; supported: " + supported_types);
    }
    if (!(c.norm_eps > 0)) root.fail("expected a positive norm epsilon, got " + json::Value::format_double(c.norm_eps));
    if (!(c.rope_theta > 0)) root.fail("expected a positive rope_theta, got " + json::Value::format_double(c.rope_theta));
    if (c.hidden_size % c.n_heads != 0)
      root.fail("the hidden size " + std::to_string(c.hidden_size) + " is not divisible by the head count " +
                std::to_string(c.n_heads));
    if (c.n_heads % c.n_kv_heads != 0)
      root.fail("the head count " + std::to_string(c.n_heads) + " is not divisible by the key/value head count " +
                std::to_string(c.n_kv_heads));
    return c;
  }

  static HFConfig read(const std::filesystem::path& path) { return from_json(json::parse_file(path)); }

  // The family's config.json fields; throws value_error for what the family's format cannot express.
  json::Value to_json() const {
    const std::string where = "mote: HFConfig::to_json (" + model_type + ")";
    if (model_type == "gpt2") {
      if (n_kv_heads != n_heads)
        throw value_error(where + ": GPT-2 has no grouped-query attention; n_kv_heads " + std::to_string(n_kv_heads) +
                          " must equal n_heads " + std::to_string(n_heads));
      if (!attention_bias || !mlp_bias) throw value_error(where + ": GPT-2 always has biases; attention_bias and mlp_bias must be true");
      if (rope_theta != 10000.0) throw value_error(where + ": GPT-2 has no rotary embedding; rope_theta must keep its default");
      return json::Value::object({{"architectures", json::Value::array({"GPT2LMHeadModel"})},
                                  {"model_type", "gpt2"},
                                  {"vocab_size", vocab_size},
                                  {"n_embd", hidden_size},
                                  {"n_layer", n_layers},
                                  {"n_head", n_heads},
                                  {"n_inner", d_ff},
                                  {"n_positions", max_positions},
                                  {"n_ctx", max_positions},
                                  {"layer_norm_epsilon", norm_eps},
                                  {"activation_function", activation},
                                  {"tie_word_embeddings", tie_word_embeddings}});
    }
    if (model_type == "llama") {
      return json::Value::object({{"architectures", json::Value::array({"LlamaForCausalLM"})},
                                  {"model_type", "llama"},
                                  {"vocab_size", vocab_size},
                                  {"hidden_size", hidden_size},
                                  {"intermediate_size", d_ff},
                                  {"num_hidden_layers", n_layers},
                                  {"num_attention_heads", n_heads},
                                  {"num_key_value_heads", n_kv_heads},
                                  {"max_position_embeddings", max_positions},
                                  {"rms_norm_eps", norm_eps},
                                  {"rope_theta", rope_theta},
                                  {"hidden_act", activation},
                                  {"attention_bias", attention_bias},
                                  {"mlp_bias", mlp_bias},
                                  {"tie_word_embeddings", tie_word_embeddings}});
    }
    throw value_error(where + ": unsupported model_type \"" + model_type + "\"; supported: " + supported_types);
  }

  // Writes config.json atomically (indented like transformers' save_pretrained).
  void write(const std::filesystem::path& path) const { json::write_file(path, to_json(), 2); }

  // One line per field that differs, named by this config's own config.json keys (GPT-2: `n_head: 4 vs 8`;
  // Llama: `num_attention_heads: 4 vs 8`), this value first.
  std::vector<std::string> differences(const HFConfig& other) const {
    std::vector<std::string> out;
    const bool gpt2 = model_type == "gpt2";
    const auto key = [&](const char* gpt2_key, const char* llama_key) { return std::string(gpt2 ? gpt2_key : llama_key); };
    const auto num = [](double d) { return json::Value::format_double(d); };
    const auto b = [](bool v) { return std::string(v ? "true" : "false"); };
    const auto add = [&](const std::string& field, const std::string& a, const std::string& o) {
      if (a != o) out.push_back(field + ": " + a + " vs " + o);
    };
    add("model_type", "\"" + model_type + "\"", "\"" + other.model_type + "\"");
    add("vocab_size", std::to_string(vocab_size), std::to_string(other.vocab_size));
    add(key("n_embd", "hidden_size"), std::to_string(hidden_size), std::to_string(other.hidden_size));
    add(key("n_layer", "num_hidden_layers"), std::to_string(n_layers), std::to_string(other.n_layers));
    add(key("n_head", "num_attention_heads"), std::to_string(n_heads), std::to_string(other.n_heads));
    // GPT-2's config.json has no key for it (it is always n_head there), so mote's name stands.
    add(key("n_kv_heads", "num_key_value_heads"), std::to_string(n_kv_heads), std::to_string(other.n_kv_heads));
    add(key("n_inner", "intermediate_size"), std::to_string(d_ff), std::to_string(other.d_ff));
    add(key("n_positions", "max_position_embeddings"), std::to_string(max_positions), std::to_string(other.max_positions));
    if (norm_eps != other.norm_eps) add(key("layer_norm_epsilon", "rms_norm_eps"), num(norm_eps), num(other.norm_eps));
    if (rope_theta != other.rope_theta) add("rope_theta", num(rope_theta), num(other.rope_theta));
    add("tie_word_embeddings", b(tie_word_embeddings), b(other.tie_word_embeddings));
    add(key("activation_function", "hidden_act"), "\"" + activation + "\"", "\"" + other.activation + "\"");
    add("attention_bias", b(attention_bias), b(other.attention_bias));
    add("mlp_bias", b(mlp_bias), b(other.mlp_bias));
    return out;
  }

  friend bool operator==(const HFConfig&, const HFConfig&) = default;
};

inline HFConfig read_hf_config(const std::filesystem::path& path) { return HFConfig::read(path); }
inline void write_hf_config(const std::filesystem::path& path, const HFConfig& config) { config.write(path); }

}  // namespace mote::io
