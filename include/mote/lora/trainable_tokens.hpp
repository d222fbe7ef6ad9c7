#pragma once
// TrainableTokens: a few token rows of a frozen model made trainable (PEFT's TRAINABLE_TOKENS method),
// for tokens added to a tokenizer after pretraining, such as AlignCoT's stage tokens. The rows live
// apart from the frozen embedding and replace its rows (and the LM head's) wherever their ids occur,
// so training them touches nothing else and costs no vocabulary-sized gradient or optimizer state.
//
// Files, in PEFT's layout for the method:
//   <dir>/adapter_model.safetensors  base_model.model.<embedding>.trainable_tokens_delta [n, d]
//                                    (untied models also base_model.model.lm_head.trainable_tokens_delta)
//   <dir>/adapter_config.json        peft_type TRAINABLE_TOKENS, token_indices, target_modules
// PEFT's "delta" holds the rows themselves (they replace the base rows), and so does mote's.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "mote/autograd/index.hpp"
#include "mote/autograd/matmul.hpp"
#include "mote/autograd/shape_ops.hpp"
#include "mote/backend/traits.hpp"
#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"
#include "mote/io/json.hpp"
#include "mote/io/safetensors.hpp"
#include "mote/nn/config.hpp"
#include "mote/nn/token_adapter.hpp"

namespace mote::lora {

namespace token_rows_detail {

// The nn::TokenAdapter that puts the trainable rows in place of the frozen ones.
template <Real T, Backend B>
class RowsAdapter final : public nn::TokenAdapter<T, B> {
 public:
  using V = autograd::Var<T, B>;

  RowsAdapter(std::vector<std::int32_t> ids, std::int64_t vocab, V embed_rows, V head_rows)
      : ids_(std::move(ids)),
        local_of_(static_cast<std::size_t>(vocab), -1),
        index_(Tensor<std::int32_t, B>::from_vector({static_cast<std::int64_t>(ids_.size())}, ids_)),
        embed_rows_(std::move(embed_rows)),
        head_rows_(std::move(head_rows)) {
    for (std::size_t j = 0; j < ids_.size(); ++j) local_of_[static_cast<std::size_t>(ids_[j])] = static_cast<std::int32_t>(j);
  }

  V embed(const V& rows, const Tensor<std::int32_t, B>& ids) const override {
    const std::vector<std::int32_t> host = ids.contiguous().to_vector();
    std::vector<std::int32_t> positions, locals;
    for (std::size_t p = 0; p < host.size(); ++p) {
      const std::int32_t id = host[p];
      if (id < 0 || id >= static_cast<std::int32_t>(local_of_.size())) continue;  // the embedding reported it already
      if (const std::int32_t local = local_of_[static_cast<std::size_t>(id)]; local >= 0) {
        positions.push_back(static_cast<std::int32_t>(p));
        locals.push_back(local);
      }
    }
    if (positions.empty()) return rows;
    const std::int64_t width = rows.shape()[rows.shape().rank() - 1], count = static_cast<std::int64_t>(positions.size());
    const V flat = autograd::reshape(rows, {static_cast<std::int64_t>(host.size()), width});
    const V picked = autograd::embedding(embed_rows_, Tensor<std::int32_t, B>::from_vector({count}, locals));
    return autograd::reshape(autograd::index_copy(flat, 0, Tensor<std::int32_t, B>::from_vector({count}, positions), picked),
                             rows.shape());
  }

  V head(const V& logits, const V& hidden) const override {
    return autograd::index_copy(logits, logits.shape().rank() - 1, index_, autograd::linear(hidden, head_rows_));
  }

  std::vector<V> parameters() const override {
    if (head_rows_.node() == embed_rows_.node()) return {embed_rows_};
    return {embed_rows_, head_rows_};
  }

  // The graph-free decoding step reads the rows with host code.
  bool serves_decode_step() const override { return backend_traits<B>::host_decode_adapters; }

  void embed_decode_step(const std::int32_t* ids, std::int64_t n, std::int64_t d, T* rows) const override {
    if constexpr (backend_traits<B>::host_decode_adapters) {
      const Tensor<T, B> table = embed_rows_.value().contiguous();
      for (std::int64_t r = 0; r < n; ++r)
        if (const std::int32_t local = local_row(ids[r]); local >= 0)
          std::copy_n(table.data() + local * d, d, rows + r * d);
    }
  }

  void head_decode_step(const T* hidden, std::int64_t n, std::int64_t d, T* logits, std::int64_t vocab) const override {
    if constexpr (backend_traits<B>::host_decode_adapters) {
      const Tensor<T, B> table = head_rows_.value().contiguous();
      const auto k = static_cast<std::int64_t>(ids_.size());
      std::vector<T> own(static_cast<std::size_t>(n * k));
      MOTE_CALL_KERNEL(B, gemm, false, true, n, k, d, T(1), hidden, d, table.data(), d, T(0), own.data(), k);
      for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t j = 0; j < k; ++j)
          logits[r * vocab + ids_[static_cast<std::size_t>(j)]] = own[static_cast<std::size_t>(r * k + j)];
    }
  }

