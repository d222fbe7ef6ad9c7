// mote's benchmark harness: every figure printed beside a ceiling measured in the same run.
//   GEMM       backend gemm (mote's AVX-512 kernel where the CPU has it) vs a raw Eigen product on
//              the same shapes (both use every core), and each against the FMA peak
//   tape       cost of recording and back-propagating one tiny op
//   MLP step   forward + backward + AdamW of a small MLP, as GFLOP/s against the GEMM peak
//   models     GPT-2 shapes C1 (124M, batch 4 x 64) and C2 (6 layers, d 384, vocab 8192, batch 8 x 128):
//              training step (its first and last loss printed), forward against the GEMM peak, and
//              KV-cache decode against the read bandwidth of a buffer the size of the weights
//   lora       at C2, rank 16 on every linear layer: LoRA, MoTE (3 step experts + shared) and
//              rank-32 single-LoRA training steps against the full training step of the same run, and
//              a frozen-base step with no adapter work (the ceiling of any adapter step)
//   attention  one decoding step's attention at C2's heads over 300 cached positions, batch 1 and
//              16, against reading the same bytes
//   peaks      the cores' register-only fp32 FMA and bf16 dot-product rates: the hardware ceilings
// A training step whose first loss is not within 10% of ln V fails the run (exit status 3).
// Usage: mote_bench [--quick] [--models] [--lora] [--attention] [--bf16]
//   --models / --lora / --attention run only those benchmarks; --bf16 runs them under matmul_precision::bf16
//   against the bf16 GEMM peak of the same run
// For benchmarks/compare.py (one measurement per process, one JSON line):
//   mote_bench --case NAME [--warmup W] [--reps R] [--new-tokens N]   (cases: bench_cases.hpp)
//   mote_bench --ceilings [--reps R]
#include <mote/mote.hpp>

#include <Eigen/Core>
#include <sys/resource.h>

#include <cstdint>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench_cases.hpp"
#include "bench_ceilings.hpp"
#include "bench_common.hpp"

