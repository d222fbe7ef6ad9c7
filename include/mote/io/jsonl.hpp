#pragma once
// JSON Lines: one JSON value per line, as datasets are kept. Reading names the file and line of every
// error; a tolerant read reports bad lines and goes on. Whole-file writes are atomic, and an appender
// adds whole lines to a file that a killed run can resume (a torn last line is cut off on reopening).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/io/atomic_file.hpp"
#include "mote/io/json.hpp"

namespace mote::io::jsonl {

struct Line {
  std::size_t number = 0;  // 1-based line number in the file
  json::Value value;
};

// How messages name a line: 'data/chains.jsonl' line 12.
inline std::string line_source(const std::filesystem::path& path, std::size_t number) {
  return "'" + path.string() + "' line " + std::to_string(number);
}

// Called for a line that is not valid JSON: its number and the parser's message.
using BadLine = std::function<void(std::size_t number, const std::string& message)>;

namespace detail {

inline bool blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace detail

// Every non-blank line parsed; a line that is not valid JSON goes to `on_bad_line` and is skipped,
// or, with no handler, throws io_error naming the file and the line.
inline std::vector<Line> read(const std::filesystem::path& path, const BadLine& on_bad_line = {}) {
  const std::string data = io::read_file(path);
  std::vector<Line> out;
  std::size_t number = 0;
  for (std::size_t begin = 0; begin < data.size();) {
    std::size_t end = data.find('\n', begin);
    if (end == std::string::npos) end = data.size();
    ++number;
    const std::string_view text(data.data() + begin, end - begin);
    begin = end + 1;
    if (detail::blank(text)) continue;
    try {
      out.push_back(Line{number, json::parse(text, line_source(path, number))});
    } catch (const io_error& e) {
      if (!on_bad_line) throw;
      on_bad_line(number, e.what());
    }
  }
  return out;
}

// Writes one compact JSON value per line, atomically (a temporary file beside it, then a rename).
inline void write(const std::filesystem::path& path, const std::vector<json::Value>& values) {
  std::string text;
  for (const auto& v : values) text += json::dump(v) + "\n";
  io::atomic_write(path, {text}, "'" + path.string() + "'");
}

// Appends whole lines to a JSON Lines file and flushes each, so a killed writer leaves at most one
// torn last line; opening cuts such a line off, so the file holds only complete values.
class Appender {
 public:
  explicit Appender(const std::filesystem::path& path) : path_(path) {
    if (std::filesystem::exists(path_)) {
      const std::string data = io::read_file(path_);
      if (!data.empty() && data.back() != '\n') {
        const std::size_t last_newline = data.rfind('\n');
        std::filesystem::resize_file(path_, last_newline == std::string::npos ? 0 : last_newline + 1);
      }
    }
    out_.open(path_, std::ios::binary | std::ios::app);
    if (!out_) throw io_error("mote: cannot open '" + path_.string() + "' for appending");
  }
  void append(const json::Value& value) {
    const std::string line = json::dump(value) + "\n";
    out_.write(line.data(), static_cast<std::streamsize>(line.size()));
    out_.flush();
    if (!out_) throw io_error("mote: appending to '" + path_.string() + "' failed (disk full or I/O error)");
  }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace mote::io::jsonl
