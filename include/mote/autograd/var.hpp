#pragma once
// Reverse-mode autograd over whole tensors. A Var is a handle on a graph node; each op
// records its inputs and a backward closure that adds into the inputs' gradients.
// backward() orders the graph by an iterative depth-first walk (no recursion) and frees
// each node's saved tensors as soon as its backward has run, unless retain_graph is set.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mote/backend/cpu/elementwise.hpp"
#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"

namespace mote::autograd {

namespace detail {
inline thread_local bool grad_enabled = true;
inline thread_local bool anomaly_enabled = false;
inline std::atomic<std::uint64_t> next_walk_mark{1};
}  // namespace detail

namespace detail {
// Sets a thread-local flag for one scope and restores its previous value afterwards.
class FlagScope {
 public:
  FlagScope(bool& flag, bool value) : flag_(flag), saved_(flag) { flag_ = value; }
  ~FlagScope() { flag_ = saved_; }
  FlagScope(const FlagScope&) = delete;
  FlagScope& operator=(const FlagScope&) = delete;

 private:
  bool& flag_;
  bool saved_;
};
}  // namespace detail

// Within a no_grad scope ops record nothing: results carry values only.
class no_grad : detail::FlagScope {
 public:
  no_grad() : FlagScope(detail::grad_enabled, false) {}
};

inline bool grad_enabled() noexcept { return detail::grad_enabled; }

// Within a detect_anomaly scope every op's output and every backward's input gradients are
// checked; the first NaN or infinity throws nan_error naming the op.
class detect_anomaly : detail::FlagScope {
 public:
  detect_anomaly() : FlagScope(detail::anomaly_enabled, true) {}
};

inline bool anomaly_enabled() noexcept { return detail::anomaly_enabled; }

template <Real T, Backend B>
struct Node {
  Tensor<T, B> value;
  Tensor<T, B> grad;  // undefined until a gradient reaches this node
  std::vector<std::shared_ptr<Node>> inputs;
  std::function<void(Node&)> backward_fn;  // adds d(loss)/d(inputs) given this->grad
  const char* op = "leaf";
  bool requires_grad = false;
  bool retain_grad = false;  // keep .grad on a non-leaf after backward
  bool released = false;     // saved tensors freed by an earlier backward
  std::uint64_t walk_mark = 0;

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Unlinks inputs iteratively: a long chain freed by recursive destructors would overflow the stack.
  ~Node() {
    std::vector<std::shared_ptr<Node>> pending = std::move(inputs);
    while (!pending.empty()) {
      std::shared_ptr<Node> n = std::move(pending.back());
      pending.pop_back();
      if (n && n.use_count() == 1) {
        for (auto& in : n->inputs) pending.push_back(std::move(in));
        n->inputs.clear();
        n->backward_fn = nullptr;  // closures may hold Vars too
      }
    }
  }

  bool is_leaf() const noexcept { return !backward_fn && !released; }

  // The gradient buffer, zero-filled the first time it is asked for.
  Tensor<T, B>& grad_buffer() {
    if (!grad.defined()) grad = Tensor<T, B>::zeros(value.shape());
    return grad;
  }
};

// Throws nan_error when t holds a NaN or infinity; `what` names the op and the tensor.
template <Real T, Backend B>
void check_finite(const Tensor<T, B>& t, const std::string& what) {
  const std::vector<T> host = t.to_vector();
  for (std::size_t i = 0; i < host.size(); ++i)
    if (!std::isfinite(host[i]))
      throw nan_error("mote: anomaly: " + what + " holds " + (std::isnan(host[i]) ? "NaN" : "an infinity") +
                      " at flat index " + std::to_string(i) + " of shape " + t.shape().str());
}

struct BackwardOptions {
  bool retain_graph = false;  // keep saved tensors so that backward can run again
  // Called with a leaf's node (Var::node()) as soon as its gradient is final in this pass, while the
  // rest of backward still runs: data-parallel training starts summing that gradient across ranks.
  std::function<void(const void*)> on_leaf_ready = {};
};

template <Real T, Backend B = cpu>
class Var {
 public:
  using value_type = T;
  using backend_type = B;
  using node_type = Node<T, B>;

  Var() = default;
  // A leaf holding `value` (made contiguous); parameters pass requires_grad = true.
  explicit Var(Tensor<T, B> value, bool requires_grad = false) : node_(std::make_shared<node_type>()) {
    if (!value.defined()) throw value_error("mote: Var: the value tensor is undefined (default-constructed)");
    node_->value = value.contiguous();
    node_->requires_grad = requires_grad;
  }
  static Var parameter(Tensor<T, B> value) { return Var(std::move(value), true); }
  explicit Var(std::shared_ptr<node_type> node) : node_(std::move(node)) {}

