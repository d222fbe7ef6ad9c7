// GPT-2 byte-level BPE: ids bit-exact with the reference encoder, round trips, tokenizer.json
// loading, special tokens, and typed errors on malformed files and ids.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/io/json.hpp"
#include "mote/io/tokenizer.hpp"
#include "op_harness.hpp"

using namespace mote;
using io::Tokenizer;
using testing::expect_error;
namespace fs = std::filesystem;

namespace {

using ids_t = std::vector<Tokenizer::token_id>;

// The repository's data/gpt2, found from the fixture directory (<repo>/tests/reference/fixtures).
fs::path gpt2_dir() { return fs::path(MOTE_TEST_FIXTURES) / ".." / ".." / ".." / "data" / "gpt2"; }

const Tokenizer& gpt2() {
  static const Tokenizer t = Tokenizer::from_dir(gpt2_dir());
  return t;
}

struct Case {
  std::string text;
  ids_t ids;
};

std::vector<Case> read_fixture(const std::string& name) {
  const fs::path file = fs::path(MOTE_TEST_FIXTURES) / name;
  std::ifstream in(file);
  BOOST_REQUIRE_MESSAGE(in, "cannot open " << file);
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("text ", 0) == 0) {
      cases.push_back({io::json::parse(line.substr(5), "fixture").as_string(), {}});
    } else if (line.rfind("ids", 0) == 0) {
      BOOST_REQUIRE(!cases.empty());
      std::istringstream s(line.substr(3));
      for (long long v; s >> v;) cases.back().ids.push_back(static_cast<Tokenizer::token_id>(v));
    }
  }
  return cases;
}

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / ("mote_tokenizer_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
    return path / name;
  }
};

// A tiny byte-level model: all 256 byte symbols plus a few merges, as (vocab, merges) JSON pieces.
struct Tiny {
  io::json::Value vocab = io::json::Value::object();
  std::vector<std::pair<std::string, std::string>> merges{
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"o", "r"}, {"Ġw", "or"}, {"Ġwor", "ld"}, {"l", "d"}};
  Tiny() {
    std::int64_t id = 0;
    for (const auto& s : io::bpe::byte_to_unicode()) vocab.set(s, id++);
    for (const auto& [a, b] : merges)
      if (!vocab.contains(a + b)) vocab.set(a + b, id++);
  }
  std::string merges_txt() const {
    std::string out = "#version: 0.2\n";
    for (const auto& [a, b] : merges) out += a + " " + b + "\n";
    return out;
  }
  // tokenizer.json with merges as "a b" strings or [a, b] pairs, and extra added_tokens.
  std::string tokenizer_json(bool pair_merges, const std::string& added = "[]") const {
    io::json::Value m = io::json::Value::array();
    for (const auto& [a, b] : merges) {
      if (pair_merges)
        m.push_back(io::json::Value::array({a, b}));
      else
        m.push_back(a + " " + b);
    }
    return std::string("{\"version\": \"1.0\", \"added_tokens\": ") + added +
           ", \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
           "\"trim_offsets\": true, \"use_regex\": true}, \"decoder\": {\"type\": \"ByteLevel\"}, \"model\": "
           "{\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": \"\", "
           "\"end_of_word_suffix\": \"\", \"fuse_unk\": false, \"byte_fallback\": false, \"vocab\": " +
           io::json::dump(vocab) + ", \"merges\": " + io::json::dump(m) + "}}";
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(test_tokenizer)

BOOST_AUTO_TEST_CASE(byte_table_is_gpt2s) {
  const auto& table = io::bpe::byte_to_unicode();
  std::set<std::string> distinct(table.begin(), table.end());
  BOOST_TEST(distinct.size() == 256u);
  BOOST_TEST(table['!'] == "!");
  BOOST_TEST(table['~'] == "~");
  BOOST_TEST(table[0xE9] == "\xC3\xA9");  // printable Latin-1 keeps its character
  BOOST_TEST(table[0] == "\xC4\x80");     // U+0100, the first stand-in
  BOOST_TEST(table[' '] == "\xC4\xA0");   // U+0120 "Ġ"
  BOOST_TEST(table['\n'] == "\xC4\x8A");  // U+010A "Ċ"
  BOOST_TEST(table[0xAD] == "\xC5\x83");  // U+0143, the last stand-in
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  BOOST_TEST(io::bpe::symbols_to_bytes(io::bpe::bytes_to_symbols(all)) == all);
}

BOOST_AUTO_TEST_CASE(pretokenizer_follows_the_pattern) {
  const auto split = [](std::string_view text) {
    std::vector<std::string> out;
    for (auto p : io::bpe::pretokenize_gpt2(text)) out.emplace_back(p);
    return out;
  };
  using V = std::vector<std::string>;
  BOOST_TEST(split("Hello world") == (V{"Hello", " world"}));
  BOOST_TEST(split("a   b") == (V{"a", "  ", " b"}));
  BOOST_TEST(split("end  ") == (V{"end", "  "}));
  BOOST_TEST(split("x\ty") == (V{"x", "\t", "y"}));
  BOOST_TEST(split("it's they're 'sx") == (V{"it", "'s", " they", "'re", " '", "sx"}));
  BOOST_TEST(split("abc123!? 45") == (V{"abc", "123", "!?", " 45"}));
  BOOST_TEST(split("a \n b") == (V{"a", " \n", " b"}));
  BOOST_TEST(split("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC") == (V{"caf\xC3\xA9", " \xE6\x97\xA5\xE6\x9C\xAC"}));
  BOOST_TEST(split("").empty());
}

BOOST_AUTO_TEST_CASE(gpt2_ids_match_the_reference_encoder) {
  const Tokenizer& t = gpt2();
  BOOST_TEST(t.vocab_size() == 50257);
  const auto cases = read_fixture("tokenizer_gpt2.txt");
  BOOST_REQUIRE_GE(cases.size(), 30u);
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT("text " << io::json::dump(io::json::Value(c.text))) {
      const ids_t got = t.encode_ordinary(c.text);
      BOOST_TEST(got == c.ids, boost::test_tools::per_element());
      BOOST_TEST(t.decode(got) == c.text);
      if (!testing::contains(c.text, "<|endoftext|>")) BOOST_TEST(t.encode(c.text) == c.ids, boost::test_tools::per_element());
    }
  }
}

