#pragma once
// The parts of BPE that need no file format: GPT-2's byte <-> printable-character table, UTF-8
// decoding, GPT-2's pre-tokenization scanner, and the rank-ordered merge loop with its cache, over
// byte symbols (GPT-2) or character symbols with byte fallback (SentencePiece).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mote/io/utf8.hpp"
#include "mote/core/error.hpp"
#include "mote/io/tokenizer_unicode.hpp"

namespace mote::io::bpe {

using token_id = std::int32_t;

using io::next_utf8;

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order, so every byte has a visible, non-space character.
inline const std::array<std::uint32_t, 256>& byte_to_codepoint() {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    std::uint32_t next = 256;
    for (std::uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? b : next++;
    }
    return t;
  }();
  return table;
}

// The same table as UTF-8 strings, the form vocabulary files use.
inline const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    for (std::size_t b = 0; b < 256; ++b) append_utf8(t[b], byte_to_codepoint()[b]);
    return t;
  }();
  return table;
}

// Inverse table: code point -> byte, -1 for characters outside the table (all lie below U+0144).
inline int unicode_to_byte(std::uint32_t cp) {
  static const std::array<std::int16_t, 0x144> table = [] {
    std::array<std::int16_t, 0x144> t;
    t.fill(-1);
    for (std::size_t b = 0; b < 256; ++b) t[byte_to_codepoint()[b]] = static_cast<std::int16_t>(b);
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

// Vocabulary form of raw bytes: each byte replaced by its table character.
inline std::string bytes_to_symbols(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) out += byte_to_unicode()[static_cast<unsigned char>(c)];
  return out;
}

// Raw bytes of a vocabulary token; characters outside the byte table are kept as their UTF-8.
inline std::string symbols_to_bytes(std::string_view token) {
  std::string out;
  std::size_t pos = 0;
  while (pos < token.size()) {
    std::uint32_t cp = 0;
    const std::size_t len = next_utf8(token, pos, cp);
    if (len == 0) {
      out += token[pos++];  // not UTF-8: pass the byte through unchanged
      continue;
    }
    const int b = unicode_to_byte(cp);
    if (b >= 0)
      out += static_cast<char>(b);
    else
      out.append(token.substr(pos, len));
    pos += len;
  }
  return out;
}

// GPT-2's pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// as a scanner: leftmost match, alternatives in order, with the classes the reference regex uses.
// Returns the pieces as views into `text`; malformed UTF-8 is a value_error naming its byte offset
// (plus `base`, the offset of `text` in the caller's string).
inline std::vector<std::string_view> pretokenize_gpt2(std::string_view text, std::size_t base = 0) {
  enum Cls : std::uint8_t { letter, number, space, other };
  std::vector<std::uint32_t> cps;
  std::vector<std::size_t> at;  // byte offset of each code point, plus the end
  std::vector<Cls> cls;
  cps.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    std::uint32_t cp = 0;
    const std::size_t len = next_utf8(text, pos, cp);
    if (len == 0)
      throw value_error("mote: tokenizer: text is not valid UTF-8 at byte " + std::to_string(base + pos) + " (byte 0x" +
                        std::string(1, "0123456789abcdef"[static_cast<unsigned char>(text[pos]) >> 4]) +
                        std::string(1, "0123456789abcdef"[static_cast<unsigned char>(text[pos]) & 15]) + ")");
    cps.push_back(cp);
    at.push_back(pos);
    cls.push_back(unicode::is_letter(cp) ? letter : unicode::is_number(cp) ? number : unicode::is_space(cp) ? space : other);
    pos += len;
  }
  const std::size_t n = cps.size();
  at.push_back(text.size());

  std::vector<std::string_view> pieces;
  std::size_t i = 0;
  const auto emit = [&](std::size_t end) {
    pieces.push_back(text.substr(at[i], at[end] - at[i]));
    i = end;
  };
  const auto run_end = [&](std::size_t from, Cls c) {
    while (from < n && cls[from] == c) ++from;
    return from;
  };
  while (i < n) {
    // Contractions: ASCII apostrophe and lower-case suffixes only, as in the pattern.
    if (cps[i] == '\'' && i + 1 < n) {
      const std::uint32_t a = cps[i + 1];
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        emit(i + 2);
        continue;
      }
      if (i + 2 < n) {
        const std::uint32_t b = cps[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
          emit(i + 3);
          continue;
        }
      }
    }
    // ` ?X+` for the three non-space classes: an optional single space, then a run of one class.
    if (cps[i] == ' ' && i + 1 < n && cls[i + 1] != space) {
      emit(run_end(i + 1, cls[i + 1]));
      continue;
    }
    if (cls[i] != space) {
      emit(run_end(i, cls[i]));
      continue;
    }
    // \s+(?!\S) leaves the last space of a run to the word after it; \s+ takes a lone one.
    const std::size_t end = run_end(i, space);
    if (end == n || end - i == 1)
      emit(end);
    else
      emit(end - 1);
  }
  return pieces;
}

