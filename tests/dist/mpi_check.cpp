// Data-parallel training under MPI, run by tests/dist/mpi_checks.sh with `mpirun -np 2`:
//   train DIR   two ranks of batch B end where one process of batch 2B ends (double precision, within
//               rounding), and a checkpoint resumes under the other world size with the same result;
//   buckets     GradientBuckets sums every gradient across ranks, starting buckets while backward runs;
//   disagree    ranks started on different data stop with an error naming the difference;
//   stall       a rank that never joins makes the other stop within MOTE_DIST_TIMEOUT_S (then MPI_Abort);
//   die         a rank killed mid-run ends the job (the launcher's exit code is checked by the script).
// Prints "ok: <check>" lines; exits non-zero on the first failed expectation.
#include <mote/dist/mpi.hpp>
#include <mote/mote.hpp>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <span>
#include <string>
#include <thread>
#include <vector>

using namespace mote;
namespace fs = std::filesystem;

namespace {

using Model = nn::CausalLM<presets::tiny_llama, double>;
using Experts = lora::ExpertSet<lora::StepRouter<3>, Model>;

[[noreturn]] void fail(const std::string& what) {
  std::cerr << "FAILED: " << what << std::endl;
  dist::mpi::session::abort(2);
}
void expect(bool condition, const std::string& what) {
  if (!condition) fail(what);
}

// Counting rows routed to steps in thirds; examples 4..7 of every 8 have long questions, so ranks count
// very different numbers of targets and the global weighting of their losses matters.
struct CountingData {
  std::size_t examples = 40;
  std::uint64_t seed = 1;
  static constexpr std::int64_t length = 12;
  std::size_t size() const { return examples; }
  std::vector<std::string> group_names() const { return {"first", "second", "third"}; }
  std::string fingerprint() const { return "counting examples=" + std::to_string(examples) + " seed=" + std::to_string(seed); }
  train::Batch<double> batch(std::span<const std::size_t> indices, std::uint64_t epoch) const {
    const auto rows = static_cast<std::int64_t>(indices.size());
    const auto n = static_cast<std::size_t>(rows * length);
    std::vector<std::int32_t> ids(n), targets(n), routes(n), groups(n);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::size_t example = indices[static_cast<std::size_t>(r)];
      Rng rng(seed * 1000003 + example * 7919 + epoch * 104729);
      const auto start = static_cast<std::int32_t>(rng.below(64));
      const std::int64_t question = example % 8 < 4 ? 1 : 6;
      for (std::int64_t j = 0; j < length; ++j) {
        const auto at = static_cast<std::size_t>(r * length + j);
        ids[at] = (start + static_cast<std::int32_t>(j)) % 64;
        const bool counted = j >= question && j + 1 < length;
        targets[at] = counted ? (start + static_cast<std::int32_t>(j) + 1) % 64 : -100;
        routes[at] = j < question ? lora::unrouted : static_cast<std::int32_t>(j * 3 / length);
        groups[at] = counted ? routes[at] : -1;
      }
    }
    train::Batch<double> b;
    b.ids = Tensor<std::int32_t>::from_vector({rows, length}, ids);
    b.targets = Tensor<std::int32_t>::from_vector({rows, length}, targets);
    b.routes = Tensor<std::int32_t>::from_vector({rows, length}, routes);
    b.target_groups = groups;
    return b;
  }
};

// No dropout and question tokens on a fixed expert: nothing is drawn at random per rank, so two ranks
// and one process compute the same gradients (random draws come from each rank's own streams).
struct Setup {
  Model model{3};
  Experts experts = lora::attach<lora::StepRouter<3>>(
      model, {.rank = 4, .alpha = 8, .dropout = 0.0, .seed = 5, .unrouted = lora::UnroutedPolicy::FixedStep});
};

std::map<std::string, std::vector<double>> values(const Experts& experts) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& [name, p] : experts.named_parameters()) out[name] = p.value().to_vector();
  return out;
}

double max_difference(const std::map<std::string, std::vector<double>>& a, const std::map<std::string, std::vector<double>>& b) {
  double worst = 0;
  for (const auto& [name, v] : a) {
    const auto& w = b.at(name);
    for (std::size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::abs(v[i] - w[i]));
  }
  return worst;
}

