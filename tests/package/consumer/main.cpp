// An outside program: one gradient through the installed headers.
#include <mote/mote.hpp>

#include <cmath>
#include <iostream>

int main() {
  mote::Var<double> x(mote::Tensor<double>::from_vector({2}, {3.0, -1.0}), true);
  auto y = mote::mul(x, x);  // y = x^2, so dy/dx = 2x
  y.backward(mote::Tensor<double>::full({2}, 1.0));
  const auto g = x.grad().to_vector();
  if (std::abs(g[0] - 6.0) > 1e-12 || std::abs(g[1] + 2.0) > 1e-12) {
    std::cout << "wrong gradient\n";
    return 1;
  }
  std::cout << "consumer ok\n";
}