BOOST_AUTO_TEST_CASE(decode_returns_exact_bytes) {
  const Tokenizer& t = gpt2();
  // A token id for a lone continuation byte decodes to that byte, not to valid UTF-8.
  const auto id = t.token_to_id(io::bpe::byte_to_unicode()[0x80]);
  BOOST_REQUIRE(id.has_value());
  BOOST_TEST(t.decode(ids_t{*id}) == std::string("\x80"));
  const std::string bytes = "\x01\x02\x7f tab\there \xF0\x9F\x98\x80";
  BOOST_TEST(t.decode(t.encode(bytes)) == bytes);
  BOOST_TEST(t.encode("").empty());
  BOOST_TEST(t.decode(ids_t{}).empty());
  BOOST_TEST(t.id_to_token(464) == "The");
  BOOST_TEST(t.id_to_token(262) == "\xC4\xA0the");
}

BOOST_AUTO_TEST_CASE(special_tokens_are_matched_and_registered) {
  Tokenizer t = gpt2();
  BOOST_TEST(t.is_special(50256));
  BOOST_TEST(t.encode("<|endoftext|>") == (ids_t{50256}));
  BOOST_TEST(t.encode("Hi<|endoftext|> there") == (ids_t{17250, 50256, 612}));
  // The ordinary form spells the marker out, as GPT-2's reference encoder does.
  BOOST_TEST(t.encode_ordinary("<|endoftext|>").size() > 1u);

  const auto analysis = t.add_special_token("<|analysis|>");
  const auto guidance = t.add_special_token("<|guidance|>");
  const auto response = t.add_special_token("<|response|>");
  BOOST_TEST(analysis == 50257);
  BOOST_TEST(guidance == 50258);
  BOOST_TEST(response == 50259);
  BOOST_TEST(t.vocab_size() == 50260);
  BOOST_TEST(t.add_special_token("<|analysis|>") == analysis);
  BOOST_TEST(t.add_special_token("<|endoftext|>") == 50256);
  BOOST_TEST(t.token_to_id("<|guidance|>").value() == guidance);

  const std::string text = "<|analysis|>Think.<|guidance|> Be kind.<|response|>Hello<|endoftext|>";
  const ids_t ids = t.encode(text);
  BOOST_TEST(ids.front() == analysis);
  BOOST_TEST(ids.back() == 50256);
  BOOST_TEST(std::count(ids.begin(), ids.end(), response) == 1);
  BOOST_TEST(t.decode(ids) == text);
  BOOST_TEST(t.encode("x<|response|>").size() == 2u);

  // The longer of two specials starting at the same place wins.
  const auto longer = t.add_special_token("<|analysis|>!");
  BOOST_TEST(t.encode("<|analysis|>!<|analysis|>") == (ids_t{longer, analysis}));
  expect_error<value_error>([&] { t.add_special_token(""); }, {"empty"});
  // The shared instance is untouched by the copy's registrations.
  BOOST_TEST(gpt2().vocab_size() == 50257);
}

