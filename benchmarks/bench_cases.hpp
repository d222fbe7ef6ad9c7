#pragma once
// One measurement per process, for benchmarks/compare.py: `mote_bench --case NAME` builds the model,
// runs `warmup` untimed and `reps` timed repetitions and prints one line, `RESULT {json}`, with each
// repetition's seconds, every training step's loss (warm-up included), and the process's resident
// memory before the model existed (idle) and at its peak. benchmarks/pytorch_gpt2.py and
// pytorch_lora.py measure the same cases with the same names, shapes and initialization.
//   c1_train, c2_train        forward, loss, backward and AdamW (lr 1e-4) at 4 x 64 (C1), 8 x 128 (C2)
//   c1_forward, c2_forward    the logits of every position, under no_grad
//   c1_decode_bN, c2_decode_bN  greedy decoding of `new_tokens` tokens after a 32-token prompt, for N
//                             sequences, the prompt's forward included
//   c2_lora, c2_mote          rank 16 (alpha 32) on every linear layer of a frozen C2: one LoRA, or
//                             MoTE's three step experts and the shared expert
#include <mote/mote.hpp>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace mote_bench {

// A field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: the peak so far); -1 if absent.
inline long status_kib(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  return -1;
}

struct CaseRun {
  std::string name;
  double tokens = 0;             // tokens per timed repetition
  std::vector<double> seconds;   // each timed repetition
  std::vector<double> losses;    // every training step's loss, warm-up included
  long idle_kib = 0, peak_kib = 0;
  double ln_vocab = 0;
};

inline std::string json_numbers(const std::vector<double>& v) {
  std::string out = "[";
  char buf[40];
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%s%.9g", i ? "," : "", v[i]);
    out += buf;
  }
  return out + "]";
}

inline void print_result(const CaseRun& r) {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  std::printf(
      "RESULT {\"side\":\"mote\",\"case\":\"%s\",\"tokens\":%.0f,\"seconds\":%s,\"losses\":%s,\"ln_vocab\":%.9g,"
      "\"idle_kib\":%ld,\"peak_kib\":%ld,\"threads\":%d,\"omp_wait_policy\":\"%s\"}\n",
      r.name.c_str(), r.tokens, json_numbers(r.seconds).c_str(), json_numbers(r.losses).c_str(), r.ln_vocab, r.idle_kib,
      r.peak_kib, mote::backend::gemm_detail::max_threads(), policy ? policy : "");
  std::fflush(stdout);
}

// Times `reps` calls of fn after `warmup` untimed ones.
inline void time_reps(CaseRun& run, int warmup, int reps, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  for (int i = 0; i < reps; ++i) {
    const auto start = clock_type::now();
    fn();
    run.seconds.push_back(std::chrono::duration<double>(clock_type::now() - start).count());
  }
}

struct Batch {
  mote::Tensor<std::int32_t> ids, targets;
  std::vector<std::int32_t> ids_host;
};

// Uniform random ids and targets, so that a model initialized as GPT-2 starts at a loss near ln V.
inline Batch random_batch(std::int64_t vocab, std::int64_t batch, std::int64_t seq) {
  mote::Rng rng(3);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(batch * seq)), targets(ids.size());
  for (auto& v : ids) v = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(vocab)));
  for (auto& v : targets) v = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(vocab)));
  return {mote::Tensor<std::int32_t>::from_vector({batch, seq}, ids),
          mote::Tensor<std::int32_t>::from_vector({batch, seq}, targets), ids};
}

template <mote::nn::Config C>
void train_case(CaseRun& run, std::int64_t batch, std::int64_t seq, int warmup, int reps) {
  mote::nn::CausalLM<C, float> model(std::uint64_t{1});
  const Batch data = random_batch(C.vocab, batch, seq);
  mote::optim::AdamW<float> opt(model.parameters(), {.lr = 1e-4f});
  run.tokens = double(batch * seq);
  time_reps(run, warmup, reps, [&] {
    opt.zero_grad();
    auto loss = model.loss(data.ids, data.targets);
    run.losses.push_back(double(loss.item()));
    loss.backward();
    opt.step();
  });
}

template <mote::nn::Config C>
void forward_case(CaseRun& run, std::int64_t batch, std::int64_t seq, int warmup, int reps) {
  mote::nn::CausalLM<C, float> model(std::uint64_t{1});
  const Batch data = random_batch(C.vocab, batch, seq);
  run.tokens = double(batch * seq);
  time_reps(run, warmup, reps, [&] {
    mote::no_grad off;
    auto logits = model.logits(data.ids);
  });
}

// Greedy decoding of new_tokens per sequence after a 32-token prompt, as nn::generate runs it.
template <mote::nn::Config C>
void decode_case(CaseRun& run, std::int64_t batch, std::int64_t new_tokens, int warmup, int reps) {
  const std::int64_t prompt_len = 32;
  mote::nn::CausalLM<C, float> model(std::uint64_t{1});
  const Batch data = random_batch(C.vocab, batch, prompt_len);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::int64_t b = 0; b < batch; ++b)
    prompts.emplace_back(data.ids_host.begin() + b * prompt_len, data.ids_host.begin() + (b + 1) * prompt_len);
  run.tokens = double(batch * new_tokens);
  mote::nn::GenerateOptions options;  // greedy, no stop tokens
  options.max_new_tokens = new_tokens;
  time_reps(run, warmup, reps, [&] {
    const auto out = mote::nn::generate(model, prompts, options);
    for (const auto& seq : out)
      if (static_cast<std::int64_t>(seq.size()) != new_tokens)
        throw std::runtime_error("mote_bench: generate returned " + std::to_string(seq.size()) + " tokens, not " +
                                 std::to_string(new_tokens));
  });
}