 private:
  std::int32_t local_row(std::int32_t id) const {
    return id >= 0 && id < static_cast<std::int32_t>(local_of_.size()) ? local_of_[static_cast<std::size_t>(id)] : -1;
  }

  std::vector<std::int32_t> ids_;
  std::vector<std::int32_t> local_of_;  // id -> row of the trainable tables, -1 for frozen ids
  Tensor<std::int32_t, B> index_;
  V embed_rows_, head_rows_;
};

}  // namespace token_rows_detail

// Trainable rows for `token_ids` of `model`'s embedding, and of its LM head (the same rows when the
// model ties them). Each row starts as the model's row, so a fresh set changes no output.
template <class Model>
class TrainableTokens {
 public:
  using V = typename Model::V;
  using T = typename V::value_type;
  using B = typename V::backend_type;
  static constexpr nn::Config config = Model::config;

  TrainableTokens(Model& model, std::vector<std::int32_t> token_ids) : model_(&model), ids_(std::move(token_ids)) {
    const std::string where = "mote: lora::TrainableTokens";
    if (ids_.empty()) throw value_error(where + ": no token ids were given; expected at least one");
    std::set<std::int32_t> seen;
    for (std::size_t j = 0; j < ids_.size(); ++j) {
      if (ids_[j] < 0 || ids_[j] >= model.sizes().vocab)
        throw value_error(where + ": token id " + std::to_string(ids_[j]) + " (entry " + std::to_string(j) +
                          ") is outside the model's vocabulary [0, " + std::to_string(model.sizes().vocab) + ")");
      if (!seen.insert(ids_[j]).second)
        throw value_error(where + ": token id " + std::to_string(ids_[j]) + " appears twice; expected distinct ids");
    }
    if (model.token_adapter())
      throw value_error(where + ": the model already has trainable token rows attached; detach them first");
    const Tensor<std::int32_t, B> index = index_tensor();
    embed_rows_ = V::parameter(rows_of(embedding_weight(), index));
    head_rows_ = config.tied_embeddings ? embed_rows_ : V::parameter(rows_of(head_weight(), index));
    attach();
  }
  TrainableTokens(const TrainableTokens&) = delete;
  TrainableTokens& operator=(const TrainableTokens&) = delete;
  TrainableTokens(TrainableTokens&&) noexcept = default;
  TrainableTokens& operator=(TrainableTokens&&) noexcept = default;
  ~TrainableTokens() = default;

  const std::vector<std::int32_t>& token_ids() const noexcept { return ids_; }
  // The rows of the embedding [n, d] and of the LM head (the same Var when tied).
  V embedding_rows() const noexcept { return embed_rows_; }
  V head_rows() const noexcept { return head_rows_; }

  std::vector<V> parameters() const {
    if (config.tied_embeddings) return {embed_rows_};
    return {embed_rows_, head_rows_};
  }
  // PEFT's names of the rows: base_model.model.<module>.trainable_tokens_delta.
  std::vector<std::pair<std::string, V>> named_parameters() const {
    std::vector<std::pair<std::string, V>> out{{key(embedding_module()), embed_rows_}};
    if (!config.tied_embeddings) out.emplace_back(key("lm_head"), head_rows_);
    return out;
  }

  // Writes the rows into the model's weights (keeping copies of the rows they replace) and removes
  // the adapter, so the model runs at plain speed; unmerge() restores both exactly.
  void merge() {
    if (merged_) throw value_error("mote: lora::TrainableTokens::merge: the rows are already merged; unmerge() first");
    const Tensor<std::int32_t, B> index = index_tensor();
    original_embed_ = rows_of(embedding_weight(), index);
    write_rows(embedding_weight(), index, embed_rows_.value());
    if constexpr (!config.tied_embeddings) {
      original_head_ = rows_of(head_weight(), index);
      write_rows(head_weight(), index, head_rows_.value());
    }
    model_->set_token_adapter(nullptr);
    merged_ = true;
  }
  void unmerge() {
    if (!merged_) return;
    const Tensor<std::int32_t, B> index = index_tensor();
    write_rows(embedding_weight(), index, original_embed_);
    if constexpr (!config.tied_embeddings) write_rows(head_weight(), index, original_head_);
    merged_ = false;
    attach();
  }
  bool merged() const noexcept { return merged_; }
  // Removes the rows from the model (unmerging first).
  void detach() {
    unmerge();
    if (model_->token_adapter() == adapter_) model_->set_token_adapter(nullptr);
  }

