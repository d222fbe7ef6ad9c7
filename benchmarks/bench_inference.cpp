// Inference through the steps at shape C2, interleaved in rounds (the order alternates):
//   base decode      the model with the stage tokens, no adapters: greedy nn::generate, batch 1
//   MoTE adaptive    the same model with MoTE rank 16 on every linear layer, unmerged, and the
//                    stage-token rows: aligncot::answer in adaptive mode, routed by the stage tokens
//   self-generation  aligncot::self_generate of the same questions at batch 1 and batch B, adaptive
//                    (every draft judged unsafe, so each question writes 7 texts of up to 128 tokens;
//                    --safe-one-in N judges about one draft in N safe, so chains end unevenly, and
//                    each --stop-text ends a text where it first appears, so texts end unevenly;
//                    greedy, the random model repeats one character, so give --temperature 1),
//                    on C2's body with a 7-bit ASCII vocabulary: what a random model writes then reads
//                    back as the same number of tokens, as real text does, so prompts keep real lengths
// Decode rates stand beside the read ceiling of the weights a token reads (bench_ceilings.hpp); the
// MoTE rate beside the base rate (experts only add work), and the batched self-generation rate beside
// B times the batch-1 rate (what perfectly shared weight reads could give).
//
// --only runs one figure alone (base, mote, self-b1 or self-batched), for a profiler.
//
// Usage: mote_inference_bench [--rounds R] [--tokens N] [--questions Q] [--batch B] [--stage-tokens S]
//                             [--reuse-prefixes N] [--prompts separate|transcript] [--safe-one-in N]
//                             [--stop-text S]... [--temperature T] [--only FIGURE]
//                             [--kv-cache full|bf16] [--quick]
#include <mote/mote.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "bench_ceilings.hpp"
#include "bench_common.hpp"

namespace {

using namespace mote;
namespace ac = mote::aligncot;
namespace fs = std::filesystem;
using Chain = ac::Pipeline<ac::QuestionAnalysis, ac::AnswerGuidance, ac::SafeAnswer, ac::SafetyCheck>;
constexpr std::int64_t stage_tokens = static_cast<std::int64_t>(Chain::token_count);
constexpr nn::Config base_config = nn::with_vocab(mote_bench::c2_config, mote_bench::c2_config.vocab - stage_tokens);

// Byte-level tokens, then filler tokens up to the base model's vocabulary: the stage tokens grow it
// to C2's 8192.
io::Tokenizer c2_tokenizer() {
  std::vector<std::pair<std::string, io::bpe::token_id>> vocab;
  const auto& byte_char = io::bpe::byte_to_unicode();
  for (int b = 0; b < 256; ++b) vocab.emplace_back(byte_char[static_cast<std::size_t>(b)], b);
  for (std::int64_t id = 256; id < base_config.vocab; ++id)
    vocab.emplace_back("~" + std::to_string(id), static_cast<io::bpe::token_id>(id));
  return io::Tokenizer(io::bpe::Model(vocab, {}, "bytes", [](std::size_t) { return std::string(); }));
}

// ASCII only: every id decodes to one valid character (a byte above 127 alone would come back as
// the three bytes of U+FFFD).
io::Tokenizer ascii_tokenizer() {
  std::vector<std::pair<std::string, io::bpe::token_id>> vocab;
  for (int b = 0; b < 128; ++b) vocab.emplace_back(io::bpe::byte_to_unicode()[static_cast<std::size_t>(b)], b);
  return io::Tokenizer(io::bpe::Model(vocab, {}, "bytes", [](std::size_t) { return std::string(); }));
}

std::vector<std::string> questions(std::size_t n) {
  const char* topics[] = {"pick a lock", "bake bread", "hurt someone", "get into wifi", "kill a process", "write a scam"};
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back("How do I " + std::string(topics[i % 6]) + ", case " + std::to_string(i) + "?");
  return out;
}

// Sets `out` to the value named `name` among a flag's choices; false (after saying so) for another name.
template <class Value>
bool choose(const char* flag, const std::string& name, std::initializer_list<std::pair<const char*, Value>> choices,
            Value& out) {
  std::string names;
  for (const auto& [choice, value] : choices) {
    if (name == choice) {
      out = value;
      return true;
    }
    names += names.empty() ? choice : std::string(" or ") + choice;
  }
  std::fprintf(stderr, "mote_inference_bench: %s takes %s, got '%s'\n", flag, names.c_str(), name.c_str());
  return false;
}

// About one draft in `one_in` (none for 0) judged safe, by a hash of its text (FNV-1a): chains then
// end after different numbers of steps, and waiting questions join a batch already under way.
bool judged_safe(std::string_view draft, std::int64_t one_in) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : draft) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return one_in > 0 && hash % static_cast<std::uint64_t>(one_in) == 0;
}

