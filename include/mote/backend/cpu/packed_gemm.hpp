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

// GCC 12's _mm512_undefined_* self-initialise, which -O1 reports once inlined into a kernel: each
// header's AVX-512 kernels sit between these two.
#if defined(__GNUC__) && !defined(__clang__)
#define MOTE_AVX512_WARNINGS_OFF                                                                   \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define MOTE_AVX512_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define MOTE_AVX512_WARNINGS_OFF
#define MOTE_AVX512_WARNINGS_ON
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
  // The same buffer as `count` 4-byte elements of another type (a float, or a pair of bf16).
  template <class Packed>
  Packed* get_as(std::size_t count) {
    static_assert(sizeof(Packed) == sizeof(std::uint32_t));
    return reinterpret_cast<Packed*>(get(count));
  }

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

// Asks for a tile's lines of C before its k loop, so that the store after it finds them cached.
__attribute__((target("avx512f"))) inline void prefetch_tile(const float* c, std::int64_t ldc, std::int64_t rows,
                                                             std::int64_t cols) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    if (cols > 16) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16), _MM_HINT_T0);
  }
}
// c[lanes] = alpha * value + beta * c[lanes]. beta 0 never reads c, which may hold poison.
__attribute__((target("avx512f"))) inline void store_lanes(float* c, __mmask16 lanes, __m512 value, float alpha,
                                                           float beta) {
  value = _mm512_mul_ps(_mm512_set1_ps(alpha), value);
  if (beta != 0.0f) value = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(lanes, c), value);
  _mm512_mask_storeu_ps(c, lanes, value);
}

// C[rows <= 12, cols <= 32] = alpha * acc + beta * C: a register tile's accumulators, two
// vectors a row, stored through lane masks.
__attribute__((target("avx512f"))) inline void store_tile(const __m512 (*acc)[2], float alpha, float beta, float* c,
                                                          std::int64_t ldc, std::int64_t rows, std::int64_t cols) {
  const __mmask16 mask_low = first_lanes(cols), mask_high = first_lanes(cols - 16);
  for (std::int64_t r = 0; r < rows; ++r) {
    store_lanes(c + r * ldc, mask_low, acc[r][0], alpha, beta);
    store_lanes(c + r * ldc + 16, mask_high, acc[r][1], alpha, beta);
  }
}
#endif

// One product op(A) . op(B) of a sum: its operands and depth.
struct Term {
  Operand a, b;
  std::int64_t k;
};

