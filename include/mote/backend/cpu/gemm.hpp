#pragma once
// CPU GEMM: large float products on mote's packed AVX-512 kernels (fp32, or bf16 under bf16 matmul
// precision), everything else through Eigen Map products (Eigen blocks and threads them itself);
// plus the bias helpers that matmul's forward and backward need.
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "mote/backend/cpu/bf16_gemm.hpp"
#include "mote/backend/cpu/cpu.hpp"
#include "mote/backend/cpu/fp32_gemm.hpp"
#include "mote/backend/cpu/gemv.hpp"
#include "mote/backend/cpu/skinny_gemm.hpp"
#include "mote/backend/kernel_ops.hpp"
#include "mote/core/error.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mote::backend {

namespace gemm_detail {

template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstRowMajorMap = Eigen::Map<const RowMajorMatrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using RowMajorMap = Eigen::Map<RowMajorMatrix<T>, 0, Eigen::OuterStride<>>;

inline constexpr double serial_gemm_macs = double(1 << 23);

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// C = alpha * op_a * op_b + beta * C, with the three beta cases Eigen maps onto one GEMM call.
template <class T, class OpA, class OpB>
void product(const OpA& op_a, const OpB& op_b, T alpha, T beta, RowMajorMap<T>& c) {
  if (beta == T(0)) {
    c.noalias() = alpha * op_a * op_b;  // never reads C, which may hold poison
  } else if (beta == T(1)) {
    c.noalias() += alpha * op_a * op_b;
  } else {
    c *= beta;
    c.noalias() += alpha * op_a * op_b;
  }
}

// A product through Eigen, with the thread policy below.
template <class T>
void eigen_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  RowMajorMap<T> c_map(c, m, n, Eigen::OuterStride<>(ldc));
  if (k <= 0) {  // an empty inner dimension contributes nothing
    if (beta == T(0))
      c_map.setZero();
    else if (beta != T(1))
      c_map *= beta;
    return;
  }
  // Stored shapes: A is [m,k] or, transposed, [k,m]; B is [k,n] or [n,k].
  const ConstRowMajorMap<T> a_map(a, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
  const ConstRowMajorMap<T> b_map(b, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
  auto run = [&] {
    if (!trans_a && !trans_b)
      product(a_map, b_map, alpha, beta, c_map);
    else if (!trans_a && trans_b)
      product(a_map, b_map.transpose(), alpha, beta, c_map);
    else if (trans_a && !trans_b)
      product(a_map.transpose(), b_map, alpha, beta, c_map);
    else
      product(a_map.transpose(), b_map.transpose(), alpha, beta, c_map);
  };
  if (!trans_a && m <= gemv_detail::max_rows) {  // decoding: a few tokens against a weight matrix
    small_m_gemm(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Eigen threads any product above 50k multiply-adds and its threads busy-wait on each other;
  // below serial_gemm_macs that synchronisation costs more than the second core gives back.
  const double macs = double(m) * double(n) * double(k);
  // The other matrix-vector shapes (a few output columns, or a transposed A) are bound by reading
  // a matrix too, and Eigen runs them on one thread at any size: from 1M multiply-adds they are
  // split across the cores below instead.
  const bool vector_like = std::min(m, n) <= 4;
  if ((macs >= serial_gemm_macs && !vector_like) || max_threads() == 1) {
    run();
    return;
  }
#ifdef _OPENMP
  // Skinny products (a LoRA rank on one side) still deserve every core: one fork and join, each
  // thread a serial product over its share of the longer output side.
  const int threads = omp_in_parallel() ? 1 : max_threads();
  const std::int64_t side = std::max(m, n);
  const bool skinny = std::min({m, n, k}) <= 64;
  if (threads > 1 && skinny && macs >= double(1 << 20) && side >= 64 * threads) {
    const bool by_rows = m >= n;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
      const std::int64_t lo = side * t / threads, len = side * (t + 1) / threads - lo;
      if (by_rows)
        eigen_gemm(trans_a, trans_b, len, n, k, alpha, a + (trans_a ? lo : lo * lda), lda, b, ldb, beta, c + lo * ldc,
                   ldc);
      else
        eigen_gemm(trans_a, trans_b, m, len, k, alpha, a, lda, b + (trans_b ? lo * ldb : lo), ldb, beta, c + lo, ldc);
    }
    return;
  }
  // A one-thread region scopes the thread-count change: Eigen reads omp_get_max_threads().
#pragma omp parallel num_threads(1)
  {
    omp_set_num_threads(1);
    run();
  }
#else
  run();
#endif
}

// Under bf16 precision, products below this many multiply-adds or with a side of at most
// `max_fp32_side` (decode's few rows, LoRA ranks) stay fp32: they are bound by reading an operand
// or by packing, and measured no faster (or slower) through the bf16 kernel.
inline constexpr double min_bf16_macs = double(1 << 16);
inline constexpr std::int64_t max_fp32_side = 32;

inline bool bf16_worthwhile(std::int64_t m, std::int64_t n, std::int64_t k) {
  return std::min({m, n, k}) > max_fp32_side && double(m) * double(n) * double(k) >= min_bf16_macs;
}

// C = alpha * round(op(A)) . round(op(B)) + beta * C, operands rounded to bf16, sums in float.
// Every core outside a parallel region, one thread inside one.
inline void bf16_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                      const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                      std::int64_t ldc) {
  using packed_gemm::Operand;
  const Operand op_a = Operand::of(a, lda, trans_a), op_b = Operand::of(b, ldb, trans_b);
#if MOTE_AVX512_KERNELS
  if (bf16_detail::use_kernel().load(std::memory_order_relaxed)) {
    const packed_gemm::Term product{op_a, op_b, k};
    packed_gemm::run_in_bands(m, n, product, nullptr, c, ldc,
                              [&](std::int64_t rows, std::int64_t cols, const packed_gemm::Term& band,
                                  const packed_gemm::Term*, float* c_band) {
                                packed_gemm::blocked_gemm<bf16_detail::Kernel>(rows, cols, alpha, band, nullptr,
                                                                               beta, c_band, ldc);
                              });
    return;
  }
#endif
  // Portable: the same rounded operands, multiplied in fp32.
  RowMajorMatrix<float> rounded_a(m, k), rounded_b(k, n);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < k; ++j) rounded_a(i, j) = bf16_detail::round_to_bf16(op_a.at(i, j));
  for (std::int64_t i = 0; i < k; ++i)
    for (std::int64_t j = 0; j < n; ++j) rounded_b(i, j) = bf16_detail::round_to_bf16(op_b.at(i, j));
  eigen_gemm(false, false, m, n, k, alpha, rounded_a.data(), k, rounded_b.data(), n, beta, c, ldc);
}

// The packed kernel starts where the matrix-vector kernel stops: no decoding batch falls to Eigen.
static_assert(fp32_detail::min_rows == gemv_detail::max_rows + 1);

// Runs a float product on one of mote's own kernels where one applies (bf16 under
// matmul_precision::bf16, else fp32 on AVX-512 CPUs) and returns true; false leaves it to Eigen.
inline bool own_kernel_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                            const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                            std::int64_t ldc) {
  if (m <= 0 || n <= 0 || k <= 0) return false;
  if (get_matmul_precision() == matmul_precision::bf16 && bf16_worthwhile(m, n, k)) {
    bf16_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return true;
  }
#if MOTE_AVX512_KERNELS
  if (skinny_gemm::applies(trans_a, trans_b, m, n, k) && fp32_kernel_available()) {
    skinny_gemm::gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return true;
  }
  if (fp32_detail::worthwhile(m, n, k) && fp32_kernel_available()) {
    using packed_gemm::Operand;
    // A weight that a decoding loop named constant is packed once for all its steps (a step's
    // rows, at most a cache block of them: each thread packs them whole).
    WeightPanels* weights = WeightPanels::active();
    if (weights && m <= fp32_detail::block_rows) {
      const Operand op_b = Operand::of(b, ldb, trans_b);
      const float* panels = weights->find_or_pack({b, ldb, trans_b, k, n}, fp32_detail::whole_panels_floats(k, n),
                                                  [&](float* out) { fp32_detail::pack_weight_whole(op_b, k, n, out); });
      if (panels) {
        fp32_detail::prepacked_gemm(m, n, k, alpha, Operand::of(a, lda, trans_a), panels, beta, c, ldc);
        return true;
      }
    }
    fp32_detail::gemm(m, n, alpha, {Operand::of(a, lda, trans_a), Operand::of(b, ldb, trans_b), k}, nullptr, beta, c,
                      ldc);
    return true;
  }
#endif
  return false;
}

