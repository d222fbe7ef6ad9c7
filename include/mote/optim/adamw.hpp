#pragma once
// AdamW: Adam with decoupled weight decay, step for step the (non-amsgrad) update of
// torch.optim.AdamW, including its per-parameter bias correction.
#include <cmath>
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

// One AdamW update of n elements: param *= decay, then the Adam step with the host-computed
// step_size = lr / (1 - beta1^t) and bias_correction2_sqrt = sqrt(1 - beta2^t).
template <class T>
void adamw_update(cpu, T* param, const T* grad, T* exp_avg, T* exp_avg_sq, std::int64_t n, T decay, T beta1, T beta2,
                  T eps, T step_size, T bias_correction2_sqrt) {
  const T one_minus_beta1 = T(1) - beta1, one_minus_beta2 = T(1) - beta2;
#pragma omp parallel for simd if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) {
    const T g = grad[i];
    const T m = exp_avg[i] * beta1 + one_minus_beta1 * g;
    const T v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const T denom = std::sqrt(v) / bias_correction2_sqrt + eps;
    param[i] = param[i] * decay - step_size * (m / denom);
  }
}

}  // namespace mote::backend

namespace mote::optim {

template <Real T>
struct AdamWOptions {
  T lr = T(1e-3);
  T beta1 = T(0.9);
  T beta2 = T(0.999);
  T eps = T(1e-8);
  T weight_decay = T(0.01);  // decoupled: p -= lr * weight_decay * p before the Adam step
};

template <Real T, Backend B = cpu>
class AdamW : public Optimizer<T, B> {
  using Base = Optimizer<T, B>;

 public:
  using Options = AdamWOptions<T>;

  AdamW(std::vector<ParamGroup<T, B>> groups, Options options = {})
      : Base("adamw", 2, std::move(groups), options.lr, options.weight_decay), options_(options) {
    check_beta(options.beta1, "beta1");
    check_beta(options.beta2, "beta2");
    this->check_hyper(options.eps, "eps");
  }
  // One group named "params".
  AdamW(std::vector<Var<T, B>> params, Options options = {})
      : AdamW(std::vector<ParamGroup<T, B>>{ParamGroup<T, B>{"params", std::move(params)}}, options) {}

  const Options& options() const noexcept { return options_; }

  // Updates every parameter that has a gradient; the others keep their value, moments and step.
  void step() {
    ++this->step_count_;
    for (auto& slot : this->slots_) {
      const Tensor<T, B> grad = this->gradient_of(slot);
      if (!grad.defined()) continue;
      if (!slot.buffers[0].defined()) {
        slot.buffers[0] = Tensor<T, B>::zeros(slot.param.shape());
        slot.buffers[1] = Tensor<T, B>::zeros(slot.param.shape());
      }
      ++slot.step;
      // Scalars in double, as torch computes them in Python floats before the tensor update.
      const double lr = static_cast<double>(this->group_lr(slot.group));
      const double t = static_cast<double>(slot.step);
      const double bias_correction1 = 1.0 - std::pow(static_cast<double>(options_.beta1), t);
      const double bias_correction2 = 1.0 - std::pow(static_cast<double>(options_.beta2), t);
      const T step_size = static_cast<T>(lr / bias_correction1);
      const T bias_correction2_sqrt = static_cast<T>(std::sqrt(bias_correction2));
      const T decay = static_cast<T>(1.0 - lr * static_cast<double>(this->group_weight_decay(slot.group)));
      T* param = slot.param.mutable_value().data();
      const T* g = grad.data();
      T* exp_avg = slot.buffers[0].data();
      T* exp_avg_sq = slot.buffers[1].data();
      const std::int64_t n = grad.numel();
      const T beta1 = options_.beta1, beta2 = options_.beta2, eps = options_.eps;
      MOTE_CALL_KERNEL(B, adamw_update, param, g, exp_avg, exp_avg_sq, n, decay, beta1, beta2, eps, step_size,
                       bias_correction2_sqrt);
    }
  }

 private:
  void check_beta(T beta, const char* what) const {
    if (!(beta >= T(0) && beta < T(1)))
      throw value_error(std::string("mote: adamw: ") + what + " must be in [0, 1), got " + std::to_string(beta));
  }
  Options options_;
};

}  // namespace mote::optim
