#pragma once
// Model configuration as a structural literal type: a CausalLM's whole architecture is one template
// argument, so shapes and branches are fixed at compile time and bad combinations fail to compile.
// A size set to nn::dynamic (as Eigen's Dynamic) makes the Config a family whose sizes come at run time.
#include <cstdint>
#include <string>

#include "mote/core/error.hpp"

namespace mote::nn {

// A size known only at run time: a Config with any size dynamic is "run-time sized", and its
// models take all their sizes (and eps, rope_theta) from a run-time Config at construction.
inline constexpr std::int64_t dynamic = -1;

enum class Norm { LayerNorm, RMSNorm };
// GeluTanhMLP: GPT-2 (c_fc, gelu-tanh, c_proj); SwiGLU: Llama (down(silu(gate) * up)).
enum class Activation { GeluTanhMLP, SwiGLU };
enum class Positions { Learned, RoPE };

// Every member is public and structural so a Config can be a non-type template argument.
// The checkpoint layout (parameter names, fused c_attn, Conv1D [in, out] weights) follows the
// MLP family: GeluTanhMLP models use GPT-2's names, SwiGLU models use Llama's.
struct Config {
  std::int64_t vocab = 0;
  std::int64_t d_model = 0;
  std::int64_t n_layers = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_kv_heads = 0;
  std::int64_t d_ff = 0;
  std::int64_t max_seq = 0;
  Norm norm = Norm::LayerNorm;
  double eps = 1e-5;
  Activation activation = Activation::GeluTanhMLP;
  Positions positions = Positions::Learned;
  double rope_theta = 10000.0;
  bool bias = true;
  bool tied_embeddings = true;

