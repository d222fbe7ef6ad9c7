#pragma once
// CUDA scaled-dot-product attention with grouped-query heads, with the layouts and semantics of
// backend/cpu/attention.hpp: q and out [batch, heads, q_len, head_dim]; k and v [batch, kv_heads,
// kv_len, head_dim]; probs [batch, heads, q_len, kv_len]; query head h reads kv head h / group.
// In the forward pass the kv heads may sit kv_head_stride elements apart (a KV cache's storage).
// The products are cuBLAS strided-batched GEMMs, one call per position within a group: the g-th
// query head of every (batch, kv head) pair sits at a fixed stride, its kv head at another.
#include <cuda/std/limits>

#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/cuda/gemm.cuh"
#include "mote/backend/cuda/math.cuh"
#include "mote/backend/cuda/reduce.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

// The extents every attention product shares.
struct attention_dims {
  std::int64_t batch, heads, kv_heads, q_len, kv_len, head_dim;
  std::int64_t group() const { return heads / kv_heads; }
  std::int64_t pairs() const { return batch * kv_heads; }  // (batch, kv head) pairs, the GEMM batch
  std::int64_t q_size() const { return q_len * head_dim; }
  std::int64_t kv_size() const { return kv_len * head_dim; }
  std::int64_t p_size() const { return q_len * kv_len; }
};

// In place over the rows of probs, which hold scale * q k^T: the causal, masked softmax. A row with
// no visible key becomes all zeros.
template <class T>
__global__ void masked_softmax_kernel(T* probs, const std::uint8_t* mask, std::int64_t mask_batch_stride,
                                      std::int64_t rows, std::int64_t heads, std::int64_t q_len, std::int64_t kv_len,
                                      bool causal) {
  __shared__ T partial[threads_per_block];
  const T minus_inf = -::cuda::std::numeric_limits<T>::infinity();
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const std::int64_t t = row % q_len, b = row / (heads * q_len);
    T* p = probs + row * kv_len;
    const std::uint8_t* allowed = mask ? mask + b * mask_batch_stride + t * kv_len : nullptr;
    std::int64_t visible = kv_len;
    if (causal) {
      const std::int64_t last = kv_len - q_len + t + 1;
      visible = last < 0 ? 0 : (last > kv_len ? kv_len : last);
    }
    T max = minus_inf;
    for (std::int64_t s = threadIdx.x; s < visible; s += blockDim.x)
      if (!allowed || allowed[s]) max = p[s] > max ? p[s] : max;
    max = block_reduce(max, partial, max_op{});
    T sum = T(0);
    for (std::int64_t s = threadIdx.x; s < kv_len; s += blockDim.x) {
      const T e = (max != minus_inf && s < visible && (!allowed || allowed[s])) ? device_exp(p[s] - max) : T(0);
      p[s] = e;
      sum += e;
    }
    sum = block_reduce(sum, partial, sum_op{});
    if (sum > T(0)) {
      const T inv = T(1) / sum;
      for (std::int64_t s = threadIdx.x; s < kv_len; s += blockDim.x) p[s] *= inv;
    }
  }
}

// dS = P * (dS - rowsum(P * dS)) in place over rows of dS, where dS enters as dO V^T.
template <class T>
__global__ void softmax_grad_rows_kernel(const T* probs, T* ds, std::int64_t rows, std::int64_t kv_len) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* p = probs + row * kv_len;
    T* d = ds + row * kv_len;
    T dot = T(0);
    for (std::int64_t s = threadIdx.x; s < kv_len; s += blockDim.x) dot += p[s] * d[s];
    dot = block_reduce(dot, partial, sum_op{});
    for (std::int64_t s = threadIdx.x; s < kv_len; s += blockDim.x) d[s] = p[s] * (d[s] - dot);
  }
}

// For each g < group: C_g = alpha op(A_g) op(B) + beta C_g over every (batch, kv head) pair, where
// the query-side operands (per query head) step by group heads and the kv-side ones by one kv head.
// `a_per_query`/`c_per_query` say which of A and C are query-side; B is always the kv-side one when
// A is query-side, and query-side otherwise.
template <class T>
void grouped_gemm(const attention_dims& d, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                  T alpha, const T* a, std::int64_t lda, std::int64_t a_size, bool a_per_query, const T* b,
                  std::int64_t ldb, std::int64_t b_size, bool b_per_query, T beta, T* c, std::int64_t ldc,
                  std::int64_t c_size, bool c_per_query) {
  const std::int64_t group = d.group();
  const auto stride = [group](std::int64_t size, bool per_query) { return per_query ? group * size : size; };
  const auto offset = [](std::int64_t size, bool per_query, std::int64_t g) { return per_query ? g * size : 0; };
  for (std::int64_t g = 0; g < group; ++g)
    gemm_strided_batched(cuda{}, trans_a, trans_b, m, n, k, alpha, a + offset(a_size, a_per_query, g), lda,
                         stride(a_size, a_per_query), b + offset(b_size, b_per_query, g), ldb, stride(b_size, b_per_query),
                         // A kv-side C (dK, dV) gathers every query head of its group: accumulate after the first.
                         (!c_per_query && g > 0) ? T(1) : beta, c + offset(c_size, c_per_query, g), ldc,
                         stride(c_size, c_per_query), d.pairs());
}

}  // namespace cuda_detail