  bool defined() const noexcept { return node_ != nullptr; }
  const Tensor<T, B>& value() const { return checked().value; }
  // Mutable access for optimizers and loaders; changing a value a graph saved corrupts its backward.
  Tensor<T, B>& mutable_value() { return checked().value; }
  const Tensor<T, B>& grad() const { return checked().grad; }
  Tensor<T, B>& mutable_grad() { return checked().grad_buffer(); }
  const Shape& shape() const { return checked().value.shape(); }
  std::int64_t numel() const { return checked().value.numel(); }
  bool requires_grad() const { return checked().requires_grad; }
  bool is_leaf() const { return checked().is_leaf(); }
  const char* op() const { return checked().op; }
  T item() const { return checked().value.item(); }
  node_type* node() const noexcept { return node_.get(); }
  const std::shared_ptr<node_type>& node_ptr() const noexcept { return node_; }

  void set_requires_grad(bool on) {
    if (!is_leaf()) throw autograd_error("mote: requires_grad can only be set on a leaf, not on the output of '" + std::string(op()) + "'");
    checked().requires_grad = on;
  }
  void retain_grad() { checked().retain_grad = true; }
  void zero_grad() { checked().grad = Tensor<T, B>(); }
  // A new leaf sharing this value, cut from the graph.
  Var detach() const { return Var(value(), false); }

  // Back-propagates from this scalar (seed 1) into every leaf that requires grad.
  void backward(BackwardOptions options = {}) {
    if (numel() != 1)
      throw autograd_error("mote: backward() needs a scalar, '" + std::string(op()) + "' has shape " + shape().str() +
                           "; pass a seed gradient of that shape instead");
    backward(Tensor<T, B>::full(shape(), T(1)), options);
  }
  void backward(const Tensor<T, B>& seed, BackwardOptions options = {});