// gemm_sum fuses its second term on the fp32 kernel where the first runs there itself (fp32
// precision, a large product) and the second is shallow.
inline constexpr std::int64_t max_fused_depth = 64;
inline bool fused_sum_applies(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t k2) {
  return m > 0 && n > 0 && k > 0 && k2 > 0 && k2 <= max_fused_depth &&
         get_matmul_precision() == matmul_precision::fp32 && fp32_detail::worthwhile(m, n, k) &&
         fp32_kernel_available();
}

}  // namespace gemm_detail

// Row-major C[m,n] = alpha * op(A) * op(B) + beta * C; op transposes when the flag is set;
// lda/ldb/ldc are row strides. beta == 0 ignores C's old contents entirely. Large float products
// run on fp32_gemm.hpp's kernel where the CPU has AVX-512; under matmul_precision::bf16 they round
// their operands to bf16 (bf16_gemm.hpp).
template <class T>
void gemm(cpu, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_detail::own_kernel_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  }
  gemm_detail::eigen_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Row-major C[m,n] = A op(B) + the low-rank terms' updates of A's rows (kernel_ops.hpp): a
// projection with its unmerged LoRA experts. Decoding (a few rows) runs the terms inside the
// product's own threaded job; more rows run the product, then the terms one after another.
template <class T>
void gemm_low_rank(cpu, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a, std::int64_t lda,
                   const T* b, std::int64_t ldb, const LowRankTerm<T>* terms, std::int64_t count, T* c,
                   std::int64_t ldc) {
  for (std::int64_t t = 0; t < count; ++t)
    if (terms[t].row < 0 || terms[t].row >= m || terms[t].rank <= 0)
      throw shape_error("mote: gemm_low_rank: term " + std::to_string(t) + " has row " +
                                  std::to_string(terms[t].row) + " and rank " + std::to_string(terms[t].rank) +
                                  "; expected a row in [0, " + std::to_string(m) + ") and a positive rank");
  if (m <= gemv_detail::max_rows && k > 0) {
    small_m_gemm(trans_b, m, n, k, T(1), a, lda, b, ldb, T(0), c, ldc, terms, count);
    return;
  }
  gemm(cpu{}, false, trans_b, m, n, k, T(1), a, lda, b, ldb, T(0), c, ldc);
  std::vector<T> update(static_cast<std::size_t>(n));
  for (std::int64_t t = 0; t < count; ++t) {
    low_rank_row(terms[t], a + terms[t].row * lda, k, n, update.data());
    add_low_rank_updates(terms + t, 1, update.data(), n, c, ldc);
  }
}

