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
