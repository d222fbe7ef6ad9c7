#pragma once
// Float products with one side of at most 32 (a LoRA rank) against a large operand: x A^T and g B
// (a narrow output), g^T hs and gh^T x (a narrow operand times a wide one). Eigen packs the large
// operand before multiplying, which on these shapes costs more than the multiply-adds; here the
// large operand is read once, in place, and only the narrow one is packed.
#include <algorithm>
#include <cstdint>

#include "mote/backend/cpu/fp32_gemm.hpp"
#include "mote/backend/cpu/packed_gemm.hpp"

namespace mote::backend::skinny_gemm {

// The narrow side: at most two vectors of 16 lanes.
inline constexpr std::int64_t max_narrow = 32;

#if MOTE_AVX512_KERNELS
#define MOTE_SKINNY_TARGET __attribute__((target("avx512f")))
MOTE_AVX512_WARNINGS_OFF

using packed_gemm::first_lanes;
using packed_gemm::Operand;
using packed_gemm::store_lanes;
using packed_gemm::tile_rows;

// Asks for the line `offset` floats from `base`, which may lie past the operand's end: the
// address is formed as an integer, and a prefetch never faults.
MOTE_SKINNY_TARGET inline void prefetch_ahead(const float* base, std::int64_t offset) noexcept {
  const std::uintptr_t address = reinterpret_cast<std::uintptr_t>(base) + std::uintptr_t(offset) * sizeof(float);
  _mm_prefetch(reinterpret_cast<const char*>(address), _MM_HINT_T0);
}

// C[rows <= 12, cols <= 16 * vectors] = alpha * X[rows, k] . panel + beta * C, where X is read in
// place (each element broadcast against a panel row) and the panel is [k][16 * vectors].
template <int vectors>
MOTE_SKINNY_TARGET __attribute__((noinline)) inline void tall_tile(std::int64_t k, const float* x, std::int64_t ldx,
                                                                   const float* panel, float alpha, float beta,
                                                                   float* c, std::int64_t ldc, std::int64_t rows,
                                                                   std::int64_t cols) {
  __m512 acc[tile_rows][2];
  const float* row[tile_rows];
#pragma GCC unroll 12
  for (int r = 0; r < tile_rows; ++r) {
    acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    row[r] = x + std::min<std::int64_t>(r, rows - 1) * ldx;  // a short tile repeats its last row, never stored
  }
  for (std::int64_t q = 0; q < k; ++q, panel += 16 * vectors) {
    if (q % 16 == 0) {  // the next tile's rows, a line each per line read here: they come from memory
#pragma GCC unroll 12
      for (int r = 0; r < tile_rows; ++r)
        prefetch_ahead(row[r], tile_rows * ldx + q);
    }
    const __m512 b_low = _mm512_load_ps(panel);
    const __m512 b_high = vectors == 2 ? _mm512_load_ps(panel + 16) : _mm512_setzero_ps();
#pragma GCC unroll 12
    for (int r = 0; r < tile_rows; ++r) {
      const __m512 a_value = _mm512_set1_ps(row[r][q]);
      acc[r][0] = _mm512_fmadd_ps(a_value, b_low, acc[r][0]);
      if constexpr (vectors == 2) acc[r][1] = _mm512_fmadd_ps(a_value, b_high, acc[r][1]);
    }
  }
  packed_gemm::store_tile(acc, alpha, beta, c, ldc, rows, cols);
}

// R^T += X^T . panel over rows [0, k) of X [k, cols]: sum[i][16] gains, for every row q, X[q][i]
// times panel row q. Twelve panel rows at a time sit in registers while strips of 16 columns pass,
// so X is read twelve rows at a time along their length, each element one broadcast multiply-add.
MOTE_SKINNY_TARGET __attribute__((noinline)) inline void wide_block(std::int64_t k, const float* panel, const float* x,
                                                                    std::int64_t ldx, std::int64_t cols, float* sum) {
  constexpr int depth = 12;
  std::int64_t q0 = 0;
  for (; q0 + depth <= k; q0 += depth) {
    __m512 p[depth];
#pragma GCC unroll 12
    for (int d = 0; d < depth; ++d) p[d] = _mm512_load_ps(panel + (q0 + d) * 16);
    for (std::int64_t i0 = 0; i0 < cols; i0 += 16) {
      const std::int64_t width = std::min<std::int64_t>(16, cols - i0);
      // The next twelve rows' lines of this strip, asked for a strip pass ahead: fresh activations
      // and gradients come from memory, and the strided walk escapes the hardware prefetchers.
#pragma GCC unroll 12
      for (int d = 0; d < depth; ++d)
        prefetch_ahead(x, (q0 + depth + d) * ldx + i0);
      __m512 acc[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) acc[i] = _mm512_load_ps(sum + (i0 + i) * 16);
      if (width == 16) {
#pragma GCC unroll 12
        for (int d = 0; d < depth; ++d) {
          const float* row = x + (q0 + d) * ldx + i0;
#pragma GCC unroll 16
          for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(row[i]), p[d], acc[i]);
        }
      } else {  // the last, narrower strip
        for (int d = 0; d < depth; ++d) {
          const float* row = x + (q0 + d) * ldx + i0;
          for (int i = 0; i < width; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(row[i]), p[d], acc[i]);
        }
      }
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) _mm512_store_ps(sum + (i0 + i) * 16, acc[i]);
    }
  }
  for (; q0 < k; ++q0) {  // the last rows, one at a time
    const __m512 p_row = _mm512_load_ps(panel + q0 * 16);
    const float* row = x + q0 * ldx;
    for (std::int64_t i = 0; i < cols; ++i)
      _mm512_store_ps(sum + i * 16, _mm512_fmadd_ps(_mm512_set1_ps(row[i]), p_row, _mm512_load_ps(sum + i * 16)));
  }
}

