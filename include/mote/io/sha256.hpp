#pragma once
// SHA-256 (FIPS 180-4), for checking shipped files against their recorded digests.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "mote/core/error.hpp"

namespace mote::io {

class Sha256 {
 public:
  Sha256() { reset(); }

  void reset() {
    state_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    buffered_ = 0;
    length_ = 0;
  }

  void update(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const std::uint8_t*>(data);
    length_ += size;
    while (size > 0) {
      const std::size_t take = std::min(size, block_.size() - buffered_);
      std::copy(bytes, bytes + take, block_.begin() + static_cast<std::ptrdiff_t>(buffered_));
      buffered_ += take;
      bytes += take;
      size -= take;
      if (buffered_ == block_.size()) {
        compress();
        buffered_ = 0;
      }
    }
  }
  void update(std::string_view text) { update(text.data(), text.size()); }

  // The digest as 64 lower-case hex digits; the hasher starts over afterwards.
  std::string hex_digest() {
    const std::uint64_t bits = length_ * 8;
    const std::uint8_t one = 0x80, zero = 0;
    update(&one, 1);
    while (buffered_ != 56) update(&zero, 1);
    std::uint8_t tail[8];
    for (int i = 0; i < 8; ++i) tail[i] = static_cast<std::uint8_t>(bits >> (56 - 8 * i));
    update(tail, 8);
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (std::uint32_t word : state_)
      for (int shift = 28; shift >= 0; shift -= 4) out += digits[(word >> shift) & 0xf];
    reset();
    return out;
  }

 private:
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void compress() {
    static constexpr std::array<std::uint32_t, 64> k = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
        0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
        0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
        0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
        0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
        0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::array<std::uint32_t, 64> w{};
    for (int i = 0; i < 16; ++i)
      w[i] = (std::uint32_t{block_[4 * i]} << 24) | (std::uint32_t{block_[4 * i + 1]} << 16) |
             (std::uint32_t{block_[4 * i + 2]} << 8) | std::uint32_t{block_[4 * i + 3]};
    for (int i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, h] = state_;
    for (int i = 0; i < 64; ++i) {
      const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    const std::array<std::uint32_t, 8> add = {a, b, c, d, e, f, g, h};
    for (int i = 0; i < 8; ++i) state_[i] += add[i];
  }

  std::array<std::uint32_t, 8> state_{};
  std::array<std::uint8_t, 64> block_{};
  std::size_t buffered_ = 0;
  std::uint64_t length_ = 0;
};

inline std::string sha256_hex(std::string_view text) {
  Sha256 h;
  h.update(text);
  return h.hex_digest();
}

// The digest of a file's bytes; an io_error names a file that cannot be read.
inline std::string sha256_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error("mote: sha256: cannot open '" + path.string() + "'");
  Sha256 h;
  std::vector<char> chunk(1 << 16);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    h.update(chunk.data(), static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad()) throw io_error("mote: sha256: reading '" + path.string() + "' failed");
  return h.hex_digest();
}

// Checks every file a SHA256SUMS listing names ("<64 hex digits>  <file>" lines, as sha256sum writes
// them) against its digest, relative to the listing's folder; returns how many it checked. A missing
// listing, a malformed line, a missing file and a digest mismatch are io_errors naming the file.
inline std::size_t check_sha256sums(const std::filesystem::path& listing) {
  std::ifstream in(listing);
  if (!in) throw io_error("mote: '" + listing.string() + "' cannot be opened; expected a SHA256SUMS listing of the shipped files");
  const std::filesystem::path dir = listing.parent_path();
  std::string line;
  std::size_t checked = 0, number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    const bool hex = line.size() > 66 && line.find_first_not_of("0123456789abcdef") == 64 && line.compare(64, 2, "  ") == 0;
    if (!hex)
      throw io_error("mote: '" + listing.string() + "' line " + std::to_string(number) + ": expected '<64 hex digits>  <file>', got '" +
                     line + "'");
    const std::string want = line.substr(0, 64);
    const std::filesystem::path file = dir / line.substr(66);
    if (!std::filesystem::exists(file))
      throw io_error("mote: '" + file.string() + "', listed in '" + listing.string() + "', does not exist");
    const std::string got = sha256_file(file);
    if (got != want)
      throw io_error("mote: '" + file.string() + "' has SHA-256 " + got + ", but '" + listing.string() + "' records " + want +
                     "; the file is corrupted or was changed");
    ++checked;
  }
  if (checked == 0) throw io_error("mote: '" + listing.string() + "' lists no files");
  return checked;
}

}  // namespace mote::io