// Writes probs = masked softmax(scale * q k^T) and out = probs v.
template <Real T>
void attention_forward(cuda, const T* q, const T* k, const T* v, const std::uint8_t* mask,
                       std::int64_t mask_batch_stride, std::int64_t batch, std::int64_t heads, std::int64_t kv_heads,
                       std::int64_t q_len, std::int64_t kv_len, std::int64_t head_dim, std::int64_t kv_head_stride,
                       bool causal, T scale, T* out, T* probs) {
  const cuda_detail::attention_dims d{batch, heads, kv_heads, q_len, kv_len, head_dim};
  if (batch == 0 || heads == 0 || q_len == 0) return;
  if (kv_len == 0) {  // nothing to attend to anywhere
    cuda::fill(out, static_cast<std::size_t>(batch * heads * q_len * head_dim), T(0));
    return;
  }
  // S = scale q k^T, per query head against its kv head.
  cuda_detail::grouped_gemm(d, false, true, q_len, kv_len, head_dim, scale, q, head_dim, d.q_size(), true, k, head_dim,
                            kv_head_stride, false, T(0), probs, kv_len, d.p_size(), true);
  const std::int64_t rows = batch * heads * q_len;
  cuda_detail::masked_softmax_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(probs, mask, mask_batch_stride, rows, heads, q_len, kv_len, causal);
  cuda_detail::check_launch("attention_forward (masked softmax) kernel");
  // O = P v
  cuda_detail::grouped_gemm(d, false, false, q_len, head_dim, kv_len, T(1), probs, kv_len, d.p_size(), true, v, head_dim,
                            kv_head_stride, false, T(0), out, head_dim, d.q_size(), true);
}

// From the saved probs P: dV += P^T dO; dS = P * (dO V^T - rowsum(P * dO V^T)); dQ += scale dS K;
// dK += scale dS^T Q. Null gradients are skipped.
template <Real T>
void attention_backward(cuda, const T* q, const T* k, const T* v, const T* probs, const T* dout, std::int64_t batch,
                        std::int64_t heads, std::int64_t kv_heads, std::int64_t q_len, std::int64_t kv_len,
                        std::int64_t head_dim, T scale, T* dq, T* dk, T* dv) {
  const cuda_detail::attention_dims d{batch, heads, kv_heads, q_len, kv_len, head_dim};
  if (batch == 0 || heads == 0 || q_len == 0 || kv_len == 0) return;
  if (dv)
    cuda_detail::grouped_gemm(d, true, false, kv_len, head_dim, q_len, T(1), probs, kv_len, d.p_size(), true, dout,
                              head_dim, d.q_size(), true, T(1), dv, head_dim, d.kv_size(), false);
  if (!dq && !dk) return;
  const std::int64_t rows = batch * heads * q_len;
  cuda_detail::scratch<T> ds(static_cast<std::size_t>(rows * kv_len));
  cuda_detail::grouped_gemm(d, false, true, q_len, kv_len, head_dim, T(1), dout, head_dim, d.q_size(), true, v, head_dim,
                            d.kv_size(), false, T(0), ds.data(), kv_len, d.p_size(), true);
  cuda_detail::softmax_grad_rows_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(probs, ds.data(), rows, kv_len);
  cuda_detail::check_launch("attention_backward (softmax gradient) kernel");
  if (dq)
    cuda_detail::grouped_gemm(d, false, false, q_len, head_dim, kv_len, scale, ds.data(), kv_len, d.p_size(), true, k,
                              head_dim, d.kv_size(), false, T(1), dq, head_dim, d.q_size(), true);
  if (dk)
    cuda_detail::grouped_gemm(d, true, false, kv_len, head_dim, q_len, scale, ds.data(), kv_len, d.p_size(), true, q,
                              head_dim, d.q_size(), true, T(1), dk, head_dim, d.kv_size(), false);
}

}  // namespace mote::backend
