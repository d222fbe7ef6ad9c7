// mote's benchmark harness: every figure printed beside a ceiling measured in the same run.
//   GEMM       backend gemm (mote's AVX-512 kernel where the CPU has it) vs a raw Eigen product on
//              the same shapes (both use every core), and each against the FMA peak
//   tape       cost of recording and back-propagating one tiny op
//   MLP step   forward + backward + AdamW of a small MLP, as GFLOP/s against the GEMM peak
//   models     GPT-2 shapes C1 (124M, batch 4 x 64) and C2 (6 layers, d 384, vocab 8192, batch 8 x 128):
//              training step, forward, and KV-cache decode against GEMM peak and memory bandwidth
//   lora       at C2, rank 16 on every linear layer: LoRA, MoTE (3 step experts + shared) and
//              rank-32 single-LoRA training steps against the full training step of the same run, and
//              a frozen-base step with no adapter work (the ceiling of any adapter step)
//   peaks      the cores' register-only fp32 FMA and bf16 dot-product rates: the hardware ceilings
// Usage: mote_bench [--quick] [--models] [--lora] [--bf16]
//   --models / --lora run only those benchmarks; --bf16 runs them under matmul_precision::bf16
//   against the bf16 GEMM peak of the same run
#include <mote/mote.hpp>

#include <Eigen/Core>
#include <sys/resource.h>
#if MOTE_AVX512_KERNELS
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include <cstdint>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace {

using mote_bench::clock_type;
using mote_bench::c2_config;
using mote_bench::dense_weights;
using mote_bench::fmt;
using mote_bench::forward_flops_per_token;
using mote_bench::info_row;
using mote_bench::median_seconds;
using mote_bench::row;

// " bf16" on every model and adapter row when the run multiplies in bf16.
std::string precision_tag;

#if MOTE_AVX512_KERNELS
// Independent accumulator chains only (no memory traffic): the cores' multiply-add ceilings.
__attribute__((target("avx512f"))) float fma_chains(long iterations) {
  __m512 acc[12];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512 x = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iterations; ++it) {
    for (auto& a : acc) a = _mm512_fmadd_ps(x, x, a);
    __asm__ volatile("" : "+v"(x));  // keeps the product inside the loop
  }
  float total = 0;
  for (auto& a : acc) total += _mm512_reduce_add_ps(a);
  return total;
}

__attribute__((target("avx512f,avx512bf16"))) float bf16_dot_chains(long iterations) {
  __m512 acc[12];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512bh x = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  for (long it = 0; it < iterations; ++it) {
    for (auto& a : acc) a = _mm512_dpbf16_ps(a, x, x);
    __asm__ volatile("" : "+v"(x));
  }
  float total = 0;
  for (auto& a : acc) total += _mm512_reduce_add_ps(a);
  return total;
}
#endif

// GFLOP/s of twelve chains of 16-lane multiply-adds on every thread, `macs_per_op` each (16 for
// an fp32 FMA, 32 for vdpbf16ps); 0 where the CPU lacks the instruction.
double chain_peak_gflops(float (*chains)(long), double macs_per_op, int reps) {
  const long iterations = 20'000'000;
  float sink = 0;
  const double s = median_seconds(
      [&] {
        float total = 0;
#pragma omp parallel reduction(+ : total)
        total += chains(iterations);
        sink += total;
      },
      std::max(3, reps / 5));
  if (sink < 0) std::puts("");
  return 2.0 * macs_per_op * 12 * double(iterations) * mote::backend::gemm_detail::max_threads() / s * 1e-9;
}

double fma_peak_gflops(int reps) {
#if MOTE_AVX512_KERNELS
  if (__builtin_cpu_supports("avx512f")) return chain_peak_gflops(fma_chains, 16, reps);
#endif
  (void)reps;
  return 0;
}

double bf16_dot_peak_gflops(int reps) {
#if MOTE_AVX512_KERNELS
  if (mote::backend::bf16_kernel_available()) return chain_peak_gflops(bf16_dot_chains, 32, reps);
#endif
  (void)reps;
  return 0;
}

struct GemmPeaks {
  double fp32, bf16;  // best fp32 product (raw Eigen or mote's kernel); best bf16 product (0 without it)
};

GemmPeaks gemm_benchmarks(int reps) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  struct GemmShape { std::int64_t m, n, k; };
  const GemmShape shapes[] = {{768, 768, 2048}, {2048, 768, 768}, {64, 3072, 768}};
  const double fma_peak = fma_peak_gflops(reps), bf16_peak = bf16_dot_peak_gflops(reps);
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

