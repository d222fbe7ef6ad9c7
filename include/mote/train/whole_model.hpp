#pragma once
// Every parameter of a model as the Trainer's trainable set: full training (pretraining a small base
// model, full fine-tuning) through the same Trainer, with its schedule, checkpoints and exact resume.
// The model has no adapters, so a batch's route ids are ignored and the forward pass gets no context.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/io/safetensors.hpp"
#include "mote/nn/causal_lm.hpp"

namespace mote::train {

template <class Model>
class WholeModel {
 public:
  using V = typename Model::V;
  using T = typename V::value_type;
  using B = typename V::backend_type;

  explicit WholeModel(Model& model) : model_(&model) { model_->set_trainable(true); }

  std::vector<V> parameters() const { return model_->parameters(); }
  std::vector<std::pair<std::string, V>> named_parameters() const { return model_->named_parameters(); }
  // No adapters, so nothing routes: the forward pass runs the bare model.
  std::shared_ptr<const nn::AdapterContext> context_for(const Tensor<std::int32_t, B>&) { return nullptr; }

  // The parameters as one safetensors file under their Hugging Face names (a checkpoint's weights).
  void save(const std::filesystem::path& dir) const {
    std::filesystem::create_directories(dir);
    io::safetensors::NamedTensors<T> tensors;
    for (const auto& [name, p] : named_parameters()) tensors.emplace_back(name, p.value());
    io::safetensors::save<T>(dir / file_name, tensors);
  }
  // Reads what save() wrote; every parameter must be there with its shape.
  void load(const std::filesystem::path& dir) {
    const auto path = dir / file_name;
    const auto file = io::safetensors::File::open(path);
    for (auto& [name, p] : named_parameters()) {
      const Tensor<T> stored = file.template tensor<T>(name);  // names the file and the tensor when absent
      if (!(stored.shape() == p.value().shape()))
        throw shape_error("mote: train::WholeModel: '" + path.string() + "' tensor '" + name + "' has shape " +
                          stored.shape().str() + ", the model's is " + p.value().shape().str());
      p.mutable_value().copy_from(stored);
    }
  }
  // The bare model has no dropout and no random streams.
  void train() {}
  void eval() {}
  std::vector<RngStreamState> random_state() const { return {}; }
  void set_random_state(const std::vector<RngStreamState>& streams) {
    if (!streams.empty())
      throw value_error("mote: train::WholeModel: a checkpoint with " + std::to_string(streams.size()) +
                        " random streams was given to a model that has none");
  }

  static constexpr const char* file_name = "model.safetensors";

 private:
  Model* model_;
};

}  // namespace mote::train
