#pragma once
// Weights packed once for a decoding loop. A decoding step of 9 to 63 sequences runs each weight
// matrix through the packed GEMM kernel, which would otherwise pack the whole matrix again for
// every token while the weights do not change. Inside a WeightPanels::Scope the operands it names
// constant are packed on first use and the packed copy serves every later product with them.
#include <algorithm>
#include <cstdint>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "mote/backend/cpu/block_cache.hpp"

namespace mote::backend {

class WeightPanels {
 public:
  // How a product reads the operand: where, with which row stride, transposed or not, and the
  // depth k and width n of op(B). One matrix read two ways is packed twice.
  struct Key {
    const float* data;
    std::int64_t ld;
    bool transposed;
    std::int64_t k, n;
    auto tie() const noexcept { return std::tie(data, ld, transposed, k, n); }
    bool operator<(const Key& other) const noexcept { return tie() < other.tie(); }
  };

  // Names some tensors constant for the products on this thread while it lives (below).
  class Scope;

  // The panels of this thread's innermost scope, or null outside one.
  static WeightPanels* active() noexcept { return active_; }

  bool is_constant(const void* data) const noexcept {
    return std::binary_search(constants_.begin(), constants_.end(), data);
  }

  // The packed copy of `key` (`floats` elements, 64-byte aligned), filled by pack(out) on first
  // use; null when the operand is not one the scope named constant.
  template <class Pack>
  const float* find_or_pack(const Key& key, std::size_t floats, Pack&& pack) {
    if (!is_constant(key.data)) return nullptr;
    auto found = packed_.find(key);
    if (found == packed_.end()) {
      found = packed_.emplace(key, Block(floats)).first;
      pack(found->second.data);
    }
    return found->second.data;
  }

  // How many packed copies this scope holds.
  std::size_t size() const noexcept { return packed_.size(); }

 private:
  WeightPanels() = default;

  // Packed copies come from the block cache: the next loop's copies reuse this one's pages.
  struct Block {
    float* data;
    std::size_t bytes;
    explicit Block(std::size_t floats)
        : data(static_cast<float*>(BlockCache::instance().allocate(floats * sizeof(float)))),
          bytes(floats * sizeof(float)) {}
    Block(Block&& other) noexcept : data(std::exchange(other.data, nullptr)), bytes(other.bytes) {}
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    Block& operator=(Block&&) = delete;
    ~Block() {
      if (data) BlockCache::instance().deallocate(data, bytes);
    }
  };

  std::vector<const void*> constants_;  // sorted
  std::map<Key, Block> packed_;
  static inline thread_local WeightPanels* active_ = nullptr;
};

// Names `constants` (the data pointers of tensors that stay unchanged while it lives) to every
// product on this thread; their packed copies are freed when it ends. Scopes nest: the inner
// one's names are added to the outer one's for its lifetime.
class WeightPanels::Scope {
 public:
  explicit Scope(const std::vector<const void*>& constants) : outer_(active_) {
    panels_.constants_ = outer_ ? outer_->constants_ : std::vector<const void*>{};
    panels_.constants_.insert(panels_.constants_.end(), constants.begin(), constants.end());
    std::sort(panels_.constants_.begin(), panels_.constants_.end());
    active_ = &panels_;
  }
  ~Scope() { active_ = outer_; }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  WeightPanels panels_;
  WeightPanels* outer_;
};

}  // namespace mote::backend
