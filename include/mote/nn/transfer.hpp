#pragma once
// Copies one model's parameters into another of the same architecture, across element types and
// backends: load a checkpoint on the CPU (checkpoints are read there), then train or generate on
// CUDA, or bring a CUDA-trained model back to save it.
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"

namespace mote::nn {

// dest's parameters become source's, converted to dest's element type. Both are visited in their
// checkpoint order; a name or shape that differs throws shape_error naming the parameter.
template <class Source, class Dest>
void copy_parameters(Source& source, Dest& dest) {
  using To = typename Dest::V::value_type;
  using ToBackend = typename Dest::V::backend_type;
  const std::vector<std::pair<std::string, typename Source::V>> from = source.named_parameters();
  std::size_t at = 0;
  dest.for_each_parameter([&](const std::string& name, typename Dest::V& p) {
    if (at >= from.size())
      throw shape_error("mote: copy_parameters: the destination has parameter '" + name +
                        "' beyond the source's " + std::to_string(from.size()));
    const auto& [source_name, value] = from[at++];
    if (source_name != name || !(value.shape() == p.shape()))
      throw shape_error("mote: copy_parameters: parameter " + std::to_string(at - 1) + " is '" + source_name + "' " +
                        value.shape().str() + " in the source but '" + name + "' " + p.shape().str() +
                        " in the destination");
    const auto host = value.value().contiguous().to_vector();
    const std::vector<To> converted(host.begin(), host.end());
    p.mutable_value().copy_from(Tensor<To, ToBackend>::from_vector(p.shape(), converted));
  });
  if (at != from.size())
    throw shape_error("mote: copy_parameters: the source has " + std::to_string(from.size()) +
                      " parameters but the destination " + std::to_string(at));
}

}  // namespace mote::nn
