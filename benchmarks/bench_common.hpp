#pragma once
// What both benchmark programs share: timing, the table's rows, the C2 shape and the FLOP
// count of a model step.
#include <mote/mote.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace mote_bench {

using clock_type = std::chrono::steady_clock;

// The median of a set of figures (the mean of the middle two for an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Median seconds per call of fn over `reps` timed runs after one warm-up.
inline double median_seconds(const std::function<void()>& fn, int reps) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto start = clock_type::now();
    fn();
    t.push_back(std::chrono::duration<double>(clock_type::now() - start).count());
  }
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[static_cast<std::size_t>(reps / 2)];
}

// Fewest seconds per call of fn over `reps` timed runs after one warm-up: for ceilings, which are
// the most a machine can do (other load only ever lowers a rate).
inline double best_seconds(const std::function<void()>& fn, int reps) {
  fn();
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto start = clock_type::now();
    fn();
    const double t = std::chrono::duration<double>(clock_type::now() - start).count();
    best = r == 0 ? t : std::min(best, t);
  }
  return best;
}

inline void row(const std::string& what, const std::string& figure, const std::string& ceiling, double ratio, const std::string& target) {
  std::printf("| %-34s | %-18s | %-20s | %6.3f | %-10s |\n", what.c_str(), figure.c_str(), ceiling.c_str(), ratio, target.c_str());
}

// A figure with no ceiling of its own (a throughput shown beside the row that has one).
inline void info_row(const std::string& what, const std::string& figure) {
  std::printf("| %-34s | %-18s | %-20s | %6s | %-10s |\n", what.c_str(), figure.c_str(), "", "", "");
}

inline std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Shape C2 of the benchmarks: 6 layers, 6 heads, d 384, vocab 8192 (C1 is presets::gpt2).
inline constexpr mote::nn::Config c2_config{
    .vocab = 8192, .d_model = 384, .n_layers = 6, .n_heads = 6, .n_kv_heads = 6, .d_ff = 1536, .max_seq = 1024,
    .norm = mote::nn::Norm::LayerNorm, .eps = 1e-5, .activation = mote::nn::Activation::GeluTanhMLP,
    .positions = mote::nn::Positions::Learned, .rope_theta = 10000.0, .bias = true, .tied_embeddings = true};

// Parameters of a GPT-2 or Llama style config, counted from its shape without building a model
// (mote_bench's table checks it against CausalLM::num_parameters for the shapes it builds).
template <mote::nn::Config C>
constexpr double parameter_count() {
  const double d = double(C.d_model), ff = double(C.d_ff), kv = double(C.n_kv_heads) * (d / double(C.n_heads));
  const bool gated = C.activation == mote::nn::Activation::SwiGLU;
  const double norm = C.norm == mote::nn::Norm::LayerNorm ? 2.0 * d : d;
  double layer = d * d + 2.0 * d * kv + d * d + (gated ? 3.0 : 2.0) * d * ff + 2.0 * norm;
  if (C.bias) layer += d + 2.0 * kv + d + (gated ? 2.0 : 1.0) * ff + d;
  double total = double(C.vocab) * d + double(C.n_layers) * layer + norm;
  if (C.positions == mote::nn::Positions::Learned) total += double(C.max_seq) * d;
  if (!C.tied_embeddings) total += double(C.vocab) * d;
  return total;
}

// Weights that enter matmuls: all parameters but the position table and an untied input table
// (embeddings are gathers; a tied table is also the LM head).
template <mote::nn::Config C>
double dense_weights(double params) {
  const double position_table = C.positions == mote::nn::Positions::Learned ? double(C.max_seq * C.d_model) : 0.0;
  const double input_table = C.tied_embeddings ? 0.0 : double(C.vocab * C.d_model);
  return params - position_table - input_table;
}

// Forward FLOPs per token at sequence length seq: 2 per dense weight, plus attention's QK^T and PV
// (the causal half of 4 * layers * seq * d_model).
template <mote::nn::Config C>
double forward_flops_per_token(double dense, std::int64_t seq) {
  return 2.0 * dense + 2.0 * double(C.n_layers) * double(seq) * double(C.d_model);
}

}  // namespace mote_bench
