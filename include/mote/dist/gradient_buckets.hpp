#pragma once
// GradientBuckets: the trainable gradients of a data-parallel step summed across ranks in a few
// collectives instead of one per tensor (adapter gradients are small and numerous). Parameters are
// grouped into buckets of about bucket_bytes in reverse order, the order backward finishes them; a
// bucket is packed into one flat buffer and its sum started as soon as backward has finished its
// last gradient (the hook), while backward goes on. Buckets start in one fixed order on every rank,
// as MPI and NCCL match collectives by order.
//
//   GradientBuckets<float, cpu, dist::mpi> buckets(experts.parameters(), world);
//   buckets.begin_step();
//   loss.backward({.on_leaf_ready = buckets.hook()});
//   buckets.finish();  // every gradient now holds the sum over ranks
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"
#include "mote/dist/communicator.hpp"

namespace mote::dist {

struct BucketOptions {
  std::size_t bucket_bytes = std::size_t{8} << 20;  // a bucket closes once it holds this much
};

template <Real T, Backend B, Communicator Comm>
  requires ReducesOn<Comm, B>
class GradientBuckets {
 public:
  GradientBuckets(std::vector<autograd::Var<T, B>> parameters, Comm& comm, BucketOptions options = {}) : comm_(&comm) {
    if (options.bucket_bytes == 0) throw value_error("mote: dist::GradientBuckets: bucket_bytes must be > 0");
    std::int64_t offset = 0;
    for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
      if (!it->defined()) throw value_error("mote: dist::GradientBuckets: a parameter is an empty Var");
      if (index_.contains(it->node())) continue;  // one parameter listed twice is summed once
      if (buckets_.empty() || static_cast<std::size_t>(buckets_.back().elements) * sizeof(T) >= options.bucket_bytes)
        buckets_.push_back(Bucket{.first = params_.size(), .offset = offset});
      index_.emplace(it->node(), params_.size());
      params_.push_back(Slot{*it, buckets_.size() - 1, offset});
      buckets_.back().last = params_.size();
      buckets_.back().elements += it->numel();
      offset += it->numel();
    }
    flat_ = Tensor<T, B>::zeros(Shape{std::max<std::int64_t>(offset, 1)});
    begin_step();
  }
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  std::size_t bucket_count() const noexcept { return buckets_.size(); }
  std::int64_t elements() const noexcept { return static_cast<std::int64_t>(params_.empty() ? 0 : flat_.numel()); }
  // Bytes this rank sends into the sums of one step (the payload, before the algorithm's own traffic).
  std::int64_t bytes_per_step() const noexcept { return elements() * static_cast<std::int64_t>(sizeof(T)); }
  // Seconds finish() spent waiting for sums and unpacking them in the last step.
  double last_wait_s() const noexcept { return last_wait_s_; }
  // How many buckets started before finish(), while backward still ran, in the last step.
  std::size_t last_started_early() const noexcept { return started_early_; }

  void begin_step() {
    for (auto& b : buckets_) b.ready = 0;
    for (auto& p : params_) p.ready = false;
    requests_.assign(buckets_.size(), typename Comm::request{});
    next_to_start_ = 0;
    started_early_ = 0;
  }

  // Backward has finished the gradient of the parameter whose graph node is `node`.
  void mark_ready(const void* node) {
    const auto found = index_.find(node);
    if (found == index_.end()) return;  // a leaf that is not one of ours (the trainable token rows of another set)
    Slot& p = params_[found->second];
    if (p.ready) return;
    p.ready = true;
    ++buckets_[p.bucket].ready;
    const std::size_t before = next_to_start_;
    start_ready_buckets();
    started_early_ += next_to_start_ - before;
  }
  // What Var::backward calls for each leaf whose gradient is final.
  std::function<void(const void*)> hook() {
    return [this](const void* node) { mark_ready(node); };
  }

  // Starts every bucket not yet started, waits for all of them, and writes each sum back into its
  // parameters' gradients. Parameters no backward reached contribute zeros.
  void finish() {
    const auto start = std::chrono::steady_clock::now();
    while (next_to_start_ < buckets_.size()) start_bucket(next_to_start_++);
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      comm_->wait(requests_[b]);
      T* flat = flat_.data();
      for (std::size_t i = buckets_[b].first; i < buckets_[b].last; ++i) {
        Tensor<T, B>& grad = params_[i].param.mutable_grad();
        if (!grad.is_contiguous()) grad = grad.contiguous();
        B::copy(flat + params_[i].offset, grad.data(), static_cast<std::size_t>(grad.numel()));
      }
    }
    last_wait_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

 private:
  struct Slot {
    autograd::Var<T, B> param;
    std::size_t bucket = 0;
    std::int64_t offset = 0;
    bool ready = false;
  };
  struct Bucket {
    std::size_t first = 0, last = 0;  // slots [first, last)
    std::int64_t offset = 0, elements = 0;
    std::size_t ready = 0;
  };

  void start_ready_buckets() {
    while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].ready == buckets_[next_to_start_].last - buckets_[next_to_start_].first)
      start_bucket(next_to_start_++);
  }

  void start_bucket(std::size_t b) {
    T* flat = flat_.data();
    for (std::size_t i = buckets_[b].first; i < buckets_[b].last; ++i) {
      const Tensor<T, B>& grad = params_[i].param.grad();
      const auto n = static_cast<std::size_t>(params_[i].param.numel());
      if (!grad.defined()) B::fill(flat + params_[i].offset, n, T(0));
      else if (grad.is_contiguous()) B::copy(grad.data(), flat + params_[i].offset, n);
      else B::copy(grad.contiguous().data(), flat + params_[i].offset, n);
    }
    requests_[b] = comm_->start_all_reduce_sum(std::span<T>(flat + buckets_[b].offset, static_cast<std::size_t>(buckets_[b].elements)),
                                               "the gradient sum of bucket " + std::to_string(b + 1) + " of " +
                                                   std::to_string(buckets_.size()));
  }

  Comm* comm_;
  std::vector<Slot> params_;
  std::vector<Bucket> buckets_;
  std::unordered_map<const void*, std::size_t> index_;
  std::vector<typename Comm::request> requests_;
  Tensor<T, B> flat_;
  std::size_t next_to_start_ = 0, started_early_ = 0;
  double last_wait_s_ = 0;
};

}  // namespace mote::dist
