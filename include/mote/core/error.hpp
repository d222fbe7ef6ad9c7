#pragma once
// Typed exceptions: every failure mote reports derives from mote::error.
#include <stdexcept>
#include <string>

namespace mote {

struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Two shapes (or a shape and a rule) disagree.
struct shape_error : error {
  using error::error;
};
// A tensor lives on the wrong backend, or a backend call failed.
struct backend_error : error {
  using error::error;
};
// Misuse of the graph: backward twice, backward on a non-scalar, grad of a non-leaf.
struct autograd_error : error {
  using error::error;
};
// Anomaly mode found a NaN or infinity; the message names the op.
struct nan_error : error {
  using error::error;
};
// An argument outside its documented range (probabilities, indices, sizes).
struct value_error : error {
  using error::error;
};
// A file could not be read or written, or its contents are malformed.
struct io_error : error {
  using error::error;
};

}  // namespace mote
