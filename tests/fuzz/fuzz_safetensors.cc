// libFuzzer target: arbitrary bytes as a safetensors file (header parse, validation, every tensor read in
// every element type) and as JSON text (parse, then dump must parse back to an equal value).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include "mote/io/json.hpp"
#include "mote/io/safetensors.hpp"

namespace {

template <class T>
void read_all(const mote::io::safetensors::File& f) {
  for (const auto& name : f.names()) {
    try {
      const auto t = f.tensor<T>(name);
      // Touch every element so a read past the mapping would be seen by the sanitizers.
      volatile T sink{};
      for (const T& v : t.to_vector()) sink = v;
      (void)sink;
    } catch (const mote::error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace st = mote::io::safetensors;
  namespace json = mote::io::json;
  try {
    const auto f = st::File::from_bytes(std::span<const std::uint8_t>(data, size), "fuzz input");
    for (const auto& name : f.names()) {
      const auto& info = f.info(name);
      // Validation promises each tensor's bytes lie inside the buffer.
      if (info.end < info.begin || f.raw(name).size() != info.end - info.begin) std::abort();
    }
    read_all<float>(f);
    read_all<double>(f);
    read_all<std::int32_t>(f);
    read_all<std::uint8_t>(f);
  } catch (const mote::error&) {
  }
  try {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const json::Value v = json::parse(text, "fuzz input");
    const std::string once = json::dump(v);
    const json::Value back = json::parse(once, "dump");
    if (!(back == v) || json::dump(back) != once || !(json::parse(json::dump(v, 2)) == v)) std::abort();
  } catch (const mote::error&) {
  }
  return 0;
}
