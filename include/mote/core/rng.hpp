#pragma once
// A seeded, platform-independent random generator (xoshiro256**), so that fills,
// dropout masks and data shuffles repeat exactly on every standard library. Its whole state can be
// saved and restored, so a resumed training run draws what an uninterrupted one would have drawn.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <string>

#include "mote/core/error.hpp"

namespace mote {

class Rng {
 public:
  // Everything the next draws depend on: the four xoshiro words and the cached second normal.
  struct State {
    std::array<std::uint64_t, 4> words{};
    double spare = 0.0;
    bool spare_valid = false;
    friend bool operator==(const State&, const State&) = default;
  };

  explicit Rng(std::uint64_t seed = 0x6d6f7465ULL) { reseed(seed); }

  State state() const noexcept { return State{{state_[0], state_[1], state_[2], state_[3]}, spare_, spare_valid_}; }
  // Restores a state() exactly; all-zero words are xoshiro's one fixed point (it would draw zeros forever).
  void set_state(const State& s) {
    if (s.words[0] == 0 && s.words[1] == 0 && s.words[2] == 0 && s.words[3] == 0)
      throw value_error("mote: Rng::set_state: the four state words are all zero; expected a state() of a seeded Rng");
    for (std::size_t i = 0; i < 4; ++i) state_[i] = s.words[i];
    spare_ = s.spare;
    spare_valid_ = s.spare_valid;
  }

  void reseed(std::uint64_t seed) {
    for (auto& s : state_) s = splitmix(seed);
    spare_valid_ = false;
  }
  std::uint64_t next_u64() {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next_u64() % n; }
  // Standard normal by Box-Muller; the second value of each pair is kept for the next call.
  double normal() {
    if (spare_valid_) {
      spare_valid_ = false;
      return spare_;
    }
    double u1 = 0.0;
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * std::numbers::pi * u2);
    spare_valid_ = true;
    return r * std::cos(2.0 * std::numbers::pi * u2);
  }
  double normal(double mean, double stddev) { return mean + stddev * normal(); }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::uint64_t state_[4]{};
  double spare_ = 0.0;
  bool spare_valid_ = false;
};

// One named random stream's saved state; a component with several streams (an expert set: routing
// draws and each layer's dropout) reports them as a list of these, in a fixed order.
struct RngStreamState {
  std::string name;
  Rng::State state;
  friend bool operator==(const RngStreamState&, const RngStreamState&) = default;
};

}  // namespace mote
