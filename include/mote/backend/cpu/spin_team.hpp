#pragma once
// A team of OpenMP threads held spinning between many small parallel jobs. Token-by-token decoding
// runs a few dozen matrix-vector products per token, each a few tens of microseconds long; opening
// an OpenMP region for each costs a thread wake-up (tens of microseconds on a VM under a passive
// wait policy) every time. Inside SpinTeam::hold(leader), thread 0 runs `leader` while the other
// threads of the same team wait for chunked jobs by spinning, and leave when `leader` returns.
// It is the one OpenMP pool, not a second one, and it spins only for as long as `leader` runs.
#include <atomic>
#include <cstdint>
#include <exception>
#include <type_traits>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace mote::backend {

class SpinTeam {
 public:
  // Runs leader() on the calling thread with the other threads spinning beside it; exceptions
  // from leader() propagate. Without OpenMP, with one thread, or nested in a parallel region (or
  // another hold) it simply calls leader().
  template <class Leader>
  static void hold(Leader&& leader) {
#ifdef _OPENMP
    if (!leading_ && !omp_in_parallel() && omp_get_max_threads() > 1) {
      Shared& s = shared();
      s.stop.store(false, std::memory_order_relaxed);
      // Helpers start from the epoch before any job of this hold, so one that wakes late still
      // joins the first job if it is open.
      const std::uint64_t before = s.state.load(std::memory_order_relaxed) >> 32;
      std::exception_ptr failure;
#pragma omp parallel
      {
        if (omp_get_thread_num() == 0) {
          leading_ = true;
          try {
            leader();
          } catch (...) {
            failure = std::current_exception();
          }
          leading_ = false;
          s.stop.store(true, std::memory_order_release);
        } else {
          serve(s, before);
        }
      }
      if (failure) std::rethrow_exception(failure);
      return;
    }
#endif
    leader();
  }

  // True on the leader thread inside hold().
  static bool active() noexcept { return leading_; }

  // Whether run() may be called inside hold() from here: on a held leader, or where hold() can
  // start a team (not inside another parallel region, more than one thread).
  static bool can_share() noexcept {
#ifdef _OPENMP
    return leading_ || (!omp_in_parallel() && omp_get_max_threads() > 1);
#else
    return false;
#endif
  }

  // On the leader inside hold(): runs body(c) for c in [0, chunks) across the team and returns
  // when all are done. Chunks must not throw.
  template <class Body>
  static void run(std::int64_t chunks, const Body& body) {
    Shared& s = shared();
    s.job = [](const void* b, std::int64_t c) { (*static_cast<const Body*>(b))(c); };
    s.body = &body;
    s.chunks = chunks;
    s.next.store(0, std::memory_order_relaxed);
    s.done.store(0, std::memory_order_relaxed);
    s.left.store(0, std::memory_order_relaxed);
    const std::uint64_t epoch = (s.state.load(std::memory_order_relaxed) >> 32) + 1;
    s.state.store(epoch << 32, std::memory_order_release);  // publishes the job, open, nobody joined
    work(s);
    while (s.done.load(std::memory_order_acquire) < chunks) pause();
    // Close the job: a thread that has not joined yet (descheduled, say) stays out of it, so the
    // leader waits only for those that did, and they are past their last chunk already.
    const auto joined = static_cast<std::int64_t>(s.state.fetch_or(closed, std::memory_order_acq_rel) & joined_mask);
    while (s.left.load(std::memory_order_acquire) < joined) pause();
  }

 private:
  static constexpr std::uint64_t closed = std::uint64_t{1} << 31;
  static constexpr std::uint64_t joined_mask = closed - 1;

  struct Shared {
    std::atomic<std::uint64_t> state{0};  // epoch << 32 | closed bit | threads joined
    std::atomic<std::int64_t> next{0}, done{0}, left{0};
    std::atomic<bool> stop{false};
    void (*job)(const void*, std::int64_t) = nullptr;
    const void* body = nullptr;
    std::int64_t chunks = 0;
  };
  static Shared& shared() {
    static Shared s;
    return s;
  }
  static inline thread_local bool leading_ = false;

  static void pause() noexcept {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#endif
  }

  static void work(Shared& s) {
    for (std::int64_t c; (c = s.next.fetch_add(1, std::memory_order_relaxed)) < s.chunks;) {
      s.job(s.body, c);
      s.done.fetch_add(1, std::memory_order_release);
    }
  }

  // A helper thread: joins each new job while it is open, leaves when the leader is finished.
  static void serve(Shared& s, std::uint64_t seen) {
    for (;;) {
      std::uint64_t state = s.state.load(std::memory_order_acquire);
      if ((state >> 32) == seen) {
        if (s.stop.load(std::memory_order_acquire)) return;
        pause();
        continue;
      }
      if (state & closed) {  // missed that job; wait for the next
        seen = state >> 32;
        continue;
      }
      if (!s.state.compare_exchange_weak(state, state + 1, std::memory_order_acq_rel)) continue;
      seen = state >> 32;
      work(s);
      s.left.fetch_add(1, std::memory_order_release);
    }
  }
};

}  // namespace mote::backend
