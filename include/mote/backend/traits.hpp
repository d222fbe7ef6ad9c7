#pragma once
// What model code may ask of a backend beyond the contract of concept.hpp. A backend states a
// capability as a static member of its tag; backend_traits<B> reads it or supplies the default, so
// nn/ and lora/ ask what a backend can do instead of which backend it is.
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "mote/backend/concept.hpp"

namespace mote {

// How a cached one-token step runs: through the layer-by-layer graph, or through nn/decode.hpp's
// graph-free step (the same kernels on buffers reused from token to token).
enum class DecodePath { layered, graph_free };

// The stream type of a backend that has none: its kernels complete in call order on the host.
struct no_stream {};

// A backend's memory in use: the bytes its tensors hold now, and the most they held at once since
// the last reset_memory_peak(). `known` is false for a backend that does not count.
struct MemoryUse {
  std::size_t live_bytes = 0;
  std::size_t peak_bytes = 0;
  bool known = false;
};

// What a token-by-token decoding loop tells the backend that runs it (run_decode_loop).
struct DecodeLoop {
  std::int64_t rows = 1;               // sequences decoded together
  bool spin_threads = true;            // the CPU may keep its threads spinning between the tokens
  std::vector<const void*> constants;  // data of the tensors no step changes (the model's weights)
};

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
  // (nn::LinearAdapter::append_decode_terms), which needs both of the above.
  static constexpr bool host_decode_adapters = host_access && decode_path == DecodePath::graph_free;

  // What the backend's kernels are ordered by (cudaStream_t on CUDA: see cuda::stream_scope).
  using stream_type = typename traits_detail::stream_of<B>::type;

  // The backend's memory in use (B::memory_use()), for the trainer's per-step report.
  static MemoryUse memory_use() {
    if constexpr (requires { B::memory_use(); }) return B::memory_use();
    else return {};
  }
  // Starts a new peak from what is in use now.
  static void reset_memory_peak() {
    if constexpr (requires { B::reset_memory_peak(); }) B::reset_memory_peak();
  }

  // Runs a token-by-token decoding loop over decode.rows sequences. A backend may hold something
  // around it (the CPU a thread team spinning between the loop's many small products, and packed
  // copies of decode.constants); by default it just runs.
  template <class Loop>
  static void run_decode_loop(const DecodeLoop& decode, Loop&& loop) {
    if constexpr (requires { B::run_decode_loop(decode, loop); }) B::run_decode_loop(decode, std::forward<Loop>(loop));
    else std::forward<Loop>(loop)();
  }
};

}  // namespace mote
