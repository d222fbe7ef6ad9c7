// MoTE on the GPU: pretrain a small Llama-style character model on mote::cuda, freeze it, train
// step experts (analysis, guidance, answer) plus a shared expert with per-token step routing, then
// merge the answer expert into the base weights and decode, all on the device.
//
// Usage: gpu_experts   (exits 77 when there is no CUDA device)
#include <mote/cuda.cuh>

#include <cuda_runtime.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

using gpu = mote::cuda;  // spelled out: a bare `cuda` is ambiguous with CUDA's own namespace

constexpr mote::nn::Config config{.vocab = 128, .d_model = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                                  .d_ff = 128, .max_seq = 192, .norm = mote::nn::Norm::RMSNorm,
                                  .activation = mote::nn::Activation::SwiGLU, .positions = mote::nn::Positions::RoPE,
                                  .bias = false, .tied_embeddings = false};

const std::string chain =
    "how do i bake bread? <analysis> a cooking question with no risk. <guidance> give the steps. "
    "<answer> mix flour, water and yeast, let it rise, then bake.";
const std::vector<std::string> step_tokens = {"<analysis>", "<guidance>", "<answer>"};

// The whole flow; main() checks for a device and reports errors.
void run() {
  // Characters as ids; each token's step is the one whose step token opened its segment.
  std::vector<std::int32_t> ids, targets, steps;
  std::int32_t step = mote::lora::unrouted;
  for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
    for (std::size_t s = 0; s < step_tokens.size(); ++s)
      if (chain.compare(i, step_tokens[s].size(), step_tokens[s]) == 0) step = static_cast<std::int32_t>(s);
    ids.push_back(chain[i]);
    targets.push_back(chain[i + 1]);
    steps.push_back(step);
  }
  const std::int64_t length = static_cast<std::int64_t>(ids.size());
  const auto ids_gpu = mote::Tensor<std::int32_t, gpu>::from_vector({1, length}, ids);
  const auto targets_gpu = mote::Tensor<std::int32_t, gpu>::from_vector({1, length}, targets);
  const auto steps_gpu = mote::Tensor<std::int32_t, gpu>::from_vector({1, length}, steps);

  mote::nn::CausalLM<config, float, gpu> model(std::uint64_t{7});
  {
    mote::optim::AdamW<float, gpu> opt(model.parameters(), {.lr = 3e-3f, .weight_decay = 0.0f});
    for (int i = 0; i <= 200; ++i) {
      opt.zero_grad();
      auto loss = model.loss(ids_gpu, targets_gpu);
      loss.backward();
      opt.step();
      if (i % 50 == 0) std::printf("base    step %3d  loss %.3f\n", i, loss.item());
    }
  }

  auto experts = mote::lora::attach<mote::lora::StepRouter<3>>(
      model, {.rank = 8, .alpha = 16, .seed = 1});
  std::printf("%s\n", experts.trainable_parameters_line().c_str());
  mote::optim::AdamW<float, gpu> opt(experts.parameters(), {.lr = 1e-2f, .weight_decay = 0.0f});
  for (int i = 0; i <= 100; ++i) {
    opt.zero_grad();
    auto loss = model.loss(ids_gpu, targets_gpu, {.adapter = experts.route(steps_gpu)});
    loss.backward();
    opt.step();
    if (i % 50 == 0) std::printf("experts step %3d  loss %.3f\n", i, loss.item());
  }

  experts.eval();
  experts.merge_step(2);
  // The chain up to its answer step: the merged model should continue with the answer it learned.
  const std::string prompt = chain.substr(0, chain.find("<answer>") + std::string("<answer>").size());
  const auto generated =
      mote::nn::generate(model, std::vector<std::int32_t>(prompt.begin(), prompt.end()), {.max_new_tokens = 60});
  std::string text;
  for (const std::int32_t id : generated) text += static_cast<char>(id);
  std::printf("merged answer expert: %s%s\n", prompt.c_str(), text.c_str());
  experts.unmerge();
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  try {
    run();
  } catch (const std::exception& e) {
    std::printf("gpu_experts: %s\n", e.what());
    return 1;
  }
  return 0;
}
