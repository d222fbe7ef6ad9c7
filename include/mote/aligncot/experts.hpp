#pragma once
// What a pipeline trains: the router's LoRA experts on every targeted linear layer (lora::ExpertSet)
// plus the rows of the stage tokens in the embedding and LM head (lora::TrainableTokens), saved
// together with a record of the pipeline:
//   <dir>/...                 the expert set's PEFT folders and mote_config.json (docs/lora.md)
//   <dir>/stage_tokens/       the stage-token rows, a PEFT TRAINABLE_TOKENS adapter
//   <dir>/aligncot.json       the pipeline's stages, tokens and their ids
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mote/aligncot/pipeline.hpp"
#include "mote/aligncot/rows.hpp"
#include "mote/aligncot/stage_tokens.hpp"
#include "mote/core/error.hpp"
#include "mote/io/json.hpp"
#include "mote/lora/lora.hpp"

namespace mote::aligncot {

template <lora::Router R, class Model, class P>
class Experts {
 public:
  using V = typename Model::V;
  using T = typename V::value_type;
  using B = typename V::backend_type;
  using router_type = R;
  using pipeline_type = P;

  Experts(Model& model, const StageTokenIds& stage_tokens, const lora::Options& options)
      : set_(model, options), rows_(model, all_ids(stage_tokens)), stage_tokens_(stage_tokens) {
    P::template require_router<R>();
  }

  lora::ExpertSet<R, Model>& experts() noexcept { return set_; }
  const lora::ExpertSet<R, Model>& experts() const noexcept { return set_; }
  lora::TrainableTokens<Model>& token_rows() noexcept { return rows_; }
  const StageTokenIds& stage_tokens() const noexcept { return stage_tokens_; }

  // Every trainable tensor: the experts', then the stage-token rows.
  std::vector<V> parameters() const {
    std::vector<V> out = set_.parameters();
    for (const V& p : rows_.parameters()) out.push_back(p);
    return out;
  }
  std::vector<std::pair<std::string, V>> named_parameters() const {
    auto out = set_.named_parameters();
    for (auto& named : rows_.named_parameters()) out.push_back(std::move(named));
    return out;
  }
  // PEFT's print_trainable_parameters line, the stage-token rows counted as trainable.
  std::string trainable_parameters_line() const {
    lora::ParameterCounts c = set_.counts();
    for (const V& p : rows_.parameters()) {
      c.trainable += p.numel();
      c.total += p.numel();
    }
    char pct[32];
    std::snprintf(pct, sizeof pct, "%.4f", c.total ? 100.0 * static_cast<double>(c.trainable) / static_cast<double>(c.total) : 0.0);
    return "trainable params: " + std::to_string(c.trainable) + " || all params: " + std::to_string(c.total) +
           " || trainable%: " + pct;
  }

  // The routing of one batch (its route ids for step routers); see lora::ExpertSet::context_for.
  std::shared_ptr<const lora::Routing> context_for(const Tensor<std::int32_t, B>& routes) { return set_.context_for(routes); }
  // The learned gate's balancing and contrastive losses of the latest forward pass (undefined for
  // fixed routers), which the Trainer adds to the objective.
  V aux_loss() const { return set_.aux_loss(); }
  void train(bool on = true) { set_.train(on); }
  void eval() { set_.eval(); }
  auto random_state() const { return set_.random_state(); }
  template <class State>
  void set_random_state(const State& state) {
    set_.set_random_state(state);
  }

  void save(const std::filesystem::path& dir) const {
    std::filesystem::create_directories(dir);
    set_.save(dir);
    rows_.save(dir / "stage_tokens");
    io::json::write_file(dir / "aligncot.json", record());
  }
  // Reads what save() wrote. aligncot.json must describe this pipeline with the same token ids
  // (adapters trained for another pipeline or tokenizer are refused before anything changes).
  void load(const std::filesystem::path& dir) {
    const std::filesystem::path file = dir / "aligncot.json";
    if (!std::filesystem::exists(file))
      throw io_error("mote: aligncot::Experts::load: '" + file.string() + "' does not exist; expected adapters saved by aligncot::Experts");
    const io::json::Value saved = io::json::parse_file(file);
    const io::json::Value mine = record();
    for (const char* key : {"pipeline", "stage_token_ids", "router"}) {
      const io::json::Value* got = saved.is_object() ? saved.find(key) : nullptr;
      if (!got || !(*got == mine.at(key)))
        throw value_error("mote: aligncot::Experts::load: '" + file.string() + "': " + key + " = " +
                          (got ? io::json::dump(*got) : std::string("(missing)")) + " but these experts have " +
                          io::json::dump(mine.at(key)));
    }
    set_.load(dir);
    rows_.load(dir / "stage_tokens");
  }

 private:
  io::json::Value record() const {
    using io::json::Value;
    Value stages = Value::array();
    for (std::size_t i = 0; i < P::size; ++i) {
      Value s = Value::object();
      s.set("name", std::string(P::names[i]));
      s.set("start_token", std::string(P::start_tokens[i]));
      s.set("end_token", std::string(P::end_tokens[i]));
      s.set("role", P::roles[i] == StageRole::step ? "step" : P::roles[i] == StageRole::answer ? "answer" : "check");
      s.set("expert", P::experts[i]);
      stages.push_back(std::move(s));
    }
    std::vector<std::int64_t> ids;
    for (std::int32_t id : all_ids(stage_tokens_)) ids.push_back(id);
    Value out = Value::object();
    out.set("mote_aligncot_version", 1);
    out.set("pipeline", std::move(stages));
    out.set("stage_token_ids", ids);
    out.set("router", R::name);
    return out;
  }

  lora::ExpertSet<R, Model> set_;
  lora::TrainableTokens<Model> rows_;
  StageTokenIds stage_tokens_;
};

// Attaches router R's experts to every targeted linear layer of `model` and makes the stage tokens'
// rows trainable; refuses at compile time a router that cannot serve the pipeline's stages.
template <lora::Router R, class P, class Model>
Experts<R, Model, P> attach(Model& model, const P& /*pipeline*/, const StageTokenIds& stage_tokens,
                            const lora::Options& options = {}) {
  return Experts<R, Model, P>(model, stage_tokens, options);
}

}  // namespace mote::aligncot
