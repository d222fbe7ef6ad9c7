#pragma once
// The trainer's JSONL metrics file and its console progress. Each metrics line goes out in one
// write() on an O_APPEND descriptor, so a kill leaves whole lines (at worst a torn last one, which
// a resume cuts off: it truncates the file to the length its checkpoint recorded).
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <ostream>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mote/core/error.hpp"
#include "mote/io/json.hpp"

namespace mote::train {

class MetricsFile {
 public:
  MetricsFile() = default;
  // Opens `path` for appending, first cutting it to `keep_bytes` (a resume) or to nothing (a fresh run).
  MetricsFile(std::filesystem::path path, std::uint64_t keep_bytes) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("opening it failed");
    if (::ftruncate(fd_, static_cast<off_t>(keep_bytes)) != 0) {
      const std::string why = std::strerror(errno);
      close();
      throw io_error("mote: train: metrics file '" + path_.string() + "': truncating it to " + std::to_string(keep_bytes) +
                     " bytes failed: " + why);
    }
    size_ = keep_bytes;
  }
  MetricsFile(const MetricsFile&) = delete;
  MetricsFile& operator=(const MetricsFile&) = delete;
  MetricsFile(MetricsFile&& other) noexcept { *this = std::move(other); }
  MetricsFile& operator=(MetricsFile&& other) noexcept {
    if (this != &other) {
      close();
      path_ = std::move(other.path_);
      fd_ = std::exchange(other.fd_, -1);
      size_ = other.size_;
    }
    return *this;
  }
  ~MetricsFile() { close(); }

  bool is_open() const noexcept { return fd_ >= 0; }
  const std::filesystem::path& path() const noexcept { return path_; }
  // Bytes in the file: what a checkpoint records so that a resume can cut later lines off.
  std::uint64_t size() const noexcept { return size_; }

  // Appends one object as one line.
  void append(const io::json::Value& line) {
    if (fd_ < 0) return;
    const std::string text = io::json::dump(line) + "\n";
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("appending a line failed");
      }
      done += static_cast<std::size_t>(n);
    }
    size_ += text.size();
  }

  // Length of the file at `path`, 0 when it does not exist.
  static std::uint64_t length_of(const std::filesystem::path& path) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(path, ec);
    return ec ? 0 : static_cast<std::uint64_t>(n);
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    const std::string why = std::strerror(errno);
    close();
    throw io_error("mote: train: metrics file '" + path_.string() + "': " + what + ": " + why);
  }
  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

enum class Progress {
  automatic,  // a bar when the log stream is a terminal (std::cerr or std::cout on a tty), lines otherwise
  bar,        // one line redrawn in place
  lines,      // a plain line every log_every steps
  off,
};

// "1h02m", "3m12s", "45s".
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<std::int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  return buf;
}

// What the console shows: a bar redrawn at most ten times a second, or plain lines every log_every steps.
class ProgressReporter {
 public:
  ProgressReporter() = default;
  ProgressReporter(Progress mode, std::ostream* stream, std::int64_t log_every)
      : stream_(stream), log_every_(std::max<std::int64_t>(1, log_every)) {
    if (!stream_) mode = Progress::off;
    if (mode == Progress::automatic) mode = on_terminal(stream_) ? Progress::bar : Progress::lines;
    mode_ = mode;
  }

  Progress mode() const noexcept { return mode_; }

  struct Step {
    std::int64_t step = 0, total = 0;
    double epoch = 0, loss = 0, lr = 0, tokens_per_s = 0, eta_s = 0;
  };
  // Called after every optimizer step with the step's loss; shows the mean loss since the last line.
  void step(const Step& s) {
    if (mode_ == Progress::off) return;
    window_loss_ += s.loss;
    ++window_steps_;
    const bool last = s.step >= s.total;
    char buf[256];
    if (mode_ == Progress::bar) {
      const auto now = std::chrono::steady_clock::now();
      if (!last && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
      last_draw_ = now;
      drawn_ = true;
      constexpr int width = 24;
      const int filled = s.total > 0 ? static_cast<int>(width * std::min<std::int64_t>(s.step, s.total) / s.total) : width;
      std::string bar(static_cast<std::size_t>(filled), '=');
      if (filled < width) bar += '>';
      bar.resize(width, ' ');
      std::snprintf(buf, sizeof buf, "\r%lld/%lld [%s] loss %.4f | %.0f tok/s | ETA %s\x1b[K", static_cast<long long>(s.step),
                    static_cast<long long>(s.total), bar.c_str(), window_mean(), s.tokens_per_s, format_duration(s.eta_s).c_str());
      *stream_ << buf << std::flush;
      reset_window();
      return;
    }
    if (s.step % log_every_ != 0 && !last) return;
    std::snprintf(buf, sizeof buf, "step %lld/%lld epoch %.2f loss %.4f lr %.3g %.0f tok/s ETA %s\n", static_cast<long long>(s.step),
                  static_cast<long long>(s.total), s.epoch, window_mean(), s.lr, s.tokens_per_s,
                  format_duration(s.eta_s).c_str());
    *stream_ << buf << std::flush;
    reset_window();
  }
  // A message on a line of its own (evaluation, checkpoints), clearing the bar first.
  void note(const std::string& text) {
    if (mode_ == Progress::off) return;
    if (mode_ == Progress::bar && drawn_) *stream_ << "\r\x1b[K";
    *stream_ << text << "\n" << std::flush;
    drawn_ = false;
  }
  // Ends the bar's line.
  void finish() {
    if (mode_ == Progress::bar && drawn_) *stream_ << "\n" << std::flush;
    drawn_ = false;
  }

 private:
  static bool on_terminal(const std::ostream* s) {
    if (s == &std::cerr || s == &std::clog) return ::isatty(STDERR_FILENO) == 1;
    if (s == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
    return false;
  }
  double window_mean() const { return window_steps_ ? window_loss_ / static_cast<double>(window_steps_) : 0.0; }
  void reset_window() {
    window_loss_ = 0;
    window_steps_ = 0;
  }

  std::ostream* stream_ = nullptr;
  std::int64_t log_every_ = 1;
  Progress mode_ = Progress::off;
  double window_loss_ = 0;
  std::int64_t window_steps_ = 0;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace mote::train