// How a model turns text into its first symbols, before any merge.
enum class Symbols {
  bytes,       // GPT-2: every byte is a symbol, spelled with the byte_to_unicode table
  characters,  // SentencePiece: every character is a symbol; unknown ones fall back to <0xNN> tokens
};

// Vocabulary form of a SentencePiece byte-fallback token, "<0x0A>" for byte 10.
inline std::string byte_fallback_token(unsigned char b) {
  const char* hex = "0123456789ABCDEF";
  return std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
}

// How a Model builds and reads its symbols.
struct ModelOptions {
  Symbols symbols = Symbols::bytes;
  bool byte_fallback = false;  // characters: unknown characters become their UTF-8 bytes' <0xNN> tokens
  std::string unk_token;       // characters without byte fallback: the token for unknown characters
  bool fuse_unk = false;       // a run of unknown characters becomes one unk token
};

// The merge table and vocabulary of a BPE model, with a cache of encoded pieces.
class Model {
 public:
  struct Merge {
    std::string first, second;
  };
  using Options = ModelOptions;

  Model() { byte_ids_.fill(-1); }

  // `vocab` maps tokens (vocabulary form) to ids; `merges` are in rank order. `where(k)` names
  // merge k in error messages (a file line or a JSON path), `source` names the vocabulary.
  Model(const std::vector<std::pair<std::string, token_id>>& vocab, const std::vector<Merge>& merges,
        const std::string& source, const std::function<std::string(std::size_t)>& where, const Options& options = {})
      : options_(options) {
    byte_ids_.fill(-1);
    token_id max_id = -1;
    for (const auto& [tok, id] : vocab) {
      if (id < 0) throw io_error("mote: " + source + ": token '" + tok + "' has negative id " + std::to_string(id));
      max_id = std::max(max_id, id);
    }
    tokens_.assign(static_cast<std::size_t>(max_id + 1), std::string());
    present_.assign(tokens_.size(), false);
    ids_.reserve(vocab.size());
    for (const auto& [tok, id] : vocab) {
      const auto k = static_cast<std::size_t>(id);
      if (present_[k])
        throw io_error("mote: " + source + ": id " + std::to_string(id) + " is given to both '" + tokens_[k] + "' and '" +
                       tok + "'");
      if (!ids_.emplace(tok, id).second) throw io_error("mote: " + source + ": token '" + tok + "' appears twice");
      tokens_[k] = tok;
      present_[k] = true;
    }
    const bool bytes = options_.symbols == Symbols::bytes;
    for (std::size_t b = 0; b < 256; ++b) {
      const auto name = bytes ? byte_to_unicode()[b] : byte_fallback_token(static_cast<unsigned char>(b));
      if (const auto it = ids_.find(name); it != ids_.end()) {
        byte_ids_[b] = it->second;
        if (!bytes) byte_of_id_.emplace(it->second, static_cast<unsigned char>(b));
      }
    }
    if (!bytes && options_.byte_fallback && byte_of_id_.size() != 256)
      throw io_error("mote: " + source + ": byte_fallback needs all 256 tokens <0x00>..<0xFF>, found " +
                     std::to_string(byte_of_id_.size()));
    if (!options_.unk_token.empty()) {
      const auto it = ids_.find(options_.unk_token);
      if (it == ids_.end()) throw io_error("mote: " + source + ": unk_token '" + options_.unk_token + "' is not in the vocabulary");
      unk_id_ = it->second;
    }
    merges_.reserve(merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const auto& m = merges[r];
      const auto a = ids_.find(m.first), b = ids_.find(m.second), ab = ids_.find(m.first + m.second);
      if (a == ids_.end() || b == ids_.end() || ab == ids_.end()) {
        const std::string& missing = a == ids_.end() ? m.first : b == ids_.end() ? m.second : m.first + m.second;
        throw io_error("mote: " + where(r) + ": merge '" + m.first + " " + m.second + "' uses '" + missing +
                       "', which is not in the vocabulary");
      }
      // The first listing of a pair sets its rank, as a rank dictionary built in order would.
      merges_.emplace(key(a->second, b->second), Rank{static_cast<std::int32_t>(r), ab->second});
    }
  }

