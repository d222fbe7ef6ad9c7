#pragma once
// safetensors: u64 little-endian header length N, N bytes of JSON header, then the tensor bytes.
// The parser works on any byte span (a memory mapping, a buffer, a fuzzer's input) and checks every
// offset before it reads; save() writes atomically; Checkpoint serves single or sharded checkpoints.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <ostream>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mote/backend/cpu/cpu.hpp"  // tensors are read into and written from host memory
#include "mote/core/dtype.hpp"
#include "mote/core/error.hpp"
#include "mote/core/shape.hpp"
#include "mote/core/tensor.hpp"
#include "mote/io/atomic_file.hpp"
#include "mote/io/json.hpp"

namespace mote::io::safetensors {

enum class Dtype { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, F8_E4M3, F8_E5M2 };

inline constexpr Dtype all_dtypes[] = {Dtype::BOOL, Dtype::U8,  Dtype::I8,  Dtype::I16, Dtype::U16,
                                       Dtype::F16,  Dtype::BF16, Dtype::I32, Dtype::U32, Dtype::F32,
                                       Dtype::F64,  Dtype::I64, Dtype::U64, Dtype::F8_E4M3, Dtype::F8_E5M2};

inline const char* dtype_name(Dtype d) noexcept {
  switch (d) {
    case Dtype::BOOL: return "BOOL";
    case Dtype::U8: return "U8";
    case Dtype::I8: return "I8";
    case Dtype::I16: return "I16";
    case Dtype::U16: return "U16";
    case Dtype::F16: return "F16";
    case Dtype::BF16: return "BF16";
    case Dtype::I32: return "I32";
    case Dtype::U32: return "U32";
    case Dtype::F32: return "F32";
    case Dtype::F64: return "F64";
    case Dtype::I64: return "I64";
    case Dtype::U64: return "U64";
    case Dtype::F8_E4M3: return "F8_E4M3";
    case Dtype::F8_E5M2: return "F8_E5M2";
  }
  return "?";
}

inline std::ostream& operator<<(std::ostream& os, Dtype d) { return os << dtype_name(d); }

inline std::size_t dtype_size(Dtype d) noexcept {
  switch (d) {
    case Dtype::BOOL: case Dtype::U8: case Dtype::I8: case Dtype::F8_E4M3: case Dtype::F8_E5M2: return 1;
    case Dtype::I16: case Dtype::U16: case Dtype::F16: case Dtype::BF16: return 2;
    case Dtype::I32: case Dtype::U32: case Dtype::F32: return 4;
    case Dtype::F64: case Dtype::I64: case Dtype::U64: return 8;
  }
  return 1;
}

inline bool is_float_dtype(Dtype d) noexcept {
  return d == Dtype::F16 || d == Dtype::BF16 || d == Dtype::F32 || d == Dtype::F64 || d == Dtype::F8_E4M3 ||
         d == Dtype::F8_E5M2;
}

// The dtype a tensor of T is stored as by default.
template <Element T>
constexpr Dtype dtype_of() {
  if constexpr (std::is_same_v<T, float>) return Dtype::F32;
  else if constexpr (std::is_same_v<T, double>) return Dtype::F64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return Dtype::I32;
  else return Dtype::U8;
}

// --- Half-precision conversions, by hand: exact widening, round-to-nearest-even narrowing. ---
namespace detail {

// Decodes a binary16-style value with `exp_bits` exponent and `mant_bits` mantissa bits (exact in double).
inline double decode_small_float(std::uint16_t bits, int exp_bits, int mant_bits) {
  const bool neg = (bits >> (exp_bits + mant_bits)) & 1u;
  const unsigned exp = (bits >> mant_bits) & ((1u << exp_bits) - 1);
  const unsigned mant = bits & ((1u << mant_bits) - 1);
  const int bias = (1 << (exp_bits - 1)) - 1;
  double v;
  if (exp == 0) v = std::ldexp(static_cast<double>(mant), 1 - bias - mant_bits);
  else if (exp == (1u << exp_bits) - 1) v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else v = std::ldexp(static_cast<double>((1u << mant_bits) | mant), static_cast<int>(exp) - bias - mant_bits);
  return neg ? -v : v;
}

// Rounds a double to the nearest binary16-style value (ties to even) in one step; overflow gives infinity.
inline std::uint16_t encode_small_float(double d, int exp_bits, int mant_bits) {
  const auto bits = std::bit_cast<std::uint64_t>(d);
  const auto sign = static_cast<std::uint16_t>((bits >> 63) << (exp_bits + mant_bits));
  const int dexp = static_cast<int>((bits >> 52) & 0x7FF);
  const std::uint64_t dmant = bits & ((std::uint64_t{1} << 52) - 1);
  const std::uint16_t exp_all = static_cast<std::uint16_t>(((1u << exp_bits) - 1) << mant_bits);
  if (dexp == 0x7FF) {
    if (dmant == 0) return sign | exp_all;
    // NaN stays NaN (quiet bit set), keeping the top payload bits.
    return static_cast<std::uint16_t>(sign | exp_all | (1u << (mant_bits - 1)) | (dmant >> (52 - mant_bits)));
  }
  if (dexp == 0) return sign;  // double subnormals are far below the smallest half subnormal
  const int bias = (1 << (exp_bits - 1)) - 1;
  const int e = dexp - 1023;
  if (e > bias) return sign | exp_all;
  const std::uint64_t full = (std::uint64_t{1} << 52) | dmant;
  int shift;
  std::uint64_t base;
  if (e >= 1 - bias) {
    shift = 52 - mant_bits;
    base = (static_cast<std::uint64_t>(e + bias) << mant_bits) | (dmant >> shift);
  } else {
    shift = 52 - mant_bits + (1 - bias - e);
    if (shift > 63) return sign;
    base = full >> shift;
  }
  const std::uint64_t rem = full & ((std::uint64_t{1} << shift) - 1);  // the bits rounded away
  const std::uint64_t half = std::uint64_t{1} << (shift - 1);
  if (rem > half || (rem == half && (base & 1))) ++base;  // a carry into the exponent is correct, up to infinity
  return static_cast<std::uint16_t>(sign | base);
}

inline double f16_to_double(std::uint16_t b) { return decode_small_float(b, 5, 10); }
inline double bf16_to_double(std::uint16_t b) { return decode_small_float(b, 8, 7); }
inline std::uint16_t double_to_f16(double d) { return encode_small_float(d, 5, 10); }
inline std::uint16_t double_to_bf16(double d) { return encode_small_float(d, 8, 7); }

inline std::uint64_t load_le(const std::uint8_t* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}
inline void store_le(std::uint8_t* p, std::uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::uint8_t>((v >> (8 * i)) & 0xff);
}

// A read-only POSIX mapping of a whole file, unmapped when the last File sharing it goes.
class Mapping {
 public:
  explicit Mapping(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw io_error("mote: cannot open '" + path.string() + "': " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw io_error("mote: '" + path.string() + "' is not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        throw io_error("mote: cannot map '" + path.string() + "': " + std::strerror(err));
      }
      data_ = static_cast<const std::uint8_t*>(p);
    }
    ::close(fd);
  }
  ~Mapping() {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::span<const std::uint8_t> bytes() const noexcept { return {data_, size_}; }

 private:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace detail

// The reference implementation refuses headers above 100 MB; so does this one.
inline constexpr std::uint64_t max_header_size = 100'000'000;

struct TensorInfo {
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // offsets into the data buffer that follows the header
  std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

class File {
 public:
  // Memory-maps the file read-only and validates the whole header.
  static File open(const std::filesystem::path& path) {
    auto mapping = std::make_shared<detail::Mapping>(path);
    File f = from_bytes(mapping->bytes(), "'" + path.string() + "'");
    f.owner_ = std::move(mapping);
    return f;
  }
  // Parses bytes the caller keeps alive for as long as this File is used.
  static File from_bytes(std::span<const std::uint8_t> bytes, std::string source = "safetensors buffer") {
    File f;
    f.source_ = std::move(source);
    f.parse(bytes);
    return f;
  }

  const std::string& source() const noexcept { return source_; }
  // Tensor names in header order.
  const std::vector<std::string>& names() const noexcept { return names_; }
  bool has(std::string_view name) const { return index_.count(std::string(name)) != 0; }
  const TensorInfo& info(std::string_view name) const {
    auto it = index_.find(std::string(name));
    if (it == index_.end())
      throw io_error("mote: " + source_ + " has no tensor '" + std::string(name) + "' (it holds " +
                     std::to_string(names_.size()) + " tensors)");
    return infos_[it->second];
  }
  // The tensor's raw little-endian bytes inside the file.
  std::span<const std::uint8_t> raw(std::string_view name) const {
    const TensorInfo& ti = info(name);
    return data_.subspan(static_cast<std::size_t>(ti.begin), static_cast<std::size_t>(ti.end - ti.begin));
  }
  // "__metadata__" entries in file order.
  const std::vector<std::pair<std::string, std::string>>& metadata() const noexcept { return metadata_; }

  template <Element T>
  Tensor<T> load_tensor(std::string_view name) const {
    return tensor<T>(name);
  }
  // Loads a tensor converted to T: float dtypes to float/double; integer dtypes to any T, range-checked.
  template <Element T>
  Tensor<T> tensor(std::string_view name) const {
    const TensorInfo& ti = info(name);
    const std::string what = source_ + ": tensor '" + std::string(name) + "'";
    if (ti.shape.size() > static_cast<std::size_t>(max_rank))
      throw io_error("mote: " + what + " has rank " + std::to_string(ti.shape.size()) + "; mote tensors have at most " +
                     std::to_string(max_rank) + " dimensions");
    const Shape shape(ti.shape.begin(), ti.shape.end());
    Tensor<T> out(shape);
    const auto n = static_cast<std::size_t>(ti.numel());
    const std::uint8_t* src = data_.data() + ti.begin;
    T* dst = out.data();
    const auto each = [&](auto&& read) {
      for (std::size_t i = 0; i < n; ++i) dst[i] = read(src + i * dtype_size(ti.dtype), i);
    };
    if constexpr (std::is_floating_point_v<T>) {
      if (ti.dtype == dtype_of<T>() && std::endian::native == std::endian::little) {
        if (n) std::memcpy(dst, src, n * sizeof(T));
        return out;
      }
    }
    switch (ti.dtype) {
      case Dtype::F32:
        require_float<T>(ti, what);
        each([](const std::uint8_t* p, std::size_t) {
          return static_cast<T>(std::bit_cast<float>(static_cast<std::uint32_t>(detail::load_le(p, 4))));
        });
        break;
      case Dtype::F64:
        require_float<T>(ti, what);
        each([](const std::uint8_t* p, std::size_t) { return static_cast<T>(std::bit_cast<double>(detail::load_le(p, 8))); });
        break;
      case Dtype::F16:
        require_float<T>(ti, what);
        each([](const std::uint8_t* p, std::size_t) {
          return static_cast<T>(detail::f16_to_double(static_cast<std::uint16_t>(detail::load_le(p, 2))));
        });
        break;
      case Dtype::BF16:
        require_float<T>(ti, what);
        each([](const std::uint8_t* p, std::size_t) {
          return static_cast<T>(detail::bf16_to_double(static_cast<std::uint16_t>(detail::load_le(p, 2))));
        });
        break;
      case Dtype::F8_E4M3:
      case Dtype::F8_E5M2:
        throw io_error("mote: " + what + " has dtype " + dtype_name(ti.dtype) + ", which mote cannot load");
      case Dtype::BOOL: each([](const std::uint8_t* p, std::size_t) { return static_cast<T>(*p != 0); }); break;
      case Dtype::U8: each([&](const std::uint8_t* p, std::size_t i) { return int_to<T>(*p, i, what); }); break;
      case Dtype::U16:
      case Dtype::U32:
      case Dtype::U64: {
        const std::size_t w = dtype_size(ti.dtype);
        each([&](const std::uint8_t* p, std::size_t i) {
          const std::uint64_t u = detail::load_le(p, w);
          if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) range_fail<T>(what, i, std::to_string(u));
          return int_to<T>(static_cast<std::int64_t>(u), i, what);
        });
        break;
      }
      case Dtype::I8:
      case Dtype::I16:
      case Dtype::I32:
      case Dtype::I64: {
        const std::size_t w = dtype_size(ti.dtype);
        each([&](const std::uint8_t* p, std::size_t i) {
          std::uint64_t u = detail::load_le(p, w);
          if (w < 8 && (u >> (8 * w - 1)) & 1u) u |= ~std::uint64_t{0} << (8 * w);  // sign-extend
          return int_to<T>(static_cast<std::int64_t>(u), i, what);
        });
        break;
      }
    }
    return out;
  }

 private:
  File() = default;

  [[noreturn]] void fail(const std::string& why) const { throw io_error("mote: " + source_ + ": " + why); }
  [[noreturn]] void fail_tensor(const std::string& name, const std::string& why) const {
    throw io_error("mote: " + source_ + ": tensor '" + name + "': " + why);
  }

  template <Element T>
  static void require_float(const TensorInfo& ti, const std::string& what) {
    if constexpr (!std::is_floating_point_v<T>)
      throw io_error("mote: " + what + " has the floating dtype " + dtype_name(ti.dtype) + "; it cannot be loaded as " +
                     mote::dtype_name<T>() + " (load it as float or double)");
  }
  template <Element T>
  [[noreturn]] static void range_fail(const std::string& what, std::size_t i, const std::string& value) {
    throw io_error("mote: " + what + ": element " + std::to_string(i) + " = " + value + " does not fit in " +
                   mote::dtype_name<T>());
  }
  template <Element T>
  static T int_to(std::int64_t v, std::size_t i, const std::string& what) {
    if constexpr (!std::is_floating_point_v<T>) {
      if (v < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
          v > static_cast<std::int64_t>(std::numeric_limits<T>::max()))
        range_fail<T>(what, i, std::to_string(v));
    }
    return static_cast<T>(v);
  }

  void parse(std::span<const std::uint8_t> bytes) {
    if (bytes.size() < 8)
      fail("is too short (" + std::to_string(bytes.size()) + " bytes); a safetensors file starts with an 8-byte header length");
    const std::uint64_t n = detail::load_le(bytes.data(), 8);
    if (n > max_header_size) fail("header length " + std::to_string(n) + " at byte 0 exceeds the 100 MB limit");
    if (n > bytes.size() - 8)
      fail("header length " + std::to_string(n) + " at byte 0 runs past the end of the file (" +
           std::to_string(bytes.size()) + " bytes)");
    const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), static_cast<std::size_t>(n));
    const json::Value header = json::parse(text, source_ + " header (bytes 8.." + std::to_string(8 + n) + ")");
    if (!header.is_object()) header.fail(std::string("expected a JSON object mapping tensor names, got ") + json::type_name(header.type()));
    data_ = bytes.subspan(static_cast<std::size_t>(8 + n));

    for (const auto& [name, entry] : header.as_object()) {
      if (name == "__metadata__") {
        if (!entry.is_object()) entry.fail("expected an object of string values");
        for (const auto& [k, v] : entry.as_object()) {
          if (!v.is_string()) v.fail("expected a string metadata value, got " + std::string(json::type_name(v.type())));
          metadata_.emplace_back(k, v.as_string());
        }
        continue;
      }
      TensorInfo ti;
      if (!entry.is_object()) fail_tensor(name, std::string("expected an object {dtype, shape, data_offsets}, got ") + json::type_name(entry.type()));
      for (const char* key : {"dtype", "shape", "data_offsets"})
        if (!entry.contains(key)) fail_tensor(name, std::string("missing \"") + key + "\"");
      const std::string& dt = entry.at("dtype").as_string();
      bool known = false;
      for (Dtype d : all_dtypes)
        if (dt == dtype_name(d)) {
          ti.dtype = d;
          known = true;
        }
      if (!known) fail_tensor(name, "unknown dtype \"" + dt + "\"");
      // Checked arithmetic: the product of the non-zero dims must fit in int64, so no sub-product overflows.
      std::uint64_t product = 1;
      for (const auto& d : entry.at("shape").as_array()) {
        if (!d.is_number()) d.fail(std::string("expected a non-negative integer dimension, got ") + json::type_name(d.type()));
        const std::int64_t dim = d.as_int64();
        if (dim < 0) d.fail("expected a non-negative dimension, got " + std::to_string(dim));
        if (dim > 0 && product > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / static_cast<std::uint64_t>(dim))
          fail_tensor(name, "the element count of its shape overflows 64 bits");
        if (dim > 0) product *= static_cast<std::uint64_t>(dim);
        ti.shape.push_back(dim);
      }
      const auto& off = entry.at("data_offsets").as_array();
      if (off.size() != 2) entry.at("data_offsets").fail("expected [begin, end], got " + std::to_string(off.size()) + " numbers");
      const std::int64_t b = off[0].as_int64(), e = off[1].as_int64();
      if (b < 0 || e < 0) fail_tensor(name, "data_offsets must be non-negative, got [" + std::to_string(b) + ", " + std::to_string(e) + "]");
      if (b > e) fail_tensor(name, "data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "] are not ordered");
      ti.begin = static_cast<std::uint64_t>(b);
      ti.end = static_cast<std::uint64_t>(e);
      if (ti.end > data_.size())
        fail_tensor(name, "data_offsets end " + std::to_string(ti.end) + " is past the " + std::to_string(data_.size()) +
                              "-byte data buffer (file byte " + std::to_string(8 + n + ti.end) + " of " +
                              std::to_string(bytes.size()) + ")");
      const std::uint64_t numel = ti.numel() == 0 ? 0 : product;
      const std::uint64_t want = numel * dtype_size(ti.dtype);
      if (numel != 0 && want / dtype_size(ti.dtype) != numel) fail_tensor(name, "its byte size overflows 64 bits");
      if (ti.end - ti.begin != want)
        fail_tensor(name, "data_offsets span " + std::to_string(ti.end - ti.begin) + " bytes but " + dt + " shape " +
                              shape_string(ti.shape) + " needs " + std::to_string(want));
      index_.emplace(name, infos_.size());
      names_.push_back(name);
      infos_.push_back(std::move(ti));
    }
    // As the reference reader requires: tensors tile the data buffer with no overlap and no gap.
    std::vector<std::size_t> order(infos_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return infos_[a].begin != infos_[b].begin ? infos_[a].begin < infos_[b].begin : infos_[a].end < infos_[b].end;
    });
    std::uint64_t cursor = 0;
    std::string prev;
    for (std::size_t i : order) {
      const TensorInfo& ti = infos_[i];
      if (ti.begin < cursor)
        fail_tensor(names_[i], "data_offsets [" + std::to_string(ti.begin) + ", " + std::to_string(ti.end) +
                                   ") overlap tensor '" + prev + "', which ends at " + std::to_string(cursor));
      if (ti.begin > cursor)
        fail_tensor(names_[i], "data_offsets begin " + std::to_string(ti.begin) + " leaves a gap after byte " +
                                   std::to_string(cursor) + " of the data buffer");
      cursor = ti.end;
      prev = names_[i];
    }
    if (cursor != data_.size())
      fail("the tensors cover " + std::to_string(cursor) + " bytes of the " + std::to_string(data_.size()) +
           "-byte data buffer; the rest is unaccounted for");
  }