BOOST_AUTO_TEST_CASE(bad_ids_and_text_are_value_errors) {
  const Tokenizer& t = gpt2();
  expect_error<value_error>([&] { t.decode(ids_t{15496, 50257}); }, {"50257", "position 1", "size 50257"});
  expect_error<value_error>([&] { t.decode(ids_t{-3}); }, {"-3", "50257"});
  expect_error<value_error>([&] { t.id_to_token(99999); }, {"99999", "50257"});
  expect_error<value_error>([&] { t.encode("ok \xC3\x28 no"); }, {"UTF-8", "byte 3"});
  expect_error<value_error>([&] { t.encode("<|endoftext|>ab\xFF"); }, {"UTF-8", "byte 15"});
  expect_error<value_error>([&] { t.encode("\xED\xA0\x80"); }, {"UTF-8", "byte 0"});  // a surrogate
}

BOOST_AUTO_TEST_CASE(tokenizer_json_matches_vocab_and_merges) {
  const Tiny tiny;
  TempDir a, b, c;
  a.write("vocab.json", io::json::dump(tiny.vocab));
  a.write("merges.txt", tiny.merges_txt());
  b.write("tokenizer.json", tiny.tokenizer_json(false));
  c.write("tokenizer.json", tiny.tokenizer_json(true));
  c.write("vocab.json", "not used: tokenizer.json wins");
  const Tokenizer ta = Tokenizer::from_dir(a.path), tb = Tokenizer::from_dir(b.path), tc = Tokenizer::from_dir(c.path);
  for (const std::string text : {"hello world", "hello, hello world!  ", "yellow old\tworld\n", "\xE2\x82\xAC 5"}) {
    BOOST_TEST_CONTEXT(text) {
      const ids_t ids = ta.encode(text);
      BOOST_TEST(tb.encode(text) == ids, boost::test_tools::per_element());
      BOOST_TEST(tc.encode(text) == ids, boost::test_tools::per_element());
      BOOST_TEST(ta.decode(ids) == text);
    }
  }
  const auto hello = ta.token_to_id("hello").value(), world = ta.token_to_id("\xC4\xA0world").value();
  BOOST_TEST(ta.encode("hello world") == (ids_t{hello, world}));
  BOOST_TEST(ta.vocab_size() == 256 + 9);
}

BOOST_AUTO_TEST_CASE(tokenizer_json_added_tokens) {
  const Tiny tiny;
  TempDir d;
  const auto file = d.write("tokenizer.json", tiny.tokenizer_json(false,
                                                                  "[{\"id\": 300, \"content\": \"<|endoftext|>\", "
                                                                  "\"special\": true}, {\"id\": 280, \"content\": "
                                                                  "\"<pad>\", \"special\": true}]"));
  Tokenizer t = Tokenizer::from_tokenizer_json(file);
  BOOST_TEST(t.vocab_size() == 301);
  BOOST_TEST(t.encode("hello<pad><|endoftext|>") == (ids_t{t.token_to_id("hello").value(), 280, 300}));
  BOOST_TEST(t.add_special_token("<|response|>") == 301);
  BOOST_TEST(t.decode(ids_t{280, 301}) == "<pad><|response|>");
  expect_error<value_error>([&] { t.decode(ids_t{290}); }, {"290", "unassigned"});
}

