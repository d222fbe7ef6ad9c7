#pragma once
// One low-rank term of a decoding step (a LoRA expert's share of one token's projection):
// out = coef * up (down x), with down [rank, k] and up [n, rank] as PEFT stores them. The up
// product is one sum of `rank` products per output; summing each alone across a vector costs more
// than reading up does, so float ranks that fill whole AVX-512 vectors sum sixteen outputs at once.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "mote/backend/cpu/fp32_gemm.hpp"
#include "mote/backend/kernel_ops.hpp"

namespace mote::backend::low_rank_detail {

// out[o] = coef * up[o, :] . h for up [n, Rank]: a rank known at compile time lets each output's
// sum be one vector reduction.
template <int Rank, class T>
void up_product(const T* up, const T* h, T coef, std::int64_t n, T* out) {
  T hv[Rank];
  std::copy_n(h, Rank, hv);
  for (std::int64_t o = 0; o < n; ++o) {
    const T* uo = up + o * Rank;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < Rank; ++j) sum += uo[j] * hv[j];
    out[o] = coef * sum;
  }
}

// The same for any rank, from output `from` on.
template <class T>
void up_product(const T* up, const T* h, std::int64_t rank, T coef, std::int64_t from, std::int64_t n, T* out) {
  for (std::int64_t o = from; o < n; ++o) {
    const T* uo = up + o * rank;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (std::int64_t j = 0; j < rank; ++j) sum += uo[j] * h[j];
    out[o] = coef * sum;
  }
}

#if MOTE_AVX512_KERNELS
MOTE_AVX512_WARNINGS_OFF
// The float up product for a rank that is a multiple of 16, sixteen outputs at a time: each
// output's products fill one vector, and four levels of shuffles and adds fold the sixteen vectors
// into one vector of their sums. Returns how many outputs it wrote (all but n % 16).
__attribute__((target("avx512f"))) inline std::int64_t up_product_16(const float* up, const float* h,
                                                                    std::int64_t rank, float coef, std::int64_t n,
                                                                    float* out) {
  const std::int64_t vectors = rank / 16;
  // The folds leave output 4a + b in lane 4b + a; this index puts lane 4b + a back at 4a + b.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512 scale = _mm512_set1_ps(coef);
  const std::int64_t whole = n - n % 16;
  for (std::int64_t o = 0; o < whole; o += 16) {
    __m512 sums[16];
    for (int i = 0; i < 16; ++i) {
      const float* row = up + (o + i) * rank;
      __m512 s = _mm512_mul_ps(_mm512_loadu_ps(row), _mm512_loadu_ps(h));
      for (std::int64_t v = 1; v < vectors; ++v)
        s = _mm512_fmadd_ps(_mm512_loadu_ps(row + 16 * v), _mm512_loadu_ps(h + 16 * v), s);
      sums[i] = s;
    }
    __m512 halves[8], quarters[4], eighths[2];
    for (int i = 0; i < 8; ++i)  // 256-bit halves of a pair: each half now sums 8 lanes of one output
      halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(sums[2 * i], sums[2 * i + 1], 0x44),
                                _mm512_shuffle_f32x4(sums[2 * i], sums[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; ++i)  // 128-bit quarters: 4 lanes per output
      quarters[i] = _mm512_add_ps(_mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0x88),
                                  _mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; ++i)  // pairs of lanes within each 128-bit quarter
      eighths[i] = _mm512_add_ps(_mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], 0x44),
                                 _mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], 0xEE));
    const __m512 folded = _mm512_add_ps(_mm512_shuffle_ps(eighths[0], eighths[1], 0x88),
                                        _mm512_shuffle_ps(eighths[0], eighths[1], 0xDD));
    _mm512_storeu_ps(out + o, _mm512_mul_ps(scale, _mm512_permutexvar_ps(order, folded)));
  }
  return whole;
}
MOTE_AVX512_WARNINGS_ON
#endif

}  // namespace mote::backend::low_rank_detail

namespace mote::backend {

// out[0, n) = term.coef * up (down x) for one row x [k]: plain loops, as a term is a few
// thousand multiply-adds, less than a call into a threaded product costs.
template <class T>
void low_rank_row(const LowRankTerm<T>& term, const T* x, std::int64_t k, std::int64_t n, T* out) {
  using namespace low_rank_detail;
  const std::int64_t r = term.rank;
  thread_local std::vector<T> inner;
  inner.resize(static_cast<std::size_t>(r));
  T* h = inner.data();
  for (std::int64_t j = 0; j < r; ++j) {
    const T* dj = term.down + j * k;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (std::int64_t i = 0; i < k; ++i) sum += dj[i] * x[i];
    h[j] = sum;
  }
#if MOTE_AVX512_KERNELS
  if constexpr (std::is_same_v<T, float>) {
    if (r % 16 == 0 && fp32_kernel_available()) {
      const std::int64_t done = up_product_16(term.up, h, r, term.coef, n, out);
      return up_product(term.up, h, r, term.coef, done, n, out);
    }
  }
#endif
  switch (r) {
    case 8: return up_product<8>(term.up, h, term.coef, n, out);
    case 16: return up_product<16>(term.up, h, term.coef, n, out);
    case 32: return up_product<32>(term.up, h, term.coef, n, out);
    case 64: return up_product<64>(term.up, h, term.coef, n, out);
    default: return up_product(term.up, h, r, term.coef, std::int64_t{0}, n, out);
  }
}

// Adds each term's update, computed into updates [count, n], to its row of c, in list order.
template <class T>
void add_low_rank_updates(const LowRankTerm<T>* terms, std::int64_t count, const T* updates, std::int64_t n, T* c,
                          std::int64_t ldc) {
  for (std::int64_t t = 0; t < count; ++t) {
    T* row = c + terms[t].row * ldc;
    const T* update = updates + t * n;
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) row[j] += update[j];
  }
}

}  // namespace mote::backend
