#pragma once
// mote's own float GEMM for CPUs with AVX-512: a 12x32 register tile of fused multiply-adds over
// packed panels. mote_bench's GEMM rows set it beside Eigen's product and the cores' FMA peak
// (docs/benchmarks.md).
#include <algorithm>
#include <atomic>
#include <cstdint>

#include "mote/backend/cpu/packed_gemm.hpp"
#include "mote/backend/cpu/spin_team.hpp"
#include "mote/backend/cpu/weight_panels.hpp"

namespace mote::backend {

namespace fp32_detail {

using packed_gemm::Operand;
using packed_gemm::tile_cols;
using packed_gemm::tile_rows;

// Cache blocks: 384 deep, so that a product as deep as a model's width writes each C tile once
// instead of re-reading it per block (an LM head ran faster than with 128); the B micro-panel
// (48 KiB) and A panel (18 KiB) stream from L2, where an A block of 192 rows sits.
inline constexpr std::int64_t block_k = 384;
inline constexpr std::int64_t block_rows = 192;
inline constexpr std::int64_t block_cols = 2048;

// Products with fewer than 64 output columns (a LoRA rank as the output), at most 8 rows (decoding's
// matrix-vector kernel takes those) or a depth under 16 stay with Eigen and that kernel, which
// measured faster on them. From 9 rows (a decoding batch above 8, a short prompt) this kernel, even
// packing the weights on every call, measured faster than Eigen's product, which repacks them too.
// A rank-16 depth (a LoRA up-projection, or its input gradient) measured faster here than in Eigen.
inline constexpr std::int64_t min_rows = 9, min_cols = 64, min_depth = 16;
inline bool worthwhile(std::int64_t m, std::int64_t n, std::int64_t k) {
  return m >= min_rows && n >= min_cols && k >= min_depth && double(m) * double(n) * double(k) >= double(1 << 16);
}

#if MOTE_AVX512_KERNELS
#define MOTE_FP32_TARGET __attribute__((target("avx512f")))
MOTE_AVX512_WARNINGS_OFF

// The 64-bit halves of each 128-bit lane: low ones of a and b interleaved, or high ones.
MOTE_FP32_TARGET inline __m512 low_pairs(__m512 a, __m512 b) noexcept {
  return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
MOTE_FP32_TARGET inline __m512 high_pairs(__m512 a, __m512 b) noexcept {
  return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}

// v[i][j] becomes v[j][i]: pairs of rows interleaved at 1, 2, then 4 and 8 lanes.
MOTE_FP32_TARGET inline void transpose_16x16(__m512* v) noexcept {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    v[i] = low_pairs(t[i], t[i + 2]);
    v[i + 1] = high_pairs(t[i], t[i + 2]);
    v[i + 2] = low_pairs(t[i + 1], t[i + 3]);
    v[i + 3] = high_pairs(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(v[i], v[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(v[i], v[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    v[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    v[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    v[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

// Rows [row0, row0 + rows) of `x` (indexed [row, k]) over a k-range, into panels of `width` rows,
// each [k][row] and `stride` floats after the one before; a short last panel is zero-padded. A
// packs its rows this way, and B its columns, as the rows of its transposed view.
template <std::int64_t width>
MOTE_FP32_TARGET inline void pack_panels(const Operand& x, std::int64_t row0, std::int64_t rows, std::int64_t k0,
                                         std::int64_t depth, std::int64_t stride, float* out) noexcept {
  for (std::int64_t panel = 0; panel < rows; panel += width, out += stride) {
    const std::int64_t height = std::min(width, rows - panel);
    if (x.col_stride == 1) {  // each row contiguous along k: 16 x 16 blocks, transposed in registers
      for (std::int64_t r0 = 0; r0 < width; r0 += 16) {
        const std::int64_t block_height = std::min<std::int64_t>(16, height - r0);
        const __mmask16 store_lanes = packed_gemm::first_lanes(width - r0);
        for (std::int64_t q0 = 0; q0 < depth; q0 += 16) {
          const __mmask16 load_lanes = packed_gemm::first_lanes(depth - q0);
          __m512 block[16];
          for (int r = 0; r < 16; ++r)
            block[r] = r < block_height ? _mm512_maskz_loadu_ps(load_lanes, x.ptr(row0 + panel + r0 + r, k0 + q0))
                                        : _mm512_setzero_ps();
          transpose_16x16(block);
          for (std::int64_t q = 0; q < std::min<std::int64_t>(16, depth - q0); ++q)
            _mm512_mask_storeu_ps(out + (q0 + q) * width + r0, store_lanes, block[q]);
        }
      }
    } else {  // each k contiguous along the rows: a copy, 16 lanes at a time
      for (std::int64_t q = 0; q < depth; ++q) {
        const float* src = x.ptr(row0 + panel, k0 + q);
        for (std::int64_t j = 0; j < width; j += 16)
          _mm512_mask_storeu_ps(out + q * width + j, packed_gemm::first_lanes(width - j),
                                _mm512_maskz_loadu_ps(packed_gemm::first_lanes(height - j), src + j));
      }
    }
  }
}

// C[rows<=height, cols<=32] = alpha * (packed A panel . packed B panel) + beta * C, the A panel
// `height` rows wide (12, or 8 where a decoding batch fills 8-row tiles better). Kept out of line:
// when a change to blocked_gemm let GCC 12 inline it there, the loop ran much slower.
template <std::int64_t height = tile_rows>
MOTE_FP32_TARGET __attribute__((noinline)) inline void tile_kernel(std::int64_t depth, const float* a, const float* b,
                                                                   float alpha, float beta, float* c, std::int64_t ldc,
                                                                   std::int64_t rows, std::int64_t cols) {
  static_assert(height <= tile_rows);
  __m512 acc[height][2];
#pragma GCC unroll 12
  for (int r = 0; r < height; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  packed_gemm::prefetch_tile(c, ldc, rows, cols);
  for (std::int64_t q = 0; q < depth; ++q, a += height, b += tile_cols) {
    const __m512 b_low = _mm512_load_ps(b), b_high = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
    for (int r = 0; r < height; ++r) {
      const __m512 a_value = _mm512_set1_ps(a[r]);
      acc[r][0] = _mm512_fmadd_ps(a_value, b_low, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(a_value, b_high, acc[r][1]);
    }
  }
  packed_gemm::store_tile(acc, alpha, beta, c, ldc, rows, cols);
}

// The fp32 pieces of packed_gemm::blocked_gemm.
struct Kernel {
  using Packed = float;
  static constexpr std::int64_t block_k = fp32_detail::block_k, block_rows = fp32_detail::block_rows,
                                block_cols = fp32_detail::block_cols;
  static std::int64_t steps(std::int64_t depth) noexcept { return depth; }
  template <std::int64_t width>
  static void pack(const Operand& x, std::int64_t row0, std::int64_t rows, std::int64_t k0, std::int64_t depth,
                   std::int64_t stride, float* out) noexcept {
    pack_panels<width>(x, row0, rows, k0, depth, stride, out);
  }
  static void tile(std::int64_t depth, const float* a, const float* b, float alpha, float beta, float* c,
                   std::int64_t ldc, std::int64_t rows, std::int64_t cols) {
    tile_kernel<>(depth, a, b, alpha, beta, c, ldc, rows, cols);
  }
};

// `rows` rows of x (indexed [row, k]) packed whole: per k block, every `width`-row panel,
// [k block][panel][k][width], the last panel zero-padded. op(B) packs its columns this way once
// (WeightPanels), and each thread the step's rows of op(A) once per product, for all its chunks.
template <std::int64_t width>
constexpr std::int64_t padded_rows(std::int64_t rows) noexcept {
  return (rows + width - 1) / width * width;
}
template <std::int64_t width>
void pack_whole(const Operand& x, std::int64_t rows, std::int64_t k, float* out) noexcept {
  const std::int64_t padded = padded_rows<width>(rows);
  for (std::int64_t k0 = 0; k0 < k; k0 += block_k) {
    const std::int64_t depth = std::min(block_k, k - k0);
    pack_panels<width>(x, 0, rows, k0, depth, depth * width, out + k0 * padded);
  }
}
inline std::int64_t panel_count(std::int64_t n) noexcept { return padded_rows<tile_cols>(n) / tile_cols; }
inline std::size_t whole_panels_floats(std::int64_t k, std::int64_t n) noexcept {
  return std::size_t(k) * std::size_t(padded_rows<tile_cols>(n));
}
// op(B) of a product, packed whole: its columns as the rows of its transposed view.
inline void pack_weight_whole(const Operand& b, std::int64_t k, std::int64_t n, float* out) noexcept {
  pack_whole<tile_cols>(Operand{b.data, b.col_stride, b.row_stride}, n, k, out);
}

// C[:, col0:col0 + cols] = alpha * op(A) . op(B) + beta * C from both operands packed whole;
// col0 is a multiple of tile_cols and c points at C's column col0.
template <std::int64_t height>
void prepacked_band(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t col0, std::int64_t cols, float alpha,
                    const float* rows, const float* panels, float beta, float* c, std::int64_t ldc) {
  const std::int64_t padded = padded_rows<height>(m);
  for (std::int64_t k0 = 0; k0 < k; k0 += block_k) {
    const std::int64_t depth = std::min(block_k, k - k0);
    const float block_beta = k0 == 0 ? beta : 1.0f;
    const float* a_block = rows + k0 * padded;
    const float* b_block = panels + k0 * padded_rows<tile_cols>(n) + col0 * depth;
    for (std::int64_t jc = 0; jc < cols; jc += tile_cols)
      for (std::int64_t ir = 0; ir < m; ir += height)
        tile_kernel<height>(depth, a_block + ir * depth, b_block + jc * depth, alpha, block_beta, c + ir * ldc + jc, ldc,
                            std::min(height, m - ir), std::min(tile_cols, cols - jc));
  }
}

// The A panel height that wastes fewer multiply-adds on m rows: each 12-row tile costs 24 a step
// and each 8-row one 16, so 13 to 16 rows (a decoding batch of 16) run as two 8-row tiles.
inline bool eight_row_tiles(std::int64_t m) noexcept {
  return (m + 7) / 8 * 16 < (m + tile_rows - 1) / tile_rows * 24;
}
MOTE_AVX512_WARNINGS_ON
#undef MOTE_FP32_TARGET
#endif

// Tests clear this to compare against Eigen on a machine that has the kernel.
inline std::atomic<bool>& use_kernel() noexcept {
#if MOTE_AVX512_KERNELS
  static std::atomic<bool> enabled{packed_gemm::cpu_has_avx512()};
#else
  static std::atomic<bool> enabled{false};
#endif
  return enabled;
}

#if MOTE_AVX512_KERNELS
// C = alpha * (op(A) . op(B) + op(A2) . op(B2)) + beta * C on every core (one thread inside a
// parallel region), the second term optional and shallow (gemm_sum's cutoff); the caller checks
// fp32_kernel_available() and that m, n, k are positive.
inline void gemm(std::int64_t m, std::int64_t n, float alpha, const packed_gemm::Term& main,
                 const packed_gemm::Term* extra, float beta, float* c, std::int64_t ldc) {
  packed_gemm::run_in_bands(m, n, main, extra, c, ldc,
                            [&](std::int64_t rows, std::int64_t cols, const packed_gemm::Term& main_band,
                                const packed_gemm::Term* extra_band, float* c_band) {
                              packed_gemm::blocked_gemm<Kernel>(rows, cols, alpha, main_band, extra_band, beta,
                                                                c_band, ldc);
                            });
}

// C = alpha * op(A) . op(B) + beta * C where op(B) is packed whole (pack_weight_whole): chunks of panels
// shared by the held SpinTeam's threads when there is one (a decoding loop), or by a team held for
// this product. Each thread packs op(A) once, on its first chunk.
template <std::int64_t height>
void prepacked_gemm_rows(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const Operand& a,
                         const float* panels, float beta, float* c, std::int64_t ldc) {
  // About eight chunks a product, so that two threads end together on the narrow ones too.
  const std::int64_t panels_per_chunk = std::max<std::int64_t>(1, panel_count(n) / 8);
  const std::int64_t chunks = (panel_count(n) + panels_per_chunk - 1) / panels_per_chunk;
  static std::atomic<std::uint64_t> products{0};
  const std::uint64_t product = products.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::size_t rows_floats = std::size_t(padded_rows<height>(m) * k);
  const auto chunk = [&](std::int64_t index) {
    thread_local packed_gemm::PackBuffer a_buffer;
    thread_local std::uint64_t packed_product = 0;
    float* rows = a_buffer.get_as<float>(rows_floats);
    if (packed_product != product) {
      pack_whole<height>(a, m, k, rows);
      packed_product = product;
    }
    const std::int64_t col0 = index * panels_per_chunk * tile_cols;
    const std::int64_t cols = std::min(n - col0, panels_per_chunk * tile_cols);
    prepacked_band<height>(m, n, k, col0, cols, alpha, rows, panels, beta, c + col0, ldc);
  };
  const bool shared = SpinTeam::active() || (chunks > 1 && SpinTeam::can_share() && packed_gemm::threads_for(m, n, k) > 1);
  if (shared) {
    SpinTeam::hold([&] { SpinTeam::run(chunks, chunk); });
    return;
  }
  for (std::int64_t index = 0; index < chunks; ++index) chunk(index);
}

inline void prepacked_gemm(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const Operand& a,
                           const float* panels, float beta, float* c, std::int64_t ldc) {
  if (eight_row_tiles(m)) prepacked_gemm_rows<8>(m, n, k, alpha, a, panels, beta, c, ldc);
  else prepacked_gemm_rows<tile_rows>(m, n, k, alpha, a, panels, beta, c, ldc);
}
#endif

}  // namespace fp32_detail

// Whether large float products run on mote's AVX-512 kernel here (otherwise on Eigen's).
inline bool fp32_kernel_available() noexcept { return fp32_detail::use_kernel().load(std::memory_order_relaxed); }

}  // namespace mote::backend
