#pragma once
// Training GPT-2-style byte-level BPE: the 256 byte symbols are the base vocabulary, texts are cut by
// GPT-2's pre-tokenizer into words, and merges are learned from pair counts over the distinct words
// (each weighted by how often it occurs). The result is written as a Hugging Face tokenizer.json that
// io::Tokenizer, Hugging Face tokenizers and transformers.js all load.
//
// Which pair is merged next: the highest count; on a tie, the pair whose first symbol's bytes are
// lexicographically smallest (unsigned bytes, a prefix before its extensions), then the pair whose
// second symbol's bytes are. So training is deterministic whatever the hash tables do.
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <ranges>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/io/atomic_file.hpp"
#include "mote/io/json.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/io/tokenizer_bpe.hpp"
#include "mote/io/utf8.hpp"

namespace mote::io {

// Where the special tokens' ids go.
enum class SpecialTokenIds {
  after_merges,  // GPT-2's layout: bytes 0..255, the merges, then the special tokens in the order given
  first,         // Hugging Face trainers' layout: special tokens 0..k-1, then the bytes, then the merges
};

struct BpeTrainerOptions {
  // Tokens in the vocabulary: 256 bytes + learned merges + special tokens. Training stops earlier
  // when no pair occurs min_frequency times any more; the vocabulary is then smaller.
  std::size_t vocab_size = 32000;
  // A pair is merged only if it occurs at least this often over the corpus (at least 1).
  std::uint64_t min_frequency = 2;
  // Matched whole in text (cut out of the corpus before counting, as encode() cuts them out); written
  // to added_tokens with special = true and to the vocabulary.
  std::vector<std::string> special_tokens;
  SpecialTokenIds special_ids = SpecialTokenIds::after_merges;
};

// A trained byte-level BPE model, ready to save as tokenizer.json or to use in memory.
struct TrainedBpe {
  using token_id = bpe::token_id;
  // Every id's token in vocabulary form (bytes spelled through bpe::byte_to_unicode; special tokens as
  // written). Ids are 0..tokens.size()-1 with none unused.
  std::vector<std::string> tokens;
  std::vector<bpe::Model::Merge> merges;                       // in rank order, vocabulary form
  std::vector<std::pair<std::string, token_id>> special_tokens;  // content and id, in the order given

  // The Hugging Face tokenizer.json document: BPE model, ByteLevel pre-tokenizer and decoder, no
  // normalizer, special tokens in added_tokens (ordered by id, as Hugging Face writes them).
  json::Value to_json() const {
    using json::Value;
    json::Object vocab;
    vocab.reserve(tokens.size());
    for (std::size_t id = 0; id < tokens.size(); ++id) vocab.emplace_back(tokens[id], static_cast<std::int64_t>(id));
    // "a b" strings, not pairs: byte-level symbols hold no space, and every loader version reads them.
    Value merge_list = Value::array();
    for (const auto& m : merges) merge_list.push_back(m.first + " " + m.second);
    auto specials = special_tokens;
    std::sort(specials.begin(), specials.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    Value added = Value::array();
    for (const auto& [content, id] : specials)
      added.push_back(Value::object({{"id", id},
                                     {"content", content},
                                     {"single_word", false},
                                     {"lstrip", false},
                                     {"rstrip", false},
                                     {"normalized", false},
                                     {"special", true}}));
    const auto byte_level = [] {
      return Value::object({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}});
    };
    return Value::object({{"version", "1.0"},
                          {"truncation", nullptr},
                          {"padding", nullptr},
                          {"added_tokens", std::move(added)},
                          {"normalizer", nullptr},
                          {"pre_tokenizer", byte_level()},
                          {"post_processor", nullptr},
                          {"decoder", byte_level()},
                          {"model", Value::object({{"type", "BPE"},
                                                   {"dropout", nullptr},
                                                   {"unk_token", nullptr},
                                                   {"continuing_subword_prefix", nullptr},
                                                   {"end_of_word_suffix", nullptr},
                                                   {"fuse_unk", false},
                                                   {"byte_fallback", false},
                                                   {"ignore_merges", false},
                                                   {"vocab", Value(std::move(vocab))},
                                                   {"merges", std::move(merge_list)}})}});
  }

  // Writes tokenizer.json to `file` atomically (a reader sees the old file or the whole new one).
  void save(const std::filesystem::path& file) const {
    const std::string text = json::dump(to_json(), 2) + "\n";
    io::atomic_write(file, {text}, "tokenizer file '" + file.string() + "'");
  }

