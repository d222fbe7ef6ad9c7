#pragma once
// Adapter files in PEFT's layout, so other tools can read what mote writes and the reverse:
//   <dir>/adapter_model.safetensors   base_model.model.<module>.lora_A.weight [r, in], lora_B.weight [out, r]
//   <dir>/adapter_config.json         PEFT's LoraConfig fields
// Several experts (step or top-k routers) are one such folder per expert plus <dir>/mote_config.json,
// which records the routing; a top-k router's gates go to <dir>/router.safetensors.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"
#include "mote/io/json.hpp"
#include "mote/io/safetensors.hpp"
#include "mote/lora/options.hpp"
#include "mote/lora/routers.hpp"

namespace mote::lora {

namespace adapter_detail {

// The module's path inside the Hugging Face model class (GPT2LMHeadModel keeps its blocks under "transformer.").
template <class Set>
std::string peft_module(const std::string& module) {
  return (Set::config.gpt2_layout() ? "transformer." : "") + module;
}
inline std::string peft_key(const std::string& peft_module, const char* which) {
  return "base_model.model." + peft_module + "." + which + ".weight";
}

inline std::string last_component(const std::string& module) {
  const auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

template <class Set>
io::json::Value adapter_config(const Set& set) {
  const Options& o = set.options();
  std::set<std::string> targets;
  if (!o.targets.empty()) targets.insert(o.targets.begin(), o.targets.end());
  else
    for (const auto& m : set.modules()) targets.insert(last_component(m));
  using io::json::Value;
  Value cfg = Value::object();
  cfg.set("alpha_pattern", Value::object());
  cfg.set("auto_mapping", nullptr);
  cfg.set("base_model_name_or_path", nullptr);
  cfg.set("bias", "none");
  cfg.set("fan_in_fan_out", Set::config.gpt2_layout());
  cfg.set("inference_mode", true);
  cfg.set("init_lora_weights", true);
  cfg.set("layers_pattern", nullptr);
  cfg.set("layers_to_transform", nullptr);
  cfg.set("lora_alpha", o.alpha);
  cfg.set("lora_dropout", o.dropout);
  cfg.set("modules_to_save", nullptr);
  cfg.set("peft_type", "LORA");
  cfg.set("r", o.rank * Set::router_type::rank_multiplier);
  cfg.set("rank_pattern", Value::object());
  cfg.set("revision", nullptr);
  cfg.set("target_modules", std::vector<std::string>(targets.begin(), targets.end()));
  cfg.set("task_type", "CAUSAL_LM");
  cfg.set("use_dora", false);
  cfg.set("use_rslora", o.use_rslora);
  return cfg;
}

// Checks a PEFT adapter_config.json against these experts. Fields PEFT writes that do not change
// the computation are accepted; unknown fields and settings mote cannot honour are errors.
template <class Set>
void check_adapter_config(const Set& set, const std::filesystem::path& file) {
  static const std::set<std::string> known{
      "alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias", "corda_config", "eva_config",
      "exclude_modules", "fan_in_fan_out", "inference_mode", "init_lora_weights", "layer_replication",
      "layers_pattern", "layers_to_transform", "loftq_config", "lora_alpha", "lora_bias", "lora_dropout",
      "megatron_config", "megatron_core", "modules_to_save", "peft_type", "r", "rank_pattern", "revision",
      "target_modules", "task_type", "trainable_token_indices", "use_dora", "use_qalora", "qalora_group_size",
      "use_rslora"};
  const std::string where = "mote: lora: '" + file.string() + "'";
  if (!std::filesystem::exists(file)) throw io_error(where + " does not exist; expected a PEFT adapter_config.json");
  const io::json::Value cfg = io::json::parse_file(file);
  if (!cfg.is_object()) throw value_error(where + ": expected a JSON object");
  for (const auto& [key, value] : cfg.as_object())
    if (!known.count(key)) throw value_error(where + ": unknown field '" + key + "' (mote reads PEFT LoRA adapter configs)");
  auto require = [&](bool ok, const std::string& what) {
    if (!ok) throw value_error(where + ": " + what);
  };
  auto empty_or_null = [&](const char* key) {
    const io::json::Value* v = cfg.find(key);
    return !v || v->is_null() || ((v->is_object() || v->is_array()) && v->size() == 0);
  };
  auto flag = [&](const char* key) {
    const io::json::Value* v = cfg.find(key);
    return v && !v->is_null() && v->as_bool();
  };
  const io::json::Value* type = cfg.find("peft_type");
  require(type && type->as_string() == "LORA", "peft_type must be \"LORA\"");
  const std::int64_t rank = set.options().rank * Set::router_type::rank_multiplier;
  require(cfg.find("r") && cfg.at("r").as_int64() == rank,
          "r = " + (cfg.find("r") ? io::json::dump(cfg.at("r")) : std::string("(missing)")) + " but these experts have rank " +
              std::to_string(rank));
  require(cfg.find("lora_alpha") && cfg.at("lora_alpha").as_double() == set.options().alpha,
          "lora_alpha = " + (cfg.find("lora_alpha") ? io::json::dump(cfg.at("lora_alpha")) : std::string("(missing)")) +
              " but these experts use alpha " + io::json::dump(io::json::Value(set.options().alpha)));
  require(flag("use_rslora") == set.options().use_rslora,
          std::string("use_rslora = ") + (flag("use_rslora") ? "true" : "false") + " but these experts use " +
              (set.options().use_rslora ? "rsLoRA scaling" : "alpha / r scaling"));
  if (const io::json::Value* f = cfg.find("fan_in_fan_out"); f && !f->is_null())
    require(f->as_bool() == Set::config.gpt2_layout(),
            std::string("fan_in_fan_out = ") + (f->as_bool() ? "true" : "false") + ": the adapter was made for a " +
                (f->as_bool() ? "Conv1D (GPT-2) model" : "nn.Linear (Llama-style) model") + ", this model is the other kind");
  if (const io::json::Value* b = cfg.find("bias"); b && !b->is_null())
    require(b->as_string() == "none", "bias = \"" + b->as_string() + "\"; mote adapters train no biases (expected \"none\")");
  require(!flag("use_dora"), "use_dora = true; mote reads plain LoRA adapters, not DoRA");
  require(!flag("lora_bias"), "lora_bias = true; mote's lora_B has no bias");
  require(empty_or_null("rank_pattern") && empty_or_null("alpha_pattern"),
          "rank_pattern / alpha_pattern are set; mote experts use one rank and alpha for every module");
  require(empty_or_null("modules_to_save"), "modules_to_save is set; mote adapters hold only LoRA matrices");
  require(empty_or_null("layers_to_transform"), "layers_to_transform is set; mote adapts the targeted modules of every layer");
}

template <class Set>
using Tensors = io::safetensors::NamedTensors<typename Set::T>;

template <class Set>
void require_tensor(const io::safetensors::File& file, const std::string& key, const std::string& module, const Shape& expected) {
  if (!file.has(key))
    throw value_error("mote: lora: " + file.source() + " has no tensor '" + key + "' for module '" + module + "' (expected shape " +
                      expected.str() + ")");
  const auto& info = file.info(key);
  const Shape shape(info.shape.begin(), info.shape.end());
  if (!(shape == expected))
    throw shape_error("mote: lora: " + file.source() + ": tensor '" + key + "' for module '" + module + "' has shape " +
                      shape.str() + ", expected " + expected.str() + " (an adapter for another base model?)");
}

// Checks one expert's safetensors against the set (every key present with its shape, no extra keys)
// and returns the tensors to copy, as (destination, source) pairs.
template <class Set>
std::vector<std::pair<typename Set::V, Tensor<typename Set::T>>> read_expert(const Set& set, int expert,
                                                                              const std::filesystem::path& file_path) {
  using T = typename Set::T;
  const std::string where = "mote: lora: '" + file_path.string() + "'";
  if (!std::filesystem::exists(file_path)) throw io_error(where + " does not exist; expected a PEFT adapter_model.safetensors");
  const io::safetensors::File file = io::safetensors::File::open(file_path);
  std::set<std::string> expected;
  std::vector<std::pair<typename Set::V, Tensor<T>>> out;
  for (const auto& layer : set.layers()) {
    const std::string module = peft_module<Set>(layer->module());
    const auto& ex = layer->experts()[static_cast<std::size_t>(expert)];
    const std::string a = peft_key(module, "lora_A"), b = peft_key(module, "lora_B");
    require_tensor<Set>(file, a, layer->module(), ex.lora_a.shape());
    require_tensor<Set>(file, b, layer->module(), ex.lora_b.shape());
    expected.insert(a);
    expected.insert(b);
    out.emplace_back(ex.lora_a, file.tensor<T>(a));
    out.emplace_back(ex.lora_b, file.tensor<T>(b));
  }
  for (const auto& name : file.names())
    if (!expected.count(name))
      throw value_error(where + ": tensor '" + name + "' matches no adapted module of this model (an adapter for another base model?)");
  return out;
}

template <class Set>
io::json::Value mote_config(const Set& set) {
  using R = typename Set::router_type;
  using io::json::Value;
  const Options& o = set.options();
  std::vector<std::string> names;
  for (int e = 0; e < R::experts; ++e) names.push_back(R::expert_name(e));
  Value cfg = Value::object();
  cfg.set("mote_version", 1);
  cfg.set("router", R::name);
  cfg.set("experts", names);
  if constexpr (is_step_router<R>) {
    cfg.set("steps", R::steps);
    cfg.set("shared_expert", R::shared);
    cfg.set("mix_alpha", o.mix_alpha);
    cfg.set("unrouted_policy", unrouted_policy_name(o.unrouted));
    cfg.set("unrouted_expert", o.unrouted_expert);
  } else {
    cfg.set("top_k", R::top_k);
    cfg.set("aux_loss_coef", o.aux_loss_coef);
  }
  return cfg;
}

// Checks mote_config.json against the compiled router and returns the options it sets.
template <class Set>
Options read_mote_config(const Set& set, const std::filesystem::path& file) {
  using R = typename Set::router_type;
  const std::string where = "mote: lora: '" + file.string() + "'";
  if (!std::filesystem::exists(file)) throw io_error(where + " does not exist; expected the mote_config.json of an expert set");
  const io::json::Value cfg = io::json::parse_file(file);
  if (!cfg.is_object()) throw value_error(where + ": expected a JSON object");
  const io::json::Value expected = mote_config(set);
  for (const auto& [key, value] : cfg.as_object())
    if (!expected.find(key)) throw value_error(where + ": unknown field '" + key + "' for a " + R::name + " router");
  for (const auto& [key, value] : expected.as_object())
    if (!cfg.find(key)) throw value_error(where + ": missing field '" + key + "'");
  // Structural fields must match the compiled router type.
  for (const char* key : {"mote_version", "router", "experts", "steps", "shared_expert", "top_k"}) {
    const io::json::Value* want = expected.find(key);
    if (want && !(cfg.at(key) == *want))
      throw value_error(where + ": " + key + " = " + io::json::dump(cfg.at(key)) + " but the compiled router has " +
                        io::json::dump(*want));
  }
  Options o = set.options();
  if constexpr (is_step_router<R>) {
    o.mix_alpha = cfg.at("mix_alpha").as_double();
    const std::string q = cfg.at("unrouted_policy").as_string();
    bool found = false;
    for (UnroutedPolicy candidate : {UnroutedPolicy::RandomStep, UnroutedPolicy::FixedStep, UnroutedPolicy::SharedOnly})
      if (q == unrouted_policy_name(candidate)) {
        o.unrouted = candidate;
        found = true;
      }
    if (!found) throw value_error(where + ": unrouted_policy = \"" + q + "\"; expected random_step, fixed_step or shared_only");
    o.unrouted_expert = static_cast<std::int32_t>(cfg.at("unrouted_expert").as_int64());
  } else {
    o.aux_loss_coef = cfg.at("aux_loss_coef").as_double();
  }
  return o;
}

template <class Set>
void write_expert(const Set& set, int expert, const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  Tensors<Set> tensors;
  for (const auto& layer : set.layers()) {
    const std::string module = peft_module<Set>(layer->module());
    const auto& ex = layer->experts()[static_cast<std::size_t>(expert)];
    tensors.emplace_back(peft_key(module, "lora_A"), ex.lora_a.value().template to<cpu>());
    tensors.emplace_back(peft_key(module, "lora_B"), ex.lora_b.value().template to<cpu>());
  }
  io::safetensors::save(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});
  io::json::write_file(dir / "adapter_config.json", adapter_config(set));
}

}  // namespace adapter_detail

template <class Set>
void save_adapters(const Set& set, const std::filesystem::path& dir) {
  using R = typename Set::router_type;
  if constexpr (is_single_lora<R>) {
    adapter_detail::write_expert(set, 0, dir);
  } else {
    for (int e = 0; e < R::experts; ++e) adapter_detail::write_expert(set, e, dir / R::expert_name(e));
    if constexpr (is_topk_router<R>) {
      adapter_detail::Tensors<Set> gates;
      for (const auto& layer : set.layers())
        gates.emplace_back(adapter_detail::peft_key(adapter_detail::peft_module<Set>(layer->module()), "router"),
                           layer->gate().value().template to<cpu>());
      io::safetensors::save(dir / "router.safetensors", gates, {{"format", "pt"}});
    }
    io::json::write_file(dir / "mote_config.json", adapter_detail::mote_config(set));
  }
}

// Everything is checked before anything is copied, so a failed load leaves the experts as they were.
template <class Set>
void load_adapters(Set& set, const std::filesystem::path& dir) {
  using R = typename Set::router_type;
  using T = typename Set::T;
  std::vector<std::pair<typename Set::V, Tensor<T>>> copies;
  Options options = set.options();
  if constexpr (is_single_lora<R>) {
    adapter_detail::check_adapter_config(set, dir / "adapter_config.json");
    copies = adapter_detail::read_expert(set, 0, dir / "adapter_model.safetensors");
  } else {
    options = adapter_detail::read_mote_config(set, dir / "mote_config.json");
    for (int e = 0; e < R::experts; ++e) {
      const std::filesystem::path folder = dir / R::expert_name(e);
      adapter_detail::check_adapter_config(set, folder / "adapter_config.json");
      auto part = adapter_detail::read_expert(set, e, folder / "adapter_model.safetensors");
      copies.insert(copies.end(), part.begin(), part.end());
    }
    if constexpr (is_topk_router<R>) {
      const std::filesystem::path path = dir / "router.safetensors";
      if (!std::filesystem::exists(path)) throw io_error("mote: lora: '" + path.string() + "' does not exist; expected the top-k gates");
      const io::safetensors::File file = io::safetensors::File::open(path);
      std::set<std::string> expected;
      for (const auto& layer : set.layers()) {
        const std::string key = adapter_detail::peft_key(adapter_detail::peft_module<Set>(layer->module()), "router");
        adapter_detail::require_tensor<Set>(file, key, layer->module(), layer->gate().shape());
        expected.insert(key);
        copies.emplace_back(layer->gate(), file.tensor<T>(key));
      }
      for (const auto& name : file.names())
        if (!expected.count(name))
          throw value_error("mote: lora: '" + path.string() + "': tensor '" + name + "' matches no adapted module of this model");
    }
  }
  for (auto& [dst, src] : copies) dst.mutable_value().copy_from(src.template to<typename Set::B>());
  set.set_routing_options(options);
}

}  // namespace mote::lora