// C[m,n] = alpha * (first + second) + beta * C for two products of the same shape. A shallow
// second term (a LoRA update: depth at most 64) rides inside the first's register tiles on mote's
// fp32 kernel, so C is written once; otherwise the two are separate products.
template <class T>
void gemm_sum(cpu, std::int64_t m, std::int64_t n, T alpha, const GemmTerm<T>& first, const GemmTerm<T>& second,
              T beta, T* c, std::int64_t ldc) {
#if MOTE_AVX512_KERNELS
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_detail::fused_sum_applies(m, n, first.k, second.k)) {
      using packed_gemm::Operand;
      const packed_gemm::Term main{Operand::of(first.a, first.lda, first.trans_a),
                                   Operand::of(first.b, first.ldb, first.trans_b), first.k};
      const packed_gemm::Term extra{Operand::of(second.a, second.lda, second.trans_a),
                                    Operand::of(second.b, second.ldb, second.trans_b), second.k};
      fp32_detail::gemm(m, n, alpha, main, &extra, beta, c, ldc);
      return;
    }
  }
#endif
  gemm(cpu{}, first.trans_a, first.trans_b, m, n, first.k, alpha, first.a, first.lda, first.b, first.ldb, beta, c, ldc);
  gemm(cpu{}, second.trans_a, second.trans_b, m, n, second.k, alpha, second.a, second.lda, second.b, second.ldb, T(1),
       c, ldc);
}

// `batch` independent GEMMs at fixed strides. A stride of 0 repeats one operand across the batch;
// stride_c must not be 0 (the products would race on one C).
template <class T>
void gemm_strided_batched(cpu, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
                          const T* a, std::int64_t lda, std::int64_t stride_a, const T* b, std::int64_t ldb,
                          std::int64_t stride_b, T beta, T* c, std::int64_t ldc, std::int64_t stride_c,
                          std::int64_t batch) {
  if (batch <= 0) return;
  // Small products gain more from one thread per matrix than from Eigen's threads inside each;
  // large ones keep Eigen's threading unless the batch alone fills every thread.
  const std::int64_t flops = m * n * k;
  const bool across_batch = batch > 1 && batch * flops > (1 << 15) &&
                            (flops < (std::int64_t{1} << 21) || batch >= gemm_detail::max_threads());
  auto one = [&](std::int64_t i) {
    gemm(cpu{}, trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c,
         ldc);
  };
  if (!across_batch) {
    // No `parallel if(false)` region: inside even a one-thread team, gemm's own split would start
    // a nested team, and libgomp creates fresh threads for every nested team.
    for (std::int64_t i = 0; i < batch; ++i) one(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < batch; ++i) one(i);
}

// c[r, :] += bias for every row r.
template <class T>
void add_row_vector(cpu, T* c, const T* bias, std::int64_t rows, std::int64_t cols) {
  auto add_to_row = [&](std::int64_t r) {
    T* row = c + r * cols;
#pragma omp simd
    for (std::int64_t j = 0; j < cols; ++j) row[j] += bias[j];
  };
  if (rows * cols <= (1 << 16)) {  // no region at all: even an if(false) one starts a libgomp team when nested
    for (std::int64_t r = 0; r < rows; ++r) add_to_row(r);
    return;
  }
#pragma omp parallel for
  for (std::int64_t r = 0; r < rows; ++r) add_to_row(r);
}

// out[:] += sum over r of x[r, :].
template <class T>
void sum_rows(cpu, const T* x, std::int64_t rows, std::int64_t cols, T* out) {
  // Threads own disjoint column blocks, so no two write the same out element.
  constexpr std::int64_t block = 256;
  const std::int64_t blocks = (cols + block - 1) / block;
#pragma omp parallel for if (blocks > 1 && rows * cols > (1 << 16))
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t j0 = blk * block, j1 = std::min(cols, j0 + block);
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* row = x + r * cols;
#pragma omp simd
      for (std::int64_t j = j0; j < j1; ++j) out[j] += row[j];
    }
  }
}

}  // namespace mote::backend
