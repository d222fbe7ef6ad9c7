#pragma once
// Everything a Trainer can be told, and what it reports back: per-step reports, evaluation losses
// (overall and per group) and the result of fit() with its timing split.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "mote/train/metrics.hpp"
#include "mote/train/schedule.hpp"

namespace mote::train {

// What on_step sees after each optimizer step.
struct StepReport {
  std::int64_t step = 0;         // optimizer steps done, this one included
  std::int64_t total_steps = 0;
  double epoch = 0;              // epochs done, fractional
  double loss = 0;               // mean over the step's target tokens (weighted by Batch::loss_weights)
  double lr = 0;                 // the learning rate this step used
  double grad_norm = 0;          // global gradient norm before clipping
  std::int64_t tokens = 0;       // input tokens in the step
  std::int64_t examples = 0;     // dataset examples in the step
};

struct TrainerOptions {
  // Data and steps.
  std::int64_t epochs = 1;
  std::int64_t max_steps = 0;           // > 0: exactly this many optimizer steps, epochs or not (as in transformers)
  std::int64_t batch_size = 8;          // dataset examples per micro-batch
  std::int64_t accumulation_steps = 1;  // micro-batches per optimizer step
  bool shuffle = true;
  std::uint64_t seed = 0;  // epoch e's order is a permutation drawn from (seed, e), so a resume needs only e and the position
  // AdamW and the schedule.
  double lr = 2e-5;  // the peak learning rate
  std::int64_t warmup_steps = 0;
  Decay decay = Decay::cosine;
  double min_lr_ratio = 0.0;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double max_grad_norm = 1.0;  // global-norm clipping; 0 = none
  // Evaluation (fit with an eval Dataset).
  std::int64_t eval_every = 0;       // optimizer steps; 0 = only when training completes
  std::int64_t eval_batch_size = 0;  // 0 = batch_size
  // Output: checkpoints and metrics.jsonl (neither when output_dir is empty).
  std::filesystem::path output_dir = {};
  std::int64_t checkpoint_every = 0;  // optimizer steps; 0 = only at the end and when stopped by a signal
  std::int64_t keep_checkpoints = 2;  // how many of the newest to keep; 0 = all
  bool resume = false;                // continue from the newest checkpoint in output_dir (a fresh start when none)
  bool write_metrics = true;          // <output_dir>/metrics.jsonl
  std::int64_t metrics_every = 1;     // optimizer steps between metrics lines
  // Console and signals.
  Progress progress = Progress::automatic;
  std::int64_t log_every = 10;  // optimizer steps between plain log lines
  std::ostream* log = &std::cerr;
  bool handle_signals = true;  // SIGINT / SIGTERM: finish the step, save a checkpoint, return
  std::function<void(const StepReport&)> on_step = {};  // after each step's metrics line, before eval and checkpoint
  // Data parallel (a Trainer with a communicator): gradients are summed across ranks in buckets of
  // about this many bytes, each started as soon as backward has finished it.
  std::size_t bucket_bytes = std::size_t{8} << 20;
};

// Evaluation loss over a whole dataset: the mean over every target token (weighted like training), and
// the same per group of Batch::target_groups.
struct GroupLoss {
  std::string name;
  double loss = 0;     // 0 when the group had no target tokens
  double targets = 0;  // counted target tokens (weighted)
};
struct EvalResult {
  double loss = 0;
  double targets = 0;
  std::vector<GroupLoss> groups;
};

// Where a fit's wall time went. Trainer overhead is everything but forward_backward_s and optimizer_s.
struct Timing {
  double data_s = 0;              // Dataset::batch
  double forward_backward_s = 0;  // routing, forward, loss, backward
  double optimizer_s = 0;         // clipping, AdamW step, zero_grad
  double eval_s = 0;
  double checkpoint_s = 0;
  double communication_s = 0;  // data parallel: gradient sums and the ranks' per-step agreement
  double other_s = 0;  // the rest: bookkeeping, metrics, progress, setup and resume
  double total_s = 0;
};

struct FitResult {
  std::int64_t step = 0;          // optimizer steps done in all, those before a resume included
  std::int64_t total_steps = 0;
  std::int64_t steps_run = 0;     // in this call
  std::int64_t epoch = 0;         // the epoch the next step would draw from, and the examples of it consumed
  std::int64_t position = 0;
  bool completed = false;         // reached total_steps
  bool interrupted = false;       // stopped early by a signal or request_stop()
  int signal = 0;                 // SIGINT or SIGTERM when a signal stopped it
  std::int64_t resumed_from = -1;  // the step of the checkpoint resumed from; -1 for a fresh start
  double last_loss = 0;
  std::int64_t tokens = 0;        // input tokens trained on in this call
  std::optional<EvalResult> last_eval;
  std::filesystem::path last_checkpoint;
  Timing timing;
};

}  // namespace mote::train