 private:
  node_type& checked() const {
    if (!node_) throw autograd_error("mote: use of an empty Var");
    return *node_;
  }
  std::shared_ptr<node_type> node_;
};

template <Real T, Backend B>
void Var<T, B>::backward(const Tensor<T, B>& seed, BackwardOptions options) {
  node_type& root = checked();
  if (root.released)
    throw autograd_error("mote: backward through the graph of '" + std::string(root.op) +
                         "' a second time: its saved tensors were freed by the first backward; pass "
                         "{.retain_graph = true} to the first one");
  if (!root.requires_grad)
    throw autograd_error("mote: backward from '" + std::string(root.op) + "', which does not depend on any tensor that requires grad");
  expect_same_shape(root.value.shape(), seed.shape(), "backward seed");

  // Post-order depth-first walk with an explicit stack: children before parents.
  const std::uint64_t mark = detail::next_walk_mark.fetch_add(1);
  std::vector<node_type*> order;
  std::vector<std::pair<node_type*, std::size_t>> stack;
  // Owns every visited node until the end: releasing a node's inputs below must not free a node still in `order`.
  std::vector<std::shared_ptr<node_type>> alive;
  stack.emplace_back(&root, 0);
  root.walk_mark = mark;
  while (!stack.empty()) {
    auto& [node, next_input] = stack.back();
    if (next_input < node->inputs.size()) {
      const std::shared_ptr<node_type>& in_ptr = node->inputs[next_input++];
      node_type* in = in_ptr.get();
      if (in->requires_grad && in->walk_mark != mark) {
        in->walk_mark = mark;
        alive.push_back(in_ptr);
        stack.emplace_back(in, 0);
      }
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }

  // Non-leaf gradients are per pass: a retained one from an earlier pass is set aside and
  // added back at the end, so it is never propagated twice.
  std::vector<std::pair<node_type*, Tensor<T, B>>> retained;
  for (node_type* node : order)
    if (!node->is_leaf() && node->grad.defined()) {
      if (node->retain_grad) retained.emplace_back(node, std::move(node->grad));
      node->grad = Tensor<T, B>();
    }

  {
    const Tensor<T, B> packed_seed = seed.contiguous();
    const T* s = packed_seed.data();
    T* g = root.grad_buffer().data();
    const T one = T(1);
    const std::int64_t n = root.grad.numel();
    MOTE_CALL_KERNEL(B, axpy, one, s, g, n);
  }

  // For on_leaf_ready: each leaf is final after its last consumer in walk order (the lowest index in `order`).
  std::vector<std::vector<const void*>> leaves_final_after;
  if (options.on_leaf_ready) {
    leaves_final_after.resize(order.size());
    std::unordered_set<const void*> claimed;
    for (std::size_t i = 0; i < order.size(); ++i)
      for (const auto& in : order[i]->inputs)
        if (in->requires_grad && in->is_leaf() && claimed.insert(in.get()).second) leaves_final_after[i].push_back(in.get());
  }

  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    node_type& node = **it;
    const auto announce_final_leaves = [&] {
      if (options.on_leaf_ready)
        for (const void* leaf : leaves_final_after[static_cast<std::size_t>(order.rend() - it) - 1]) options.on_leaf_ready(leaf);
    };
    if (node.is_leaf() || !node.grad.defined()) {
      announce_final_leaves();
      continue;
    }
    if (node.released)
      throw autograd_error("mote: backward reached '" + std::string(node.op) +
                           "', whose saved tensors an earlier backward freed; pass {.retain_graph = true}");
    node.backward_fn(node);
    if (anomaly_enabled())
      for (auto& in : node.inputs)
        if (in->requires_grad && in->grad.defined())
          check_finite(in->grad, std::string("the gradient that backward of '") + node.op + "' passed to its input");
    if (!options.retain_graph) {
      node.backward_fn = nullptr;  // frees the tensors the op saved
      node.inputs.clear();
      node.released = true;
    }
    if (!node.retain_grad) node.grad = Tensor<T, B>();
    announce_final_leaves();
  }
  if (options.on_leaf_ready && root.is_leaf()) options.on_leaf_ready(&root);
  for (auto& [node, earlier] : retained) {
    const T* e = earlier.data();
    T* g = node->grad_buffer().data();
    const std::int64_t n = earlier.numel();
    MOTE_CALL_KERNEL(B, axpy, T(1), e, g, n);
  }
}

namespace detail {
// Shared body of both make_result overloads: any range of Vars as inputs.
template <Real T, Backend B, class Inputs, class BackwardFn>
Var<T, B> make_result_from(const char* op, Tensor<T, B> value, const Inputs& inputs, BackwardFn&& backward_fn) {
  if (::mote::autograd::anomaly_enabled()) check_finite(value, std::string("the output of '") + op + "'");
  auto node = std::make_shared<Node<T, B>>();
  node->value = std::move(value);
  node->op = op;
  bool any = false;
  if (::mote::autograd::grad_enabled())
    for (const auto& in : inputs) any = any || in.requires_grad();
  if (any) {
    node->requires_grad = true;
    node->inputs.reserve(inputs.size());
    for (const auto& in : inputs) node->inputs.push_back(in.node_ptr());
    node->backward_fn = std::forward<BackwardFn>(backward_fn);
  }
  return Var<T, B>(std::move(node));
}
}  // namespace detail

// Builds the output node of an op. When grad is off, or no input requires grad, the result
// is a plain value and `backward_fn` is dropped without being stored.
template <Real T, Backend B, class BackwardFn>
Var<T, B> make_result(const char* op, Tensor<T, B> value, std::initializer_list<Var<T, B>> inputs,
                      BackwardFn&& backward_fn) {
  return detail::make_result_from(op, std::move(value), inputs, std::forward<BackwardFn>(backward_fn));
}

// Same, for ops with a run-time number of inputs (concat).
template <Real T, Backend B, class BackwardFn>
Var<T, B> make_result(const char* op, Tensor<T, B> value, const std::vector<Var<T, B>>& inputs,
                      BackwardFn&& backward_fn) {
  return detail::make_result_from(op, std::move(value), inputs, std::forward<BackwardFn>(backward_fn));
}

// Inside a backward closure: the gradient buffer of input i, or nullptr when it needs none.
template <Real T, Backend B>
T* input_grad(Node<T, B>& self, std::size_t i) {
  auto& in = *self.inputs[i];
  return in.requires_grad ? in.grad_buffer().data() : nullptr;
}

// Where an op writes input i's gradient: `beta` is 0 when the buffer is new (uninitialized: the op
// must overwrite every element, as a GEMM with beta 0 does) and 1 when it adds to what is there.
// Saves the zero fill that input_grad does; data is null when the input needs no gradient.
template <Real T>
struct GradSlot {
  T* data = nullptr;
  T beta = T(1);
};

template <Real T, Backend B>
GradSlot<T> input_grad_slot(Node<T, B>& self, std::size_t i) {
  auto& in = *self.inputs[i];
  if (!in.requires_grad) return {};
  if (in.grad.defined()) return {in.grad.data(), T(1)};
  in.grad = Tensor<T, B>(in.value.shape());
  return {in.grad.data(), T(0)};
}

// Inside a backward closure, as its last use of self.grad: hands the output gradient to input i
// unchanged, read in the input's shape (same element count). An input with no gradient yet takes
// the buffer itself (no allocation, fill or add).
template <Real T, Backend B>
void pass_grad(Node<T, B>& self, std::size_t i) {
  auto& in = *self.inputs[i];
  if (!in.requires_grad) return;
  if (!in.grad.defined() && !self.retain_grad && self.grad.numel() == in.value.numel() && self.grad.is_contiguous()) {
    in.grad = self.grad.reshape(in.value.shape());
    self.grad = Tensor<T, B>();
    return;
  }
  const T* g = self.grad.data();
  T* gin = in.grad_buffer().data();
  const std::int64_t n = self.grad.numel();
  MOTE_CALL_KERNEL(B, axpy, T(1), g, gin, n);
}

// Throws autograd_error for an empty Var (ops reject empty handles up front).
template <Real T, Backend B>
void expect_defined(const Var<T, B>& v, const char* op, const char* arg) {
  if (!v.defined()) throw autograd_error(std::string("mote: ") + op + ": argument '" + arg + "' is an empty Var");
}

}  // namespace mote::autograd

namespace mote {
using autograd::detect_anomaly;
using autograd::no_grad;
using autograd::Var;
}  // namespace mote