  static std::string shape_string(const std::vector<std::int64_t>& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  }

  std::shared_ptr<const void> owner_;
  std::string source_;
  std::span<const std::uint8_t> data_;
  std::vector<std::string> names_;
  std::vector<TensorInfo> infos_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

namespace detail {


template <Element T>
void encode(const std::vector<T>& values, Dtype dtype, std::vector<std::uint8_t>& out, const std::string& name) {
  const std::size_t w = dtype_size(dtype);
  const std::size_t start = out.size();
  out.resize(start + values.size() * w);
  std::uint8_t* p = out.data() + start;
  for (std::size_t i = 0; i < values.size(); ++i, p += w) {
    const T v = values[i];
    switch (dtype) {
      case Dtype::F32: store_le(p, std::bit_cast<std::uint32_t>(static_cast<float>(v)), 4); break;
      case Dtype::F64: store_le(p, std::bit_cast<std::uint64_t>(static_cast<double>(v)), 8); break;
      case Dtype::F16: store_le(p, double_to_f16(static_cast<double>(v)), 2); break;
      case Dtype::BF16: store_le(p, double_to_bf16(static_cast<double>(v)), 2); break;
      case Dtype::I32: store_le(p, static_cast<std::uint32_t>(static_cast<std::int32_t>(v)), 4); break;
      case Dtype::I64: store_le(p, static_cast<std::uint64_t>(static_cast<std::int64_t>(v)), 8); break;
      case Dtype::U8:
        if constexpr (std::is_same_v<T, std::int32_t>) {
          if (v < 0 || v > 255)
            throw value_error("mote: safetensors save: tensor '" + name + "' element " + std::to_string(i) + " = " +
                              std::to_string(v) + " does not fit in U8");
        }
        *p = static_cast<std::uint8_t>(v);
        break;
      default: break;  // rejected before encoding
    }
  }
}

}  // namespace detail

template <Element T>
using NamedTensors = std::vector<std::pair<std::string, Tensor<T>>>;

// Writes tensors in the order given (offsets ascending), the header padded with spaces to a multiple of
// 8 bytes like the reference writer; atomic: a temporary file in the same directory, then rename.
// Float T saves as F32, F64, F16 or BF16 (default: T's own width); integer T as I32, I64 or U8.
template <Element T>
void save(const std::filesystem::path& path, const NamedTensors<T>& tensors,
          const std::vector<std::pair<std::string, std::string>>& metadata = {}, Dtype dtype = dtype_of<T>()) {
  const std::string where = "mote: safetensors save to '" + path.string() + "'";
  const bool ok = std::is_floating_point_v<T>
                      ? (dtype == Dtype::F32 || dtype == Dtype::F64 || dtype == Dtype::F16 || dtype == Dtype::BF16)
                      : (dtype == Dtype::I32 || dtype == Dtype::I64 || dtype == Dtype::U8);
  if (!ok)
    throw value_error(where + ": cannot store " + mote::dtype_name<T>() + " tensors as " + dtype_name(dtype) +
                      (std::is_floating_point_v<T> ? " (use F32, F64, F16 or BF16)" : " (use I32, I64 or U8)"));
  json::Value header = json::Value::object();
  if (!metadata.empty()) {
    json::Value meta = json::Value::object();
    for (const auto& [k, v] : metadata) {
      if (meta.contains(k)) throw value_error(where + ": duplicate metadata key '" + k + "'");
      meta.set(k, v);
    }
    header.set("__metadata__", std::move(meta));
  }
  std::vector<std::uint8_t> data;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw value_error(where + ": '__metadata__' is reserved and cannot name a tensor");
    if (header.contains(name)) throw value_error(where + ": duplicate tensor name '" + name + "'");
    if (!t.defined()) throw value_error(where + ": tensor '" + name + "' is undefined (default-constructed)");
    const std::uint64_t begin = data.size();
    detail::encode(t.to_vector(), dtype, data, name);
    std::vector<std::int64_t> shape(t.shape().begin(), t.shape().end());
    header.set(name, json::Value::object({{"dtype", dtype_name(dtype)},
                                          {"shape", shape},
                                          {"data_offsets", json::Value::array({begin, std::uint64_t{data.size()}})}}));
  }
  std::string text = json::dump(header);
  text.append((8 - text.size() % 8) % 8, ' ');

