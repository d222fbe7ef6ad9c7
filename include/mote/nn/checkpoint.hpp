#pragma once
// Hugging Face checkpoint directories (config.json + model.safetensors or an index and shards) for
// CausalLM: Configs as HFConfigs and back, checked loading (a run-time sized model takes its sizes from
// config.json), atomic saving, and a run-time dispatcher that picks the model type a directory's
// config.json describes.
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/backend/traits.hpp"
#include "mote/core/error.hpp"
#include "mote/io/hf_config.hpp"
#include "mote/io/safetensors.hpp"
#include "mote/nn/causal_lm.hpp"
#include "mote/nn/config.hpp"

namespace mote::nn {

namespace checkpoint_detail {

// The element type and backend of a CausalLM, which the class does not export by name.
template <class Model>
struct model_traits;
template <Config C, Real T, Backend B>
struct model_traits<CausalLM<C, T, B>> {
  using value_type = T;
  using backend = B;
};

inline std::string join(const std::vector<std::string>& lines, const std::string& sep) {
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) out += (i ? sep : "") + lines[i];
  return out;
}

inline std::filesystem::path config_path(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "config.json";
  if (!std::filesystem::exists(path))
    throw io_error("mote: checkpoint directory '" + dir.string() + "' has no config.json (expected a Hugging Face config)");
  return path;
}

}  // namespace checkpoint_detail

// A Config with every size as a Hugging Face config: GPT-2 layout -> "gpt2", Llama layout -> "llama".
// Throws value_error for a Config the family's config.json cannot describe.
inline io::HFConfig to_hf_config(const Config& c) {
  const bool gpt2 = c.gpt2_layout();
  if (c.runtime_sized())
    throw value_error("mote: to_hf_config: the Config has nn::dynamic sizes; pass a model's sizes() instead");
  if (gpt2 && (c.norm != Norm::LayerNorm || c.positions != Positions::Learned || !c.bias))
    throw value_error("mote: to_hf_config: a GPT-2-layout Config needs LayerNorm, learned positions and biases to be a gpt2 config.json");
  if (!gpt2 && (c.norm != Norm::RMSNorm || c.positions != Positions::RoPE))
    throw value_error("mote: to_hf_config: a Llama-layout Config needs RMSNorm and RoPE to be a llama config.json");
  io::HFConfig h;
  h.model_type = gpt2 ? "gpt2" : "llama";
  h.vocab_size = c.vocab;
  h.hidden_size = c.d_model;
  h.n_layers = c.n_layers;
  h.n_heads = c.n_heads;
  h.n_kv_heads = c.n_kv_heads;
  h.d_ff = c.d_ff;
  h.max_positions = c.max_seq;
  h.norm_eps = c.eps;
  // GPT-2 has no rotary embedding, so its config always reads back the default theta.
  h.rope_theta = gpt2 ? 10000.0 : c.rope_theta;
  h.tie_word_embeddings = c.tied_embeddings;
  h.activation = gpt2 ? "gelu_new" : "silu";
  h.attention_bias = h.mlp_bias = c.bias;
  return h;
}

// The compiled Config C (every size known) as a Hugging Face config.
template <Config C>
io::HFConfig to_hf_config() {
  static_assert(!C.runtime_sized(), "mote::nn::to_hf_config<C>: C has nn::dynamic sizes; use to_hf_config(model.sizes())");
  return to_hf_config(C);
}

// The Config a Hugging Face config describes: the family from model_type ("gpt2": LayerNorm, gelu-tanh
// MLP, learned positions, biases; "llama": RMSNorm, SwiGLU, RoPE, biases as attention_bias says) and
// every size, eps and rope_theta from the file.
inline Config from_hf_config(const io::HFConfig& file) {
  const bool gpt2 = file.model_type == "gpt2";
  if (!gpt2 && file.model_type != "llama")
    throw value_error("mote: from_hf_config: unsupported model_type \"" + file.model_type + "\"; supported: " +
                      io::HFConfig::supported_types);
  return Config{.vocab = file.vocab_size,
                .d_model = file.hidden_size,
                .n_layers = file.n_layers,
                .n_heads = file.n_heads,
                .n_kv_heads = file.n_kv_heads,
                .d_ff = file.d_ff,
                .max_seq = file.max_positions,
                .norm = gpt2 ? Norm::LayerNorm : Norm::RMSNorm,
                .eps = file.norm_eps,
                .activation = gpt2 ? Activation::GeluTanhMLP : Activation::SwiGLU,
                .positions = gpt2 ? Positions::Learned : Positions::RoPE,
                .rope_theta = file.rope_theta,
                .bias = file.attention_bias,
                .tied_embeddings = file.tie_word_embeddings};
}

