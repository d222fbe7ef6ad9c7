#pragma once
// Model configuration as a structural literal type: a CausalLM's whole architecture is one template
// argument, so shapes and branches are fixed at compile time and bad combinations fail to compile.
#include <cstdint>

namespace mote::nn {

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
};

// `c` with `vocab` token rows, for naming a model grown by resize_vocab: nn::with_vocab(C, C.vocab + 3).
constexpr Config with_vocab(Config c, std::int64_t vocab) {
  c.vocab = vocab;
  return c;
}

// Compile-time checks of a Config; CausalLM and every block instantiate it.
template <Config C>
struct validate {
  static_assert(C.vocab > 0, "mote::nn::Config: vocab must be positive");
  static_assert(C.d_model > 0, "mote::nn::Config: d_model must be positive");
  static_assert(C.n_layers > 0, "mote::nn::Config: n_layers must be positive");
  static_assert(C.n_heads > 0, "mote::nn::Config: n_heads must be positive");
  static_assert(C.n_kv_heads > 0, "mote::nn::Config: n_kv_heads must be positive");
  static_assert(C.d_ff > 0, "mote::nn::Config: d_ff must be positive");
  static_assert(C.max_seq > 0, "mote::nn::Config: max_seq must be positive");
  static_assert(C.vocab <= 2147483647, "mote::nn::Config: vocab must fit token ids in int32");
  static_assert(C.max_seq <= 2147483647, "mote::nn::Config: max_seq must fit positions in int32");
  static_assert(C.d_model % (C.n_heads > 0 ? C.n_heads : 1) == 0, "mote::nn::Config: d_model must be divisible by n_heads");
  static_assert(C.n_heads % (C.n_kv_heads > 0 ? C.n_kv_heads : 1) == 0,
                "mote::nn::Config: n_heads must be divisible by n_kv_heads (grouped-query attention)");
  static_assert(C.positions != Positions::RoPE || C.head_dim() % 2 == 0,
                "mote::nn::Config: RoPE needs an even head dim (d_model / n_heads)");
  static_assert(C.positions != Positions::RoPE || C.rope_theta > 0, "mote::nn::Config: rope_theta must be positive");
  static_assert(C.eps > 0, "mote::nn::Config: eps must be positive");
  static constexpr bool value = true;
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

}  // namespace mote::presets
