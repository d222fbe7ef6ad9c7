// Byte-level BPE training: merges derived by hand, determinism, the vocabulary's size and contents,
// the tokenizer.json it writes (loaded by mote and, through a committed fixture, by Hugging Face's
// libraries), round trips, special tokens, compression, and typed errors on bad input.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <unistd.h>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/io/atomic_file.hpp"
#include "mote/io/bpe_trainer.hpp"
#include "mote/io/json.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/io/utf8.hpp"

using namespace mote;
using io::Tokenizer;
namespace fs = std::filesystem;

namespace {

using ids_t = std::vector<Tokenizer::token_id>;
using merges_t = std::vector<std::string>;

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / ("mote_bpe_trainer_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// fn must throw E whose message holds every needle.
template <class E, class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) BOOST_TEST(msg.find(n) != std::string::npos, "message '" << msg << "' lacks '" << n << "'");
    return;
  }
  BOOST_FAIL("expected an exception of the named type");
}

merges_t merge_strings(const io::TrainedBpe& t) {
  merges_t out;
  for (const auto& m : t.merges) out.push_back(m.first + " " + m.second);
  return out;
}

std::vector<std::string> repeated(std::initializer_list<std::pair<const char*, int>> words) {
  std::vector<std::string> out;
  for (const auto& [w, n] : words)
    for (int k = 0; k < n; ++k) out.emplace_back(w);
  return out;
}

// A deterministic corpus of ~`bytes` bytes: sentences over a small word list with Latin, accented,
// Cyrillic, CJK and emoji words, numbers, punctuation, tabs and newlines.
std::vector<std::string> synthetic_corpus(std::size_t bytes, std::uint64_t seed) {
  static const char* words[] = {"the", "of", "and", "to", "in", "is", "that", "it", "was", "for", "on", "are", "with",
                                "they", "be", "at", "one", "have", "this", "from", "word", "but", "what", "some", "we",
                                "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how",
                                "said", "each", "she", "which", "their", "time", "will", "way", "about", "many",
                                "then", "them", "would", "write", "like", "these", "her", "long", "make", "thing",
                                "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did",
                                "number", "sound", "people", "water", "caf\xC3\xA9", "na\xC3\xAFve", "\xD0\xBC\xD0\xB8\xD1\x80",
                                "\xE6\x97\xA5\xE6\x9C\xAC", "\xF0\x9F\x98\x80", "don't", "it's", "we'll"};
  std::uint64_t state = seed;
  const auto next = [&](std::uint64_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % n;
  };
  std::vector<std::string> out;
  std::size_t total = 0;
  while (total < bytes) {
    std::string line;
    const std::uint64_t len = 4 + next(14);
    for (std::uint64_t k = 0; k < len; ++k) {
      if (k) line += next(20) == 0 ? "  " : " ";
      line += words[next(std::size(words))];
      if (next(9) == 0) line += std::to_string(next(2000));
      if (next(12) == 0) line += ",";
    }
    line += next(6) == 0 ? "!\n" : ".\n";
    if (next(10) == 0) line += "\t";
    total += line.size();
    out.push_back(std::move(line));
  }
  return out;
}

// Random valid UTF-8: ASCII with controls and NUL, Latin-1, Cyrillic, combining marks, CJK, emoji,
// and code points anywhere up to U+10FFFF (surrogates skipped).
std::string random_utf8(std::size_t chars, std::uint64_t seed) {
  std::uint64_t state = seed;
  const auto next = [&](std::uint64_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % n;
  };
  static const std::uint32_t lo[] = {0x00, 0x20, 0x80, 0x400, 0x300, 0x4E00, 0x1F300, 0x0};
  static const std::uint32_t span[] = {0x20, 0x60, 0x180, 0x100, 0x70, 0x5000, 0x300, 0x110000};
  std::string out;
  for (std::size_t k = 0; k < chars; ++k) {
    const std::size_t r = next(std::size(lo));
    std::uint32_t cp = lo[r] + static_cast<std::uint32_t>(next(span[r]));
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = ' ';
    io::append_utf8(out, cp);
  }
  return out;
}