// Copy bandwidth in bytes/s (read + write counted), the ceiling for weight-bound decode.
double copy_bandwidth(int reps) {
  const std::size_t n = std::size_t{1} << 26;  // 256 MiB of floats per buffer
  std::vector<float> src(n, 1.0f), dst(n, 0.0f);
  const double s = median_seconds([&] { std::memcpy(dst.data(), src.data(), n * sizeof(float)); }, std::max(3, reps / 3));
  return 2.0 * double(n * sizeof(float)) / s;
}

// Read bandwidth in bytes/s with every thread summing its share of a 256 MiB buffer: a stricter
// ceiling for decode, which only reads its weights.
double read_bandwidth(int reps) {
  const std::int64_t n = std::int64_t{1} << 26;
  std::vector<float> src(static_cast<std::size_t>(n), 1.0f);
  float sink = 0;
  const double s = median_seconds(
      [&] {
        float sum = 0;
#pragma omp parallel reduction(+ : sum)
        {
#ifdef _OPENMP
          const std::int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
#else
          const std::int64_t threads = 1, t = 0;
#endif
          const std::int64_t lo = n * t / threads, hi = n * (t + 1) / threads;
          // Eigen's sum keeps several vector accumulators; a plain loop is bound by one add chain.
          sum += Eigen::Map<const Eigen::VectorXf>(src.data() + lo, hi - lo).sum();
        }
        sink += sum;
      },
      std::max(3, reps / 3));
  if (sink == 0) std::puts("");  // keeps the sum alive
  return double(n * sizeof(float)) / s;
}

struct Bandwidths {
  double copy, read;
};

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;
}

template <mote::nn::Config C>
void model_benchmark(const char* name, std::int64_t batch, std::int64_t seq, double gemm_peak, const char* peak_name,
                     Bandwidths bandwidth, int reps) {
  using Model = mote::nn::CausalLM<C, float>;
  Model model(std::uint64_t{1});
  mote::Rng rng(3);
  std::vector<std::int32_t> ids_host(static_cast<std::size_t>(batch * seq)), target_host(ids_host.size());
  for (auto& v : ids_host) v = static_cast<std::int32_t>(rng.below(C.vocab));
  for (auto& v : target_host) v = static_cast<std::int32_t>(rng.below(C.vocab));
  const auto ids = mote::Tensor<std::int32_t>::from_vector({batch, seq}, ids_host);
  const auto targets = mote::Tensor<std::int32_t>::from_vector({batch, seq}, target_host);
  mote::optim::AdamW<float> opt(model.parameters(), {.lr = 1e-4f});
  const double dense = dense_weights<C>(double(model.num_parameters()));
  const double fwd_flops_per_token = forward_flops_per_token<C>(dense, seq);

  const double train_s = median_seconds(
      [&] {
        opt.zero_grad();
        model.loss(ids, targets).backward();
        opt.step();
      },
      std::max(3, reps / 3));
  const double tokens = double(batch * seq);
  const double train_gf = 3.0 * fwd_flops_per_token * tokens / train_s * 1e-9;
  row(std::string(name) + " train step" + precision_tag, fmt("%.0f tok/s", tokens / train_s), std::string(peak_name) + fmt(" %.1f GF/s", gemm_peak),
      train_gf / gemm_peak, "");
  const double fwd_s = median_seconds(
      [&] {
        mote::no_grad off;
        auto logits = model.logits(ids);
      },
      std::max(3, reps / 3));
  const double fwd_gf = fwd_flops_per_token * tokens / fwd_s * 1e-9;
  row(std::string(name) + " forward" + precision_tag, fmt("%.0f tok/s", tokens / fwd_s), std::string(peak_name) + fmt(" %.1f GF/s", gemm_peak),
      fwd_gf / gemm_peak, "");

  // Decode at batch 1: a 32-token prompt, then 128 greedy tokens through the KV cache.
  std::vector<std::int32_t> prompt(ids_host.begin(), ids_host.begin() + 32);
  const std::int64_t new_tokens = 128;
  const double decode_s = median_seconds(
      [&] {
        mote::no_grad off;
        auto out = mote::nn::generate(model, prompt, {.max_new_tokens = new_tokens});
      },
      std::max(2, reps / 5));
  const double decode_tps = double(new_tokens) / decode_s;
  // Each decoded token reads every weight once; the bound is weight bytes over copy bandwidth.
  const double weight_bytes = dense * sizeof(float);
  const double bound_tps = bandwidth.copy / weight_bytes, read_bound_tps = bandwidth.read / weight_bytes;
  row(std::string(name) + " decode b1 (32+128)" + precision_tag, fmt("%.0f tok/s", decode_tps), fmt("bound %.0f tok/s", bound_tps),
      decode_tps / bound_tps, ">= 0.8");
  row(std::string(name) + " decode, read bound", fmt("%.0f tok/s", decode_tps), fmt("bound %.0f tok/s", read_bound_tps),
      decode_tps / read_bound_tps, "");
  info_row(std::string(name) + " peak RSS so far", fmt("%.0f MiB", peak_rss_mib()));
}


