// The train room: schedules and clipping against hand computations, saved random streams, atomic
// writes, gradient accumulation against one batch, a loss that falls, exact resume after a signal and
// after a crash, and resumes that must be refused. A tiny Llama with MoTE step experts throughout.
#include "op_harness.hpp"
#include "test_files.hpp"

#include <csignal>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <signal.h>

#include "mote/io/atomic_file.hpp"
#include "mote/io/json.hpp"
#include "mote/lora/lora.hpp"
#include "mote/nn/nn.hpp"
#include "mote/optim/clip.hpp"
#include "mote/train/train.hpp"

using namespace mote;
using mote::testing::expect_error;
using mote::testing::TempDir;
namespace fs = std::filesystem;
namespace json = mote::io::json;

namespace {

using Model = nn::CausalLM<presets::tiny_llama, float>;
using Experts = lora::ExpertSet<lora::StepRouter<3>, Model>;

// Counting sequences: each row is start, start + 1, ... (mod 64), so every token after the first predicts
// the next. A few leading "question" tokens carry no loss and no route (random routing); the rest are routed
// to steps 0, 1, 2 in thirds, and each target's group is its step. The start depends on the epoch, as a
// dataset's per-epoch draws would; the question length on the example, so batches count different targets.
struct CountingData {
  std::size_t examples = 24;
  std::uint64_t seed = 1;
  bool weighted = false;  // loss_weights 1 and 2 alternating, to check the weighted mean
  bool uneven = false;    // examples 4..7 of every 8 get 6 question tokens: micro-batches of 4 count very different targets
  std::string tag = "counting";
  static constexpr std::int64_t length = 12;

  std::size_t size() const { return examples; }
  std::vector<std::string> group_names() const { return {"first", "second", "third"}; }
  std::string fingerprint() const {
    return tag + " examples=" + std::to_string(examples) + " seed=" + std::to_string(seed) + " weighted=" + std::to_string(weighted) +
           " uneven=" + std::to_string(uneven);
  }

  train::Batch<float> batch(std::span<const std::size_t> indices, std::uint64_t epoch) const {
    const auto rows = static_cast<std::int64_t>(indices.size());
    const std::size_t n = static_cast<std::size_t>(rows * length);
    std::vector<std::int32_t> ids(n), targets(n), routes(n), groups(n);
    std::vector<float> weights(n);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::size_t example = indices[static_cast<std::size_t>(r)];
      Rng rng(seed * 1000003 + example * 7919 + epoch * 104729);
      const auto start = static_cast<std::int32_t>(rng.below(64));
      const std::int64_t question = uneven ? (example % 8 < 4 ? 1 : 6) : 1 + static_cast<std::int64_t>(example % 3);
      for (std::int64_t j = 0; j < length; ++j) {
        const auto at = static_cast<std::size_t>(r * length + j);
        ids[at] = (start + static_cast<std::int32_t>(j)) % 64;
        const bool counted = j >= question && j + 1 < length;
        targets[at] = counted ? (start + static_cast<std::int32_t>(j) + 1) % 64 : -100;
        routes[at] = j < question ? lora::unrouted : static_cast<std::int32_t>(j * 3 / length);
        groups[at] = counted ? routes[at] : -1;
        weights[at] = 1.0f + static_cast<float>(j % 2);
      }
    }
    train::Batch<float> b;
    b.ids = Tensor<std::int32_t>::from_vector({rows, length}, ids);
    b.targets = Tensor<std::int32_t>::from_vector({rows, length}, targets);
    if (weighted) b.loss_weights = Tensor<float>::from_vector({rows, length}, weights);
    b.routes = Tensor<std::int32_t>::from_vector({rows, length}, routes);
    b.target_groups = groups;
    b.examples = rows;
    b.tokens = rows * length;
    return b;
  }
};
static_assert(train::Dataset<CountingData, float>);
static_assert(train::AdapterSet<Experts, float, cpu>);

// A model, its experts and nothing else: every run in a test builds its own from the same seeds.
struct Setup {
  Model model;
  Experts experts;
  explicit Setup(lora::Options options = {.rank = 4, .alpha = 8, .dropout = 0.1, .seed = 5}, std::uint64_t model_seed = 3)
      : model(model_seed), experts(lora::attach<lora::StepRouter<3>>(model, options)) {}
};

// The tiny model's LM head is drawn at std 0.02, so after the final RMSNorm its logits span well under a nat
// and no adapter could take the loss far below log(64); a head of std 0.2 leaves the experts room to learn.
void widen_head(Model& model, float factor) {
  model.for_each_parameter([&](const std::string& name, Var<float>& p) {
    if (name != "lm_head.weight") return;
    std::vector<float> v = p.value().to_vector();
    for (float& x : v) x *= factor;
    p.mutable_value().copy_from(Tensor<float>::from_vector(p.shape(), v));
  });
}

train::TrainerOptions quiet(train::TrainerOptions o) {
  o.progress = train::Progress::off;
  return o;
}

std::map<std::string, std::vector<float>> adapter_values(const Experts& experts) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, p] : experts.named_parameters()) out[name] = p.value().to_vector();
  return out;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The metrics file's lines without their timing and memory fields (what a resume must reproduce exactly).
