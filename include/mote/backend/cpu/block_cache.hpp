#pragma once
// A cache of freed large CPU blocks. A training loop allocates the same sizes every step; handing
// a freed block back skips the page faults and kernel zeroing that fresh memory costs every
// step. Sizes are rounded up to sixteenths of a power of two, so a growing tensor (a KV cache
// gaining a token per step) reuses the block it just freed; pages a request never touches stay
// unmapped. Cached plus live bytes stay within a quarter above the most that was ever live at once:
// a miss frees cached blocks (least recently freed first) only as far as that bound needs, and the
// cache never holds more than its limit.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <list>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

namespace mote::backend {

class BlockCache {
 public:
  static constexpr std::size_t alignment = 64;
  // Smaller blocks come from malloc's arenas, which reuse them without faults already.
  static constexpr std::size_t min_cached_bytes = std::size_t{1} << 18;
  static constexpr std::size_t default_limit_bytes = std::size_t{1} << 30;

  explicit BlockCache(std::size_t limit = default_limit_bytes) : limit_(limit) {}
  ~BlockCache() { release(); }
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // The process-wide cache. Never destroyed: tensors freed during static destruction still reach it.
  static BlockCache& instance() {
    static BlockCache* cache = new BlockCache(limit_from_environment());
    return *cache;
  }

  // The byte size a request of `bytes` occupies: sixteenths of a power of two from min_cached_bytes on.
  static std::size_t rounded(std::size_t bytes) {
    if (bytes < min_cached_bytes) return bytes;
    std::size_t power = min_cached_bytes;
    while (power <= bytes / 2) power *= 2;
    const std::size_t step = power / 16;
    return (bytes + step - 1) / step * step;
  }

  // A block of rounded(bytes) bytes: a cached one when there is one, else a fresh one.
  void* allocate(std::size_t bytes) {
    const std::size_t size = rounded(bytes);
    if (enabled && size >= min_cached_bytes) {
      std::vector<void*> evicted;
      {
        std::lock_guard lock(mutex_);
        live_ += size;
        high_water_ = std::max(high_water_, live_);
        if (auto it = by_size_.find(size); it != by_size_.end() && !it->second.empty()) {
          const auto entry = it->second.back();
          it->second.pop_back();
          void* p = entry->pointer;
          lru_.erase(entry);
          cached_ -= size;
          return p;
        }
        // Each size class peaks at its own point of a step (activations in the forward pass,
        // gradients in the backward), so holding every class's peak takes a little more than the
        // peak of the sum; without that headroom each miss evicts a block a later request misses.
        while (cached_ + live_ > footprint_bound()) evicted.push_back(evict_oldest());
      }
      for (void* q : evicted) ::operator delete(q, std::align_val_t{alignment});
      try {
        return ::operator new(size, std::align_val_t{alignment});
      } catch (...) {
        std::lock_guard lock(mutex_);
        live_ -= size;
        throw;
      }
    }
    return ::operator new(size, std::align_val_t{alignment});
  }

  // Takes back a block from allocate(bytes) with the same `bytes`.
  void deallocate(void* p, std::size_t bytes) noexcept {
    const std::size_t size = rounded(bytes);
    if (!enabled || size < min_cached_bytes) {
      ::operator delete(p, std::align_val_t{alignment});
      return;
    }
    std::vector<void*> evicted;
    {
      std::lock_guard lock(mutex_);
      live_ -= size;
      if (size > limit_) {
        ::operator delete(p, std::align_val_t{alignment});
        return;
      }
      try {
        lru_.push_back({p, size});
        by_size_[size].push_back(std::prev(lru_.end()));
      } catch (...) {  // no memory for the bookkeeping: just free the block
        if (!lru_.empty() && lru_.back().pointer == p) lru_.pop_back();
        ::operator delete(p, std::align_val_t{alignment});
        return;
      }
      cached_ += size;
      while (cached_ > limit_) evicted.push_back(evict_oldest());
    }
    for (void* q : evicted) ::operator delete(q, std::align_val_t{alignment});
  }

  // Frees every cached block (live tensors are untouched).
  void release() noexcept {
    std::lock_guard lock(mutex_);
    while (!lru_.empty()) ::operator delete(evict_oldest(), std::align_val_t{alignment});
  }
  // The most the cache keeps; 0 turns caching off. Blocks past the new limit are freed now.
  void set_limit(std::size_t bytes) noexcept {
    std::lock_guard lock(mutex_);
    limit_ = bytes;
    while (cached_ > limit_) ::operator delete(evict_oldest(), std::align_val_t{alignment});
  }
  std::size_t limit() const noexcept {
    std::lock_guard lock(mutex_);
    return limit_;
  }
  std::size_t cached_bytes() const noexcept {
    std::lock_guard lock(mutex_);
    return cached_;
  }
  // Bytes of cacheable size handed out and not yet given back.
  std::size_t live_bytes() const noexcept {
    std::lock_guard lock(mutex_);
    return live_;
  }

  // Off under AddressSanitizer, so that a use after free still reaches freed memory and is caught.
#if defined(__SANITIZE_ADDRESS__)
  static constexpr bool enabled = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  static constexpr bool enabled = false;
#else
  static constexpr bool enabled = true;
#endif
#else
  static constexpr bool enabled = true;
#endif

 private:
  struct Entry {
    void* pointer;
    std::size_t size;
  };

  // MOTE_CPU_CACHE_MB sets the limit in MiB (0 turns caching off).
  static std::size_t limit_from_environment() {
    const char* text = std::getenv("MOTE_CPU_CACHE_MB");
    if (!text || !*text) return default_limit_bytes;
    char* end = nullptr;
    const unsigned long long mib = std::strtoull(text, &end, 10);
    return end && *end == '\0' ? static_cast<std::size_t>(mib) << 20 : default_limit_bytes;
  }

  // Caller holds the mutex. The most cached plus live bytes may reach.
  std::size_t footprint_bound() const noexcept { return high_water_ + high_water_ / 4; }

  // Caller holds the mutex. The oldest entry is also the oldest of its size, so the front of its list.
  void* evict_oldest() noexcept {
    const Entry entry = lru_.front();
    auto& same_size = by_size_.find(entry.size)->second;
    same_size.erase(same_size.begin());
    lru_.pop_front();
    cached_ -= entry.size;
    return entry.pointer;
  }

  mutable std::mutex mutex_;
  std::list<Entry> lru_;  // least recently freed first
  std::unordered_map<std::size_t, std::vector<std::list<Entry>::iterator>> by_size_;
  std::size_t cached_ = 0;
  std::size_t live_ = 0;
  std::size_t high_water_ = 0;  // the most live_ has been
  std::size_t limit_;
};

}  // namespace mote::backend