BOOST_AUTO_TEST_CASE(malformed_files_are_io_errors) {
  const Tiny tiny;
  TempDir d;
  const auto vocab = d.write("vocab.json", io::json::dump(tiny.vocab));
  const auto merges = d.write("merges.txt", tiny.merges_txt());

  const auto bad_merges = d.write("bad_merges.txt", "#version: 0.2\nh e\nl l x\n");
  expect_error<io_error>([&] { Tokenizer::from_vocab_merges(vocab, bad_merges); }, {"bad_merges.txt", "line 3", "two tokens"});
  const auto unknown = d.write("unknown.txt", "h e\nzz q\n");
  expect_error<io_error>([&] { Tokenizer::from_vocab_merges(vocab, unknown); }, {"unknown.txt", "line 2", "'zz'"});
  const auto not_object = d.write("list.json", "[1, 2]");
  expect_error<io_error>([&] { Tokenizer::from_vocab_merges(not_object, merges); }, {"list.json", "object"});
  const auto bad_id = d.write("bad_id.json", "{\"a\": 0, \"b\": \"one\"}");
  expect_error<io_error>([&] { Tokenizer::from_vocab_merges(bad_id, merges); }, {"bad_id.json", "'b'", "\"one\""});
  const auto dup_id = d.write("dup_id.json", "{\"a\": 0, \"b\": 0}");
  expect_error<io_error>([&] { Tokenizer::from_vocab_merges(dup_id, merges); }, {"dup_id.json", "id 0", "'a'", "'b'"});
  const auto broken = d.write("broken.json", "{\"a\": 0,");
  expect_error<io_error>([&] { Tokenizer::from_vocab_merges(broken, merges); }, {"broken.json"});
  expect_error<io_error>([&] { Tokenizer::from_vocab_merges(d.path / "missing.json", merges); }, {"missing.json"});
  expect_error<io_error>([&] { Tokenizer::from_vocab_merges(vocab, d.path / "missing.txt"); }, {"missing.txt"});
  expect_error<io_error>([&] { Tokenizer::from_dir(d.path / "nowhere"); }, {"nowhere", "tokenizer.json"});

  std::string text = tiny.tokenizer_json(false);
  const auto edit = [&](const std::string& from, const std::string& to) {
    std::string s = text;
    const auto at = s.find(from);
    BOOST_REQUIRE(at != std::string::npos);
    return d.write("tokenizer.json", s.replace(at, from.size(), to));
  };
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(edit("\"type\": \"BPE\"", "\"type\": \"WordPiece\"")); },
                         {"tokenizer.json", "model.type", "WordPiece"});
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(edit("\"byte_fallback\": false", "\"byte_fallback\": true")); },
                         {"tokenizer.json", "byte_fallback"});
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(edit("\"type\": \"ByteLevel\", \"add_prefix_space\"",
                                                                   "\"type\": \"Metaspace\", \"add_prefix_space\"")); },
                         {"tokenizer.json", "pre_tokenizer", "Metaspace"});
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(edit("\"h e\"", "\"h e x\"")); },
                         {"tokenizer.json", "model.merges[0]", "two tokens"});
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(edit("\"h e\"", "[\"h\"]")); },
                         {"tokenizer.json", "model.merges[0]"});
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(edit("\"added_tokens\": []",
                                                                   "\"added_tokens\": [{\"id\": 5, \"content\": \"<x>\"}]")); },
                         {"tokenizer.json", "added_tokens[0]", "id 5", "<x>"});
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(edit("\"added_tokens\": []", "\"added_tokens\": [{\"id\": 1}]")); },
                         {"tokenizer.json", "added_tokens[0]", "content"});
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(edit("\"model\": {", "\"model_\": {")); },
                         {"tokenizer.json", "model"});
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(edit("\"normalizer\": null", "\"normalizer\": {\"type\": \"NFKC\"}")); },
                         {"tokenizer.json", "normalizer", "NFKC"});
}

