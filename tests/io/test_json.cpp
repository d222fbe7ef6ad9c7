// The JSON reader and writer: RFC 8259 acceptance and rejection, error messages naming source,
// offset and path, exact integers, order-keeping objects and round-trips through dump.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "mote/io/json.hpp"
#include "op_harness.hpp"

using namespace mote;
namespace json = mote::io::json;
using testing::expect_error;

BOOST_AUTO_TEST_SUITE(test_json)

BOOST_AUTO_TEST_CASE(parses_every_kind_of_value) {
  const auto v = json::parse(R"( {"b": true, "n": null, "i": -42, "d": 2.5e-3, "s": "hi", "a": [1, [], {}], "o": {"x": 0}} )");
  BOOST_TEST(v.is_object());
  BOOST_TEST(v.size() == 7u);
  BOOST_TEST(v.at("b").as_bool());
  BOOST_TEST(v.at("n").is_null());
  BOOST_TEST(v.at("i").as_int64() == -42);
  BOOST_TEST(v.at("i").is_integer());
  BOOST_TEST(v.at("d").as_double() == 2.5e-3);
  BOOST_TEST(!v.at("d").is_integer());
  BOOST_TEST(v.at("s").as_string() == "hi");
  BOOST_TEST(v.at("a").size() == 3u);
  BOOST_TEST(v.at("a")[1].is_array());
  BOOST_TEST(v.at("a")[2].is_object());
  BOOST_TEST(v.at("o").at("x").as_int64() == 0);
  BOOST_TEST(v.contains("s"));
  BOOST_TEST(!v.contains("missing"));
  BOOST_TEST(v.find("missing") == nullptr);
  // Insertion order is kept.
  std::vector<std::string> keys;
  for (const auto& [k, _] : v.as_object()) keys.push_back(k);
  BOOST_TEST((keys == std::vector<std::string>{"b", "n", "i", "d", "s", "a", "o"}));
}

BOOST_AUTO_TEST_CASE(integers_stay_exact) {
  const auto v = json::parse("[9223372036854775807, -9223372036854775808, 9007199254740993, 1e4, 3.0, 1e30]");
  BOOST_TEST(v[0].as_int64() == std::numeric_limits<std::int64_t>::max());
  BOOST_TEST(v[1].as_int64() == std::numeric_limits<std::int64_t>::min());
  BOOST_TEST(v[2].as_int64() == 9007199254740993LL);  // not representable as a double
  BOOST_TEST(v[3].as_int64() == 10000);
  BOOST_TEST(v[4].as_int64() == 3);
  expect_error<io_error>([&] { (void)v[5].as_int64(); }, {"expected an integer", "[5]"});
  // Too large for int64: kept as a double.
  const auto big = json::parse("18446744073709551616");
  BOOST_TEST(!big.is_integer());
  BOOST_TEST(big.as_double() == 18446744073709551616.0);
}

BOOST_AUTO_TEST_CASE(numbers_at_the_edges_of_double) {
  BOOST_TEST(json::parse("1e-400").as_double() == 0.0);
  BOOST_TEST(std::signbit(json::parse("-1e-400").as_double()));
  BOOST_TEST(json::parse("0.0000000000000000000000000000000000000001e-300").as_double() == 0.0);
  expect_error<io_error>([] { json::parse("1e400", "n.json"); }, {"n.json", "byte 0", "range of a double"});
  expect_error<io_error>([] { json::parse("-123456789e999"); }, {"range of a double"});
  BOOST_TEST(json::parse("-0").as_int64() == 0);
}

BOOST_AUTO_TEST_CASE(strings_decode_escapes_and_utf8) {
  const auto v = json::parse(R"(["a\"b\\c\/d\b\f\n\r\t", "\u00e9\u4e2d", "\ud83d\ude00", "é中😀"])");
  BOOST_TEST(v[0].as_string() == "a\"b\\c/d\b\f\n\r\t");
  BOOST_TEST(v[1].as_string() == "\xC3\xA9\xE4\xB8\xAD");
  BOOST_TEST(v[2].as_string() == "\xF0\x9F\x98\x80");
  BOOST_TEST(v[3].as_string() == "\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80");
}

