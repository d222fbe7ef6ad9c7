#pragma once
// The CPU's ceilings, measured in the run that uses them, each the best of its repetitions: register-only multiply-add peaks, the
// best GEMM of the run, and the read bandwidth of all threads on a buffer of a given size (the
// weights one decoded token reads, or a buffer far larger than the last-level cache for DRAM).
#include <mote/mote.hpp>

#include <Eigen/Core>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MOTE_BENCH_X86 1
#else
#define MOTE_BENCH_X86 0
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace mote_bench {

#if MOTE_BENCH_X86
// Independent accumulator chains only (no memory traffic): the cores' multiply-add ceilings.
__attribute__((target("avx512f"))) inline float fma512_chains(long iterations) {
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

__attribute__((target("avx2,fma"))) inline float fma256_chains(long iterations) {
  __m256 acc[12];
  for (auto& a : acc) a = _mm256_setzero_ps();
  __m256 x = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iterations; ++it) {
    for (auto& a : acc) a = _mm256_fmadd_ps(x, x, a);
    __asm__ volatile("" : "+x"(x));
  }
  alignas(32) float lanes[8];
  __m256 sum = _mm256_setzero_ps();
  for (auto& a : acc) sum = _mm256_add_ps(sum, a);
  _mm256_store_ps(lanes, sum);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

__attribute__((target("avx512f,avx512bf16"))) inline float bf16_dot_chains(long iterations) {
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

inline int bench_threads() { return mote::backend::gemm_detail::max_threads(); }

// GFLOP/s of twelve chains of multiply-adds on every thread, `macs_per_op` multiply-adds each.
inline double chain_peak_gflops(float (*chains)(long), double macs_per_op, int reps) {
  const long iterations = 20'000'000;
  float sink = 0;
  const double s = best_seconds(
      [&] {
        float total = 0;
#pragma omp parallel reduction(+ : total)
        total += chains(iterations);
        sink += total;
      },
      std::max(3, reps));
  if (sink < 0) std::puts("");
  return 2.0 * macs_per_op * 12 * double(iterations) * bench_threads() / s * 1e-9;
}

// fp32 FMA peak of every core (AVX-512 where the CPU has it, else AVX2 + FMA); 0 elsewhere.
inline double fma_peak_gflops(int reps, std::string* isa = nullptr) {
#if MOTE_BENCH_X86
  if (__builtin_cpu_supports("avx512f")) {
    if (isa) *isa = "avx512f";
    return chain_peak_gflops(fma512_chains, 16, reps);
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    if (isa) *isa = "avx2+fma";
    return chain_peak_gflops(fma256_chains, 8, reps);
  }
#endif
  (void)reps;
  if (isa) *isa = "none";
  return 0;
}

inline double bf16_dot_peak_gflops(int reps) {
#if MOTE_BENCH_X86
  if (mote::backend::bf16_kernel_available()) return chain_peak_gflops(bf16_dot_chains, 32, reps);
#endif
  (void)reps;
  return 0;
}

struct GemmShape {
  std::int64_t m, n, k;
};
// The harness's three shapes and C2's MLP product at its 8 x 128 batch.
inline constexpr GemmShape gemm_shapes[] = {{768, 768, 2048}, {2048, 768, 768}, {64, 3072, 768}, {1024, 1536, 384}};

struct GemmRate {
  GemmShape shape;
  double eigen_gflops, backend_gflops;
};

// Raw Eigen (row-major, every thread) and mote's backend gemm on each shape.
inline std::vector<GemmRate> gemm_rates(int reps) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::vector<GemmRate> out;
  for (const auto& s : gemm_shapes) {
    Mat a = Mat::Random(s.m, s.k), b = Mat::Random(s.k, s.n), c(s.m, s.n);
    const double flops = 2.0 * double(s.m) * double(s.n) * double(s.k);
    const double eigen_s = best_seconds([&] { c.noalias() = a * b; }, reps);
    const double backend_s = best_seconds(
        [&] {
          mote::backend::gemm(mote::cpu{}, false, false, s.m, s.n, s.k, 1.0f, a.data(), s.k, b.data(), s.n, 0.0f, c.data(),
                              s.n);
        },
        reps);
    out.push_back({s, flops / eigen_s * 1e-9, flops / backend_s * 1e-9});
  }
  return out;
}

// Bytes/s with every thread summing its share of a buffer of `bytes`, read again and again (after
// one warm-up pass; the fastest pass): what a loop that reads that many bytes per step can reach at best.
inline double read_bandwidth(std::size_t bytes, int reps) {
  const auto n = static_cast<std::int64_t>(bytes / sizeof(float));
  std::vector<float> src(static_cast<std::size_t>(n));
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) src[static_cast<std::size_t>(i)] = 1.0f;  // first touch by the reading thread
  float sink = 0;
  // Small buffers pass in a few milliseconds: read them more often, so that one pass free of other
  // load is among them.
  const int passes = std::max(reps, static_cast<int>(std::min(50.0, 8e9 / double(std::max<std::size_t>(bytes, 1)))));
  const double s = best_seconds(
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
      passes);
  if (sink == 0) std::puts("");  // keeps the sum alive
  return double(n) * sizeof(float) / s;
}

// The last-level cache in bytes, from sysfs (0 if unknown).
inline std::size_t last_level_cache_bytes() {
  std::size_t best = 0;
  for (int index = 0; index < 8; ++index) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string text;
    if (!(f >> text) || text.empty()) continue;
    std::size_t value = std::stoul(text);
    const char unit = text.back();
    if (unit == 'K') value <<= 10;
    if (unit == 'M') value <<= 20;
    best = std::max(best, value);
  }
  return best;
}

// A buffer much larger than the last-level cache: eight times it, at least 512 MiB.
inline std::size_t dram_buffer_bytes() {
  return std::max<std::size_t>(std::size_t{512} << 20, 8 * last_level_cache_bytes());
}

}  // namespace mote_bench
