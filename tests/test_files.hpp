#pragma once
// Files for tests: scratch directories and the text fixtures written by tests/reference/*.py
// (`attr <name> <value>` lines, and `tensor <name> <dtype> shape <dims...>` followed by one line
// of row-major values).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"

namespace mote::testing {

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("mote_test_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

inline std::filesystem::path fixture_path(const std::string& name) { return std::filesystem::path(MOTE_TEST_FIXTURES) / name; }

// A text fixture: the op it describes (op fixtures), attrs and named tensors, values kept in double.
struct TextFixture {
  struct Entry {
    std::string dtype;
    Shape shape;
    std::vector<double> values;
  };
  std::string source;
  std::string op;
  std::map<std::string, double> attrs;
  std::map<std::string, Entry> tensors;

  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  const Entry& entry(const std::string& name) const {
    const auto it = tensors.find(name);
    if (it == tensors.end()) throw io_error("fixture " + source + " has no tensor '" + name + "'");
    return it->second;
  }
  double attr(const std::string& name) const {
    const auto it = attrs.find(name);
    if (it == attrs.end()) throw io_error("fixture " + source + " has no attr '" + name + "'");
    return it->second;
  }
  template <class T>
  Tensor<T> tensor(const std::string& name) const {
    const Entry& e = entry(name);
    std::vector<T> v;
    for (double x : e.values) v.push_back(static_cast<T>(x));
    return Tensor<T>::from_vector(e.shape, v);
  }
  // Every "<prefix><name>" tensor as name -> tensor.
  template <class T>
  std::map<std::string, Tensor<T>> with_prefix(const std::string& prefix) const {
    std::map<std::string, Tensor<T>> out;
    for (const auto& [name, e] : tensors)
      if (name.rfind(prefix, 0) == 0) out.emplace(name.substr(prefix.size()), tensor<T>(name));
    return out;
  }
};

// Reads tests/reference/fixtures/<stem>.txt.
inline TextFixture load_text_fixture(const std::string& stem) {
  const std::string path = fixture_path(stem + ".txt").string();
  std::ifstream in(path);
  if (!in) throw io_error("cannot open fixture " + path + "; run the script in tests/reference/ that writes it");
  TextFixture f;
  f.source = path;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "op") {
      words >> f.op;
    } else if (kind == "attr") {
      std::string name, value;
      words >> name >> value;
      f.attrs[name] = std::strtod(value.c_str(), nullptr);
    } else if (kind == "tensor") {
      std::string name, dtype, shape_word;
      words >> name >> dtype >> shape_word;
      if (shape_word != "shape") throw io_error(path + ": expected 'shape' after tensor " + name);
      TextFixture::Entry e{dtype, Shape{}, {}};
      for (std::int64_t d; words >> d;) e.shape.push_back(d);
      std::string values_line;
      if (!std::getline(in, values_line)) throw io_error(path + ": tensor " + name + " has no values line");
      std::istringstream values(values_line);
      // strtod reads repr()'s shortest round-trip digits back to the exact double.
      for (std::string token; values >> token;) e.values.push_back(std::strtod(token.c_str(), nullptr));
      if (static_cast<std::int64_t>(e.values.size()) != e.shape.numel())
        throw io_error(path + ": tensor " + name + " of shape " + e.shape.str() + " has " + std::to_string(e.values.size()) +
                       " values");
      f.tensors[name] = std::move(e);
    } else {
      throw io_error(path + ": unknown line kind '" + kind + "'");
    }
  }
  return f;
}

}  // namespace mote::testing
