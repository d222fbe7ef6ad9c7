// mote_gpu_bench: the CUDA backend's figures, each beside a ceiling measured in the same run.
//   SGEMM      cuBLAS fp32 at 4096^3: the compute ceiling for every model row
//   bandwidth  device-to-device copy (read + write): the ceiling for weight-bound decode
//   models     GPT-2 124M (C1) training step and forward at the model issue's batch 4 x 64 and at a
//              GPU-sized 16 x 512, and KV-cache decode at batch 1 (32-token prompt, 128 new tokens)
//   adapters   at C2 (batch 8 x 128 and 32 x 512), rank 16 on every linear layer: LoRA and MoTE
//              (3 step experts + shared) training steps against the full step of the same run
// Usage: mote_gpu_bench [--quick]. Exits 77 when there is no CUDA device.
#include <mote/cuda.cuh>

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace {

using gpu = mote::cuda;
using mote_bench::fmt;
using mote_bench::info_row;
using mote_bench::row;

// Median seconds of fn, the device drained after each call so the time covers its kernels.
double device_seconds(const std::function<void()>& fn, int reps) {
  return mote_bench::median_seconds(
      [&] {
        fn();
        gpu::synchronize();
      },
      reps);
}

double sgemm_peak(int reps) {
  const std::int64_t n = 4096;
  const auto a = mote::Tensor<float, gpu>::full({n, n}, 0.5f), b = mote::Tensor<float, gpu>::full({n, n}, 0.25f);
  auto c = mote::Tensor<float, gpu>::zeros({n, n});
  const double s = device_seconds(
      [&] { mote::backend::gemm(gpu{}, false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n); }, reps);
  const double gf = 2.0 * double(n) * double(n) * double(n) / s * 1e-9;
  info_row("SGEMM 4096^3 (cuBLAS, ceiling)", fmt("%.0f GFLOP/s", gf));
  return gf;
}

double copy_bandwidth(int reps) {
  const std::int64_t n = std::int64_t{1} << 28;  // 1 GiB of floats per buffer
  const auto src = mote::Tensor<float, gpu>::full({n}, 1.0f);
  auto dst = mote::Tensor<float, gpu>::zeros({n});
  const double s = device_seconds([&] { gpu::copy(src.data(), dst.data(), static_cast<std::size_t>(n)); }, reps);
  const double bytes_per_s = 2.0 * double(n) * sizeof(float) / s;
  info_row("device copy (read + write)", fmt("%.0f GB/s", bytes_per_s * 1e-9));
  return bytes_per_s;
}

struct Batch {
  mote::Tensor<std::int32_t, gpu> ids, targets, step_ids;
  std::vector<std::int32_t> ids_host;
};

// Random ids and targets; each sequence's step ids form three runs of 25-44% of its length.
Batch make_batch(std::int64_t vocab, std::int64_t batch, std::int64_t seq) {
  mote::Rng rng(3);
  Batch out;
  std::vector<std::int32_t> targets(static_cast<std::size_t>(batch * seq)), steps;
  out.ids_host.resize(targets.size());
  for (auto& v : out.ids_host) v = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(vocab)));
  for (auto& v : targets) v = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(vocab)));
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t quarter = seq / 4;
    const std::int64_t first = quarter + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(quarter * 3 / 4 + 1)));
    const std::int64_t second = quarter + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(quarter * 3 / 4 + 1)));
    for (std::int64_t i = 0; i < seq; ++i) steps.push_back(i < first ? 0 : i < first + second ? 1 : 2);
  }
  out.ids = mote::Tensor<std::int32_t, gpu>::from_vector({batch, seq}, out.ids_host);
  out.targets = mote::Tensor<std::int32_t, gpu>::from_vector({batch, seq}, targets);
  out.step_ids = mote::Tensor<std::int32_t, gpu>::from_vector({batch, seq}, steps);
  return out;
}

