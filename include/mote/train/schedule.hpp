#pragma once
// Learning-rate schedules as pure functions of the optimizer step, so a resumed run needs only the
// step count to continue the curve exactly.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>

#include "mote/core/error.hpp"

namespace mote::train {

enum class Decay {
  cosine,    // half a cosine from the peak down to min_lr_ratio * peak at total_steps
  constant,  // the peak for every step after warmup
};

inline const char* decay_name(Decay d) {
  switch (d) {
    case Decay::cosine: return "cosine";
    case Decay::constant: return "constant";
  }
  return "unknown";
}

// Linear warmup over warmup_steps, then `decay`. Transformers' get_cosine_with_min_lr_schedule_with_warmup
// except that warmup counts from 1 (step 0 trains at peak / warmup_steps, not at 0, so no update is wasted).
struct Schedule {
  double peak_lr = 2e-5;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;  // the cosine reaches its floor here; later steps stay at the floor
  Decay decay = Decay::cosine;
  double min_lr_ratio = 0.0;  // the cosine's floor as a fraction of peak_lr

  void check() const {
    const std::string where = "mote: train::Schedule: ";
    if (!std::isfinite(peak_lr) || peak_lr < 0) throw value_error(where + "peak_lr must be finite and >= 0, got " + std::to_string(peak_lr));
    if (warmup_steps < 0) throw value_error(where + "warmup_steps must be >= 0, got " + std::to_string(warmup_steps));
    if (total_steps < 1) throw value_error(where + "total_steps must be >= 1, got " + std::to_string(total_steps));
    if (!(min_lr_ratio >= 0.0 && min_lr_ratio <= 1.0))
      throw value_error(where + "min_lr_ratio must be in [0, 1], got " + std::to_string(min_lr_ratio));
  }

  // The learning rate of optimizer step `step` (0 = the first update).
  double lr_at(std::int64_t step) const {
    if (step < 0) throw value_error("mote: train::Schedule::lr_at: step must be >= 0, got " + std::to_string(step));
    if (step < warmup_steps) return peak_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    if (decay == Decay::constant) return peak_lr;
    const std::int64_t decay_steps = total_steps - warmup_steps;
    double progress = decay_steps > 0 ? static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps) : 1.0;
    if (progress > 1.0) progress = 1.0;
    const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    return peak_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine);
  }
};

}  // namespace mote::train
