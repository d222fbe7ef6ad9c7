#pragma once
// The CPU's float GEMM under matmul_precision::bf16: operands rounded to bfloat16, products summed
// in float. On CPUs with AVX512-BF16 (AMD Zen 4, Intel Sapphire Rapids) one vdpbf16ps does twice
// the multiply-adds of an fp32 FMA; elsewhere the same rounding runs ahead of an fp32 product, so
// both paths multiply the same rounded operands.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "mote/backend/cpu/packed_gemm.hpp"
#include "mote/backend/precision.hpp"

namespace mote::backend {

namespace bf16_detail {

// Round to nearest, ties to even. A NaN is kept quiet: one whose payload sits only in the low
// half would otherwise round to infinity.
inline std::uint16_t to_bf16(float x) noexcept {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const std::uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const std::uint32_t quiet_nan = (bits >> 16) | 0x40u;
  return static_cast<std::uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}
inline float from_bf16(std::uint16_t half) noexcept {
  const std::uint32_t bits = std::uint32_t(half) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}
inline float round_to_bf16(float x) noexcept { return from_bf16(to_bf16(x)); }

using packed_gemm::Operand;
using packed_gemm::tile_cols;
using packed_gemm::tile_rows;

// Cache blocks: a 128-pair B micro-panel (16 KiB) stays in L1 while an A block of 192 rows
// (96 KiB) streams from L2.
inline constexpr std::int64_t block_k = 256;
inline constexpr std::int64_t block_rows = 192;
inline constexpr std::int64_t block_cols = 2048;

#if MOTE_AVX512_KERNELS
using packed_gemm::first_lanes;

#define MOTE_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))
MOTE_AVX512_WARNINGS_OFF

// to_bf16 on 16 lanes at once, left in each lane's high half (the low half is not cleared).
MOTE_BF16_TARGET inline __m512i round_to_high_half(__m512i bits) noexcept {
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(bits, _mm512_set1_epi32(0x00400000)));
}

// dst[j] = the bf16 pair (lower[j], upper[j]) for j < count and 0 up to width; upper may be null (an odd
// depth's last pair). For operands contiguous along the non-k side: B, or a transposed A. The
// pair word holds the lower k's bf16 in its low half, as vdpbf16ps expects.
MOTE_BF16_TARGET inline void pack_row_pair(const float* lower, const float* upper, std::int64_t count,
                                           std::uint32_t* dst, std::int64_t width) noexcept {
  const __m512i high_half = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (std::int64_t j = 0; j < width; j += 16) {
    const __mmask16 valid = first_lanes(count - j);
    const __m512i low_k = round_to_high_half(_mm512_maskz_loadu_epi32(valid, lower + j));
    const __m512i high_k =
        upper ? round_to_high_half(_mm512_maskz_loadu_epi32(valid, upper + j)) : _mm512_setzero_si512();
    const __m512i words = _mm512_or_si512(_mm512_srli_epi32(low_k, 16), _mm512_and_si512(high_k, high_half));
    _mm512_mask_storeu_epi32(dst + j, first_lanes(width - j), _mm512_maskz_mov_epi32(valid, words));
  }
}

// `depth` consecutive-k floats into (depth + 1) / 2 pairs at dst[q * stride]: for operands
// contiguous along k (A, or a transposed B). vcvtne2ps2bf16 rounds as to_bf16 does, except that it
// flushes subnormals, which vdpbf16ps treats as zero anyway.
MOTE_BF16_TARGET inline void pack_along_k(const float* src, std::int64_t depth, std::uint32_t* dst,
                                          std::int64_t stride) noexcept {
  alignas(64) std::uint32_t words[16];
  for (std::int64_t k = 0; k < depth; k += 32) {
    const __m512 low = _mm512_maskz_loadu_ps(first_lanes(depth - k), src + k);
    const __m512 high = _mm512_maskz_loadu_ps(first_lanes(depth - k - 16), src + k + 16);
    _mm512_store_si512(words, (__m512i)_mm512_cvtne2ps_pbh(high, low));
    const std::int64_t pairs = std::min<std::int64_t>(16, (depth - k + 1) / 2);
    for (std::int64_t q = 0; q < pairs; ++q) dst[(k / 2 + q) * stride] = words[q];
  }
}

// Rows [row0, row0 + rows) of `x` (indexed [row, k]) over a k-range, into panels of `width` rows,
// each [pair][row] and `stride` words after the one before; a short last panel is zero-padded. A
// packs its rows this way, and B its columns, as the rows of its transposed view.
template <std::int64_t width>
MOTE_BF16_TARGET inline void pack_panels(const Operand& x, std::int64_t row0, std::int64_t rows, std::int64_t k0,
                                         std::int64_t depth, std::int64_t stride, std::uint32_t* out) noexcept {
  const std::int64_t pairs = (depth + 1) / 2;
  for (std::int64_t panel = 0; panel < rows; panel += width, out += stride) {
    const std::int64_t height = std::min(width, rows - panel);
    if (x.col_stride == 1) {
      for (std::int64_t r = 0; r < height; ++r) pack_along_k(x.ptr(row0 + panel + r, k0), depth, out + r, width);
      for (std::int64_t r = height; r < width; ++r)
        for (std::int64_t p = 0; p < pairs; ++p) out[p * width + r] = 0;
    } else {
      for (std::int64_t p = 0; p < pairs; ++p)
        pack_row_pair(x.ptr(row0 + panel, k0 + 2 * p),
                      2 * p + 1 < depth ? x.ptr(row0 + panel, k0 + 2 * p + 1) : nullptr, height, out + p * width,
                      width);
    }
  }
}

// C[rows<=12, cols<=32] = alpha * (packed A panel . packed B panel) + beta * C. Out of line, as
// the fp32 kernel's tile (fp32_gemm.hpp).
MOTE_BF16_TARGET __attribute__((noinline)) inline void tile_kernel(std::int64_t pairs, const std::uint32_t* a,
                                                                   const std::uint32_t* b, float alpha, float beta,
                                                                   float* c, std::int64_t ldc, std::int64_t rows,
                                                                   std::int64_t cols) {
  __m512 acc[tile_rows][2];
#pragma GCC unroll 12
  for (int r = 0; r < tile_rows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (std::int64_t p = 0; p < pairs; ++p, a += tile_rows, b += tile_cols) {
    const __m512bh b_low = (__m512bh)_mm512_load_si512(b);
    const __m512bh b_high = (__m512bh)_mm512_load_si512(b + 16);
#pragma GCC unroll 12
    for (int r = 0; r < tile_rows; ++r) {
      const __m512bh a_pair = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a_pair, b_low);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a_pair, b_high);
    }
  }
  packed_gemm::store_tile(acc, alpha, beta, c, ldc, rows, cols);
}

