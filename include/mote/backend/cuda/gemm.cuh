#pragma once
// CUDA GEMMs through cuBLAS, plus the bias kernels of a linear layer (add_row_vector, sum_rows).
// cuBLAS is column-major, and a row-major matrix with row stride ld is the column-major view of its
// transpose with leading dim ld; so row-major C = op(A) op(B) is issued as column-major
// C^T = op(B)^T op(A)^T: B goes first and m and n swap.
#include <cublas_v2.h>

#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/precision.hpp"
#include "mote/backend/cuda/reduce.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

inline cublasOperation_t cublas_op(bool transpose) { return transpose ? CUBLAS_OP_T : CUBLAS_OP_N; }

// Under matmul_precision::bf16 cuBLAS may round float operands to bf16 for the tensor cores and
// sum in float (CUBLAS_COMPUTE_32F_FAST_16BF); otherwise SGEMM proper.
inline bool bf16_products() { return get_matmul_precision() == matmul_precision::bf16; }

inline cublasStatus_t cublas_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                                  const float* a, int lda, const float* b, int ldb, const float* beta, float* c, int ldc) {
  if (bf16_products())
    return cublasGemmEx(cublas_handle(), ta, tb, m, n, k, alpha, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb, beta, c,
                        CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT);
  return cublasSgemm(cublas_handle(), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline cublasStatus_t cublas_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const double* alpha,
                                  const double* a, int lda, const double* b, int ldb, const double* beta, double* c, int ldc) {
  return cublasDgemm(cublas_handle(), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline cublasStatus_t cublas_gemm_strided_batched(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                                  const float* alpha, const float* a, int lda, long long stride_a,
                                                  const float* b, int ldb, long long stride_b, const float* beta, float* c,
                                                  int ldc, long long stride_c, int batch) {
  if (bf16_products())
    return cublasGemmStridedBatchedEx(cublas_handle(), ta, tb, m, n, k, alpha, a, CUDA_R_32F, lda, stride_a, b,
                                      CUDA_R_32F, ldb, stride_b, beta, c, CUDA_R_32F, ldc, stride_c, batch,
                                      CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT);
  return cublasSgemmStridedBatched(cublas_handle(), ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c,
                                   ldc, stride_c, batch);
}
inline cublasStatus_t cublas_gemm_strided_batched(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                                  const double* alpha, const double* a, int lda, long long stride_a,
                                                  const double* b, int ldb, long long stride_b, const double* beta,
                                                  double* c, int ldc, long long stride_c, int batch) {
  return cublasDgemmStridedBatched(cublas_handle(), ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c,
                                   ldc, stride_c, batch);
}

// c[b, r, col] = beta * c[b, r, col] (zero when beta is 0, whatever c held): the k == 0 product,
// done here because cuBLAS leaves that edge case loosely specified.
template <class T>
struct scale_matrices {
  T* c;
  std::int64_t rows_cols;  // m * n
  std::int64_t n;
  std::int64_t ldc;
  std::int64_t stride_c;
  T beta;
  __device__ void operator()(std::int64_t flat) const {
    const std::int64_t batch = flat / rows_cols, within = flat % rows_cols;
    T& x = c[batch * stride_c + (within / n) * ldc + within % n];
    x = beta == T(0) ? T(0) : beta * x;
  }
};

template <class T>
struct add_row_vector_at {
  T* c;
  const T* bias;
  std::int64_t cols;
  __device__ void operator()(std::int64_t flat) const { c[flat] += bias[flat % cols]; }
};

}  // namespace cuda_detail

// Row-major C[m, n] = alpha * op(A) * op(B) + beta * C; lda, ldb and ldc are row strides, and
// beta == 0 ignores C's old contents (NaN included).
template <Real T>
void gemm(cuda, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    cuda_detail::for_each_index(m * n, cuda_detail::scale_matrices<T>{c, m * n, n, ldc, 0, beta}, "gemm (k = 0) kernel");
    return;
  }
  using cuda_detail::to_cublas_int;
  cuda_detail::check_cublas(
      cuda_detail::cublas_gemm(cuda_detail::cublas_op(trans_b), cuda_detail::cublas_op(trans_a), to_cublas_int(n, "gemm n"),
                               to_cublas_int(m, "gemm m"), to_cublas_int(k, "gemm k"), &alpha, b,
                               to_cublas_int(ldb, "gemm ldb"), a, to_cublas_int(lda, "gemm lda"), &beta, c,
                               to_cublas_int(ldc, "gemm ldc")),
      sizeof(T) == sizeof(float) ? "cublasSgemm" : "cublasDgemm");
}

// gemm on `batch` matrix triples, the i-th starting at a + i * stride_a, b + i * stride_b, c + i * stride_c.
template <Real T>
void gemm_strided_batched(cuda, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
                          const T* a, std::int64_t lda, std::int64_t stride_a, const T* b, std::int64_t ldb,
                          std::int64_t stride_b, T beta, T* c, std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {
    cuda_detail::for_each_index(batch * m * n, cuda_detail::scale_matrices<T>{c, m * n, n, ldc, stride_c, beta},
                                "gemm_strided_batched (k = 0) kernel");
    return;
  }
  using cuda_detail::to_cublas_int;
  cuda_detail::check_cublas(
      cuda_detail::cublas_gemm_strided_batched(
          cuda_detail::cublas_op(trans_b), cuda_detail::cublas_op(trans_a), to_cublas_int(n, "gemm_strided_batched n"),
          to_cublas_int(m, "gemm_strided_batched m"), to_cublas_int(k, "gemm_strided_batched k"), &alpha, b,
          to_cublas_int(ldb, "gemm_strided_batched ldb"), static_cast<long long>(stride_b), a,
          to_cublas_int(lda, "gemm_strided_batched lda"), static_cast<long long>(stride_a), &beta, c,
          to_cublas_int(ldc, "gemm_strided_batched ldc"), static_cast<long long>(stride_c),
          to_cublas_int(batch, "gemm_strided_batched batch")),
      sizeof(T) == sizeof(float) ? "cublasSgemmStridedBatched" : "cublasDgemmStridedBatched");
}

// c[r, :] += bias for a packed [rows, cols] c.
template <Real T>
void add_row_vector(cuda, T* c, const T* bias, std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  cuda_detail::for_each_index(rows * cols, cuda_detail::add_row_vector_at<T>{c, bias, cols}, "add_row_vector kernel");
}

// out[:] += sum over r of x[r, :]: the bias gradient of a linear layer.
template <Real T>
void sum_rows(cuda, const T* x, std::int64_t rows, std::int64_t cols, T* out) {
  cuda_detail::reduce_middle(std::int64_t{1}, rows, cols, cuda_detail::packed3_value<T>{x, rows, cols},
                             cuda_detail::accumulate_into<T>{out, T(1)}, "sum_rows kernel");
}

}  // namespace mote::backend
