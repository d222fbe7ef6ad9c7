#pragma once
// What model code may ask of a backend beyond the contract of concept.hpp. A backend states a
// capability as a static member of its tag; backend_traits<B> reads it or supplies the default, so
// nn/ and lora/ ask what a backend can do instead of which backend it is.
#include <cstdint>
#include <utility>

#include "mote/backend/concept.hpp"

namespace mote {

// How a cached one-token step runs: through the layer-by-layer graph, or through nn/decode.hpp's
// graph-free step (the same kernels on buffers reused from token to token).
enum class DecodePath { layered, graph_free };

// The stream type of a backend that has none: its kernels complete in call order on the host.
struct no_stream {};

namespace traits_detail {
template <class B>
struct stream_of {
  using type = no_stream;
};
template <class B>
  requires requires { typename B::stream_type; }
struct stream_of<B> {
  using type = typename B::stream_type;
};
}  // namespace traits_detail

template <Backend B>
struct backend_traits {
  // Pointers into the backend's memory may be read and written on the host.
  static constexpr bool host_access = B::host_accessible;

  static constexpr DecodePath decode_path = [] {
    if constexpr (requires { B::decode_path; }) return DecodePath{B::decode_path};
    else return DecodePath::layered;
  }();

  // Adapters add their unmerged share inside the graph-free step with host code
  // (nn::LinearAdapter::add_decode_step), which needs both of the above.
  static constexpr bool host_decode_adapters = host_access && decode_path == DecodePath::graph_free;

  // What the backend's kernels are ordered by (cudaStream_t on CUDA).
  using stream_type = typename traits_detail::stream_of<B>::type;

  // Runs a token-by-token decoding loop over `rows` sequences. A backend may hold something around
  // it (the CPU a thread team spinning between the loop's many small products); by default it just runs.
  template <class Loop>
  static void run_decode_loop(std::int64_t rows, Loop&& loop) {
    if constexpr (requires { B::run_decode_loop(rows, loop); }) B::run_decode_loop(rows, std::forward<Loop>(loop));
    else std::forward<Loop>(loop)();
  }
};

}  // namespace mote
