#pragma once
// Products with at most a few rows on the left (decoding: one to eight tokens against a weight
// matrix). They are bound by reading the matrix once, so the matrix is cut into contiguous chunks
// that threads claim from a shared counter: a thread that wakes late (tens of microseconds under a
// passive OpenMP wait policy) takes fewer chunks instead of holding everyone up. Partial sums are
// kept per chunk and added in chunk order, so the result does not depend on which thread ran what.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "mote/backend/cpu/spin_team.hpp"
#include "mote/backend/cpu/low_rank.hpp"
#include "mote/backend/kernel_ops.hpp"

namespace mote::backend::gemv_detail {

inline constexpr std::int64_t max_rows = 8;          // left-hand rows this path takes
inline constexpr std::int64_t rows_per_chunk = 64;   // weight rows per chunk when B is [k, n]
inline constexpr std::int64_t prefetch_distance = 4096;  // bytes; measured best of 2-16 KiB here
// Below this a second thread costs more than it gives: under a passive wait policy it takes tens of
// microseconds to wake, and the first thread then waits for it at the closing barrier.
inline constexpr double parallel_macs = double(1 << 18);
// Inside a held SpinTeam the other threads are already awake, so far smaller products pay to share.
inline constexpr double held_parallel_macs = double(1 << 16);

// Runs body(chunk) for chunk in [0, chunks) on every available thread, or inline when small: in
// the held team when there is one, else in a team held for this one product.
template <class Body>
void for_chunks(std::int64_t chunks, bool parallel, const Body& body) {
  if (parallel && chunks > 1 && SpinTeam::can_share()) {
    SpinTeam::hold([&] { SpinTeam::run(chunks, body); });
    return;
  }
  for (std::int64_t c = 0; c < chunks; ++c) body(c);
}

// out[i, c0:c1] = sum over r in [r0, r1) of a[i, r] * b[r, c0:c1], for the m rows of a.
template <class T>
void rows_times_block(std::int64_t m, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, std::int64_t r0,
                      std::int64_t r1, std::int64_t c0, std::int64_t c1, T* out, std::int64_t ld_out) {
  for (std::int64_t i = 0; i < m; ++i) std::fill(out + i * ld_out + c0, out + i * ld_out + c1, T(0));
  // Rows of a few KiB end before the hardware prefetcher gets going: when the block is one
  // contiguous run of memory, ask for the bytes prefetch_distance ahead explicitly.
  const bool contiguous = c0 == 0 && c1 == ldb;
  const auto* const block = reinterpret_cast<const char*>(b + r0 * ldb);
  const auto block_bytes = static_cast<std::int64_t>(sizeof(T)) * (r1 - r0) * ldb;
  std::int64_t r = r0;
  for (; r + 8 <= r1; r += 8) {  // eight weight rows per pass: one read of out per eight of b
    const T *b0 = b + r * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
    const T *b4 = b3 + ldb, *b5 = b4 + ldb, *b6 = b5 + ldb, *b7 = b6 + ldb;
    if (contiguous) {  // byte offsets within the block, so no pointer ever leaves it
      const std::int64_t at = static_cast<std::int64_t>(sizeof(T)) * (r - r0) * ldb;
      const std::int64_t pass_bytes = static_cast<std::int64_t>(sizeof(T)) * 8 * ldb;
      const std::int64_t to = std::min(block_bytes, at + pass_bytes + prefetch_distance);
      for (std::int64_t offset = at + prefetch_distance; offset < to; offset += 64) __builtin_prefetch(block + offset);
    }
    for (std::int64_t i = 0; i < m; ++i) {
      const T* ai = a + i * lda + r;
      const T a0 = ai[0], a1 = ai[1], a2 = ai[2], a3 = ai[3], a4 = ai[4], a5 = ai[5], a6 = ai[6], a7 = ai[7];
      T* o = out + i * ld_out;
#pragma omp simd
      for (std::int64_t j = c0; j < c1; ++j)
        o[j] += (a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j]) +
                (a4 * b4[j] + a5 * b5[j] + a6 * b6[j] + a7 * b7[j]);
    }
  }
  for (; r < r1; ++r) {
    const T* br = b + r * ldb;
    for (std::int64_t i = 0; i < m; ++i) {
      const T ai = a[i * lda + r];
      T* o = out + i * ld_out;
#pragma omp simd
      for (std::int64_t j = c0; j < c1; ++j) o[j] += ai * br[j];
    }
  }
}

template <class T>
void store(T alpha, T sum, T beta, T* c) {
  *c = beta == T(0) ? alpha * sum : alpha * sum + beta * *c;  // beta 0 never reads c
}

}  // namespace mote::backend::gemv_detail

