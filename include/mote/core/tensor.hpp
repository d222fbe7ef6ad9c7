#pragma once
// Tensor<T, Backend>: shared storage plus a view (shape, strides, offset). Views share
// storage; contiguous() makes a packed copy only when the view is not packed already.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/backend/concept.hpp"
#include "mote/core/dtype.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/core/shape.hpp"

// The default backend, declared only: core/ depends on no backend. Code that makes CPU tensors
// includes mote/backend/cpu/cpu.hpp (mote/mote.hpp does).
namespace mote::backend {
struct cpu;
}  // namespace mote::backend

namespace mote {
using cpu = backend::cpu;

// Owns one backend allocation; released when the last tensor viewing it goes.
template <Element T, Backend B>
class Storage {
 public:
  explicit Storage(std::size_t n) : data_(B::template allocate<T>(n)), size_(n) {}
  ~Storage() { B::deallocate(data_, size_); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  T* data_;
  std::size_t size_;
};

template <Element T, Backend B = cpu>
class Tensor {
 public:
  using value_type = T;
  using backend_type = B;

  Tensor() = default;
  // Uninitialized contents (NaN when debug::poison_allocations is set).
  explicit Tensor(const Shape& shape)
      : storage_(std::make_shared<Storage<T, B>>(static_cast<std::size_t>(shape.numel()))), shape_(shape) {
    set_packed_strides();
  }

  static Tensor zeros(const Shape& shape) { return full(shape, T(0)); }
  static Tensor full(const Shape& shape, T value) {
    Tensor t(shape);
    B::fill(t.data(), static_cast<std::size_t>(t.numel()), value);
    return t;
  }
  static Tensor from_vector(const Shape& shape, std::span<const T> values) {
    if (static_cast<std::int64_t>(values.size()) != shape.numel())
      throw shape_error("mote: Tensor::from_vector: shape " + shape.str() + " holds " +
                        std::to_string(shape.numel()) + " elements but " + std::to_string(values.size()) +
                        " values were given");
    Tensor t(shape);
    B::copy_from_host(values.data(), t.data(), values.size());
    return t;
  }
  static Tensor from_vector(const Shape& shape, std::initializer_list<T> values) {
    return from_vector(shape, std::span<const T>(values.begin(), values.size()));
  }
  static Tensor from_vector(const Shape& shape, const std::vector<T>& values) {
    return from_vector(shape, std::span<const T>(values));
  }
  // Seeded fills: the same seed gives the same values on every backend and platform.
  static Tensor uniform(const Shape& shape, double lo, double hi, Rng& rng) {
    std::vector<T> host(static_cast<std::size_t>(shape.numel()));
    for (auto& v : host) v = static_cast<T>(rng.uniform(lo, hi));
    return from_vector(shape, host);
  }
  static Tensor normal(const Shape& shape, double mean, double stddev, Rng& rng) {
    std::vector<T> host(static_cast<std::size_t>(shape.numel()));
    for (auto& v : host) v = static_cast<T>(rng.normal(mean, stddev));
    return from_vector(shape, host);
  }

  bool defined() const noexcept { return storage_ != nullptr; }
  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return shape_.rank(); }
  std::int64_t numel() const noexcept { return shape_.numel(); }
  std::int64_t size(int dim) const { return shape_[dim]; }
  std::int64_t stride(int dim) const { return strides_[static_cast<std::size_t>(shape_.normalize(dim))]; }
  std::int64_t offset() const noexcept { return offset_; }

  T* data() const noexcept { return storage_ ? storage_->data() + offset_ : nullptr; }
  // True when two tensors view the same allocation (aliasing checks, tests of views).
  bool shares_storage_with(const Tensor& other) const noexcept { return storage_ && storage_ == other.storage_; }

  bool is_contiguous() const noexcept {
    std::int64_t expected = 1;
    for (int i = shape_.rank() - 1; i >= 0; --i) {
      if (shape_[i] != 1 && strides_[static_cast<std::size_t>(i)] != expected) return false;
      expected *= shape_[i];
    }
    return true;
  }

