#pragma once
// CPU layer norm and RMS norm over rows of a [rows, cols] buffer.
// Forward saves per-row statistics (mean, 1/std) so that backward needs no second reduction
// over x; backward adds into dx, dweight and dbias, and skips any that is null.
#include <cmath>
#include <cstdint>
#include <utility>

#include "mote/backend/cpu/cpu.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mote::backend {

namespace norm_detail {
// The slice [begin, end) of n items that the calling OpenMP thread owns (all of them outside a team).
inline std::pair<std::int64_t, std::int64_t> thread_columns(std::int64_t n) {
#ifdef _OPENMP
  const std::int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
#else
  const std::int64_t threads = 1, id = 0;
#endif
  return {n * id / threads, n * (id + 1) / threads};
}
}  // namespace norm_detail

// y = (x - mean) * rstd * weight + bias per row; bias may be null. Writes mean and rstd [rows].
template <class T>
void layer_norm_forward(cpu, const T* x, const T* weight, const T* bias, std::int64_t rows, std::int64_t cols, T eps,
                        T* y, T* mean, T* rstd) {
#pragma omp parallel for if (rows * cols > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    T sum = 0;
    for (std::int64_t c = 0; c < cols; ++c) sum += xr[c];
    const T m = sum / T(cols);
    // Two passes: the variance of deviations does not cancel the way E[x^2] - m^2 does.
    T sq = 0;
    for (std::int64_t c = 0; c < cols; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const T s = T(1) / std::sqrt(sq / T(cols) + eps);
    for (std::int64_t c = 0; c < cols; ++c) yr[c] = (xr[c] - m) * s * weight[c] + (bias ? bias[c] : T(0));
    mean[r] = m;
    rstd[r] = s;
  }
}

// With xhat = (x - mean) * rstd and g = dy * weight:
// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)); dweight += sum_rows dy * xhat; dbias += sum_rows dy.
template <class T>
void layer_norm_backward(cpu, const T* x, const T* weight, const T* mean, const T* rstd, const T* dy,
                         std::int64_t rows, std::int64_t cols, T* dx, T* dweight, T* dbias) {
  [[maybe_unused]] const bool parallel = rows * cols > (1 << 15);
  if (dx) {
#pragma omp parallel for if (parallel)
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      const T* gr = dy + r * cols;
      T* dr = dx + r * cols;
      const T m = mean[r], s = rstd[r];
      T g_sum = 0, gx_sum = 0;
      for (std::int64_t c = 0; c < cols; ++c) {
        const T g = gr[c] * weight[c];
        g_sum += g;
        gx_sum += g * (xr[c] - m) * s;
      }
      const T g_mean = g_sum / T(cols), gx_mean = gx_sum / T(cols);
      for (std::int64_t c = 0; c < cols; ++c) dr[c] += s * (gr[c] * weight[c] - g_mean - (xr[c] - m) * s * gx_mean);
    }
  }
  if (dweight || dbias) {
    // Columns split across threads, rows walked in order: no two threads touch one column.
#pragma omp parallel if (parallel)
    {
      const auto [begin, end] = norm_detail::thread_columns(cols);
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * cols;
        const T* gr = dy + r * cols;
        const T m = mean[r], s = rstd[r];
        if (dweight)
          for (std::int64_t c = begin; c < end; ++c) dweight[c] += gr[c] * (xr[c] - m) * s;
        if (dbias)
          for (std::int64_t c = begin; c < end; ++c) dbias[c] += gr[c];
      }
    }
  }
}

// y = x * rstd * weight with rstd = 1 / sqrt(mean(x^2) + eps) per row (Llama's RMSNorm). Writes rstd [rows].
template <class T>
void rms_norm_forward(cpu, const T* x, const T* weight, std::int64_t rows, std::int64_t cols, T eps, T* y, T* rstd) {
#pragma omp parallel for if (rows * cols > (1 << 15))
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    T sq = 0;
    for (std::int64_t c = 0; c < cols; ++c) sq += xr[c] * xr[c];
    const T s = T(1) / std::sqrt(sq / T(cols) + eps);
    for (std::int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * s * weight[c];
    rstd[r] = s;
  }
}

// dx += rstd * g - x * rstd^3 * mean(g * x) with g = dy * weight; dweight += sum_rows dy * x * rstd.
template <class T>
void rms_norm_backward(cpu, const T* x, const T* weight, const T* rstd, const T* dy, std::int64_t rows,
                       std::int64_t cols, T* dx, T* dweight) {
  [[maybe_unused]] const bool parallel = rows * cols > (1 << 15);
  if (dx) {
#pragma omp parallel for if (parallel)
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      const T* gr = dy + r * cols;
      T* dr = dx + r * cols;
      const T s = rstd[r];
      T gx_sum = 0;
      for (std::int64_t c = 0; c < cols; ++c) gx_sum += gr[c] * weight[c] * xr[c];
      const T k = s * s * s * gx_sum / T(cols);
      for (std::int64_t c = 0; c < cols; ++c) dr[c] += s * gr[c] * weight[c] - xr[c] * k;
    }
  }
  if (dweight) {
#pragma omp parallel if (parallel)
    {
      const auto [begin, end] = norm_detail::thread_columns(cols);
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * cols;
        const T* gr = dy + r * cols;
        const T s = rstd[r];
        for (std::int64_t c = begin; c < end; ++c) dweight[c] += gr[c] * xr[c] * s;
      }
    }
  }
}

}  // namespace mote::backend