namespace {

using mote_bench::clock_type;
using mote_bench::c2_config;
using mote_bench::dense_weights;
using mote_bench::fmt;
using mote_bench::forward_flops_per_token;
using mote_bench::info_row;
using mote_bench::median;
using mote_bench::median_seconds;
using mote_bench::row;
using mote_bench::bf16_dot_peak_gflops;
using mote_bench::fma_peak_gflops;
using mote_bench::read_bandwidth;

// Set when a training step's first loss is not within 10% of ln V: the run then exits with status 3.
bool bad_first_loss = false;

// Prints a training measurement's first and last loss (over all its steps, warm-up included) and
// checks the first against ln V.
void loss_row(const std::string& what, const std::vector<double>& losses, std::int64_t vocab) {
  if (losses.empty()) return;
  const double ln_v = std::log(double(vocab));
  const bool ok = std::abs(losses.front() - ln_v) <= 0.1 * ln_v;
  bad_first_loss = bad_first_loss || !ok;
  info_row(what + " loss first/last", fmt("%.4f", losses.front()) + fmt(" / %.4f", losses.back()));
  if (!ok)
    std::printf("| %-34s | first loss is not within 10%% of ln V = %.4f |\n", what.c_str(), ln_v);
}

// " bf16" on every model and adapter row when the run multiplies in bf16.
std::string precision_tag;

struct GemmPeaks {
  double fp32, bf16;  // best fp32 product (raw Eigen or mote's kernel); best bf16 product (0 without it)
};

GemmPeaks gemm_benchmarks(int reps) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  struct GemmShape { std::int64_t m, n, k; };
  const GemmShape shapes[] = {{768, 768, 2048}, {2048, 768, 768}, {64, 3072, 768}};
  const double fma_peak = fma_peak_gflops(std::max(3, reps / 5)), bf16_peak = bf16_dot_peak_gflops(std::max(3, reps / 5));
  if (fma_peak > 0) info_row("fp32 FMA peak (registers only)", fmt("%.1f GFLOP/s", fma_peak));
  if (bf16_peak > 0) info_row("bf16 dot peak (registers only)", fmt("%.1f GFLOP/s", bf16_peak));
  GemmPeaks peaks{0, 0};
  for (const auto& s : shapes) {
    Mat a = Mat::Random(s.m, s.k), b = Mat::Random(s.k, s.n), c(s.m, s.n);
    const double flops = 2.0 * double(s.m) * double(s.n) * double(s.k);
    const double eigen_s = median_seconds([&] { c.noalias() = a * b; }, reps);
    const double backend_s = median_seconds(
        [&] {
          mote::backend::gemm(mote::cpu{}, false, false, s.m, s.n, s.k, 1.0f, a.data(), s.k, b.data(), s.n, 0.0f, c.data(), s.n);
        },
        reps);
    // The autograd op on top: allocation plus the same GEMM.
    mote::Rng rng(1);
    mote::Var<float> va(mote::Tensor<float>::uniform({s.m, s.k}, -1, 1, rng));
    mote::Var<float> vb(mote::Tensor<float>::uniform({s.k, s.n}, -1, 1, rng));
    const double op_s = median_seconds([&] { auto y = mote::matmul(va, vb); }, reps);
    const double eigen_gf = flops / eigen_s * 1e-9, backend_gf = flops / backend_s * 1e-9, op_gf = flops / op_s * 1e-9;
    peaks.fp32 = std::max({peaks.fp32, eigen_gf, backend_gf});
    const std::string name = "GEMM " + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
    row(name + " backend vs Eigen", fmt("%.1f GFLOP/s", backend_gf), fmt("Eigen %.1f GFLOP/s", eigen_gf), backend_gf / eigen_gf, ">= 0.95");
    row(name + " matmul op", fmt("%.1f GFLOP/s", op_gf), fmt("Eigen %.1f GFLOP/s", eigen_gf), op_gf / eigen_gf, "");
    if (fma_peak > 0) {
      row(name + " Eigen", fmt("%.1f GFLOP/s", eigen_gf), fmt("FMA peak %.1f", fma_peak), eigen_gf / fma_peak, "");
      row(name + " backend", fmt("%.1f GFLOP/s", backend_gf), fmt("FMA peak %.1f", fma_peak), backend_gf / fma_peak, "");
    }
    if (bf16_peak <= 0) continue;
    const mote::backend::scoped_matmul_precision bf16(mote::backend::matmul_precision::bf16);
    const double bf16_s = median_seconds(
        [&] {
          mote::backend::gemm(mote::cpu{}, false, false, s.m, s.n, s.k, 1.0f, a.data(), s.k, b.data(), s.n, 0.0f, c.data(), s.n);
        },
        reps);
    const double bf16_gf = flops / bf16_s * 1e-9;
    peaks.bf16 = std::max(peaks.bf16, bf16_gf);
    row(name + " bf16", fmt("%.1f GFLOP/s", bf16_gf), fmt("bf16 peak %.1f", bf16_peak), bf16_gf / bf16_peak, "");
  }
  return peaks;
}

void tape_benchmark(int reps) {
  // A chain of n tiny adds, recorded then back-propagated: the graph's own overhead per op.
  const int n = 10000;
  mote::Var<float> x(mote::Tensor<float>::full({1}, 1.0f), true);
  mote::Var<float> c(mote::Tensor<float>::full({1}, 0.5f));
  const double chain_s = median_seconds(
      [&] {
        auto y = x;
        for (int i = 0; i < n; ++i) y = y + c;
        y.backward(mote::Tensor<float>::full({1}, 1.0f));
      },
      reps);
  // Ceiling: the same arithmetic on raw floats, forward and backward.
  volatile float sink = 0;
  const double raw_s = median_seconds(
      [&] {
        float v = 1.0f, g = 0.0f;
        for (int i = 0; i < n; ++i) v += 0.5f;
        for (int i = 0; i < n; ++i) g += 1.0f;
        sink = v + g;
      },
      reps);
  const double per_op_us = chain_s / n * 1e6;
  row("tape: record + backward, 1 op", fmt("%.3f us/op", per_op_us), fmt("raw %.4f us/op", raw_s / n * 1e6),
      per_op_us / 2.0, "< 1 (2 us)");
}

