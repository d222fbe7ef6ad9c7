#pragma once
// CPU fused scaled-dot-product attention with grouped-query heads.
// Layouts: q and out [batch, heads, q_len, head_dim]; k and v [batch, kv_heads, kv_len, head_dim];
// probs [batch, heads, q_len, kv_len]. In the forward pass the kv heads of k and v may sit
// kv_head_stride >= kv_len * head_dim elements apart (a KV cache with room to grow).
// Query head h reads kv head h / (heads / kv_heads).
// Query t sits at absolute position kv_len - q_len + t, so with `causal` it sees keys s <= that.
// `mask` (nullable) is [batch, q_len, kv_len] (mask_batch_stride = q_len * kv_len) or one [q_len, kv_len]
// shared by the batch (stride 0); nonzero means "may attend". A query with no allowed key gets
// all-zero probabilities, hence a zero output and zero gradients.
#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "mote/backend/cpu/bf16_gemm.hpp"
#include "mote/backend/cpu/cpu.hpp"
#include "mote/backend/cpu/gemm.hpp"
#include "mote/backend/cpu/row_exp.hpp"
#include "mote/backend/cpu/spin_team.hpp"

namespace mote::backend {

namespace attention_detail {
template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>>;
template <class T>
using MatrixMap = Eigen::Map<RowMatrix<T>>;

// A head's float product large enough for mote's own kernels (fp32, or bf16 under
// matmul_precision::bf16) runs there, on one thread inside the loop over heads; returns false to
// leave it to Eigen.
template <class T>
bool own_kernel_product(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
                        const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if constexpr (std::is_same_v<T, float>)
    return gemm_detail::own_kernel_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    return false;
}

// A cached row as T: itself, or a bf16 cache's row widened (exactly) into `wide`. The portable loop
// then sums a bf16 cache's rows in the same order as a float cache's, so both give the same bits.
template <class T>
inline const T* as_row(const T* row, std::int64_t, std::vector<T>&) noexcept {
  return row;
}
inline const float* as_row(const std::uint16_t* row, std::int64_t n, std::vector<float>& wide) noexcept {
  for (std::int64_t i = 0; i < n; ++i) wide[static_cast<std::size_t>(i)] = bf16_detail::from_bf16(row[i]);
  return wide.data();
}

// One query (a decoding step) against one head: scores, masked softmax and the weighted sum of
// values, in one pass over the head's keys and one over its values. Masked keys are never read;
// the output is written whole (zero when every key is masked). KV is T, or bf16 bits for float.
template <class T, class KV>
void one_query(const T* q, const KV* keys, const KV* values, const std::uint8_t* mask_row, std::int64_t kv_len,
               std::int64_t head_dim, T scale, T* row, T* out) {
  constexpr T masked = -std::numeric_limits<T>::infinity();
  thread_local std::vector<T> wide;
  if constexpr (!std::is_same_v<KV, T>) wide.resize(static_cast<std::size_t>(head_dim));
  for (std::int64_t s = 0; s < kv_len; ++s) {
    if (mask_row && !mask_row[s]) {
      row[s] = masked;
      continue;
    }
    const T* key = as_row(keys + s * head_dim, head_dim, wide);
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (std::int64_t d = 0; d < head_dim; ++d) dot += q[d] * key[d];
    row[s] = scale * dot;
  }
  std::fill(out, out + head_dim, T(0));
  const T max = row_exp::max(row, kv_len);
  if (max == masked) {
    std::fill(row, row + kv_len, T(0));
    return;
  }
  const T inv = T(1) / row_exp::exp_into(row, max, kv_len, row);
  for (std::int64_t s = 0; s < kv_len; ++s) {
    const T weight = row[s] *= inv;
    if (weight == T(0)) continue;  // masked or underflowed: adds nothing
    const T* value = as_row(values + s * head_dim, head_dim, wide);
#pragma omp simd
    for (std::int64_t d = 0; d < head_dim; ++d) out[d] += weight * value[d];
  }
}

#if MOTE_AVX512_KERNELS
MOTE_AVX512_WARNINGS_OFF
// 16 cached floats, or 16 bf16 bit patterns widened to float.
__attribute__((target("avx512f"))) inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
__attribute__((target("avx512f"))) inline __m512 load16(const std::uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// The same for a float head of 16 * chunks lanes, the query and the output held in registers. Each
// score ends in a tree reduction: Eigen's per-head matrix-vector product summed lanes in one serial
// chain, which kept few of the cache's lines in flight.
template <int chunks, class KV>
__attribute__((target("avx512f"))) void one_query_avx512(const float* q, const KV* keys, const KV* values,
                                                         const std::uint8_t* mask_row, std::int64_t kv_len,
                                                         float scale, float* row, float* out) {
  constexpr std::int64_t head_dim = 16 * chunks;
  constexpr float masked = -std::numeric_limits<float>::infinity();
  __m512 query[chunks], sum[chunks];
  for (int c = 0; c < chunks; ++c) {
    query[c] = _mm512_loadu_ps(q + 16 * c);
    sum[c] = _mm512_setzero_ps();
  }
  for (std::int64_t s = 0; s < kv_len; ++s) {
    if (mask_row && !mask_row[s]) {
      row[s] = masked;
      continue;
    }
    const KV* key = keys + s * head_dim;
    __m512 dot = _mm512_mul_ps(query[0], load16(key));
    for (int c = 1; c < chunks; ++c) dot = _mm512_fmadd_ps(query[c], load16(key + 16 * c), dot);
    row[s] = scale * _mm512_reduce_add_ps(dot);
  }
  const float max = row_exp::max(row, kv_len);
  if (max == masked) {
    std::fill(row, row + kv_len, 0.0f);
  } else {
    const float inv = 1.0f / row_exp::exp_into(row, max, kv_len, row);
    for (std::int64_t s = 0; s < kv_len; ++s) {
      const float weight = row[s] *= inv;
      if (weight == 0.0f) continue;
      const __m512 w = _mm512_set1_ps(weight);
      const KV* value = values + s * head_dim;
      for (int c = 0; c < chunks; ++c) sum[c] = _mm512_fmadd_ps(w, load16(value + 16 * c), sum[c]);
    }
  }
  for (int c = 0; c < chunks; ++c) _mm512_storeu_ps(out + 16 * c, sum[c]);
}
MOTE_AVX512_WARNINGS_ON
#endif

// Float heads of 64 or 128 lanes (GPT-2's, Llama's) take the AVX-512 form where it runs.
template <class T, class KV>
void decode_one_query(const T* q, const KV* keys, const KV* values, const std::uint8_t* mask_row, std::int64_t kv_len,
                      std::int64_t head_dim, T scale, T* row, T* out) {
#if MOTE_AVX512_KERNELS
  if constexpr (std::is_same_v<T, float>) {
    if ((head_dim == 64 || head_dim == 128) && fp32_kernel_available()) {
      (head_dim == 64 ? one_query_avx512<4, KV> : one_query_avx512<8, KV>)(q, keys, values, mask_row, kv_len, scale, row, out);
      return;
    }
  }
#endif
  one_query(q, keys, values, mask_row, kv_len, head_dim, scale, row, out);
}

// Runs one_head(i) for i in [0, count): in the held team when decoding holds one (its threads are
// awake already), else on OpenMP threads when the work is large enough to share.
template <class Fn>
void for_each_head(std::int64_t count, std::int64_t work, const Fn& one_head) {
  if (SpinTeam::active() && work > (1 << 12)) {
    SpinTeam::run(count, one_head);
    return;
  }
  const bool large = work > (1 << 15);
#pragma omp parallel for if (large)
  for (std::int64_t i = 0; i < count; ++i) one_head(i);
}
}  // namespace attention_detail

// Writes probs = masked softmax(scale * q k^T) and out = probs v.
template <class T>
void attention_forward(cpu, const T* q, const T* k, const T* v, const std::uint8_t* mask,
                       std::int64_t mask_batch_stride, std::int64_t batch, std::int64_t heads, std::int64_t kv_heads,
                       std::int64_t q_len, std::int64_t kv_len, std::int64_t head_dim, std::int64_t kv_head_stride,
                       bool causal, T scale, T* out, T* probs) {
  using ConstMap = attention_detail::ConstMatrixMap<T>;
  using Map = attention_detail::MatrixMap<T>;
  const std::int64_t group = heads / kv_heads;
  const std::int64_t causal_offset = kv_len - q_len;
  auto one_head = [&](std::int64_t bh) {
    const std::int64_t b = bh / heads, kv_head = b * kv_heads + (bh % heads) / group;
    const ConstMap Q(q + bh * q_len * head_dim, q_len, head_dim);
    const ConstMap K(k + kv_head * kv_head_stride, kv_len, head_dim);
    const ConstMap V(v + kv_head * kv_head_stride, kv_len, head_dim);
    Map P(probs + bh * q_len * kv_len, q_len, kv_len);
    Map O(out + bh * q_len * head_dim, q_len, head_dim);
    if (kv_len == 0) {  // nothing to attend to anywhere
      O.setZero();
      return;
    }
    if (q_len == 1) {  // decoding: the one query sees every key, causal or not
      attention_detail::decode_one_query(Q.data(), K.data(), V.data(), mask ? mask + b * mask_batch_stride : nullptr,
                                         kv_len, head_dim, scale, P.data(), O.data());
      return;
    }
    if (!attention_detail::own_kernel_product(false, true, q_len, kv_len, head_dim, scale, Q.data(), head_dim,
                                              K.data(), head_dim, T(0), P.data(), kv_len))
      P.noalias() = scale * (Q * K.transpose());
    const std::uint8_t* mask_rows = mask ? mask + b * mask_batch_stride : nullptr;
    for (std::int64_t t = 0; t < q_len; ++t) {
      T* row = probs + (bh * q_len + t) * kv_len;
      const std::uint8_t* mask_row = mask_rows ? mask_rows + t * kv_len : nullptr;
      const std::int64_t visible = causal ? std::clamp<std::int64_t>(causal_offset + t + 1, 0, kv_len) : kv_len;
      if (mask_row)  // a masked score of -inf gets exactly zero weight
        for (std::int64_t s = 0; s < visible; ++s)
          if (!mask_row[s]) row[s] = -std::numeric_limits<T>::infinity();
      const T max = row_exp::max(row, visible);
      if (max == -std::numeric_limits<T>::infinity()) {  // every key masked: the row stays zero
        std::fill(row, row + kv_len, T(0));
        continue;
      }
      const T inv = T(1) / row_exp::exp_into(row, max, visible, row);
      for (std::int64_t s = 0; s < visible; ++s) row[s] *= inv;
      std::fill(row + visible, row + kv_len, T(0));
    }
    if (!attention_detail::own_kernel_product(false, false, q_len, head_dim, kv_len, T(1), P.data(), kv_len,
                                              V.data(), head_dim, T(0), O.data(), head_dim))
      O.noalias() = P * V;
  };
  attention_detail::for_each_head(batch * heads, batch * heads * q_len * kv_len * head_dim, one_head);
}

// A bf16 KV cache's conversions: n floats rounded to bf16 bit patterns (nearest, ties to even), and
// bit patterns widened back to float (exactly).
inline void to_bf16(cpu, const float* from, std::uint16_t* to, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) to[i] = bf16_detail::to_bf16(from[i]);
}
inline void from_bf16(cpu, const std::uint16_t* from, float* to, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) to[i] = bf16_detail::from_bf16(from[i]);
}