std::vector<std::string> loss_log(const fs::path& path) {
  std::vector<std::string> out;
  std::istringstream lines(read_text(path));
  for (std::string line; std::getline(lines, line);) {
    const json::Value v = json::parse(line, path.string());
    json::Value kept = json::Value::object();
    for (const auto& [key, value] : v.as_object())
      if (key != "tokens_per_s" && key != "elapsed_s" && key != "memory_live_bytes" && key != "memory_peak_bytes")
        kept.set(key, value);
    out.push_back(json::dump(kept));
  }
  return out;
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

// Settings shared by the resume tests: 3 epochs of 3 steps (24 examples, 4 per micro-batch, 2 micro-batches).
train::TrainerOptions resume_options(const fs::path& output) {
  return quiet({.epochs = 3,
                .batch_size = 4,
                .accumulation_steps = 2,
                .seed = 11,
                .lr = 2e-2,
                .warmup_steps = 2,
                .min_lr_ratio = 0.1,
                .eval_every = 4,
                .output_dir = output,
                .checkpoint_every = 2});
}

int sigint_seen = 0;
extern "C" void count_sigint(int) { ++sigint_seen; }

}  // namespace

BOOST_AUTO_TEST_SUITE(test_train)

// ---------------------------------------------------------------- pieces

BOOST_AUTO_TEST_CASE(cosine_schedule_matches_hand_computed_values) {
  const train::Schedule s{.peak_lr = 1e-3, .warmup_steps = 4, .total_steps = 14, .decay = train::Decay::cosine, .min_lr_ratio = 0.1};
  s.check();
  const auto close = boost::test_tools::tolerance(1e-12);
  BOOST_TEST(s.lr_at(0) == 2.5e-4, close);  // warmup counts from 1
  BOOST_TEST(s.lr_at(1) == 5e-4, close);
  BOOST_TEST(s.lr_at(3) == 1e-3, close);
  BOOST_TEST(s.lr_at(4) == 1e-3, close);  // the decay starts at the peak
  // step 6: progress 2/10, 0.5 (1 + cos(0.2 pi)) = 0.9045084971874737
  BOOST_TEST(s.lr_at(6) == 1e-3 * (0.1 + 0.9 * 0.9045084971874737), close);
  BOOST_TEST(s.lr_at(9) == 1e-3 * (0.1 + 0.9 * 0.5), close);  // halfway: cos(pi / 2) = 0
  BOOST_TEST(s.lr_at(14) == 1e-4, close);                     // the floor at total_steps
  BOOST_TEST(s.lr_at(100) == 1e-4, close);                    // and after it

  const train::Schedule constant{.peak_lr = 0.5, .warmup_steps = 2, .total_steps = 10, .decay = train::Decay::constant};
  BOOST_TEST(constant.lr_at(0) == 0.25);
  BOOST_TEST(constant.lr_at(1) == 0.5);
  BOOST_TEST(constant.lr_at(9) == 0.5);
  BOOST_TEST(constant.lr_at(50) == 0.5);
  const train::Schedule no_warmup{.peak_lr = 2.0, .warmup_steps = 0, .total_steps = 4};
  BOOST_TEST(no_warmup.lr_at(0) == 2.0);
  BOOST_TEST(no_warmup.lr_at(2) == 1.0, close);

  expect_error<value_error>([] { train::Schedule{.min_lr_ratio = 1.5}.check(); }, {"min_lr_ratio", "[0, 1]", "1.5"});
  expect_error<value_error>([] { train::Schedule{.total_steps = 0}.check(); }, {"total_steps", ">= 1"});
  expect_error<value_error>([] { train::Schedule{.warmup_steps = -1}.check(); }, {"warmup_steps"});
  expect_error<value_error>([&] { (void)s.lr_at(-1); }, {"step must be >= 0"});
}

BOOST_AUTO_TEST_CASE(global_norm_clipping_matches_a_hand_computation) {
  const auto make = [] {
    std::vector<Var<double>> p{Var<double>(Tensor<double>::zeros({2}), true), Var<double>(Tensor<double>::zeros({1}), true),
                               Var<double>(Tensor<double>::zeros({3}), true)};
    p[0].mutable_grad().copy_from(Tensor<double>::from_vector({2}, {3.0, 0.0}));
    p[1].mutable_grad().copy_from(Tensor<double>::from_vector({1}, {-4.0}));
    return p;  // p[2] has no gradient: it is skipped, and stays without one
  };
  auto params = make();
  BOOST_TEST(optim::global_grad_norm(params) == 5.0);
  BOOST_TEST(optim::clip_grad_norm(params, 1.0) == 5.0);  // the norm before clipping
  const double coef = 1.0 / (5.0 + 1e-6);
  BOOST_TEST(params[0].grad().to_vector() == (std::vector<double>{3.0 * coef, 0.0}), boost::test_tools::per_element());
  BOOST_TEST(params[1].grad().to_vector()[0] == -4.0 * coef, boost::test_tools::tolerance(1e-15));
  BOOST_TEST(!params[2].grad().defined());
  BOOST_TEST(optim::global_grad_norm(params) == 1.0, boost::test_tools::tolerance(1e-6));

  auto below = make();
  BOOST_TEST(optim::clip_grad_norm(below, 10.0) == 5.0);  // under the limit: untouched
  BOOST_TEST(below[0].grad().to_vector() == (std::vector<double>{3.0, 0.0}), boost::test_tools::per_element());
  auto measured = make();
  BOOST_TEST(optim::clip_grad_norm(measured, 0.0) == 5.0);  // 0: measure only
  BOOST_TEST(measured[1].grad().to_vector()[0] == -4.0);
  expect_error<value_error>([&] { optim::clip_grad_norm(measured, -1.0); }, {"max_norm", ">= 0"});
}