// One decoding step's attention at C2's heads (6 of 64 lanes), 300 cached positions, over six
// layers' separate key/value caches (as a step reads them, so a batch's caches come from memory),
// in a held SpinTeam as nn::generate runs it; each sequence left-padded by its index, as a batch of
// prompts of different lengths is. A float cache and a bf16 one (nn::kv_precision::bf16), the
// same values rounded. Ceiling: reading the same number of bytes, best of the run.
void attention_benchmarks(int reps) {
  const std::int64_t heads = 6, head_dim = 64, kv_len = 300, capacity = 512, layers = 6;
  for (const std::int64_t batch : {std::int64_t{1}, std::int64_t{16}}) {
    mote::Rng rng(11);
    const auto draw = [&](std::int64_t n) {
      std::vector<float> v(static_cast<std::size_t>(n));
      for (auto& x : v) x = static_cast<float>(rng.uniform(-1, 1));
      return v;
    };
    const auto rounded = [](const std::vector<float>& v) {
      std::vector<std::uint16_t> bits(v.size());
      for (std::size_t i = 0; i < v.size(); ++i) bits[i] = mote::backend::bf16_detail::to_bf16(v[i]);
      return bits;
    };
    std::vector<std::vector<float>> keys, values;
    std::vector<std::vector<std::uint16_t>> keys16, values16;
    for (std::int64_t l = 0; l < layers; ++l) {
      keys.push_back(draw(batch * heads * capacity * head_dim));
      values.push_back(draw(batch * heads * capacity * head_dim));
      keys16.push_back(rounded(keys.back()));
      values16.push_back(rounded(values.back()));
    }
    const auto q = draw(batch * heads * head_dim);
    std::vector<float> out(q.size()), probs(static_cast<std::size_t>(batch * heads * kv_len));
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(batch * kv_len), 1);
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t s = 0; s < b; ++s) mask[static_cast<std::size_t>(b * kv_len + s)] = 0;
    for (const bool bf16 : {false, true}) {
      // Bytes of keys and values a step reads: the unmasked positions.
      const double element = bf16 ? double(sizeof(std::uint16_t)) : double(sizeof(float));
      double read = 0;
      for (const auto m : mask) read += m ? double(2 * heads * head_dim * layers) * element : 0.0;
      std::vector<double> times;
      mote::backend::SpinTeam::hold([&] {
        const auto step = [&] {
          for (std::size_t l = 0; l < static_cast<std::size_t>(layers); ++l)
            if (bf16)
              mote::backend::attention_decode_bf16(mote::cpu{}, q.data(), keys16[l].data(), values16[l].data(), mask.data(),
                                                   kv_len, batch, heads, heads, kv_len, head_dim, capacity * head_dim,
                                                   0.125f, out.data(), probs.data());
            else
              mote::backend::attention_forward(mote::cpu{}, q.data(), keys[l].data(), values[l].data(), mask.data(), kv_len,
                                               batch, heads, heads, std::int64_t{1}, kv_len, head_dim,
                                               capacity * head_dim, true, 0.125f, out.data(), probs.data());
        };
        step();
        for (int r = 0; r < reps * 4; ++r) {
          const auto start = clock_type::now();
          step();
          times.push_back(std::chrono::duration<double>(clock_type::now() - start).count());
        }
      });
      const double step_s = median(times);
      const double ceiling = mote_bench::read_bandwidth(static_cast<std::size_t>(read), 5);
      const std::string name = "C2 decode attention b" + std::to_string(batch) + (bf16 ? " bf16 cache" : "");
      row(name + " x 300", fmt("%.1f GB/s", read / step_s * 1e-9), fmt("read %.1f GB/s", ceiling * 1e-9),
          read / step_s / ceiling, "");
      info_row(name + ", 6 layers", fmt("%.3f ms/step", step_s * 1e3));
    }
  }
}