  // The same tokenizer without a file round trip.
  Tokenizer tokenizer() const {
    std::vector<std::pair<std::string, token_id>> vocab;
    vocab.reserve(tokens.size());
    for (std::size_t id = 0; id < tokens.size(); ++id) vocab.emplace_back(tokens[id], static_cast<token_id>(id));
    Tokenizer t(bpe::Model(vocab, merges, "trained BPE vocabulary",
                           [](std::size_t k) { return "trained BPE merges[" + std::to_string(k) + "]"; }));
    for (const auto& s : special_tokens) t.add_special_token(s.first);
    return t;
  }
};

// Collects word counts text by text (so a corpus need not fit in memory), then learns the merges.
class BpeTrainer {
 public:
  using token_id = bpe::token_id;

  // Checks the options up front, before any text is read; value_error names the option.
  explicit BpeTrainer(BpeTrainerOptions options) : options_(std::move(options)) {
    const auto& specials = options_.special_tokens;
    for (std::size_t j = 0; j < specials.size(); ++j) {
      const std::string here = "mote: train_bpe: special_tokens[" + std::to_string(j) + "]";
      const std::string& s = specials[j];
      if (s.empty()) throw value_error(here + ": expected a non-empty token");
      for (std::size_t pos = 0; pos < s.size();) {
        std::uint32_t cp = 0;
        const std::size_t len = next_utf8(s, pos, cp);
        if (len == 0)
          throw value_error(here + ": expected valid UTF-8 (tokenizer.json is JSON), bad byte at offset " + std::to_string(pos));
        pos += len;
      }
      for (std::size_t i = 0; i < j; ++i)
        if (specials[i] == s)
          throw value_error(here + ": '" + s + "' is listed twice (also special_tokens[" + std::to_string(i) +
                            "]); expected distinct special tokens");
      // A special token spelled like a byte symbol would need that symbol's id, and decode to other bytes.
      for (std::size_t b = 0; b < 256; ++b)
        if (bpe::byte_to_unicode()[b] == s)
          throw value_error(here + ": '" + s + "' is spelled like the vocabulary symbol of byte " + std::to_string(b) +
                            "; expected a token that is not one of the 256 byte symbols");
      special_forms_.insert(s);
    }
    const std::size_t floor = 256 + specials.size();
    if (options_.vocab_size < floor)
      throw value_error("mote: train_bpe: vocab_size: expected at least 256 byte symbols + " + std::to_string(specials.size()) +
                        " special tokens = " + std::to_string(floor) + ", got " + std::to_string(options_.vocab_size));
    if (options_.vocab_size > static_cast<std::size_t>(std::numeric_limits<token_id>::max()))
      throw value_error("mote: train_bpe: vocab_size: expected at most " + std::to_string(std::numeric_limits<token_id>::max()) +
                        " (ids are int32), got " + std::to_string(options_.vocab_size));
    if (options_.min_frequency < 1) throw value_error("mote: train_bpe: min_frequency: expected at least 1, got 0");
  }

  const BpeTrainerOptions& options() const noexcept { return options_; }

  // Counts the words of one text. Special tokens are cut out first (earliest, then longest, as
  // Tokenizer::encode matches them); text that is not UTF-8 is a value_error naming texts[index].
  void add_text(std::string_view text) {
    const std::size_t index = texts_++;
    const auto count_span = [&](std::string_view span, std::size_t base) {
      std::vector<std::string_view> pieces;
      try {
        pieces = bpe::pretokenize_gpt2(span, base);
      } catch (const value_error& e) {
        std::string what = e.what();
        if (what.starts_with("mote: ")) what.erase(0, 6);
        throw value_error("mote: train_bpe: texts[" + std::to_string(index) + "]: " + what);
      }
      for (const std::string_view piece : pieces) {
        if (const auto it = words_.find(piece); it != words_.end())
          ++it->second;
        else
          words_.emplace(std::string(piece), 1);
      }
    };
    const auto& specials = options_.special_tokens;
    std::vector<std::size_t> next(specials.size(), 0);
    std::vector<bool> fresh(specials.size(), false);
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t best = std::string_view::npos, best_len = 0;
      for (std::size_t s = 0; s < specials.size(); ++s) {
        if (!fresh[s] || (next[s] != std::string_view::npos && next[s] < pos)) {
          next[s] = text.find(specials[s], pos);
          fresh[s] = true;
        }
        if (next[s] != std::string_view::npos && (next[s] < best || (next[s] == best && specials[s].size() > best_len)))
          best = next[s], best_len = specials[s].size();
      }
      const std::size_t stop = best == std::string_view::npos ? text.size() : best;
      count_span(text.substr(pos, stop - pos), pos);
      if (best == std::string_view::npos) break;
      pos = best + best_len;
    }
  }

  // Learns the merges from the words counted so far; value_error when there are none.
  TrainedBpe train() const {
    if (words_.empty())
      throw value_error("mote: train_bpe: texts: expected at least one text with characters outside the special tokens, got " +
                        std::to_string(texts_) + " text(s) and no words");
    Learner learner(words_, options_, special_forms_);
    learner.run();
    return learner.result();
  }