// The same training done the slow way: every step recounts every pair from scratch and takes the
// highest count, ties going to the smallest (first, second) byte strings, as std::map orders them.
merges_t recount_merges(const std::vector<std::string>& texts, std::size_t merges, std::uint64_t min_frequency) {
  std::map<std::string, std::uint64_t> counts;
  for (const auto& text : texts)
    for (const auto piece : io::bpe::pretokenize_gpt2(text)) ++counts[std::string(piece)];
  std::vector<std::pair<std::vector<std::string>, std::uint64_t>> words;
  for (const auto& [w, n] : counts) {
    std::vector<std::string> symbols;
    for (const char c : w) symbols.emplace_back(1, c);
    words.emplace_back(std::move(symbols), n);
  }
  merges_t out;
  while (out.size() < merges) {
    std::map<std::pair<std::string, std::string>, std::uint64_t> pairs;
    for (const auto& [s, n] : words)
      for (std::size_t i = 0; i + 1 < s.size(); ++i) pairs[{s[i], s[i + 1]}] += n;
    const std::pair<std::string, std::string>* best = nullptr;
    std::uint64_t best_count = 0;
    for (const auto& [p, n] : pairs)
      if (n > best_count) best = &p, best_count = n;
    if (best == nullptr || best_count < min_frequency) break;
    const auto [a, b] = *best;
    for (auto& [s, n] : words) {
      std::vector<std::string> merged;
      for (std::size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          merged.push_back(a + b);
          i += 2;
        } else {
          merged.push_back(s[i++]);
        }
      }
      s = std::move(merged);
    }
    out.push_back(io::bpe::bytes_to_symbols(a) + " " + io::bpe::bytes_to_symbols(b));
  }
  return out;
}

// The corpus of the committed fixture tests/reference/fixtures/bpe_trainer/tokenizer.json.
const std::vector<std::string>& fixture_corpus() {
  static const std::vector<std::string> texts = {
      "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs on.",
      "She said: \"I'm sure you'll see it's what they've said, and we'd go.\" They're here.",
      "Tokenizers split text into pieces, then merge the most frequent pairs of symbols.",
      "A tokenizer that is trained on this text learns the, then, there, these and their.",
      "<|analysis|>Think about the question first.<|response|>Then answer it.<|endoftext|>",
      "<|analysis|>The fox is quick.<|response|>The dog is lazy.<|endoftext|>",
      "def merge(pairs):\n    for a, b in pairs:\n        yield a + b  # merged\n",
      "for (int i = 0; i < 100; ++i) {\n\tsum += i * i;\n}\n",
      "Numbers: 12 345 6789 2024-05-17 3.14159 1,000,000 and 42 again 42.",
      "caf\xC3\xA9 na\xC3\xAFve r\xC3\xA9sum\xC3\xA9 fa\xC3\xA7" "ade caf\xC3\xA9 caf\xC3\xA9",
      "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82 \xD0\xBC\xD0\xB8\xD1\x80, "
      "\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82!",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86\xE3\x82\xAD\xE3\x82\xB9\xE3\x83\x88 \xE6\x97\xA5\xE6\x9C\xAC",
      "Emoji \xF0\x9F\x98\x80\xF0\x9F\x98\x80 and \xF0\x9F\x91\x8D, spaces   and\ttabs\n\nnew lines  \n",
      "the the the then then there there these these their their the end",
  };
  return texts;
}

io::BpeTrainerOptions fixture_options() {
  io::BpeTrainerOptions o;
  o.vocab_size = 360;
  o.min_frequency = 2;
  o.special_tokens = {"<|endoftext|>", "<|analysis|>", "<|response|>"};
  return o;
}

fs::path fixture_dir() { return fs::path(MOTE_TEST_FIXTURES) / "bpe_trainer"; }

}  // namespace