void mlp_benchmark(double gemm_peak_gflops, int reps) {
  // 2-layer MLP with GELU and cross-entropy, batch 256, 1024 -> 4096 -> 1024 -> 512 classes.
  const std::int64_t batch = 256, d_in = 1024, d_hidden = 4096, classes = 512;
  mote::Rng rng(7);
  auto w1 = mote::Var<float>::parameter(mote::Tensor<float>::normal({d_hidden, d_in}, 0, 0.02, rng));
  auto b1 = mote::Var<float>::parameter(mote::Tensor<float>::zeros({d_hidden}));
  auto w2 = mote::Var<float>::parameter(mote::Tensor<float>::normal({classes, d_hidden}, 0, 0.02, rng));
  auto b2 = mote::Var<float>::parameter(mote::Tensor<float>::zeros({classes}));
  mote::Var<float> x(mote::Tensor<float>::normal({batch, d_in}, 0, 1, rng));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (auto& l : labels) l = static_cast<std::int32_t>(rng.below(classes));
  const auto targets = mote::Tensor<std::int32_t>::from_vector({batch}, labels);
  mote::optim::AdamW<float> opt({w1, b1, w2, b2}, {.lr = 1e-3f});
  const double step_s = median_seconds(
      [&] {
        opt.zero_grad();
        auto h = mote::gelu(mote::linear(x, w1, b1));
        auto loss = mote::cross_entropy(mote::linear(h, w2, b2), targets);
        loss.backward();
        opt.step();
      },
      reps);
  const double flops = 6.0 * double(batch) * (double(d_in) * double(d_hidden) + double(d_hidden) * double(classes));
  const double gf = flops / step_s * 1e-9;
  row("MLP train step (fwd+bwd+AdamW)", fmt("%.1f GFLOP/s", gf), fmt("GEMM peak %.1f", gemm_peak_gflops), gf / gemm_peak_gflops, "");
  info_row("MLP train step, samples/s", fmt("%.0f samples/s", double(batch) / step_s));
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;
}

template <mote::nn::Config C>
void model_benchmark(const char* name, std::int64_t batch, std::int64_t seq, double gemm_peak, const char* peak_name,
                     double dram_read, int reps) {
  using Model = mote::nn::CausalLM<C, float>;
  Model model(std::uint64_t{1});
  if (double(model.num_parameters()) != mote_bench::parameter_count<C>())
    std::printf("| %-34s | parameter_count %.0f differs from the model's %lld |\n", name, mote_bench::parameter_count<C>(),
                static_cast<long long>(model.num_parameters()));
  const mote_bench::Batch data = mote_bench::random_batch(C.vocab, batch, seq);
  mote::optim::AdamW<float> opt(model.parameters(), {.lr = 1e-4f});
  const double dense = dense_weights<C>(double(model.num_parameters()));
  const double fwd_flops_per_token = forward_flops_per_token<C>(dense, seq);

  std::vector<double> losses;
  const double train_s = median_seconds(
      [&] {
        opt.zero_grad();
        auto loss = model.loss(data.ids, data.targets);
        losses.push_back(double(loss.item()));
        loss.backward();
        opt.step();
      },
      std::max(3, reps / 3));
  const double tokens = double(batch * seq);
  const double train_gf = 3.0 * fwd_flops_per_token * tokens / train_s * 1e-9;
  row(std::string(name) + " train step" + precision_tag, fmt("%.0f tok/s", tokens / train_s), std::string(peak_name) + fmt(" %.1f GF/s", gemm_peak),
      train_gf / gemm_peak, "");
  loss_row(std::string(name) + " train" + precision_tag, losses, C.vocab);
  const double fwd_s = median_seconds(
      [&] {
        mote::no_grad off;
        auto logits = model.logits(data.ids);
      },
      std::max(3, reps / 3));
  const double fwd_gf = fwd_flops_per_token * tokens / fwd_s * 1e-9;
  row(std::string(name) + " forward" + precision_tag, fmt("%.0f tok/s", tokens / fwd_s), std::string(peak_name) + fmt(" %.1f GF/s", gemm_peak),
      fwd_gf / gemm_peak, "");

  // Decode at batch 1: a 32-token prompt, then 128 greedy tokens through the KV cache. Each of the
  // 128 forward passes (the prompt's and 127 cached steps) reads every weight once, so the bound is
  // the read bandwidth of a buffer of the weights' size over the weight bytes.
  std::vector<std::int32_t> prompt(data.ids_host.begin(), data.ids_host.begin() + 32);
  mote::nn::GenerateOptions greedy;
  greedy.max_new_tokens = 128;
  const double decode_s = median_seconds(
      [&] {
        mote::no_grad off;
        auto out = mote::nn::generate(model, prompt, greedy);
      },
      std::max(2, reps / 5));
  const double decode_tps = double(greedy.max_new_tokens) / decode_s;
  const double weight_bytes = dense * sizeof(float);
  const double weights_read = read_bandwidth(static_cast<std::size_t>(weight_bytes), std::max(3, reps / 3));
  info_row(std::string(name) + " read bandwidth, weights' size", fmt("%.1f GB/s", weights_read * 1e-9) + fmt(" (%.0f MB)", weight_bytes * 1e-6));
  row(std::string(name) + " decode b1 (32+128)" + precision_tag, fmt("%.0f tok/s", decode_tps),
      fmt("read bound %.0f tok/s", weights_read / weight_bytes), decode_tps * weight_bytes / weights_read, "");
  info_row(std::string(name) + " decode, DRAM read bound", fmt("%.0f tok/s", dram_read / weight_bytes));
  info_row(std::string(name) + " peak RSS so far", fmt("%.0f MiB", peak_rss_mib()));
}