  Model(const Model& o) { copy_from(o); }
  Model& operator=(const Model& o) {
    if (this != &o) copy_from(o);
    return *this;
  }
  Model(Model&& o) noexcept { move_from(o); }
  Model& operator=(Model&& o) noexcept {
    if (this != &o) move_from(o);
    return *this;
  }

  const Options& options() const noexcept { return options_; }
  // One past the largest id in the vocabulary.
  std::size_t id_limit() const noexcept { return tokens_.size(); }
  bool has_id(token_id id) const noexcept {
    return id >= 0 && static_cast<std::size_t>(id) < tokens_.size() && present_[static_cast<std::size_t>(id)];
  }
  const std::string& token(token_id id) const { return tokens_.at(static_cast<std::size_t>(id)); }
  const token_id* find(std::string_view token) const {
    const auto it = ids_.find(std::string(token));
    return it == ids_.end() ? nullptr : &it->second;
  }
  std::size_t merge_count() const noexcept { return merges_.size(); }

  // The raw bytes an id stands for (the id must exist): byte-level tokens through the byte table,
  // SentencePiece tokens with "▁" read as a space and <0xNN> as its byte.
  std::string token_bytes(token_id id) const {
    const std::string& tok = token(id);
    if (options_.symbols == Symbols::bytes) return symbols_to_bytes(tok);
    if (const auto it = byte_of_id_.find(id); it != byte_of_id_.end()) return std::string(1, static_cast<char>(it->second));
    std::string out;
    for (std::size_t pos = 0; pos < tok.size();) {
      if (tok.compare(pos, 3, "\xE2\x96\x81") == 0) {
        out += ' ';
        pos += 3;
      } else {
        out += tok[pos++];
      }
    }
    return out;
  }

