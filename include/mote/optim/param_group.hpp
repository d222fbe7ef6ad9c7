#pragma once
// Named parameter groups and the optimizer base they feed: per-parameter state (step count and
// moment buffers), zero_grad, and exact save/restore of that state in memory or in a binary file.
//
// A parameter's state is keyed by "<group name>.<index in group>", so a checkpoint restores into
// any optimizer built with the same groups in the same order.
//
// State file (little-endian): "MOTEOPTS", u32 version, string dtype, string kind, i64 step count,
// u64 parameter count, then per parameter: string name, u32 rank, i64 dims[rank], i64 step,
// u32 buffer count and per buffer u8 defined (+ numel values when defined); last, a u64 FNV-1a
// checksum of every byte before it. Strings are a u32 length and the bytes.
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <ostream>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/backend/concept.hpp"
#include "mote/backend/cpu/cpu.hpp"
#include "mote/core/dtype.hpp"
#include "mote/core/error.hpp"
#include "mote/core/shape.hpp"
#include "mote/core/tensor.hpp"
#include "mote/io/atomic_file.hpp"

namespace mote::optim {

template <Real T, Backend B = cpu>
struct ParamGroup {
  std::string name;  // unique within an optimizer; names the group's state in checkpoints
  std::vector<Var<T, B>> params;
  T lr_scale = T(1);  // this group's lr = optimizer lr * lr_scale, so schedules move every group
  std::optional<T> weight_decay =
      std::nullopt;  // replaces the optimizer's weight decay for this group (0 turns it off)
};

template <Real T, Backend B = cpu>
struct NamedParam {
  std::string name;  // "<group name>.<index>"
  Var<T, B> param;
};

// A host copy of one parameter's optimizer state.
template <Real T>
struct ParamStateRecord {
  std::string name;
  Shape shape;
  std::int64_t step = 0;                               // updates this parameter has received
  std::vector<std::optional<std::vector<T>>> buffers;  // moments; empty optional: not created yet
};

// A host copy of a whole optimizer's state: what save_state writes and load_state reads.
template <Real T>
struct OptimizerState {
  std::string kind;  // "sgd", "adamw"
  std::int64_t step_count = 0;
  std::vector<ParamStateRecord<T>> params;
};

namespace detail {

inline constexpr char state_magic[8] = {'M', 'O', 'T', 'E', 'O', 'P', 'T', 'S'};
inline constexpr std::uint32_t state_version = 1;
inline constexpr std::uint64_t fnv_offset = 0xcbf29ce484222325ULL;
inline constexpr std::uint64_t fnv_prime = 0x100000001b3ULL;

inline std::uint64_t fnv1a(std::uint64_t hash, const char* bytes, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    hash ^= static_cast<unsigned char>(bytes[i]);
    hash *= fnv_prime;
  }
  return hash;
}

template <class T>
using same_size_uint =
    std::conditional_t<sizeof(T) == 8, std::uint64_t, std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint8_t>>;

// Streams the state file while hashing it, so the checksum costs no second pass.
class StateWriter {
 public:
  explicit StateWriter(std::ostream& out) : out_(out) {}
  void bytes(const char* p, std::size_t n) {
    out_.write(p, static_cast<std::streamsize>(n));
    hash_ = fnv1a(hash_, p, n);
  }
  void uint(std::uint64_t v, int width) {
    char b[8];
    for (int i = 0; i < width; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    bytes(b, static_cast<std::size_t>(width));
  }
  void u8(std::uint8_t v) { uint(v, 1); }
  void u32(std::uint32_t v) { uint(v, 4); }
  void u64(std::uint64_t v) { uint(v, 8); }
  void i64(std::int64_t v) { uint(static_cast<std::uint64_t>(v), 8); }
  void str(const std::string& s) {
    u32(static_cast<std::uint32_t>(s.size()));
    bytes(s.data(), s.size());
  }
  template <class T>
  void values(const std::vector<T>& v) {
    if constexpr (std::endian::native == std::endian::little) {
      bytes(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
    } else {
      for (T x : v) uint(std::bit_cast<same_size_uint<T>>(x), static_cast<int>(sizeof(T)));
    }
  }
  // The checksum goes last and is not part of what it covers.
  void finish() { uint(hash_, 8); }

 private:
  std::ostream& out_;
  std::uint64_t hash_ = fnv_offset;
};

// Parses a state file held in memory; every read is bounds-checked against the payload.
class StateReader {
 public:
  StateReader(const std::string& data, std::size_t end, std::string source)
      : data_(data), end_(end), source_(std::move(source)) {}
  std::size_t position() const noexcept { return pos_; }
  std::size_t remaining() const noexcept { return end_ - pos_; }
  const char* take(std::size_t n, const char* what) {
    if (n > remaining())
      throw io_error("mote: " + source_ + " is truncated or malformed: " + what + " needs " + std::to_string(n) +
                     " bytes at offset " + std::to_string(pos_) + ", " + std::to_string(remaining()) + " remain");
    const char* p = data_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::uint64_t uint(int width, const char* what) {
    const char* p = take(static_cast<std::size_t>(width), what);
    std::uint64_t v = 0;
    for (int i = 0; i < width; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
    return v;
  }
  std::uint8_t u8(const char* what) { return static_cast<std::uint8_t>(uint(1, what)); }
  std::uint32_t u32(const char* what) { return static_cast<std::uint32_t>(uint(4, what)); }
  std::uint64_t u64(const char* what) { return uint(8, what); }
  std::int64_t i64(const char* what) { return static_cast<std::int64_t>(uint(8, what)); }
  std::string str(const char* what) {
    const std::uint32_t n = u32(what);
    const char* p = take(n, what);
    return std::string(p, n);
  }
  template <class T>
  std::vector<T> values(std::int64_t count, const char* what) {
    // Checked before allocating, so a corrupt count cannot ask for absurd memory.
    if (static_cast<std::uint64_t>(count) > remaining() / sizeof(T))
      throw io_error("mote: " + source_ + " is truncated or malformed: " + what + " of " + std::to_string(count) +
                     " values does not fit in the " + std::to_string(remaining()) + " bytes that remain");
    const char* p = take(static_cast<std::size_t>(count) * sizeof(T), what);
    std::vector<T> v(static_cast<std::size_t>(count));
    if constexpr (std::endian::native == std::endian::little) {
      if (count) std::memcpy(v.data(), p, v.size() * sizeof(T));
    } else {
      for (std::size_t k = 0; k < v.size(); ++k) {
        same_size_uint<T> bits = 0;
        for (std::size_t i = 0; i < sizeof(T); ++i)
          bits |= static_cast<same_size_uint<T>>(static_cast<unsigned char>(p[k * sizeof(T) + i])) << (8 * i);
        v[k] = std::bit_cast<T>(bits);
      }
    }
    return v;
  }
  [[noreturn]] void fail(const std::string& why) const { throw io_error("mote: " + source_ + ": " + why); }

 private:
  const std::string& data_;
  std::size_t end_;
  std::size_t pos_ = 0;
  std::string source_;
};

inline std::string file_source(const std::filesystem::path& path) {
  return "optimizer state file '" + path.string() + "'";
}

// Written atomically (io::atomic_write_with), so a crash mid-save leaves the previous state file whole.
template <Real T>
void write_state_file(const std::filesystem::path& path, const OptimizerState<T>& state) {
  io::atomic_write_with(path, file_source(path), [&](std::ostream& out) {
    StateWriter w(out);
    w.bytes(state_magic, sizeof state_magic);
    w.u32(state_version);
    w.str(dtype_name<T>());
    w.str(state.kind);
    w.i64(state.step_count);
    w.u64(state.params.size());
    for (const auto& p : state.params) {
      w.str(p.name);
      w.u32(static_cast<std::uint32_t>(p.shape.rank()));
      for (std::int64_t d : p.shape) w.i64(d);
      w.i64(p.step);
      w.u32(static_cast<std::uint32_t>(p.buffers.size()));
      for (const auto& buffer : p.buffers) {
        w.u8(buffer ? 1 : 0);
        if (buffer) w.values(*buffer);
      }
    }
    w.finish();
  });
}

template <Real T>
OptimizerState<T> read_state_file(const std::filesystem::path& path) {
  const std::string source = file_source(path);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw io_error("mote: cannot open " + source);
  const std::streamoff size = in.tellg();
  if (size < 0) throw io_error("mote: cannot read " + source);
  std::string data(static_cast<std::size_t>(size), '\0');
  in.seekg(0);
  if (size > 0 && !in.read(data.data(), size)) throw io_error("mote: cannot read " + source);

  constexpr std::size_t header = sizeof state_magic + 4;
  if (data.size() < header + 8)
    throw io_error("mote: " + source + " is truncated: " + std::to_string(data.size()) +
                   " bytes is too short to hold a header");
  if (std::memcmp(data.data(), state_magic, sizeof state_magic) != 0)
    throw io_error("mote: " + source + " is not a mote optimizer state file (bad magic)");
  const std::size_t payload_end = data.size() - 8;
  StateReader r(data, payload_end, source);
  r.take(sizeof state_magic, "the magic");
  const std::uint32_t version = r.u32("the version");
  if (version != state_version)
    r.fail("format version " + std::to_string(version) + " is not supported (expected " +
           std::to_string(state_version) + ")");
  std::uint64_t stored = 0;
  for (int i = 0; i < 8; ++i)
    stored |= static_cast<std::uint64_t>(static_cast<unsigned char>(data[payload_end + static_cast<std::size_t>(i)]))
              << (8 * i);
  if (stored != fnv1a(fnv_offset, data.data(), payload_end))
    r.fail("checksum mismatch: the file is corrupt or truncated");

  const std::string dtype = r.str("the dtype");
  if (dtype != dtype_name<T>())
    r.fail("holds " + dtype + " state, but this optimizer's parameters are " + dtype_name<T>());
  OptimizerState<T> state;
  state.kind = r.str("the optimizer kind");
  state.step_count = r.i64("the step count");
  const std::uint64_t count = r.u64("the parameter count");
  for (std::uint64_t i = 0; i < count; ++i) {
    ParamStateRecord<T> p;
    p.name = r.str("a parameter name");
    const std::uint32_t rank = r.u32("a rank");
    if (rank > static_cast<std::uint32_t>(max_rank))
      r.fail("parameter '" + p.name + "' has rank " + std::to_string(rank) + " (at most " + std::to_string(max_rank) +
             ")");
    std::int64_t numel = 1;
    for (std::uint32_t d = 0; d < rank; ++d) {
      const std::int64_t dim = r.i64("a dimension");
      // Bounded so that numel cannot overflow; real parameters are far smaller.
      constexpr std::int64_t max_dim = std::int64_t{1} << 40;
      if (dim < 0 || dim > max_dim || (dim != 0 && numel > max_dim / dim))
        r.fail("parameter '" + p.name + "' has an invalid dimension " + std::to_string(dim));
      numel *= dim;
      p.shape.push_back(dim);
    }
    p.step = r.i64("a parameter step");
    if (p.step < 0) r.fail("parameter '" + p.name + "' has a negative step count");
    const std::uint32_t buffers = r.u32("a buffer count");
    for (std::uint32_t b = 0; b < buffers; ++b) {
      const std::uint8_t defined = r.u8("a buffer flag");
      if (defined > 1) r.fail("parameter '" + p.name + "' has a malformed buffer flag");
      if (defined)
        p.buffers.emplace_back(r.template values<T>(numel, "a moment buffer"));
      else
        p.buffers.emplace_back(std::nullopt);
    }
    state.params.push_back(std::move(p));
  }
  if (r.remaining() != 0) r.fail(std::to_string(r.remaining()) + " unexpected bytes after the last parameter");
  return state;
}

}  // namespace detail

// What SGD and AdamW share: the groups, per-parameter state, zero_grad and checkpointing.
template <Real T, Backend B = cpu>
class Optimizer {
 public:
  Optimizer(const Optimizer&) = delete;  // copies would alias the moment buffers
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) noexcept = default;
  Optimizer& operator=(Optimizer&&) noexcept = default;

  const std::vector<ParamGroup<T, B>>& groups() const noexcept { return groups_; }
  // Every parameter with its checkpoint name, in group order.
  std::vector<NamedParam<T, B>> named_parameters() const {
    std::vector<NamedParam<T, B>> out;
    out.reserve(slots_.size());
    for (const auto& s : slots_) out.push_back({s.name, s.param});
    return out;
  }
  // Calls of step() so far (a parameter skipped for lack of a gradient still counts them).
  std::int64_t step_count() const noexcept { return step_count_; }

  T lr() const noexcept { return lr_; }
  // The base learning rate, for schedules; every group follows it times its lr_scale.
  void set_lr(T lr) {
    check_hyper(lr, "lr");
    lr_ = lr;
  }
  T group_lr(std::size_t group) const { return lr_ * checked_group(group).lr_scale; }
  T group_weight_decay(std::size_t group) const { return checked_group(group).weight_decay.value_or(weight_decay_); }

  // Drops every parameter's gradient; the next backward starts them from zero.
  void zero_grad() {
    for (auto& s : slots_) s.param.zero_grad();
  }

  OptimizerState<T> state() const {
    OptimizerState<T> out;
    out.kind = kind_;
    out.step_count = step_count_;
    for (const auto& s : slots_) {
      ParamStateRecord<T> p;
      p.name = s.name;
      p.shape = s.param.shape();
      p.step = s.step;
      for (std::size_t b = 0; b < buffer_count_; ++b) {
        if (s.buffers[b].defined())
          p.buffers.emplace_back(s.buffers[b].to_vector());
        else
          p.buffers.emplace_back(std::nullopt);
      }
      out.params.push_back(std::move(p));
    }
    return out;
  }
  void load_state(const OptimizerState<T>& state) { apply_state(state, "the in-memory optimizer state"); }

  // Writes the state to `path` atomically (a temporary file in the same directory, then a rename).
  void save_state(const std::filesystem::path& path) const { detail::write_state_file(path, state()); }
  void load_state(const std::filesystem::path& path) {
    apply_state(detail::read_state_file<T>(path), detail::file_source(path));
  }

 protected:
  struct Slot {
    Var<T, B> param;
    std::string name;
    std::size_t group = 0;
    std::int64_t step = 0;
    std::array<Tensor<T, B>, 2> buffers;  // SGD: momentum; AdamW: first and second moments
  };

  Optimizer(const char* kind, std::size_t buffer_count, std::vector<ParamGroup<T, B>> groups, T lr, T weight_decay)
      : kind_(kind), buffer_count_(buffer_count), groups_(std::move(groups)), lr_(lr), weight_decay_(weight_decay) {
    check_hyper(lr, "lr");
    check_hyper(weight_decay, "weight_decay");
    if (groups_.empty()) throw value_error(std::string("mote: ") + kind_ + ": no parameter groups were given");
    std::set<std::string> names;
    std::set<const void*> seen;
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      const auto& group = groups_[g];
      const std::string where = std::string("mote: ") + kind_ + ": parameter group '" + group.name + "'";
      if (group.name.empty())
        throw value_error(std::string("mote: ") + kind_ + ": parameter group " + std::to_string(g) +
                          " has an empty name");
      if (!names.insert(group.name).second) throw value_error(where + " appears twice; group names must be unique");
      if (!std::isfinite(group.lr_scale) || group.lr_scale < 0)
        throw value_error(where + ": lr_scale must be finite and >= 0, got " + std::to_string(group.lr_scale));
      if (group.weight_decay) check_hyper(*group.weight_decay, (group.name + ".weight_decay").c_str());
      for (std::size_t i = 0; i < group.params.size(); ++i) {
        const auto& p = group.params[i];
        const std::string pname = group.name + "." + std::to_string(i);
        if (!p.defined() || !p.value().defined())
          throw value_error(where + ": parameter '" + pname + "' is an empty Var");
        if (!p.is_leaf())
          throw value_error(where + ": parameter '" + pname + "' is the output of '" + p.op() + "', not a leaf");
        if (!seen.insert(p.node()).second)
          throw value_error(where + ": parameter '" + pname + "' already belongs to this optimizer");
        slots_.push_back(Slot{p, pname, g, 0, {}});
      }
    }
  }
  ~Optimizer() = default;

  // The slot's gradient, packed and checked, or an undefined tensor when it has none (skip it).
  Tensor<T, B> gradient_of(Slot& s) const {
    const Tensor<T, B>& grad = s.param.grad();
    if (!grad.defined()) return grad;
    if (!(grad.shape() == s.param.shape()))
      throw shape_error(std::string("mote: ") + kind_ + ".step: the gradient of '" + s.name + "' has shape " +
                        grad.shape().str() + ", the parameter " + s.param.shape().str());
    const Tensor<T, B>& value = s.param.value();
    if (!value.defined())
      throw value_error(std::string("mote: ") + kind_ + ".step: the value of '" + s.name + "' is undefined");
    if (!value.is_contiguous())
      throw shape_error(std::string("mote: ") + kind_ + ".step: the value of '" + s.name +
                        "' is a non-contiguous view; assign it a packed tensor");
    // A value reassigned with another shape would make the moment buffers overrun.
    for (const auto& buffer : s.buffers)
      if (buffer.defined() && !(buffer.shape() == value.shape()))
        throw shape_error(std::string("mote: ") + kind_ + ".step: '" + s.name + "' now has shape " +
                          value.shape().str() + " but its optimizer state has " + buffer.shape().str());
    return grad.contiguous();
  }
  void check_hyper(T v, const char* what) const {
    if (!std::isfinite(v) || v < 0)
      throw value_error(std::string("mote: ") + kind_ + ": " + what + " must be finite and >= 0, got " +
                        std::to_string(v));
  }

  const char* kind_;
  std::size_t buffer_count_;
  std::vector<ParamGroup<T, B>> groups_;
  std::vector<Slot> slots_;
  T lr_;
  T weight_decay_;
  std::int64_t step_count_ = 0;

 private:
  const ParamGroup<T, B>& checked_group(std::size_t group) const {
    if (group >= groups_.size())
      throw value_error(std::string("mote: ") + kind_ + ": group index " + std::to_string(group) +
                        " is out of range (" + std::to_string(groups_.size()) + " groups)");
    return groups_[group];
  }

  // Validates everything first and only then assigns, so a failed load leaves the optimizer untouched.
  void apply_state(const OptimizerState<T>& state, const std::string& source) {
    const std::string where = "mote: " + source;
    if (state.kind != kind_)
      throw io_error(where + " holds '" + state.kind + "' state, but this optimizer is '" + kind_ + "'");
    if (state.step_count < 0) throw value_error(where + ": negative step count");
    if (state.params.size() != slots_.size())
      throw io_error(where + " has " + std::to_string(state.params.size()) + " parameters, this optimizer has " +
                     std::to_string(slots_.size()));
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const auto& p = state.params[i];
      const auto& s = slots_[i];
      if (p.name != s.name)
        throw io_error(where + ": parameter " + std::to_string(i) + " is named '" + p.name +
                       "', this optimizer's is '" + s.name + "'");
      if (!(p.shape == s.param.shape()))
        throw shape_error(where + ": parameter '" + p.name + "' has shape " + p.shape.str() +
                          ", this optimizer's has " + s.param.shape().str());
      if (p.step < 0) throw value_error(where + ": parameter '" + p.name + "' has a negative step count");
      if (p.buffers.size() != buffer_count_)
        throw io_error(where + ": parameter '" + p.name + "' has " + std::to_string(p.buffers.size()) +
                       " state buffers, " + kind_ + " keeps " + std::to_string(buffer_count_));
      for (const auto& b : p.buffers)
        if (b && static_cast<std::int64_t>(b->size()) != p.shape.numel())
          throw shape_error(where + ": a state buffer of '" + p.name + "' holds " + std::to_string(b->size()) +
                            " values, its shape " + p.shape.str() + " needs " + std::to_string(p.shape.numel()));
    }
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const auto& p = state.params[i];
      auto& s = slots_[i];
      s.step = p.step;
      for (std::size_t b = 0; b < buffer_count_; ++b)
        s.buffers[b] =
            p.buffers[b] ? Tensor<T, cpu>::from_vector(p.shape, *p.buffers[b]).template to<B>() : Tensor<T, B>();
    }
    step_count_ = state.step_count;
  }
};

}  // namespace mote::optim