  // A view with a new shape over the same elements; the view must be contiguous.
  Tensor reshape(const Shape& shape) const {
    if (shape.numel() != numel())
      throw shape_error("mote: reshape: cannot view " + shape_.str() + " (" + std::to_string(numel()) +
                        " elements) as " + shape.str());
    if (!is_contiguous())
      throw shape_error("mote: reshape: the view " + shape_.str() +
                        " is not contiguous; call contiguous() first");
    Tensor t = *this;
    t.shape_ = shape;
    t.set_packed_strides();
    return t;
  }
  // A view with dims d0 and d1 swapped; no data moves.
  Tensor transpose(int d0, int d1) const {
    const int a = shape_.normalize(d0), b = shape_.normalize(d1);
    Tensor t = *this;
    std::swap(t.shape_[a], t.shape_[b]);
    std::swap(t.strides_[static_cast<std::size_t>(a)], t.strides_[static_cast<std::size_t>(b)]);
    return t;
  }
  // A view of `length` entries of `dim` starting at `start`.
  Tensor slice(int dim, std::int64_t start, std::int64_t length) const {
    const int d = shape_.normalize(dim);
    if (start < 0 || length < 0 || start + length > shape_[d])
      throw shape_error("mote: slice: range [" + std::to_string(start) + ", " + std::to_string(start + length) +
                        ") is outside dimension " + std::to_string(d) + " of shape " + shape_.str());
    Tensor t = *this;
    t.shape_[d] = length;
    t.offset_ += start * strides_[static_cast<std::size_t>(d)];
    return t;
  }
  // This tensor when packed already, otherwise a packed copy.
  Tensor contiguous() const {
    require_defined("contiguous");
    if (is_contiguous()) return *this;
    Tensor out(shape_);
    std::int64_t shape4[4] = {1, 1, 1, 1}, strides4[4] = {0, 0, 0, 0};
    const int pad = max_rank - shape_.rank();
    for (int i = 0; i < shape_.rank(); ++i) {
      shape4[pad + i] = shape_[i];
      strides4[pad + i] = strides_[static_cast<std::size_t>(i)];
    }
    const T* src = data();
    T* dst = out.data();
    MOTE_CALL_KERNEL(B, strided_copy, src, shape4, strides4, dst);
    return out;
  }
  // A packed copy that shares nothing with this tensor.
  Tensor clone() const {
    require_defined("clone");
    if (!is_contiguous()) return contiguous();
    Tensor out(shape_);
    B::copy(data(), out.data(), static_cast<std::size_t>(numel()));
    return out;
  }
  // Overwrites every element of this (packed) tensor from another of the same shape.
  void copy_from(const Tensor& src) {
    require_defined("copy_from");
    expect_same_shape(shape_, src.shape(), "Tensor::copy_from");
    if (!is_contiguous()) throw shape_error("mote: copy_from: the destination view " + shape_.str() + " is not contiguous");
    const Tensor packed = src.contiguous();
    B::copy(packed.data(), data(), static_cast<std::size_t>(numel()));
  }
  void fill(T value) {
    require_defined("fill");
    if (!is_contiguous()) throw shape_error("mote: fill: the view " + shape_.str() + " is not contiguous");
    B::fill(data(), static_cast<std::size_t>(numel()), value);
  }

  // Copies to another backend (or to the same one, as a packed copy).
  template <Backend To>
  Tensor<T, To> to() const {
    const Tensor packed = contiguous();
    Tensor<T, To> out(shape_);
    const auto n = static_cast<std::size_t>(numel());
    if constexpr (std::is_same_v<To, B>) {
      B::copy(packed.data(), out.data(), n);
    } else if constexpr (B::host_accessible) {
      To::copy_from_host(packed.data(), out.data(), n);
    } else if constexpr (To::host_accessible) {
      B::copy_to_host(packed.data(), out.data(), n);
    } else {
      std::vector<T> host(n);
      B::copy_to_host(packed.data(), host.data(), n);
      To::copy_from_host(host.data(), out.data(), n);
    }
    return out;
  }
  // All elements in row-major order, on the host.
  std::vector<T> to_vector() const {
    require_defined("to_vector");
    const Tensor packed = contiguous();
    std::vector<T> host(static_cast<std::size_t>(numel()));
    B::copy_to_host(packed.data(), host.data(), host.size());
    return host;
  }
  // The single element of a one-element tensor.
  T item() const {
    if (numel() != 1) throw shape_error("mote: item: expected one element, the shape is " + shape_.str());
    return to_vector()[0];
  }
  // Host access by index, for tests and small tools; the backend must be host-accessible.
  T& at(std::initializer_list<std::int64_t> index) const
    requires(B::host_accessible)
  {
    if (static_cast<int>(index.size()) != rank())
      throw shape_error("mote: at: " + std::to_string(index.size()) + " indices for shape " + shape_.str());
    require_defined("at");
    std::int64_t off = 0;
    int i = 0;
    for (auto v : index) {
      if (v < 0 || v >= shape_[i])
        throw shape_error("mote: at: index " + std::to_string(v) + " out of range for dimension " + std::to_string(i) +
                          " of shape " + shape_.str());
      off += v * strides_[static_cast<std::size_t>(i++)];
    }
    return data()[off];
  }

 private:
  // A default-constructed tensor has no storage; reading it would dereference null.
  void require_defined(const char* op) const {
    if (!storage_) throw value_error(std::string("mote: Tensor::") + op + ": the tensor is undefined (default-constructed)");
  }
  void set_packed_strides() {
    std::int64_t s = 1;
    for (int i = shape_.rank() - 1; i >= 0; --i) {
      strides_[static_cast<std::size_t>(i)] = s;
      s *= shape_[i];
    }
  }
  std::shared_ptr<Storage<T, B>> storage_;
  Shape shape_;
  std::array<std::int64_t, max_rank> strides_{};
  std::int64_t offset_ = 0;
};

}  // namespace mote