  // Appends the ids of one piece (raw bytes for byte-level models, normalized text for
  // SentencePiece ones); `offset` (the piece's byte offset in the caller's text) serves messages.
  void encode_piece(std::string_view piece, std::size_t offset, std::vector<token_id>& out) const {
    const bool cacheable = piece.size() <= max_cached_piece;
    if (cacheable) {
      const std::lock_guard lock(cache_mutex_);
      if (const auto it = cache_.find(std::string(piece)); it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<token_id> word;
    word.reserve(piece.size());
    if (options_.symbols == Symbols::bytes) {
      byte_symbols(piece, offset, word);
      merge_word(word);
    } else {
      character_symbols(piece, offset, word);
      merge_word_queued(word);
    }
    out.insert(out.end(), word.begin(), word.end());
    if (!cacheable) return;
    const std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= max_cache_entries) cache_.clear();  // bounded memory on long varied streams
    cache_.emplace(std::string(piece), std::move(word));
  }

 private:
  struct Rank {
    std::int32_t rank;
    token_id merged;
  };
  static constexpr std::size_t max_cache_entries = 1 << 16;
  static constexpr std::size_t max_cached_piece = 256;
  static std::uint64_t key(token_id a, token_id b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  void copy_from(const Model& o) {
    options_ = o.options_, tokens_ = o.tokens_, present_ = o.present_, ids_ = o.ids_, merges_ = o.merges_;
    byte_ids_ = o.byte_ids_, byte_of_id_ = o.byte_of_id_, unk_id_ = o.unk_id_;
    const std::lock_guard lock(cache_mutex_);
    cache_.clear();
  }
  void move_from(Model& o) noexcept {
    options_ = std::move(o.options_), tokens_ = std::move(o.tokens_), present_ = std::move(o.present_);
    ids_ = std::move(o.ids_), merges_ = std::move(o.merges_), byte_ids_ = o.byte_ids_;
    byte_of_id_ = std::move(o.byte_of_id_), unk_id_ = o.unk_id_;
    const std::lock_guard lock(cache_mutex_);
    cache_.clear();
  }

  void byte_symbols(std::string_view piece, std::size_t offset, std::vector<token_id>& word) const {
    for (std::size_t k = 0; k < piece.size(); ++k) {
      const token_id id = byte_ids_[static_cast<unsigned char>(piece[k])];
      if (id < 0)
        throw value_error("mote: tokenizer: byte " + std::to_string(static_cast<unsigned char>(piece[k])) +
                          " at text offset " + std::to_string(offset + k) + " has no token ('" +
                          byte_to_unicode()[static_cast<unsigned char>(piece[k])] + "') in the vocabulary");
      word.push_back(id);
    }
  }

  void character_symbols(std::string_view piece, std::size_t offset, std::vector<token_id>& word) const {
    bool last_unknown = false;
    for (std::size_t pos = 0; pos < piece.size();) {
      std::uint32_t cp = 0;
      std::size_t len = next_utf8(piece, pos, cp);
      if (len == 0) len = 1;  // callers validate UTF-8; a stray byte can still fall back
      const std::string_view ch = piece.substr(pos, len);
      if (const auto it = ids_.find(std::string(ch)); it != ids_.end()) {
        word.push_back(it->second);
      } else if (options_.byte_fallback) {
        for (const char c : ch) word.push_back(byte_ids_[static_cast<unsigned char>(c)]);
      } else if (unk_id_ >= 0) {
        if (!(options_.fuse_unk && last_unknown)) word.push_back(unk_id_);
        last_unknown = true;
        pos += len;
        continue;
      } else {
        throw value_error("mote: tokenizer: character '" + std::string(ch) + "' at normalized text offset " +
                          std::to_string(offset + pos) + " has no token, and the model has no byte fallback or unk_token");
      }
      last_unknown = false;
      pos += len;
    }
  }

  // Repeatedly merges every occurrence of the lowest-ranked adjacent pair, left to right.
  void merge_word(std::vector<token_id>& word) const {
    std::vector<token_id> next;
    while (word.size() > 1) {
      const Rank* best = nullptr;
      token_id first = 0, second = 0;
      for (std::size_t k = 0; k + 1 < word.size(); ++k) {
        const auto it = merges_.find(key(word[k], word[k + 1]));
        if (it != merges_.end() && (best == nullptr || it->second.rank < best->rank)) {
          best = &it->second;
          first = word[k], second = word[k + 1];
        }
      }
      if (best == nullptr) break;
      next.clear();
      for (std::size_t k = 0; k < word.size();) {
        if (k + 1 < word.size() && word[k] == first && word[k + 1] == second) {
          next.push_back(best->merged);
          k += 2;
        } else {
          next.push_back(word[k++]);
        }
      }
      word.swap(next);
    }
  }

  // SentencePiece order, one merge at a time: lowest rank first, leftmost on a tie. A heap over a
  // linked list keeps whole-segment words (SentencePiece does not pre-split) at O(n log n).
  void merge_word_queued(std::vector<token_id>& word) const {
    const std::size_t n = word.size();
    if (n < 2) return;
    struct Candidate {
      std::int32_t rank;
      std::size_t pos;
      token_id left, right, merged;
    };
    const auto later = [](const Candidate& a, const Candidate& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> heap(later);
    std::vector<std::size_t> prev(n), next(n);  // n marks "none" in both directions
    std::vector<bool> alive(n, true);
    for (std::size_t i = 0; i < n; ++i) prev[i] = i == 0 ? n : i - 1, next[i] = i + 1;
    const auto offer = [&](std::size_t i) {
      if (i >= n || next[i] >= n) return;
      const auto it = merges_.find(key(word[i], word[next[i]]));
      if (it != merges_.end()) heap.push({it->second.rank, i, word[i], word[next[i]], it->second.merged});
    };
    for (std::size_t i = 0; i + 1 < n; ++i) offer(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      // Stale entries: a merge since has changed the left symbol or its right neighbour.
      if (!alive[c.pos] || word[c.pos] != c.left || next[c.pos] >= n || word[next[c.pos]] != c.right) continue;
      const std::size_t gone = next[c.pos];
      word[c.pos] = c.merged;
      alive[gone] = false;
      next[c.pos] = next[gone];
      if (next[gone] < n) prev[next[gone]] = c.pos;
      offer(prev[c.pos]);
      offer(c.pos);
    }
    std::size_t out = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (alive[i]) word[out++] = word[i];
    word.resize(out);
  }

  Options options_;
  std::vector<std::string> tokens_;  // by id; empty where an id is unused
  std::vector<bool> present_;
  std::unordered_map<std::string, token_id> ids_;
  std::unordered_map<std::uint64_t, Rank> merges_;
  std::array<token_id, 256> byte_ids_{};                // symbol of each byte: byte-level or <0xNN> token
  std::unordered_map<token_id, unsigned char> byte_of_id_;  // <0xNN> tokens back to their byte
  token_id unk_id_ = -1;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<token_id>> cache_;
};

}  // namespace mote::io::bpe