BOOST_AUTO_TEST_CASE(rng_state_round_trips_exactly) {
  Rng rng(42);
  rng.next_u64();
  (void)rng.normal();  // leaves the second value of a Box-Muller pair cached
  const Rng::State saved = rng.state();
  BOOST_TEST(saved.spare_valid);
  std::vector<double> first;
  for (int i = 0; i < 5; ++i) {
    first.push_back(rng.normal());
    first.push_back(rng.uniform());
    first.push_back(static_cast<double>(rng.below(1000)));
  }
  Rng other(7);
  other.set_state(saved);
  BOOST_TEST((other.state() == saved));
  std::vector<double> second;
  for (int i = 0; i < 5; ++i) {
    second.push_back(other.normal());
    second.push_back(other.uniform());
    second.push_back(static_cast<double>(other.below(1000)));
  }
  BOOST_TEST(first == second, boost::test_tools::per_element());
  BOOST_TEST(first[0] == saved.spare);  // the first normal after the save is the cached one

  // Through JSON text: the words and the spare's bits survive exactly.
  const json::Value text = json::parse(json::dump(train::rng_state_to_json(saved)), "state");
  BOOST_TEST((train::rng_state_from_json(text) == saved));
  expect_error<value_error>([&] { other.set_state(Rng::State{}); }, {"all zero"});
  expect_error<io_error>([] { train::rng_state_from_json(json::parse(R"(["1", "2", "3", "4", "5", false])", "s.json")); },
                         {"s.json", "16 hexadecimal digits"});
  expect_error<io_error>([] { train::rng_state_from_json(json::parse("[1, 2]", "s.json")); }, {"six entries"});
}

BOOST_AUTO_TEST_CASE(expert_set_random_streams_save_and_restore) {
  Setup s;
  const auto routes = Tensor<std::int32_t>::full({2, 6}, lora::unrouted);
  const auto streams = s.experts.random_state();
  BOOST_TEST(streams.size() == s.experts.size() + 1);
  BOOST_TEST(streams.front().name == "routing");
  BOOST_TEST(streams[1].name == "dropout." + s.experts.modules()[0]);
  const auto first = s.experts.route(routes);
  const auto second = s.experts.route(routes);
  s.experts.set_random_state(streams);
  const auto again = s.experts.route(routes);
  BOOST_TEST(again->dropout_seed == first->dropout_seed);
  BOOST_TEST(again->plan->offsets == first->plan->offsets);
  BOOST_TEST(again->plan->token == first->plan->token);
  BOOST_TEST(second->dropout_seed != first->dropout_seed);

  auto renamed = streams;
  renamed[2].name = "dropout.elsewhere";
  expect_error<value_error>([&] { s.experts.set_random_state(renamed); }, {"stream 2", "dropout.elsewhere", streams[2].name});
  expect_error<value_error>([&] { s.experts.set_random_state({streams.front()}); }, {"got 1 streams", "expected 15"});
  // context_for: step routers route the ids and need them.
  BOOST_TEST(s.experts.context_for(Tensor<std::int32_t>::full({1, 4}, 1))->plan->tokens == 4);
  expect_error<value_error>([&] { s.experts.context_for(Tensor<std::int32_t>()); }, {"context_for", "route ids", "undefined"});
}

BOOST_AUTO_TEST_CASE(atomic_writes_keep_the_old_file_when_writing_fails) {
  TempDir dir("atomic");
  const fs::path file = dir.path / "state.bin";
  io::atomic_write(file, {"old ", "contents"}, "the test file");
  BOOST_TEST(read_text(file) == "old contents");
  // The writer fails midway: the exception passes through, the old file stays, no temporary is left.
  BOOST_CHECK_THROW(io::atomic_write_with(file, "the test file",
                                          [](std::ostream& out) {
                                            out << "half of the new";
                                            throw std::runtime_error("writer failed");
                                          }),
                    std::runtime_error);
  BOOST_TEST(read_text(file) == "old contents");
  BOOST_TEST(names_in(dir.path) == std::set<std::string>{"state.bin"});
  // The rename fails (the target is a non-empty directory): a typed error naming the file, nothing left over.
  fs::create_directories(dir.path / "taken" / "inside");
  expect_error<io_error>([&] { io::atomic_write(dir.path / "taken", {"x"}, "file 'taken'"); }, {"cannot replace", "file 'taken'"});
  BOOST_TEST(names_in(dir.path) == (std::set<std::string>{"state.bin", "taken"}));
  io::atomic_write(file, {"new"}, "the test file");
  BOOST_TEST(read_text(file) == "new");

  // A staged directory appears whole on publish, replaces an older one, and vanishes if never published.
  const fs::path target = dir.path / "checkpoint-1";
  {
    io::StagedDirectory staged(target, "checkpoint");
    io::atomic_write(staged.path() / "a.txt", {"first"}, "a.txt");
    BOOST_TEST(!fs::exists(target));
    staged.publish();
  }
  BOOST_TEST(read_text(target / "a.txt") == "first");
  {
    io::StagedDirectory abandoned(target, "checkpoint");
    io::atomic_write(abandoned.path() / "a.txt", {"never seen"}, "a.txt");
  }
  BOOST_TEST(read_text(target / "a.txt") == "first");
  {
    io::StagedDirectory staged(target, "checkpoint");
    io::atomic_write(staged.path() / "b.txt", {"second"}, "b.txt");
    staged.publish();
  }
  BOOST_TEST(names_in(target) == std::set<std::string>{"b.txt"});
  BOOST_TEST(names_in(dir.path) == (std::set<std::string>{"checkpoint-1", "state.bin", "taken"}));
}

