// The CUDA backend against the CPU one: every case of the one op table (tests/op_table.hpp) runs
// forward and backward in float on mote::cuda and in double on mote::cpu from the same inputs, and
// the output and every input gradient must agree to the case's float tolerance; then kernels,
// models, MoTE experts and generation. Plain main(), so nvcc needs no Boost.
// Exit codes: 0 all passed, 1 some check failed, 77 no CUDA device (CTest reports a skip).
#include <mote/cuda.cuh>

#include "op_table.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using gpu = mote::cuda;  // a using-declaration of mote::cuda at global scope would clash with CCCL's ::cuda
using mote::Shape;
using mote::Tensor;
using mote::Var;
using mote::testing::OpSpec;
using mote::testing::relative_error;

// float vs double after a handful of roundings: far above float's 6e-8, far below a wrong result.
constexpr double default_tolerance = 1e-4;

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

// Seeded values with |x| in [0.5, 1.5] and random signs, as the op table draws them.
std::vector<std::vector<double>> draw_inputs(const std::vector<Shape>& shapes, std::uint64_t seed) {
  return mote::testing::draw_inputs(OpSpec{.inputs = shapes, .seed = seed});
}

// Fresh GPU allocations are NaN during the float run, so an element a kernel forgot to write shows.
struct PoisonScope {
  PoisonScope() { mote::debug::poison_allocations = true; }
  ~PoisonScope() { mote::debug::poison_allocations = false; }
};

// One case of the op table: build(inputs) in double on the CPU and in float on CUDA, sum(out * w)
// back-propagated for random w in both, the output and every input gradient compared. Device kernels
// sum in other orders (tree reductions, atomics), so each tolerance is the CPU's for float (the
// case's, ten times that for gradients) or default_tolerance, whichever is larger.
template <class Build>
void compare_op(Report& report, const OpSpec& spec, const Build& build) {
  report.guarded(spec.name, [&] {
    const double tolerance = std::max(spec.float_tol, default_tolerance);
    const double gradient_tolerance = std::max(spec.float_tol * 10, default_tolerance);
    const auto values = mote::testing::draw_inputs(spec);
    auto ref_inputs = mote::testing::make_vars<double, mote::cpu>(spec, values);
    Var<double, mote::cpu> ref_out = build(ref_inputs);
    PoisonScope poison;
    auto gpu_inputs = mote::testing::make_vars<float, gpu>(spec, values);
    Var<float, gpu> gpu_out = build(gpu_inputs);
    if (!(gpu_out.shape() == ref_out.shape())) {
      report.expect(false, spec.name + ": output shape " + gpu_out.shape().str() + " on cuda, " + ref_out.shape().str() +
                               " on cpu");
      return;
    }
    report.check(spec.name + ": output", relative_error(gpu_out.value().to_vector(), ref_out.value().to_vector()), tolerance);
    if (!ref_out.requires_grad()) return;

    const auto w = mote::testing::seed_weights(ref_out.numel(), spec.seed);
    const std::vector<float> wf(w.begin(), w.end());
    ref_out.backward(Tensor<double, mote::cpu>::from_vector(ref_out.shape(), w));
    gpu_out.backward(Tensor<float, mote::cpu>::from_vector(gpu_out.shape(), wf).to<gpu>());
    for (std::size_t i = 0; i < values.size(); ++i) {
      const std::string what = spec.name + ": gradient of input " + std::to_string(i);
      if (!gpu_inputs[i].grad().defined() || !ref_inputs[i].grad().defined()) {
        report.expect(gpu_inputs[i].grad().defined() == ref_inputs[i].grad().defined(), what + " defined on both");
        continue;
      }
      report.check(what, relative_error(gpu_inputs[i].grad().to_vector(), ref_inputs[i].grad().to_vector()),
                   gradient_tolerance);
    }
  });
}