// The Config of the checkpoint directory `dir` (from its config.json), to ask which family it holds:
// nn::read_config(dir).same_family(presets::llama_family).
inline Config read_config(const std::filesystem::path& dir) {
  return from_hf_config(io::HFConfig::read(checkpoint_detail::config_path(dir)));
}

// Every field where `file` differs from the compiled Config (`n_head: 8 vs 4`, by the file's
// config.json keys, the file's value first); a Config no config.json can describe yields one line
// saying so. For a run-time sized C only the family is compared (model_type, activation, biases,
// tied embeddings): the sizes are the file's.
template <Config C>
std::vector<std::string> config_differences(const io::HFConfig& file) {
  try {
    if constexpr (C.runtime_sized()) {
      return file.differences(to_hf_config(with_sizes(C, from_hf_config(file))));
    } else {
      return file.differences(to_hf_config<C>());
    }
  } catch (const value_error& e) {
    return {e.what()};
  }
}

// Throws io_error naming `source` and listing every field where the file's config and the compiled
// Config disagree (for a run-time sized C, the family fields).
template <Config C>
void check_config(const io::HFConfig& file, const std::string& source) {
  const std::vector<std::string> diffs = config_differences<C>(file);
  if (!diffs.empty())
    throw io_error("mote: " + source + ": config does not match the compiled model (file vs compiled): " +
                   checkpoint_detail::join(diffs, "; "));
}

namespace checkpoint_detail {

// A freshly initialized Model of the sizes `file` gives (the compiled ones for a compile-time model,
// whose config was checked already); bad run-time sizes throw value_error naming `source`.
template <class Model>
Model make_model(const io::HFConfig& file, const std::string& source) {
  if constexpr (Model::config.runtime_sized()) {
    try {
      return Model(from_hf_config(file), std::uint64_t{0});
    } catch (const value_error& e) {
      throw value_error(std::string(e.what()) + " (" + source + ")");
    }
  } else {
    return Model(std::uint64_t{0});
  }
}

}  // namespace checkpoint_detail

// Loads a Hugging Face checkpoint directory into a CausalLM: checks config.json against the
// compiled Config, opens model.safetensors (or the index and its shards), converts F32/F64/F16/BF16
// to the model's type and copies by name (GPT-2 names with or without "transformer."; a tied
// lm_head.weight and HF buffers are skipped; strict rejects any other unknown tensor).
template <class Model>
Model load(const std::filesystem::path& dir, LoadOptions options = {}) {
  using T = typename checkpoint_detail::model_traits<Model>::value_type;
  static_assert(backend_traits<typename checkpoint_detail::model_traits<Model>::backend>::host_access,
                "mote::nn::load: checkpoints load into CPU models; move the model to another backend afterwards");
  const std::filesystem::path cfg_path = checkpoint_detail::config_path(dir);
  const io::HFConfig file = io::HFConfig::read(cfg_path);
  check_config<Model::config>(file, cfg_path.string());
  const auto ck = io::safetensors::Checkpoint::open(dir);

  Model model = checkpoint_detail::make_model<Model>(file, cfg_path.string());
  std::set<std::string> params;
  model.for_each_parameter([&](const std::string& name, auto&) { params.insert(name); });
  const auto is_param = [&](const std::string& name) {
    if (params.count(name)) return true;
    const std::string prefix = "transformer.";
    return Model::config.gpt2_layout() && name.rfind(prefix, 0) == 0 && params.count(name.substr(prefix.size()));
  };
  std::map<std::string, Tensor<T>> weights;
  for (const std::string& name : ck.names()) {
    if (!is_param(name)) {
      // Left undefined: load_state_dict only needs the name to accept a buffer or reject a stray tensor.
      weights.emplace(name, Tensor<T>{});
      continue;
    }
    const io::safetensors::Dtype dtype = ck.info(name).dtype;
    if (!io::safetensors::is_float_dtype(dtype) || dtype == io::safetensors::Dtype::F8_E4M3 ||
        dtype == io::safetensors::Dtype::F8_E5M2)
      throw io_error("mote: " + ck.file_of(name).source() + ": tensor '" + name + "' is " +
                     io::safetensors::dtype_name(dtype) + "; expected F32, F64, F16 or BF16");
    weights.emplace(name, ck.template tensor<T>(name));
  }
  // load_state_dict's messages name the tensor; the directory is added so the file is known too.
  try {
    model.load_state_dict(weights, options);
  } catch (const shape_error& e) {
    throw shape_error(std::string(e.what()) + " (checkpoint '" + dir.string() + "')");
  } catch (const value_error& e) {
    throw value_error(std::string(e.what()) + " (checkpoint '" + dir.string() + "')");
  }
  return model;
}

