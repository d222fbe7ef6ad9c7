// The CUDA backend against the CPU one: every op runs forward and backward in float on
// mote::cuda and in double on mote::cpu from the same inputs, and the output and every input
// gradient must agree to a stated relative error. Plain main(), so nvcc needs no Boost.
// Exit codes: 0 all passed, 1 some check failed, 77 no CUDA device (CTest reports a skip).
#include <mote/cuda.cuh>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using gpu = mote::cuda;  // a using-declaration of mote::cuda at global scope would clash with CCCL's ::cuda
using mote::Shape;
using mote::Tensor;
using mote::Var;

// float vs double after a handful of roundings: far above float's 6e-8, far below a wrong result.
constexpr double default_tolerance = 1e-4;

// The element type of the Vars in a vector, inside the generic op lambdas.
template <class Vars>
using element_of = typename std::remove_cvref_t<Vars>::value_type::value_type;

struct Report {
  int checks = 0;
  int failures = 0;

  void check(const std::string& what, double error, double tolerance) {
    ++checks;
    const bool ok = error <= tolerance;  // NaN fails
    if (!ok) ++failures;
    std::printf("%s  %-64s relative error %.2e (tolerance %.0e)\n", ok ? "ok  " : "FAIL", what.c_str(), error, tolerance);
  }
  void expect(bool ok, const std::string& what) {
    ++checks;
    if (!ok) ++failures;
    std::printf("%s  %s\n", ok ? "ok  " : "FAIL", what.c_str());
  }
  // Runs one group of checks; an exception fails the group instead of ending the program.
  void guarded(const std::string& what, const std::function<void()>& body) {
    try {
      body();
    } catch (const std::exception& e) {
      expect(false, what + " threw: " + e.what());
    }
  }
};

// max |a - b| / max(max |b|, tiny): one relative error per tensor, infinite on a size mismatch.
template <class A, class B>
double relative_error(const std::vector<A>& a, const std::vector<B>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, scale = 1e-12;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    if (std::isnan(x) || std::isnan(y)) return std::numeric_limits<double>::quiet_NaN();
    diff = std::max(diff, std::abs(x - y));
    scale = std::max(scale, std::abs(y));
  }
  return diff / scale;
}

// Seeded values with |x| in [0.5, 1.5] and random signs: no zeros to divide by.
std::vector<std::vector<double>> draw_inputs(const std::vector<Shape>& shapes, std::uint64_t seed) {
  mote::Rng rng(seed);
  std::vector<std::vector<double>> out;
  for (const auto& shape : shapes) {
    std::vector<double> v(static_cast<std::size_t>(shape.numel()));
    for (auto& x : v) x = rng.uniform(0.5, 1.5) * (rng.uniform() < 0.5 ? -1.0 : 1.0);
    out.push_back(std::move(v));
  }
  return out;
}

template <class T, class B>
std::vector<Var<T, B>> make_vars(const std::vector<Shape>& shapes, const std::vector<std::vector<double>>& values) {
  std::vector<Var<T, B>> vars;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const std::vector<T> host(values[i].begin(), values[i].end());
    vars.emplace_back(Tensor<T, mote::cpu>::from_vector(shapes[i], host).template to<B>(), true);
  }
  return vars;
}

std::vector<double> seed_weights(std::int64_t n, std::uint64_t seed) {
  mote::Rng rng(seed ^ 0x5eedULL);
  std::vector<double> w(static_cast<std::size_t>(n));
  for (auto& x : w) x = rng.uniform(-1.0, 1.0);
  return w;
}

// Fresh GPU allocations are NaN during the float run, so an element a kernel forgot to write shows.
struct PoisonScope {
  PoisonScope() { mote::debug::poison_allocations = true; }
  ~PoisonScope() { mote::debug::poison_allocations = false; }
};