void model_benchmarks(double gemm_peak, const char* peak_name, int reps) {
  const Bandwidths bandwidth{copy_bandwidth(reps), read_bandwidth(reps)};
  info_row("copy bandwidth (read + write)", fmt("%.1f GB/s", bandwidth.copy * 1e-9));
  info_row("read bandwidth (all threads)", fmt("%.1f GB/s", bandwidth.read * 1e-9));
  model_benchmark<c2_config>("C2", 8, 128, gemm_peak, peak_name, bandwidth, reps);
  model_benchmark<mote::presets::gpt2>("C1 gpt2", 4, 64, gemm_peak, peak_name, bandwidth, reps);
}

// Training steps of one adapter configuration at C2: forward, backward and AdamW over what trains.
template <class Router>
struct AdapterStep {
  using Model = mote::nn::CausalLM<c2_config, float>;
  Model model{std::uint64_t{1}};
  mote::lora::ExpertSet<Router, Model> experts;
  mote::optim::AdamW<float> opt;
  explicit AdapterStep(const mote::lora::Options& options)
      : experts(model, options), opt(experts.parameters(), {.lr = 1e-4f}) {
    mote::Rng rng(7);  // non-zero B, as in steady-state training
    for (auto& [name, p] : experts.named_parameters())
      if (name.find("lora_B") != std::string::npos) p.mutable_value().copy_from(mote::Tensor<float>::normal(p.shape(), 0.0, 0.02, rng));
  }
  void run(const mote::Tensor<std::int32_t>& ids, const mote::Tensor<std::int32_t>& targets,
           const mote::Tensor<std::int32_t>* step_ids) {
    opt.zero_grad();
    mote::nn::LossOptions<float> options;
    if constexpr (mote::lora::is_step_router<Router>) options.adapter = experts.route(*step_ids);
    model.loss(ids, targets, options).backward();
    opt.step();
  }
};

void lora_benchmarks(int reps) {
  const std::int64_t batch = 8, seq = 128;
  mote::Rng rng(3);
  std::vector<std::int32_t> ids_host(static_cast<std::size_t>(batch * seq)), target_host(ids_host.size()), steps_host;
  for (auto& v : ids_host) v = static_cast<std::int32_t>(rng.below(c2_config.vocab));
  for (auto& v : target_host) v = static_cast<std::int32_t>(rng.below(c2_config.vocab));
  // Each sequence: three contiguous step runs of different lengths (32..56 tokens each, summing to 128).
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t first = 32 + static_cast<std::int64_t>(rng.below(25)), second = 32 + static_cast<std::int64_t>(rng.below(25));
    for (std::int64_t i = 0; i < seq; ++i) steps_host.push_back(i < first ? 0 : i < first + second ? 1 : 2);
  }
  const auto ids = mote::Tensor<std::int32_t>::from_vector({batch, seq}, ids_host);
  const auto targets = mote::Tensor<std::int32_t>::from_vector({batch, seq}, target_host);
  const auto step_ids = mote::Tensor<std::int32_t>::from_vector({batch, seq}, steps_host);

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
  auto time = [](std::vector<double>& into, const std::function<void()>& fn) {
    const auto start = clock_type::now();
    fn();
    into.push_back(std::chrono::duration<double>(clock_type::now() - start).count());
  };
  const int rounds = std::max(3, reps / 3) + 1;
  for (int r = 0; r < rounds; ++r) {
    time(t_full, [&] {
      full_opt.zero_grad();
      full_model.loss(ids, targets).backward();
      full_opt.step();
    });
    time(t_frozen, [&] {
      frozen_opt.zero_grad();
      frozen_model.loss(ids, targets).backward();
      frozen_opt.step();
    });
    time(t_lora, [&] { lora.run(ids, targets, nullptr); });
    time(t_mote, [&] { mote_step.run(ids, targets, &step_ids); });
    time(t_2r, [&] { lora_2r.run(ids, targets, nullptr); });
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
  std::printf("\n%s\n", mote_step.experts.trainable_parameters_line().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, models_only = false, lora_only = false, bf16 = false;
  for (int i = 1; i < argc; ++i) {
    quick = quick || std::strcmp(argv[i], "--quick") == 0;
    models_only = models_only || std::strcmp(argv[i], "--models") == 0;
    lora_only = lora_only || std::strcmp(argv[i], "--lora") == 0;
    bf16 = bf16 || std::strcmp(argv[i], "--bf16") == 0;
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
  if (lora_only) {
    select_precision();
    lora_benchmarks(reps);
    return 0;
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
  if (!models_only) lora_benchmarks(reps);
}