// attention_forward of one query per sequence (a decoding step) over a bf16 KV cache: k and v hold
// bf16 bit patterns in attention_forward's layout, half the bytes a step reads; q, out and probs
// are float, and the sums are float's.
inline void attention_decode_bf16(cpu, const float* q, const std::uint16_t* k, const std::uint16_t* v,
                                  const std::uint8_t* mask, std::int64_t mask_batch_stride, std::int64_t batch,
                                  std::int64_t heads, std::int64_t kv_heads, std::int64_t kv_len, std::int64_t head_dim,
                                  std::int64_t kv_head_stride, float scale, float* out, float* probs) {
  const std::int64_t group = heads / kv_heads;
  const auto one_head = [&](std::int64_t bh) {
    const std::int64_t b = bh / heads, kv_head = b * kv_heads + (bh % heads) / group;
    float* o = out + bh * head_dim;
    if (kv_len == 0) {
      std::fill(o, o + head_dim, 0.0f);
      return;
    }
    attention_detail::decode_one_query(q + bh * head_dim, k + kv_head * kv_head_stride, v + kv_head * kv_head_stride,
                                       mask ? mask + b * mask_batch_stride : nullptr, kv_len, head_dim, scale,
                                       probs + bh * kv_len, o);
  };
  attention_detail::for_each_head(batch * heads, batch * heads * kv_len * head_dim, one_head);
}

