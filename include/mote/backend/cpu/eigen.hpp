#pragma once
// Eigen interop for CPU tensors: a zero-copy row-major matrix view, and a copy back into a tensor.
#include <Eigen/Core>

#include <cstdint>
#include <string>
#include <utility>

#include "mote/backend/cpu/cpu.hpp"
#include "mote/core/dtype.hpp"
#include "mote/core/error.hpp"
#include "mote/core/shape.hpp"
#include "mote/core/tensor.hpp"

namespace mote {

template <class T>
using EigenRowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace detail {
// [prefix rows, last dim]: rank 0 and rank 1 tensors are one row.
template <Element T>
std::pair<Eigen::Index, Eigen::Index> eigen_extent(const Tensor<T, cpu>& t) {
  if (!t.defined()) throw value_error("mote: eigen_map: the tensor is undefined (default-constructed)");
  if (!t.is_contiguous())
    throw shape_error("mote: eigen_map: the view " + t.shape().str() +
                      " is not contiguous; call contiguous() first");
  const Shape& s = t.shape();
  const std::int64_t rows = s.rank() <= 1 ? 1 : s.prefix(s.rank() - 1);
  return {static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(s.last())};
}
}  // namespace detail

// A writable matrix view of a contiguous CPU tensor, shaped [product of leading dims, last dim].
template <Element T>
Eigen::Map<EigenRowMatrix<T>> eigen_map(Tensor<T, cpu>& t) {
  const auto [rows, cols] = detail::eigen_extent(t);
  return Eigen::Map<EigenRowMatrix<T>>(t.data(), rows, cols);
}

// A read-only matrix view of a contiguous CPU tensor, shaped [product of leading dims, last dim].
template <Element T>
Eigen::Map<const EigenRowMatrix<T>> eigen_map(const Tensor<T, cpu>& t) {
  const auto [rows, cols] = detail::eigen_extent(t);
  return Eigen::Map<const EigenRowMatrix<T>>(t.data(), rows, cols);
}

// A temporary tensor (say, the packed copy contiguous() returns) would die under the map and leave it dangling.
template <Element T>
void eigen_map(Tensor<T, cpu>&&) = delete;

// A new [rows, cols] CPU tensor holding a copy of any Eigen matrix expression.
template <class Derived>
  requires Element<typename Derived::Scalar>
Tensor<typename Derived::Scalar, cpu> from_eigen(const Eigen::MatrixBase<Derived>& m) {
  using T = typename Derived::Scalar;
  Tensor<T, cpu> out(Shape{static_cast<std::int64_t>(m.rows()), static_cast<std::int64_t>(m.cols())});
  // A fresh tensor aliases nothing, so the plain assignment is safe and evaluates the expression once.
  eigen_map(out).noalias() = m;
  return out;
}

}  // namespace mote