// Runs build(inputs) in double on the CPU and in float on CUDA, back-propagates sum(out * w) for
// random w in both, and compares the outputs and every input gradient.
template <class Build>
void compare_op(Report& report, const std::string& name, const std::vector<Shape>& shapes, Build build,
                double tolerance = default_tolerance, std::uint64_t seed = 1234) {
  report.guarded(name, [&] {
    const auto values = draw_inputs(shapes, seed);
    auto ref_inputs = make_vars<double, mote::cpu>(shapes, values);
    Var<double, mote::cpu> ref_out = build(ref_inputs);
    PoisonScope poison;
    auto gpu_inputs = make_vars<float, gpu>(shapes, values);
    Var<float, gpu> gpu_out = build(gpu_inputs);
    if (!(gpu_out.shape() == ref_out.shape())) {
      report.expect(false, name + ": output shape " + gpu_out.shape().str() + " on cuda, " + ref_out.shape().str() +
                               " on cpu");
      return;
    }
    report.check(name + ": output", relative_error(gpu_out.value().to_vector(), ref_out.value().to_vector()), tolerance);

    const auto w = seed_weights(ref_out.numel(), seed);
    const std::vector<float> wf(w.begin(), w.end());
    ref_out.backward(Tensor<double, mote::cpu>::from_vector(ref_out.shape(), w));
    gpu_out.backward(Tensor<float, mote::cpu>::from_vector(gpu_out.shape(), wf).to<gpu>());
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const std::string what = name + ": gradient of input " + std::to_string(i);
      if (!gpu_inputs[i].grad().defined() || !ref_inputs[i].grad().defined()) {
        report.expect(gpu_inputs[i].grad().defined() == ref_inputs[i].grad().defined(), what + " defined on both");
        continue;
      }
      report.check(what, relative_error(gpu_inputs[i].grad().to_vector(), ref_inputs[i].grad().to_vector()), tolerance);
    }
  });
}

std::vector<float> iota_values(std::int64_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.5f - 3.0f;
  return v;
}

void tensor_checks(Report& report) {
  report.guarded("tensor round trip", [&] {
    const Shape shape{3, 5};
    const auto host = iota_values(shape.numel());
    const auto t = Tensor<float, gpu>::from_vector(shape, host);
    report.expect(t.to_vector() == host, "tensor: from_vector then to_vector gives the values back");
    const auto back = Tensor<float, mote::cpu>::from_vector(shape, host).to<gpu>().to<mote::cpu>();
    report.expect(back.to_vector() == host, "tensor: cpu -> cuda -> cpu keeps every value");
    report.expect(t.to<gpu>().to_vector() == host && !t.to<gpu>().shares_storage_with(t),
                  "tensor: cuda -> cuda is a separate copy");
    report.expect(t.clone().to_vector() == host, "tensor: clone");
    auto target = Tensor<float, gpu>::zeros(shape);
    report.expect(target.to_vector() == std::vector<float>(host.size(), 0.0f), "tensor: zeros");
    target.copy_from(t);
    report.expect(target.to_vector() == host, "tensor: copy_from");
    target.fill(2.5f);
    report.expect(target.to_vector() == std::vector<float>(host.size(), 2.5f), "tensor: fill");
    report.expect(Tensor<double, gpu>::full({}, -4.25).item() == -4.25, "tensor: item of a rank-0 double tensor");
    const std::vector<std::int32_t> ids = {7, -1, 3, 0, 42, 5};
    const auto ids_t = Tensor<std::int32_t, gpu>::from_vector({2, 3}, ids);
    report.expect(ids_t.to_vector() == ids, "tensor: int32 round trip");
    report.expect(Tensor<float, gpu>::zeros({0, 4}).to_vector().empty(), "tensor: an empty tensor round trips");
  });

  report.guarded("contiguous of views", [&] {
    const Shape shape{2, 3, 4, 5};
    const auto host = iota_values(shape.numel());
    const auto on_cpu = Tensor<float, mote::cpu>::from_vector(shape, host);
    const auto on_gpu = on_cpu.to<gpu>();
    const auto same = [&](const auto& cpu_view, const auto& gpu_view, const std::string& what) {
      const auto packed = gpu_view.contiguous();
      report.expect(packed.is_contiguous() && packed.shape() == cpu_view.shape() &&
                        packed.to_vector() == cpu_view.contiguous().to_vector(),
                    "contiguous: " + what);
    };
    same(on_cpu.transpose(0, 3), on_gpu.transpose(0, 3), "transpose(0, 3) of [2, 3, 4, 5]");
    same(on_cpu.transpose(-1, -2), on_gpu.transpose(-1, -2), "transpose of the last two dims");
    same(on_cpu.slice(2, 1, 2).transpose(1, 2), on_gpu.slice(2, 1, 2).transpose(1, 2), "slice then transpose");
    const auto flat = on_cpu.reshape({6, 20});
    const auto flat_gpu = on_gpu.reshape({6, 20});
    same(flat.transpose(0, 1), flat_gpu.transpose(0, 1), "transpose of a 2-D [6, 20]");
    const std::vector<std::int32_t> ids = {1, 2, 3, 4, 5, 6};
    const auto ids_cpu = Tensor<std::int32_t, mote::cpu>::from_vector({2, 3}, ids);
    report.expect(ids_cpu.to<gpu>().transpose(0, 1).contiguous().to_vector() == ids_cpu.transpose(0, 1).contiguous().to_vector(),
                  "contiguous: transpose of an int32 [2, 3]");
  });

  report.guarded("allocation failure", [&] {
    bool typed = false;
    try {
      (void)Tensor<float, gpu>(Shape{1 << 20, 1 << 20, 1 << 10});  // 4 PiB
    } catch (const mote::backend_error& e) {
      typed = std::string(e.what()).find("cudaMalloc") != std::string::npos;
    }
    report.expect(typed, "allocation: an impossible cudaMalloc throws backend_error naming cudaMalloc");
    report.expect(Tensor<float, gpu>::full({4}, 1.0f).to_vector() == std::vector<float>(4, 1.0f),
                  "allocation: the device still works after the failure");
  });
}