// Each sequence: three contiguous step runs of 32..56 tokens (the last takes the rest of 128).
inline std::vector<std::int32_t> step_id_layout(std::int64_t batch, std::int64_t seq) {
  mote::Rng rng(5);
  std::vector<std::int32_t> steps;
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto first = 32 + static_cast<std::int64_t>(rng.below(25)), second = 32 + static_cast<std::int64_t>(rng.below(25));
    for (std::int64_t i = 0; i < seq; ++i) steps.push_back(i < first ? 0 : i < first + second ? 1 : 2);
  }
  return steps;
}

// A frozen C2 with adapters of `Router` on every linear layer, B drawn from N(0, 0.02) instead of
// zeros so that every gradient is non-trivial, as in steady-state training.
template <class Router>
struct AdapterStep {
  using Model = mote::nn::CausalLM<c2_config, float>;
  Model model{std::uint64_t{1}};
  mote::lora::ExpertSet<Router, Model> experts;
  mote::optim::AdamW<float> opt;
  explicit AdapterStep(const mote::lora::Options& options)
      : experts(model, options), opt(experts.parameters(), {.lr = 1e-4f}) {
    mote::Rng rng(7);
    for (auto& [name, p] : experts.named_parameters())
      if (name.find("lora_B") != std::string::npos)
        p.mutable_value().copy_from(mote::Tensor<float>::normal(p.shape(), 0.0, 0.02, rng));
  }
  // One step; returns its loss.
  double run(const mote::Tensor<std::int32_t>& ids, const mote::Tensor<std::int32_t>& targets,
             const mote::Tensor<std::int32_t>* step_ids) {
    opt.zero_grad();
    mote::nn::LossOptions<float> options;
    if constexpr (mote::lora::is_step_router<Router>) options.adapter = experts.route(*step_ids);
    auto loss = model.loss(ids, targets, options);
    const double value = double(loss.item());
    loss.backward();
    opt.step();
    return value;
  }
};

template <class Router>
void adapter_case(CaseRun& run, int warmup, int reps) {
  const std::int64_t batch = 8, seq = 128;
  const Batch data = random_batch(c2_config.vocab, batch, seq);
  const auto step_ids = mote::Tensor<std::int32_t>::from_vector({batch, seq}, step_id_layout(batch, seq));
  AdapterStep<Router> step(mote::lora::Options{.rank = 16, .alpha = 32});
  run.tokens = double(batch * seq);
  time_reps(run, warmup, reps, [&] { run.losses.push_back(step.run(data.ids, data.targets, &step_ids)); });
}

// Runs the named case and prints its RESULT line; returns 0, 2 for an unknown name, or 3 when the
// first training loss is not within 10% of ln V (a model not initialized as GPT-2 is).
inline int run_case(const std::string& name, int warmup, int reps, std::int64_t new_tokens) {
#ifdef _OPENMP
#pragma omp parallel
  { (void)omp_get_thread_num(); }  // the team exists before the idle footprint is read
#endif
  CaseRun run;
  run.name = name;
  run.idle_kib = status_kib("VmRSS");
  const bool c1 = name.rfind("c1_", 0) == 0, c2 = name.rfind("c2_", 0) == 0;
  const std::string what = name.size() > 3 ? name.substr(3) : "";
  run.ln_vocab = std::log(double(c1 ? mote::presets::gpt2.vocab : c2_config.vocab));
  std::int64_t decode_batch = 0;
  if (what.rfind("decode_b", 0) == 0) decode_batch = std::stoll(what.substr(8));
  if (c1 && what == "train") train_case<mote::presets::gpt2>(run, 4, 64, warmup, reps);
  else if (c2 && what == "train") train_case<c2_config>(run, 8, 128, warmup, reps);
  else if (c1 && what == "forward") forward_case<mote::presets::gpt2>(run, 4, 64, warmup, reps);
  else if (c2 && what == "forward") forward_case<c2_config>(run, 8, 128, warmup, reps);
  else if (c1 && decode_batch > 0) decode_case<mote::presets::gpt2>(run, decode_batch, new_tokens, warmup, reps);
  else if (c2 && decode_batch > 0) decode_case<c2_config>(run, decode_batch, new_tokens, warmup, reps);
  else if (c2 && what == "lora") adapter_case<mote::lora::SingleLoRA<>>(run, warmup, reps);
  else if (c2 && what == "mote") adapter_case<mote::lora::StepRouter<3>>(run, warmup, reps);
  else {
    std::fprintf(stderr, "mote_bench: unknown case '%s' (c1_ or c2_ then train, forward or decode_bN; c2_lora, c2_mote)\n",
                 name.c_str());
    return 2;
  }
  run.peak_kib = status_kib("VmHWM");
  print_result(run);
  if (!run.losses.empty() && !(std::abs(run.losses.front() - run.ln_vocab) <= 0.1 * run.ln_vocab)) {
    std::fprintf(stderr, "mote_bench: %s: first loss %.4f is not within 10%% of ln V = %.4f\n", name.c_str(),
                 run.losses.front(), run.ln_vocab);
    return 3;
  }
  return 0;
}

}  // namespace mote_bench