void model_benchmarks(double gemm_peak, const char* peak_name, int reps) {
  const std::size_t dram_bytes = mote_bench::dram_buffer_bytes();
  const double dram_read = read_bandwidth(dram_bytes, std::max(3, reps / 5));
  info_row("read bandwidth, DRAM", fmt("%.1f GB/s", dram_read * 1e-9) + fmt(" (%.0f MiB)", double(dram_bytes) / (1 << 20)));
  model_benchmark<c2_config>("C2", 8, 128, gemm_peak, peak_name, dram_read, reps);
  model_benchmark<mote::presets::gpt2>("C1 gpt2", 4, 64, gemm_peak, peak_name, dram_read, reps);
}

using mote_bench::AdapterStep;

void lora_benchmarks(int reps) {
  const std::int64_t batch = 8, seq = 128;
  const mote_bench::Batch data = mote_bench::random_batch(c2_config.vocab, batch, seq);
  const auto& ids = data.ids;
  const auto& targets = data.targets;
  const auto step_ids = mote::Tensor<std::int32_t>::from_vector({batch, seq}, mote_bench::step_id_layout(batch, seq));

  using Model = mote::nn::CausalLM<c2_config, float>;
  Model full_model(std::uint64_t{1});
  mote::optim::AdamW<float> full_opt(full_model.parameters(), {.lr = 1e-4f});
  const mote::lora::Options options{.rank = 16, .alpha = 32};
  AdapterStep<mote::lora::SingleLoRA<>> lora(options);
  AdapterStep<mote::lora::StepRouter<3>> mote_step(options);
  AdapterStep<mote::lora::SingleLoRA<2>> lora_2r(options);
  // The ceiling of any adapter step: a frozen base whose only trainable tensor is the position
  // table, so backward still runs every layer's input gradients but no adapter work at all.
  Model frozen_model(std::uint64_t{1});
  frozen_model.set_trainable(false);
  std::vector<mote::Var<float>> position_table;
  frozen_model.for_each_parameter([&](const std::string& name, mote::Var<float>& p) {
    if (name.find("wpe") != std::string::npos) {
      p.set_requires_grad(true);
      position_table.push_back(p);
    }
  });
  mote::optim::AdamW<float> frozen_opt(position_table, {.lr = 1e-4f});

  // Interleaved rounds, so drifting machine load touches every configuration alike.
  std::vector<double> t_full, t_frozen, t_lora, t_mote, t_2r;
  std::vector<double> l_full, l_frozen, l_lora, l_mote, l_2r;
  auto time = [](std::vector<double>& into, const std::function<void()>& fn) {
    const auto start = clock_type::now();
    fn();
    into.push_back(std::chrono::duration<double>(clock_type::now() - start).count());
  };
  auto full_step = [&](mote::nn::CausalLM<c2_config, float>& model, mote::optim::AdamW<float>& opt, std::vector<double>& losses) {
    opt.zero_grad();
    auto loss = model.loss(ids, targets);
    losses.push_back(double(loss.item()));
    loss.backward();
    opt.step();
  };
  const int rounds = std::max(3, reps / 3) + 1;
  for (int r = 0; r < rounds; ++r) {
    time(t_full, [&] { full_step(full_model, full_opt, l_full); });
    time(t_frozen, [&] { full_step(frozen_model, frozen_opt, l_frozen); });
    time(t_lora, [&] { l_lora.push_back(lora.run(ids, targets, nullptr)); });
    time(t_mote, [&] { l_mote.push_back(mote_step.run(ids, targets, &step_ids)); });
    time(t_2r, [&] { l_2r.push_back(lora_2r.run(ids, targets, nullptr)); });
  }
  auto median = [](std::vector<double> t) {
    t.erase(t.begin());  // the first round warms up
    std::nth_element(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(t.size() / 2), t.end());
    return t[t.size() / 2];
  };
  const double full = median(t_full), frozen = median(t_frozen), lo = median(t_lora), mo = median(t_mote),
               two = median(t_2r);
  const double tokens = double(batch * seq);
  info_row(std::string("C2 full train step") + precision_tag, fmt("%.0f tok/s", tokens / full));
  row(std::string("C2 frozen base, no adapters") + precision_tag, fmt("%.0f tok/s", tokens / frozen), "full step, same run", full / frozen, "");
  row(std::string("C2 LoRA r16 step (speedup)") + precision_tag, fmt("%.0f tok/s", tokens / lo), "full step, same run", full / lo, ">= 1.4");
  row(std::string("C2 MoTE 3+shared step (cost)") + precision_tag, fmt("%.0f tok/s", tokens / mo), "LoRA step, same run", mo / lo, "<= 1.2");
  row(std::string("C2 single LoRA r32 step (cost)") + precision_tag, fmt("%.0f tok/s", tokens / two), "LoRA step, same run", two / lo, "");
  loss_row("C2 full step", l_full, c2_config.vocab);
  loss_row("C2 frozen base", l_frozen, c2_config.vocab);
  loss_row("C2 LoRA r16", l_lora, c2_config.vocab);
  loss_row("C2 MoTE 3+shared", l_mote, c2_config.vocab);
  loss_row("C2 single LoRA r32", l_2r, c2_config.vocab);
  std::printf("\n%s\n", mote_step.experts.trainable_parameters_line().c_str());
}

