#pragma once
// What a trainer checkpoint holds beside the adapters and the optimizer state: trainer_state.json with
// the position in the data, every random stream, the metrics-file length and a fingerprint of the model,
// the adapters and the data, so that a resume continues exactly or refuses with the field that differs.
//
// <output>/checkpoint-<step>/adapters/            adapters.save()
// <output>/checkpoint-<step>/optimizer.bin        optim::Optimizer::save_state()
// <output>/checkpoint-<step>/trainer_state.json   below
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "mote/core/dtype.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/core/shape.hpp"
#include "mote/io/json.hpp"
#include "mote/nn/config.hpp"

namespace mote::train {

inline constexpr const char* trainer_state_format = "mote.trainer_state";
inline constexpr std::int64_t trainer_state_version = 1;

// ------------------------------------------------------------------ random streams as JSON

namespace checkpoint_detail {

inline std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

inline std::uint64_t parse_hex64(const io::json::Value& v) {
  const std::string& s = v.as_string();
  std::uint64_t out = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out, 16);
  if (s.size() != 16 || r.ec != std::errc() || r.ptr != s.data() + s.size())
    v.fail("expected 16 hexadecimal digits, got \"" + s + "\"");
  return out;
}

}  // namespace checkpoint_detail

// [w0, w1, w2, w3, spare, spare_valid]: the words and the spare normal's bits as 16 hex digits (JSON
// numbers cannot hold a u64 exactly), then a boolean.
inline io::json::Value rng_state_to_json(const Rng::State& s) {
  using checkpoint_detail::hex64;
  std::uint64_t spare_bits = 0;
  std::memcpy(&spare_bits, &s.spare, sizeof spare_bits);
  return io::json::Value::array(
      {hex64(s.words[0]), hex64(s.words[1]), hex64(s.words[2]), hex64(s.words[3]), hex64(spare_bits), s.spare_valid});
}

inline Rng::State rng_state_from_json(const io::json::Value& v) {
  if (!v.is_array() || v.size() != 6)
    v.fail("expected a random stream state [w0, w1, w2, w3, spare, spare_valid] (six entries)");
  Rng::State s;
  for (std::size_t i = 0; i < 4; ++i) s.words[i] = checkpoint_detail::parse_hex64(v[i]);
  const std::uint64_t spare_bits = checkpoint_detail::parse_hex64(v[4]);
  std::memcpy(&s.spare, &spare_bits, sizeof spare_bits);
  s.spare_valid = v[5].as_bool();
  if (s.words[0] == 0 && s.words[1] == 0 && s.words[2] == 0 && s.words[3] == 0)
    v.fail("the four state words are all zero; expected the state of a seeded generator");
  return s;
}

// {"<name>": state, ...} in stream order.
inline io::json::Value streams_to_json(const std::vector<RngStreamState>& streams) {
  io::json::Value out = io::json::Value::object();
  for (const auto& s : streams) out.set(s.name, rng_state_to_json(s.state));
  return out;
}

inline std::vector<RngStreamState> streams_from_json(const io::json::Value& v) {
  std::vector<RngStreamState> out;
  for (const auto& [name, state] : v.as_object()) out.push_back({name, rng_state_from_json(state)});
  return out;
}

// ------------------------------------------------------------------ fingerprints

inline io::json::Value config_to_json(const nn::Config& c) {
  return io::json::Value::object({{"vocab", c.vocab},
                                  {"d_model", c.d_model},
                                  {"n_layers", c.n_layers},
                                  {"n_heads", c.n_heads},
                                  {"n_kv_heads", c.n_kv_heads},
                                  {"d_ff", c.d_ff},
                                  {"max_seq", c.max_seq},
                                  {"norm", c.norm == nn::Norm::RMSNorm ? "rms_norm" : "layer_norm"},
                                  {"eps", c.eps},
                                  {"activation", c.activation == nn::Activation::SwiGLU ? "swiglu" : "gelu_tanh_mlp"},
                                  {"positions", c.positions == nn::Positions::RoPE ? "rope" : "learned"},
                                  {"rope_theta", c.rope_theta},
                                  {"bias", c.bias},
                                  {"tied_embeddings", c.tied_embeddings}});
}