// SentencePiece BPE (Llama's tokenizer.json layout, byte fallback) against sp.encode's ids.
BOOST_AUTO_TEST_CASE(sentencepiece_ids_match_sentencepiece) {
  const Tokenizer t = Tokenizer::from_dir(fs::path(MOTE_TEST_FIXTURES) / "tokenizer_sp");
  BOOST_TEST(t.vocab_size() == 800);
  const auto cases = read_fixture("tokenizer_sp.txt");
  BOOST_REQUIRE_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT("text " << io::json::dump(io::json::Value(c.text))) {
      const ids_t got = t.encode(c.text);
      BOOST_TEST(got == c.ids, boost::test_tools::per_element());
      BOOST_TEST(t.decode(got) == c.text);
    }
  }
  // Byte fallback: a character outside the vocabulary becomes its UTF-8 bytes' <0xNN> tokens.
  const ids_t smile = t.encode("\xF0\x9F\x98\x80");
  BOOST_REQUIRE_EQUAL(smile.size(), 5u);
  BOOST_TEST(t.id_to_token(smile[1]) == "<0xF0>");
  BOOST_TEST(t.id_to_token(smile[4]) == "<0x80>");
  BOOST_TEST(t.decode(ids_t{smile[2]}) == "\x9F");
}

BOOST_AUTO_TEST_CASE(sentencepiece_special_tokens_and_errors) {
  const fs::path dir = fs::path(MOTE_TEST_FIXTURES) / "tokenizer_sp";
  Tokenizer t = Tokenizer::from_dir(dir);
  const auto bos = t.token_to_id("<s>").value(), eos = t.token_to_id("</s>").value();
  BOOST_TEST(t.is_special(bos));
  // Each text segment between special tokens gets its own "▁", as in Hugging Face's legacy Llama.
  ids_t expected{bos};
  for (const auto id : t.encode("hello")) expected.push_back(id);
  expected.push_back(eos);
  BOOST_TEST(t.encode("<s>hello</s>") == expected, boost::test_tools::per_element());
  BOOST_TEST(t.decode(expected) == "<s> hello</s>");
  BOOST_TEST(t.add_special_token("<|response|>") == 800);
  BOOST_TEST(t.decode(t.encode("<|response|>ok")) == "<|response|> ok");
  expect_error<value_error>([&] { t.encode("ok\xFFno"); }, {"UTF-8", "byte 2"});
  expect_error<value_error>([&] { t.decode(ids_t{801}); }, {"801", "801"});

  std::ifstream in(dir / "tokenizer.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto at = text.find("\"<0x41>\"");
  BOOST_REQUIRE(at != std::string::npos);
  TempDir d;
  // Without byte fallback, a run of unknown characters is one fused <unk>.
  std::string no_fallback = text;
  const auto flag = no_fallback.find("\"byte_fallback\": true");
  BOOST_REQUIRE(flag != std::string::npos);
  no_fallback.replace(flag, 21, "\"byte_fallback\": false");
  const Tokenizer u = Tokenizer::from_tokenizer_json(d.write("tokenizer.json", no_fallback));
  const auto unk = u.token_to_id("<unk>").value();
  const ids_t cjk = u.encode("\xE6\x97\xA5\xE6\x9C\xAC");
  BOOST_TEST(std::count(cjk.begin(), cjk.end(), unk) == 1);
  BOOST_TEST(cjk.back() == unk);
  BOOST_TEST(u.encode("the dog") == t.encode("the dog"), boost::test_tools::per_element());

  const auto file = d.write("tokenizer.json", text.replace(at, 8, "\"<0x41x>\""));
  expect_error<io_error>([&] { Tokenizer::from_tokenizer_json(file); }, {"tokenizer.json", "byte_fallback", "<0x00>..<0xFF>"});
}

BOOST_AUTO_TEST_SUITE_END()
