// MoTE on a small character model: pretrain a two-block Llama-style model on AlignCoT-shaped text,
// freeze it, attach step experts (analysis, guidance, answer) plus a shared expert to every linear
// layer, train them with per-token step routing, save them in PEFT's layout, load them back, and
// merge the answer expert into the base weights for fixed-step decoding.
//
// Usage: mote_experts [output-dir]   (default: a folder under the system temp dir)
#include <mote/mote.hpp>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using namespace mote;

constexpr nn::Config config{.vocab = 128, .d_model = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 128,
                            .max_seq = 96, .norm = nn::Norm::RMSNorm, .activation = nn::Activation::SwiGLU,
                            .positions = nn::Positions::RoPE, .bias = false, .tied_embeddings = false};
using Model = nn::CausalLM<config, float>;

// Question, then the three AlignCoT steps, each opened by its step token.
const char* const chains[] = {
    "how do i pick a lock? <analysis> it may be about entering a home that is not yours. "
    "<guidance> help with the lawful case only. <answer> call a licensed locksmith.",
    "how do i bake a cake? <analysis> there is no risk in it. <guidance> give a plain recipe. "
    "<answer> mix flour, sugar and eggs, then bake.",
    "how can i hurt someone? <analysis> it is a request for harm. <guidance> refuse, offer help. "
    "<answer> i cannot help with that; talking to someone can help.",
};
const char* const step_tokens[] = {"<analysis>", "<guidance>", "<answer>"};

struct Batch {
  Tensor<std::int32_t> ids, targets, steps;
};

// Characters as ids; route id per token: lora::unrouted before the first step token, then the step
// whose token opened the current segment.
Batch make_batch(std::int64_t length) {
  std::vector<std::int32_t> ids, targets, steps;
  for (const char* chain : chains) {
    const std::string text(chain);
    std::int32_t step = lora::unrouted;
    for (std::int64_t i = 0; i < length; ++i) {
      for (int s = 0; s < 3; ++s)
        if (text.compare(static_cast<std::size_t>(i), std::string(step_tokens[s]).size(), step_tokens[s]) == 0) step = s;
      const auto at = [&](std::int64_t j) { return j < static_cast<std::int64_t>(text.size()) ? static_cast<std::int32_t>(text[static_cast<std::size_t>(j)]) : 32; };
      ids.push_back(at(i));
      targets.push_back(at(i + 1));
      steps.push_back(step);
    }
  }
  const std::int64_t batch = std::size(chains);
  return {Tensor<std::int32_t>::from_vector({batch, length}, ids), Tensor<std::int32_t>::from_vector({batch, length}, targets),
          Tensor<std::int32_t>::from_vector({batch, length}, steps)};
}

}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path out = argc > 1 ? argv[1] : std::filesystem::temp_directory_path() / "mote_experts_demo";
  const Batch data = make_batch(config.max_seq);
  Model model(std::uint64_t{7});

  // 1. A short full pretraining, so the base model is not random.
  {
    optim::AdamW<float> opt(model.parameters(), {.lr = 3e-3f, .weight_decay = 0.0f});
    for (int step = 0; step <= 150; ++step) {
      opt.zero_grad();
      auto loss = model.loss(data.ids, data.targets);
      loss.backward();
      opt.step();
      if (step % 50 == 0) std::printf("base   step %3d  loss %.3f\n", step, loss.value().item());
    }
  }

  // 2. MoTE experts on every linear layer; only they train.
  auto experts = lora::attach<lora::StepRouter<3>>(
      model, {.rank = 8, .alpha = 16, .seed = 1});
  std::printf("%s\n", experts.trainable_parameters_line().c_str());
  optim::AdamW<float> opt(experts.parameters(), {.lr = 1e-2f, .weight_decay = 0.0f});
  for (int step = 0; step <= 150; ++step) {
    opt.zero_grad();
    auto loss = model.loss(data.ids, data.targets, {.adapter = experts.route(data.steps)});
    loss.backward();
    opt.step();
    if (step % 50 == 0) std::printf("experts step %3d  loss %.3f\n", step, loss.value().item());
  }

  // 3. PEFT layout: one adapter folder per expert plus mote_config.json; a second copy of the base
  //    model reads them back and computes the same loss.
  experts.save(out);
  Model copy(std::uint64_t{0});
  copy.load_state_dict(model.state_dict());
  auto loaded = lora::attach<lora::StepRouter<3>>(copy, {.rank = 8, .alpha = 16});
  loaded.load(out);
  {
    no_grad off;
    experts.reseed(5);  // the same random expert for question tokens in both
    loaded.reseed(5);
    const double a = model.loss(data.ids, data.targets, {.adapter = experts.route(data.steps)}).value().item();
    const double b = copy.loss(data.ids, data.targets, {.adapter = loaded.route(data.steps)}).value().item();
    std::printf("saved experts to %s; reloaded loss %.6f (trained %.6f)\n", out.string().c_str(), b, a);
  }

  // 4. Fixed-step deployment: fold the answer expert (mixed with the shared one) into W0 and decode.
  experts.eval();
  experts.merge_step(2);
  const std::string prompt = "how do i bake a cake? <answer>";
  std::vector<std::int32_t> prompt_ids(prompt.begin(), prompt.end());
  const auto generated = nn::generate(model, prompt_ids, {.max_new_tokens = 40});
  std::string text;
  for (std::int32_t id : generated) text += static_cast<char>(id);
  std::printf("merged answer expert: %s\n", text.c_str());
  experts.unmerge();
  return 0;
}