// The largest relative error over matching (name, Var) lists' gradients, and where it is; a missing
// gradient or a NaN counts as infinite, so it cannot hide behind a later finite error.
template <class DevParams, class RefParams>
std::pair<double, std::string> worst_gradient(const DevParams& dev, const RefParams& ref) {
  if (dev.size() != ref.size()) return {std::numeric_limits<double>::infinity(), "the parameter count"};
  std::pair<double, std::string> worst{0.0, "none"};
  for (std::size_t i = 0; i < dev.size(); ++i) {
    const auto& g = dev[i].second.grad();
    const auto& rg = ref[i].second.grad();
    double e = g.defined() && rg.defined() ? relative_error(g.to_vector(), rg.to_vector())
                                           : std::numeric_limits<double>::infinity();
    if (std::isnan(e)) e = std::numeric_limits<double>::infinity();
    if (e >= worst.first) worst = {e, dev[i].first};
  }
  return worst;
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

  report.guarded("memory report", [&] {
    using traits = mote::backend_traits<gpu>;
    constexpr std::size_t bytes = (std::size_t{1} << 22) * sizeof(float);
    gpu::synchronize();
    traits::reset_memory_peak();
    const mote::MemoryUse before = traits::memory_use();
    std::size_t during_live = 0;
    {
      const Tensor<float, gpu> big(Shape{std::int64_t{1} << 22});
      gpu::synchronize();
      during_live = traits::memory_use().live_bytes;
    }
    gpu::synchronize();
    const mote::MemoryUse after = traits::memory_use();
    report.expect(before.known && during_live >= before.live_bytes + bytes,
                  "memory: a 16 MiB tensor adds at least 16 MiB to the pool's use");
    report.expect(after.live_bytes < during_live && after.peak_bytes >= during_live,
                  "memory: freeing it lowers the use; the high mark keeps it");
    traits::reset_memory_peak();
    report.expect(traits::memory_use().peak_bytes < during_live,
                  "memory: reset_memory_peak restarts the mark from the current use");
  });

  report.guarded("allocation failure", [&] {
    bool typed = false;
    try {
      (void)Tensor<float, gpu>(Shape{1 << 20, 1 << 20, 1 << 10});  // 4 PiB
    } catch (const mote::backend_error& e) {
      typed = std::string(e.what()).find("cudaMallocAsync") != std::string::npos;
    }
    report.expect(typed, "allocation: an impossible allocation throws backend_error naming cudaMallocAsync");
    report.expect(Tensor<float, gpu>::full({4}, 1.0f).to_vector() == std::vector<float>(4, 1.0f),
                  "allocation: the device still works after the failure");
  });
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
    const OpSpec spec{.inputs = shapes};
    auto ref = mote::testing::make_vars<double, mote::cpu>(spec, values);
    auto dev = mote::testing::make_vars<float, gpu>(spec, values);
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

// Work inside a stream_scope goes to the caller's stream, ordered with the work before and after it.
void stream_checks(Report& report) {
  report.guarded("explicit streams", [&] {
    const std::vector<Shape> shapes = {{8, 16}, {32, 16}, {32}, {4, 32}, {4}, {8, 4}};
    const auto values = draw_inputs(shapes, 7);
    const OpSpec spec{.inputs = shapes};
    auto on_default = mote::testing::make_vars<float, gpu>(spec, values);
    auto default_loss = mlp_loss(on_default);
    default_loss.backward();

    cudaStream_t mine = nullptr;
    mote::backend::cuda_detail::check(cudaStreamCreateWithFlags(&mine, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    report.expect(gpu::current_stream() == nullptr, "streams: outside any scope, the legacy default stream");
    auto on_mine = mote::testing::make_vars<float, gpu>(spec, values);  // made before the scope, used inside
    Tensor<float, gpu> made_inside;
    double loss_inside = 0;
    {
      gpu::stream_scope scope(mine);
      report.expect(gpu::current_stream() == mine, "streams: a scope names the thread's stream");
      {
        gpu::stream_scope nested(nullptr);
        report.expect(gpu::current_stream() == nullptr, "streams: a nested scope names its own");
      }
      report.expect(gpu::current_stream() == mine, "streams: a nested scope's end restores the outer stream");
      auto loss = mlp_loss(on_mine);
      loss.backward();
      loss_inside = loss.item();
      made_inside = on_mine[1].grad().clone();
    }
    report.expect(gpu::current_stream() == nullptr, "streams: the scope's end restores the legacy default stream");
    report.check("streams: loss on the caller's stream against the default stream's",
                 relative_error(std::vector<double>{loss_inside}, std::vector<double>{default_loss.item()}), 1e-6);
    report.check("streams: a gradient made inside the scope, read after it",
                 relative_error(made_inside.to_vector(), on_default[1].grad().to_vector()), 1e-6);
    for (std::size_t i = 0; i < shapes.size(); ++i)
      report.check("streams: gradient " + std::to_string(i) + " on the caller's stream",
                   relative_error(on_mine[i].grad().to_vector(), on_default[i].grad().to_vector()), 1e-6);
    on_mine.clear();  // freed on the default stream after the join
    made_inside = Tensor<float, gpu>();
    gpu::synchronize();
    mote::backend::cuda_detail::check(cudaStreamDestroy(mine), "cudaStreamDestroy");
  });
}

void scatter_checks(Report& report) {
  report.guarded("index_scatter_add_distinct kernel", [&] {
    const std::vector<std::int32_t> index{4, 0, 2};
    const std::int64_t outer = 2, m = 3, n = 5, inner = 300;
    const auto values = draw_inputs({{outer, m, inner}, {outer, n, inner}}, 79);
    std::vector<float> src(values[0].begin(), values[0].end()), dst(values[1].begin(), values[1].end());
    const auto src_gpu = Tensor<float, mote::cpu>::from_vector({outer, m, inner}, src).to<gpu>();
    auto dst_gpu = Tensor<float, mote::cpu>::from_vector({outer, n, inner}, dst).to<gpu>();
    const auto index_gpu = Tensor<std::int32_t, gpu>::from_vector({m}, index);
    mote::backend::index_scatter_add(mote::cpu{}, src.data(), outer, m, inner, index.data(), n, dst.data());
    mote::backend::index_scatter_add_distinct(gpu{}, src_gpu.data(), outer, m, inner, index_gpu.data(), n, dst_gpu.data());
    report.check("index_scatter_add_distinct: equals the general scatter", relative_error(dst_gpu.to_vector(), dst), 1e-6);
  });
}

// matmul_precision::bf16 on the device: cuBLAS's tensor cores on bf16-rounded operands with float
// sums, against a double product of the same rounded operands; fp32 again once the scope ends.
void bf16_gemm_checks(Report& report) {
  report.guarded("gemm under matmul_precision::bf16", [&] {
    using mote::backend::bf16_detail::round_to_bf16;
    const std::int64_t m = 96, n = 80, k = 200;
    for (const bool ta : {false, true})
      for (const bool tb : {false, true}) {
        const auto values = draw_inputs({{m, k}, {k, n}}, 83);
        const std::vector<float> a(values[0].begin(), values[0].end()), b(values[1].begin(), values[1].end());
        // Stored layouts for the transposes; op(A)[i, q] and op(B)[q, j] are the same values.
        std::vector<float> a_stored(a.size()), b_stored(b.size());
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t q = 0; q < k; ++q) a_stored[ta ? q * m + i : i * k + q] = a[i * k + q];
        for (std::int64_t q = 0; q < k; ++q)
          for (std::int64_t j = 0; j < n; ++j) b_stored[tb ? j * k + q : q * n + j] = b[q * n + j];
        std::vector<double> rounded(m * n), exact(m * n);
        double magnitude = 0;
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t j = 0; j < n; ++j) {
            double r = 0, e = 0;
            for (std::int64_t q = 0; q < k; ++q) {
              r += double(round_to_bf16(a[i * k + q])) * round_to_bf16(b[q * n + j]);
              e += double(a[i * k + q]) * b[q * n + j];
              magnitude = std::max(magnitude, std::abs(double(a[i * k + q]) * b[q * n + j]) * k);
            }
            rounded[i * n + j] = r;
            exact[i * n + j] = e;
          }
        const auto a_gpu = Tensor<float, gpu>::from_vector({m * k}, a_stored);
        const auto b_gpu = Tensor<float, gpu>::from_vector({k * n}, b_stored);
        auto product = [&] {
          auto c = Tensor<float, gpu>::zeros({m * n});
          mote::backend::gemm(gpu{}, ta, tb, m, n, k, 1.0f, a_gpu.data(), ta ? m : k, b_gpu.data(), tb ? k : n, 0.0f,
                              c.data(), n);
          return c.to_vector();
        };
        // Largest |c - want| over the largest possible |term| * k: errors of the sum, not of a term.
        auto distance = [&](const std::vector<float>& c, const std::vector<double>& want) {
          double worst = 0;
          for (std::size_t i = 0; i < c.size(); ++i) worst = std::max(worst, std::abs(c[i] - want[i]));
          return worst / magnitude;
        };
        const std::string flags = std::string(" trans_a=") + (ta ? "1" : "0") + " trans_b=" + (tb ? "1" : "0");
        std::vector<float> mixed;
        {
          const mote::scoped_matmul_precision bf16(mote::matmul_precision::bf16);
          mixed = product();
        }
        report.check("gemm bf16: equals the product of rounded operands" + flags, distance(mixed, rounded), 1e-6);
        report.expect(distance(mixed, exact) > 1e-5, "gemm bf16: differs from the fp32 product" + flags);
        report.check("gemm fp32 after the scope: the exact product" + flags, distance(product(), exact), 1e-6);
      }
  });
}

void optimizer_checks(Report& report) {
  report.guarded("adamw_update kernel", [&] {
    const std::int64_t n = 5000;
    const auto draw = draw_inputs({{n}, {n}, {n}, {n}}, 77);
    std::vector<std::vector<float>> cpu_side, gpu_side;
    for (const auto& v : draw) cpu_side.emplace_back(v.begin(), v.end());
    for (auto& x : cpu_side[3]) x = std::abs(x);  // the second moment is never negative
    std::vector<Tensor<float, gpu>> dev;
    for (const auto& v : cpu_side) dev.push_back(Tensor<float, mote::cpu>::from_vector({n}, v).to<gpu>());
    const float decay = 0.999f, beta1 = 0.9f, beta2 = 0.99f, eps = 1e-8f, step_size = 0.01f, bc2 = 0.3f;
    mote::backend::adamw_update(mote::cpu{}, cpu_side[0].data(), cpu_side[1].data(), cpu_side[2].data(),
                                cpu_side[3].data(), n, decay, beta1, beta2, eps, step_size, bc2);
    mote::backend::adamw_update(gpu{}, dev[0].data(), dev[1].data(), dev[2].data(), dev[3].data(), n, decay, beta1, beta2,
                                eps, step_size, bc2);
    report.check("adamw_update: parameters", relative_error(dev[0].to_vector(), cpu_side[0]), 1e-6);
    report.check("adamw_update: first moments", relative_error(dev[2].to_vector(), cpu_side[2]), 1e-6);
    report.check("adamw_update: second moments", relative_error(dev[3].to_vector(), cpu_side[3]), 1e-6);
  });
  report.guarded("sgd_update kernel", [&] {
    const std::int64_t n = 3000;
    const auto draw = draw_inputs({{n}, {n}, {n}}, 78);
    std::vector<std::vector<float>> cpu_side;
    for (const auto& v : draw) cpu_side.emplace_back(v.begin(), v.end());
    std::vector<Tensor<float, gpu>> dev;
    for (const auto& v : cpu_side) dev.push_back(Tensor<float, mote::cpu>::from_vector({n}, v).to<gpu>());
    mote::backend::sgd_update(mote::cpu{}, cpu_side[0].data(), cpu_side[1].data(), cpu_side[2].data(), n, 0.1f, 0.9f,
                              0.1f, 0.01f, true, false);
    mote::backend::sgd_update(gpu{}, dev[0].data(), dev[1].data(), dev[2].data(), n, 0.1f, 0.9f, 0.1f, 0.01f, true, false);
    report.check("sgd_update (nesterov, decay): parameters", relative_error(dev[0].to_vector(), cpu_side[0]), 1e-6);
    report.check("sgd_update (nesterov, decay): momentum", relative_error(dev[2].to_vector(), cpu_side[2]), 1e-6);
  });
}

// mote::cuda with the graph-free decoding step chosen (backend_traits::decode_path). Its kernels are
// cuda's, found through the base class, so nn/decode.hpp is checked on the device before cuda
// itself chooses it.
struct gpu_graph_free : gpu {
  static constexpr mote::DecodePath decode_path = mote::DecodePath::graph_free;
};
static_assert(mote::backend_traits<gpu_graph_free>::decode_path == mote::DecodePath::graph_free);
static_assert(mote::backend_traits<gpu>::decode_path == mote::DecodePath::layered);
static_assert(!mote::backend_traits<gpu_graph_free>::host_decode_adapters);
static_assert(std::is_same_v<mote::backend_traits<gpu>::stream_type, cudaStream_t>);

// The same tiny model in double on the CPU and in float on CUDA (weights copied across, scaled up
// so that predictions are peaked): logits, loss, every parameter gradient, AdamW steps and
// greedy generation with and without the KV cache.
template <mote::nn::Config C>
void model_checks(Report& report, const std::string& name) {
  report.guarded(name + " model", [&] {
    mote::nn::CausalLM<C, double, mote::cpu> ref(std::uint64_t{5});
    mote::nn::CausalLM<C, float, gpu> dev(std::uint64_t{5});
    std::vector<std::pair<std::string, Var<double, mote::cpu>>> ref_params;
    ref.for_each_parameter([&](const std::string& n, Var<double, mote::cpu>& p) {
      if (p.shape().rank() == 2) p.mutable_value().copy_from(mote::scale(p, 4.0).value());
      ref_params.emplace_back(n, p);
    });
    mote::nn::copy_parameters(ref, dev);
    report.check(name + ": copy_parameters brings the CPU weights over",
                 relative_error(dev.named_parameters().back().second.value().to_vector(),
                                ref_params.back().second.value().to_vector()),
                 1e-7);

    const std::int64_t batch = 2, len = 9;
    mote::Rng rng(11);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(batch * len)), targets(ids.size());
    for (auto& v : ids) v = static_cast<std::int32_t>(rng.below(C.vocab));
    for (auto& v : targets) v = static_cast<std::int32_t>(rng.below(C.vocab));
    targets[3] = -100;
    const auto ids_cpu = Tensor<std::int32_t, mote::cpu>::from_vector({batch, len}, ids);
    const auto targets_cpu = Tensor<std::int32_t, mote::cpu>::from_vector({batch, len}, targets);
    const auto ids_gpu = ids_cpu.to<gpu>(), targets_gpu = targets_cpu.to<gpu>();

    report.check(name + ": logits",
                 relative_error(dev.logits(ids_gpu).value().to_vector(), ref.logits(ids_cpu).value().to_vector()),
                 default_tolerance);
    auto ref_loss = ref.loss(ids_cpu, targets_cpu);
    auto dev_loss = dev.loss(ids_gpu, targets_gpu);
    report.check(name + ": loss", relative_error(std::vector<double>{dev_loss.item()}, std::vector<double>{ref_loss.item()}),
                 default_tolerance);
    ref_loss.backward();
    dev_loss.backward();
    const auto [worst, worst_name] = worst_gradient(dev.named_parameters(), ref_params);
    report.check(name + ": every parameter gradient (worst: " + worst_name + ")", worst, default_tolerance);

    mote::optim::AdamW<double, mote::cpu> ref_opt(ref.parameters(), {.lr = 1e-2});
    mote::optim::AdamW<float, gpu> dev_opt(dev.parameters(), {.lr = 1e-2f});
    double ref_last = ref_loss.item(), dev_last = dev_loss.item();
    const double dev_first = dev_last;
    for (int step = 0; step < 3; ++step) {
      ref_opt.step();
      dev_opt.step();
      ref_opt.zero_grad();
      dev_opt.zero_grad();
      auto rl = ref.loss(ids_cpu, targets_cpu);
      auto dl = dev.loss(ids_gpu, targets_gpu);
      rl.backward();
      dl.backward();
      ref_last = rl.item();
      dev_last = dl.item();
    }
    // Adam's first steps are nearly sign(g) * lr, so tiny gradients may step apart; the losses stay close.
    report.check(name + ": loss after 3 AdamW steps", relative_error(std::vector<double>{dev_last}, std::vector<double>{ref_last}),
                 1e-3);
    report.expect(dev_last < dev_first, name + ": AdamW on cuda lowered the loss (" + std::to_string(dev_first) + " -> " +
                                            std::to_string(dev_last) + ")");

    const std::vector<std::vector<std::int32_t>> prompts = {{1, 2, 3, 4, 5}, {7, 8}};
    const mote::nn::GenerateOptions cached{.max_new_tokens = 6};
    mote::nn::GenerateOptions recomputed = cached;
    recomputed.use_cache = false;
    const auto with_cache = mote::nn::generate(dev, prompts, cached);
    report.expect(with_cache == mote::nn::generate(dev, prompts, recomputed),
                  name + ": greedy generation on cuda gives the same tokens with and without the KV cache");
    report.expect(with_cache == mote::nn::generate(ref, prompts, cached),
                  name + ": greedy generation on cuda matches the CPU model's tokens");

    mote::nn::CausalLM<C, float, gpu_graph_free> stepped(std::uint64_t{5});
    mote::nn::copy_parameters(ref, stepped);
    auto cache = stepped.make_cache();
    auto layered_cache = dev.make_cache();
    const auto prompt = Tensor<std::int32_t, mote::cpu>::from_vector({1, 5}, {1, 2, 3, 4, 5});
    const auto next = Tensor<std::int32_t, mote::cpu>::from_vector({1, 1}, {6});
    mote::no_grad off;
    (void)stepped.logits(prompt.to<gpu_graph_free>(), {}, &cache);
    (void)dev.logits(prompt.to<gpu>(), {}, &layered_cache);
    report.check(name + ": the graph-free decoding step on cuda against the layered forward",
                 relative_error(stepped.logits(next.to<gpu_graph_free>(), {}, &cache).value().to_vector(),
                                dev.logits(next.to<gpu>(), {}, &layered_cache).value().to_vector()),
                 1e-6);
    report.expect(mote::nn::generate(stepped, prompts, cached) == with_cache,
                  name + ": greedy generation through the graph-free step on cuda gives the same tokens");
  });
}

