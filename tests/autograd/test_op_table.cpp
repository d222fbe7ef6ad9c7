// Every case of the one op table (op_table.hpp) on the CPU: double against finite differences, float
// against double, outputs fully written under poisoned allocations, gradients that accumulate.
#include "op_harness.hpp"

#include <set>
#include <string>

using namespace mote;

BOOST_AUTO_TEST_SUITE(test_op_table)

BOOST_AUTO_TEST_CASE(every_case_of_the_op_table) {
  std::set<std::string> names;
  std::size_t cases = 0;
  testing::for_each_op_case([&](const testing::OpSpec& spec, const auto& build) {
    ++cases;
    BOOST_TEST(names.insert(spec.name).second, "the op table names '" << spec.name << "' twice");
    testing::check_op(spec, build);
  });
  BOOST_TEST_MESSAGE("the op table holds " << cases << " cases");
  BOOST_TEST(cases > 100u);  // the table is visited whole, not cut short by a stray return
}

BOOST_AUTO_TEST_SUITE_END()