  void save(const std::filesystem::path& dir) const {
    std::filesystem::create_directories(dir);
    io::safetensors::NamedTensors<T> tensors;
    for (const auto& [name, rows] : named_parameters()) tensors.emplace_back(name, rows.value().template to<cpu>());
    io::safetensors::save(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});
    io::json::write_file(dir / "adapter_config.json", adapter_config());
  }
  // Reads what save() wrote; the token ids, modules and shapes must match these rows. Everything is
  // checked before anything is copied.
  void load(const std::filesystem::path& dir) {
    const std::filesystem::path config_path = dir / "adapter_config.json", tensors_path = dir / "adapter_model.safetensors";
    const std::string where = "mote: lora::TrainableTokens: '" + config_path.string() + "'";
    if (!std::filesystem::exists(config_path))
      throw io_error(where + " does not exist; expected a PEFT TRAINABLE_TOKENS adapter_config.json");
    const io::json::Value cfg = io::json::parse_file(config_path);
    const io::json::Value expected = adapter_config();
    if (!cfg.is_object()) throw value_error(where + ": expected a JSON object");
    for (const char* field : {"peft_type", "token_indices", "target_modules"}) {
      const io::json::Value* got = cfg.find(field);
      if (!got || !(*got == expected.at(field)))
        throw value_error(where + ": " + field + " = " + (got ? io::json::dump(*got) : std::string("(missing)")) +
                          " but these rows are " + io::json::dump(expected.at(field)));
    }
    if (!std::filesystem::exists(tensors_path))
      throw io_error("mote: lora::TrainableTokens: '" + tensors_path.string() + "' does not exist");
    const io::safetensors::File file = io::safetensors::File::open(tensors_path);
    std::vector<std::pair<V, Tensor<T>>> copies;
    for (const auto& [name, rows] : named_parameters()) {
      if (!file.has(name))
        throw value_error("mote: lora::TrainableTokens: " + file.source() + " has no tensor '" + name + "' (expected shape " +
                          rows.shape().str() + ")");
      Tensor<T> loaded = file.tensor<T>(name);
      if (!(loaded.shape() == rows.shape()))
        throw shape_error("mote: lora::TrainableTokens: " + file.source() + ": tensor '" + name + "' has shape " +
                          loaded.shape().str() + ", expected " + rows.shape().str());
      copies.emplace_back(rows, std::move(loaded));
    }
    if (file.names().size() != copies.size())
      throw value_error("mote: lora::TrainableTokens: " + file.source() + " holds " + std::to_string(file.names().size()) +
                        " tensors; expected only " + std::to_string(copies.size()) + " (the trainable rows)");
    if (merged_) throw value_error("mote: lora::TrainableTokens::load: unmerge() before loading new rows");
    for (auto& [dst, src] : copies) dst.mutable_value().copy_from(src.template to<B>());
  }

 private:
  static std::string embedding_module() { return config.gpt2_layout() ? "transformer.wte" : "model.embed_tokens"; }
  static std::string key(const std::string& module) { return "base_model.model." + module + ".trainable_tokens_delta"; }

  io::json::Value adapter_config() const {
    using io::json::Value;
    std::vector<std::string> targets{config.gpt2_layout() ? "wte" : "embed_tokens"};
    if (!config.tied_embeddings) targets.emplace_back("lm_head");
    std::vector<std::int64_t> indices(ids_.begin(), ids_.end());
    Value cfg = Value::object();
    cfg.set("base_model_name_or_path", nullptr);
    cfg.set("inference_mode", true);
    cfg.set("init_weights", true);
    cfg.set("peft_type", "TRAINABLE_TOKENS");
    cfg.set("revision", nullptr);
    cfg.set("target_modules", targets);
    cfg.set("task_type", "CAUSAL_LM");
    cfg.set("token_indices", indices);
    return cfg;
  }

  Tensor<std::int32_t, B> index_tensor() const {
    return Tensor<std::int32_t, B>::from_vector({static_cast<std::int64_t>(ids_.size())}, ids_);
  }
  V embedding_weight() const { return named_weight(config.gpt2_layout() ? "wte.weight" : "model.embed_tokens.weight"); }
  V head_weight() const { return named_weight("lm_head.weight"); }
  V named_weight(const std::string& name) const {
    V found;
    model_->for_each_parameter([&](const std::string& n, V& p) {
      if (n == name) found = p;
    });
    if (!found.defined()) throw value_error("mote: lora::TrainableTokens: the model has no parameter '" + name + "'");
    return found;
  }
  static Tensor<T, B> rows_of(const V& weight, const Tensor<std::int32_t, B>& index) {
    autograd::no_grad off;
    return autograd::index_select(weight, 0, index).value();
  }
  static void write_rows(V weight, const Tensor<std::int32_t, B>& index, const Tensor<T, B>& rows) {
    autograd::no_grad off;
    weight.mutable_value().copy_from(autograd::index_copy(V(weight.value()), 0, index, V(rows)).value());
  }
  void attach() {
    adapter_ = std::make_shared<const token_rows_detail::RowsAdapter<T, B>>(ids_, model_->sizes().vocab, embed_rows_, head_rows_);
    model_->set_token_adapter(adapter_);
  }

  Model* model_;
  std::vector<std::int32_t> ids_;
  V embed_rows_, head_rows_;
  Tensor<T, B> original_embed_, original_head_;
  std::shared_ptr<const token_rows_detail::RowsAdapter<T, B>> adapter_;
  bool merged_ = false;
};

// Makes the rows of `token_ids` trainable in `model` (whose own parameters stay as they are).
template <class Model>
TrainableTokens<Model> train_tokens(Model& model, std::vector<std::int32_t> token_ids) {
  return TrainableTokens<Model>(model, std::move(token_ids));
}

}  // namespace mote::lora