template <mote::nn::Config C>
void model_rows(const char* name, std::int64_t batch, std::int64_t seq, double peak, double bandwidth, bool decode,
                int reps) {
  using Model = mote::nn::CausalLM<C, float, gpu>;
  Model model(std::uint64_t{1});
  const Batch data = make_batch(C.vocab, batch, seq);
  mote::optim::AdamW<float, gpu> opt(model.parameters(), {.lr = 1e-4f});
  const double dense = mote_bench::dense_weights<C>(double(model.num_parameters()));
  const double fwd_flops = mote_bench::forward_flops_per_token<C>(dense, seq);
  const double tokens = double(batch * seq);
  const std::string shape = std::string(name) + " " + std::to_string(batch) + "x" + std::to_string(seq);
  const double train_s = device_seconds(
      [&] {
        opt.zero_grad();
        model.loss(data.ids, data.targets).backward();
        opt.step();
      },
      reps);
  row(shape + " train step", fmt("%.0f tok/s", tokens / train_s), fmt("SGEMM %.0f GF/s", peak),
      3.0 * fwd_flops * tokens / train_s * 1e-9 / peak, "");
  const double fwd_s = device_seconds(
      [&] {
        mote::no_grad off;
        auto logits = model.logits(data.ids);
      },
      reps);
  row(shape + " forward", fmt("%.0f tok/s", tokens / fwd_s), fmt("SGEMM %.0f GF/s", peak),
      fwd_flops * tokens / fwd_s * 1e-9 / peak, "");
  if (!decode) return;
  const std::vector<std::int32_t> prompt(data.ids_host.begin(), data.ids_host.begin() + 32);
  const std::int64_t new_tokens = 128;
  const double decode_s = device_seconds(
      [&] {
        mote::no_grad off;
        auto out = mote::nn::generate(model, prompt, {.max_new_tokens = new_tokens});
      },
      std::max(2, reps / 3));
  const double bound = bandwidth / (dense * sizeof(float));  // every weight read once per token
  row(std::string(name) + " decode b1 (32+128)", fmt("%.0f tok/s", double(new_tokens) / decode_s),
      fmt("bound %.0f tok/s", bound), double(new_tokens) / decode_s / bound, "");
}

template <class Router>
struct AdapterStep {
  using Model = mote::nn::CausalLM<mote_bench::c2_config, float, gpu>;
  Model model{std::uint64_t{1}};
  mote::lora::ExpertSet<Router, Model> experts;
  mote::optim::AdamW<float, gpu> opt;
  explicit AdapterStep(const mote::lora::Options& options) : experts(model, options), opt(experts.parameters(), {.lr = 1e-4f}) {}
  void run(const Batch& data) {
    opt.zero_grad();
    mote::nn::LossOptions<float, gpu> options;
    if constexpr (mote::lora::is_step_router<Router>) options.adapter = experts.route(data.step_ids);
    model.loss(data.ids, data.targets, options).backward();
    opt.step();
  }
};

void adapter_rows(std::int64_t batch, std::int64_t seq, int reps) {
  const Batch data = make_batch(mote_bench::c2_config.vocab, batch, seq);
  mote::nn::CausalLM<mote_bench::c2_config, float, gpu> full(std::uint64_t{1});
  mote::optim::AdamW<float, gpu> full_opt(full.parameters(), {.lr = 1e-4f});
  const mote::lora::Options options{.rank = 16, .alpha = 32};
  AdapterStep<mote::lora::SingleLoRA<>> lora(options);
  AdapterStep<mote::lora::StepRouter<3>> mote_step(options);
  const double full_s = device_seconds(
      [&] {
        full_opt.zero_grad();
        full.loss(data.ids, data.targets).backward();
        full_opt.step();
      },
      reps);
  const double lora_s = device_seconds([&] { lora.run(data); }, reps);
  const double mote_s = device_seconds([&] { mote_step.run(data); }, reps);
  const double tokens = double(batch * seq);
  const std::string shape = "C2 " + std::to_string(batch) + "x" + std::to_string(seq);
  info_row(shape + " full train step", fmt("%.0f tok/s", tokens / full_s));
  row(shape + " LoRA r16 (speedup)", fmt("%.0f tok/s", tokens / lora_s), "full step, same run", full_s / lora_s, "");
  row(shape + " MoTE 3+shared (cost)", fmt("%.0f tok/s", tokens / mote_s), "LoRA step, same run", mote_s / lora_s, "");
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int reps = quick ? 3 : 10;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s\n\n", prop.name);
  std::printf("| %-34s | %-18s | %-20s | %6s | %-10s |\n", "benchmark", "figure", "ceiling", "ratio", "target");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(36, '-').c_str(), std::string(20, '-').c_str(),
              std::string(22, '-').c_str(), std::string(8, '-').c_str(), std::string(12, '-').c_str());
  try {
    const double peak = sgemm_peak(reps);
    const double bandwidth = copy_bandwidth(reps);
    model_rows<mote::presets::gpt2>("C1", 4, 64, peak, bandwidth, true, reps);
    model_rows<mote::presets::gpt2>("C1", 16, 512, peak, bandwidth, false, reps);
    model_rows<mote_bench::c2_config>("C2", 8, 128, peak, bandwidth, true, reps);
    adapter_rows(8, 128, reps);
    adapter_rows(32, 512, reps);
  } catch (const std::exception& e) {
    std::printf("mote_gpu_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