// C = alpha * R + beta * C from sum[cols][16] (R^T): C is [narrow, cols] (ldc), or transposed
// [cols, narrow].
MOTE_SKINNY_TARGET inline void store_block(const float* sum, std::int64_t cols, std::int64_t narrow, float alpha,
                                           float beta, float* c, std::int64_t ldc, bool transposed) {
  if (transposed) {
    for (std::int64_t i = 0; i < cols; ++i)
      store_lanes(c + i * ldc, first_lanes(narrow), _mm512_load_ps(sum + i * 16), alpha, beta);
    return;
  }
  for (std::int64_t i0 = 0; i0 < cols; i0 += 16) {
    __m512 block[16];
    for (int i = 0; i < 16; ++i) block[i] = i0 + i < cols ? _mm512_load_ps(sum + (i0 + i) * 16) : _mm512_setzero_ps();
    fp32_detail::transpose_16x16(block);
    for (std::int64_t j = 0; j < narrow; ++j)
      store_lanes(c + j * ldc + i0, first_lanes(cols - i0), block[j], alpha, beta);
  }
}

// out [k][width] <- columns [j0, j0 + count) of the view v (k rows), zero-padded to `width`.
MOTE_SKINNY_TARGET inline void pack_narrow(const Operand& v, std::int64_t k, std::int64_t j0, std::int64_t count,
                                           std::int64_t width, float* out) noexcept {
  if (v.col_stride == 1) {  // rows contiguous: masked vector copies
    for (std::int64_t q = 0; q < k; ++q)
      for (std::int64_t j = 0; j < width; j += 16)
        _mm512_store_ps(out + q * width + j, _mm512_maskz_loadu_ps(first_lanes(count - j), v.ptr(q, j0 + j)));
    return;
  }
  for (std::int64_t q = 0; q < k; ++q)
    for (std::int64_t j = 0; j < width; ++j) out[q * width + j] = j < count ? v.at(q, j0 + j) : 0.0f;
}

// body(lo, hi, part) over [0, units) split into `threads` parts (one call when threads is 1).
template <class Body>
void split(std::int64_t units, int threads, const Body& body) {
  if (threads <= 1) {
    body(std::int64_t{0}, units, 0);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int part = 0; part < threads; ++part) {
    const std::int64_t lo = units * part / threads, hi = units * (part + 1) / threads;
    body(lo, hi, part);  // even when empty: a part's sums must be written
  }
}

// sum[0, count) += addend[0, count), count a multiple of 16.
MOTE_SKINNY_TARGET inline void add_into(float* sum, const float* addend, std::int64_t count) noexcept {
  for (std::int64_t i = 0; i < count; i += 16)
    _mm512_store_ps(sum + i, _mm512_add_ps(_mm512_load_ps(sum + i), _mm512_load_ps(addend + i)));
}