BOOST_AUTO_TEST_SUITE(test_bpe_trainer)

// The classic hug/pug/pun/bun/hugs corpus, one word per text (so no leading spaces), counts
// 10/5/12/4/5. On paper, pair counts and the merge each step takes:
//   u g 20 (hu 15, pu 17, un 16, bu 4, gs 5)        -> "ug"
//   u n 16 (h ug 15, p ug 5, p u 12, b u 4, ug s 5) -> "un"
//   h ug 15 (p ug 5, p un 12, b un 4, ug s 5)       -> "hug"
//   p un 12 (p ug 5, b un 4, hug s 5)               -> "pun"
//   hug s 5 = p ug 5: tie, "hug" < "p"              -> "hugs"
//   p ug 5 (b un 4)                                 -> "pug"
//   b un 4                                          -> "bun", then no pair is left.
BOOST_AUTO_TEST_CASE(hand_derived_merges) {
  const auto texts = repeated({{"hug", 10}, {"pug", 5}, {"pun", 12}, {"bun", 4}, {"hugs", 5}});
  const merges_t all{"u g", "u n", "h ug", "p un", "hug s", "p ug", "b un"};
  io::BpeTrainerOptions o;
  o.vocab_size = 1000;
  o.min_frequency = 1;
  const io::TrainedBpe t = io::train_bpe(texts, o);
  BOOST_TEST(merge_strings(t) == all, boost::test_tools::per_element());
  BOOST_TEST(t.tokens.size() == 263u);  // stopped early: no pair left
  BOOST_TEST(t.tokens[97] == "a");      // byte b is id b
  BOOST_TEST(t.tokens[32] == "\xC4\xA0");
  BOOST_TEST(t.tokens[260] == "hugs");

  o.min_frequency = 5;  // "b un" (4) is below the bar
  BOOST_TEST(merge_strings(io::train_bpe(texts, o)) == merges_t(all.begin(), all.begin() + 6), boost::test_tools::per_element());
  o.min_frequency = 1;
  o.vocab_size = 259;  // room for three merges
  const io::TrainedBpe three = io::train_bpe(texts, o);
  BOOST_TEST(merge_strings(three) == merges_t(all.begin(), all.begin() + 3), boost::test_tools::per_element());
  BOOST_TEST(three.tokens.size() == 259u);

  const Tokenizer tok = t.tokenizer();
  BOOST_TEST(tok.encode("hugs") == (ids_t{260}));
  BOOST_TEST(tok.encode("bun pug") == (ids_t{262, 32, 261}));  // " pug" is one word: Ġ has no merge
  BOOST_TEST(tok.encode("hugging") == (ids_t{258, 'g', 'i', 'n', 'g'}));
}

// Overlapping pairs, leading spaces and multi-byte characters, still on paper.
BOOST_AUTO_TEST_CASE(hand_derived_byte_level_merges) {
  io::BpeTrainerOptions o;
  o.vocab_size = 1000;
  o.min_frequency = 2;
  // "aaabdaaabac": aa 4 -> aa a b d aa a b a c; then aa a 2 = a b 2, tie: "a" < "aa" -> a b;
  // then aa ab 2; what is left occurs once.
  BOOST_TEST(merge_strings(io::train_bpe({"aaabdaaabac"}, o)) == (merges_t{"a a", "a b", "aa ab"}),
             boost::test_tools::per_element());
  // Once more each: ties all the way, the smallest first symbol (then second) wins.
  o.min_frequency = 1;
  BOOST_TEST(merge_strings(io::train_bpe({"aaabdaaabac"}, o)) ==
                 (merges_t{"a a", "a b", "aa ab", "a c", "aaab ac", "aaab d", "aaabd aaabac"}),
             boost::test_tools::per_element());
  // " hug hug": the word " hug" twice; " " (0x20) sorts before the letters, so the space merges
  // first, and vocabulary files spell it "Ġ".
  o.min_frequency = 2;
  BOOST_TEST(merge_strings(io::train_bpe({" hug hug"}, o)) == (merges_t{"\xC4\xA0 h", "\xC4\xA0h u", "\xC4\xA0hu g"}),
             boost::test_tools::per_element());
  // "éé éé": bytes C3 A9 C3 A9 | 20 C3 A9 C3 A9. (C3, A9) 4 -> "Ã©"; then (é, é) 2; (Ġ, éé) once.
  BOOST_TEST(merge_strings(io::train_bpe({"\xC3\xA9\xC3\xA9 \xC3\xA9\xC3\xA9"}, o)) ==
                 (merges_t{"\xC3\x83 \xC2\xA9", "\xC3\x83\xC2\xA9 \xC3\x83\xC2\xA9"}),
             boost::test_tools::per_element());
  // Word counts, not the raw stream: the same word across texts adds up ("ab" 3 times -> one merge).
  BOOST_TEST(merge_strings(io::train_bpe({"ab", "ab", "xy ab"}, o)) == (merges_t{"a b"}), boost::test_tools::per_element());
}

