// Shape, Tensor views and copies, Rng, seeded fills, Eigen interop and allocation poisoning.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "mote/mote.hpp"
#include "op_harness.hpp"

using namespace mote;
using testing::expect_error;

namespace {

// 0, 1, 2, ... in row-major order, so each element names its own packed position.
Tensor<double> iota(const Shape& shape) {
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  std::iota(v.begin(), v.end(), 0.0);
  return Tensor<double>::from_vector(shape, v);
}

template <class T>
concept eigen_mappable = requires(T&& t) {
  eigen_map(std::forward<T>(t));
};

struct PoisonOn {
  PoisonOn() { debug::poison_allocations = true; }
  ~PoisonOn() { debug::poison_allocations = false; }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(test_tensor)

BOOST_AUTO_TEST_CASE(shape_basics) {
  const Shape s{2, 3, 4};
  BOOST_TEST(s.rank() == 3);
  BOOST_TEST(s.numel() == 24);
  BOOST_TEST(s[0] == 2);
  BOOST_TEST(s[-1] == 4);
  BOOST_TEST(s[-3] == 2);
  BOOST_TEST(s.prefix(2) == 6);
  BOOST_TEST(s.suffix(1) == 12);
  BOOST_TEST(s.prefix(-1) == 6);
  BOOST_TEST(s.last() == 4);
  BOOST_TEST(s.str() == "[2, 3, 4]");
  BOOST_TEST((s == Shape{2, 3, 4}));
  BOOST_TEST(!(s == Shape{2, 3}));
  BOOST_TEST(!(s == Shape{2, 3, 5}));
  const Shape scalar;
  BOOST_TEST(scalar.rank() == 0);
  BOOST_TEST(scalar.numel() == 1);
  BOOST_TEST(scalar.str() == "[]");
  BOOST_TEST((Shape{4, 0, 2}.numel() == 0));
  const Shape full{1, 2, 3, 4};
  BOOST_TEST(full.rank() == max_rank);
}

BOOST_AUTO_TEST_CASE(shape_errors) {
  expect_error<shape_error>([] { (void)Shape{1, 2, 3, 4, 5}; }, {"at most 4", "5"});
  expect_error<shape_error>([] { (void)Shape{2, -3}; }, {"non-negative", "-3"});
  const Shape s{2, 3};
  expect_error<shape_error>([&] { (void)s[2]; }, {"dimension 2", "[2, 3]"});
  expect_error<shape_error>([&] { (void)s[-3]; }, {"dimension -3", "[2, 3]"});
  Shape grow{1, 1, 1, 1};
  BOOST_CHECK_THROW(grow.push_back(1), shape_error);
  expect_error<shape_error>([] { expect_same_shape(Shape{2}, Shape{3}, "thing"); }, {"thing", "[2]", "[3]"});
}

BOOST_AUTO_TEST_CASE(factories_and_their_errors) {
  const auto z = Tensor<float>::zeros({2, 2});
  BOOST_TEST(z.to_vector() == std::vector<float>(4, 0.0f));
  const auto f = Tensor<double>::full({3}, 2.5);
  BOOST_TEST(f.to_vector() == std::vector<double>(3, 2.5));
  const auto v = Tensor<std::int32_t>::from_vector({2, 2}, {1, 2, 3, 4});
  BOOST_TEST(v.at({1, 0}) == 3);
  expect_error<shape_error>(
      [] {
        (void)Tensor<float>::from_vector({2, 3}, {1.0f, 2.0f});
      },
      {"[2, 3]", "6", "2 values"});
  const auto empty = Tensor<float>::zeros({0, 3});
  BOOST_TEST(empty.numel() == 0);
  BOOST_TEST(empty.to_vector().empty());
  BOOST_TEST(!Tensor<float>().defined());
  const auto scalar = Tensor<double>::full({}, 7.0);
  BOOST_TEST(scalar.rank() == 0);
  BOOST_TEST(scalar.item() == 7.0);
}

BOOST_AUTO_TEST_CASE(reshape_views_and_rejects_non_contiguous) {
  const auto t = iota({2, 3});
  const auto r = t.reshape({3, 2});
  BOOST_TEST(r.shares_storage_with(t));
  BOOST_TEST(r.at({2, 1}) == 5.0);
  BOOST_TEST(r.at({1, 0}) == 2.0);
  expect_error<shape_error>([&] { (void)t.reshape({4, 2}); }, {"[2, 3]", "[4, 2]"});
  const auto tt = t.transpose(0, 1);
  expect_error<shape_error>([&] { (void)tt.reshape({6}); }, {"not contiguous", "contiguous()"});
  BOOST_TEST(tt.contiguous().reshape({6}).to_vector() == (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

BOOST_AUTO_TEST_CASE(transpose_is_a_strided_view) {
  auto t = iota({2, 3});
  const auto tt = t.transpose(0, 1);
  BOOST_TEST(tt.shape() == (Shape{3, 2}));
  BOOST_TEST(tt.shares_storage_with(t));
  BOOST_TEST(!tt.is_contiguous());
  BOOST_TEST(tt.stride(0) == 1);
  BOOST_TEST(tt.stride(1) == 3);
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 2; ++j) BOOST_TEST(tt.at({i, j}) == static_cast<double>(j * 3 + i));
  // Writes through the view land in the shared storage.
  tt.at({2, 1}) = -1.0;
  BOOST_TEST(t.at({1, 2}) == -1.0);
  BOOST_TEST(t.transpose(-1, -2).at({0, 1}) == 3.0);
}

BOOST_AUTO_TEST_CASE(slice_is_an_offset_view) {
  const auto t = iota({3, 4});
  const auto s = t.slice(1, 1, 2);
  BOOST_TEST(s.shape() == (Shape{3, 2}));
  BOOST_TEST(s.shares_storage_with(t));
  BOOST_TEST(s.offset() == 1);
  BOOST_TEST(!s.is_contiguous());
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 2; ++j) BOOST_TEST(s.at({i, j}) == static_cast<double>(4 * i + 1 + j));
  BOOST_TEST(s.to_vector() == (std::vector<double>{1, 2, 5, 6, 9, 10}));
  // Whole rows stay packed.
  const auto rows = t.slice(0, 1, 2);
  BOOST_TEST(rows.is_contiguous());
  BOOST_TEST(rows.offset() == 4);
  BOOST_TEST(rows.to_vector() == (std::vector<double>{4, 5, 6, 7, 8, 9, 10, 11}));
  expect_error<shape_error>([&] { (void)t.slice(1, 3, 2); }, {"[3, 5)", "[3, 4]"});
  BOOST_CHECK_THROW((void)t.slice(0, -1, 1), shape_error);
  BOOST_CHECK_THROW((void)t.slice(2, 0, 1), shape_error);
}

BOOST_AUTO_TEST_CASE(composed_views_gather_correctly) {
  // v(i, j, k) = t(k, j + 1, i) = 12k + 4(j + 1) + i.
  const auto t = iota({2, 3, 4});
  const auto v = t.transpose(0, 2).slice(1, 1, 2);
  BOOST_TEST(v.shape() == (Shape{4, 2, 2}));
  const auto packed = v.contiguous();
  BOOST_TEST(packed.is_contiguous());
  BOOST_TEST(!packed.shares_storage_with(t));
  const auto flat = packed.to_vector();
  std::size_t n = 0;
  for (std::int64_t i = 0; i < 4; ++i)
    for (std::int64_t j = 0; j < 2; ++j)
      for (std::int64_t k = 0; k < 2; ++k) {
        const double expected = static_cast<double>(12 * k + 4 * (j + 1) + i);
        BOOST_TEST(v.at({i, j, k}) == expected);
        BOOST_TEST(flat[n++] == expected);
      }
  // Rank 4 as well.
  const auto t4 = iota({2, 2, 2, 3});
  const auto v4 = t4.transpose(1, 3).slice(3, 1, 1);
  BOOST_TEST(v4.shape() == (Shape{2, 3, 2, 1}));
  BOOST_TEST(v4.contiguous().at({1, 2, 1, 0}) == t4.at({1, 1, 1, 2}));
}

BOOST_AUTO_TEST_CASE(contiguous_copies_only_when_needed) {
  const auto t = iota({2, 3});
  BOOST_TEST(t.contiguous().shares_storage_with(t));
  BOOST_TEST(t.reshape({3, 2}).contiguous().shares_storage_with(t));
  // Size-1 dims may carry any stride and still be packed.
  const auto one_row = t.slice(0, 1, 1);
  BOOST_TEST(one_row.is_contiguous());
  BOOST_TEST(one_row.contiguous().shares_storage_with(t));
  const auto tt = t.transpose(0, 1);
  const auto packed = tt.contiguous();
  BOOST_TEST(!packed.shares_storage_with(t));
  BOOST_TEST(packed.to_vector() == (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

BOOST_AUTO_TEST_CASE(clone_and_copies_are_independent) {
  auto t = iota({2, 2});
  auto c = t.clone();
  BOOST_TEST(!c.shares_storage_with(t));
  c.at({0, 0}) = 42.0;
  BOOST_TEST(t.at({0, 0}) == 0.0);
  const auto ct = t.transpose(0, 1).clone();
  BOOST_TEST(ct.is_contiguous());
  BOOST_TEST(ct.to_vector() == (std::vector<double>{0, 2, 1, 3}));
  const auto moved = t.to<cpu>();
  BOOST_TEST(!moved.shares_storage_with(t));
  BOOST_TEST(moved.to_vector() == t.to_vector());

  auto dst = Tensor<double>::zeros({2, 2});
  dst.copy_from(t.transpose(0, 1));
  BOOST_TEST(dst.to_vector() == (std::vector<double>{0, 2, 1, 3}));
  BOOST_CHECK_THROW(dst.copy_from(iota({4})), shape_error);
  auto view = t.transpose(0, 1);
  BOOST_CHECK_THROW(view.fill(1.0), shape_error);
  dst.fill(3.0);
  BOOST_TEST(dst.to_vector() == std::vector<double>(4, 3.0));
}

BOOST_AUTO_TEST_CASE(item_and_at_bounds) {
  const auto one = Tensor<float>::full({1, 1}, 3.0f);
  BOOST_TEST(one.item() == 3.0f);
  expect_error<shape_error>([] { (void)iota({2}).item(); }, {"one element", "[2]"});
  const auto t = iota({2, 3});
  BOOST_TEST(t.at({1, 2}) == 5.0);
  expect_error<shape_error>([&] { (void)t.at({1}); }, {"1 indices", "[2, 3]"});
  expect_error<shape_error>([&] { (void)t.at({0, 3}); }, {"index 3", "dimension 1"});
  expect_error<shape_error>([&] { (void)t.at({-1, 0}); }, {"index -1", "dimension 0"});
}

BOOST_AUTO_TEST_CASE(rng_is_deterministic_and_well_spread) {
  Rng a(123), b(123), c(124);
  std::vector<std::uint64_t> sa, sb, sc;
  for (int i = 0; i < 16; ++i) {
    sa.push_back(a.next_u64());
    sb.push_back(b.next_u64());
    sc.push_back(c.next_u64());
  }
  BOOST_TEST(sa == sb);
  BOOST_TEST((sa != sc));
  a.reseed(123);
  BOOST_TEST(a.next_u64() == sa[0]);

  Rng r(99);
  const int n = 20000;
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < n; ++i) {
    const double u = r.uniform(-2.0, 3.0);
    BOOST_REQUIRE(u >= -2.0);
    BOOST_REQUIRE(u < 3.0);
    const auto k = r.below(7);
    BOOST_REQUIRE(k < 7u);
    const double z = r.normal();
    sum += z;
    sum_sq += z * z;
  }
  const double mean = sum / n, var = sum_sq / n - mean * mean;
  BOOST_TEST(std::abs(mean) < 0.05);
  BOOST_TEST(var > 0.9);
  BOOST_TEST(var < 1.1);
  double shifted = 0;
  for (int i = 0; i < n; ++i) shifted += r.normal(5.0, 0.5);
  BOOST_TEST(std::abs(shifted / n - 5.0) < 0.05);
}

BOOST_AUTO_TEST_CASE(seeded_fills_repeat) {
  Rng r1(5), r2(5), r3(6);
  const auto u1 = Tensor<float>::uniform({3, 4}, -1, 1, r1);
  const auto u2 = Tensor<float>::uniform({3, 4}, -1, 1, r2);
  const auto u3 = Tensor<float>::uniform({3, 4}, -1, 1, r3);
  BOOST_TEST(u1.to_vector() == u2.to_vector());
  BOOST_TEST((u1.to_vector() != u3.to_vector()));
  for (float x : u1.to_vector()) BOOST_TEST((x >= -1.0f && x <= 1.0f));
  const auto n1 = Tensor<double>::normal({8}, 0, 1, r1);
  const auto n2 = Tensor<double>::normal({8}, 0, 1, r2);
  BOOST_TEST(n1.to_vector() == n2.to_vector());
}

BOOST_AUTO_TEST_CASE(eigen_map_views_and_round_trips) {
  auto t = iota({2, 3, 2});
  auto m = eigen_map(t);
  BOOST_TEST(m.rows() == 6);
  BOOST_TEST(m.cols() == 2);
  BOOST_TEST(m(4, 1) == t.at({1, 1, 1}));
  m(0, 1) = -5.0;  // the map writes into the tensor
  BOOST_TEST(t.at({0, 0, 1}) == -5.0);

  const auto& ct = t;
  const auto cm = eigen_map(ct);
  BOOST_TEST(cm.sum() == m.sum());

  auto row = iota({4});
  BOOST_TEST(eigen_map(row).rows() == 1);
  BOOST_TEST(eigen_map(row).cols() == 4);

  const auto back = from_eigen(eigen_map(t));
  BOOST_TEST(back.shape() == (Shape{6, 2}));
  BOOST_TEST(back.to_vector() == t.to_vector());
  BOOST_TEST(!back.shares_storage_with(t));

  Eigen::MatrixXf col_major(2, 3);
  col_major << 1, 2, 3, 4, 5, 6;
  const auto from_col_major = from_eigen(col_major);
  BOOST_TEST(from_col_major.to_vector() == (std::vector<float>{1, 2, 3, 4, 5, 6}));
  const auto from_expression = from_eigen(col_major.transpose() * 2.0f);
  BOOST_TEST(from_expression.shape() == (Shape{3, 2}));
  BOOST_TEST(from_expression.to_vector() == (std::vector<float>{2, 8, 4, 10, 6, 12}));

  auto view = t.transpose(0, 2);
  expect_error<shape_error>([&] { (void)eigen_map(view); }, {"not contiguous", "contiguous()"});
  auto packed = view.contiguous();
  BOOST_TEST(eigen_map(packed)(1, 0) == view.at({0, 1, 0}));
  Tensor<double> undefined;
  BOOST_CHECK_THROW((void)eigen_map(undefined), value_error);

  // A map of a temporary would dangle, so only lvalues may be mapped.
  static_assert(eigen_mappable<Tensor<double>&>);
  static_assert(eigen_mappable<const Tensor<float>&>);
  static_assert(!eigen_mappable<Tensor<double>>);
}

BOOST_AUTO_TEST_CASE(block_cache_rounds_reuses_and_evicts) {
  using backend::BlockCache;
  constexpr std::size_t kib = 1024, block = 256 * kib;
  BOOST_TEST(BlockCache::rounded(1000) == 1000u);  // small blocks are left to malloc
  BOOST_TEST(BlockCache::rounded(block) == block);
  BOOST_TEST(BlockCache::rounded(block + 1) == block + 16 * kib);
  BOOST_TEST(BlockCache::rounded(1000 * kib) == 1024 * kib);
  BOOST_TEST(BlockCache::rounded(1024 * kib + 1) == 1088 * kib);

  BlockCache cache(2 * block);
  void* p1 = cache.allocate(block);
  void* p2 = cache.allocate(block);
  void* p3 = cache.allocate(block);
  cache.deallocate(p1, block);
  cache.deallocate(p2, block);
  cache.deallocate(p3, block);
  if constexpr (!BlockCache::enabled) {  // under AddressSanitizer every block goes straight back
    BOOST_TEST(cache.cached_bytes() == 0u);
    return;
  }
  // The limit holds two blocks, so the least recently freed (p1) went back to the system.
  BOOST_TEST(cache.cached_bytes() == 2 * block);
  BOOST_TEST(cache.allocate(block) == p3);  // the most recently freed comes back first
  BOOST_TEST(cache.allocate(block) == p2);
  BOOST_TEST(cache.cached_bytes() == 0u);
  cache.deallocate(p2, block);
  cache.deallocate(p3, block);
  cache.release();
  BOOST_TEST(cache.cached_bytes() == 0u);
  // A slightly larger request in the same size class (a KV cache one token longer) reuses the block.
  void* grown = cache.allocate(300000);
  cache.deallocate(grown, 300000);
  BOOST_TEST(cache.allocate(310000) == grown);
  cache.deallocate(grown, 310000);
  BOOST_TEST(cache.cached_bytes() == 311296u);  // 310000 rounded up to 19 x 16 KiB
  cache.set_limit(0);  // off: what is cached goes now, and nothing more is kept
  BOOST_TEST(cache.cached_bytes() == 0u);
  void* q = cache.allocate(block);
  cache.deallocate(q, block);
  BOOST_TEST(cache.cached_bytes() == 0u);
}

BOOST_AUTO_TEST_CASE(block_cache_keeps_its_footprint_within_a_quarter_of_the_live_peak) {
  using backend::BlockCache;
  if constexpr (!BlockCache::enabled) return;
  constexpr std::size_t kib = 1024, block = 256 * kib;
  BlockCache cache(64 * block);
  std::vector<void*> eight;
  for (int i = 0; i < 8; ++i) eight.push_back(cache.allocate(block));  // the live peak: 8 blocks
  BOOST_TEST(cache.live_bytes() == 8 * block);
  for (void* p : eight) cache.deallocate(p, block);
  BOOST_TEST(cache.live_bytes() == 0u);
  BOOST_TEST(cache.cached_bytes() == 8 * block);
  // A miss of another size class within the bound (8 blocks plus a quarter) evicts nothing.
  void* other = cache.allocate(block + 1);  // 272 KiB
  BOOST_TEST(cache.live_bytes() == 272 * kib);
  BOOST_TEST(cache.cached_bytes() == 8 * block);
  // One past it evicts the least recently freed blocks, only as many as the bound needs:
  // 272 KiB + 512 KiB live and 6 of 8 cached blocks are 2,320 KiB, under the 2,560 KiB bound.
  void* larger = cache.allocate(2 * block);
  BOOST_TEST(cache.live_bytes() == 784 * kib);
  BOOST_TEST(cache.cached_bytes() == 6 * block);
  BOOST_TEST(cache.allocate(block) == eight[7]);  // the most recently freed is still there
  for (int i = 6; i >= 2; --i) BOOST_TEST(cache.allocate(block) == eight[static_cast<std::size_t>(i)]);
  BOOST_TEST(cache.cached_bytes() == 0u);  // eight[0] and eight[1] went back to the system
  for (std::size_t i = 2; i < 8; ++i) cache.deallocate(eight[i], block);
  cache.deallocate(other, block + 1);
  cache.deallocate(larger, 2 * block);
  BOOST_TEST(cache.live_bytes() == 0u);
}

BOOST_AUTO_TEST_CASE(tensors_reuse_freed_blocks_and_still_poison_them) {
  if constexpr (!backend::BlockCache::enabled) return;
  const float* first = nullptr;
  {
    Tensor<float> t = Tensor<float>::full({100000}, 1.0f);  // 400 KB: cached when freed
    first = t.data();
  }
  PoisonOn on;
  const Tensor<float> again({100000});
  BOOST_TEST(again.data() == first);
  const std::vector<float> values = again.to_vector();
  BOOST_TEST(std::all_of(values.begin(), values.end(), [](float x) { return std::isnan(x); }));
}

// The trainer's memory report: every tensor's bytes count while it lives, and the peak holds the most.
BOOST_AUTO_TEST_CASE(cpu_memory_use_counts_live_tensors_and_their_peak) {
  using traits = backend_traits<cpu>;
  constexpr std::size_t bytes = (std::size_t{1} << 20) * sizeof(float);
  BOOST_TEST(traits::memory_use().known);
  traits::reset_memory_peak();
  const MemoryUse before = traits::memory_use();
  BOOST_TEST(before.peak_bytes == before.live_bytes);
  {
    const Tensor<float> big(Shape{std::int64_t{1} << 20});
    const MemoryUse during = traits::memory_use();
    BOOST_TEST(during.live_bytes == before.live_bytes + bytes);
    BOOST_TEST(during.peak_bytes == during.live_bytes);
    {
      const Tensor<float> second(Shape{std::int64_t{1} << 20});
      BOOST_TEST(traits::memory_use().peak_bytes == before.live_bytes + 2 * bytes);
    }
    BOOST_TEST(traits::memory_use().live_bytes == before.live_bytes + bytes);
  }
  const MemoryUse after = traits::memory_use();
  BOOST_TEST(after.live_bytes == before.live_bytes);
  BOOST_TEST(after.peak_bytes == before.live_bytes + 2 * bytes);  // the most at once, not the sum
  traits::reset_memory_peak();
  BOOST_TEST(traits::memory_use().peak_bytes == after.live_bytes);
}

BOOST_AUTO_TEST_CASE(poisoned_allocations_are_nan) {
  {
    PoisonOn on;
    const Tensor<float> f({3});
    for (float x : f.to_vector()) BOOST_TEST(std::isnan(x));
    const Tensor<double> d({2, 2});
    for (double x : d.to_vector()) BOOST_TEST(std::isnan(x));
    const Tensor<std::int32_t> i({2});
    for (auto x : i.to_vector()) BOOST_TEST(x == std::numeric_limits<std::int32_t>::min());
    // Fills still overwrite the poison.
    BOOST_TEST(Tensor<float>::zeros({2}).to_vector() == std::vector<float>(2, 0.0f));
  }
  BOOST_TEST(!debug::poison_allocations);
}

BOOST_AUTO_TEST_SUITE_END()