// One thread's share of C[m, n] = alpha * (A . B + A2 . B2) + beta * C through packed blocks,
// where the optional second term (a LoRA update, say) is shallow: its k2 steps ride at the end of
// the first term's last k block, inside the same register tiles, so C is written once. Kernel
// supplies what differs between the fp32 and bf16 kernels:
//   Packed, block_k, block_rows, block_cols   the packed element and the cache blocks;
//   steps(depth)                              packed steps for `depth` k values (k, or k pairs);
//   pack<width>(x, row0, rows, k0, depth, stride, out)  panels of `width` rows of x, each
//                                             [step][row], `stride` elements apart;
//   tile(steps, a, b, alpha, beta, c, ldc, rows, cols)  one register tile of C.
template <class Kernel>
void blocked_gemm(std::int64_t m, std::int64_t n, float alpha, const Term& main, const Term* extra, float beta,
                  float* c, std::int64_t ldc) {
  using Packed = typename Kernel::Packed;
  constexpr std::int64_t block_k = Kernel::block_k, block_rows = Kernel::block_rows, block_cols = Kernel::block_cols;
  thread_local PackBuffer a_buffer, b_buffer;
  const std::int64_t k = main.k, extra_steps = extra ? Kernel::steps(extra->k) : 0;
  const std::int64_t max_steps = Kernel::steps(std::min(block_k, k)) + extra_steps;
  const std::int64_t b_panels = (std::min(block_cols, n) + tile_cols - 1) / tile_cols;
  const std::int64_t a_panels = (std::min(block_rows, m) + tile_rows - 1) / tile_rows;
  Packed* packed_b = b_buffer.get_as<Packed>(std::size_t(b_panels * tile_cols * max_steps));
  Packed* packed_a = a_buffer.get_as<Packed>(std::size_t(a_panels * tile_rows * max_steps));
  auto columns = [](const Operand& x) { return Operand{x.data, x.col_stride, x.row_stride}; };  // indexed by k
  for (std::int64_t col0 = 0; col0 < n; col0 += block_cols) {
    const std::int64_t cols = std::min(block_cols, n - col0);
    for (std::int64_t k0 = 0; k0 < k; k0 += block_k) {
      const std::int64_t depth = std::min(block_k, k - k0), main_steps = Kernel::steps(depth);
      const std::int64_t tail_steps = k0 + depth == k ? extra_steps : 0, steps = main_steps + tail_steps;
      const float block_beta = k0 == 0 ? beta : 1.0f;  // later k blocks accumulate onto the first
      Kernel::template pack<tile_cols>(columns(main.b), col0, cols, k0, depth, steps * tile_cols, packed_b);
      if (tail_steps)
        Kernel::template pack<tile_cols>(columns(extra->b), col0, cols, 0, extra->k, steps * tile_cols,
                                         packed_b + main_steps * tile_cols);
      for (std::int64_t row0 = 0; row0 < m; row0 += block_rows) {
        const std::int64_t rows = std::min(block_rows, m - row0);
        Kernel::template pack<tile_rows>(main.a, row0, rows, k0, depth, steps * tile_rows, packed_a);
        if (tail_steps)
          Kernel::template pack<tile_rows>(extra->a, row0, rows, 0, extra->k, steps * tile_rows,
                                           packed_a + main_steps * tile_rows);
        for (std::int64_t jc = 0; jc < cols; jc += tile_cols)
          for (std::int64_t ir = 0; ir < rows; ir += tile_rows)
            Kernel::tile(steps, packed_a + ir * steps, packed_b + jc * steps, alpha, block_beta,
                         c + (row0 + ir) * ldc + col0 + jc, ldc, std::min(tile_rows, rows - ir),
                         std::min(tile_cols, cols - jc));
      }
    }
  }
}

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

// Calls blocked(rows, cols, main_band, extra_band, c_band) once per thread, each on its own band
// of C[m, n] in whole tiles along C's longer side (the bands' terms are views of `main` and
// `extra`; extra_band is null when extra is): every thread packs its own operands, so there is no
// shared buffer and no barrier.
template <class Blocked>
void run_in_bands(std::int64_t m, std::int64_t n, const Term& main, const Term* extra, float* c, std::int64_t ldc,
                  Blocked&& blocked) {
  const int threads = threads_for(m, n, main.k + (extra ? extra->k : 0));
  if (threads == 1) {
    blocked(m, n, main, extra, c);
    return;
  }
  const bool by_rows = m >= n;
  const std::int64_t unit = by_rows ? tile_rows : tile_cols, extent = by_rows ? m : n;
  const std::int64_t units = (extent + unit - 1) / unit;
  // A term's rows [lo, ...) of op(A) (by rows) or columns [lo, ...) of op(B).
  auto band = [by_rows](const Term& t, std::int64_t lo) {
    return by_rows ? Term{{t.a.data + lo * t.a.row_stride, t.a.row_stride, t.a.col_stride}, t.b, t.k}
                   : Term{t.a, {t.b.data + lo * t.b.col_stride, t.b.row_stride, t.b.col_stride}, t.k};
  };
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < threads; ++t) {
    const std::int64_t lo = std::min(extent, units * t / threads * unit);
    const std::int64_t hi = std::min(extent, units * (t + 1) / threads * unit);
    if (hi <= lo) continue;
    const Term main_band = band(main, lo);
    const Term extra_band = extra ? band(*extra, lo) : Term{};
    blocked(by_rows ? hi - lo : m, by_rows ? n : hi - lo, main_band, extra ? &extra_band : nullptr,
            by_rows ? c + lo * ldc : c + lo);
  }
}

}  // namespace mote::backend::packed_gemm