 private:
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  using WordCounts = std::unordered_map<std::string, std::uint64_t, StringHash, std::equal_to<>>;

  // The merge loop over symbol ids: 0..255 are the bytes, each new symbol takes the next id.
  class Learner {
   public:
    Learner(const WordCounts& counts, const BpeTrainerOptions& options, const std::unordered_set<std::string>& special_forms)
        : options_(options),
          special_forms_(special_forms),
          min_count_(static_cast<std::int64_t>(
              std::min<std::uint64_t>(options.min_frequency, std::numeric_limits<std::int64_t>::max()))) {
      std::vector<std::pair<std::string_view, std::uint64_t>> sorted(counts.begin(), counts.end());
      std::sort(sorted.begin(), sorted.end());  // word order must not depend on hashing
      words_.reserve(sorted.size());
      for (const auto& [text, count] : sorted) {
        Word w;
        w.count = static_cast<std::int64_t>(count);
        w.symbols.reserve(text.size());
        for (const char c : text) w.symbols.push_back(static_cast<unsigned char>(c));
        words_.push_back(std::move(w));
      }
      for (int b = 0; b < 256; ++b) {
        symbols_.emplace_back(1, static_cast<char>(b));
        symbol_ids_.emplace(symbols_.back(), b);
      }
      for (std::size_t wi = 0; wi < words_.size(); ++wi) {
        const Word& w = words_[wi];
        for (std::size_t i = 0; i + 1 < w.symbols.size(); ++i) add(key(w.symbols[i], w.symbols[i + 1]), w.count, wi);
      }
      grown_.clear();
      for (const auto& [k, n] : pair_counts_) push_if_frequent(k, n);
    }

    void run() {
      const std::size_t budget = options_.vocab_size - 256 - options_.special_tokens.size();
      while (learned_ < budget && !heap_.empty()) {
        std::pop_heap(heap_.begin(), heap_.end(), heap_order());
        const Entry top = heap_.back();
        heap_.pop_back();
        const auto it = pair_counts_.find(top.key);
        const std::int64_t actual = it == pair_counts_.end() ? 0 : it->second;
        // Entries go stale as counts drop; re-queue at the true count (counts only rise through new pushes).
        if (actual != top.count) {
          push_if_frequent(top.key, actual);
          continue;
        }
        if (banned_.count(top.key) != 0) continue;
        const symbol a = first_of(top.key), b = second_of(top.key);
        std::string merged = symbols_[static_cast<std::size_t>(a)] + symbols_[static_cast<std::size_t>(b)];
        if (special_forms_.count(bpe::bytes_to_symbols(merged)) != 0) {
          banned_.insert(top.key);  // never learn a token spelled like a special token: both would want one id
          continue;
        }
        symbol c;
        if (const auto found = symbol_ids_.find(merged); found != symbol_ids_.end()) {
          c = found->second;  // another pair already spelled these bytes: the merge reuses that symbol
        } else {
          c = static_cast<symbol>(symbols_.size());
          symbol_ids_.emplace(merged, c);
          symbols_.push_back(std::move(merged));
          ++learned_;
        }
        merges_.emplace_back(a, b);
        merge_everywhere(top.key, a, b, c);
      }
    }

    TrainedBpe result() const {
      TrainedBpe out;
      const auto& specials = options_.special_tokens;
      const bool first = options_.special_ids == SpecialTokenIds::first;
      const std::size_t shift = first ? specials.size() : 0;  // id of symbol 0
      out.tokens.resize(symbols_.size() + specials.size());
      for (std::size_t s = 0; s < symbols_.size(); ++s) out.tokens[s + shift] = bpe::bytes_to_symbols(symbols_[s]);
      for (std::size_t j = 0; j < specials.size(); ++j) {
        const std::size_t id = first ? j : symbols_.size() + j;
        out.tokens[id] = specials[j];
        out.special_tokens.emplace_back(specials[j], static_cast<token_id>(id));
      }
      out.merges.reserve(merges_.size());
      for (const auto& [a, b] : merges_)
        out.merges.push_back({out.tokens[static_cast<std::size_t>(a) + shift], out.tokens[static_cast<std::size_t>(b) + shift]});
      return out;
    }

   private:
    using symbol = std::int32_t;
    struct Word {
      std::vector<symbol> symbols;
      std::int64_t count = 0;
    };
    struct Entry {
      std::int64_t count;
      std::uint64_t key;
    };

    static std::uint64_t key(symbol a, symbol b) {
      return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
    }
    static symbol first_of(std::uint64_t k) { return static_cast<symbol>(k >> 32); }
    static symbol second_of(std::uint64_t k) { return static_cast<symbol>(k & 0xFFFFFFFFu); }

