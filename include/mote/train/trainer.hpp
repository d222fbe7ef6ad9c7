#pragma once
// Trainer<Model, Adapters, Comm>: AdamW over the adapters' parameters with warmup and decay, global-norm
// clipping, gradient accumulation, seeded epochs, evaluation overall and per group, checkpoints with
// exact resume, clean stops on SIGINT / SIGTERM, console progress and a JSONL metrics file.
//
//   mote::train::Trainer trainer(model, experts, {.epochs = 3, .batch_size = 16, .lr = 2e-4, .output_dir = "run"});
//   auto result = trainer.fit(train_data, eval_data);
//
// Data parallel: pass a communicator (dist::mpi, dist::nccl). Each rank then trains on batch_size
// examples of every global micro-batch of batch_size x world size, the gradients are summed across
// ranks in buckets while backward runs, and every rank takes the identical optimizer step; only rank 0
// writes checkpoints, metrics and progress. The global batch, not the world size, fixes the run: a
// checkpoint resumes under any world size whose batch_size x world size is the same.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/autograd/elementwise.hpp"
#include "mote/autograd/loss.hpp"
#include "mote/autograd/var.hpp"
#include "mote/backend/traits.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/core/tensor.hpp"
#include "mote/dist/communicator.hpp"
#include "mote/dist/gradient_buckets.hpp"
#include "mote/dist/single.hpp"
#include "mote/io/atomic_file.hpp"
#include "mote/io/json.hpp"
#include "mote/nn/causal_lm.hpp"
#include "mote/nn/config.hpp"
#include "mote/optim/adamw.hpp"
#include "mote/optim/clip.hpp"
#include "mote/train/batch.hpp"
#include "mote/train/checkpoint.hpp"
#include "mote/train/metrics.hpp"
#include "mote/train/options.hpp"
#include "mote/train/schedule.hpp"
#include "mote/train/signals.hpp"

namespace mote::train {

// A causal language model the trainer can drive (nn::CausalLM): logits and loss with LossOptions,
// a compile-time config, and a parameter visitor (for the resume fingerprint).
template <class M>
concept CausalModel = requires { typename M::V; } &&
                      requires(M& m, const M& cm, const Tensor<std::int32_t, typename M::V::backend_type>& ids,
                               const nn::LossOptions<typename M::V::value_type, typename M::V::backend_type>& loss_options,
                               const nn::ForwardOptions<typename M::V::backend_type>& forward_options) {
                        { M::config } -> std::convertible_to<nn::Config>;
                        { cm.loss(ids, ids, loss_options) } -> std::same_as<typename M::V>;
                        { cm.logits(ids, forward_options) } -> std::same_as<typename M::V>;
                        m.for_each_parameter([](const std::string&, typename M::V&) {});
                      };

// What the trainer needs of the adapters (lora::ExpertSet, or a wrapper that adds trainable token rows):
// the trainable tensors, a context per batch from its route ids, files, train/eval modes, and every
// random stream, saveable and restorable.
template <class A, class T, class B = cpu>
concept AdapterSet = requires(A& a, const A& ca, const Tensor<std::int32_t, B>& routes, const std::filesystem::path& dir,
                              const std::vector<RngStreamState>& streams) {
  { ca.parameters() } -> std::convertible_to<std::vector<autograd::Var<T, B>>>;
  { ca.named_parameters() } -> std::convertible_to<std::vector<std::pair<std::string, autograd::Var<T, B>>>>;
  { a.context_for(routes) } -> std::convertible_to<std::shared_ptr<const nn::AdapterContext>>;
  ca.save(dir);
  a.load(dir);
  a.train();
  a.eval();
  { ca.random_state() } -> std::convertible_to<std::vector<RngStreamState>>;
  a.set_random_state(streams);
};

namespace trainer_detail {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Epoch `epoch`'s order of the examples: a Fisher-Yates shuffle from a stream keyed by (seed, epoch).
inline std::vector<std::size_t> epoch_order(std::size_t n, std::uint64_t seed, std::int64_t epoch, bool shuffle) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (!shuffle) return order;
  Rng rng(seed ^ (0x9e3779b97f4a7c15ULL * (static_cast<std::uint64_t>(epoch) + 1)));
  for (std::size_t i = n; i > 1; --i) std::swap(order[i - 1], order[static_cast<std::size_t>(rng.below(i))]);
  return order;
}

// The targets that count in the loss (target != -100), each at its Batch::loss_weights weight (1 without).
template <class T, class B>
double counted_targets(const Batch<T, B>& batch) {
  const std::vector<std::int32_t> targets = batch.targets.contiguous().to_vector();
  std::vector<T> weights;
  if (batch.loss_weights.defined()) weights = batch.loss_weights.contiguous().to_vector();
  double sum = 0;
  for (std::size_t i = 0; i < targets.size(); ++i)
    if (targets[i] != -100) sum += weights.empty() ? 1.0 : static_cast<double>(weights[i]);
  return sum;
}

// Checks what a Dataset built before the model sees it; `where` names the batch.
template <class T, class B>
void check_batch(const Batch<T, B>& b, std::size_t groups, const std::string& where) {
  if (!b.ids.defined() || b.ids.rank() != 2 || b.ids.size(0) == 0 || b.ids.size(1) == 0)
    throw shape_error(where + ": ids must have shape [rows, length] with both > 0, got " +
                      (b.ids.defined() ? b.ids.shape().str() : std::string("an undefined tensor")));
  const Shape& s = b.ids.shape();
  const auto same = [&](const auto& t, const char* name, bool optional) {
    if (!t.defined()) {
      if (optional) return;
      throw shape_error(where + ": " + name + " is undefined, expected shape " + s.str());
    }
    if (!(t.shape() == s)) throw shape_error(where + ": " + name + " has shape " + t.shape().str() + ", expected the ids' " + s.str());
  };
  same(b.targets, "targets", false);
  same(b.loss_weights, "loss_weights", true);
  same(b.positions, "positions", true);
  same(b.routes, "routes", true);
  if (b.mask.defined() && !(b.mask.shape() == Shape{s[0], s[1], s[1]}))
    throw shape_error(where + ": mask has shape " + b.mask.shape().str() + ", expected [rows, length, length] = " +
                      Shape{s[0], s[1], s[1]}.str());
  if (!b.target_groups.empty()) {
    if (static_cast<std::int64_t>(b.target_groups.size()) != s.numel())
      throw shape_error(where + ": target_groups has " + std::to_string(b.target_groups.size()) + " entries, expected rows * length = " +
                        std::to_string(s.numel()));
    for (std::size_t i = 0; i < b.target_groups.size(); ++i) {
      const std::int32_t g = b.target_groups[i];
      if (g < -1 || g >= static_cast<std::int32_t>(groups))
        throw value_error(where + ": target_groups[" + std::to_string(i) + "] = " + std::to_string(g) + " is outside -1.." +
                          std::to_string(static_cast<std::int64_t>(groups) - 1) + " (Dataset::group_names() has " +
                          std::to_string(groups) + " names)");
    }
  }
}

// Restores the adapters' random streams and training mode when an evaluation ends, however it ends.
template <class Adapters>
struct EvalScope {
  Adapters& adapters;
  std::vector<RngStreamState> saved;
  EvalScope(Adapters& a, const std::vector<RngStreamState>* eval_streams) : adapters(a), saved(a.random_state()) {
    if (eval_streams) adapters.set_random_state(*eval_streams);
    adapters.eval();
  }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;
  ~EvalScope() {
    try {
      adapters.set_random_state(saved);
    } catch (...) {  // the same streams it returned a moment ago; nothing to report from a destructor
    }
    adapters.train();
  }
};

}  // namespace trainer_detail

