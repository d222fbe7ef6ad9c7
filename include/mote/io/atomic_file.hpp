#pragma once
// Whole files. Writes are atomic: a file (or a whole directory) is built under a temporary name beside
// its target and renamed into place only once complete, so readers and crashes see the old version or
// the new one, never half of one. Every failure path removes the temporary. Reads take the whole file.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <ostream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <unistd.h>

#include "mote/core/error.hpp"

namespace mote::io {

// The whole file as bytes; io_error naming it when it cannot be opened or read.
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw io_error("mote: cannot open '" + path.string() + "'");
  const std::streamoff size = in.tellg();
  if (size < 0) throw io_error("mote: cannot read '" + path.string() + "'");
  std::string data(static_cast<std::size_t>(size), '\0');
  in.seekg(0);
  if (size > 0 && !in.read(data.data(), size)) throw io_error("mote: cannot read '" + path.string() + "'");
  return data;
}

namespace atomic_detail {

// "<target>.tmp-<pid>-<ticks>-<n>": unique across threads and processes writing beside one target.
inline std::filesystem::path temporary_beside(const std::filesystem::path& target) {
  static std::atomic<std::uint64_t> counter{0};
  const auto ticks = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::filesystem::path tmp = target;
  tmp += ".tmp-" + std::to_string(static_cast<long long>(::getpid())) + "-" + std::to_string(ticks) + "-" +
         std::to_string(counter.fetch_add(1));
  return tmp;
}

// Removes a temporary file or directory on every path out of its scope except a successful rename.
struct TemporaryPath {
  std::filesystem::path path;
  bool keep = false;
  explicit TemporaryPath(std::filesystem::path p) : path(std::move(p)) {}
  TemporaryPath(const TemporaryPath&) = delete;
  TemporaryPath& operator=(const TemporaryPath&) = delete;
  ~TemporaryPath() {
    std::error_code ignored;
    if (!keep) std::filesystem::remove_all(path, ignored);
  }
};

}  // namespace atomic_detail

// Streams a file through `write(std::ostream&)` into a temporary file in the target's directory (so the
// rename is atomic and never crosses file systems), then renames it over `path`. `what` names the file
// in errors ("optimizer state file '...'"). An exception from `write` propagates; the old file stays.
template <class Writer>
void atomic_write_with(const std::filesystem::path& path, const std::string& what, Writer&& write) {
  atomic_detail::TemporaryPath tmp{atomic_detail::temporary_beside(path)};
  {
    std::ofstream out(tmp.path, std::ios::binary | std::ios::trunc);
    if (!out) throw io_error("mote: cannot write " + what + ": opening '" + tmp.path.string() + "' failed");
    std::forward<Writer>(write)(static_cast<std::ostream&>(out));
    out.flush();
    out.close();
    if (!out) throw io_error("mote: writing " + what + " failed (disk full or I/O error)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp.path, path, ec);
  if (ec) throw io_error("mote: cannot replace " + what + ": " + ec.message());
  tmp.keep = true;
}

// Writes the pieces in order, atomically (see atomic_write_with).
inline void atomic_write(const std::filesystem::path& path, std::initializer_list<std::string_view> pieces,
                         const std::string& what) {
  atomic_write_with(path, what, [&](std::ostream& out) {
    for (std::string_view p : pieces) out.write(p.data(), static_cast<std::streamsize>(p.size()));
  });
}

// A directory built beside `target` ("<target>.tmp-..."), moved into place by publish(); dropped with
// everything in it if never published. For checkpoints: a reader finds the old folder or the whole new one.
class StagedDirectory {
 public:
  StagedDirectory(std::filesystem::path target, std::string what)
      : target_(std::move(target)), what_(std::move(what)), staging_{atomic_detail::temporary_beside(target_)} {
    std::error_code ec;
    std::filesystem::create_directories(staging_.path, ec);
    if (ec) throw io_error("mote: cannot write " + what_ + ": creating '" + staging_.path.string() + "' failed: " + ec.message());
  }
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;

  // Where to write the directory's contents until publish().
  const std::filesystem::path& path() const noexcept { return staging_.path; }
  const std::filesystem::path& target() const noexcept { return target_; }

  // Renames the staged directory to the target. A target that already exists is first moved aside and
  // removed after the rename (POSIX cannot rename over a non-empty directory); only a crash in between
  // leaves no target, with the old one still whole under its aside name.
  void publish() {
    namespace fs = std::filesystem;
    if (staging_.keep) throw value_error("mote: " + what_ + " was already published");
    std::error_code ec;
    atomic_detail::TemporaryPath old{fs::path()};
    if (fs::exists(target_, ec)) {
      old.path = atomic_detail::temporary_beside(target_);
      old.path += ".old";
      fs::rename(target_, old.path, ec);
      if (ec) throw io_error("mote: cannot replace " + what_ + ": moving the old '" + target_.string() + "' aside failed: " + ec.message());
    }
    fs::rename(staging_.path, target_, ec);
    if (ec) {
      std::error_code restore;
      if (!old.path.empty()) fs::rename(old.path, target_, restore);
      old.keep = !old.path.empty() && restore;  // never delete the only copy of the old directory
      throw io_error("mote: cannot publish " + what_ + ": renaming '" + staging_.path.string() + "' to '" + target_.string() +
                     "' failed: " + ec.message());
    }
    staging_.keep = true;
  }

 private:
  std::filesystem::path target_;
  std::string what_;
  atomic_detail::TemporaryPath staging_;
};

}  // namespace mote::io