// C[m, s] = alpha * X[m, k] . N[k, s] + beta * C with s <= 32: X row-major (ldx), N any view.
inline void tall_times_narrow(std::int64_t m, std::int64_t s, std::int64_t k, float alpha, const float* x,
                              std::int64_t ldx, const Operand& narrow, float beta, float* c, std::int64_t ldc) {
  thread_local packed_gemm::PackBuffer buffer;
  const std::int64_t width = s <= 16 ? 16 : 32;
  float* panel = buffer.get_as<float>(static_cast<std::size_t>(k * width));
  pack_narrow(narrow, k, 0, s, width, panel);
  split((m + tile_rows - 1) / tile_rows, packed_gemm::threads_for(m, s, k), [&](std::int64_t lo, std::int64_t hi, int) {
    for (std::int64_t tile = lo; tile < hi; ++tile) {
      const std::int64_t row0 = tile * tile_rows, rows = std::min(tile_rows, m - row0);
      if (width == 16)
        tall_tile<1>(k, x + row0 * ldx, ldx, panel, alpha, beta, c + row0 * ldc, ldc, rows, s);
      else
        tall_tile<2>(k, x + row0 * ldx, ldx, panel, alpha, beta, c + row0 * ldc, ldc, rows, s);
    }
  });
}

// R[s, n] = P^T . X with P [k, s] (s <= 32, ldp) and X [k, n] (ldx), both row-major; then
// C = alpha * R + beta * C, C being [s, n] or, transposed, [n, s]. Each thread takes a stretch of
// X's rows, which it reads front to back, and sums into its own R^T; the sums are added at the end.
inline void narrow_times_wide(std::int64_t s, std::int64_t n, std::int64_t k, float alpha, const float* p,
                              std::int64_t ldp, const float* x, std::int64_t ldx, float beta, float* c,
                              std::int64_t ldc, bool transposed) {
  thread_local packed_gemm::PackBuffer panel_buffer, sum_buffer;
  float* panel = panel_buffer.get_as<float>(static_cast<std::size_t>(k * 16));
  const int threads = packed_gemm::threads_for(s, n, k);
  const std::int64_t sum_size = (n + 15) / 16 * 256;  // whole strips: wide_block writes all 16 rows of each
  float* sums = sum_buffer.get_as<float>(static_cast<std::size_t>(threads * sum_size));
  for (std::int64_t j0 = 0; j0 < s; j0 += 16) {  // sixteen of the narrow side at a time
    const std::int64_t count = std::min<std::int64_t>(16, s - j0);
    pack_narrow(Operand{p, ldp, 1}, k, j0, count, 16, panel);
    split(k, threads, [&](std::int64_t lo, std::int64_t hi, int part) {
      float* sum = sums + part * sum_size;
      std::fill(sum, sum + sum_size, 0.0f);
      wide_block(hi - lo, panel + lo * 16, x + lo * ldx, ldx, n, sum);
    });
    for (int part = 1; part < threads; ++part) add_into(sums, sums + part * sum_size, sum_size);
    store_block(sums, n, count, alpha, beta, transposed ? c + j0 : c + j0 * ldc, ldc, transposed);
  }
}

MOTE_AVX512_WARNINGS_ON
#undef MOTE_SKINNY_TARGET
#endif

// Whether C[m, n] = op(A) . op(B), depth k, has a narrow side these kernels take: the narrow output
// of a row-major op(A), or either side of A^T B (the large operand read along its rows); with the
// other side at least 16, a depth of at least 16 and 32K multiply-adds, below which Eigen's own
// small-product path is as quick.
inline bool applies(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k) {
  if (k < 16 || double(m) * double(n) * double(k) < double(1 << 15)) return false;
  if (!trans_a && n <= max_narrow) return m >= 16;
  if (trans_a && !trans_b) return std::min(m, n) <= max_narrow && std::max(m, n) >= 16;
  return false;
}

#if MOTE_AVX512_KERNELS
// C = alpha * op(A) . op(B) + beta * C on these kernels where applies(); the caller checks that the
// CPU has AVX-512.
inline void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                 const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc) {
  if (!trans_a)
    tall_times_narrow(m, n, k, alpha, a, lda, Operand::of(b, ldb, trans_b), beta, c, ldc);
  else if (n <= max_narrow)  // C^T = B^T A: B [k, n] is the narrow operand, A [k, m] the wide one
    narrow_times_wide(n, m, k, alpha, b, ldb, a, lda, beta, c, ldc, true);
  else  // A [k, m] is the narrow operand, B [k, n] the wide one
    narrow_times_wide(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, false);
}
#endif

}  // namespace mote::backend::skinny_gemm