template <CausalModel Model, class Adapters, dist::Communicator Comm = dist::single>
  requires AdapterSet<Adapters, typename Model::V::value_type, typename Model::V::backend_type> &&
           dist::ReducesOn<Comm, typename Model::V::backend_type>
class Trainer {
 public:
  using V = typename Model::V;
  using T = typename V::value_type;
  using B = typename V::backend_type;

  Trainer(Model& model, Adapters& adapters, TrainerOptions options = {}, Comm comm = Comm{})
      : model_(&model),
        adapters_(&adapters),
        options_(std::move(options)),
        optimizer_(make_optimizer(adapters, checked(options_))),
        params_(adapters.parameters()),
        comm_(std::move(comm)),
        world_(comm_.size()),
        rank_(comm_.rank()) {
    if (world_ > 1)
      buckets_ = std::make_unique<dist::GradientBuckets<T, B, Comm>>(params_, comm_, dist::BucketOptions{.bucket_bytes = options_.bucket_bytes});
  }

  // This process's place in the data-parallel world (0 and 1 without a communicator).
  int rank() const noexcept { return rank_; }
  int world_size() const noexcept { return world_; }
  // Bytes each rank sends into the gradient sums of one step (0 in one process).
  std::int64_t all_reduced_bytes_per_step() const noexcept { return buckets_ ? buckets_->bytes_per_step() : 0; }

  const TrainerOptions& options() const noexcept { return options_; }
  optim::AdamW<T, B>& optimizer() noexcept { return optimizer_; }
  // Optimizer steps done so far (those before a resume included).
  std::int64_t step() const noexcept { return step_; }

  // Asks a running fit() to stop after the current optimizer step, as a signal would (safe from on_step
  // or another thread).
  void request_stop() noexcept { stop_requested_.store(true); }

  // Trains on `train_data`; with `eval_data`, evaluates every eval_every steps and at the end. One fit per
  // Trainer: a later run continues through options.resume and a new Trainer.
  template <Dataset<T, B> Data>
  FitResult fit(const Data& train_data) {
    return run(train_data, static_cast<const Data*>(nullptr));
  }
  template <Dataset<T, B> Data, Dataset<T, B> EvalData>
  FitResult fit(const Data& train_data, const EvalData& eval_data) {
    return run(train_data, &eval_data);
  }

  // The loss over all of `data` under no_grad with the adapters in eval mode, in dataset order with
  // epoch 0, overall and per group; the adapters' random streams are as they were afterwards.
  template <Dataset<T, B> Data>
  EvalResult evaluate(const Data& data) {
    return evaluate_with(data, nullptr);
  }

 private:
  static optim::AdamW<T, B> make_optimizer(Adapters& adapters, const TrainerOptions& o) {
    return optim::AdamW<T, B>(std::vector<optim::ParamGroup<T, B>>{{"adapters", adapters.parameters()}},
                              typename optim::AdamW<T, B>::Options{.lr = static_cast<T>(o.lr),
                                                                   .beta1 = static_cast<T>(o.beta1),
                                                                   .beta2 = static_cast<T>(o.beta2),
                                                                   .eps = static_cast<T>(o.eps),
                                                                   .weight_decay = static_cast<T>(o.weight_decay)});
  }