// MoTE experts (3 steps + shared) on a tiny Llama, double on the CPU and float on CUDA with the same
// weights: the routed loss and every expert gradient, then merge_step against routing every token to
// that step.
void mote_layer_checks(Report& report) {
  report.guarded("MoTE experts", [&] {
    constexpr mote::nn::Config C = mote::presets::tiny_llama;
    mote::nn::CausalLM<C, double, mote::cpu> ref(std::uint64_t{5});
    mote::nn::CausalLM<C, float, gpu> dev(std::uint64_t{5});
    mote::nn::copy_parameters(ref, dev);
    const mote::lora::Options options{.rank = 4, .alpha = 8, .seed = 3};
    auto ref_experts = mote::lora::attach<mote::lora::StepRouter<3>>(ref, options);
    auto dev_experts = mote::lora::attach<mote::lora::StepRouter<3>>(dev, options);
    auto ref_named = ref_experts.named_parameters();
    auto dev_named = dev_experts.named_parameters();
    report.expect(ref_named.size() == dev_named.size() && !ref_named.empty(), "MoTE: the same expert parameters on both");
    mote::Rng rng(17);
    for (std::size_t i = 0; i < ref_named.size() && i < dev_named.size(); ++i) {
      auto& p = ref_named[i].second;
      if (ref_named[i].first.find("lora_B") != std::string::npos)  // B starts at zero; make it count
        p.mutable_value().copy_from(Tensor<double, mote::cpu>::normal(p.shape(), 0.0, 0.3, rng));
      const std::vector<double> values = p.value().to_vector();
      dev_named[i].second.mutable_value().copy_from(
          Tensor<float, mote::cpu>::from_vector(p.shape(), std::vector<float>(values.begin(), values.end())).to<gpu>());
    }
    const std::int64_t batch = 2, len = 12;
    std::vector<std::int32_t> ids, targets, steps;
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < len; ++t) {
        ids.push_back(static_cast<std::int32_t>((7 * t + 3 * b + 1) % C.vocab));
        targets.push_back(static_cast<std::int32_t>((5 * t + b + 2) % C.vocab));
        steps.push_back(t < 3 ? mote::lora::unrouted : static_cast<std::int32_t>((t - 3) / (3 + b)));
      }
    const auto on_cpu = [&](const std::vector<std::int32_t>& v) { return Tensor<std::int32_t, mote::cpu>::from_vector({batch, len}, v); };
    const auto ids_cpu = on_cpu(ids), targets_cpu = on_cpu(targets), steps_cpu = on_cpu(steps);
    const auto ids_gpu = ids_cpu.to<gpu>(), targets_gpu = targets_cpu.to<gpu>(), steps_gpu = steps_cpu.to<gpu>();
    ref_experts.reseed(9);  // question tokens draw the same step expert on both
    dev_experts.reseed(9);
    auto ref_loss = ref.loss(ids_cpu, targets_cpu, {.adapter = ref_experts.route(steps_cpu)});
    auto dev_loss = dev.loss(ids_gpu, targets_gpu, {.adapter = dev_experts.route(steps_gpu)});
    report.check("MoTE: routed loss", relative_error(std::vector<double>{dev_loss.item()}, std::vector<double>{ref_loss.item()}),
                 default_tolerance);
    ref_loss.backward();
    dev_loss.backward();
    const auto [worst, worst_name] = worst_gradient(dev_named, ref_named);
    report.check("MoTE: every expert gradient (worst: " + worst_name + ")", worst, default_tolerance);

    mote::no_grad off;
    dev_experts.eval();
    const std::vector<std::int32_t> all_answer(static_cast<std::size_t>(batch * len), 2);
    const auto answer_gpu = Tensor<std::int32_t, gpu>::from_vector({batch, len}, all_answer);
    const auto routed = dev.logits(ids_gpu, {.adapter = dev_experts.route(answer_gpu)}).value().to_vector();
    dev_experts.merge_step(2);
    const auto merged = dev.logits(ids_gpu).value().to_vector();
    report.check("MoTE: merge_step(2) on cuda equals routing every token to step 2", relative_error(merged, routed), 1e-5);
    dev_experts.unmerge();
    report.check("MoTE: unmerge restores the base",
                 relative_error(dev.named_parameters().front().second.value().to_vector(),
                                ref.named_parameters().front().second.value().to_vector()),
                 1e-7);
  });
}

}  // namespace