BOOST_AUTO_TEST_CASE(rejects_what_rfc_8259_rejects) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "expected a value"},
      {"[1,]", "expected a value"},
      {"{\"a\":1,}", "expected a string key"},
      {"{'a':1}", "expected a string key"},
      {"[1 2]", "expected ',' or ']'"},
      {"{\"a\" 1}", "expected ':'"},
      {"01", "leading zeros"},
      {"1.", "after the decimal point"},
      {".5", "expected a value"},
      {"1e", "exponent"},
      {"+1", "expected a value"},
      {"NaN", "expected a value"},
      {"Infinity", "expected a value"},
      {"tru", "literal 'true'"},
      {"nul", "literal 'null'"},
      {"[1] x", "end of the document"},
      {"\"abc", "close the string"},
      {"\"a\tb\"", "control characters"},
      {"\"\\x\"", "escape character"},
      {"\"\\u12g4\"", "hex digits"},
      {"\"\\ud800\"", "low surrogate"},
      {"\"\\udc00\"", "unpaired low surrogate"},
      {"\"\\ud800\\u0041\"", "low surrogate"},
      {"\"\xC0\xAF\"", "UTF-8"},          // overlong
      {"\"\xED\xA0\x80\"", "UTF-8"},      // encoded surrogate
      {"\"\xF4\x90\x80\x80\"", "UTF-8"},  // above U+10FFFF
      {"\"\xE4\xB8\"", "UTF-8"},          // truncated
      {"{\"a\":1,\"a\":2}", "duplicate key \"a\""},
      {std::string("[1]\0", 4), "end of the document"},
  };
  for (const auto& [text, needle] : bad) {
    BOOST_TEST_CONTEXT("input " << text) { expect_error<io_error>([&] { json::parse(text, "doc.json"); }, {"doc.json", needle}); }
  }
}

BOOST_AUTO_TEST_CASE(errors_name_the_byte_offset_and_line) {
  const auto msg = testing::error_message<io_error>([] { json::parse("{\n  \"a\": [1, 2,]\n}", "cfg.json"); });
  BOOST_TEST(testing::contains(msg, "cfg.json: byte 15 (line 2, column 14)"), msg);
  BOOST_TEST(testing::contains(msg, "got ']'"), msg);
}

BOOST_AUTO_TEST_CASE(depth_limit_stops_hostile_nesting) {
  std::string ok(json::max_depth, '[');
  ok += std::string(json::max_depth, ']');
  BOOST_TEST(json::parse(ok).is_array());
  std::string deep(100000, '[');
  expect_error<io_error>([&] { json::parse(deep); }, {"nesting deeper than 512"});
  std::string deep_obj;
  for (int i = 0; i < 1000; ++i) deep_obj += "{\"a\":";
  expect_error<io_error>([&] { json::parse(deep_obj); }, {"nesting deeper than 512"});
}

BOOST_AUTO_TEST_CASE(accessor_errors_name_the_path_and_types) {
  const auto v = json::parse(R"({"n_head": "12", "layers": [{"dim": 1.5}], "o": {"p": {}}})", "config.json");
  expect_error<io_error>([&] { (void)v.at("n_head").as_int64(); },
                         {"config.json: \"n_head\": expected an integer, got a string"});
  expect_error<io_error>([&] { (void)v.at("layers")[0].at("dim").as_string(); },
                         {"config.json: \"layers\"[0].\"dim\": expected a string, got a number"});
  expect_error<io_error>([&] { (void)v.at("o").at("p").at("q"); }, {"config.json: \"o\".\"p\": missing key \"q\""});
  expect_error<io_error>([&] { (void)v.at("layers")[3]; }, {"\"layers\"", "index 3 is out of range"});
  expect_error<io_error>([&] { (void)v.as_array(); }, {"config.json: expected an array, got an object"});
  expect_error<io_error>([&] { (void)v.at("n_head").size(); }, {"expected an array or an object"});
  expect_error<io_error>([&] { (void)v.at("n_head").as_bool(); }, {"expected a boolean"});
  expect_error<io_error>([&] { (void)json::Value(1).as_string(); }, {"json value: expected a string, got a number"});
}

