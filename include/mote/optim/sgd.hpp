#pragma once
// Stochastic gradient descent with momentum, dampening, Nesterov and coupled (L2) weight decay,
// step for step the update of torch.optim.SGD.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/backend/concept.hpp"
#include "mote/backend/cpu/cpu.hpp"
#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"
#include "mote/optim/param_group.hpp"

namespace mote::backend {

// One SGD update of n elements. momentum_buffer is null when momentum is 0; on a parameter's
// first update with momentum the buffer starts as the (decayed) gradient itself.
template <class T>
void sgd_update(cpu, T* param, const T* grad, T* momentum_buffer, std::int64_t n, T lr, T momentum, T dampening,
                T weight_decay, bool nesterov, bool first_update) {
  const T keep = T(1) - dampening;
#pragma omp parallel for simd if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) {
    T d = grad[i];
    if (weight_decay != T(0)) d += weight_decay * param[i];
    if (momentum_buffer) {
      const T buf = first_update ? d : momentum_buffer[i] * momentum + keep * d;
      momentum_buffer[i] = buf;
      d = nesterov ? d + momentum * buf : buf;
    }
    param[i] -= lr * d;
  }
}

}  // namespace mote::backend

namespace mote::optim {

template <Real T>
struct SGDOptions {
  T lr = T(0.01);
  T momentum = T(0);  // 0: plain SGD, no buffer
  T dampening = T(0);
  bool nesterov = false;  // needs momentum > 0 and dampening 0
  T weight_decay = T(0);  // L2: added to the gradient before momentum
};

template <Real T, Backend B = cpu>
class SGD : public Optimizer<T, B> {
  using Base = Optimizer<T, B>;

 public:
  using Options = SGDOptions<T>;

  SGD(std::vector<ParamGroup<T, B>> groups, Options options = {})
      : Base("sgd", 1, std::move(groups), options.lr, options.weight_decay), options_(options) {
    this->check_hyper(options.momentum, "momentum");
    this->check_hyper(options.dampening, "dampening");
    if (options.nesterov && (options.momentum <= T(0) || options.dampening != T(0)))
      throw value_error("mote: sgd: nesterov needs momentum > 0 and dampening 0, got momentum " +
                        std::to_string(options.momentum) + " and dampening " + std::to_string(options.dampening));
  }
  // One group named "params".
  SGD(std::vector<Var<T, B>> params, Options options = {})
      : SGD(std::vector<ParamGroup<T, B>>{ParamGroup<T, B>{"params", std::move(params)}}, options) {}

  const Options& options() const noexcept { return options_; }

  // Updates every parameter that has a gradient; the others keep their value and state.
  void step() {
    ++this->step_count_;
    for (auto& slot : this->slots_) {
      const Tensor<T, B> grad = this->gradient_of(slot);
      if (!grad.defined()) continue;
      const bool with_momentum = options_.momentum != T(0);
      const bool first_update = with_momentum && !slot.buffers[0].defined();
      if (first_update) slot.buffers[0] = Tensor<T, B>(slot.param.shape());
      T* param = slot.param.mutable_value().data();
      const T* g = grad.data();
      T* buffer = with_momentum ? slot.buffers[0].data() : nullptr;
      const std::int64_t n = grad.numel();
      const T lr = this->group_lr(slot.group);
      const T weight_decay = this->group_weight_decay(slot.group);
      const T momentum = options_.momentum, dampening = options_.dampening;
      const bool nesterov = options_.nesterov;
      MOTE_CALL_KERNEL(B, sgd_update, param, g, buffer, n, lr, momentum, dampening, weight_decay, nesterov,
                       first_update);
      ++slot.step;
    }
  }

 private:
  Options options_;
};

}  // namespace mote::optim
