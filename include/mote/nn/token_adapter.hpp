#pragma once
// A slot on CausalLM for an adapter of the token rows (the embedding and the LM head), as linear
// layers have LinearAdapter: nn knows only this interface; lora fills it (trainable token rows).
#include <cstdint>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/core/tensor.hpp"

namespace mote::nn {

template <Real T, Backend B = cpu>
class TokenAdapter {
 public:
  virtual ~TokenAdapter() = default;
  // `rows` [..., d] are the frozen embedding's rows for `ids` [...]; returns the rows the model uses.
  virtual autograd::Var<T, B> embed(const autograd::Var<T, B>& rows, const Tensor<std::int32_t, B>& ids) const = 0;
  // `logits` [..., vocab] are `hidden` [..., d] through the frozen LM head; returns the logits the model uses.
  virtual autograd::Var<T, B> head(const autograd::Var<T, B>& logits, const autograd::Var<T, B>& hidden) const = 0;
  // The adapter's own trainable tensors.
  virtual std::vector<autograd::Var<T, B>> parameters() const = 0;
  // Whether the *_decode_step functions serve the graph-free decoding step (nn/decode.hpp); the default cannot.
  virtual bool serves_decode_step() const { return false; }
  // Host memory, one token per row: overwrites `rows` [n, d], the frozen embedding's rows of `ids`,
  // with the rows the model uses.
  virtual void embed_decode_step(const std::int32_t* /*ids*/, std::int64_t /*n*/, std::int64_t /*d*/, T* /*rows*/) const {}
  // Overwrites `logits` [n, vocab], `hidden` [n, d] through the frozen LM head, with the logits the model uses.
  virtual void head_decode_step(const T* /*hidden*/, std::int64_t /*n*/, std::int64_t /*d*/, T* /*logits*/,
                                std::int64_t /*vocab*/) const {}
};

}  // namespace mote::nn