BOOST_AUTO_TEST_CASE(large_objects_are_indexed_and_ordered) {
  std::string text = "{";
  for (int i = 0; i < 1000; ++i) text += (i ? ",\"k" : "\"k") + std::to_string(999 - i) + "\":" + std::to_string(i);
  text += "}";
  const auto v = json::parse(text);
  BOOST_TEST(v.size() == 1000u);
  BOOST_TEST(v.at("k0").as_int64() == 999);
  BOOST_TEST(v.as_object().front().first == "k999");
  expect_error<io_error>([&] { json::parse("{" + text.substr(1, text.size() - 2) + ",\"k5\":1}"); }, {"duplicate key \"k5\""});
}

BOOST_AUTO_TEST_CASE(building_and_dumping_round_trips) {
  auto v = json::Value::object({{"name", "mote"},
                                {"n", 3},
                                {"x", 0.1},
                                {"one", 1.0},
                                {"big", std::int64_t{-9007199254740993LL}},
                                {"list", std::vector<std::int64_t>{1, 2, 3}},
                                {"names", std::vector<std::string>{"a", "b"}},
                                {"nested", json::Value::object({{"t", true}, {"z", nullptr}})},
                                {"esc", "q\"\\\n\x01 é"},
                                {"empty", json::Value::array()}});
  v.set("n", 4);
  v.set("added", json::Value::array({1, "two", 3.5}));
  BOOST_TEST(v.at("n").as_int64() == 4);
  for (int indent : {-1, 0, 2}) {
    const std::string text = json::dump(v, indent);
    const auto back = json::parse(text);
    BOOST_TEST((back == v), "indent " << indent << ": " << text);
    BOOST_TEST(json::dump(back, indent) == text);
  }
  BOOST_TEST(json::dump(v.at("one")) == "1.0");
  BOOST_TEST(json::dump(json::Value::object({{"a", json::Value::array({1, 2})}})) == "{\"a\":[1,2]}");
  BOOST_TEST(json::dump(json::Value::object({{"a", 1}}), 2) == "{\n  \"a\": 1\n}");
  BOOST_TEST(json::dump(json::Value("\x1f")) == "\"\\u001f\"");
  expect_error<value_error>([] { json::dump(json::Value(std::nan(""))); }, {"cannot represent"});
  expect_error<value_error>([] { json::Value::object({{"a", 1}, {"a", 2}}); }, {"duplicate key \"a\""});
}

BOOST_AUTO_TEST_CASE(doubles_round_trip_bit_exactly) {
  const std::vector<double> values = {0.1, 1.0 / 3, 1e-5, 6.02214076e23, 5e-324, 1.7976931348623157e308, -2.5, 1e21};
  for (double d : values) {
    const double back = json::parse(json::dump(json::Value(d))).as_double();
    BOOST_TEST(back == d);
  }
}

BOOST_AUTO_TEST_CASE(parse_file_names_the_path) {
  const auto dir = std::filesystem::temp_directory_path() / "mote_test_json";
  std::filesystem::create_directories(dir);
  const auto good = dir / "good.json";
  const auto bad = dir / "bad.json";
  std::ofstream(good) << "\xEF\xBB\xBF{\"a\": [1]}";
  std::ofstream(bad) << "{\"a\": }";
  BOOST_TEST(json::parse_file(good).at("a")[0].as_int64() == 1);
  expect_error<io_error>([&] { json::parse_file(bad); }, {bad.string(), "byte 6"});
  expect_error<io_error>([&] { json::parse_file(dir / "none.json"); }, {"cannot open", "none.json"});
  expect_error<io_error>([&] { (void)json::parse_file(good).at("a")[0].as_string(); },
                         {good.string() + ": \"a\"[0]: expected a string"});
  // write_file: indented, newline-terminated, atomic (no temporary left behind), replaces the old file.
  const auto out = dir / "out.json";
  json::write_file(out, json::Value::object({{"a", 1}}));
  json::write_file(out, json::Value::object({{"b", json::Value::array({true})}}));
  std::ifstream in(out);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  BOOST_TEST(text == "{\n  \"b\": [\n    true\n  ]\n}\n");
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  BOOST_TEST(files == 3);
  expect_error<io_error>([&] { json::write_file(dir / "no" / "x.json", json::Value()); }, {"x.json"});
  std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