  // Checked before the optimizer is built, so that a bad value is reported under its TrainerOptions name.
  static const TrainerOptions& checked(const TrainerOptions& o) {
    const std::string where = "mote: train::TrainerOptions: ";
    const auto at_least = [&](std::int64_t v, std::int64_t lo, const char* name, const char* meaning) {
      if (v < lo) throw value_error(where + name + " must be >= " + std::to_string(lo) + meaning + ", got " + std::to_string(v));
    };
    at_least(o.epochs, 1, "epochs", "");
    at_least(o.max_steps, 0, "max_steps", " (0 = as many as the epochs take)");
    at_least(o.batch_size, 1, "batch_size", "");
    at_least(o.accumulation_steps, 1, "accumulation_steps", "");
    at_least(o.eval_every, 0, "eval_every", " (0 = only at the end)");
    at_least(o.eval_batch_size, 0, "eval_batch_size", " (0 = batch_size)");
    at_least(o.checkpoint_every, 0, "checkpoint_every", " (0 = only at the end and on a signal)");
    at_least(o.keep_checkpoints, 0, "keep_checkpoints", " (0 = keep all)");
    at_least(o.metrics_every, 1, "metrics_every", "");
    at_least(o.log_every, 1, "log_every", "");
    if (!(o.max_grad_norm >= 0.0) || !std::isfinite(o.max_grad_norm))
      throw value_error(where + "max_grad_norm must be finite and >= 0 (0 = no clipping), got " + std::to_string(o.max_grad_norm));
    Schedule{o.lr, o.warmup_steps, 1, o.decay, o.min_lr_ratio}.check();
    if (o.resume && o.output_dir.empty()) throw value_error(where + "resume = true needs an output_dir to resume from");
    return o;
  }

  bool stop_wanted(const StopSignalGuard* guard) const noexcept {
    return stop_requested_.load() || (guard && StopSignalGuard::caught() != 0);
  }

  // ---------------------------------------------------------------- across ranks (no-ops in one process)

  void sum_over_ranks(std::span<double> values, Timing& timing) {
    if (world_ == 1) return;
    const auto start = trainer_detail::Clock::now();
    comm_.all_reduce_sum(values);
    timing.communication_s += trainer_detail::seconds_since(start);
  }

  // Every rank stops at the same step when any rank was asked to (a signal reaches ranks at different times).
  bool stop_agreed(bool here, Timing& timing) {
    std::array<double, 1> votes{here ? 1.0 : 0.0};
    sum_over_ranks(std::span<double>(votes), timing);
    return votes[0] > 0;
  }

  // Throws on every rank when the ranks disagree on `value`, naming the first rank that differs from rank 0.
  void require_same_on_every_rank(const std::string& value, const std::string& what) {
    if (world_ == 1) return;
    const std::vector<std::string> all = comm_.all_gather(value);
    for (std::size_t r = 1; r < all.size(); ++r) {
      if (all[r] == all[0]) continue;
      std::size_t at = 0;
      while (at < std::min(all[0].size(), all[r].size()) && all[0][at] == all[r][at]) ++at;
      const std::size_t from = at > 40 ? at - 40 : 0;
      throw dist::dist_error("mote: train: rank " + std::to_string(r) + " and rank 0 disagree on " + what + ": from character " +
                             std::to_string(at) + ", rank 0 has \"" + all[0].substr(from, 100) + "\" and rank " + std::to_string(r) +
                             " has \"" + all[r].substr(from, 100) + "\"; start every rank with the same model, adapters, data and options");
    }
  }

  // Rank r's random streams, drawn from rank 0's: dropout on each rank's examples draws independently.
  static std::vector<RngStreamState> rank_streams(std::vector<RngStreamState> streams, int rank) {
    for (auto& s : streams) {
      std::uint64_t seed = static_cast<std::uint64_t>(rank) * 0x9e3779b97f4a7c15ULL;
      for (const std::uint64_t w : s.state.words) seed = (seed ^ w) * 0xbf58476d1ce4e5b9ULL;
      s.state = Rng(seed).state();
    }
    return streams;
  }

  // ---------------------------------------------------------------- the loop