  std::uint8_t len[8];
  detail::store_le(len, text.size(), 8);
  io::atomic_write(path,
                   {std::string_view(reinterpret_cast<const char*>(len), 8), text,
                    std::string_view(reinterpret_cast<const char*>(data.data()), data.size())},
                   "safetensors file '" + path.string() + "'");
}

// A checkpoint directory: model.safetensors, or model.safetensors.index.json plus the shards it names.
class Checkpoint {
 public:
  // `path` is a directory, a .safetensors file, or an index .json file.
  static Checkpoint open(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    Checkpoint c;
    fs::path index_path, single;
    if (fs::is_directory(path)) {
      if (fs::exists(path / "model.safetensors.index.json")) index_path = path / "model.safetensors.index.json";
      else if (fs::exists(path / "model.safetensors")) single = path / "model.safetensors";
      else
        throw io_error("mote: checkpoint directory '" + path.string() +
                       "' holds neither model.safetensors nor model.safetensors.index.json");
    } else if (path.extension() == ".json") {
      index_path = path;
    } else {
      single = path;
    }
    if (!single.empty()) {
      c.files_.push_back(File::open(single));
      for (const auto& name : c.files_[0].names()) {
        c.where_.emplace(name, 0);
        c.names_.push_back(name);
      }
      json::Value meta = json::Value::object();
      for (const auto& [k, v] : c.files_[0].metadata()) meta.set(k, v);
      c.metadata_ = std::move(meta);
      return c;
    }
    const json::Value index = json::parse_file(index_path);
    if (!index.is_object()) index.fail("expected an object with \"weight_map\"");
    c.metadata_ = index.contains("metadata") ? index.at("metadata") : json::Value::object();
    if (!c.metadata_.is_object()) c.metadata_.fail("expected an object");
    std::map<std::string, std::size_t> shard_ids;
    for (const auto& [name, shard_v] : index.at("weight_map").as_object()) {
      const std::string& shard = shard_v.as_string();
      const fs::path rel(shard);
      // Shard names are plain file names beside the index; anything else could reach outside the checkpoint.
      if (shard.empty() || rel.is_absolute() || rel.has_parent_path() || shard == "." || shard == "..")
        shard_v.fail("expected a shard file name beside the index, got \"" + shard + "\"");
      auto [it, fresh] = shard_ids.emplace(shard, c.files_.size());
      if (fresh) {
        const fs::path file = index_path.parent_path() / rel;
        if (!fs::exists(file))
          throw io_error("mote: " + index_path.string() + ": shard '" + shard + "' (holding tensor '" + name +
                         "') is missing: no file " + file.string());
        c.files_.push_back(File::open(file));
      }
      if (!c.files_[it->second].has(name))
        throw io_error("mote: " + index_path.string() + ": tensor '" + name + "' is mapped to shard '" + shard +
                       "', which does not hold it");
      c.where_.emplace(name, it->second);
      c.names_.push_back(name);
    }
    return c;
  }

  const std::vector<std::string>& names() const noexcept { return names_; }
  bool has(std::string_view name) const { return where_.count(std::string(name)) != 0; }
  const TensorInfo& info(std::string_view name) const { return file_of(name).info(name); }
  template <Element T>
  Tensor<T> tensor(std::string_view name) const {
    return file_of(name).template tensor<T>(name);
  }
  template <Element T>
  Tensor<T> load_tensor(std::string_view name) const {
    return tensor<T>(name);
  }
  // The index's "metadata" object, or a single file's "__metadata__" as an object of strings.
  const json::Value& metadata() const noexcept { return metadata_; }
  const File& file_of(std::string_view name) const {
    auto it = where_.find(std::string(name));
    if (it == where_.end())
      throw io_error("mote: checkpoint has no tensor '" + std::string(name) + "' (" + std::to_string(names_.size()) +
                     " tensors in " + std::to_string(files_.size()) + " file(s))");
    return files_[it->second];
  }

 private:
  std::vector<File> files_;
  std::unordered_map<std::string, std::size_t> where_;
  std::vector<std::string> names_;
  json::Value metadata_;
};

}  // namespace mote::io::safetensors