    // Max-heap order: higher count on top, then the lexicographically smaller pair of byte strings.
    struct HeapOrder {
      const std::vector<std::string>* symbols;
      bool operator()(const Entry& x, const Entry& y) const {
        if (x.count != y.count) return x.count < y.count;
        const auto& s = *symbols;
        const std::string& xa = s[static_cast<std::size_t>(first_of(x.key))];
        const std::string& ya = s[static_cast<std::size_t>(first_of(y.key))];
        if (xa != ya) return ya < xa;
        return s[static_cast<std::size_t>(second_of(y.key))] < s[static_cast<std::size_t>(second_of(x.key))];
      }
    };
    HeapOrder heap_order() const { return HeapOrder{&symbols_}; }

    void push_if_frequent(std::uint64_t k, std::int64_t n) {
      if (n < min_count_) return;
      heap_.push_back({n, k});
      std::push_heap(heap_.begin(), heap_.end(), heap_order());
    }

    // Adds `delta` occurrences of pair `k`; a rise also files word `wi` under the pair.
    void add(std::uint64_t k, std::int64_t delta, std::size_t wi) {
      std::int64_t& n = pair_counts_[k];
      n += delta;
      if (delta > 0) {
        grown_.push_back(k);
        auto& list = where_[k];
        if (list.empty() || list.back() != wi) list.push_back(wi);
      } else if (n == 0) {
        pair_counts_.erase(k);
        where_.erase(k);
      }
    }

    // Replaces every (a, b) with c, left to right, in the words filed under the pair, updating the
    // counts of the neighbouring pairs only; then queues the pairs that rose at their new counts.
    void merge_everywhere(std::uint64_t k, symbol a, symbol b, symbol c) {
      std::vector<std::size_t> list;
      if (const auto it = where_.find(k); it != where_.end()) list = std::move(it->second);
      where_.erase(k);
      std::sort(list.begin(), list.end());
      list.erase(std::unique(list.begin(), list.end()), list.end());
      grown_.clear();
      for (const std::size_t wi : list) {
        Word& w = words_[wi];
        auto& s = w.symbols;
        const std::int64_t n = w.count;
        std::size_t out = 0;
        for (std::size_t i = 0; i < s.size();) {
          if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
            // The left neighbour is the output's last symbol, so back-to-back matches count right.
            if (out > 0) add(key(s[out - 1], a), -n, wi), add(key(s[out - 1], c), n, wi);
            if (i + 2 < s.size()) add(key(b, s[i + 2]), -n, wi), add(key(c, s[i + 2]), n, wi);
            s[out++] = c;
            i += 2;
          } else {
            s[out++] = s[i++];
          }
        }
        s.resize(out);
      }
      pair_counts_.erase(k);  // every occurrence is merged (greedy left to right leaves none)
      std::sort(grown_.begin(), grown_.end());
      grown_.erase(std::unique(grown_.begin(), grown_.end()), grown_.end());
      for (const std::uint64_t g : grown_)
        if (const auto it = pair_counts_.find(g); it != pair_counts_.end()) push_if_frequent(g, it->second);
    }

    const BpeTrainerOptions& options_;
    const std::unordered_set<std::string>& special_forms_;
    std::int64_t min_count_;
    std::vector<Word> words_;
    std::vector<std::string> symbols_;  // raw bytes of each symbol id
    std::unordered_map<std::string, symbol> symbol_ids_;
    std::unordered_map<std::uint64_t, std::int64_t> pair_counts_;
    std::unordered_map<std::uint64_t, std::vector<std::size_t>> where_;  // words that hold (or held) a pair
    std::vector<Entry> heap_;
    std::vector<std::uint64_t> grown_;
    std::unordered_set<std::uint64_t> banned_;
    std::vector<std::pair<symbol, symbol>> merges_;
    std::size_t learned_ = 0;  // new symbols, the vocabulary's growth (a reused spelling adds none)
  };

  BpeTrainerOptions options_;
  std::unordered_set<std::string> special_forms_;
  WordCounts words_;
  std::size_t texts_ = 0;
};

// Any range of texts: std::vector<std::string>, a view producing std::string, ...
template <class R>
concept TextRange = std::ranges::input_range<R> && std::convertible_to<std::ranges::range_reference_t<R>, std::string_view>;

// Trains byte-level BPE on `texts`; save the result with `.save(dir / "tokenizer.json")`.
template <TextRange R>
TrainedBpe train_bpe(R&& texts, const BpeTrainerOptions& options = {}) {
  BpeTrainer trainer(options);
  for (auto&& text : texts) trainer.add_text(std::string_view(text));
  return trainer.train();
}

inline TrainedBpe train_bpe(std::initializer_list<std::string_view> texts, const BpeTrainerOptions& options = {}) {
  return train_bpe(std::vector<std::string_view>(texts), options);
}

}  // namespace mote::io