  constexpr std::int64_t head_dim() const { return n_heads > 0 ? d_model / n_heads : 0; }
  constexpr std::int64_t kv_dim() const { return n_kv_heads * head_dim(); }
  constexpr bool gpt2_layout() const { return activation == Activation::GeluTanhMLP; }
  // Whether any size is nn::dynamic; the family fields (norm, activation, positions, bias,
  // tied_embeddings) are always compile-time.
  constexpr bool runtime_sized() const {
    return vocab == dynamic || d_model == dynamic || n_layers == dynamic || n_heads == dynamic ||
           n_kv_heads == dynamic || d_ff == dynamic || max_seq == dynamic;
  }
  // Whether `other` describes the same architecture family (the same layers in the same layout).
  constexpr bool same_family(const Config& other) const {
    return norm == other.norm && activation == other.activation && positions == other.positions && bias == other.bias &&
           tied_embeddings == other.tied_embeddings;
  }
};

// `c` with `vocab` token rows, for naming a model grown by resize_vocab: nn::with_vocab(C, C.vocab + 3).
constexpr Config with_vocab(Config c, std::int64_t vocab) {
  c.vocab = vocab;
  return c;
}

// The Config of a model of Config `c` grown by `added` token rows: a run-time sized Config keeps its
// type (the vocab is a run-time size), a compile-time one becomes with_vocab(c, c.vocab + added).
constexpr Config with_added_vocab(Config c, std::int64_t added) {
  return c.runtime_sized() ? c : with_vocab(c, c.vocab + added);
}

// The family fields of `family` (norm, activation, positions, bias, tied_embeddings) with the sizes,
// eps and rope_theta of `sizes`: nn::with_sizes(presets::llama_family, some_config).
constexpr Config with_sizes(Config family, const Config& sizes) {
  family.vocab = sizes.vocab;
  family.d_model = sizes.d_model;
  family.n_layers = sizes.n_layers;
  family.n_heads = sizes.n_heads;
  family.n_kv_heads = sizes.n_kv_heads;
  family.d_ff = sizes.d_ff;
  family.max_seq = sizes.max_seq;
  family.eps = sizes.eps;
  family.rope_theta = sizes.rope_theta;
  return family;
}

// Compile-time checks of a Config; CausalLM and every block instantiate it. A dynamic size is
// checked at run time instead (check_sizes), and so is any check that involves it.
template <Config C>
struct validate {
  static constexpr bool known(std::int64_t size) { return size != dynamic; }
  static_assert(!known(C.vocab) || C.vocab > 0, "mote::nn::Config: vocab must be positive (or nn::dynamic)");
  static_assert(!known(C.d_model) || C.d_model > 0, "mote::nn::Config: d_model must be positive (or nn::dynamic)");
  static_assert(!known(C.n_layers) || C.n_layers > 0, "mote::nn::Config: n_layers must be positive (or nn::dynamic)");
  static_assert(!known(C.n_heads) || C.n_heads > 0, "mote::nn::Config: n_heads must be positive (or nn::dynamic)");
  static_assert(!known(C.n_kv_heads) || C.n_kv_heads > 0, "mote::nn::Config: n_kv_heads must be positive (or nn::dynamic)");
  static_assert(!known(C.d_ff) || C.d_ff > 0, "mote::nn::Config: d_ff must be positive (or nn::dynamic)");
  static_assert(!known(C.max_seq) || C.max_seq > 0, "mote::nn::Config: max_seq must be positive (or nn::dynamic)");
  static_assert(C.vocab <= 2147483647, "mote::nn::Config: vocab must fit token ids in int32");
  static_assert(C.max_seq <= 2147483647, "mote::nn::Config: max_seq must fit positions in int32");
  static_assert(!known(C.d_model) || !known(C.n_heads) || C.d_model % (C.n_heads > 0 ? C.n_heads : 1) == 0,
                "mote::nn::Config: d_model must be divisible by n_heads");
  static_assert(!known(C.n_heads) || !known(C.n_kv_heads) || C.n_heads % (C.n_kv_heads > 0 ? C.n_kv_heads : 1) == 0,
                "mote::nn::Config: n_heads must be divisible by n_kv_heads (grouped-query attention)");
  static_assert(C.positions != Positions::RoPE || !known(C.d_model) || !known(C.n_heads) || C.head_dim() % 2 == 0,
                "mote::nn::Config: RoPE needs an even head dim (d_model / n_heads)");
  // A run-time sized Config takes eps and rope_theta from the run-time Config too.
  static_assert(C.runtime_sized() || C.positions != Positions::RoPE || C.rope_theta > 0,
                "mote::nn::Config: rope_theta must be positive");
  static_assert(C.runtime_sized() || C.eps > 0, "mote::nn::Config: eps must be positive");
  static constexpr bool value = true;
};

namespace config_detail {

// A Config field as the family's config.json calls it, with mote's name after it: "n_embd (d_model)".
inline std::string key(const Config& family, const char* field) {
  const std::string f = field;
  const bool gpt2 = family.gpt2_layout();
  std::string json;
  if (f == "vocab") json = "vocab_size";
  else if (f == "d_model") json = gpt2 ? "n_embd" : "hidden_size";
  else if (f == "n_layers") json = gpt2 ? "n_layer" : "num_hidden_layers";
  else if (f == "n_heads") json = gpt2 ? "n_head" : "num_attention_heads";
  else if (f == "n_kv_heads") json = gpt2 ? "" : "num_key_value_heads";  // GPT-2's config.json has no such key
  else if (f == "d_ff") json = gpt2 ? "n_inner" : "intermediate_size";
  else if (f == "max_seq") json = gpt2 ? "n_positions" : "max_position_embeddings";
  else if (f == "eps") json = gpt2 ? "layer_norm_epsilon" : "rms_norm_eps";
  else if (f == "rope_theta") json = "rope_theta";
  return json.empty() || json == f ? f : json + " (" + f + ")";
}

inline const char* name(Norm n) { return n == Norm::LayerNorm ? "LayerNorm" : "RMSNorm"; }
inline const char* name(Activation a) { return a == Activation::GeluTanhMLP ? "GeluTanhMLP" : "SwiGLU"; }
inline const char* name(Positions p) { return p == Positions::Learned ? "Learned" : "RoPE"; }
inline const char* name(bool b) { return b ? "true" : "false"; }

}  // namespace config_detail

// Checks the run-time Config `sizes` of a model of the compiled family C and returns it: every
// size positive (and equal to C's where C fixes it), d_model divisible by n_heads, n_heads by
// n_kv_heads, an even head dim for RoPE, eps and rope_theta positive, and the family fields equal
// to C's. Throws value_error naming the field by the family's config.json key.
template <Config C>
const Config& check_sizes(const Config& sizes) {
  using config_detail::key;
  const std::string where = "mote: nn::Config (run-time sizes): ";
  const auto family = [&](const char* field, const char* got, const char* compiled) {
    if (std::string(got) != compiled)
      throw value_error(where + field + " is " + got + " but the compiled family has " + compiled);
  };
  family("norm", config_detail::name(sizes.norm), config_detail::name(C.norm));
  family("activation", config_detail::name(sizes.activation), config_detail::name(C.activation));
  family("positions", config_detail::name(sizes.positions), config_detail::name(C.positions));
  family("bias", config_detail::name(sizes.bias), config_detail::name(C.bias));
  family("tied_embeddings", config_detail::name(sizes.tied_embeddings), config_detail::name(C.tied_embeddings));
  const auto size = [&](const char* field, std::int64_t got, std::int64_t compiled) {
    if (got <= 0) throw value_error(where + key(C, field) + " is " + std::to_string(got) + "; expected a positive size");
    if (compiled != dynamic && got != compiled)
      throw value_error(where + key(C, field) + " is " + std::to_string(got) + " but the compiled Config fixes it at " +
                        std::to_string(compiled));
  };
  size("vocab", sizes.vocab, C.vocab);
  size("d_model", sizes.d_model, C.d_model);
  size("n_layers", sizes.n_layers, C.n_layers);
  size("n_heads", sizes.n_heads, C.n_heads);
  size("n_kv_heads", sizes.n_kv_heads, C.n_kv_heads);
  size("d_ff", sizes.d_ff, C.d_ff);
  size("max_seq", sizes.max_seq, C.max_seq);
  constexpr std::int64_t int32_max = 2147483647;
  if (sizes.vocab > int32_max)
    throw value_error(where + key(C, "vocab") + " is " + std::to_string(sizes.vocab) + "; token ids must fit in int32");
  if (sizes.max_seq > int32_max)
    throw value_error(where + key(C, "max_seq") + " is " + std::to_string(sizes.max_seq) + "; positions must fit in int32");
  if (sizes.d_model % sizes.n_heads != 0)
    throw value_error(where + key(C, "d_model") + " " + std::to_string(sizes.d_model) + " is not divisible by " +
                      key(C, "n_heads") + " " + std::to_string(sizes.n_heads));
  if (sizes.n_heads % sizes.n_kv_heads != 0)
    throw value_error(where + key(C, "n_heads") + " " + std::to_string(sizes.n_heads) + " is not divisible by " +
                      key(C, "n_kv_heads") + " " + std::to_string(sizes.n_kv_heads) + " (grouped-query attention)");
  if (C.positions == Positions::RoPE && sizes.head_dim() % 2 != 0)
    throw value_error(where + "RoPE needs an even head dim, but " + key(C, "d_model") + " " + std::to_string(sizes.d_model) +
                      " / " + key(C, "n_heads") + " " + std::to_string(sizes.n_heads) + " is " + std::to_string(sizes.head_dim()));
  if (!(sizes.eps > 0)) throw value_error(where + key(C, "eps") + " is " + std::to_string(sizes.eps) + "; expected a positive value");
  if (C.positions == Positions::RoPE && !(sizes.rope_theta > 0))
    throw value_error(where + "rope_theta is " + std::to_string(sizes.rope_theta) + "; expected a positive value");
  return sizes;
}

// What a layer or model knows of its sizes: for a compile-time Config, C itself (nothing stored,
// sizes() is constexpr); for a run-time sized one, a copy of the run-time Config it was built with.
template <Config C, bool = C.runtime_sized()>
class Sized {
 public:
  constexpr Sized() noexcept = default;
  constexpr explicit Sized(const Config& /*sizes: C's own*/) noexcept {}
  static constexpr const Config& sizes() noexcept { return compiled_; }

