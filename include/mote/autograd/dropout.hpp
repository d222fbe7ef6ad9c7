#pragma once
// Inverted dropout: each element is zeroed with probability p and kept ones are scaled by
// 1/(1-p), so evaluation needs no rescaling. The mask comes from the caller's seeded mote::Rng,
// drawn on the host in row-major order: one seed gives one mask on every backend.
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/elementwise.hpp"
#include "mote/backend/kernel_ops.hpp"
#include "mote/core/rng.hpp"

namespace mote::autograd {

// x itself when !training or p == 0; p outside [0, 1) is a value_error.
template <Real T, Backend B>
Var<T, B> dropout(const Var<T, B>& x, std::type_identity_t<T> p, Rng& rng, bool training = true) {
  expect_defined(x, "dropout", "x");
  if (!(p >= T(0) && p < T(1)))
    throw value_error("mote: dropout: p must be in [0, 1), got " + std::to_string(p));
  if (!training || p == T(0)) return x;

  const T keep_scale = T(1) / (T(1) - p);
  std::vector<T> host(static_cast<std::size_t>(x.numel()));
  for (auto& m : host) m = rng.uniform() < static_cast<double>(p) ? T(0) : keep_scale;
  const Tensor<T, B> mask = Tensor<T, B>::from_vector(x.shape(), host);

  const Tensor<T, B> xv = x.value();
  Tensor<T, B> out(x.shape());
  {
    const T* px = xv.data();
    const T* pm = mask.data();
    T* py = out.data();
    const std::int64_t n = out.numel();
    MOTE_CALL_KERNEL(B, binary_forward, backend::BinaryOp::mul, px, n, pm, n, py, n);
  }
  // Only the mask is saved: d(x * mask)/dx = mask, so the kernel's first operand goes unread.
  return make_result("dropout", std::move(out), {x}, [mask](Node<T, B>& self) {
    if (T* gx = input_grad(self, 0)) {
      const T* pm = mask.data();
      const T* g = self.grad.data();
      const std::int64_t n = mask.numel();
      T* no_mask_grad = nullptr;
      MOTE_CALL_KERNEL(B, binary_backward, backend::BinaryOp::mul, pm, n, pm, n, g, n, gx, no_mask_grad);
    }
  });
}

}  // namespace mote::autograd

namespace mote {
using autograd::dropout;
}  // namespace mote