  template <class Data, class EvalData>
  FitResult run(const Data& train_data, const EvalData* eval_data) {
    namespace fs = std::filesystem;
    using trainer_detail::Clock;
    using trainer_detail::seconds_since;
    if (fitted_) throw value_error("mote: train::Trainer::fit: this Trainer already ran; make a new one (with resume = true to continue)");
    fitted_ = true;
    const auto fit_start = Clock::now();
    FitResult result;
    Timing& timing = result.timing;

    const std::size_t examples = train_data.size();
    if (examples == 0) throw value_error("mote: train::Trainer::fit: the training Dataset is empty");
    // A global micro-batch is batch_size examples per rank; rank r takes the r-th batch_size of it.
    const auto batch_size = static_cast<std::size_t>(options_.batch_size);
    const std::size_t global_batch = batch_size * static_cast<std::size_t>(world_);
    const std::int64_t micro_per_epoch = static_cast<std::int64_t>((examples + global_batch - 1) / global_batch);
    const std::int64_t steps_per_epoch = (micro_per_epoch + options_.accumulation_steps - 1) / options_.accumulation_steps;
    total_steps_ = options_.max_steps > 0 ? options_.max_steps : options_.epochs * steps_per_epoch;
    const Schedule schedule{options_.lr, options_.warmup_steps, total_steps_, options_.decay, options_.min_lr_ratio};
    schedule.check();
    const std::size_t train_groups = std::vector<std::string>(train_data.group_names()).size();

    fingerprint_ = io::json::Value::object({{"model", model_fingerprint(*model_)},
                                            {"adapters", adapters_fingerprint(*adapters_)},
                                            {"data", std::string(train_data.fingerprint())},
                                            {"eval_data", eval_data ? std::string(eval_data->fingerprint()) : std::string()}});
    require_same_on_every_rank(io::json::dump(fingerprint_), "the model, adapters and data (the run's fingerprint)");
    const bool has_output = !options_.output_dir.empty();
    std::uint64_t metrics_keep = 0;
    if (has_output) {
      if (rank_ == 0) fs::create_directories(options_.output_dir);
      comm_.barrier();
      if (options_.resume) {
        metrics_keep = resume(examples);
        result.resumed_from = resumed_from_;
      } else if (const auto existing = list_checkpoints(options_.output_dir); !existing.empty()) {
        throw value_error("mote: train::Trainer::fit: output_dir '" + options_.output_dir.string() + "' already holds " +
                          existing.back().path.filename().string() + "; pass resume = true to continue that run, or use an empty folder");
      }
      if (options_.write_metrics && rank_ == 0) metrics_ = MetricsFile(options_.output_dir / "metrics.jsonl", metrics_keep);
    }
    require_same_on_every_rank(std::to_string(step_), "the step resumed from (do all ranks see the same output_dir?)");
    if (!resumed_) {
      eval_streams_ = adapters_->random_state();
      if (rank_ > 0) adapters_->set_random_state(rank_streams(adapters_->random_state(), rank_));
    }

    std::optional<StopSignalGuard> signals;
    if (options_.handle_signals) signals.emplace();
    ProgressReporter progress(rank_ == 0 ? options_.progress : Progress::off, options_.log, options_.log_every);
    if (resumed_) progress.note("resumed from step " + std::to_string(resumed_from_) + " of " + std::to_string(total_steps_));

    adapters_->train();
    optimizer_.zero_grad();
    std::vector<std::size_t> order = trainer_detail::epoch_order(examples, options_.seed, epoch_, options_.shuffle);
    // A resumed run whose checkpoint is its last step already evaluated and saved it.
    std::int64_t saved_at = resumed_ ? step_ : -1, evaluated_at = resumed_ && step_ >= total_steps_ ? step_ : -1;
    const std::int64_t first_step = step_;
    const double elapsed_before = elapsed_before_;

    while (step_ < total_steps_) {
      if (stop_agreed(stop_wanted(signals ? &*signals : nullptr), timing)) break;
      if (position_ >= static_cast<std::int64_t>(examples)) {
        ++epoch_;
        position_ = 0;
        order = trainer_detail::epoch_order(examples, options_.seed, epoch_, options_.shuffle);
      }
      const auto step_start = Clock::now();
      backend_traits<B>::reset_memory_peak();  // the metrics line reports this step's peak

      // Every micro-batch of the step is built first, so that each one's loss can be weighted by its
      // share of the step's target tokens: the step's loss is then the mean over all of them.
      std::vector<Batch<T, B>> batches;
      std::vector<double> counted;
      // This rank's targets, input tokens and examples in the step; summed over ranks below.
      std::array<double, 3> step_counts{};
      std::int64_t micro_batches = 0;
      for (std::int64_t m = 0; m < options_.accumulation_steps && position_ < static_cast<std::int64_t>(examples); ++m) {
        const std::size_t global_begin = static_cast<std::size_t>(position_);
        const std::size_t global_count = std::min(global_batch, examples - global_begin);
        position_ += static_cast<std::int64_t>(global_count);
        ++micro_batches;
        const std::size_t begin = global_begin + std::min(global_count, batch_size * static_cast<std::size_t>(rank_));
        const std::size_t count = std::min(batch_size, global_begin + global_count - begin);
        if (count == 0) continue;  // the epoch's last global micro-batch leaves this rank nothing
        const std::span<const std::size_t> indices(order.data() + begin, count);
        batches.push_back(train_data.batch(indices, static_cast<std::uint64_t>(epoch_)));
        const Batch<T, B>& b = batches.back();
        trainer_detail::check_batch(b, train_groups,
                                    "mote: train: the training batch of epoch " + std::to_string(epoch_) + ", examples " +
                                        std::to_string(begin) + ".." + std::to_string(begin + count - 1) + " of its order");
        counted.push_back(trainer_detail::counted_targets(b));
        step_counts[0] += counted.back();
        step_counts[1] += static_cast<double>(b.tokens > 0 ? b.tokens : b.ids.numel());
        step_counts[2] += static_cast<double>(b.examples > 0 ? b.examples : static_cast<std::int64_t>(count));
      }
      const auto data_done = Clock::now();
      timing.data_s += std::chrono::duration<double>(data_done - step_start).count();
      sum_over_ranks(std::span<double>(step_counts), timing);
      const double step_targets = step_counts[0];
      const auto step_tokens = static_cast<std::int64_t>(step_counts[1]);
      const auto step_examples = static_cast<std::int64_t>(step_counts[2]);

      // Each micro-batch's loss is weighted by its share of the step's targets over all ranks, so the
      // sum of every rank's gradients is the gradient of the step's mean loss.
      double step_loss = 0;
      std::size_t last_backward = batches.size();
      for (std::size_t m = 0; m < batches.size(); ++m)
        if (counted[m] > 0) last_backward = m;
      if (buckets_) buckets_->begin_step();
      for (std::size_t m = 0; m < batches.size(); ++m) {
        if (counted[m] == 0) continue;  // no target counts: no loss, no gradient
        const Batch<T, B>& b = batches[m];
        const double share = counted[m] / step_targets;
        const V loss = model_->loss(b.ids, b.targets, loss_options(b, adapters_->context_for(b.routes)));
        step_loss += static_cast<double>(loss.value().item()) * share;
        V objective = autograd::scale(loss, static_cast<T>(share));
        if constexpr (requires { { adapters_->aux_loss() } -> std::convertible_to<V>; }) {
          // Routers with a balancing loss (top-k): its mean over the micro-batches of every rank joins the objective.
          if (const V aux = adapters_->aux_loss(); aux.defined())
            objective = objective + autograd::scale(aux, static_cast<T>(1.0 / static_cast<double>(micro_batches * world_)));
        }
        // The last backward of the step announces each finished gradient, so its sum across ranks starts at once.
        objective.backward({.on_leaf_ready = buckets_ && m == last_backward ? buckets_->hook() : nullptr});
      }
      const auto backward_done = Clock::now();
      timing.forward_backward_s += std::chrono::duration<double>(backward_done - data_done).count();
      if (buckets_) {
        buckets_->finish();  // waits for the sums the hook started during backward, and starts the rest
        timing.communication_s += buckets_->last_wait_s();
        std::array<double, 1> loss_sum{step_loss};
        sum_over_ranks(std::span<double>(loss_sum), timing);
        step_loss = loss_sum[0];
      }
      const auto optimizer_start = Clock::now();

      const double grad_norm = optim::clip_grad_norm(params_, options_.max_grad_norm);
      if (!std::isfinite(grad_norm))
        throw nan_error("mote: train: optimizer step " + std::to_string(step_ + 1) + " has a non-finite gradient norm (" +
                        io::json::Value::format_double(grad_norm) + ", loss " + io::json::Value::format_double(step_loss) +
                        "); lower lr or check the data; the last checkpoint is intact");
      const double lr = schedule.lr_at(step_);
      optimizer_.set_lr(static_cast<T>(lr));
      optimizer_.step();
      optimizer_.zero_grad();
      timing.optimizer_s += seconds_since(optimizer_start);
      const double step_seconds = seconds_since(step_start);

      ++step_;
      tokens_ += step_tokens;
      result.tokens += step_tokens;
      result.last_loss = step_loss;
      const double elapsed = elapsed_before + seconds_since(fit_start);
      const double epoch_progress = static_cast<double>(epoch_) + static_cast<double>(position_) / static_cast<double>(examples);
      if (metrics_.is_open() && (step_ % options_.metrics_every == 0 || step_ == total_steps_)) {
        io::json::Value line = io::json::Value::object({{"kind", "train"},
                                                        {"step", step_},
                                                        {"epoch", epoch_progress},
                                                        {"loss", step_loss},
                                                        {"lr", lr},
                                                        {"grad_norm", grad_norm},
                                                        {"tokens", step_tokens},
                                                        {"tokens_per_s", step_seconds > 0 ? static_cast<double>(step_tokens) / step_seconds : 0.0},
                                                        {"elapsed_s", elapsed}});
        if (const MemoryUse memory = backend_traits<B>::memory_use(); memory.known) {
          line.set("memory_live_bytes", static_cast<std::int64_t>(memory.live_bytes));
          line.set("memory_peak_bytes", static_cast<std::int64_t>(memory.peak_bytes));
        }
        if (buckets_) {
          line.set("world_size", world_);
          line.set("all_reduced_bytes", buckets_->bytes_per_step());
          line.set("gradient_sum_wait_s", buckets_->last_wait_s());
        }
        metrics_.append(std::move(line));
      }
      const double run_seconds = seconds_since(fit_start);
      const auto done_here = static_cast<double>(step_ - first_step);
      progress.step({.step = step_,
                     .total = total_steps_,
                     .epoch = epoch_progress,
                     .loss = step_loss,
                     .lr = lr,
                     .tokens_per_s = step_seconds > 0 ? static_cast<double>(step_tokens) / step_seconds : 0.0,
                     .eta_s = run_seconds / done_here * static_cast<double>(total_steps_ - step_)});
      if (options_.on_step)
        options_.on_step(StepReport{step_, total_steps_, epoch_progress, step_loss, lr, grad_norm, step_tokens, step_examples});

      if (eval_data && options_.eval_every > 0 && step_ % options_.eval_every == 0) {
        result.last_eval = evaluate_and_log(*eval_data, timing, progress, epoch_progress, elapsed_before, fit_start);
        evaluated_at = step_;
      }
      // The last step's checkpoint waits for the final evaluation, so that it records its metrics line too.
      if (has_output && options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0 && step_ < total_steps_) {
        result.last_checkpoint = save_checkpoint(timing, progress, elapsed_before + seconds_since(fit_start));
        saved_at = step_;
      }
    }

    result.interrupted = step_ < total_steps_;
    result.completed = !result.interrupted;
    if (result.interrupted && signals) result.signal = StopSignalGuard::caught();
    if (result.completed && eval_data && evaluated_at != step_) {
      const double epoch_progress = static_cast<double>(epoch_) + static_cast<double>(position_) / static_cast<double>(examples);
      result.last_eval = evaluate_and_log(*eval_data, timing, progress, epoch_progress, elapsed_before, fit_start);
    }
    if (has_output)
      result.last_checkpoint = saved_at != step_ ? save_checkpoint(timing, progress, elapsed_before + seconds_since(fit_start))
                                                 : options_.output_dir / ("checkpoint-" + std::to_string(step_));
    progress.finish();
    if (result.interrupted)
      progress.note("stopped at step " + std::to_string(step_) + " of " + std::to_string(total_steps_) +
                    (result.last_checkpoint.empty() ? std::string() : "; resume from " + result.last_checkpoint.string()));

    result.step = step_;
    result.total_steps = total_steps_;
    result.steps_run = step_ - first_step;
    result.epoch = epoch_;
    result.position = position_;
    timing.total_s = seconds_since(fit_start);
    timing.other_s = std::max(0.0, timing.total_s - timing.data_s - timing.forward_backward_s - timing.optimizer_s -
                                       timing.eval_s - timing.checkpoint_s - timing.communication_s);
    return result;
  }