// Writes `dir`/model.safetensors (Hugging Face names; GPT-2 with GPT2LMHeadModel's "transformer."
// prefix; a tied lm_head is not stored) and `dir`/config.json, each atomically. Float32 and float64
// round-trip bit-exactly through load(); F16/BF16 round to nearest even.
template <class Model>
void save(const Model& model, const std::filesystem::path& dir, io::safetensors::Dtype dtype = io::safetensors::Dtype::F32) {
  using T = typename checkpoint_detail::model_traits<Model>::value_type;
  static_assert(backend_traits<typename checkpoint_detail::model_traits<Model>::backend>::host_access,
                "mote::nn::save: checkpoints are written from CPU models");
  const io::HFConfig config = to_hf_config(model.sizes());
  io::safetensors::NamedTensors<T> tensors;
  // for_each_parameter has no const overload; the visitor only reads.
  const_cast<Model&>(model).for_each_parameter([&](const std::string& name, auto& p) {
    tensors.emplace_back(Model::config.gpt2_layout() ? "transformer." + name : name, p.value());
  });
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw io_error("mote: save: cannot create checkpoint directory '" + dir.string() + "': " + ec.message());
  io::safetensors::save<T>(dir / "model.safetensors", tensors, {{"format", "pt"}}, dtype);
  // A stale index would make loaders read old shards instead of the file just written.
  const std::filesystem::path index = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(index) && !std::filesystem::remove(index, ec))
    throw io_error("mote: save: cannot remove the stale index '" + index.string() + "': " + ec.message());
  config.write(dir / "config.json");
}

namespace checkpoint_detail {

template <class Fn, class First, class... Rest>
auto dispatch(const std::filesystem::path& dir, const io::HFConfig& file, const std::string& source, Fn& fn,
              LoadOptions options, std::vector<std::string>& rejected) {
  const std::vector<std::string> diffs = config_differences<First::config>(file);
  if (diffs.empty()) {
    First model = load<First>(dir, options);
    return fn(model);
  }
  rejected.push_back("candidate " + std::to_string(rejected.size() + 1) + ": " + join(diffs, ", "));
  if constexpr (sizeof...(Rest) == 0)
    throw io_error("mote: " + source + ": no candidate model matches this config (file vs compiled): " + join(rejected, "; "));
  else
    return dispatch<Fn, Rest...>(dir, file, source, fn, options, rejected);
}

}  // namespace checkpoint_detail

// Reads `dir`/config.json, loads the first of Models whose compiled Config matches it, and returns
// fn(model). If none matches, io_error lists each candidate's differences. fn must return the same
// type for every candidate.
template <class... Models, class Fn>
auto with_matching_model(const std::filesystem::path& dir, Fn&& fn, LoadOptions options = {}) {
  static_assert(sizeof...(Models) > 0, "mote::nn::with_matching_model: name at least one candidate model type");
  const std::filesystem::path cfg_path = checkpoint_detail::config_path(dir);
  const io::HFConfig file = io::HFConfig::read(cfg_path);
  std::vector<std::string> rejected;
  return checkpoint_detail::dispatch<std::remove_reference_t<Fn>, Models...>(dir, file, cfg_path.string(), fn, options,
                                                                             rejected);
}

}  // namespace mote::nn
