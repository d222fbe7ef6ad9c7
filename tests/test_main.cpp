// The test module's one main(); suites live in the other files, one suite per file.
#define BOOST_TEST_MODULE mote
#include <boost/test/unit_test.hpp>