void elementwise_checks(Report& report) {
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{3, 4}, {3, 4}}, {{2, 3, 4}, {4}}, {{4}, {2, 3, 4}}, {{2, 3, 4}, {3, 4}}, {{2, 3}, {}}};
  for (const auto& [sa, sb] : shapes) {
    const std::string suffix = " " + sa.str() + " with " + sb.str();
    compare_op(report, "add" + suffix, {sa, sb}, [](auto& v) { return v[0] + v[1]; });
    compare_op(report, "sub" + suffix, {sa, sb}, [](auto& v) { return v[0] - v[1]; });
    compare_op(report, "mul" + suffix, {sa, sb}, [](auto& v) { return v[0] * v[1]; });
    compare_op(report, "div" + suffix, {sa, sb}, [](auto& v) { return v[0] / v[1]; });
  }
  // Both gradients land in one buffer.
  compare_op(report, "add x + x", {{5, 7}}, [](auto& v) { return v[0] + v[0]; });
  compare_op(report, "mul x * x", {{5, 7}}, [](auto& v) { return v[0] * v[0]; });
  compare_op(report, "scale", {{2, 5, 3}}, [](auto& v) { return mote::scale(v[0], element_of<decltype(v)>(-1.75)); });
  // Long enough for several blocks and the grid-stride loops.
  compare_op(report, "mul [600, 1000] with [1000]", {{600, 1000}, {1000}}, [](auto& v) { return v[0] * v[1]; });
}

void matmul_checks(Report& report) {
  const std::int64_t m = 5, k = 7, n = 3;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      const Shape sa = ta ? Shape{k, m} : Shape{m, k};
      const Shape sb = tb ? Shape{n, k} : Shape{k, n};
      const std::string flags = std::string(" trans_a=") + (ta ? "1" : "0") + " trans_b=" + (tb ? "1" : "0");
      const mote::MatmulOptions options{.trans_a = ta, .trans_b = tb};
      compare_op(report, "matmul 2-D" + flags, {sa, sb}, [options](auto& v) { return mote::matmul(v[0], v[1], options); });
      compare_op(report, "matmul 2-D with bias" + flags, {sa, sb, {n}},
                 [options](auto& v) { return mote::matmul(v[0], v[1], v[2], options); });
      compare_op(report, "matmul batched [2, 3, ...]" + flags, {Shape{2, 3, sa[0], sa[1]}, Shape{2, 3, sb[0], sb[1]}},
                 [options](auto& v) { return mote::matmul(v[0], v[1], options); });
      compare_op(report, "matmul batched a, shared 2-D b" + flags, {Shape{4, sa[0], sa[1]}, sb},
                 [options](auto& v) { return mote::matmul(v[0], v[1], options); });
      compare_op(report, "matmul shared 2-D a, batched b" + flags, {sa, Shape{4, sb[0], sb[1]}},
                 [options](auto& v) { return mote::matmul(v[0], v[1], options); });
    }
  compare_op(report, "linear [2, 5, 7] x [3, 7] + [3]", {{2, 5, 7}, {3, 7}, {3}},
             [](auto& v) { return mote::linear(v[0], v[1], v[2]); });
  compare_op(report, "linear [5, 7] x [3, 7]", {{5, 7}, {3, 7}}, [](auto& v) { return mote::linear(v[0], v[1]); });
  // Sizes past one cuBLAS tile, with a bias gradient summed over many rows.
  compare_op(report, "linear [300, 129] x [65, 129] + [65]", {{300, 129}, {65, 129}, {65}},
             [](auto& v) { return mote::linear(v[0], v[1], v[2]); });
}

void reduce_checks(Report& report) {
  const Shape shape{3, 4, 5};
  for (const int dim : {0, 1, 2, -1})
    for (const bool keepdim : {false, true}) {
      const std::string what = " dim=" + std::to_string(dim) + (keepdim ? " keepdim" : "");
      compare_op(report, "sum [3, 4, 5]" + what, {shape}, [dim, keepdim](auto& v) { return mote::sum(v[0], dim, keepdim); });
      compare_op(report, "mean [3, 4, 5]" + what, {shape}, [dim, keepdim](auto& v) { return mote::mean(v[0], dim, keepdim); });
    }
  compare_op(report, "sum of all [3, 4, 5]", {shape}, [](auto& v) { return mote::sum(v[0]); });
  compare_op(report, "mean of all [3, 4, 5]", {shape}, [](auto& v) { return mote::mean(v[0]); });
  // Rows longer than a block, and a column reduction over many rows.
  compare_op(report, "sum [7, 3000] dim=1", {{7, 3000}}, [](auto& v) { return mote::sum(v[0], 1); });
  compare_op(report, "mean [2000, 70] dim=0", {{2000, 70}}, [](auto& v) { return mote::mean(v[0], 0); });
  compare_op(report, "sum of all [50000]", {{50000}}, [](auto& v) { return mote::sum(v[0]); });
}

