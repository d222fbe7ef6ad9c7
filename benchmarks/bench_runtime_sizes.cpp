// What run-time sizes cost: the compile-time C2 model (CausalLM<c2_config, float>) against the
// run-time sized one with C2's sizes (CausalLM<presets::gpt2_family, float>), built from the same seed
// and so holding the same weights. Both run, interleaved in rounds whose order alternates, a training
// step (forward and backward at 8 x 128 on one fixed batch) and greedy batch-1 decoding through
// nn::generate (a 32-token prompt, then one token per cached step, the graph-free path). Prints each
// side's median with its min-max over the rounds and the ratios run-time / compile-time; the target is
// >= 0.95 each.
//   mote_runtime_sizes_bench [--rounds N] [--steps N] [--tokens N]
// (defaults 5 rounds, 4 training steps and 128 decoded tokens per round; --rounds 1 --steps 1 --tokens 4
// checks that it runs).
#include <mote/mote.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_cases.hpp"  // Batch, random_batch; bench_common.hpp: c2_config, timing

namespace {

using Fixed = mote::nn::CausalLM<mote_bench::c2_config, float>;
using Sized = mote::nn::CausalLM<mote::presets::gpt2_family, float>;

struct Options {
  int rounds = 5, steps = 4;
  std::int64_t tokens = 128;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "mote_runtime_sizes_bench: %s needs a value\n", arg.c_str());
      std::exit(2);
    }
    const long value = std::atol(argv[++i]);
    if (value < 1) {
      std::fprintf(stderr, "mote_runtime_sizes_bench: %s must be a positive integer, got '%s'\n", arg.c_str(), argv[i]);
      std::exit(2);
    }
    if (arg == "--rounds") o.rounds = static_cast<int>(value);
    else if (arg == "--steps") o.steps = static_cast<int>(value);
    else if (arg == "--tokens") o.tokens = value;
    else {
      std::fprintf(stderr, "mote_runtime_sizes_bench: unknown option %s (--rounds, --steps, --tokens)\n", arg.c_str());
      std::exit(2);
    }
  }
  return o;
}

double seconds_since(mote_bench::clock_type::time_point start) {
  return std::chrono::duration<double>(mote_bench::clock_type::now() - start).count();
}

// The loss of one forward and backward pass (gradients zeroed first, no optimizer step, so every step
// sees the same weights).
template <class Model>
double train_step(Model& model, const mote_bench::Batch& data) {
  model.zero_grad();
  auto loss = model.loss(data.ids, data.targets);
  loss.backward();
  return double(loss.item());
}

// Greedy decoding of `tokens` tokens after `prompt` with nn::generate (one cached step each, the
// graph-free path, the held thread team); returns the tokens.
template <class Model>
std::vector<std::int32_t> decode(const Model& model, const std::vector<std::int32_t>& prompt, std::int64_t tokens) {
  return mote::nn::generate(model, prompt, {.max_new_tokens = tokens});
}

struct Side {
  const char* name;
  std::vector<double> train_rate, decode_rate;  // tokens per second, one per round
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void report(const char* what, const std::vector<double>& fixed, const std::vector<double>& sized) {
  const auto spread = [](const std::vector<double>& v) {
    return mote_bench::fmt("%.1f", median(v)) + " (" + mote_bench::fmt("%.1f", *std::min_element(v.begin(), v.end())) + "-" +
           mote_bench::fmt("%.1f", *std::max_element(v.begin(), v.end())) + ")";
  };
  std::printf("| %-28s | %-30s | %-30s | %6.3f | >= 0.95 |\n", what, spread(fixed).c_str(), spread(sized).c_str(),
              median(sized) / median(fixed));
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  constexpr mote::nn::Config c2 = mote_bench::c2_config;
  const std::int64_t batch = 8, seq = 128, prompt_len = 32;
  if (prompt_len + o.tokens > c2.max_seq) {
    std::fprintf(stderr, "mote_runtime_sizes_bench: --tokens %lld runs past C2's max_seq %lld\n",
                 static_cast<long long>(o.tokens), static_cast<long long>(c2.max_seq - prompt_len));
    return 2;
  }
  Fixed fixed(std::uint64_t{1});
  Sized sized(c2, std::uint64_t{1});
  const mote_bench::Batch data = mote_bench::random_batch(c2.vocab, batch, seq);
  const mote_bench::Batch prompt_batch = mote_bench::random_batch(c2.vocab, 1, prompt_len);
  const std::vector<std::int32_t>& prompt = prompt_batch.ids_host;

  // Warm-up, which also shows both sides compute the same: the same first loss and the same tokens.
  const double fixed_loss = train_step(fixed, data), sized_loss = train_step(sized, data);
  std::printf("C2 (d %lld, %lld layers, vocab %lld): first losses compile-time %.7f, run-time %.7f (ln V = %.4f)%s\n",
              static_cast<long long>(c2.d_model), static_cast<long long>(c2.n_layers), static_cast<long long>(c2.vocab),
              fixed_loss, sized_loss, std::log(double(c2.vocab)), fixed_loss == sized_loss ? "" : "  DIFFERENT");
  const bool same_tokens = decode(fixed, prompt, o.tokens) == decode(sized, prompt, o.tokens);
  std::printf("greedy tokens: %s\n", same_tokens ? "identical" : "DIFFERENT");

  Side compile_time{"compile-time", {}, {}}, run_time{"run-time", {}, {}};
  const auto measure = [&](auto& model, Side& side) {
    auto start = mote_bench::clock_type::now();
    for (int s = 0; s < o.steps; ++s) (void)train_step(model, data);
    side.train_rate.push_back(double(batch * seq) * o.steps / seconds_since(start));
    start = mote_bench::clock_type::now();
    (void)decode(model, prompt, o.tokens);
    side.decode_rate.push_back(double(o.tokens) / seconds_since(start));
  };
  for (int r = 0; r < o.rounds; ++r) {
    if (r % 2 == 0) {
      measure(fixed, compile_time);
      measure(sized, run_time);
    } else {
      measure(sized, run_time);
      measure(fixed, compile_time);
    }
  }
  std::printf("\n%d rounds (order alternating), %d training steps and %lld decoded tokens per round and side;\n"
              "medians (min-max) in tokens/s, ratio = run-time / compile-time\n",
              o.rounds, o.steps, static_cast<long long>(o.tokens));
  std::printf("| %-28s | %-30s | %-30s | %6s | %-7s |\n", "case", "compile-time", "run-time", "ratio", "target");
  report("train step 8x128 (fwd+bwd)", compile_time.train_rate, run_time.train_rate);
  report("decode batch 1 (cached)", compile_time.decode_rate, run_time.decode_rate);
  return fixed_loss == sized_loss && same_tokens ? 0 : 1;
}
