#pragma once
// SIGINT / SIGTERM during training: the handler only sets a flag (all a handler may safely do); the
// trainer polls it between optimizer steps, saves a checkpoint and returns. The previous handlers
// come back when the guard goes out of scope, on every path out of fit().
#include <csignal>

#include <signal.h>

#include "mote/core/error.hpp"

namespace mote::train {

namespace signal_detail {
inline volatile std::sig_atomic_t stop_signal = 0;  // the signal number caught, 0 for none
extern "C" inline void record_stop_signal(int signal_number) { stop_signal = signal_number; }
}  // namespace signal_detail

// Installs the stop handler for SIGINT and SIGTERM for its lifetime. SA_RESETHAND makes a second
// Ctrl-C act as usual (kill), for a save that takes too long.
class StopSignalGuard {
 public:
  StopSignalGuard() {
    signal_detail::stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = &signal_detail::record_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;
    if (::sigaction(SIGINT, &action, &previous_int_) != 0)
      throw error("mote: train: installing the SIGINT handler failed");
    if (::sigaction(SIGTERM, &action, &previous_term_) != 0) {
      ::sigaction(SIGINT, &previous_int_, nullptr);
      throw error("mote: train: installing the SIGTERM handler failed");
    }
  }
  StopSignalGuard(const StopSignalGuard&) = delete;
  StopSignalGuard& operator=(const StopSignalGuard&) = delete;
  ~StopSignalGuard() {
    ::sigaction(SIGINT, &previous_int_, nullptr);
    ::sigaction(SIGTERM, &previous_term_, nullptr);
  }

  // The signal caught since the guard was made (SIGINT or SIGTERM), or 0.
  static int caught() noexcept { return static_cast<int>(signal_detail::stop_signal); }

 private:
  struct sigaction previous_int_ {};
  struct sigaction previous_term_ {};
};

}  // namespace mote::train
