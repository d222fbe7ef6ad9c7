// MoTE's single pass per chain against the paper's expanded data (every partial chain as its own
// sequence, Appendix B), on the same chains for the same epochs, at shape C2 with MoTE rank 16 on
// every linear layer and the stage-token rows trained; and the trainer's overhead per step.
//
// Usage: mote_aligncot_bench [--chains N] [--epochs E] [--rounds R] [--quick]
//
// The chains are synthetic: steps present at the paper's rates (analysis 71.5%, guidance 61.4%, the
// answer always), lengths drawn per chain (question 16-40 tokens, each step 32-64, the answer 64-128),
// random letters under a byte-level tokenizer. Each round trains a fresh model from the same seed once
// each way (the order alternates between rounds) and prints the wall time of the fit, the tokens it
// processed, and the final per-stage losses on held-out chains, evaluated the same way for both. A
// discarded warm-up fit runs first. Beside the time ratio stands the ratio of the work: the token
// positions the forward passes process (padding included, as the products compute it), which the
// time ratio should track; it is an estimate, not a bound (attention grows with row length).
#include <mote/mote.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "bench_chains.hpp"
#include "bench_common.hpp"

namespace {

using namespace mote;
using mote_bench::median;
namespace ac = mote::aligncot;
using mote_bench::Chain;
using mote_bench::byte_tokenizer;
using mote_bench::synthetic_chains;
using Model = nn::CausalLM<mote_bench::c2_config, float>;

struct Run {
  double seconds = 0, overhead = 0, tokens = 0, positions = 0, steps = 0;
  train::EvalResult eval;
};

Run train_once(const std::vector<ac::Chain>& chains, const std::vector<ac::Chain>& held_out, bool expanded,
               std::int64_t epochs) {
  io::Tokenizer tok = byte_tokenizer();
  const ac::StageTokenIds ids = ac::stage_token_ids<Chain>(tok);
  Model model(1);
  auto experts = ac::attach<lora::StepRouter<3>>(model, Chain{}, ids, {.rank = 16, .alpha = 32, .seed = 2});
  const ac::RowFormat format{.eos_id = 0};
  const std::int64_t row = 512;
  ac::ChainDataset<Chain> data(tok, ids, chains, format, mote_bench::c2_config.max_seq,
                               {.p_skip = 0.1, .seed = 3, .expanded = expanded, .row_length = row});
  ac::ChainDataset<Chain> eval(tok, ids, held_out, format, mote_bench::c2_config.max_seq, {.row_length = row});
  train::Trainer trainer(model, experts,
                         {.epochs = epochs, .batch_size = 16, .seed = 4, .lr = 1e-3, .warmup_steps = 2,
                          .progress = train::Progress::off, .handle_signals = false});
  const train::FitResult fit = trainer.fit(data);
  // The positions the fit's batches held, rebuilt in the trainer's order (its seed, 16 chains a step).
  double positions = 0;
  for (std::int64_t e = 0; e < epochs; ++e) {
    const auto order = train::trainer_detail::epoch_order(chains.size(), 4, e, true);
    for (std::size_t begin = 0; begin < order.size(); begin += 16) {
      const std::span<const std::size_t> picked(order.data() + begin, std::min<std::size_t>(16, order.size() - begin));
      positions += static_cast<double>(data.batch(picked, static_cast<std::uint64_t>(e)).ids.numel());
    }
  }
  Run r;
  const train::Timing& t = fit.timing;
  r.seconds = t.total_s;
  r.overhead = (t.total_s - t.forward_backward_s - t.optimizer_s - t.eval_s - t.checkpoint_s) /
               std::max(1e-9, t.total_s - t.eval_s - t.checkpoint_s);
  r.tokens = static_cast<double>(fit.tokens);
  r.steps = static_cast<double>(fit.steps_run);
  r.positions = positions;
  r.eval = trainer.evaluate(eval);
  return r;
}

void print_run(const char* side, int round, const Run& r) {
  std::printf("round %d %-11s %7.2f s  %8.0f tokens  %5.0f tok/s  overhead %5.2f%%  eval", round, side, r.seconds, r.tokens,
              r.tokens / r.seconds, 100.0 * r.overhead);
  for (const auto& g : r.eval.groups) std::printf("  %s %.4f", g.name.c_str(), g.loss);
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t chains = 64;
  std::int64_t epochs = 2;
  int rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      chains = 16;
      epochs = 1;
      rounds = 1;
    } else if (arg == "--chains" && i + 1 < argc) {
      chains = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--epochs" && i + 1 < argc) {
      epochs = std::strtoll(argv[++i], nullptr, 10);
    } else if (arg == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: mote_aligncot_bench [--chains N] [--epochs E] [--rounds R] [--quick]\n");
      return 2;
    }
  }
  const auto train_chains = synthetic_chains(chains, 1), held_out = synthetic_chains(16, 2);
  std::printf("C2 (6 layers, d 384, vocab 8192), MoTE rank 16 on every linear layer + stage-token rows; %zu chains, "
              "%lld epochs, 16 chains per step, rows of 512 tokens, p_skip 0.1 (single pass)\n",
              chains, static_cast<long long>(epochs));
  std::vector<double> single_s, expanded_s, overhead;
  Run single, expanded;
  (void)train_once(synthetic_chains(16, 9), held_out, false, 1);  // warm-up: first-touch allocations, thread start
  for (int round = 0; round < rounds; ++round) {
    for (int k = 0; k < 2; ++k) {
      const bool do_expanded = (k == 1) != (round % 2 == 1);
      const Run r = train_once(train_chains, held_out, do_expanded, epochs);
      print_run(do_expanded ? "expanded" : "single pass", round, r);
      (do_expanded ? expanded_s : single_s).push_back(r.seconds);
      overhead.push_back(r.overhead);
      (do_expanded ? expanded : single) = r;
    }
  }
  const double ratio = median(single_s) / median(expanded_s), token_ratio = single.tokens / expanded.tokens,
               work_ratio = single.positions / expanded.positions;
  std::printf("\n| measure | single pass | expanded | ratio | expected from work | target |\n|---|---|---|---|---|---|\n");
  std::printf("| fit wall time (median of %d) | %.2f s (%.2f-%.2f) | %.2f s (%.2f-%.2f) | %.3f | %.3f | <= 0.35 |\n", rounds,
              median(single_s), *std::min_element(single_s.begin(), single_s.end()),
              *std::max_element(single_s.begin(), single_s.end()), median(expanded_s),
              *std::min_element(expanded_s.begin(), expanded_s.end()), *std::max_element(expanded_s.begin(), expanded_s.end()),
              ratio, work_ratio);
  std::printf("| tokens (without padding) | %.0f | %.0f | %.3f | | |\n", single.tokens, expanded.tokens, token_ratio);
  std::printf("| positions (with padding) | %.0f | %.0f | %.3f | | |\n", single.positions, expanded.positions, work_ratio);
  for (std::size_t g = 0; g < single.eval.groups.size(); ++g)
    std::printf("| final %s loss (held out) | %.4f | %.4f | | | |\n", single.eval.groups[g].name.c_str(), single.eval.groups[g].loss,
                expanded.eval.groups[g].loss);
  std::printf("| trainer overhead per step (max over runs) | | | %.2f%% | | <= 3%% |\n",
              100.0 * *std::max_element(overhead.begin(), overhead.end()));
  return 0;
}
