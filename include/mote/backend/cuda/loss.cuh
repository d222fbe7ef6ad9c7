#pragma once
// CUDA fused cross-entropy with the semantics of backend/cpu/loss.hpp: logits [rows, vocab], int32
// targets [rows] (ignore_index or in [0, vocab), checked by the caller), an optional per-row weight.
// The forward's per-row statistics let backward skip a second reduction; the loss is summed by one
// block in double, in a fixed order, so it repeats exactly.
#include <cstdint>

#include "mote/backend/cuda/cuda.cuh"
#include "mote/backend/cuda/math.cuh"
#include "mote/backend/cuda/reduce.cuh"
#include "mote/backend/cuda/softmax.cuh"
#include "mote/core/dtype.hpp"

namespace mote::backend {

namespace cuda_detail {

template <class T>
__global__ void cross_entropy_rows_kernel(const T* logits, std::int64_t rows, std::int64_t vocab, T* row_max,
                                          T* row_log_sum) {
  __shared__ T partial[threads_per_block];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const row_log_sum_exp<T> lse = block_log_sum_exp(logits + r * vocab, vocab, partial);
    if (threadIdx.x == 0) {
      row_max[r] = lse.max;
      row_log_sum[r] = lse.log_sum;
    }
  }
}

// One block: loss = sum m_r ((max_r - x_t) + log_sum_r) / sum m_r over counted rows, in double.
template <class T>
__global__ void cross_entropy_total_kernel(const T* logits, const std::int32_t* targets, const T* loss_mask,
                                           const T* row_max, const T* row_log_sum, std::int64_t rows,
                                           std::int64_t vocab, std::int32_t ignore_index, T* loss, T* weight_sum) {
  __shared__ double partial[threads_per_block];
  double total = 0, weights = 0;
  for (std::int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const std::int32_t t = targets[r];
    if (t == ignore_index) continue;
    const double m = loss_mask ? static_cast<double>(loss_mask[r]) : 1.0;
    total += m * (static_cast<double>(row_max[r] - logits[r * vocab + t]) + static_cast<double>(row_log_sum[r]));
    weights += m;
  }
  total = block_reduce(total, partial, sum_op{});
  weights = block_reduce(weights, partial, sum_op{});
  if (threadIdx.x == 0) {
    loss[0] = weights == 0 ? T(0) : static_cast<T>(total / weights);
    weight_sum[0] = static_cast<T>(weights);
  }
}

// dlogits[r, j] += (softmax(logits_r)[j] - [j == t_r]) * m_r * dloss / weight_sum; scalars read on the device.
template <class T>
struct cross_entropy_grad_at {
  const T* logits;
  const std::int32_t* targets;
  const T* loss_mask;
  const T* row_max;
  const T* row_log_sum;
  const T* weight_sum;
  const T* dloss;
  std::int64_t vocab;
  std::int32_t ignore_index;
  T* dlogits;
  __device__ void operator()(std::int64_t flat) const {
    const std::int64_t r = flat / vocab, j = flat % vocab;
    const std::int32_t t = targets[r];
    if (t == ignore_index || weight_sum[0] == T(0)) return;
    const T g = (loss_mask ? loss_mask[r] : T(1)) * (dloss[0] / weight_sum[0]);
    if (g == T(0)) return;
    const T p = device_exp((logits[flat] - row_max[r]) - row_log_sum[r]);
    dlogits[flat] += g * (j == t ? p - T(1) : p);
  }
};

}  // namespace cuda_detail

// Writes row_max, row_log_sum [rows], loss [1] and weight_sum [1].
template <Real T>
void cross_entropy_forward(cuda, const T* logits, const std::int32_t* targets, const T* loss_mask, std::int64_t rows,
                           std::int64_t vocab, std::int32_t ignore_index, T* loss, T* row_max, T* row_log_sum,
                           T* weight_sum) {
  if (rows > 0 && vocab > 0) {
    cuda_detail::cross_entropy_rows_kernel<<<cuda_detail::row_blocks(rows), cuda_detail::threads_per_block, 0,
      cuda_detail::stream()>>>(logits, rows, vocab, row_max, row_log_sum);
    cuda_detail::check_launch("cross_entropy_forward (rows) kernel");
  }
  cuda_detail::cross_entropy_total_kernel<<<1, cuda_detail::threads_per_block, 0, cuda_detail::stream()>>>(
      logits, targets, loss_mask, row_max, row_log_sum, rows, vocab, ignore_index, loss, weight_sum);
  cuda_detail::check_launch("cross_entropy_forward (total) kernel");
}

template <Real T>
void cross_entropy_backward(cuda, const T* logits, const std::int32_t* targets, const T* loss_mask, const T* row_max,
                            const T* row_log_sum, const T* weight_sum, const T* dloss, std::int64_t rows,
                            std::int64_t vocab, std::int32_t ignore_index, T* dlogits) {
  if (rows <= 0 || vocab <= 0) return;
  cuda_detail::for_each_index(rows * vocab,
                              cuda_detail::cross_entropy_grad_at<T>{logits, targets, loss_mask, row_max, row_log_sum,
                                                                    weight_sum, dloss, vocab, ignore_index, dlogits},
                              "cross_entropy_backward kernel");
}

}  // namespace mote::backend