BOOST_AUTO_TEST_CASE(bad_options_and_batches_are_typed_errors) {
  Setup s;
  expect_error<value_error>([&] { train::Trainer(s.model, s.experts, quiet({.batch_size = 0})); }, {"batch_size", ">= 1", "got 0"});
  expect_error<value_error>([&] { train::Trainer(s.model, s.experts, quiet({.min_lr_ratio = 2.0})); }, {"min_lr_ratio"});
  expect_error<value_error>([&] { train::Trainer(s.model, s.experts, quiet({.resume = true})); }, {"resume", "output_dir"});

  struct NoRoutes : CountingData {
    train::Batch<float> batch(std::span<const std::size_t> i, std::uint64_t e) const {
      auto b = CountingData::batch(i, e);
      b.routes = Tensor<std::int32_t>();
      return b;
    }
  };
  train::Trainer no_routes(s.model, s.experts, quiet({.handle_signals = false}));
  expect_error<value_error>([&] { no_routes.fit(NoRoutes{}); }, {"route ids", "undefined"});
  struct BadGroups : CountingData {
    train::Batch<float> batch(std::span<const std::size_t> i, std::uint64_t e) const {
      auto b = CountingData::batch(i, e);
      b.target_groups[5] = 3;
      return b;
    }
  };
  train::Trainer bad_groups(s.model, s.experts, quiet({}));
  expect_error<value_error>([&] { bad_groups.evaluate(BadGroups{}); }, {"evaluation batch", "target_groups[5] = 3", "3 names"});
  expect_error<value_error>([&] { bad_groups.fit(CountingData{.examples = 0}); }, {"empty"});
}

// ---------------------------------------------------------------- training

