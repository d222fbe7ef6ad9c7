#pragma once
// ParameterAccess<Derived, V>: the parameter conveniences a model derives from its one visitor,
// Derived::for_each_parameter(name, V&), so that every model (CausalLM, a classifier on one) lists,
// counts, freezes and clears its parameters the same way.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mote::nn {

template <class Derived, class V>
class ParameterAccess {
 public:
  // Freezes (false) or unfreezes (true) every parameter; frozen ones get no gradient at all.
  void set_trainable(bool on) {
    self().for_each_parameter([on](const std::string&, V& p) { p.set_requires_grad(on); });
  }
  std::vector<V> parameters() {
    std::vector<V> out;
    self().for_each_parameter([&](const std::string&, V& p) { out.push_back(p); });
    return out;
  }
  std::vector<std::pair<std::string, V>> named_parameters() {
    std::vector<std::pair<std::string, V>> out;
    self().for_each_parameter([&](const std::string& name, V& p) { out.emplace_back(name, p); });
    return out;
  }
  std::int64_t num_parameters() {
    std::int64_t n = 0;
    self().for_each_parameter([&](const std::string&, V& p) { n += p.numel(); });
    return n;
  }
  void zero_grad() {
    self().for_each_parameter([](const std::string&, V& p) { p.zero_grad(); });
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
};

}  // namespace mote::nn