int main() {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    if (status != cudaSuccess) std::printf("(cudaGetDeviceCount: %s)\n", cudaGetErrorString(status));
    // The one check that needs no device: first use says in words that there is none.
    try {
      (void)Tensor<float, gpu>::zeros({4});
    } catch (const mote::backend_error& e) {
      std::printf("first use without a device: %s\n", e.what());
      if (std::string(e.what()).find("no usable CUDA device") != std::string::npos) return 77;
    }
    std::printf("FAIL  first use without a device did not throw backend_error naming the missing device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("device 0: %s, compute capability %d.%d\n", prop.name, prop.major, prop.minor);

  Report report;
  tensor_checks(report);
  mote::testing::for_each_op_case([&](const OpSpec& spec, const auto& build) { compare_op(report, spec, build); });
  mlp_checks(report);
  stream_checks(report);
  scatter_checks(report);
  bf16_gemm_checks(report);
  optimizer_checks(report);
  model_checks<mote::presets::tiny_gpt2>(report, "tiny GPT-2");
  model_checks<mote::presets::tiny_llama>(report, "tiny Llama");
  mote_layer_checks(report);
  report.guarded("final synchronize", [] { gpu::synchronize(); });

  std::printf("%d of %d checks passed\n", report.checks - report.failures, report.checks);
  return report.failures == 0 ? 0 : 1;
}