namespace mote::backend {

// Row-major C[m, n] = alpha * A[m, k] * op(B) + beta * C for m <= gemv_detail::max_rows; op(B) is
// B [k, n] or, with trans_b, B stored [n, k]. lda/ldb/ldc are row strides. Then each of the
// `count` low-rank terms adds its update of A's row to C's row (unscaled by alpha). The terms are
// extra chunks of the product's own threaded job, so decoding with unmerged LoRA experts waits once
// per projection, not twice; each goes to a buffer of its own, added after the product in list
// order, so the result does not depend on which thread ran what.
template <class T>
void small_m_gemm(bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda,
                  const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc, const LowRankTerm<T>* terms = nullptr,
                  std::int64_t count = 0) {
  using namespace gemv_detail;
  double macs = double(m) * double(n) * double(k);
  for (std::int64_t t = 0; t < count; ++t) macs += double(terms[t].rank) * double(n + k);
  const bool parallel = macs >= (SpinTeam::active() ? held_parallel_macs : parallel_macs);
  thread_local std::vector<T> term_updates;
  term_updates.resize(static_cast<std::size_t>(count * n));
  T* updates = term_updates.data();
  // The job's chunks after the product's own: one per term.
  const auto term_chunk = [&](std::int64_t term) {
    low_rank_row(terms[term], a + terms[term].row * lda, k, n, updates + term * n);
  };
  if (trans_b) {
    // Each output column is a dot product with one contiguous row of B: chunks of B's rows.
    const std::int64_t rows = std::clamp<std::int64_t>(n / 32, 16, 256);
    const std::int64_t chunks = (n + rows - 1) / rows;
    for_chunks(chunks + count, parallel, [&](std::int64_t chunk) {
      if (chunk >= chunks) return term_chunk(chunk - chunks);
      const std::int64_t j0 = chunk * rows, j1 = std::min(n, j0 + rows);
      std::int64_t j = j0;
      // Four rows of B at a time: four independent sums, where one would wait on its own adds.
      for (; j + 4 <= j1; j += 4) {
        const T *b0 = b + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
        for (std::int64_t i = 0; i < m; ++i) {
          const T* ai = a + i * lda;
          T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
          for (std::int64_t r = 0; r < k; ++r) {
            s0 += ai[r] * b0[r];
            s1 += ai[r] * b1[r];
            s2 += ai[r] * b2[r];
            s3 += ai[r] * b3[r];
          }
          T* ci = c + i * ldc + j;
          store(alpha, s0, beta, ci);
          store(alpha, s1, beta, ci + 1);
          store(alpha, s2, beta, ci + 2);
          store(alpha, s3, beta, ci + 3);
        }
      }
      for (; j < j1; ++j) {
        const T* bj = b + j * ldb;
        for (std::int64_t i = 0; i < m; ++i) {
          const T* ai = a + i * lda;
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (std::int64_t r = 0; r < k; ++r) sum += ai[r] * bj[r];
          store(alpha, sum, beta, c + i * ldc + j);
        }
      }
    });
    add_low_rank_updates(terms, count, updates, n, c, ldc);
    return;
  }
  // B [k, n]: chunks of contiguous rows of B, each adding into its own partial [m, n]; when B has
  // too few rows to share out, its columns are cut as well.
  const std::int64_t row_chunks = (k + rows_per_chunk - 1) / rows_per_chunk;
  const std::int64_t col_chunks = parallel ? std::clamp<std::int64_t>(8 / row_chunks, 1, std::max<std::int64_t>(1, n / 64)) : 1;
  const std::int64_t col_width = (n + col_chunks - 1) / col_chunks;
  thread_local std::vector<T> partials;
  partials.resize(static_cast<std::size_t>(row_chunks * m * n));
  T* part = partials.data();
  for_chunks(row_chunks * col_chunks + count, parallel, [&](std::int64_t chunk) {
    if (chunk >= row_chunks * col_chunks) return term_chunk(chunk - row_chunks * col_chunks);
    const std::int64_t rc = chunk / col_chunks, cc = chunk % col_chunks;
    const std::int64_t c0 = cc * col_width, c1 = std::min(n, c0 + col_width);
    rows_times_block(m, a, lda, b, ldb, rc * rows_per_chunk, std::min(k, (rc + 1) * rows_per_chunk), c0, c1,
                     part + rc * m * n, n);
  });
  for (std::int64_t i = 0; i < m; ++i) {
    T* total = part + i * n;  // chunk 0's partial collects the others, in chunk order
    for (std::int64_t rc = 1; rc < row_chunks; ++rc) {
      const T* p = part + (rc * m + i) * n;
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) total[j] += p[j];
    }
    for (std::int64_t j = 0; j < n; ++j) store(alpha, total[j], beta, c + i * ldc + j);
  }
  add_low_rank_updates(terms, count, updates, n, c, ldc);
}

}  // namespace mote::backend