void softmax_checks(Report& report) {
  compare_op(report, "softmax [4, 37]", {{4, 37}}, [](auto& v) { return mote::softmax(v[0]); });
  compare_op(report, "softmax [2, 3, 300]", {{2, 3, 300}}, [](auto& v) { return mote::softmax(v[0]); });
  compare_op(report, "softmax [5]", {{5}}, [](auto& v) { return mote::softmax(v[0]); });
  // Logits up to 150 overflow a naive exp in float; the row max must be subtracted first.
  compare_op(report, "softmax of large logits [3, 40]", {{3, 40}},
             [](auto& v) { return mote::softmax(mote::scale(v[0], element_of<decltype(v)>(100))); });
}

// Mean squared error of a two-layer network with a softmax hidden layer.
template <class T, class B>
Var<T, B> mlp_loss(const std::vector<Var<T, B>>& p) {
  // p: x, w1, b1, w2, b2, target
  const auto hidden = mote::softmax(mote::linear(p[0], p[1], p[2]));
  const auto diff = mote::linear(hidden, p[3], p[4]) - p[5];
  return mote::mean(diff * diff);
}

// One plain SGD step on the parameters, with the backend's axpy: param -= lr * grad.
template <class T, class B>
void sgd_step(std::vector<Var<T, B>>& p, T lr) {
  for (std::size_t i = 1; i <= 4; ++i) {
    const T* grad = p[i].grad().data();
    T* value = p[i].mutable_value().data();
    mote::backend::axpy(B{}, -lr, grad, value, p[i].numel());
    p[i].zero_grad();
  }
}

void mlp_checks(Report& report) {
  report.guarded("mlp training step", [&] {
    const std::vector<Shape> shapes = {{8, 16}, {32, 16}, {32}, {4, 32}, {4}, {8, 4}};
    const auto values = draw_inputs(shapes, 99);
    auto ref = make_vars<double, mote::cpu>(shapes, values);
    auto dev = make_vars<float, gpu>(shapes, values);
    const char* names[] = {"x", "w1", "b1", "w2", "b2", "target"};

    auto ref_loss = mlp_loss(ref);
    auto dev_loss = mlp_loss(dev);
    const double ref_before = ref_loss.item(), dev_before = dev_loss.item();
    report.check("mlp: loss", relative_error(std::vector<double>{dev_before}, std::vector<double>{ref_before}),
                 default_tolerance);
    ref_loss.backward();
    dev_loss.backward();
    for (std::size_t i = 0; i < shapes.size(); ++i)
      report.check(std::string("mlp: gradient of ") + names[i],
                   relative_error(dev[i].grad().to_vector(), ref[i].grad().to_vector()), default_tolerance);

    sgd_step(ref, 0.5);
    sgd_step(dev, 0.5f);
    for (std::size_t i = 1; i <= 4; ++i)
      report.check(std::string("mlp: ") + names[i] + " after one SGD step",
                   relative_error(dev[i].value().to_vector(), ref[i].value().to_vector()), default_tolerance);
    const double ref_after = mlp_loss(ref).item(), dev_after = mlp_loss(dev).item();
    report.check("mlp: loss after the step", relative_error(std::vector<double>{dev_after}, std::vector<double>{ref_after}),
                 default_tolerance);
    report.expect(dev_after < dev_before, "mlp: the step lowered the loss on cuda (" + std::to_string(dev_before) +
                                              " -> " + std::to_string(dev_after) + ")");
  });
}

}  // namespace

int main() {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    if (status != cudaSuccess) std::printf("(cudaGetDeviceCount: %s)\n", cudaGetErrorString(status));
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("device 0: %s, compute capability %d.%d\n", prop.name, prop.major, prop.minor);

  Report report;
  tensor_checks(report);
  elementwise_checks(report);
  matmul_checks(report);
  reduce_checks(report);
  softmax_checks(report);
  mlp_checks(report);
  report.guarded("final synchronize", [] { gpu::synchronize(); });

  std::printf("%d of %d checks passed\n", report.checks - report.failures, report.checks);
  return report.failures == 0 ? 0 : 1;
}
