#pragma once
// What mote's own CPU GEMM kernels share (the fp32 one in fp32_gemm.hpp, the bf16 one in
// bf16_gemm.hpp): strided operand views, per-thread packing buffers, the CPU feature checks, and
// the split of C into one band per thread. Kernels are compiled with function-level target
// attributes and chosen at run time, so a build without -march flags still runs them.
#include <algorithm>
#include <cstdint>
#include <memory>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define MOTE_AVX512_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define MOTE_AVX512_KERNELS 0
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mote::backend::packed_gemm {

// Register tile of both kernels: 12 rows x 32 columns is 24 zmm accumulators, plus two B vectors
// and a broadcast.
inline constexpr std::int64_t tile_rows = 12;
inline constexpr std::int64_t tile_cols = 32;

// A strided view of an operand: element (i, j) at data[i * row_stride + j * col_stride], so a
// transposed operand is the same view with its strides swapped. One stride is always 1.
struct Operand {
  const float* data;
  std::int64_t row_stride, col_stride;
  const float* ptr(std::int64_t i, std::int64_t j) const noexcept { return data + i * row_stride + j * col_stride; }
  float at(std::int64_t i, std::int64_t j) const noexcept { return *ptr(i, j); }
  // op(X) of a row-major X with leading dimension ld.
  static Operand of(const float* x, std::int64_t ld, bool transposed) noexcept {
    return transposed ? Operand{x, 1, ld} : Operand{x, ld, 1};
  }
};

// Per-thread packing buffers, grown on demand and 64-byte aligned for the vector loads.
class PackBuffer {
 public:
  std::uint32_t* get(std::size_t words) {
    if (words > capacity_) {
      storage_.reset(new std::uint32_t[words + 16]);
      capacity_ = words;
    }
    auto address = reinterpret_cast<std::uintptr_t>(storage_.get());
    return reinterpret_cast<std::uint32_t*>((address + 63) & ~std::uintptr_t(63));
  }
  float* get_floats(std::size_t count) { return reinterpret_cast<float*>(get(count)); }

 private:
  std::unique_ptr<std::uint32_t[]> storage_;
  std::size_t capacity_ = 0;
};

#if MOTE_AVX512_KERNELS
// AVX512-F and -BW, and an OS that saves the zmm state.
inline bool cpu_has_avx512() noexcept {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return false;  // OSXSAVE
  unsigned xcr0_low, xcr0_high;
  __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  if ((xcr0_low & 0xe6u) != 0xe6u) return false;  // SSE, AVX and the three AVX-512 states
  return __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (ebx & (1u << 16)) && (ebx & (1u << 30));
}

// AVX512-BF16 (vdpbf16ps, vcvtne2ps2bf16) on top of cpu_has_avx512().
inline bool cpu_has_bf16_dot() noexcept {
  unsigned eax, ebx, ecx, edx;
  return cpu_has_avx512() && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5));
}

// The first `count` of 16 lanes.
__attribute__((target("avx512f"))) inline __mmask16 first_lanes(std::int64_t count) noexcept {
  return count >= 16 ? __mmask16(0xffff) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
}
#endif

// Threads for a product of m * n * k multiply-adds: one inside a parallel region or below 2M
// multiply-adds (forking costs more than the second core gives back), else every thread.
inline int threads_for(std::int64_t m, std::int64_t n, std::int64_t k) {
#ifdef _OPENMP
  if (omp_in_parallel() || double(m) * double(n) * double(k) < double(1 << 21)) return 1;
  return omp_get_max_threads();
#else
  (void)m, (void)n, (void)k;
  return 1;
#endif
}

// Calls blocked(rows, cols, a_band, b_band, c_band) once per thread, each on its own band of
// C[m, n] in whole tiles along C's longer side: every thread packs its own operands, so there is
// no shared buffer and no barrier.
template <class Blocked>
void run_in_bands(std::int64_t m, std::int64_t n, std::int64_t k, const Operand& a, const Operand& b, float* c,
                  std::int64_t ldc, Blocked&& blocked) {
  const int threads = threads_for(m, n, k);
  if (threads == 1) {
    blocked(m, n, a, b, c);
    return;
  }
  const bool by_rows = m >= n;
  const std::int64_t unit = by_rows ? tile_rows : tile_cols, extent = by_rows ? m : n;
  const std::int64_t units = (extent + unit - 1) / unit;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < threads; ++t) {
    const std::int64_t lo = std::min(extent, units * t / threads * unit);
    const std::int64_t hi = std::min(extent, units * (t + 1) / threads * unit);
    if (hi <= lo) continue;
    if (by_rows)
      blocked(hi - lo, n, Operand{a.data + lo * a.row_stride, a.row_stride, a.col_stride}, b, c + lo * ldc);
    else
      blocked(m, hi - lo, a, Operand{b.data + lo * b.col_stride, b.row_stride, b.col_stride}, c + lo);
  }
}

}  // namespace mote::backend::packed_gemm
