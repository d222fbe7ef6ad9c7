// The data-parallel parts that run in one process: backward's leaf-ready hook, gradient buckets over
// dist::single, and the guard against a launcher starting copies of a program built without MPI.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "mote/autograd/elementwise.hpp"
#include "mote/autograd/reduce.hpp"
#include "mote/dist/dist.hpp"

using namespace mote;

namespace {

// y = sum(a*b) + sum(a*c) + sum(d): a has two consumers, so it is final only after both.
struct SmallGraph {
  Rng rng{11};
  Var<double> a = Var<double>::parameter(Tensor<double>::uniform({3, 4}, -1, 1, rng));
  Var<double> b = Var<double>::parameter(Tensor<double>::uniform({3, 4}, -1, 1, rng));
  Var<double> c = Var<double>::parameter(Tensor<double>::uniform({3, 4}, -1, 1, rng));
  Var<double> d = Var<double>::parameter(Tensor<double>::uniform({5}, -1, 1, rng));
  Var<double> unused = Var<double>::parameter(Tensor<double>::uniform({2}, -1, 1, rng));
  Var<double> loss() { return sum(a * b) + sum(a * c) + sum(d); }
  // Buckets fill in reverse order: listing `unused` first puts it in the last bucket.
  std::vector<Var<double>> all() { return {unused, a, b, c, d}; }
};

struct EnvironmentVariable {
  std::string name;
  EnvironmentVariable(std::string n, const char* value) : name(std::move(n)) { ::setenv(name.c_str(), value, 1); }
  ~EnvironmentVariable() { ::unsetenv(name.c_str()); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(test_dist)

BOOST_AUTO_TEST_CASE(on_leaf_ready_announces_each_reached_leaf_once_with_its_final_gradient) {
  SmallGraph g;
  std::map<const void*, std::vector<std::vector<double>>> seen;
  const std::vector<Var<double>> leaves = g.all();
  g.loss().backward({.on_leaf_ready = [&](const void* node) {
    for (const auto& leaf : leaves)
      if (leaf.node() == node) seen[node].push_back(leaf.grad().defined() ? leaf.grad().to_vector() : std::vector<double>{});
  }});
  BOOST_TEST(seen.size() == 4u);
  BOOST_TEST(!seen.contains(g.unused.node()));
  for (const auto& leaf : {g.a, g.b, g.c, g.d}) {
    BOOST_REQUIRE(seen.contains(leaf.node()));
    BOOST_REQUIRE(seen[leaf.node()].size() == 1u);
    const std::vector<double> at_announcement = seen[leaf.node()][0], final_gradient = leaf.grad().to_vector();
    BOOST_TEST(at_announcement == final_gradient, boost::test_tools::per_element());
  }
  // a's gradient is b + c: announced only after both products' backward ran.
  const auto bv = g.b.value().to_vector(), cv = g.c.value().to_vector(), ga = g.a.grad().to_vector();
  for (std::size_t i = 0; i < ga.size(); ++i) BOOST_TEST(ga[i] == bv[i] + cv[i]);
}

BOOST_AUTO_TEST_CASE(a_leaf_that_is_the_root_is_announced) {
  Var<double> x = Var<double>::parameter(Tensor<double>::from_vector({1}, {2.0}));
  int calls = 0;
  x.backward({.on_leaf_ready = [&](const void* node) { calls += node == x.node(); }});
  BOOST_TEST(calls == 1);
}

BOOST_AUTO_TEST_CASE(gradient_buckets_partition_the_parameters_and_keep_gradients_in_one_process) {
  SmallGraph g;
  dist::single one;
  // In reverse order with 50-byte buckets: {d (40 bytes), c (96)}, {b}, {a}, {unused}.
  dist::GradientBuckets<double, cpu, dist::single> buckets(g.all(), one, {.bucket_bytes = 50});
  BOOST_TEST(buckets.elements() == 3 * 12 + 5 + 2);
  BOOST_TEST(buckets.bytes_per_step() == (3 * 12 + 5 + 2) * 8);
  BOOST_TEST(buckets.bucket_count() == 4u);
  dist::GradientBuckets<double, cpu, dist::single> one_bucket(g.all(), one);
  BOOST_TEST(one_bucket.bucket_count() == 1u);

  buckets.begin_step();
  g.loss().backward({.on_leaf_ready = buckets.hook()});
  const auto ga = g.a.grad().to_vector(), gd = g.d.grad().to_vector();
  buckets.finish();
  BOOST_TEST(g.a.grad().to_vector() == ga, boost::test_tools::per_element());
  BOOST_TEST(g.d.grad().to_vector() == gd, boost::test_tools::per_element());
  // A parameter no backward reached contributes zeros and ends with a zero gradient.
  BOOST_TEST(g.unused.grad().to_vector() == std::vector<double>(2, 0.0), boost::test_tools::per_element());
  // The three buckets backward completes start while it runs; the one holding `unused` waits for finish().
  BOOST_TEST(buckets.last_started_early() == 3u);
}

BOOST_AUTO_TEST_CASE(gradient_buckets_refuse_an_empty_bucket_size_and_an_empty_parameter) {
  SmallGraph g;
  dist::single one;
  BOOST_CHECK_THROW((dist::GradientBuckets<double, cpu, dist::single>(g.all(), one, {.bucket_bytes = 0})), value_error);
  BOOST_CHECK_THROW((dist::GradientBuckets<double, cpu, dist::single>({Var<double>()}, one)), value_error);
}

BOOST_AUTO_TEST_CASE(launched_world_size_reads_the_launchers_variables) {
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  ::unsetenv("PMI_SIZE");
  ::unsetenv("PMIX_SIZE");
  BOOST_TEST(dist::launched_world_size() == 1);
  BOOST_CHECK_NO_THROW(dist::single::require_alone("mote-test"));
  {
    EnvironmentVariable garbage("PMI_SIZE", "two");
    BOOST_TEST(dist::launched_world_size() == 1);
  }
  EnvironmentVariable launched("OMPI_COMM_WORLD_SIZE", "4");
  BOOST_TEST(dist::launched_world_size() == 4);
  try {
    dist::single::require_alone("mote-test");
    BOOST_FAIL("require_alone accepted one of 4 launched processes");
  } catch (const dist::dist_error& e) {
    const std::string message = e.what();
    BOOST_TEST(message.find("mote-test was started as one of 4 processes") != std::string::npos, message);
    BOOST_TEST(message.find("without MPI") != std::string::npos, message);
  }
}

BOOST_AUTO_TEST_SUITE_END()