  nn::LossOptions<T, B> loss_options(const Batch<T, B>& b, std::shared_ptr<const nn::AdapterContext> context) const {
    return nn::LossOptions<T, B>{.ignore_index = -100,
                                 .loss_mask = b.loss_weights.defined() ? &b.loss_weights : nullptr,
                                 .positions = b.positions.defined() ? &b.positions : nullptr,
                                 .mask = b.mask.defined() ? &b.mask : nullptr,
                                 .adapter = std::move(context)};
  }

  // ---------------------------------------------------------------- evaluation

  template <class Data>
  EvalResult evaluate_with(const Data& data, const std::vector<RngStreamState>* streams) {
    const std::vector<std::string> names = data.group_names();
    EvalResult out;
    for (const auto& n : names) out.groups.push_back({n, 0.0, 0.0});
    std::vector<double> group_sum(names.size(), 0.0);
    double sum = 0;
    trainer_detail::EvalScope<Adapters> scope(*adapters_, streams);
    autograd::no_grad no_grad;
    const std::size_t n = data.size();
    const auto batch_size = static_cast<std::size_t>(options_.eval_batch_size > 0 ? options_.eval_batch_size : options_.batch_size);
    std::vector<std::size_t> indices;
    // Data parallel: rank r evaluates batches r, r + world, ...; the sums are added across ranks at the end.
    for (std::size_t begin = batch_size * static_cast<std::size_t>(rank_); begin < n; begin += batch_size * static_cast<std::size_t>(world_)) {
      const std::size_t count = std::min(batch_size, n - begin);
      indices.resize(count);
      std::iota(indices.begin(), indices.end(), begin);
      const Batch<T, B> b = data.batch(std::span<const std::size_t>(indices), 0);
      trainer_detail::check_batch(b, names.size(),
                                  "mote: train: the evaluation batch of examples " + std::to_string(begin) + ".." +
                                      std::to_string(begin + count - 1));
      const double weight = trainer_detail::counted_targets(b);
      if (weight == 0) continue;
      const V logits = model_->logits(b.ids, nn::ForwardOptions<B>{.positions = b.positions.defined() ? &b.positions : nullptr,
                                                                   .mask = b.mask.defined() ? &b.mask : nullptr,
                                                                   .adapter = adapters_->context_for(b.routes)});
      const Tensor<T, B>* weights = b.loss_weights.defined() ? &b.loss_weights : nullptr;
      sum += static_cast<double>(autograd::cross_entropy(logits, b.targets, {.ignore_index = -100, .loss_mask = weights}).value().item()) * weight;
      out.targets += weight;
      if (b.target_groups.empty() || names.empty()) continue;
      // Per group: the same logits, each time with a loss mask that keeps only that group's targets.
      const std::vector<std::int32_t> targets = b.targets.contiguous().to_vector();
      const std::vector<T> token_weights = weights ? weights->contiguous().to_vector() : std::vector<T>();
      for (std::size_t g = 0; g < names.size(); ++g) {
        std::vector<T> mask(targets.size(), T(0));
        double group_weight = 0;
        for (std::size_t i = 0; i < targets.size(); ++i) {
          if (targets[i] == -100 || b.target_groups[i] != static_cast<std::int32_t>(g)) continue;
          mask[i] = token_weights.empty() ? T(1) : token_weights[i];
          group_weight += static_cast<double>(mask[i]);
        }
        if (group_weight == 0) continue;
        const Tensor<T, B> group_mask = Tensor<T, cpu>::from_vector(b.targets.shape(), mask).template to<B>();
        const double loss = static_cast<double>(
            autograd::cross_entropy(logits, b.targets, {.ignore_index = -100, .loss_mask = &group_mask}).value().item());
        group_sum[g] += loss * group_weight;
        out.groups[g].targets += group_weight;
      }
    }
    if (world_ > 1) {
      std::vector<double> sums{sum, out.targets};
      for (std::size_t g = 0; g < names.size(); ++g) {
        sums.push_back(group_sum[g]);
        sums.push_back(out.groups[g].targets);
      }
      comm_.all_reduce_sum(std::span<double>(sums));
      sum = sums[0];
      out.targets = sums[1];
      for (std::size_t g = 0; g < names.size(); ++g) {
        group_sum[g] = sums[2 + 2 * g];
        out.groups[g].targets = sums[3 + 2 * g];
      }
    }
    out.loss = out.targets > 0 ? sum / out.targets : 0.0;
    for (std::size_t g = 0; g < names.size(); ++g)
      out.groups[g].loss = out.groups[g].targets > 0 ? group_sum[g] / out.groups[g].targets : 0.0;
    return out;
  }

