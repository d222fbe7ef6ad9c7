#pragma once
// Row reductions for the softmax family through Eigen arrays, whose exp is vectorized and within a
// few ulps (libm's is scalar: it made the exponentials most of a cross-entropy over a vocabulary).
// Rows may be empty; the maximum of an empty row is -inf.
#include <Eigen/Core>

#include <cstdint>
#include <limits>

namespace mote::backend::row_exp {

template <class T>
using ConstRow = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using Row = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

template <class T>
T max(const T* x, std::int64_t n) {
  return n == 0 ? -std::numeric_limits<T>::infinity() : ConstRow<T>(x, n).maxCoeff();
}

// sum_i exp(x[i] - shift).
template <class T>
T sum_exp(const T* x, T shift, std::int64_t n) {
  return n == 0 ? T(0) : (ConstRow<T>(x, n) - shift).exp().sum();
}

// y[i] = exp(x[i] - shift), returning their sum; y may be x.
template <class T>
T exp_into(const T* x, T shift, std::int64_t n, T* y) {
  if (n == 0) return T(0);
  Row<T> out(y, n);
  out = (ConstRow<T>(x, n) - shift).exp();
  return out.sum();
}

// y[i] += scale * softmax(x)[i], from the row's max and log(sum_j exp(x[j] - max)); subtracting
// them one at a time keeps log_sum's digits that max + log_sum would round away when |max| is large.
template <class T>
void add_scaled_softmax(const T* x, T max, T log_sum, T scale, std::int64_t n, T* y) {
  if (n == 0) return;
  Row<T>(y, n) += scale * ((ConstRow<T>(x, n) - max) - log_sum).exp();
}

// y[i] += scale * exp(x[i]).
template <class T>
void add_scaled_exp(const T* x, T scale, std::int64_t n, T* y) {
  if (n == 0) return;
  Row<T>(y, n) += scale * ConstRow<T>(x, n).exp();
}

}  // namespace mote::backend::row_exp