train::TrainerOptions options(std::int64_t batch, const fs::path& dir, std::int64_t stop_at = 0) {
  train::TrainerOptions o;
  o.epochs = 3;  // 40 examples, global batch 8: 5 steps an epoch, 15 in all
  o.batch_size = batch;
  o.lr = 3e-2;
  o.warmup_steps = 2;
  o.seed = 11;
  o.output_dir = dir;
  o.progress = train::Progress::off;
  o.handle_signals = false;
  o.bucket_bytes = 2048;  // several buckets even for this tiny model
  if (stop_at > 0) o.checkpoint_every = stop_at;
  return o;
}

// Trains from scratch or resumes; stops after `stop_at` steps when > 0.
template <class Comm>
std::map<std::string, std::vector<double>> run(Comm comm, std::int64_t batch, const fs::path& dir, bool resume, std::int64_t stop_at = 0) {
  Setup s;
  auto o = options(batch, dir, stop_at);
  o.resume = resume;
  train::Trainer<Model, Experts, Comm>* self = nullptr;
  if (stop_at > 0)
    o.on_step = [&](const train::StepReport& r) {
      if (r.step == stop_at) self->request_stop();
    };
  train::Trainer<Model, Experts, Comm> trainer(s.model, s.experts, o, comm);
  self = &trainer;
  const auto result = trainer.fit(CountingData{});
  expect(stop_at > 0 ? result.step == stop_at : result.completed, "the run in " + dir.string() + " stopped where it should");
  return values(s.experts);
}

void check_train(dist::mpi& world, const fs::path& dir) {
  expect(world.size() == 2, "run `train` with mpirun -np 2");
  constexpr std::int64_t per_rank = 4, stop = 6;
  std::map<std::string, std::vector<double>> one_process;
  if (world.rank() == 0) {
    one_process = run(dist::single{}, 2 * per_rank, dir / "single", false);
    run(dist::single{}, 2 * per_rank, dir / "single-then-two", false, stop);
    run(dist::single{}, 2 * per_rank, dir / "scratch-before-mpi", false, 1);  // the single path works with MPI initialized
  }
  world.barrier();

  const auto two_ranks = run(world, per_rank, dir / "two", false);
  // Every rank holds the same adapters after the identical optimizer steps.
  const std::vector<std::string> digests = world.all_gather(io::json::dump(io::json::Value(max_difference(two_ranks, two_ranks))) +
                                                            std::to_string(two_ranks.begin()->second[0]));
  expect(digests[0] == digests[1], "both ranks end with the same adapters");

  const auto resumed_from_one = run(world, per_rank, dir / "single-then-two", true);
  run(world, per_rank, dir / "two-then-single", false, stop);
  // Two ranks of batch 2 (a global batch of 4) do not resume a run of global batch 8: refused, naming the layout.
  try {
    run(world, per_rank / 2, dir / "two", true);
    fail("a checkpoint of global batch 8 resumed with a global batch of 4");
  } catch (const value_error& e) {
    const std::string message = e.what();
    expect(message.find("batch_size") != std::string::npos && message.find("2 per rank x 2 ranks") != std::string::npos,
           "the refusal names the global batch: " + message);
  }
  world.barrier();
  if (world.rank() == 0) {
    const auto resumed_from_two = run(dist::single{}, 2 * per_rank, dir / "two-then-single", true);
    const double d = max_difference(two_ranks, one_process);
    std::cout << "max |two ranks - one process| = " << d << std::endl;
    expect(d < 1e-10, "two ranks of batch 4 match one process of batch 8 (max difference " + std::to_string(d) + ")");
    expect(max_difference(two_ranks, values(Setup{}.experts)) > 1e-3, "training moved the adapters");
    expect(max_difference(resumed_from_one, one_process) < 1e-10, "a one-process checkpoint resumed on two ranks matches");
    expect(max_difference(resumed_from_two, one_process) < 1e-10, "a two-rank checkpoint resumed in one process matches");
    // Only rank 0 wrote: one metrics file, with the data-parallel fields.
    const std::string metrics = io::read_file(dir / "two" / "metrics.jsonl");
    expect(metrics.find("\"world_size\":2") != std::string::npos, "metrics.jsonl records the world size");
    expect(metrics.find("\"all_reduced_bytes\"") != std::string::npos, "metrics.jsonl records the bytes summed per step");
    std::cout << "ok: train" << std::endl;
  }
}