  template <class EvalData>
  EvalResult evaluate_and_log(const EvalData& data, Timing& timing, ProgressReporter& progress, double epoch_progress,
                              double elapsed_before, trainer_detail::Clock::time_point fit_start) {
    const auto start = trainer_detail::Clock::now();
    EvalResult r = evaluate_with(data, &eval_streams_);
    io::json::Value groups = io::json::Value::object();
    std::string line = "eval at step " + std::to_string(step_) + ": loss " + io::json::Value::format_double(r.loss);
    for (const auto& g : r.groups) {
      groups.set(g.name, g.targets > 0 ? io::json::Value(g.loss) : io::json::Value());
      if (g.targets > 0) line += ", " + g.name + " " + io::json::Value::format_double(g.loss);
    }
    if (metrics_.is_open())
      metrics_.append(io::json::Value::object({{"kind", "eval"},
                                               {"step", step_},
                                               {"epoch", epoch_progress},
                                               {"eval_loss", r.loss},
                                               {"eval_targets", r.targets},
                                               {"eval_group_loss", std::move(groups)},
                                               {"elapsed_s", elapsed_before + trainer_detail::seconds_since(fit_start)}}));
    progress.note(line);
    timing.eval_s += trainer_detail::seconds_since(start);
    return r;
  }