// The model: its sizes (the compiled config, or a run-time sized model's own), its dtype, and a hash of
// every base parameter's name, shape and first and last 16 values (another checkpoint of the same shape
// differs there; reading every weight would not pay).
template <class Model>
io::json::Value model_fingerprint(Model& model) {
  using T = typename Model::V::value_type;
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  const auto mix = [&](const void* p, std::size_t n) {
    const auto* bytes = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) {
      hash ^= bytes[i];
      hash *= 0x100000001b3ULL;
    }
  };
  model.for_each_parameter([&](const std::string& name, auto& param) {
    mix(name.data(), name.size());
    for (const std::int64_t d : param.shape()) mix(&d, sizeof d);
    const auto& value = param.value();
    const std::int64_t n = value.numel(), k = std::min<std::int64_t>(16, n);
    if (k == 0 || !value.is_contiguous()) return;
    const auto flat = value.reshape(Shape{n});
    for (const T x : flat.slice(0, 0, k).to_vector()) mix(&x, sizeof x);
    for (const T x : flat.slice(0, n - k, k).to_vector()) mix(&x, sizeof x);
  });
  return io::json::Value::object(
      {{"config", config_to_json(model.sizes())}, {"dtype", dtype_name<T>()}, {"base_weights", checkpoint_detail::hex64(hash)}});
}

// The adapters: every trainable tensor's name and shape, in order.
template <class Adapters>
io::json::Value adapters_fingerprint(const Adapters& adapters) {
  io::json::Value out = io::json::Value::array();
  for (const auto& [name, param] : adapters.named_parameters()) {
    std::vector<std::int64_t> dims(param.shape().begin(), param.shape().end());
    out.push_back(io::json::Value::array({name, dims}));
  }
  return out;
}

// Compares a stored value with what this run expects, depth first; the first difference is a
// value_error naming `file`, the dotted field and both values.
inline void require_same(const io::json::Value& stored, const io::json::Value& expected, const std::string& field,
                         const std::filesystem::path& file, const std::string& hint) {
  const auto shorten = [](const io::json::Value& v) {
    std::string s = io::json::dump(v);
    return s.size() > 160 ? s.substr(0, 157) + "..." : s;
  };
  const auto fail = [&](const std::string& what) {
    throw value_error("mote: train: cannot resume from '" + file.string() + "': " + what + "; " + hint);
  };
  if (expected.is_object()) {
    if (!stored.is_object()) fail(field + " is " + shorten(stored) + ", expected an object");
    for (const auto& [key, want] : expected.as_object()) {
      const io::json::Value* got = stored.find(key);
      if (!got) fail(field + "." + key + " is missing, expected " + shorten(want));
      require_same(*got, want, field + "." + key, file, hint);
    }
    return;
  }
  if (expected.is_array() && stored.is_array()) {
    if (stored.size() != expected.size())
      fail(field + " has " + std::to_string(stored.size()) + " entries, expected " + std::to_string(expected.size()));
    for (std::size_t i = 0; i < expected.size(); ++i)
      if (!(stored[i] == expected[i]))
        fail(field + "[" + std::to_string(i) + "] is " + shorten(stored[i]) + ", expected " + shorten(expected[i]));
    return;
  }
  if (!(stored == expected)) fail(field + " is " + shorten(stored) + ", expected " + shorten(expected));
}

// ------------------------------------------------------------------ checkpoint folders

struct CheckpointFolder {
  std::int64_t step = 0;
  std::filesystem::path path;
};

// The published checkpoint-<step> folders in `output_dir`, oldest first (staging folders are skipped).
inline std::vector<CheckpointFolder> list_checkpoints(const std::filesystem::path& output_dir) {
  std::vector<CheckpointFolder> out;
  std::error_code ec;
  if (!std::filesystem::is_directory(output_dir, ec)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(output_dir)) {
    const std::string name = entry.path().filename().string();
    constexpr std::string_view prefix = "checkpoint-";
    if (!entry.is_directory() || name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    std::int64_t step = 0;
    const char* first = name.data() + prefix.size();
    const char* last = name.data() + name.size();
    const auto r = std::from_chars(first, last, step);
    if (r.ec != std::errc() || r.ptr != last || step < 0) continue;
    out.push_back({step, entry.path()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

// Leftovers of saves that a crash interrupted ("checkpoint-<n>.tmp-..."), safe to delete.
inline std::vector<std::filesystem::path> stale_staging_folders(const std::filesystem::path& output_dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  if (!std::filesystem::is_directory(output_dir, ec)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(output_dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("checkpoint-", 0) == 0 && name.find(".tmp-") != std::string::npos) out.push_back(entry.path());
  }
  return out;
}

}  // namespace mote::train
