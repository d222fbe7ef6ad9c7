#pragma once
// What a float matrix product may compute in, for every backend: fp32 (the default), or bf16
// operands with float sums for products large enough to profit, as PyTorch's autocast or
// set_float32_matmul_precision("medium") allow. Storage, gradients and optimizer state stay float.
#include <atomic>

namespace mote::backend {

enum class matmul_precision { fp32, bf16 };

namespace precision_detail {
inline std::atomic<matmul_precision>& setting() noexcept {
  static std::atomic<matmul_precision> value{matmul_precision::fp32};
  return value;
}
}  // namespace precision_detail

// Process-wide, like PyTorch's setting: OpenMP workers must see what their caller chose.
inline void set_matmul_precision(matmul_precision precision) noexcept {
  precision_detail::setting().store(precision, std::memory_order_relaxed);
}
inline matmul_precision get_matmul_precision() noexcept {
  return precision_detail::setting().load(std::memory_order_relaxed);
}

// Sets a precision for a scope and restores the previous one on exit.
class scoped_matmul_precision {
 public:
  explicit scoped_matmul_precision(matmul_precision precision) : previous_(get_matmul_precision()) {
    set_matmul_precision(precision);
  }
  ~scoped_matmul_precision() { set_matmul_precision(previous_); }
  scoped_matmul_precision(const scoped_matmul_precision&) = delete;
  scoped_matmul_precision& operator=(const scoped_matmul_precision&) = delete;

 private:
  matmul_precision previous_;
};

}  // namespace mote::backend

namespace mote {
using backend::get_matmul_precision;
using backend::matmul_precision;
using backend::scoped_matmul_precision;
using backend::set_matmul_precision;
}  // namespace mote
