#pragma once
// Operation codes and operand bundles shared by every backend's kernels.
#include <cstdint>

namespace mote::backend {

enum class BinaryOp { add, sub, mul, div };

inline const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
  }
  return "binary";
}

// One product op(A) . op(B) of a GEMM sum (see gemm_sum): row-major operands with row strides,
// op transposing where the flag is set; op(A) is [m, k] and op(B) [k, n].
template <class T>
struct GemmTerm {
  bool trans_a, trans_b;
  std::int64_t k;
  const T* a;
  std::int64_t lda;
  const T* b;
  std::int64_t ldb;
};

// One low-rank update of a product's output row (a LoRA expert's share of one token):
// C[row, :] += coef * up (down a[row, :]), with down [rank, k] and up [n, rank], both row-major
// and contiguous. gemm_low_rank adds a list of them to a product in the same pass.
template <class T>
struct LowRankTerm {
  std::int64_t row;
  const T* down;
  const T* up;
  std::int64_t rank;
  T coef;
};

}  // namespace mote::backend
