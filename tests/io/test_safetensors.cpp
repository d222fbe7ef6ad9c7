// safetensors: bytes laid out exactly per the format, bit-exact save/load round-trips, half-precision
// conversions (ties to even, subnormals, inf, NaN), every header validation with its message, and
// sharded checkpoints through model.safetensors.index.json.
#include <boost/test/unit_test.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mote/io/safetensors.hpp"
#include "op_harness.hpp"

using namespace mote;
namespace st = mote::io::safetensors;
namespace fs = std::filesystem;
using testing::expect_error;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / ("mote_test_safetensors_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::vector<std::uint8_t> bytes_of(const std::string& header, const std::vector<std::uint8_t>& data = {}) {
  std::vector<std::uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>((header.size() >> (8 * i)) & 0xff);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_file(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

st::File parse(const std::vector<std::uint8_t>& bytes) { return st::File::from_bytes(bytes, "mem.safetensors"); }

std::vector<std::uint8_t> f32_bytes(std::initializer_list<float> v) {
  std::vector<std::uint8_t> out;
  for (float f : v) {
    const auto u = std::bit_cast<std::uint32_t>(f);
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(u >> (8 * i)));
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_safetensors)

BOOST_AUTO_TEST_CASE(reads_a_file_laid_out_by_hand) {
  // Two tensors and metadata, exactly as the format describes them.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"I64","shape":[1,1],"data_offsets":[8,16]}})";
  auto data = f32_bytes({1.5f, -2.0f});
  for (int i = 0; i < 8; ++i) data.push_back(i == 0 ? 7 : 0);
  const auto bytes = bytes_of(header, data);
  const auto f = parse(bytes);
  BOOST_TEST((f.names() == std::vector<std::string>{"b", "a"}));
  BOOST_TEST(f.has("a"));
  BOOST_TEST(!f.has("c"));
  BOOST_TEST(f.info("b").dtype == st::Dtype::F32);
  BOOST_TEST((f.info("a").shape == std::vector<std::int64_t>{1, 1}));
  BOOST_TEST(f.metadata().size() == 1u);
  BOOST_TEST(f.metadata()[0].second == "pt");
  BOOST_TEST((f.tensor<float>("b").to_vector() == std::vector<float>{1.5f, -2.0f}));
  BOOST_TEST((f.tensor<double>("b").to_vector() == std::vector<double>{1.5, -2.0}));
  BOOST_TEST(f.tensor<std::int32_t>("a").item() == 7);
  BOOST_TEST(f.load_tensor<std::int32_t>("a").item() == 7);
  BOOST_TEST(f.tensor<float>("a").item() == 7.0f);
  BOOST_TEST(f.raw("b").size() == 8u);
  expect_error<io_error>([&] { (void)f.tensor<std::int32_t>("b"); }, {"mem.safetensors", "'b'", "F32", "int32"});
  expect_error<io_error>([&] { (void)f.info("zz"); }, {"mem.safetensors", "no tensor 'zz'"});
}

BOOST_AUTO_TEST_CASE(save_writes_the_reference_layout) {
  TempDir dir;
  const auto p = dir.path / "x.safetensors";
  st::save<float>(p, {{"w", Tensor<float>::from_vector({2}, {1.0f, 2.0f})}}, {{"format", "pt"}});
  const auto bytes = read_file(p);
  const std::uint64_t n = st::detail::load_le(bytes.data(), 8);
  BOOST_TEST(n % 8 == 0u);
  BOOST_TEST(bytes.size() == 8 + n + 8);
  const std::string header(reinterpret_cast<const char*>(bytes.data() + 8), n);
  BOOST_TEST(header.rfind(R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 0) == 0u,
             header);
  // Padding after the closing brace is spaces only.
  BOOST_TEST(header.find_first_not_of(' ', header.rfind('}') + 1) == std::string::npos);
  BOOST_TEST(std::memcmp(bytes.data() + 8 + n, f32_bytes({1.0f, 2.0f}).data(), 8) == 0);
  // No temporary file is left beside it.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++files;
  BOOST_TEST(files == 1);
}

BOOST_AUTO_TEST_CASE(round_trips_bit_exactly) {
  TempDir dir;
  Rng rng(7);
  const auto a = Tensor<float>::normal({3, 4}, 0, 1, rng);
  const auto b = Tensor<float>::from_vector({5}, {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                                                   std::numeric_limits<float>::denorm_min(), 3.4e38f});
  const auto c = Tensor<float>::zeros({0, 3});
  const auto scalar = Tensor<float>::full({}, 42.0f);
  const auto view = a.transpose(0, 1);  // a non-contiguous view is saved as its packed values
  st::save<float>(dir.path / "f.safetensors", {{"a", a}, {"b", b}, {"c", c}, {"s", scalar}, {"t", view}});
  const auto f = st::File::open(dir.path / "f.safetensors");
  BOOST_TEST((f.names() == std::vector<std::string>{"a", "b", "c", "s", "t"}));
  const auto same_bits = [](const std::vector<float>& x, const std::vector<float>& y) {
    return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * 4) == 0);
  };
  BOOST_TEST(same_bits(f.tensor<float>("a").to_vector(), a.to_vector()));
  BOOST_TEST(same_bits(f.tensor<float>("b").to_vector(), b.to_vector()));
  BOOST_TEST(f.tensor<float>("c").numel() == 0);
  BOOST_TEST((f.tensor<float>("c").shape() == Shape{0, 3}));
  BOOST_TEST(f.tensor<float>("s").rank() == 0);
  BOOST_TEST(f.tensor<float>("s").item() == 42.0f);
  BOOST_TEST((f.tensor<float>("t").shape() == Shape{4, 3}));
  BOOST_TEST(same_bits(f.tensor<float>("t").to_vector(), view.to_vector()));

  const auto d = Tensor<double>::normal({2, 3, 2}, 0, 1, rng);
  st::save<double>(dir.path / "d.safetensors", {{"d", d}});
  BOOST_TEST((st::File::open(dir.path / "d.safetensors").tensor<double>("d").to_vector() == d.to_vector()));

  // Values representable in BF16 / F16 survive those dtypes exactly.
  const auto h = Tensor<float>::from_vector({6}, {1.0f, -0.5f, 3.140625f, 65504.0f, 0x1p-24f, 0x1p-14f});
  const auto hbf = Tensor<float>::from_vector({6}, {1.0f, -0.5f, 3.140625f, 65280.0f, 0x1p-24f, 0x1p-133f});
  st::save<float>(dir.path / "bf.safetensors", {{"h", hbf}}, {}, st::Dtype::BF16);
  st::save<float>(dir.path / "hf.safetensors", {{"h", h}}, {}, st::Dtype::F16);
  const auto hb = st::File::open(dir.path / "bf.safetensors");
  BOOST_TEST(hb.info("h").dtype == st::Dtype::BF16);
  BOOST_TEST(hb.raw("h").size() == 12u);
  BOOST_TEST((hb.tensor<float>("h").to_vector() == hbf.to_vector()));
  BOOST_TEST((st::File::open(dir.path / "hf.safetensors").tensor<float>("h").to_vector() == h.to_vector()));

  const auto ids = Tensor<std::int32_t>::from_vector({4}, {0, -1, 2147483647, -2147483647 - 1});
  st::save<std::int32_t>(dir.path / "i.safetensors", {{"ids", ids}}, {}, st::Dtype::I64);
  const auto fi = st::File::open(dir.path / "i.safetensors");
  BOOST_TEST(fi.info("ids").dtype == st::Dtype::I64);
  BOOST_TEST((fi.tensor<std::int32_t>("ids").to_vector() == ids.to_vector()));
  expect_error<io_error>([&] { (void)fi.tensor<std::uint8_t>("ids"); }, {"'ids'", "element 1 = -1", "uint8"});
}

