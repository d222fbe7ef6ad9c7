#pragma once
// rope: rotary position embedding of queries or keys [B, H, T, Dh] in the Hugging Face Llama
// layout (rotate_half pairs element i with i + Dh/2; inv_freq[i] = theta^(-2i/Dh)). Positions are
// int32 ids [B, T], or [T] shared by the batch, so packed or offset sequences (a KV cache) work.
#include <cmath>
#include <cstdint>
#include <string>

#include "mote/autograd/var.hpp"
#include "mote/backend/cpu/rope.hpp"

namespace mote::autograd {

template <Real T, Backend B>
Var<T, B> rope(const Var<T, B>& x, const Tensor<std::int32_t, B>& positions, double theta = 10000.0) {
  expect_defined(x, "rope", "x");
  const Shape& xs = x.shape();
  if (xs.rank() != 4)
    throw shape_error("mote: rope: x must have shape [B, H, T, Dh], got " + xs.str());
  const std::int64_t batch = xs[0], heads = xs[1], seq = xs[2], head_dim = xs[3];
  if (head_dim % 2 != 0)
    throw value_error("mote: rope: the head dim Dh of x " + xs.str() + " must be even, got " + std::to_string(head_dim));
  if (!positions.defined())
    throw shape_error("mote: rope: positions is an empty tensor; expected shape [B, T] = " + Shape{batch, seq}.str() +
                      " or [T] = " + Shape{seq}.str());
  std::int64_t position_batch_stride = 0;
  if (positions.shape() == Shape{batch, seq}) position_batch_stride = seq;
  else if (!(positions.shape() == Shape{seq}))
    throw shape_error("mote: rope: positions must have shape [B, T] = " + Shape{batch, seq}.str() + " or [T] = " +
                      Shape{seq}.str() + " for x " + xs.str() + ", got " + positions.shape().str());
  if (!(theta > 0) || !std::isfinite(theta))
    throw value_error("mote: rope: theta must be finite and > 0, got " + std::to_string(theta));

  const Tensor<std::int32_t, B> pos = positions.contiguous();
  Tensor<T, B> out(xs);
  {
    const T* px = x.value().data();
    const std::int32_t* pp = pos.data();
    T* py = out.data();
    MOTE_CALL_KERNEL(B, rope_forward, px, pp, position_batch_stride, batch, heads, seq, head_dim, theta, py);
  }
  return make_result("rope", std::move(out), {x},
                     [pos, position_batch_stride, batch, heads, seq, head_dim, theta](Node<T, B>& self) {
                       if (T* gx = input_grad(self, 0)) {
                         const std::int32_t* pp = pos.data();
                         const T* g = self.grad.data();
                         MOTE_CALL_KERNEL(B, rope_backward, g, pp, position_batch_stride, batch, heads, seq, head_dim,
                                          theta, gx);
                       }
                     });
}

}  // namespace mote::autograd

namespace mote {
using autograd::rope;
}  // namespace mote
