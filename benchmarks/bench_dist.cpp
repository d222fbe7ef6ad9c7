// Data-parallel MoTE training across MPI ranks: what a step sends, how long the ranks wait for it, and
// how two ranks compare with one process on the same global batch; then a model of 8 GPUs on a 7-8B
// run from the bytes per step.
//
// Usage: mpirun -np 2 mote_dist_bench [--steps N] [--rounds R] [--quick]
//
// Model: C2 (6 layers, d 384) with MoTE rank 16 on every linear layer (3 step experts and the shared
// one) and the stage-token rows, on synthetic chains (bench_chains.hpp), 16 chains per global step.
// Each round trains a fresh model from the same seed twice, in alternating order: on every rank with
// 16 / ranks chains each (data parallel), and in rank 0 alone with all 16 while the other ranks wait.
// Ceilings: the wait for the gradient sums (rank 0's; it includes waiting for a slower rank's backward,
// as chains differ in length) stands beside one MPI all-reduce of the same bytes alone (the transport's
// own time), which stands beside the bytes over this machine's memory read bandwidth (no sum can be
// faster than reading its input once).
#include <mote/dist/mpi.hpp>
#include <mote/mote.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_ceilings.hpp"
#include "bench_chains.hpp"
#include "bench_common.hpp"

namespace {

using namespace mote;
using mote_bench::median;
namespace ac = mote::aligncot;
using Model = nn::CausalLM<mote_bench::c2_config, float>;
using Router = lora::StepRouter<3>;

struct Fit {
  double step_s = 0, compute_s = 0, wait_s = 0, first_loss = 0, last_loss = 0;
  std::int64_t bytes = 0, params = 0;
};

// Trains `steps` steps of a global batch of `global_batch` chains, split over comm's ranks.
template <class Comm>
Fit train_steps(Comm comm, const std::vector<ac::Chain>& chains, std::int64_t global_batch, std::int64_t steps) {
  io::Tokenizer tok = mote_bench::byte_tokenizer();
  const ac::StageTokenIds ids = ac::stage_token_ids<mote_bench::Chain>(tok);
  Model model(1);
  auto experts = ac::attach<Router>(model, mote_bench::Chain{}, ids, {.rank = 16, .alpha = 32, .seed = 2});
  ac::ChainDataset<mote_bench::Chain> data(tok, ids, chains, ac::RowFormat{.eos_id = 0}, mote_bench::c2_config.max_seq,
                                           {.p_skip = 0.1, .seed = 3, .row_length = 512});
  Fit fit;
  train::TrainerOptions o{.max_steps = steps, .batch_size = global_batch / comm.size(), .seed = 4, .lr = 1e-3,
                          .progress = train::Progress::off, .handle_signals = false};
  o.on_step = [&](const train::StepReport& r) {
    if (r.step == 1) fit.first_loss = r.loss;
  };
  train::Trainer<Model, decltype(experts), Comm> trainer(model, experts, o, comm);
  const train::FitResult result = trainer.fit(data);
  const train::Timing& t = result.timing;
  fit.step_s = t.total_s / static_cast<double>(result.steps_run);
  fit.compute_s = (t.forward_backward_s + t.optimizer_s) / static_cast<double>(result.steps_run);
  fit.wait_s = t.communication_s / static_cast<double>(result.steps_run);
  fit.last_loss = result.last_loss;
  fit.bytes = trainer.all_reduced_bytes_per_step();
  for (const auto& p : experts.parameters()) fit.params += p.numel();
  return fit;
}

std::string spread(const std::vector<double>& v, double scale, const char* unit) {
  return mote_bench::fmt("%.2f", median(v) * scale) + " " + unit + " (" + mote_bench::fmt("%.2f", *std::min_element(v.begin(), v.end()) * scale) +
         "-" + mote_bench::fmt("%.2f", *std::max_element(v.begin(), v.end()) * scale) + ")";
}

// Expert parameters of a step-routed MoTE on every linear layer of a config, from its shape: rank r
// times (in + out) per linear, per expert (3 steps and the shared one), per layer.
double expert_parameters(const nn::Config& c, double rank, double experts) {
  const double d = static_cast<double>(c.d_model), ff = static_cast<double>(c.d_ff),
               kv = d * static_cast<double>(c.n_kv_heads) / static_cast<double>(c.n_heads);
  // GPT-2: c_attn (d to 3d), attn c_proj, c_fc, mlp c_proj. Llama: q, k, v, o, gate, up, down.
  const double per_layer = c.gpt2_layout() ? 8 * d + 2 * ff : 9 * d + 2 * kv + 3 * ff;
  return rank * per_layer * experts * static_cast<double>(c.n_layers);
}

// Llama-3-8B's shape (32 layers, d 4096, 8 kv heads of 32, d_ff 14336).
constexpr nn::Config llama3_8b{.vocab = 128256, .d_model = 4096, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .d_ff = 14336,
                               .max_seq = 8192, .norm = nn::Norm::RMSNorm, .eps = 1e-5, .activation = nn::Activation::SwiGLU,
                               .positions = nn::Positions::RoPE, .rope_theta = 500000.0, .bias = false, .tied_embeddings = false};

// The 8-GPU model: compute from FLOPs at an assumed utilization, the gradient sum from NCCL's ring
// all-reduce time (bytes x 2(n-1)/n over the bus bandwidth), exposed in full: dist::nccl runs the sums
// on the stream the backward kernels use, so they do not overlap it.
void print_gpu_model(double bytes) {
  const double params = 8.03e9, tokens_per_gpu = 4 * 1024.0, n = 8;
  const double flops = 4 * params * tokens_per_gpu;  // forward 2N + input gradients 2N; frozen weights get no gradient
  struct Gpu {
    const char* name;
    double peak_flops, bus_bandwidth;
  };
  const Gpu gpus[] = {{"8x H100 SXM, NVLink 4 (bus 450 GB/s)", 989e12, 450e9},
                      {"8x A100 SXM, NVLink 3 (bus 230 GB/s)", 312e12, 230e9},
                      {"8x H100 PCIe, no NVLink (bus 20 GB/s)", 756e12, 20e9}};
  std::printf("\nModel: Llama-3-8B shape, MoTE rank 16 on every linear layer, fp32 gradients: %.1f M parameters, %.0f MB summed "
              "per step; 4 chains x 1024 tokens per GPU per step, 40%% of bf16 dense peak\n",
              bytes / 4 / 1e6, bytes / 1e6);
  std::printf("| GPUs | compute per step | gradient sum | scaling efficiency |\n|---|---|---|---|\n");
  for (const Gpu& g : gpus) {
    const double compute = flops / (0.4 * g.peak_flops), comm = bytes * 2 * (n - 1) / n / g.bus_bandwidth;
    std::printf("| %s | %.0f ms | %.1f ms | %.1f%% |\n", g.name, compute * 1e3, comm * 1e3, 100 * compute / (compute + comm));
  }
}

}  // namespace