// The incremental pair counts and the lazy queue pick exactly what a full recount picks, step by step.
BOOST_AUTO_TEST_CASE(incremental_counts_match_a_full_recount) {
  const auto corpus = synthetic_corpus(15000, 3);
  for (const std::uint64_t min_frequency : {1, 3}) {
    io::BpeTrainerOptions o;
    o.vocab_size = 256 + 200;
    o.min_frequency = min_frequency;
    const merges_t expected = recount_merges(corpus, 200, min_frequency);
    BOOST_TEST(expected.size() == 200u);
    BOOST_TEST(merge_strings(io::train_bpe(corpus, o)) == expected, boost::test_tools::per_element());
  }
  // A corpus that runs dry: both stop at the same place.
  const std::vector<std::string> small{"aaaa aaaa bbbb abab baba", "aaa bb ab"};
  io::BpeTrainerOptions o;
  o.vocab_size = 1000;
  o.min_frequency = 1;
  const merges_t expected = recount_merges(small, 1000, 1);
  BOOST_TEST(expected.size() < 20u);
  BOOST_TEST(merge_strings(io::train_bpe(small, o)) == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(special_token_ids_and_placement) {
  const auto texts = repeated({{"hug", 10}, {"pug", 5}, {"pun", 12}, {"bun", 4}, {"hugs", 5}});
  io::BpeTrainerOptions o;
  o.vocab_size = 266;
  o.min_frequency = 1;
  o.special_tokens = {"<|endoftext|>", "<|analysis|>"};
  const io::TrainedBpe last = io::train_bpe(texts, o);
  BOOST_TEST(last.tokens.size() == 265u);  // 7 merges, then the two special tokens
  using specials_t = std::vector<std::pair<std::string, Tokenizer::token_id>>;
  BOOST_TEST((last.special_tokens == specials_t{{"<|endoftext|>", 263}, {"<|analysis|>", 264}}));
  o.special_ids = io::SpecialTokenIds::first;
  const io::TrainedBpe first = io::train_bpe(texts, o);
  BOOST_TEST((first.special_tokens == specials_t{{"<|endoftext|>", 0}, {"<|analysis|>", 1}}));
  BOOST_TEST(first.tokens[2 + 'a'] == "a");
  BOOST_TEST(merge_strings(first) == merge_strings(last), boost::test_tools::per_element());
  const Tokenizer tok = first.tokenizer();
  BOOST_TEST(tok.encode("<|analysis|>hugs<|endoftext|>") == (ids_t{1, 262, 0}));
  BOOST_TEST(tok.decode(ids_t{1, 262, 0}) == "<|analysis|>hugs<|endoftext|>");

  // Special tokens in the corpus are cut out before counting: their insides are never learned.
  std::vector<std::string> with_markers;
  for (int k = 0; k < 50; ++k) with_markers.push_back("<|endoftext|>hug<|endoftext|> pun");
  o.special_ids = io::SpecialTokenIds::after_merges;
  o.vocab_size = 300;
  const io::TrainedBpe cut = io::train_bpe(with_markers, o);
  for (const auto& tok_text : cut.tokens)
    BOOST_TEST((tok_text.find("endof") == std::string::npos || tok_text == "<|endoftext|>"), tok_text);
  BOOST_TEST(merge_strings(cut) == (merges_t{"\xC4\xA0 p", "\xC4\xA0p u", "\xC4\xA0pu n", "h u", "hu g"}),
             boost::test_tools::per_element());

  // A special token spelled like a token the corpus would teach ("Ġhug", the form of " hug"): that
  // merge is never learned, so the special keeps its own id and " hug" still round-trips.
  o.special_tokens = {"\xC4\xA0hug"};
  const io::TrainedBpe banned = io::train_bpe({" hug hug hug"}, o);
  BOOST_TEST(merge_strings(banned) == (merges_t{"\xC4\xA0 h", "\xC4\xA0h u"}), boost::test_tools::per_element());
  const Tokenizer bt = banned.tokenizer();
  BOOST_TEST(bt.encode("\xC4\xA0hug") == (ids_t{banned.special_tokens[0].second}));
  BOOST_TEST(bt.decode(bt.encode(" hug")) == " hug");
}

BOOST_AUTO_TEST_CASE(deterministic_sized_and_loadable) {
  const auto corpus = synthetic_corpus(120000, 7);
  io::BpeTrainerOptions o;
  o.vocab_size = 700;
  o.special_tokens = {"<|endoftext|>", "<|analysis|>", "<|guidance|>", "<|response|>"};
  TempDir d;
  io::train_bpe(corpus, o).save(d.path / "a.json");
  io::train_bpe(corpus, o).save(d.path / "b.json");
  const std::string a = io::read_file(d.path / "a.json");
  BOOST_TEST(a == io::read_file(d.path / "b.json"));  // byte-identical
  BOOST_TEST(a.back() == '\n');

  const io::TrainedBpe t = io::train_bpe(corpus, o);
  BOOST_TEST(t.tokens.size() == 700u);
  BOOST_TEST(t.merges.size() == 700u - 256u - 4u);
  const std::set<std::string> vocab(t.tokens.begin(), t.tokens.end());
  BOOST_TEST(vocab.size() == t.tokens.size());  // no token twice
  for (const auto& m : t.merges) BOOST_TEST(vocab.count(m.first + m.second) == 1u, m.first << " " << m.second);
  for (std::size_t k = 0; k < 4; ++k) BOOST_TEST(t.special_tokens[k].second == static_cast<Tokenizer::token_id>(696 + k));

  // The document: Hugging Face's layout, and what mote's loader reads back.
  const io::json::Value doc = io::json::parse(a, "tokenizer.json");
  BOOST_TEST(doc["model"]["type"].as_string() == "BPE");
  BOOST_TEST(doc["model"]["vocab"].size() == 700u);
  BOOST_TEST(doc["model"]["merges"].size() == t.merges.size());
  BOOST_TEST(doc["model"]["merges"][std::size_t{0}].as_string() == t.merges[0].first + " " + t.merges[0].second);
  BOOST_TEST(doc["pre_tokenizer"]["type"].as_string() == "ByteLevel");
  BOOST_TEST(doc["decoder"]["type"].as_string() == "ByteLevel");
  BOOST_TEST(doc["normalizer"].is_null());
  BOOST_REQUIRE_EQUAL(doc["added_tokens"].size(), 4u);
  BOOST_TEST(doc["added_tokens"][std::size_t{3}]["content"].as_string() == "<|response|>");
  BOOST_TEST(doc["added_tokens"][std::size_t{3}]["id"].as_int64() == 699);
  BOOST_TEST(doc["added_tokens"][std::size_t{3}]["special"].as_bool());

  fs::copy_file(d.path / "a.json", d.path / "tokenizer.json");
  const Tokenizer loaded = Tokenizer::from_tokenizer_json(d.path / "a.json");
  const Tokenizer from_dir = Tokenizer::from_dir(d.path);
  const Tokenizer memory = t.tokenizer();
  BOOST_TEST(loaded.vocab_size() == 700);
  BOOST_TEST(loaded.special_tokens() == o.special_tokens, boost::test_tools::per_element());
  for (std::size_t k = 0; k < 40; ++k) {
    const ids_t ids = loaded.encode(corpus[k]);
    BOOST_TEST(from_dir.encode(corpus[k]) == ids, boost::test_tools::per_element());
    BOOST_TEST(memory.encode(corpus[k]) == ids, boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(round_trips_specials_and_compression) {
  const auto corpus = synthetic_corpus(120000, 11);
  io::BpeTrainerOptions o;
  o.vocab_size = 800;
  o.special_tokens = {"<|endoftext|>", "<|analysis|>", "<|response|>"};
  TempDir d;
  io::train_bpe(corpus, o).save(d.path / "tokenizer.json");
  const Tokenizer t = Tokenizer::from_tokenizer_json(d.path / "tokenizer.json");

  std::size_t bytes = 0, ids = 0;
  for (const auto& text : corpus) {
    const ids_t e = t.encode(text);
    bytes += text.size();
    ids += e.size();
    if (t.decode(e) != text) BOOST_FAIL("round trip of training text " << io::json::dump(io::json::Value(text)));
  }
  // The corpus's words and their space-prefixed forms fit in 800 tokens: far fewer ids than bytes.
  BOOST_TEST(ids * 3 < bytes, ids << " ids for " << bytes << " bytes");

  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    const std::string text = random_utf8(200, seed);
    BOOST_TEST(t.decode(t.encode(text)) == text);
    BOOST_TEST(t.decode(t.encode_ordinary(text)) == text);
  }
  std::string all_bytes_utf8;  // every code point below 0x800, NUL and controls included
  for (std::uint32_t cp = 0; cp < 0x800; ++cp) io::append_utf8(all_bytes_utf8, cp);
  BOOST_TEST(t.decode(t.encode(all_bytes_utf8)) == all_bytes_utf8);

  const auto eot = t.token_to_id("<|endoftext|>").value(), analysis = t.token_to_id("<|analysis|>").value(),
             response = t.token_to_id("<|response|>").value();
  BOOST_TEST(eot == 797);
  BOOST_TEST(analysis == 798);
  BOOST_TEST(response == 799);
  const std::string chat = "<|analysis|>the water is long.<|response|>we'll see<|endoftext|>";
  const ids_t e = t.encode(chat);
  BOOST_TEST(e.front() == analysis);
  BOOST_TEST(e.back() == eot);
  BOOST_TEST(std::count(e.begin(), e.end(), response) == 1);
  BOOST_TEST(t.decode(e) == chat);
  BOOST_TEST(t.encode("<|endoftext|><|endoftext|>") == (ids_t{eot, eot}));
  const ids_t plain = t.encode_ordinary(chat);  // markers spelled out, never the special ids
  for (const auto id : plain) BOOST_TEST(!t.is_special(id));
  BOOST_TEST(t.decode(plain) == chat);
}

// Hugging Face's own libraries read the file the trainer writes and give the ids mote gives.
// fixtures/bpe_trainer/tokenizer.json is the trainer's output on fixture_corpus() with
// fixture_options(), written by this test when MOTE_WRITE_BPE_FIXTURE=1 is set; then
// tests/reference/make_bpe_trainer_fixtures.js wrote fixtures/bpe_trainer.json with the ids of
// npm `tokenizers` (the Rust library) and `@huggingface/tokenizers` (transformers.js's), which agree.
BOOST_AUTO_TEST_CASE(ids_match_hugging_face_tokenizers) {
  const fs::path file = fixture_dir() / "tokenizer.json";
  const io::TrainedBpe t = io::train_bpe(fixture_corpus(), fixture_options());
  if (std::getenv("MOTE_WRITE_BPE_FIXTURE") != nullptr) {
    fs::create_directories(fixture_dir());
    t.save(file);
  }
  // The committed file is what the trainer writes today, so the reference ids speak for it.
  BOOST_TEST(io::read_file(file) == io::json::dump(t.to_json(), 2) + "\n");
  BOOST_TEST(t.tokens.size() == 360u);

  const Tokenizer tok = Tokenizer::from_tokenizer_json(file);
  const io::json::Value ref = io::json::parse_file(fs::path(MOTE_TEST_FIXTURES) / "bpe_trainer.json");
  const auto& cases = ref["cases"];
  BOOST_REQUIRE_GE(cases.size(), 12u);
  for (std::size_t k = 0; k < cases.size(); ++k) {
    const std::string& text = cases[k]["text"].as_string();
    ids_t want;
    for (const auto& v : cases[k]["ids"].as_array()) want.push_back(static_cast<Tokenizer::token_id>(v.as_int64()));
    BOOST_TEST_CONTEXT("text " << io::json::dump(cases[k]["text"])) {
      BOOST_TEST(tok.encode(text) == want, boost::test_tools::per_element());
      BOOST_TEST(tok.decode(want) == text);
    }
  }
}

BOOST_AUTO_TEST_CASE(bad_input_is_a_typed_error) {
  const std::vector<std::string> texts{"hello world", "hello there"};
  io::BpeTrainerOptions o;
  o.vocab_size = 257;
  o.special_tokens = {"<|endoftext|>", "<|pad|>"};
  expect_error<value_error>([&] { io::train_bpe(texts, o); }, {"vocab_size", "258", "257"});
  o.vocab_size = 300;
  o.special_tokens = {"<|a|>", "<|b|>", "<|a|>"};
  expect_error<value_error>([&] { io::train_bpe(texts, o); }, {"special_tokens[2]", "<|a|>", "twice", "special_tokens[0]"});
  o.special_tokens = {""};
  expect_error<value_error>([&] { io::train_bpe(texts, o); }, {"special_tokens[0]", "non-empty"});
  o.special_tokens = {"ok", "\xC4\xA0"};
  expect_error<value_error>([&] { io::train_bpe(texts, o); }, {"special_tokens[1]", "byte 32"});
  o.special_tokens = {"bad\xFF"};
  expect_error<value_error>([&] { io::train_bpe(texts, o); }, {"special_tokens[0]", "UTF-8"});
  o.special_tokens = {"<|endoftext|>"};
  o.min_frequency = 0;
  expect_error<value_error>([&] { io::train_bpe(texts, o); }, {"min_frequency", "at least 1"});
  o.min_frequency = 2;
  o.vocab_size = std::size_t{1} << 40;
  expect_error<value_error>([&] { io::train_bpe(texts, o); }, {"vocab_size", "at most"});
  o.vocab_size = 300;

  expect_error<value_error>([&] { io::train_bpe(std::vector<std::string>{}, o); }, {"texts", "0 text(s)"});
  expect_error<value_error>([&] { io::train_bpe({"", "<|endoftext|>"}, o); }, {"texts", "2 text(s)", "no words"});
  expect_error<value_error>([&] { io::train_bpe({"fine", "ok \xC3\x28 no"}, o); }, {"texts[1]", "UTF-8", "byte 3"});

  // Early stop is no error: nothing occurs twice.
  BOOST_TEST(io::train_bpe({"abc"}, o).tokens.size() == 257u);

  TempDir d;
  expect_error<io_error>([&] { io::train_bpe(texts, o).save(d.path / "missing" / "tokenizer.json"); },
                         {"tokenizer file", "missing"});
  BOOST_TEST(fs::is_empty(d.path));  // a failed write leaves no temporary behind
}

BOOST_AUTO_TEST_SUITE_END()