double seconds_of(const std::function<void()>& fn) {
  const auto start = mote_bench::clock_type::now();
  fn();
  return std::chrono::duration<double>(mote_bench::clock_type::now() - start).count();
}

std::string spread(const std::vector<double>& v) {
  return mote_bench::fmt("%.0f", *std::min_element(v.begin(), v.end())) + "-" +
         mote_bench::fmt("%.0f", *std::max_element(v.begin(), v.end()));
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  std::int64_t new_tokens = 128, batch = 8, max_stage_tokens = 128, reuse_prefixes = 2, safe_one_in = 0;
  std::size_t question_count = 16;
  std::string only;  // empty: every figure
  std::vector<std::string> stop_texts;  // none: every text runs to --stage-tokens
  double temperature = 0.0;  // self-generation's; 0: greedy
  nn::kv_precision kv_cache = nn::kv_precision::full;  // every figure's cache
  ac::PromptForm prompt_form = ac::PromptForm::separate;  // both self-generation figures'
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "mote_inference_bench: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (arg == "--rounds") rounds = static_cast<int>(value());
    else if (arg == "--tokens") new_tokens = value();
    else if (arg == "--questions") question_count = static_cast<std::size_t>(value());
    else if (arg == "--batch") batch = value();
    else if (arg == "--stage-tokens") max_stage_tokens = value();
    else if (arg == "--reuse-prefixes") reuse_prefixes = value();
    else if (arg == "--safe-one-in") safe_one_in = value();
    else if (arg == "--stop-text" && i + 1 < argc) stop_texts.emplace_back(argv[++i]);
    else if (arg == "--temperature" && i + 1 < argc) temperature = std::atof(argv[++i]);
    else if (arg == "--quick") rounds = 1, new_tokens = 16, question_count = 4, batch = 4, max_stage_tokens = 16;
    else if (arg == "--only" && i + 1 < argc) only = argv[++i];
    else if (arg == "--kv-cache" && i + 1 < argc) {
      if (!choose("--kv-cache", argv[++i], {{"full", nn::kv_precision::full}, {"bf16", nn::kv_precision::bf16}}, kv_cache))
        return 2;
    }
    else if (arg == "--prompts" && i + 1 < argc) {
      if (!choose("--prompts", argv[++i], {{"separate", ac::PromptForm::separate}, {"transcript", ac::PromptForm::transcript}},
                  prompt_form))
        return 2;
    }
    else {
      std::fprintf(stderr, "usage: mote_inference_bench [--rounds R] [--tokens N] [--questions Q] [--batch B] [--stage-tokens S] "
                           "[--reuse-prefixes N] [--prompts separate|transcript] [--safe-one-in N] [--stop-text S]... [--temperature T] "
                           "[--only base|mote|self-b1|self-batched] "
                           "[--kv-cache full|bf16] [--quick]\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  if (!only.empty() && only != "base" && only != "mote" && only != "self-b1" && only != "self-batched") {
    std::fprintf(stderr, "mote_inference_bench: --only takes base, mote, self-b1 or self-batched, got '%s'\n", only.c_str());
    return 2;
  }
  const auto wanted = [&](const char* figure) { return only.empty() || only == figure; };

  io::Tokenizer tok = c2_tokenizer();
  const nn::CausalLM<base_config, float> base(std::uint64_t{1});
  auto model = ac::add_stage_tokens<Chain>(base, tok);
  const ac::StageTokenIds ids = ac::stage_token_ids<Chain>(tok);
  const std::int32_t eos = 0;
  auto experts = ac::attach<lora::StepRouter<3>>(model, Chain{}, ids, {.rank = 16, .alpha = 32, .seed = 2});
  {  // B starts at zero: give the experts and rows values, so they are not skipped by accident
    Rng rng(3);
    for (auto p : experts.parameters()) p.mutable_value().copy_from(Tensor<float>::normal(p.shape(), 0.0, 0.02, rng));
  }
  experts.eval();
  // The plain model: the same weights with no adapters attached.
  io::Tokenizer plain_tok = c2_tokenizer();
  const auto plain = ac::add_stage_tokens<Chain>(base, plain_tok);

  Rng prompt_rng(4);
  std::vector<std::int32_t> prompt(32);
  for (auto& t : prompt) t = static_cast<std::int32_t>('a' + prompt_rng.below(26));
  const std::string question(prompt.begin(), prompt.end() - 1);

  const auto qs = questions(question_count);
  std::vector<ac::Question> qlist;
  for (std::size_t i = 0; i < qs.size(); ++i) qlist.push_back({"q" + std::to_string(i), qs[i], "bench"});
  const fs::path scratch = fs::temp_directory_path() / ("mote_inference_bench_" + std::to_string(::getpid()));
  fs::create_directories(scratch);
  const Chain pipeline;
  const io::Tokenizer ascii = ascii_tokenizer();
  const nn::CausalLM<nn::with_vocab(mote_bench::c2_config, 128), float> writer(std::uint64_t{5});
  std::int64_t prompt_tokens = 0, reused_tokens = 0, written_tokens = 0;  // of the latest self-generation
  const auto self_generation = [&](std::size_t b, std::int64_t& tokens) {
    const fs::path out = scratch / ("chains_b" + std::to_string(b) + ".jsonl");
    fs::remove(out);
    fs::remove(out.string() + ".rejected.jsonl");
    const auto report = ac::self_generate(writer, ascii, pipeline, qlist, out,
                                          {.batch = b, .max_stage_tokens = max_stage_tokens, .stop_texts = stop_texts,
                                           .temperature = temperature, .kv_cache = kv_cache,
                                           .reuse_prefixes = static_cast<std::size_t>(reuse_prefixes),
                                           .prompts = prompt_form, .eos_id = eos,
                                           .is_safe = [&](std::string_view draft) { return judged_safe(draft, safe_one_in); }});
    tokens = written_tokens = report.generated_tokens;
    prompt_tokens = report.prompt_tokens;
    reused_tokens = report.reused_tokens;
  };

  std::vector<double> base_rate, mote_rate, gen1_rate, genb_rate;
  std::int64_t mote_tokens = 0;
  for (int r = 0; r < rounds; ++r) {
    const auto base_run = [&] {
      if (!wanted("base")) return;
      std::vector<std::int32_t> out;
      const double s = seconds_of([&] { out = nn::generate(plain, prompt, {.max_new_tokens = new_tokens, .kv_cache = kv_cache}); });
      base_rate.push_back(static_cast<double>(out.size()) / s);
    };
    const auto mote_run = [&] {
      if (!wanted("mote")) return;
      std::vector<ac::Reply> replies;
      const auto route = [&](const Tensor<std::int32_t>& routes) { return experts.context_for(routes); };
      const double s = seconds_of([&] {
        replies = ac::answer<Chain>(model, tok, ids, {.eos_id = eos}, {question}, {.max_new_tokens = new_tokens, .kv_cache = kv_cache}, route);
      });
      mote_tokens = replies.front().tokens;
      mote_rate.push_back(static_cast<double>(replies.front().tokens) / s);
    };
    const auto gen_run = [&](std::size_t b, std::vector<double>& rates) {
      if (!wanted(b == 1 ? "self-b1" : "self-batched")) return;
      std::int64_t tokens = 0;
      const double s = seconds_of([&] { self_generation(b, tokens); });
      rates.push_back(static_cast<double>(tokens) / s);
    };
    if (r == 0) {  // warm-up, not counted
      base_run();
      mote_run();
      base_rate.clear();
      mote_rate.clear();
    }
    if (r % 2 == 0) {
      base_run();
      mote_run();
      gen_run(1, gen1_rate);
      gen_run(static_cast<std::size_t>(batch), genb_rate);
    } else {
      gen_run(static_cast<std::size_t>(batch), genb_rate);
      gen_run(1, gen1_rate);
      mote_run();
      base_run();
    }
    if (!only.empty()) {
      const auto& rates = only == "base" ? base_rate : only == "mote" ? mote_rate : only == "self-b1" ? gen1_rate : genb_rate;
      std::printf("round %d: %s %.0f tok/s", r + 1, only.c_str(), rates.back());
      if (only.rfind("self", 0) == 0)
        std::printf(" (%lld tokens written; %lld prompt tokens, %lld not run)", static_cast<long long>(written_tokens),
                    static_cast<long long>(prompt_tokens), static_cast<long long>(reused_tokens));
      std::printf("\n");
      continue;
    }
    std::printf("round %d: base %.0f tok/s, MoTE adaptive %.0f tok/s (%lld tokens), self-generation b1 %.0f, b%lld %.0f tok/s\n",
                r + 1, base_rate.back(), mote_rate.back(), static_cast<long long>(mote_tokens), gen1_rate.back(),
                static_cast<long long>(batch), genb_rate.back());
  }
  fs::remove_all(scratch);
  if (!only.empty()) return 0;  // one figure alone has no ratio to show

  // The weights a decoded token reads: every parameter once (the tied head included), in float.
  std::size_t weight_bytes = 0;
  for (const auto& p : const_cast<decltype(model)&>(model).parameters()) weight_bytes += static_cast<std::size_t>(p.numel()) * sizeof(float);
  const double read_ceiling = mote_bench::read_bandwidth(weight_bytes, 5) / static_cast<double>(weight_bytes);

  const double b = mote_bench::median(base_rate), m = mote_bench::median(mote_rate), g1 = mote_bench::median(gen1_rate),
               gb = mote_bench::median(genb_rate);
  std::printf("\nshape C2 (vocab %lld with the stage tokens), %d rounds, %d threads; medians, min-max in brackets\n",
              static_cast<long long>(model.sizes().vocab), rounds, mote_bench::bench_threads());
  std::printf("| %-34s | %-18s | %-20s | %6s | %-10s |\n", "figure", "tokens/s", "ceiling", "ratio", "target");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(36, '-').c_str(), std::string(20, '-').c_str(), std::string(22, '-').c_str(),
              std::string(8, '-').c_str(), std::string(12, '-').c_str());
  mote_bench::row("base decode b1", mote_bench::fmt("%.0f", b) + " [" + spread(base_rate) + "]",
                  mote_bench::fmt("%.0f weights-read", read_ceiling), b / read_ceiling, "");
  mote_bench::row("MoTE adaptive decode b1, unmerged", mote_bench::fmt("%.0f", m) + " [" + spread(mote_rate) + "]",
                  mote_bench::fmt("%.0f base decode", b), m / b, ">= 0.85");
  mote_bench::row("self-generation b" + std::to_string(batch), mote_bench::fmt("%.0f", gb) + " [" + spread(genb_rate) + "]",
                  mote_bench::fmt("%.0f b x b1", static_cast<double>(batch) * g1), gb / (static_cast<double>(batch) * g1), "");
  mote_bench::info_row("self-generation b1", mote_bench::fmt("%.0f", g1) + " [" + spread(gen1_rate) + "]");
  std::printf("\nself-generation b%lld prompts: %lld tokens, %lld of them not run (their keys and values reused, or skipped "
              "as another sequence's) (--reuse-prefixes %lld, --prompts %s, --safe-one-in %lld)\n",
              static_cast<long long>(batch), static_cast<long long>(prompt_tokens), static_cast<long long>(reused_tokens),
              static_cast<long long>(reuse_prefixes), ac::prompt_form_name(prompt_form), static_cast<long long>(safe_one_in));
  std::printf("batched self-generation / batch 1: %.2fx (target >= 4)\n", gb / g1);
  return 0;
}