// One JSON line of this machine's ceilings for benchmarks/compare.py: FMA peaks, each GEMM shape's
// rate, and read bandwidths on buffers of C1's and C2's weight bytes and of several times the LLC.
int print_ceilings(int reps) {
  std::string isa;
  const double fma = fma_peak_gflops(reps, &isa), bf16 = bf16_dot_peak_gflops(reps);
  std::string gemms = "[";
  for (const auto& g : mote_bench::gemm_rates(reps))
    gemms += (gemms.size() > 1 ? "," : "") + fmt("{\"m\":%.0f", double(g.shape.m)) + fmt(",\"n\":%.0f", double(g.shape.n)) +
             fmt(",\"k\":%.0f", double(g.shape.k)) + fmt(",\"eigen_gflops\":%.2f", g.eigen_gflops) +
             fmt(",\"mote_gflops\":%.2f}", g.backend_gflops);
  gemms += "]";
  const double c1_bytes = 4.0 * dense_weights<mote::presets::gpt2>(mote_bench::parameter_count<mote::presets::gpt2>());
  const double c2_bytes = 4.0 * dense_weights<c2_config>(mote_bench::parameter_count<c2_config>());
  const std::size_t dram_bytes = mote_bench::dram_buffer_bytes();
  const double c1_read = read_bandwidth(static_cast<std::size_t>(c1_bytes), reps);
  const double c2_read = read_bandwidth(static_cast<std::size_t>(c2_bytes), reps);
  const double dram_read = read_bandwidth(dram_bytes, reps);
#ifdef __AVX512F__
  const char* compiled = "avx512f";
#elif defined(__AVX2__)
  const char* compiled = "avx2";
#else
  const char* compiled = "baseline";
#endif
  std::printf(
      "RESULT {\"side\":\"mote\",\"case\":\"ceilings\",\"threads\":%d,\"fma_isa\":\"%s\",\"fma_peak_gflops\":%.2f,"
      "\"bf16_peak_gflops\":%.2f,\"gemm\":%s,\"c1_weight_bytes\":%.0f,\"c1_weights_read_gbps\":%.3f,"
      "\"c2_weight_bytes\":%.0f,\"c2_weights_read_gbps\":%.3f,\"dram_bytes\":%.0f,\"dram_read_gbps\":%.3f,"
      "\"llc_bytes\":%.0f,\"compiler\":\"%s\",\"compiled_isa\":\"%s\",\"eigen\":\"%d.%d.%d\","
      "\"bf16_kernel\":%s,\"omp_wait_policy\":\"%s\"}\n",
      mote_bench::bench_threads(), isa.c_str(), fma, bf16, gemms.c_str(), c1_bytes, c1_read * 1e-9, c2_bytes,
      c2_read * 1e-9, double(dram_bytes), dram_read * 1e-9, double(mote_bench::last_level_cache_bytes()), __VERSION__,
      compiled, EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION,
      mote::backend::bf16_kernel_available() ? "true" : "false",
      std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, models_only = false, lora_only = false, bf16 = false, ceilings = false, attention_only = false;
  std::string case_name;
  int warmup = 2, case_reps = 5;
  std::int64_t new_tokens = 128;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (std::strcmp(argv[i], "--case") == 0 && has_value) case_name = argv[++i];
    else if (std::strcmp(argv[i], "--warmup") == 0 && has_value) warmup = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--reps") == 0 && has_value) case_reps = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--new-tokens") == 0 && has_value) new_tokens = std::atoll(argv[++i]);
    else if (std::strcmp(argv[i], "--ceilings") == 0) ceilings = true;
    else if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--models") == 0) models_only = true;
    else if (std::strcmp(argv[i], "--lora") == 0) lora_only = true;
    else if (std::strcmp(argv[i], "--attention") == 0) attention_only = true;
    else if (std::strcmp(argv[i], "--bf16") == 0) bf16 = true;
    else {
      std::fprintf(stderr, "mote_bench: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (ceilings) return print_ceilings(std::max(3, case_reps));
  if (!case_name.empty()) {
    try {
      return mote_bench::run_case(case_name, std::max(0, warmup), std::max(1, case_reps), new_tokens);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mote_bench: %s: %s\n", case_name.c_str(), e.what());
      return 1;
    }
  }
  const int reps = quick ? 3 : 15;
  std::printf("mote benchmarks (Eigen %d.%d.%d, %d OpenMP threads, bf16 kernel %s)\n\n", EIGEN_WORLD_VERSION,
              EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, Eigen::nbThreads(),
              mote::backend::bf16_kernel_available() ? "yes" : "no");
  std::printf("| %-34s | %-18s | %-20s | %6s | %-10s |\n", "what", "figure", "ceiling (same run)", "ratio", "target");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(36, '-').c_str(), std::string(20, '-').c_str(), std::string(22, '-').c_str(),
              std::string(8, '-').c_str(), std::string(12, '-').c_str());
  const auto select_precision = [&] {
    if (!bf16) return;
    mote::backend::set_matmul_precision(mote::backend::matmul_precision::bf16);
    precision_tag = " bf16";
  };
  if (attention_only) {
    attention_benchmarks(reps);
    return 0;
  }
  if (lora_only) {
    select_precision();
    lora_benchmarks(reps);
    return bad_first_loss ? 3 : 0;
  }
  const GemmPeaks peaks = gemm_benchmarks(reps);
  if (!models_only) {
    tape_benchmark(reps);
    mlp_benchmark(peaks.fp32, reps);
  }
  select_precision();
  // Model rows compare against the GEMM peak of the precision they multiply in.
  const bool bf16_peak = bf16 && peaks.bf16 > 0;
  model_benchmarks(bf16_peak ? peaks.bf16 : peaks.fp32, bf16_peak ? "bf16 GEMM" : "GEMM peak", reps);
  if (!models_only) {
    attention_benchmarks(reps);
    lora_benchmarks(reps);
  }
  if (bad_first_loss) std::printf("\nfailed: a training step's first loss is not within 10%% of ln V\n");
  return bad_first_loss ? 3 : 0;
}