BOOST_AUTO_TEST_CASE(save_rejects_bad_requests) {
  TempDir dir;
  const auto t = Tensor<float>::zeros({1});
  expect_error<value_error>([&] { st::save<float>(dir.path / "a", {{"x", t}, {"x", t}}); }, {"duplicate tensor name 'x'"});
  expect_error<value_error>([&] { st::save<float>(dir.path / "a", {{"__metadata__", t}}); }, {"reserved"});
  expect_error<value_error>([&] { st::save<float>(dir.path / "a", {{"x", t}}, {}, st::Dtype::I32); }, {"float32", "I32"});
  expect_error<value_error>([&] { st::save<std::int32_t>(dir.path / "a", {{"x", Tensor<std::int32_t>::full({1}, 300)}}, {}, st::Dtype::U8); },
                            {"'x'", "300", "U8"});
  expect_error<value_error>([&] { st::save<float>(dir.path / "a", {{"x", Tensor<float>()}}); }, {"undefined"});
  expect_error<io_error>([&] { st::save<float>(dir.path / "no" / "dir" / "a", {{"x", t}}); }, {"no/dir/a"});
  BOOST_TEST(!fs::exists(dir.path / "a"));
}

BOOST_AUTO_TEST_CASE(half_precision_conversions) {
  using st::detail::double_to_bf16;
  using st::detail::double_to_f16;
  BOOST_TEST(double_to_f16(1.0) == 0x3C00);
  BOOST_TEST(double_to_f16(-2.0) == 0xC000);
  BOOST_TEST(double_to_f16(65504.0) == 0x7BFF);
  BOOST_TEST(double_to_f16(65519.99) == 0x7BFF);
  BOOST_TEST(double_to_f16(65520.0) == 0x7C00);  // the tie rounds to even: infinity
  BOOST_TEST(double_to_f16(1e10) == 0x7C00);
  BOOST_TEST(double_to_f16(-INFINITY) == 0xFC00);
  BOOST_TEST(double_to_f16(0x1p-14) == 0x0400);
  BOOST_TEST(double_to_f16(0x1p-24) == 0x0001);
  BOOST_TEST(double_to_f16(0x1p-25) == 0x0000);        // tie to even (zero)
  BOOST_TEST(double_to_f16(0x1.8p-25) == 0x0001);      // above the tie
  BOOST_TEST(double_to_f16(3 * 0x1p-25) == 0x0002);    // 1.5 units: tie to even (2)
  BOOST_TEST(double_to_f16(0x1.ffcp-15) == 0x0400);    // the largest subnormal rounds up into the normals
  BOOST_TEST(double_to_f16(1.0 + 0x1p-11) == 0x3C00);  // tie, even stays
  BOOST_TEST(double_to_f16(1.0 + 3 * 0x1p-11) == 0x3C02);
  BOOST_TEST(double_to_f16(-0.0) == 0x8000);
  BOOST_TEST(double_to_f16(1e-300) == 0x0000);
  BOOST_TEST((double_to_f16(std::nan("")) & 0x7C00) == 0x7C00);
  BOOST_TEST((double_to_f16(std::nan("")) & 0x03FF) != 0);
  BOOST_TEST(double_to_bf16(1.0) == 0x3F80);
  BOOST_TEST(double_to_bf16(1.0 + 0x1p-8) == 0x3F80);
  BOOST_TEST(double_to_bf16(1.0 + 3 * 0x1p-8) == 0x3F82);
  BOOST_TEST(double_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);
  BOOST_TEST(double_to_bf16(0x1p-133) == 0x0001);
  BOOST_TEST(double_to_bf16(0x1p-134) == 0x0000);
  BOOST_TEST((double_to_bf16(-std::nan("")) & 0xFFC0) == 0xFFC0);
  BOOST_TEST(st::detail::f16_to_double(0x0001) == 0x1p-24);
  BOOST_TEST(st::detail::f16_to_double(0x7BFF) == 65504.0);
  BOOST_TEST(std::isinf(st::detail::f16_to_double(0xFC00)));
  BOOST_TEST(std::isnan(st::detail::bf16_to_double(0x7FC1)));
  // Every half value widens exactly and narrows back to itself.
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = static_cast<std::uint16_t>(b);
    const double x = st::detail::f16_to_double(h), y = st::detail::bf16_to_double(h);
    if (std::isnan(x)) BOOST_TEST(std::isnan(st::detail::f16_to_double(double_to_f16(x))));
    else if (double_to_f16(x) != h) BOOST_FAIL("f16 bits " << b);
    if (std::isnan(y)) BOOST_TEST(std::isnan(st::detail::bf16_to_double(double_to_bf16(y))));
    else if (double_to_bf16(y) != h) BOOST_FAIL("bf16 bits " << b);
  }
  // float -> bf16 agrees with the classic integer rounding for every non-NaN float drawn.
  std::mt19937 gen(3);
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t u = gen();
    const float f = std::bit_cast<float>(u);
    if (std::isnan(f)) continue;
    const auto expected = static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    if (double_to_bf16(f) != expected) BOOST_FAIL("bf16 of float bits " << u);
  }
}

