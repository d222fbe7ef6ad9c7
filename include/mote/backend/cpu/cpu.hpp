#pragma once
// The CPU backend tag: aligned host memory, copies, fills, and a strided gather used by contiguous().
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

#include "mote/backend/concept.hpp"
#include "mote/backend/cpu/block_cache.hpp"
#include "mote/backend/cpu/fp32_gemm.hpp"
#include "mote/backend/cpu/gemv.hpp"
#include "mote/backend/cpu/spin_team.hpp"
#include "mote/backend/cpu/weight_panels.hpp"
#include "mote/backend/traits.hpp"

namespace mote::backend {

namespace cpu_detail {
// Bytes handed out by cpu::allocate and not yet given back, and the most at once since the last
// reset: plain atomics, constant-initialized, so tensors freed during static destruction still count.
inline std::atomic<std::size_t> live_bytes{0};
inline std::atomic<std::size_t> peak_bytes{0};

inline void count_allocation(std::size_t bytes) noexcept {
  const std::size_t now = live_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  std::size_t peak = peak_bytes.load(std::memory_order_relaxed);
  while (now > peak && !peak_bytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}
}  // namespace cpu_detail

struct cpu {
  static constexpr const char* name = "cpu";
  static constexpr bool host_accessible = true;
  static constexpr std::size_t alignment = BlockCache::alignment;  // one cache line, and AVX-512 friendly
  // Capabilities read by backend_traits: cached one-token steps skip the graph (nn/decode.hpp).
  static constexpr DecodePath decode_path = DecodePath::graph_free;
  // A decoding step of a few sequences is a few dozen short products, which a held, spinning
  // thread team serves without a wake-up apiece. Above gemv's rows the products run on the packed
  // kernel, whose weights are packed once for the whole loop (WeightPanels), not for every token;
  // without that kernel they are Eigen's, which a held team would leave on one thread.
  template <class Loop>
  static void run_decode_loop(const DecodeLoop& decode, Loop&& loop) {
    const bool few_rows = decode.rows <= gemv_detail::max_rows;
    std::optional<WeightPanels::Scope> packed_weights;
    if (!few_rows) packed_weights.emplace(decode.constants);
    const bool held = few_rows || (decode.rows <= max_held_rows && fp32_kernel_available());
    if (decode.spin_threads && held) SpinTeam::hold(std::forward<Loop>(loop));
    else std::forward<Loop>(loop)();
  }
  // Above this many sequences a step's products are long enough to pay a thread wake-up each.
  static constexpr std::int64_t max_held_rows = 63;

  template <class T>
  static T* allocate(std::size_t n) {
    if (n == 0) return nullptr;
    T* p = static_cast<T*>(BlockCache::instance().allocate(n * sizeof(T)));
    cpu_detail::count_allocation(n * sizeof(T));
    if (::mote::debug::poison_allocations) {
      if constexpr (std::is_floating_point_v<T>) std::fill(p, p + n, std::numeric_limits<T>::quiet_NaN());
      else std::fill(p, p + n, std::numeric_limits<T>::min());
    }
    return p;
  }
  // n: the element count the block was allocated with.
  template <class T>
  static void deallocate(T* p, std::size_t n) noexcept {
    if (!p) return;
    BlockCache::instance().deallocate(p, n * sizeof(T));
    cpu_detail::live_bytes.fetch_sub(n * sizeof(T), std::memory_order_relaxed);
  }
  // Read by backend_traits::memory_use: every tensor's bytes (not the block cache's idle blocks).
  static MemoryUse memory_use() noexcept {
    return {.live_bytes = cpu_detail::live_bytes.load(std::memory_order_relaxed),
            .peak_bytes = cpu_detail::peak_bytes.load(std::memory_order_relaxed),
            .known = true};
  }
  static void reset_memory_peak() noexcept {
    cpu_detail::peak_bytes.store(cpu_detail::live_bytes.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  template <class T>
  static void copy_to_host(const T* src, T* dst, std::size_t n) {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  }
  template <class T>
  static void copy_from_host(const T* src, T* dst, std::size_t n) {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  }
  template <class T>
  static void copy(const T* src, T* dst, std::size_t n) {
    for_chunks(n, [&](std::size_t begin, std::size_t end) {
      std::memcpy(dst + begin, src + begin, (end - begin) * sizeof(T));
    });
  }
  template <class T>
  static void fill(T* p, std::size_t n, T value) {
    for_chunks(n, [&](std::size_t begin, std::size_t end) { std::fill(p + begin, p + end, value); });
  }
  static void synchronize() noexcept {}

  // fn(begin, end) over chunks of [0, n), on every core from a few hundred KB on: gradient buffers
  // of a few MB are zero-filled or copied every step.
  template <class Fn>
  static void for_chunks(std::size_t n, Fn&& fn) {
    constexpr std::size_t chunk = std::size_t{1} << 16;
    const auto chunks = static_cast<std::int64_t>((n + chunk - 1) / chunk);
    if (chunks <= 4) {  // no region at all: even an if(false) one starts a libgomp team when nested
      if (n > 0) fn(std::size_t{0}, n);
      return;
    }
#pragma omp parallel for
    for (std::int64_t c = 0; c < chunks; ++c) {
      const std::size_t begin = static_cast<std::size_t>(c) * chunk;
      fn(begin, std::min(n, begin + chunk));
    }
  }
};

// Gathers a strided 4-D view into contiguous memory (shape and strides padded to rank 4).
template <class T>
void strided_copy(cpu, const T* src, const std::int64_t* shape4, const std::int64_t* strides4, T* dst) {
  std::int64_t o = 0;
  for (std::int64_t i0 = 0; i0 < shape4[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < shape4[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < shape4[2]; ++i2) {
        const T* row = src + i0 * strides4[0] + i1 * strides4[1] + i2 * strides4[2];
        for (std::int64_t i3 = 0; i3 < shape4[3]; ++i3) dst[o++] = row[i3 * strides4[3]];
      }
}

}  // namespace mote::backend

namespace mote {
using cpu = backend::cpu;
static_assert(Backend<cpu>);
}  // namespace mote