// Two micro-batches of 4 rows that count very different numbers of (weighted) targets take the same step as
// one batch of all 8: the step's loss is the mean over all its targets, not the mean of the micro-batches'
// means. AdamW with eps = 1e6 and lr = 1e4 is plain SGD at 1e-2 for gradients far below eps (the float
// denominator rounds to eps), so each update is linear in the gradient and the mix can be checked exactly.
BOOST_AUTO_TEST_CASE(accumulating_two_micro_batches_equals_one_batch_of_both) {
  // Unrouted tokens go to a fixed expert, since one route() call and two would draw random experts differently.
  const lora::Options options{.rank = 4, .alpha = 8, .seed = 5, .unrouted = lora::UnroutedPolicy::FixedStep, .unrouted_expert = 1};
  const CountingData data{.examples = 8, .weighted = true, .uneven = true};
  struct SecondHalf : CountingData {  // examples 4..7 of `data` alone
    std::size_t size() const { return 4; }
    train::Batch<float> batch(std::span<const std::size_t> indices, std::uint64_t epoch) const {
      std::vector<std::size_t> shifted;
      for (const std::size_t i : indices) shifted.push_back(i + 4);
      return CountingData::batch(shifted, epoch);
    }
  };
  const SecondHalf second_half{data};
  // The update of one optimizer step, per adapter tensor, flattened in named order.
  const auto update = [&](const auto& dataset, std::int64_t batch_size, std::int64_t accumulation) {
    Setup s(options);
    const auto before = adapter_values(s.experts);
    train::Trainer trainer(s.model, s.experts,
                           quiet({.max_steps = 1, .batch_size = batch_size, .accumulation_steps = accumulation, .shuffle = false,
                                  .lr = 1e4, .eps = 1e6, .max_grad_norm = 0}));
    const auto result = trainer.fit(dataset);
    BOOST_TEST(result.step == 1);
    std::vector<double> out;
    for (const auto& [name, values] : adapter_values(s.experts))
      for (std::size_t i = 0; i < values.size(); ++i) out.push_back(static_cast<double>(values[i]) - before.at(name)[i]);
    return std::make_pair(out, result.last_loss);
  };
  const auto [both, both_loss] = update(data, 8, 1);
  const auto [micro, micro_loss] = update(data, 4, 2);
  const auto [first, first_loss] = update(data, 4, 1);  // the first micro-batch alone
  const auto [second, second_loss] = update(second_half, 4, 1);
  const auto counted = [](const train::Batch<float>& b) {
    const auto t = b.targets.to_vector();
    const auto w = b.loss_weights.to_vector();
    double sum = 0;
    for (std::size_t i = 0; i < t.size(); ++i) sum += t[i] == -100 ? 0.0 : w[i];
    return sum;
  };
  const std::vector<std::size_t> lo{0, 1, 2, 3}, hi{4, 5, 6, 7};
  const double w1 = counted(data.batch(lo, 0)), w2 = counted(data.batch(hi, 0));
  BOOST_TEST(w1 > 1.5 * w2);  // the micro-batches are far from equal

  double scale = 0, accumulated = 0, token_mean = 0, mean_of_means = 0;
  for (std::size_t i = 0; i < both.size(); ++i) {
    scale = std::max(scale, std::abs(both[i]));
    accumulated = std::max(accumulated, std::abs(micro[i] - both[i]));
    token_mean = std::max(token_mean, std::abs((w1 * first[i] + w2 * second[i]) / (w1 + w2) - both[i]));
    mean_of_means = std::max(mean_of_means, std::abs(0.5 * (first[i] + second[i]) - both[i]));
  }
  BOOST_TEST_MESSAGE("update scale " << scale << ", accumulated " << accumulated << ", token mean " << token_mean
                                     << ", mean of means " << mean_of_means);
  BOOST_TEST(scale > 1e-4);                   // the step moved the adapters
  BOOST_TEST(accumulated < 1e-5 * scale);     // accumulation equals the one batch, within float rounding
  BOOST_TEST(token_mean < 1e-4 * scale);      // which is the token-weighted mix of the two halves
  BOOST_TEST(mean_of_means > 0.05 * scale);   // and visibly not their plain mean
  BOOST_TEST(micro_loss == both_loss, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(both_loss == (w1 * first_loss + w2 * second_loss) / (w1 + w2), boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(loss_falls_on_a_learnable_task_overall_and_per_group) {
  Setup s;
  widen_head(s.model, 10.0f);
  const CountingData train_data{.examples = 32};
  const CountingData eval_data{.examples = 12, .seed = 99};
  std::ostringstream log;
  train::Trainer trainer(s.model, s.experts,
                         {.epochs = 8, .batch_size = 8, .seed = 3, .lr = 2e-2, .warmup_steps = 3, .eval_every = 16,
                          .progress = train::Progress::lines, .log_every = 8, .log = &log});
  const train::EvalResult before = trainer.evaluate(eval_data);
  const train::FitResult result = trainer.fit(train_data, eval_data);
  BOOST_TEST(result.completed);
  BOOST_TEST(!result.interrupted);
  BOOST_TEST(result.step == 32);
  BOOST_TEST(result.steps_run == 32);
  BOOST_REQUIRE(result.last_eval.has_value());
  const train::EvalResult& after = *result.last_eval;
  BOOST_TEST_MESSAGE("eval loss " << before.loss << " -> " << after.loss);
  BOOST_TEST(before.loss > 4.0);  // about log(64) = 4.16 before training
  BOOST_TEST(after.loss < 0.6 * before.loss);
  BOOST_REQUIRE(after.groups.size() == 3u);
  double weighted = 0;
  for (std::size_t g = 0; g < 3; ++g) {
    BOOST_TEST_CONTEXT(after.groups[g].name) {
      BOOST_TEST(after.groups[g].targets > 0);
      BOOST_TEST(after.groups[g].loss < 0.7 * before.groups[g].loss);
    }
    weighted += after.groups[g].loss * after.groups[g].targets;
  }
  // Every counted target has a group here, so the groups recombine into the overall loss.
  BOOST_TEST(after.targets == after.groups[0].targets + after.groups[1].targets + after.groups[2].targets);
  BOOST_TEST(weighted / after.targets == after.loss, boost::test_tools::tolerance(1e-5));
  // Plain lines every log_every steps, and the evaluations.
  const std::string text = log.str();
  BOOST_TEST(testing::contains(text, "step 8/32 epoch"));
  BOOST_TEST(testing::contains(text, "step 32/32 epoch"));
  BOOST_TEST(testing::contains(text, "eval at step 16: loss"));
  BOOST_TEST(!testing::contains(text, "step 9/32"));
  // The timing split covers the run; overhead is what is left.
  const auto& t = result.timing;
  BOOST_TEST(t.data_s >= 0);
  BOOST_TEST(t.other_s >= 0);
  BOOST_TEST(t.data_s + t.forward_backward_s + t.optimizer_s + t.eval_s + t.checkpoint_s + t.other_s <= t.total_s * (1 + 1e-9) + 1e-9);
  BOOST_TEST(result.tokens == 32 * 8 * CountingData::length);
}

BOOST_AUTO_TEST_CASE(progress_bar_redraws_one_line) {
  Setup s;
  std::ostringstream log;
  train::Trainer trainer(s.model, s.experts, {.max_steps = 3, .batch_size = 4, .progress = train::Progress::bar, .log = &log});
  trainer.fit(CountingData{.examples = 8});
  const std::string text = log.str();
  BOOST_TEST(testing::contains(text, "\r3/3 ["));
  BOOST_TEST(testing::contains(text, "tok/s | ETA"));
  BOOST_TEST(text.back() == '\n');
  BOOST_TEST(text.find('\n') == text.size() - 1);  // one line, redrawn in place
  std::ostringstream none;
  Setup quiet_setup;
  train::Trainer silent(quiet_setup.model, quiet_setup.experts, {.max_steps = 2, .batch_size = 4, .progress = train::Progress::off, .log = &none});
  silent.fit(CountingData{.examples = 8});
  BOOST_TEST(none.str().empty());
}

// ---------------------------------------------------------------- checkpoints and resume

// With dropout and random routing of the question tokens, so that the saved random streams matter: a run
// stopped by SIGINT and resumed, and a run that crashed and resumed, end bit-identical to one that never stopped.
BOOST_AUTO_TEST_CASE(interrupted_and_resumed_runs_match_an_uninterrupted_run_bit_for_bit) {
  const CountingData train_data;
  const CountingData eval_data{.examples = 8, .seed = 77};
  TempDir root("resume");

  // A: straight through (9 steps; checkpoints at 2, 4, 6, 8 and the final 9; the newest two kept).
  Setup a;
  train::Trainer trainer_a(a.model, a.experts, resume_options(root.path / "a"));
  const auto result_a = trainer_a.fit(train_data, eval_data);
  BOOST_TEST(result_a.completed);
  BOOST_TEST(result_a.step == 9);
  BOOST_TEST(result_a.resumed_from == -1);
  std::vector<std::int64_t> kept;
  for (const auto& c : train::list_checkpoints(root.path / "a")) kept.push_back(c.step);
  BOOST_TEST(kept == (std::vector<std::int64_t>{8, 9}), boost::test_tools::per_element());
  const auto final_a = adapter_values(a.experts);
  const auto log_a = loss_log(root.path / "a" / "metrics.jsonl");
  BOOST_TEST(log_a.size() == 9u + 3u);  // a line per step, evaluations at 4, 8 and the end
  BOOST_TEST(testing::contains(log_a.back(), "\"kind\":\"eval\""));
  // Each train line reports the step's memory: what stays (weights, optimizer state) below the step's
  // peak, which also held the activations.
  {
    std::istringstream lines(read_text(root.path / "a" / "metrics.jsonl"));
    int reported = 0;
    for (std::string line; std::getline(lines, line);) {
      const json::Value v = json::parse(line, "metrics.jsonl");
      if (v.at("kind").as_string() != "train") continue;
      const std::int64_t live = v.at("memory_live_bytes").as_int64(), peak = v.at("memory_peak_bytes").as_int64();
      BOOST_TEST(live > 0);
      BOOST_TEST(peak > live);
      ++reported;
    }
    BOOST_TEST(reported == 9);
  }

  // B: SIGINT at step 5 (raised from the step callback); the step finishes, a checkpoint is saved, the
  // previous SIGINT handler comes back, fit returns normally.
  struct sigaction mine {}, before {}, after {};
  mine.sa_handler = count_sigint;
  sigemptyset(&mine.sa_mask);
  BOOST_REQUIRE(::sigaction(SIGINT, &mine, &before) == 0);
  {
    Setup b;
    auto options = resume_options(root.path / "b");
    options.on_step = [](const train::StepReport& r) {
      if (r.step == 5) std::raise(SIGINT);
    };
    train::Trainer trainer_b(b.model, b.experts, options);
    const auto result_b = trainer_b.fit(train_data, eval_data);
    BOOST_TEST(result_b.interrupted);
    BOOST_TEST(!result_b.completed);
    BOOST_TEST(result_b.signal == SIGINT);
    BOOST_TEST(result_b.step == 5);
    BOOST_TEST(result_b.last_checkpoint == root.path / "b" / "checkpoint-5");
    BOOST_TEST(fs::exists(root.path / "b" / "checkpoint-5" / "trainer_state.json"));
  }
  BOOST_REQUIRE(::sigaction(SIGINT, nullptr, &after) == 0);
  BOOST_TEST((after.sa_handler == &count_sigint));
  BOOST_TEST(sigint_seen == 0);  // the trainer's handler took the signal, not this one
  ::sigaction(SIGINT, &before, nullptr);
  fs::copy(root.path / "b", root.path / "d", fs::copy_options::recursive);
  {
    Setup b;
    auto options = resume_options(root.path / "b");
    options.resume = true;
    train::Trainer trainer_b(b.model, b.experts, options);
    const auto resumed = trainer_b.fit(train_data, eval_data);
    BOOST_TEST(resumed.completed);
    BOOST_TEST(resumed.resumed_from == 5);
    BOOST_TEST(resumed.steps_run == 4);
    BOOST_TEST((adapter_values(b.experts) == final_a));
    BOOST_TEST(loss_log(root.path / "b" / "metrics.jsonl") == log_a, boost::test_tools::per_element());
  }

  // C: a crash (an exception) during step 5, after its metrics line: the newest checkpoint is step 4, and the
  // resume cuts the metrics file back to what that checkpoint recorded before redoing step 5.
  {
    Setup c;
    auto options = resume_options(root.path / "c");
    options.on_step = [](const train::StepReport& r) {
      if (r.step == 5) throw std::runtime_error("simulated crash");
    };
    train::Trainer trainer_c(c.model, c.experts, options);
    BOOST_CHECK_THROW(trainer_c.fit(train_data, eval_data), std::runtime_error);
    BOOST_TEST(train::list_checkpoints(root.path / "c").back().step == 4);
    BOOST_TEST(loss_log(root.path / "c" / "metrics.jsonl").size() == 5u + 1u);
  }
  {
    Setup c;
    auto options = resume_options(root.path / "c");
    options.resume = true;
    train::Trainer trainer_c(c.model, c.experts, options);
    const auto resumed = trainer_c.fit(train_data, eval_data);
    BOOST_TEST(resumed.resumed_from == 4);
    BOOST_TEST((adapter_values(c.experts) == final_a));
    BOOST_TEST(loss_log(root.path / "c" / "metrics.jsonl") == log_a, boost::test_tools::per_element());
  }

  // D: the same checkpoint as B with its routing stream replaced by another valid one: the run now ends
  // elsewhere, so the comparisons above would catch a stream that a checkpoint forgot.
  {
    const fs::path state_file = root.path / "d" / "checkpoint-5" / "trainer_state.json";
    std::string text = read_text(state_file);
    const json::Value state = json::parse(text, state_file.string());
    const std::string word = state["random_streams"]["routing"][0].as_string();
    const std::string other = word == "0123456789abcdef" ? "fedcba9876543210" : "0123456789abcdef";
    text.replace(text.find(word), word.size(), other);
    std::ofstream(state_file, std::ios::binary | std::ios::trunc) << text;
    Setup d;
    auto options = resume_options(root.path / "d");
    options.resume = true;
    train::Trainer trainer_d(d.model, d.experts, options);
    const auto resumed = trainer_d.fit(train_data, eval_data);
    BOOST_TEST(resumed.resumed_from == 5);
    BOOST_TEST((adapter_values(d.experts) != final_a));
  }
}

BOOST_AUTO_TEST_CASE(request_stop_saves_and_a_fresh_run_refuses_a_used_folder) {
  TempDir root("stop");
  const CountingData data{.examples = 8};
  Setup s;
  train::Trainer<Model, Experts>* self = nullptr;
  auto options = quiet({.epochs = 4, .batch_size = 4, .output_dir = root.path});
  options.on_step = [&](const train::StepReport& r) {
    if (r.step == 3) self->request_stop();
  };
  train::Trainer trainer(s.model, s.experts, options);
  self = &trainer;
  const auto result = trainer.fit(data);
  BOOST_TEST(result.interrupted);
  BOOST_TEST(result.signal == 0);
  BOOST_TEST(result.step == 3);
  BOOST_TEST(result.epoch == 1);
  BOOST_TEST(result.position == 4);
  BOOST_TEST(fs::exists(root.path / "checkpoint-3" / "adapters" / "mote_config.json"));
  BOOST_TEST(fs::exists(root.path / "checkpoint-3" / "optimizer.bin"));
  expect_error<value_error>([&] { trainer.fit(data); }, {"already ran"});

  Setup again;
  train::Trainer fresh(again.model, again.experts, quiet({.epochs = 4, .batch_size = 4, .output_dir = root.path}));
  expect_error<value_error>([&] { fresh.fit(data); }, {root.path.string(), "checkpoint-3", "resume = true"});

  // SIGTERM stops a run the same way (here with no output folder: nothing to save, a clean return).
  Setup term;
  auto term_options = quiet({.epochs = 4, .batch_size = 4});
  term_options.on_step = [](const train::StepReport& r) {
    if (r.step == 2) std::raise(SIGTERM);
  };
  train::Trainer terminated(term.model, term.experts, term_options);
  const auto stopped = terminated.fit(data);
  BOOST_TEST(stopped.interrupted);
  BOOST_TEST(stopped.signal == SIGTERM);
  BOOST_TEST(stopped.step == 2);
  BOOST_TEST(stopped.last_checkpoint.empty());
}

// A resume folder from another model, other adapters or other data is refused with the file, the field and
// what was expected, and nothing in the folder changes.
BOOST_AUTO_TEST_CASE(resume_refuses_another_model_other_adapters_or_other_data) {
  TempDir root("refuse");
  const CountingData data{.examples = 8};
  const auto options = [&] {
    auto o = quiet({.epochs = 2, .batch_size = 4, .lr = 1e-2, .output_dir = root.path, .checkpoint_every = 1, .resume = true});
    return o;
  };
  {
    Setup s;
    train::Trainer trainer(s.model, s.experts, options());
    BOOST_TEST(trainer.fit(data).step == 4);
  }
  const fs::path state_file = root.path / "checkpoint-4" / "trainer_state.json";
  const std::string metrics_before = read_text(root.path / "metrics.jsonl");
  const std::string state_before = read_text(state_file);
  const auto folder_before = names_in(root.path);
  const auto refused = [&](auto& setup, const auto& dataset, std::initializer_list<std::string> needles) {
    auto o = options();
    o.epochs = 5;  // there would be steps left to train
    train::Trainer trainer(setup.model, setup.experts, o);
    expect_error<value_error>([&] { trainer.fit(dataset); }, needles);
    BOOST_TEST(read_text(root.path / "metrics.jsonl") == metrics_before);
    BOOST_TEST(read_text(state_file) == state_before);
    BOOST_TEST(names_in(root.path) == folder_before);
  };
  {
    Setup other_seed(lora::Options{.rank = 4, .alpha = 8, .dropout = 0.1, .seed = 5}, 4);  // same shapes, other weights
    refused(other_seed, data, {state_file.string(), "fingerprint.model.base_weights", "expected", "another model"});
  }
  {
    struct Wider {
      nn::CausalLM<nn::with_vocab(presets::tiny_llama, 72), float> model{3};
      lora::ExpertSet<lora::StepRouter<3>, decltype(model)> experts{
          lora::attach<lora::StepRouter<3>>(model, {.rank = 4, .alpha = 8, .dropout = 0.1, .seed = 5})};
    } wider;
    refused(wider, data, {state_file.string(), "fingerprint.model.config.vocab is 64, expected 72"});
  }
  {
    Setup rank2(lora::Options{.rank = 2, .alpha = 8, .dropout = 0.1, .seed = 5});
    refused(rank2, data, {state_file.string(), "fingerprint.adapters[0]", "[4,32]", "expected", "[2,32]"});
  }
  {
    Setup s;
    refused(s, CountingData{.examples = 8, .seed = 2}, {state_file.string(), "fingerprint.data", "seed=1", "expected", "seed=2"});
  }
  {
    Setup s;
    auto o = options();
    o.batch_size = 2;
    train::Trainer trainer(s.model, s.experts, o);
    expect_error<value_error>([&] { trainer.fit(data); }, {state_file.string(), "options.batch_size is 4, expected 2"});
  }
  // The same model, adapters and data resume fine (nothing left to do: 4 of 4 steps done).
  Setup s;
  train::Trainer trainer(s.model, s.experts, options());
  const auto result = trainer.fit(data);
  BOOST_TEST(result.resumed_from == 4);
  BOOST_TEST(result.steps_run == 0);
  BOOST_TEST(read_text(root.path / "metrics.jsonl") == metrics_before);
}

// Full training through the same Trainer: every parameter moves, the loss falls, a stopped run resumed
// from its checkpoint ends bit for bit where an uninterrupted one does, and a checkpoint of another
// model's shapes is refused naming the tensor.
BOOST_AUTO_TEST_CASE(whole_model_trains_every_parameter_and_resumes_exactly) {
  using Whole = train::WholeModel<Model>;
  static_assert(train::AdapterSet<Whole, float, cpu>);
  TempDir root("whole");
  const CountingData data{.examples = 8};
  const auto options = [&](const fs::path& out) {
    return quiet({.epochs = 6, .batch_size = 4, .seed = 3, .lr = 1e-2, .output_dir = out, .checkpoint_every = 2});
  };
  const auto values = [](Model& m) {
    std::map<std::string, std::vector<float>> out;
    m.for_each_parameter([&](const std::string& name, Var<float>& p) { out[name] = p.value().to_vector(); });
    return out;
  };

  Model straight(3);
  const auto initial = values(straight);
  Whole whole(straight);
  train::Trainer trainer(straight, whole, options(root.path / "a"));
  const auto first = trainer.evaluate(data);
  const auto result = trainer.fit(data);
  BOOST_TEST(result.completed);
  BOOST_TEST(trainer.evaluate(data).loss < 0.8 * first.loss);
  const auto final_values = values(straight);
  for (const auto& [name, v] : final_values) BOOST_TEST((v != initial.at(name)), name << " did not train");

  {
    Model stopped(3);
    Whole w(stopped);
    train::Trainer<Model, Whole>* self = nullptr;
    auto o = options(root.path / "b");
    o.on_step = [&](const train::StepReport& r) {
      if (r.step == 5) self->request_stop();
    };
    train::Trainer t(stopped, w, o);
    self = &t;
    BOOST_TEST(t.fit(data).interrupted);
  }
  Model resumed(3);
  Whole w(resumed);
  auto o = options(root.path / "b");
  o.resume = true;
  train::Trainer t(resumed, w, o);
  BOOST_TEST(t.fit(data).resumed_from == 5);
  BOOST_TEST((values(resumed) == final_values));

  // The saved weights load back; a file missing a tensor is refused by name.
  Model reloaded(9);
  Whole r(reloaded);
  r.load(root.path / "a" / "checkpoint-12" / "adapters");
  BOOST_TEST((values(reloaded) == final_values));
  io::safetensors::save<float>(root.path / "partial.safetensors", {{"model.norm.weight", Tensor<float>::zeros({4})}});
  fs::create_directories(root.path / "partial");
  fs::rename(root.path / "partial.safetensors", root.path / "partial" / Whole::file_name);
  expect_error<io_error>([&] { r.load(root.path / "partial"); }, {"partial", "model.embed_tokens.weight"});
}

BOOST_AUTO_TEST_SUITE_END()