int main(int argc, char** argv) {
  dist::mpi::session session(&argc, &argv);
  std::int64_t steps = 8;
  int rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      steps = 2;
      rounds = 1;
    } else if (arg == "--steps" && i + 1 < argc) {
      steps = std::strtoll(argv[++i], nullptr, 10);
    } else if (arg == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: mpirun -np N mote_dist_bench [--steps N] [--rounds R] [--quick]\n");
      return 2;
    }
  }
  dist::mpi world;
  const bool lead = world.rank() == 0;
  const std::int64_t global_batch = 16;
  if (global_batch % world.size() != 0) {
    if (lead) std::fprintf(stderr, "mote_dist_bench: the global batch of 16 does not split over %d ranks\n", world.size());
    return 2;
  }
  const auto chains = mote_bench::synthetic_chains(static_cast<std::size_t>(global_batch * steps), 1);
  if (lead)
    std::printf("C2, MoTE rank 16 on every linear layer + stage-token rows; %d ranks x %lld chains vs 1 process x %lld, "
                "%lld steps, %d rounds, OMP_NUM_THREADS=%s\n",
                world.size(), static_cast<long long>(global_batch / world.size()), static_cast<long long>(global_batch),
                static_cast<long long>(steps), rounds, std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "(unset)");

  (void)train_steps(world, mote_bench::synthetic_chains(static_cast<std::size_t>(global_batch), 9), global_batch, 1);  // warm-up
  std::vector<double> parallel_step, single_step, wait, compute, slowest;
  Fit parallel, single;
  for (int round = 0; round < rounds; ++round) {
    for (int k = 0; k < 2; ++k) {
      const bool alone = (k == 1) != (round % 2 == 1);
      world.barrier();
      if (!alone) {
        parallel = train_steps(world, chains, global_batch, steps);
        parallel_step.push_back(parallel.step_s);
        wait.push_back(parallel.wait_s);
        compute.push_back(parallel.compute_s);
        // Every rank's compute per step, to tell the wait for the slowest rank from the transport's time.
        std::vector<double> per_rank(static_cast<std::size_t>(world.size()), 0.0);
        per_rank[static_cast<std::size_t>(world.rank())] = parallel.compute_s;
        world.all_reduce_sum(std::span<double>(per_rank));
        slowest.push_back(*std::max_element(per_rank.begin(), per_rank.end()));
      } else if (lead) {
        single = train_steps(dist::single{}, chains, global_batch, steps);
        single_step.push_back(single.step_s);
      }
      world.barrier();
      if (lead)
        std::printf("round %d %-13s %.3f s/step  first loss %.5f  last loss %.5f\n", round, alone ? "one process" : "data parallel",
                    alone ? single.step_s : parallel.step_s, alone ? single.first_loss : parallel.first_loss,
                    alone ? single.last_loss : parallel.last_loss);
    }
  }

  // The transport alone: one all-reduce of a step's bytes, every rank at once.
  std::vector<float> buffer(static_cast<std::size_t>(parallel.bytes / 4), 1.0f);
  const double allreduce_s = mote_bench::median_seconds([&] { world.all_reduce_sum(std::span<float>(buffer)); }, 20);
  const double read_s = static_cast<double>(parallel.bytes) / mote_bench::read_bandwidth(static_cast<std::size_t>(parallel.bytes), 5);
  if (!lead) return 0;

  const nn::Config c2 = mote_bench::c2_config;
  const double formula = expert_parameters(c2, 16, Router::experts);
  const double rows = static_cast<double>(parallel.params) - formula;
  std::printf("\n| measure | figure | ceiling | ratio |\n|---|---|---|---|\n");
  std::printf("| trainable parameters | %lld (experts by formula %.0f, stage-token rows %.0f) | | |\n",
              static_cast<long long>(parallel.params), formula, rows);
  std::printf("| bytes all-reduced per step | %lld | 4 x trainable = %lld | %.3f |\n", static_cast<long long>(parallel.bytes),
              static_cast<long long>(4 * parallel.params), static_cast<double>(parallel.bytes) / (4.0 * static_cast<double>(parallel.params)));
  std::printf("| wait for gradient sums per step | %s | one all-reduce alone %.2f ms | %.3f |\n", spread(wait, 1e3, "ms").c_str(),
              allreduce_s * 1e3, median(wait) / allreduce_s);
  std::printf("| one all-reduce of a step's bytes | %.2f ms | bytes / memory read bandwidth %.3f ms | %.3f |\n", allreduce_s * 1e3,
              read_s * 1e3, read_s / allreduce_s);
  std::printf("| compute per step (forward, backward, optimizer), rank 0 | %s | | |\n", spread(compute, 1e3, "ms").c_str());
  std::printf("| compute per step, the slowest rank | %s | | |\n", spread(slowest, 1e3, "ms").c_str());
  std::printf("| communication share of a step | %.1f%% | | |\n", 100 * median(wait) / median(parallel_step));
  std::printf("| step, data parallel on %d ranks | %s | one process / %d = %.2f ms | %.3f |\n", world.size(),
              spread(parallel_step, 1e3, "ms").c_str(), world.size(), median(single_step) * 1e3 / world.size(),
              median(single_step) / world.size() / median(parallel_step));
  std::printf("| step, one process, same global batch | %s | | |\n", spread(single_step, 1e3, "ms").c_str());
  // The stage-token rows of an untied model: the same tokens' rows in the input table and the LM head.
  const double stage_tokens = rows / static_cast<double>(c2.d_model);
  print_gpu_model(4 * (expert_parameters(llama3_8b, 16, Router::experts) + stage_tokens * 2 * static_cast<double>(llama3_8b.d_model)));
  return 0;
}