// From the saved probs P: dV += P^T dO; dS = P * (dO V^T - rowsum(P * dO V^T)); dQ += scale dS K;
// dK += scale dS^T Q. One task per (batch, kv head) owns that head's dK and dV, so groups never race.
template <class T>
void attention_backward(cpu, const T* q, const T* k, const T* v, const T* probs, const T* dout, std::int64_t batch,
                        std::int64_t heads, std::int64_t kv_heads, std::int64_t q_len, std::int64_t kv_len,
                        std::int64_t head_dim, T scale, T* dq, T* dk, T* dv) {
  using ConstMap = attention_detail::ConstMatrixMap<T>;
  using Map = attention_detail::MatrixMap<T>;
  const std::int64_t group = heads / kv_heads;
#pragma omp parallel for if (batch * heads * q_len * kv_len * head_dim > (1 << 15))
  for (std::int64_t bkv = 0; bkv < batch * kv_heads; ++bkv) {
    const std::int64_t b = bkv / kv_heads, first_head = (bkv % kv_heads) * group;
    const ConstMap K(k + bkv * kv_len * head_dim, kv_len, head_dim);
    const ConstMap V(v + bkv * kv_len * head_dim, kv_len, head_dim);
    attention_detail::RowMatrix<T> dS(q_len, kv_len);
    for (std::int64_t h = first_head; h < first_head + group; ++h) {
      const std::int64_t bh = b * heads + h;
      const ConstMap Q(q + bh * q_len * head_dim, q_len, head_dim);
      const ConstMap P(probs + bh * q_len * kv_len, q_len, kv_len);
      const ConstMap dO(dout + bh * q_len * head_dim, q_len, head_dim);
      using attention_detail::own_kernel_product;
      if (dv && !own_kernel_product(true, false, kv_len, head_dim, q_len, T(1), P.data(), kv_len, dO.data(),
                                    head_dim, T(1), dv + bkv * kv_len * head_dim, head_dim))
        Map(dv + bkv * kv_len * head_dim, kv_len, head_dim).noalias() += P.transpose() * dO;
      if (!dq && !dk) continue;
      if (!own_kernel_product(false, true, q_len, kv_len, head_dim, T(1), dO.data(), head_dim, V.data(), head_dim,
                              T(0), dS.data(), kv_len))
        dS.noalias() = dO * V.transpose();
      for (std::int64_t t = 0; t < q_len; ++t) {
        const T dot = dS.row(t).dot(P.row(t));
        dS.row(t) = P.row(t).cwiseProduct((dS.row(t).array() - dot).matrix());
      }
      if (dq && !own_kernel_product(false, false, q_len, head_dim, kv_len, scale, dS.data(), kv_len, K.data(),
                                    head_dim, T(1), dq + bh * q_len * head_dim, head_dim))
        Map(dq + bh * q_len * head_dim, q_len, head_dim).noalias() += scale * (dS * K);
      if (dk && !own_kernel_product(true, false, kv_len, head_dim, q_len, scale, dS.data(), kv_len, Q.data(),
                                    head_dim, T(1), dk + bkv * kv_len * head_dim, head_dim))
        Map(dk + bkv * kv_len * head_dim, kv_len, head_dim).noalias() += scale * (dS.transpose() * Q);
    }
  }
}

}  // namespace mote::backend
