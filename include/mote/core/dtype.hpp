#pragma once
// Element types a Tensor may hold, and which of them autograd differentiates.
#include <concepts>
#include <cstdint>
#include <type_traits>

namespace mote {

// Storage element types: floating values for math, int32 for ids and indices, uint8 for masks.
template <class T>
concept Element = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, std::int32_t> ||
                  std::same_as<T, std::uint8_t>;

// Types autograd and the math ops accept (bf16 storage arrives with the CUDA kernels).
template <class T>
concept Real = std::same_as<T, float> || std::same_as<T, double>;

template <class T>
constexpr const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  else if constexpr (std::is_same_v<T, double>) return "float64";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "int32";
  else return "uint8";
}

}  // namespace mote