  // ---------------------------------------------------------------- checkpoints

  io::json::Value options_json() const {
    // The global micro-batch: a run resumes under any world size that keeps it.
    return io::json::Value::object({{"batch_size", options_.batch_size * world_},
                                    {"accumulation_steps", options_.accumulation_steps},
                                    {"shuffle", options_.shuffle},
                                    {"seed", checkpoint_detail::hex64(options_.seed)}});
  }

  std::filesystem::path save_checkpoint(Timing& timing, ProgressReporter& progress, double elapsed) {
    const auto start = trainer_detail::Clock::now();
    const std::filesystem::path target = options_.output_dir / ("checkpoint-" + std::to_string(step_));
    // Every rank's random streams, so that a resume under the same world size continues each rank exactly.
    const std::vector<std::string> rank_streams_json =
        world_ > 1 ? comm_.all_gather(io::json::dump(streams_to_json(adapters_->random_state()))) : std::vector<std::string>();
    if (rank_ != 0) {  // the adapters and optimizer state are identical on every rank: rank 0 writes them
      comm_.barrier();
      timing.checkpoint_s += trainer_detail::seconds_since(start);
      return target;
    }
    io::json::Value rank_streams_value = io::json::Value::array();
    for (const std::string& text : rank_streams_json) rank_streams_value.push_back(io::json::parse(text));
    io::StagedDirectory staged(target, "checkpoint '" + target.string() + "'");
    adapters_->save(staged.path() / "adapters");
    optimizer_.save_state(staged.path() / "optimizer.bin");
    io::json::Value state = io::json::Value::object({{"format", trainer_state_format},
                                                     {"version", trainer_state_version},
                                                     {"step", step_},
                                                     {"total_steps", total_steps_},
                                                     {"epoch", epoch_},
                                                     {"position", position_},
                                                     {"tokens", tokens_},
                                                     {"elapsed_s", elapsed},
                                                     {"metrics_bytes", metrics_.is_open() ? metrics_.size() : std::uint64_t{0}},
                                                     {"random_streams", streams_to_json(adapters_->random_state())},
                                                     {"eval_streams", streams_to_json(eval_streams_)},
                                                     {"options", options_json()},
                                                     {"world_size", world_},
                                                     {"fingerprint", fingerprint_}});
    if (world_ > 1) state.set("rank_random_streams", std::move(rank_streams_value));
    io::json::write_file(staged.path() / "trainer_state.json", state);
    staged.publish();
    if (options_.keep_checkpoints > 0) {
      auto all = list_checkpoints(options_.output_dir);
      while (static_cast<std::int64_t>(all.size()) > options_.keep_checkpoints) {
        std::error_code ignored;  // a checkpoint we cannot delete only costs disk space
        std::filesystem::remove_all(all.front().path, ignored);
        all.erase(all.begin());
      }
    }
    progress.note("saved " + target.string());
    comm_.barrier();  // no rank returns before the checkpoint exists
    timing.checkpoint_s += trainer_detail::seconds_since(start);
    return target;
  }

