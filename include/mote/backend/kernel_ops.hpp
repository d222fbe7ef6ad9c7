#pragma once
// Operation codes shared by every backend's elementwise kernels.

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

}  // namespace mote::backend