 private:
  static constexpr Config compiled_ = C;
};

template <Config C>
class Sized<C, true> {
 public:
  explicit Sized(const Config& sizes) : sizes_(sizes) {}
  const Config& sizes() const noexcept { return sizes_; }

 private:
  Config sizes_;
};

}  // namespace mote::nn

namespace mote::presets {

using nn::Activation;
using nn::Config;
using nn::Norm;
using nn::Positions;

// GPT-2 small (124M): learned positions, LayerNorm, gelu-tanh MLP, biases, tied lm_head.
inline constexpr Config gpt2{.vocab = 50257, .d_model = 768, .n_layers = 12, .n_heads = 12, .n_kv_heads = 12,
                             .d_ff = 3072, .max_seq = 1024, .norm = Norm::LayerNorm, .eps = 1e-5,
                             .activation = Activation::GeluTanhMLP, .positions = Positions::Learned,
                             .rope_theta = 10000.0, .bias = true, .tied_embeddings = true};
// GPT-2 medium (355M).
inline constexpr Config gpt2_medium{.vocab = 50257, .d_model = 1024, .n_layers = 24, .n_heads = 16, .n_kv_heads = 16,
                                    .d_ff = 4096, .max_seq = 1024, .norm = Norm::LayerNorm, .eps = 1e-5,
                                    .activation = Activation::GeluTanhMLP, .positions = Positions::Learned,
                                    .rope_theta = 10000.0, .bias = true, .tied_embeddings = true};
// Llama 2 7B: RMSNorm, SwiGLU, RoPE, no biases, separate lm_head.
inline constexpr Config llama2_7b{.vocab = 32000, .d_model = 4096, .n_layers = 32, .n_heads = 32, .n_kv_heads = 32,
                                  .d_ff = 11008, .max_seq = 4096, .norm = Norm::RMSNorm, .eps = 1e-5,
                                  .activation = Activation::SwiGLU, .positions = Positions::RoPE,
                                  .rope_theta = 10000.0, .bias = false, .tied_embeddings = false};
// Llama 3 8B: grouped-query attention with 8 kv heads, RoPE theta 500000.
inline constexpr Config llama3_8b{.vocab = 128256, .d_model = 4096, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8,
                                  .d_ff = 14336, .max_seq = 8192, .norm = Norm::RMSNorm, .eps = 1e-5,
                                  .activation = Activation::SwiGLU, .positions = Positions::RoPE,
                                  .rope_theta = 500000.0, .bias = false, .tied_embeddings = false};
// Test-sized GPT-2 (the PyTorch parity fixtures use exactly this shape).
inline constexpr Config tiny_gpt2{.vocab = 64, .d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4,
                                  .d_ff = 128, .max_seq = 16, .norm = Norm::LayerNorm, .eps = 1e-5,
                                  .activation = Activation::GeluTanhMLP, .positions = Positions::Learned,
                                  .rope_theta = 10000.0, .bias = true, .tied_embeddings = true};
// Test-sized Llama with grouped-query attention (4 heads over 2 kv heads).
inline constexpr Config tiny_llama{.vocab = 64, .d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                                   .d_ff = 64, .max_seq = 16, .norm = Norm::RMSNorm, .eps = 1e-5,
                                   .activation = Activation::SwiGLU, .positions = Positions::RoPE,
                                   .rope_theta = 10000.0, .bias = false, .tied_embeddings = false};

// Families with every size nn::dynamic: CausalLM<gpt2_family, float> takes its sizes (and eps,
// rope_theta) from a run-time Config or a checkpoint's config.json. GPT-2: LayerNorm, gelu-tanh MLP,
// learned positions, biases, tied lm_head.
inline constexpr Config gpt2_family{.vocab = nn::dynamic, .d_model = nn::dynamic, .n_layers = nn::dynamic,
                                    .n_heads = nn::dynamic, .n_kv_heads = nn::dynamic, .d_ff = nn::dynamic,
                                    .max_seq = nn::dynamic, .norm = Norm::LayerNorm, .eps = 1e-5,
                                    .activation = Activation::GeluTanhMLP, .positions = Positions::Learned,
                                    .rope_theta = 10000.0, .bias = true, .tied_embeddings = true};
// Llama: RMSNorm, SwiGLU, RoPE, no biases, separate lm_head.
inline constexpr Config llama_family{.vocab = nn::dynamic, .d_model = nn::dynamic, .n_layers = nn::dynamic,
                                     .n_heads = nn::dynamic, .n_kv_heads = nn::dynamic, .d_ff = nn::dynamic,
                                     .max_seq = nn::dynamic, .norm = Norm::RMSNorm, .eps = 1e-5,
                                     .activation = Activation::SwiGLU, .positions = Positions::RoPE,
                                     .rope_theta = 10000.0, .bias = false, .tied_embeddings = false};

}  // namespace mote::presets
