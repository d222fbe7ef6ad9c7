// dist::nccl on GPUs, one rank per GPU: `mpirun -np N mote_nccl_check` (any N up to the GPUs; CTest
// runs it as one process, which exits 77, skipped, on a machine without a CUDA device):
//   buckets  GradientBuckets<float, cuda, dist::nccl> sums every gradient across ranks, on the device;
//   step     each rank's gradient on its share of a batch, summed over NCCL, equals the gradient of the
//            whole batch on one GPU (within float rounding), and the AdamW step leaves every rank with
//            the same adapters.
// Prints "ok: <check>" lines; exits non-zero on the first failed expectation.
#include <mote/cuda.cuh>
#include <mote/dist/nccl.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

using namespace mote;
using gpu = mote::cuda;  // spelled out: a bare `cuda` is ambiguous with CUDA's own namespace

constexpr nn::Config config{.vocab = 64, .d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 64, .max_seq = 32,
                            .norm = nn::Norm::RMSNorm, .activation = nn::Activation::SwiGLU, .positions = nn::Positions::RoPE,
                            .bias = false, .tied_embeddings = false};

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "FAILED: %s\n", what.c_str());
  dist::mpi::session::abort(2);
}
void expect(bool condition, const std::string& what) {
  if (!condition) fail(what);
}

void check_buckets(dist::nccl& world) {
  std::vector<Var<float, gpu>> params;
  for (int k = 0; k < 6; ++k) params.push_back(Var<float, gpu>::parameter(Tensor<float, gpu>::full({100}, 0.5f)));
  dist::GradientBuckets<float, gpu, dist::nccl> buckets(params, world, {.bucket_bytes = 800});  // two parameters a bucket
  expect(buckets.bucket_count() == 3, "six parameters of 400 bytes make three buckets of 800");
  buckets.begin_step();
  Var<float, gpu> total;
  for (int k = 0; k < 6; ++k) {
    const Var<float, gpu> x(Tensor<float, gpu>::full({100}, static_cast<float>((k + 1) * (world.rank() + 1))));
    const Var<float, gpu> term = autograd::sum(autograd::mul(params[static_cast<std::size_t>(k)], x));
    total = total.defined() ? total + term : term;
  }
  total.backward({.on_leaf_ready = buckets.hook()});
  buckets.finish();
  const float ranks_factor = static_cast<float>(world.size() * (world.size() + 1) / 2);
  for (int k = 0; k < 6; ++k)
    for (const float g : params[static_cast<std::size_t>(k)].grad().to_vector())
      expect(g == static_cast<float>(k + 1) * ranks_factor, "parameter " + std::to_string(k) + "'s gradient is the sum over ranks");
  if (world.rank() == 0) std::printf("ok: buckets (%d ranks)\n", world.size());
}

// Rows of random ids with every target counted and each third of a row on one step expert.
struct Batch {
  Tensor<std::int32_t, gpu> ids, targets, routes;
};
Batch rows(std::int64_t first, std::int64_t count) {
  constexpr std::int64_t length = 24;
  std::vector<std::int32_t> ids, targets, routes;
  for (std::int64_t r = first; r < first + count; ++r) {
    Rng rng(static_cast<std::uint64_t>(100 + r));
    for (std::int64_t j = 0; j < length; ++j) {
      ids.push_back(static_cast<std::int32_t>(rng.below(64)));
      targets.push_back(static_cast<std::int32_t>(rng.below(64)));
      routes.push_back(static_cast<std::int32_t>(j * 3 / length));
    }
  }
  return {Tensor<std::int32_t, gpu>::from_vector({count, length}, ids), Tensor<std::int32_t, gpu>::from_vector({count, length}, targets),
          Tensor<std::int32_t, gpu>::from_vector({count, length}, routes)};
}

void check_step(dist::nccl& world) {
  constexpr std::int64_t per_rank = 2;
  nn::CausalLM<config, float, gpu> model(std::uint64_t{7});
  auto experts = lora::attach<lora::StepRouter<3>>(model, {.rank = 4, .alpha = 8, .seed = 1});
  const std::vector<Var<float, gpu>> params = experts.parameters();

  // The whole batch on this GPU alone.
  const Batch all = rows(0, per_rank * world.size());
  model.loss(all.ids, all.targets, {.adapter = experts.route(all.routes)}).backward();
  std::vector<std::vector<float>> whole;
  for (const auto& p : params) whole.push_back(p.grad().to_vector());
  for (auto p : params) p.zero_grad();  // a Var copy shares its node

  // This rank's share, its mean loss weighted by its share of the rows, summed across ranks.
  dist::GradientBuckets<float, gpu, dist::nccl> buckets(params, world, {.bucket_bytes = 4096});
  const Batch mine = rows(per_rank * world.rank(), per_rank);
  buckets.begin_step();
  const auto loss = model.loss(mine.ids, mine.targets, {.adapter = experts.route(mine.routes)});
  autograd::scale(loss, 1.0f / static_cast<float>(world.size())).backward({.on_leaf_ready = buckets.hook()});
  buckets.finish();
  double worst = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::vector<float> summed = params[i].grad().to_vector();
    for (std::size_t j = 0; j < summed.size(); ++j)
      worst = std::max(worst, std::abs(static_cast<double>(summed[j]) - whole[i][j]) / (1e-3 + std::abs(static_cast<double>(whole[i][j]))));
  }
  expect(worst < 1e-3, "the summed gradients equal the whole batch's (worst relative difference " + std::to_string(worst) + ")");

  optim::AdamW<float, gpu> optimizer(params, {.lr = 1e-2f, .weight_decay = 0.0f});
  optimizer.step();
  double checksum = 0;
  for (const auto& p : params)
    for (const float v : p.value().to_vector()) checksum += static_cast<double>(v) * (1 + checksum * 1e-9);
  const std::vector<std::string> sums = world.all_gather(std::to_string(checksum));
  expect(std::all_of(sums.begin(), sums.end(), [&](const std::string& s) { return s == sums[0]; }),
         "every rank holds the same adapters after the step");
  if (world.rank() == 0) std::printf("ok: step (%d ranks, worst relative gradient difference %.2g)\n", world.size(), worst);
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  dist::mpi::session session(&argc, &argv);
  try {
    dist::nccl world{dist::mpi{}};
    check_buckets(world);
    check_step(world);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank error: %s\n", e.what());
    dist::mpi::session::abort(3);
  }
  return 0;
}
