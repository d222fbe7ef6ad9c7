#pragma once
// Shape: up to four dimensions, row-major, with the checks every op shares.
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "mote/core/error.hpp"

namespace mote {

inline constexpr int max_rank = 4;

class Shape {
 public:
  constexpr Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) {
    if (dims.size() > static_cast<std::size_t>(max_rank))
      throw shape_error("mote: a shape has at most 4 dimensions, got " + std::to_string(dims.size()));
    for (auto d : dims) push_back(d);
  }
  template <class It>
  Shape(It first, It last) {
    for (; first != last; ++first) push_back(static_cast<std::int64_t>(*first));
  }

  int rank() const noexcept { return rank_; }
  std::int64_t operator[](int i) const { return dims_[static_cast<std::size_t>(normalize(i))]; }
  std::int64_t& operator[](int i) { return dims_[static_cast<std::size_t>(normalize(i))]; }
  const std::int64_t* begin() const noexcept { return dims_.data(); }
  const std::int64_t* end() const noexcept { return dims_.data() + rank_; }

  std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
    return n;
  }
  // Product of the dims before `dim` (rows) and from `dim` on (row length).
  std::int64_t prefix(int dim) const {
    std::int64_t n = 1;
    for (int i = 0; i < normalize_end(dim); ++i) n *= dims_[static_cast<std::size_t>(i)];
    return n;
  }
  std::int64_t suffix(int dim) const {
    std::int64_t n = 1;
    for (int i = normalize_end(dim); i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
    return n;
  }
  std::int64_t last() const { return rank_ == 0 ? 1 : dims_[static_cast<std::size_t>(rank_ - 1)]; }

  void push_back(std::int64_t d) {
    if (rank_ == max_rank) throw shape_error("mote: a shape has at most 4 dimensions");
    if (d < 0) throw shape_error("mote: shape dimensions must be non-negative, got " + std::to_string(d));
    dims_[static_cast<std::size_t>(rank_++)] = d;
  }
  // Maps a possibly negative dim (-1 = last) into [0, rank).
  int normalize(int dim) const {
    int d = dim < 0 ? dim + rank_ : dim;
    if (d < 0 || d >= rank_)
      throw shape_error("mote: dimension " + std::to_string(dim) + " is out of range for shape " + str());
    return d;
  }
  // Like normalize, but rank itself is allowed (an end position).
  int normalize_end(int dim) const {
    int d = dim < 0 ? dim + rank_ : dim;
    if (d < 0 || d > rank_)
      throw shape_error("mote: dimension " + std::to_string(dim) + " is out of range for shape " + str());
    return d;
  }

  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(dims_[static_cast<std::size_t>(i)]);
    }
    return s + "]";
  }

  friend bool operator==(const Shape& a, const Shape& b) noexcept {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
    return true;
  }

 private:
  std::array<std::int64_t, max_rank> dims_{};
  int rank_ = 0;
};

// Throws shape_error naming both shapes unless they are equal.
inline void expect_same_shape(const Shape& a, const Shape& b, const char* what) {
  if (!(a == b))
    throw shape_error(std::string("mote: ") + what + ": shapes " + a.str() + " and " + b.str() + " must be equal");
}

}  // namespace mote