// The bf16 pieces of packed_gemm::blocked_gemm: k packed in pairs, one 32-bit word a pair.
struct Kernel {
  using Packed = std::uint32_t;
  static constexpr std::int64_t block_k = bf16_detail::block_k, block_rows = bf16_detail::block_rows,
                                block_cols = bf16_detail::block_cols;
  static std::int64_t steps(std::int64_t depth) noexcept { return (depth + 1) / 2; }
  template <std::int64_t width>
  static void pack(const Operand& x, std::int64_t row0, std::int64_t rows, std::int64_t k0, std::int64_t depth,
                   std::int64_t stride, std::uint32_t* out) noexcept {
    pack_panels<width>(x, row0, rows, k0, depth, stride, out);
  }
  static void tile(std::int64_t pairs, const std::uint32_t* a, const std::uint32_t* b, float alpha, float beta,
                   float* c, std::int64_t ldc, std::int64_t rows, std::int64_t cols) {
    tile_kernel(pairs, a, b, alpha, beta, c, ldc, rows, cols);
  }
};
MOTE_AVX512_WARNINGS_ON
#undef MOTE_BF16_TARGET
#endif

// Tests clear this to run the portable path on a machine that has the kernel.
inline std::atomic<bool>& use_kernel() noexcept {
#if MOTE_AVX512_KERNELS
  static std::atomic<bool> enabled{packed_gemm::cpu_has_bf16_dot()};
#else
  static std::atomic<bool> enabled{false};
#endif
  return enabled;
}

}  // namespace bf16_detail

// Whether bf16 products run on the AVX512-BF16 kernel here (otherwise they round, then run fp32).
inline bool bf16_kernel_available() noexcept { return bf16_detail::use_kernel().load(std::memory_order_relaxed); }

}  // namespace mote::backend