BOOST_AUTO_TEST_CASE(validation_names_file_tensor_and_problem) {
  const auto ok_data = f32_bytes({1, 2});
  struct Case {
    std::vector<std::uint8_t> bytes;
    std::vector<std::string> needles;
  };
  auto with_len = [](std::uint64_t n, std::size_t total) {
    std::vector<std::uint8_t> b(total, ' ');
    for (int i = 0; i < 8; ++i) b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
    return b;
  };
  const std::vector<Case> cases = {
      {{1, 2, 3}, {"too short (3 bytes)"}},
      {with_len(100, 20), {"header length 100", "past the end of the file (20 bytes)"}},
      {with_len(~std::uint64_t{0}, 20), {"exceeds the 100 MB limit"}},
      {bytes_of("[1]"), {"expected a JSON object"}},
      {bytes_of("{\"a\":"), {"header", "byte 5", "expected a value"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", ok_data),
       {"duplicate key \"a\""}},
      {bytes_of(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", ok_data), {"tensor 'a'", "unknown dtype \"Q4\""}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", ok_data), {"\"a\".\"shape\"[0]", "non-negative"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", ok_data), {"\"a\".\"shape\"[0]", "got a string"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", ok_data), {"tensor 'a'", "not ordered"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", ok_data), {"\"a\".\"data_offsets\"", "[begin, end]"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", ok_data), {"tensor 'a'", "non-negative"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", ok_data), {"tensor 'a'", "past the 8-byte data buffer"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", ok_data), {"tensor 'a'", "span 8 bytes", "needs 12"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", ok_data),
       {"tensor 'a'", "overflows 64 bits"}},
      {bytes_of(R"({"a":{"dtype":"U8","shape":[2305843009213693952, 3],"data_offsets":[0,8]}})", ok_data), {"tensor 'a'", "needs 6917529027641081856"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", ok_data), {"tensor 'a'", "byte size overflows"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", ok_data),
       {"overlap tensor 'a'"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", ok_data), {"tensor 'a'", "gap"}},
      {bytes_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", ok_data), {"cover 4 bytes of the 8-byte"}},
      {bytes_of(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", ok_data), {"tensor 'a'", "missing \"dtype\""}},
      {bytes_of(R"({"a":[]})", ok_data), {"tensor 'a'", "expected an object"}},
      {bytes_of(R"({"__metadata__":{"k":1}})"), {"\"__metadata__\".\"k\"", "string metadata value"}},
      {bytes_of(R"({"__metadata__":[]})"), {"\"__metadata__\"", "object of string values"}},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    BOOST_TEST_CONTEXT("case " << i) {
      std::vector<std::string> needles = cases[i].needles;
      needles.push_back("mem.safetensors");
      const std::string msg = testing::error_message<io_error>([&] { parse(cases[i].bytes); });
      for (const auto& n : needles) BOOST_TEST(testing::contains(msg, n), "'" << msg << "' lacks '" << n << "'");
    }
  }
  // An empty header with no data is a valid (empty) file; rank > 4 is readable as info only.
  BOOST_TEST(parse(bytes_of("{}")).names().empty());
  const auto f5 = parse(bytes_of(R"({"r":{"dtype":"U8","shape":[1,1,1,1,2],"data_offsets":[0,2]}})", {1, 2}));
  BOOST_TEST(f5.info("r").shape.size() == 5u);
  expect_error<io_error>([&] { (void)f5.tensor<std::uint8_t>("r"); }, {"'r'", "rank 5"});
  const auto f8 = parse(bytes_of(R"({"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", {1, 2}));
  expect_error<io_error>([&] { (void)f8.tensor<float>("q"); }, {"'q'", "F8_E4M3", "cannot load"});
}

BOOST_AUTO_TEST_CASE(opening_names_the_path) {
  TempDir dir;
  expect_error<io_error>([&] { st::File::open(dir.path / "absent.safetensors"); }, {"absent.safetensors", "cannot open"});
  expect_error<io_error>([&] { st::File::open(dir.path); }, {"not a regular file"});
  write_file(dir.path / "empty.safetensors", {});
  expect_error<io_error>([&] { st::File::open(dir.path / "empty.safetensors"); }, {"empty.safetensors", "too short (0 bytes)"});
  write_file(dir.path / "bad.safetensors", bytes_of(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", f32_bytes({1, 2})));
  expect_error<io_error>([&] { st::File::open(dir.path / "bad.safetensors"); }, {"bad.safetensors", "tensor 'w'", "needs 4"});
}

BOOST_AUTO_TEST_CASE(reads_files_written_by_the_reference_library) {
  // Fixtures written by Python safetensors (tests/reference/make_model_fixtures.py), when present.
  for (const char* name : {"model_tiny_gpt2.safetensors", "model_tiny_llama.safetensors"}) {
    const fs::path p = fs::path(MOTE_TEST_FIXTURES) / name;
    if (!fs::exists(p)) continue;
    const auto ck = st::Checkpoint::open(p);
    BOOST_TEST(!ck.names().empty());
    for (const auto& n : ck.names()) {
      const auto& info = ck.info(n);
      const auto t = ck.tensor<double>(n);
      BOOST_TEST(t.numel() == info.numel());
      for (double v : t.to_vector()) BOOST_TEST_REQUIRE(std::isfinite(v));
    }
  }
}

BOOST_AUTO_TEST_CASE(checkpoints_single_and_sharded) {
  TempDir dir;
  const auto w1 = Tensor<float>::from_vector({2}, {1, 2});
  const auto w2 = Tensor<float>::from_vector({1, 2}, {3, 4});
  // Single file.
  fs::create_directories(dir.path / "single");
  st::save<float>(dir.path / "single" / "model.safetensors", {{"a", w1}, {"b", w2}}, {{"format", "pt"}});
  const auto single = st::Checkpoint::open(dir.path / "single");
  BOOST_TEST((single.names() == std::vector<std::string>{"a", "b"}));
  BOOST_TEST((single.tensor<float>("b").to_vector() == w2.to_vector()));
  BOOST_TEST(single.metadata().at("format").as_string() == "pt");
  expect_error<io_error>([&] { (void)single.tensor<float>("c"); }, {"no tensor 'c'"});

  // Sharded.
  const auto sh = dir.path / "sharded";
  fs::create_directories(sh);
  st::save<float>(sh / "model-00001-of-00002.safetensors", {{"a", w1}});
  st::save<float>(sh / "model-00002-of-00002.safetensors", {{"b", w2}});
  const auto write_index = [&](const std::string& text) { std::ofstream(sh / "model.safetensors.index.json") << text; };
  write_index(R"({"metadata": {"total_size": 16}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})");
  const auto ck = st::Checkpoint::open(sh);
  BOOST_TEST(ck.has("a"));
  BOOST_TEST(ck.has("b"));
  BOOST_TEST((ck.tensor<float>("a").to_vector() == w1.to_vector()));
  BOOST_TEST((ck.tensor<double>("b").to_vector() == std::vector<double>{3, 4}));
  BOOST_TEST((ck.load_tensor<float>("a").to_vector() == w1.to_vector()));
  BOOST_TEST((ck.info("b").shape == std::vector<std::int64_t>{1, 2}));
  BOOST_TEST(ck.metadata().at("total_size").as_int64() == 16);
  BOOST_TEST((st::Checkpoint::open(sh / "model.safetensors.index.json").names() == std::vector<std::string>{"a", "b"}));

  write_index(R"({"weight_map": {"a": "model-00003-of-00003.safetensors"}})");
  expect_error<io_error>([&] { st::Checkpoint::open(sh); }, {"model.safetensors.index.json", "shard 'model-00003-of-00003.safetensors'",
                                                             "tensor 'a'", "missing"});
  write_index(R"({"weight_map": {"c": "model-00001-of-00002.safetensors"}})");
  expect_error<io_error>([&] { st::Checkpoint::open(sh); }, {"tensor 'c'", "does not hold it"});
  write_index(R"({"weight_map": {"a": "../single/model.safetensors"}})");
  expect_error<io_error>([&] { st::Checkpoint::open(sh); }, {"\"weight_map\".\"a\"", "shard file name"});
  write_index(R"({"weight_map": {"a": 3}})");
  expect_error<io_error>([&] { st::Checkpoint::open(sh); }, {"\"weight_map\".\"a\"", "expected a string"});
  write_index(R"({"metadata": {}})");
  expect_error<io_error>([&] { st::Checkpoint::open(sh); }, {"missing key \"weight_map\""});
  fs::create_directories(dir.path / "nothing");
  expect_error<io_error>([&] { st::Checkpoint::open(dir.path / "nothing"); }, {"nothing", "neither model.safetensors"});
}

BOOST_AUTO_TEST_SUITE_END()