void check_buckets(dist::mpi& world) {
  // y = sum(w_k * x_k * (rank + 1)) over 6 parameters; each gradient is x_k * (rank + 1), summed over ranks.
  std::vector<Var<double>> params;
  for (int k = 0; k < 6; ++k) params.push_back(Var<double>::parameter(Tensor<double>::full({100}, 0.5)));
  dist::GradientBuckets<double, cpu, dist::mpi> buckets(params, world, {.bucket_bytes = 1600});  // two parameters a bucket
  expect(buckets.bucket_count() == 3, "six parameters of 800 bytes make three buckets of 1600");
  buckets.begin_step();
  Var<double> total;
  for (int k = 0; k < 6; ++k) {
    const Var<double> x(Tensor<double>::full({100}, static_cast<double>((k + 1) * (world.rank() + 1))));
    const Var<double> term = autograd::sum(autograd::mul(params[static_cast<std::size_t>(k)], x));
    total = total.defined() ? total + term : term;
  }
  total.backward({.on_leaf_ready = buckets.hook()});
  expect(buckets.last_started_early() > 0, "a bucket started before backward ended");
  buckets.finish();
  const double ranks_factor = world.size() * (world.size() + 1) / 2.0;
  for (int k = 0; k < 6; ++k)
    for (const double g : params[static_cast<std::size_t>(k)].grad().to_vector())
      expect(g == (k + 1) * ranks_factor, "parameter " + std::to_string(k) + "'s gradient is the sum over ranks");
  if (world.rank() == 0) std::cout << "ok: buckets" << std::endl;
}

void check_disagree(dist::mpi& world, const fs::path& dir) {
  Setup s;
  train::Trainer<Model, Experts, dist::mpi> trainer(s.model, s.experts, options(4, dir / ("disagree-" + std::to_string(world.rank()))), world);
  try {
    trainer.fit(CountingData{.seed = world.rank() == 0 ? 1u : 2u});
  } catch (const dist::dist_error& e) {
    const std::string message = e.what();
    expect(message.find("rank 1 and rank 0 disagree on the model, adapters and data") != std::string::npos &&
               message.find("seed=1") != std::string::npos && message.find("seed=2") != std::string::npos,
           "the message names the ranks and the difference: " + message);
    if (world.rank() == 0) std::cout << "ok: disagree: " << message << std::endl;
    return;
  }
  fail("ranks on different data trained anyway");
}

void check_stall_or_die(dist::mpi& world, const fs::path& dir, bool die) {
  Setup s;
  auto o = options(4, dir / (std::string(die ? "die-" : "stall-") + std::to_string(world.rank())));
  if (world.rank() == 1) {
    if (!die) std::this_thread::sleep_for(std::chrono::seconds(60));  // stalls: never joins in time
    o.on_step = [](const train::StepReport& r) {
      if (r.step == 2) std::raise(SIGKILL);
    };
  }
  train::Trainer<Model, Experts, dist::mpi> trainer(s.model, s.experts, o, world);
  trainer.fit(CountingData{});
  fail("the run finished although rank 1 " + std::string(die ? "died" : "stalled"));
}

}  // namespace

int main(int argc, char** argv) {
  dist::mpi::session session(&argc, &argv);
  const std::string check = argc > 1 ? argv[1] : "";
  const fs::path dir = argc > 2 ? fs::path(argv[2]) : fs::temp_directory_path() / "mote-mpi-check";
  try {
    dist::mpi world;
    if (world.rank() == 0) fs::create_directories(dir);
    world.barrier();
    if (check == "train") check_train(world, dir);
    else if (check == "buckets") check_buckets(world);
    else if (check == "disagree") check_disagree(world, dir);
    else if (check == "stall") check_stall_or_die(world, dir, false);
    else if (check == "die") check_stall_or_die(world, dir, true);
    else fail("unknown check '" + check + "'; expected train, buckets, disagree, stall or die");
  } catch (const std::exception& e) {
    std::cerr << "rank error: " << e.what() << std::endl;
    dist::mpi::session::abort(3);
  }
  return 0;
}