  // Reads the newest checkpoint, checks all of it against this run before changing anything (files or
  // memory), then loads it; returns the metrics-file length to keep. No checkpoint: a fresh start.
  std::uint64_t resume(std::size_t examples) {
    namespace fs = std::filesystem;
    const auto folders = list_checkpoints(options_.output_dir);
    if (folders.empty()) return 0;
    const fs::path dir = folders.back().path;
    const fs::path file = dir / "trainer_state.json";
    if (!fs::exists(file)) throw io_error("mote: train: cannot resume from '" + dir.string() + "': it has no trainer_state.json");
    const io::json::Value state = io::json::parse_file(file);
    if (!state.is_object()) state.fail("expected a JSON object");
    const auto fail = [&](const std::string& what) {
      throw value_error("mote: train: cannot resume from '" + file.string() + "': " + what);
    };
    if (state.at("format").as_string() != trainer_state_format)
      fail("format is \"" + state.at("format").as_string() + "\", expected \"" + trainer_state_format + "\"");
    if (state.at("version").as_int64() != trainer_state_version)
      fail("version is " + std::to_string(state.at("version").as_int64()) + ", expected " + std::to_string(trainer_state_version));
    require_same(state.at("fingerprint"), fingerprint_, "fingerprint", file,
                 "the folder holds a run of another model, other adapters or other data");
    require_same(state.at("options"), options_json(), "options", file,
                 "the batch layout and data order must match the run being resumed (batch_size is the global micro-batch: " +
                     std::to_string(options_.batch_size) + " per rank x " + std::to_string(world_) +
                     (world_ == 1 ? " rank" : " ranks") + " here; any world size that keeps it resumes)");
    const std::int64_t step = state.at("step").as_int64(), epoch = state.at("epoch").as_int64(),
                       position = state.at("position").as_int64(), tokens = state.at("tokens").as_int64();
    if (step < 0 || epoch < 0 || position < 0 || position > static_cast<std::int64_t>(examples) || tokens < 0)
      fail("step " + std::to_string(step) + ", epoch " + std::to_string(epoch) + ", position " + std::to_string(position) +
           " are not a place in a dataset of " + std::to_string(examples) + " examples");
    // This rank's streams: its own when the checkpoint's world size is this one, else drawn from rank 0's.
    const io::json::Value* per_rank = state.find("rank_random_streams");
    const bool same_world = world_ > 1 && per_rank && per_rank->is_array() && per_rank->size() == static_cast<std::size_t>(world_);
    const std::vector<RngStreamState> streams =
        same_world ? streams_from_json((*per_rank)[static_cast<std::size_t>(rank_)])
                   : rank_ == 0 ? streams_from_json(state.at("random_streams")) : rank_streams(streams_from_json(state.at("random_streams")), rank_);
    const std::vector<RngStreamState> eval_streams = streams_from_json(state.at("eval_streams"));
    const std::vector<RngStreamState> mine = adapters_->random_state();
    for (const auto* saved : {&streams, &eval_streams}) {
      const char* field = saved == &streams ? "random_streams" : "eval_streams";
      if (saved->size() != mine.size())
        fail(std::string(field) + " has " + std::to_string(saved->size()) + " streams, expected " + std::to_string(mine.size()));
      for (std::size_t i = 0; i < mine.size(); ++i)
        if ((*saved)[i].name != mine[i].name)
          fail(std::string(field) + " stream " + std::to_string(i) + " is \"" + (*saved)[i].name + "\", expected \"" + mine[i].name + "\"");
    }
    const std::int64_t metrics_bytes = state.at("metrics_bytes").as_int64();
    const fs::path metrics_path = options_.output_dir / "metrics.jsonl";
    if (options_.write_metrics && (metrics_bytes < 0 || static_cast<std::uint64_t>(metrics_bytes) > MetricsFile::length_of(metrics_path)))
      fail("metrics_bytes is " + std::to_string(metrics_bytes) + ", but '" + metrics_path.string() + "' holds " +
           std::to_string(MetricsFile::length_of(metrics_path)) + " bytes; expected at least as many as the checkpoint recorded");
    const double elapsed = state.at("elapsed_s").as_double();
    for (const char* part : {"adapters", "optimizer.bin"})
      if (!fs::exists(dir / part)) throw io_error("mote: train: cannot resume from '" + dir.string() + "': it has no " + part);

    optimizer_.load_state(dir / "optimizer.bin");
    adapters_->load(dir / "adapters");
    adapters_->set_random_state(streams);
    eval_streams_ = eval_streams;
    step_ = step;
    epoch_ = epoch;
    position_ = position;
    tokens_ = tokens;
    elapsed_before_ = elapsed;
    resumed_ = true;
    resumed_from_ = step;
    if (rank_ == 0)
      for (const auto& stale : stale_staging_folders(options_.output_dir)) {
        std::error_code ignored;
        fs::remove_all(stale, ignored);
      }
    return static_cast<std::uint64_t>(metrics_bytes);
  }

  Model* model_;
  Adapters* adapters_;
  TrainerOptions options_;
  optim::AdamW<T, B> optimizer_;
  std::vector<V> params_;
  Comm comm_;
  int world_ = 1, rank_ = 0;
  std::unique_ptr<dist::GradientBuckets<T, B, Comm>> buckets_;  // only with more than one rank
  std::atomic<bool> stop_requested_{false};
  bool fitted_ = false;
  bool resumed_ = false;
  std::int64_t resumed_from_ = -1;
  std::int64_t step_ = 0, epoch_ = 0, position_ = 0, tokens_ = 0, total_steps_ = 0;
  double elapsed_before_ = 0;
  std::vector<RngStreamState> eval_streams_;
  io::json::Value fingerprint_;
  MetricsFile metrics_;
};

}  // namespace mote::train
