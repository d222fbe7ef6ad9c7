#pragma once
// The backend contract: memory, copies and GEMM that every backend provides, plus the
// dispatch macro that turns a missing kernel into one readable static_assert.
#include <concepts>
#include <cstddef>
#include <cstdint>

namespace mote {

// Every backend is an empty tag type with static memory functions. Compute kernels are
// free functions in namespace mote::backend taking the tag first, found by argument-dependent
// lookup, so each kernel family lives in its own header and a backend may lack some.
template <class B>
concept Backend = std::is_empty_v<B> && std::default_initializable<B> &&
                  requires(float* p, const float* cp, std::size_t n) {
                    { B::name } -> std::convertible_to<const char*>;
                    { B::host_accessible } -> std::convertible_to<bool>;
                    { B::template allocate<float>(n) } -> std::same_as<float*>;
                    B::deallocate(p, n);  // n: the count it was allocated with
                    B::copy_to_host(cp, p, n);
                    B::copy_from_host(cp, p, n);
                    B::copy(cp, p, n);
                    B::fill(p, n, 0.0f);
                    B::synchronize();
                  };

template <class>
inline constexpr bool backend_lacks_kernel = false;

namespace debug {
// When set, fresh allocations are filled with NaN so that elements an op forgot to write show.
inline bool poison_allocations = false;
}  // namespace debug

}  // namespace mote

// Calls kernel(B{}, args...) when backend B has it; otherwise stops compilation with one sentence.
#define MOTE_CALL_KERNEL(B, kernel, ...)                                                          \
  do {                                                                                            \
    if constexpr (requires { kernel(B{}, __VA_ARGS__); }) {                                       \
      kernel(B{}, __VA_ARGS__);                                                                   \
    } else {                                                                                      \
      static_assert(::mote::backend_lacks_kernel<B>,                                              \
                    "mote: this backend has no '" #kernel "' kernel; run this op on mote::cpu"); \
    }                                                                                             \
  } while (0)
