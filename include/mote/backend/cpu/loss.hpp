#pragma once
// CPU fused cross-entropy over logits [rows, vocab] and int32 targets [rows].
// A row counts unless its target equals ignore_index; counted row r weighs m_r (loss_mask[r], or 1
// when loss_mask is null). The loss is sum m_r * (logsumexp_r - logits[r, t_r]) / sum m_r, or 0 when
// nothing counts. Forward keeps each row's max and log-sum-exp remainder, so that backward needs no
// second reduction and keeps full precision when the logits are large.
// Targets must already be checked: each is ignore_index or in [0, vocab).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mote/backend/cpu/cpu.hpp"
#include "mote/backend/cpu/row_exp.hpp"

namespace mote::backend {

// Writes row_max [rows], row_log_sum [rows] (log sum_j exp(logits[r, j] - row_max[r])), loss [1] and
// weight_sum [1] (= sum m_r over counted rows).
template <class T>
void cross_entropy_forward(cpu, const T* logits, const std::int32_t* targets, const T* loss_mask, std::int64_t rows,
                           std::int64_t vocab, std::int32_t ignore_index, T* loss, T* row_max, T* row_log_sum,
                           T* weight_sum) {
  std::vector<double> row_loss(static_cast<std::size_t>(rows), 0.0);
#pragma omp parallel for if (rows * vocab > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * vocab;
    const T max = row_exp::max(x, vocab);
    const T log_sum = std::log(row_exp::sum_exp(x, max, vocab));
    row_max[r] = max;
    row_log_sum[r] = log_sum;
    // (max - x_t) + log(sum) keeps log(sum)'s digits that max + log(sum) would round away.
    if (targets[r] != ignore_index)
      row_loss[static_cast<std::size_t>(r)] = static_cast<double>(max - x[targets[r]]) + static_cast<double>(log_sum);
  }
  // A serial sum in double: the same result for any thread count, and no float drift over long batches.
  double total = 0, weights = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore_index) continue;
    const double m = loss_mask ? static_cast<double>(loss_mask[r]) : 1.0;
    total += m * row_loss[static_cast<std::size_t>(r)];
    weights += m;
  }
  loss[0] = weights == 0 ? T(0) : static_cast<T>(total / weights);
  weight_sum[0] = static_cast<T>(weights);
}

// dlogits[r, j] += (softmax(logits_r)[j] - [j == t_r]) * m_r * dloss / weight_sum for counted rows.
template <class T>
void cross_entropy_backward(cpu, const T* logits, const std::int32_t* targets, const T* loss_mask, const T* row_max,
                            const T* row_log_sum, const T* weight_sum, const T* dloss, std::int64_t rows,
                            std::int64_t vocab, std::int32_t ignore_index, T* dlogits) {
  if (weight_sum[0] == T(0)) return;  // nothing counted: the loss is a constant 0
  const T per_weight = dloss[0] / weight_sum[0];
#pragma omp parallel for if (rows * vocab > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore_index) continue;
    const T g = (loss_mask ? loss_mask[r] : T(1)) * per_weight;
    if (g == T(0)) continue;
    const T* x = logits + r * vocab;
    T* d = dlogits + r * vocab;
    const T max = row_max[r], log_sum = row_log_sum[r];
    row_exp::add_scaled_softmax(x, max, log_sum, g, vocab, d);
    d[targets[r]] -= g;
  }
}

}  // namespace mote::backend
