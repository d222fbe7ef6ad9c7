#pragma once
// SequenceClassifier: a bias-free score head on a CausalLM's final hidden states, laid out as Hugging
// Face's LlamaForSequenceClassification (the LlamaModel under "model.*", no lm_head, score.weight), so
// reward and cost models of that layout load into it. It meets train::CausalModel, so it trains with
// train::Trainer + train::WholeModel on a ClassificationData; eval/model_judge.hpp makes it a Judge.
//
//   auto judge_model = mote::eval::load_classifier<mote::nn::CausalLM<C, float>>("cost_model");
//   const auto scores = judge_model.scores(ids);  // [rows, num_labels]
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "mote/autograd/index.hpp"
#include "mote/autograd/loss.hpp"
#include "mote/autograd/matmul.hpp"
#include "mote/autograd/shape_ops.hpp"
#include "mote/autograd/var.hpp"
#include "mote/core/error.hpp"
#include "mote/core/rng.hpp"
#include "mote/core/tensor.hpp"
#include "mote/io/hf_config.hpp"
#include "mote/io/json.hpp"
#include "mote/io/safetensors.hpp"
#include "mote/nn/causal_lm.hpp"
#include "mote/nn/checkpoint.hpp"
#include "mote/nn/config.hpp"
#include "mote/nn/linear.hpp"
#include "mote/nn/parameters.hpp"
#include "mote/train/batch.hpp"

namespace mote::eval {

namespace score_head_detail {

// transformers' names for labels it was given no names for.
inline std::vector<std::string> default_labels(std::int64_t count) {
  std::vector<std::string> out;
  for (std::int64_t i = 0; i < count; ++i) out.push_back("LABEL_" + std::to_string(i));
  return out;
}

// value_error unless the names are non-empty and distinct (label2id must be a map back).
inline void check_labels(const std::vector<std::string>& labels, const std::string& who) {
  if (labels.empty()) throw value_error(who + ": no labels; expected at least one");
  std::set<std::string> seen;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i].empty()) throw value_error(who + ": label " + std::to_string(i) + " has an empty name");
    if (!seen.insert(labels[i]).second)
      throw value_error(who + ": label name \"" + labels[i] + "\" is used twice; expected distinct names");
  }
}

// The rightmost position of `row` (of `length` ids) whose id is not `pad`: where transformers reads a
// row's score; -1 for a row of only padding.
inline std::int64_t last_non_pad(std::span<const std::int32_t> row, std::int32_t pad) {
  for (std::int64_t i = static_cast<std::int64_t>(row.size()) - 1; i >= 0; --i)
    if (row[static_cast<std::size_t>(i)] != pad) return i;
  return -1;
}

inline std::string dims_string(const std::vector<std::int64_t>& dims) {
  std::string out = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

}  // namespace score_head_detail

// What ClassificationData needs to build batches a SequenceClassifier reads (classifier.data_options()).
struct ClassificationDataOptions {
  std::int32_t pad_token_id = 0;
  std::int64_t max_seq = 0;         // the model's context; longer examples keep their first max_seq tokens
  std::vector<std::string> labels;  // one name per label, in label order
  std::int64_t length = 0;          // every row padded to this many tokens; 0 = each batch's longest row
};

template <class Model>
class SequenceClassifier : public nn::ParameterAccess<SequenceClassifier<Model>, typename Model::V> {
 public:
  using V = typename Model::V;
  using T = typename V::value_type;
  using B = typename V::backend_type;
  static constexpr nn::Config config = Model::config;
  static_assert(!config.gpt2_layout(),
                "mote::eval::SequenceClassifier: the score head is laid out as LlamaForSequenceClassification; "
                "use a Llama-layout backbone");

  // `id2label` names the labels (empty: LABEL_0, LABEL_1, ... as transformers does); score.weight is
  // drawn from normal(0, 0.02) seeded with `seed`.
  SequenceClassifier(Model backbone, std::int64_t num_labels, std::int32_t pad_token_id, std::uint64_t seed = 0,
                     std::vector<std::string> id2label = {})
      : backbone_(std::move(backbone)), pad_token_id_(pad_token_id), labels_(std::move(id2label)) {
    const std::string who = "mote: eval::SequenceClassifier";
    if (num_labels < 1) throw value_error(who + ": num_labels = " + std::to_string(num_labels) + "; expected at least 1");
    if (labels_.empty()) labels_ = score_head_detail::default_labels(num_labels);
    if (static_cast<std::int64_t>(labels_.size()) != num_labels)
      throw value_error(who + ": " + std::to_string(labels_.size()) + " label names for num_labels = " +
                        std::to_string(num_labels) + "; expected one name per label");
    score_head_detail::check_labels(labels_, who);
    Rng rng(seed);
    score_ = nn::detail::normal_param<T, B>(Shape{num_labels, sizes().d_model}, 0.02, rng);
  }

  // The backbone's sizes (the Trainer's resume fingerprint records them).
  const nn::Config& sizes() const noexcept { return backbone_.sizes(); }
  const Model& backbone() const noexcept { return backbone_; }
  Model& backbone() noexcept { return backbone_; }
  std::int64_t num_labels() const noexcept { return static_cast<std::int64_t>(labels_.size()); }
  std::int32_t pad_token_id() const noexcept { return pad_token_id_; }
  const std::vector<std::string>& labels() const noexcept { return labels_; }
  const V& score_weight() const noexcept { return score_; }
  // Options for a ClassificationData whose batches this classifier reads (pad id, context, label names).
  ClassificationDataOptions data_options() const { return {.pad_token_id = pad_token_id_, .max_seq = sizes().max_seq, .labels = labels_, .length = 0}; }

  // Each row's last non-padding position (the rightmost id != pad_token_id); value_error names a row
  // of only padding.
  std::vector<std::int64_t> last_token_positions(const Tensor<std::int32_t, B>& ids) const {
    if (!ids.defined() || ids.rank() != 2 || ids.size(0) == 0 || ids.size(1) == 0)
      throw shape_error("mote: eval::SequenceClassifier: ids must have shape [batch, length] with both > 0, got " +
                        (ids.defined() ? ids.shape().str() : std::string("an empty tensor")));
    const std::vector<std::int32_t> host = ids.contiguous().to_vector();
    const std::size_t rows = static_cast<std::size_t>(ids.size(0)), length = static_cast<std::size_t>(ids.size(1));
    std::vector<std::int64_t> out(rows);
    for (std::size_t r = 0; r < rows; ++r) {
      out[r] = score_head_detail::last_non_pad(std::span<const std::int32_t>(host).subspan(r * length, length), pad_token_id_);
      if (out[r] < 0)
        throw value_error("mote: eval::SequenceClassifier: row " + std::to_string(r) + " of ids " + ids.shape().str() +
                          " is only padding (pad_token_id " + std::to_string(pad_token_id_) +
                          "); expected at least one token to score");
    }
    return out;
  }

  // ids [B, L] -> scores [B, num_labels]: each row's final hidden state at its last non-padding token
  // through score.weight.
  V scores(const Tensor<std::int32_t, B>& ids, const nn::ForwardOptions<B>& options = {}) const {
    const std::vector<std::int64_t> last = last_token_positions(ids);
    const std::int64_t rows = ids.size(0), length = ids.size(1), d = sizes().d_model;
    std::vector<std::int32_t> flat(last.size());
    for (std::size_t r = 0; r < last.size(); ++r) flat[r] = static_cast<std::int32_t>(static_cast<std::int64_t>(r) * length + last[r]);
    const V hidden = autograd::reshape(backbone_.hidden_states(ids, options), Shape{rows * length, d});
    const V picked = autograd::index_select(hidden, 0, Tensor<std::int32_t, B>::from_vector({rows}, flat));
    return autograd::linear(picked, score_);
  }

  // ids [B, L] -> the score head at every position, [B, L, num_labels] (transformers' logits before it
  // picks the last non-padding token). The Trainer's evaluation takes the cross-entropy of these against
  // targets shaped like ids, which counts exactly the label at each row's last token.
  V logits(const Tensor<std::int32_t, B>& ids, const nn::ForwardOptions<B>& options = {}) const {
    return autograd::linear(backbone_.hidden_states(ids, options), score_);
  }

  // Mean single-label cross-entropy of the scores against the labels. targets [B, L] hold ignore_index
  // everywhere but each row's label at its last non-padding position (what ClassificationData builds);
  // anything else is a value_error naming the row. loss_mask, if given, weights the rows.
  V loss(const Tensor<std::int32_t, B>& ids, const Tensor<std::int32_t, B>& targets, const nn::LossOptions<T, B>& options = {}) const {
    const std::vector<std::int64_t> last = last_token_positions(ids);
    check_targets(ids, targets, last, options.ignore_index);
    const V out = logits(ids, nn::ForwardOptions<B>{.positions = options.positions, .mask = options.mask, .adapter = options.adapter});
    return autograd::cross_entropy(out, targets,
                                   autograd::CrossEntropyOptions<T, B>{.ignore_index = options.ignore_index, .loss_mask = options.loss_mask});
  }

  // The backbone's parameters under their Hugging Face names but lm_head.weight (the classifier has no
  // LM head), then score.weight.
  template <class Visitor>
  void for_each_parameter(Visitor&& visitor) {
    backbone_.for_each_parameter([&](const std::string& name, V& p) {
      if (name != "lm_head.weight") visitor(name, p);
    });
    visitor(std::string("score.weight"), score_);
  }

  // config.json (the backbone's Llama fields, architectures LlamaForSequenceClassification, num_labels,
  // id2label, label2id, pad_token_id, problem_type) and model.safetensors (model.* and score.weight),
  // each written atomically. F64 round-trips a double model bit for bit, F32 a float one.
  void save(const std::filesystem::path& dir, io::safetensors::Dtype dtype = io::safetensors::Dtype::F32) const {
    static_assert(std::is_same_v<B, cpu>, "mote::eval::SequenceClassifier::save: checkpoints are written from CPU models");
    io::json::Value cfg = nn::to_hf_config(sizes()).to_json();
    cfg.set("architectures", io::json::Value::array({"LlamaForSequenceClassification"}));
    io::json::Value id2label = io::json::Value::object(), label2id = io::json::Value::object();
    for (std::size_t i = 0; i < labels_.size(); ++i) {
      id2label.set(std::to_string(i), labels_[i]);
      label2id.set(labels_[i], static_cast<std::int64_t>(i));
    }
    cfg.set("num_labels", num_labels());
    cfg.set("id2label", std::move(id2label));
    cfg.set("label2id", std::move(label2id));
    cfg.set("pad_token_id", static_cast<std::int64_t>(pad_token_id_));
    cfg.set("problem_type", "single_label_classification");
    io::safetensors::NamedTensors<T> tensors;
    // for_each_parameter has no const overload; the visitor only reads.
    const_cast<SequenceClassifier&>(*this).for_each_parameter(
        [&](const std::string& name, V& p) { tensors.emplace_back(name, p.value()); });
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw io_error("mote: eval::SequenceClassifier::save: cannot create '" + dir.string() + "': " + ec.message());
    io::safetensors::save<T>(dir / "model.safetensors", tensors, {{"format", "pt"}}, dtype);
    // A stale index would make loaders read old shards instead of the file just written.
    const std::filesystem::path index = dir / "model.safetensors.index.json";
    if (std::filesystem::exists(index) && !std::filesystem::remove(index, ec))
      throw io_error("mote: eval::SequenceClassifier::save: cannot remove the stale index '" + index.string() + "': " + ec.message());
    io::json::write_file(dir / "config.json", cfg, 2);
  }

 private:
  void check_targets(const Tensor<std::int32_t, B>& ids, const Tensor<std::int32_t, B>& targets,
                     const std::vector<std::int64_t>& last, std::int32_t ignore_index) const {
    const std::string who = "mote: eval::SequenceClassifier::loss";
    if (!targets.defined() || !(targets.shape() == ids.shape()))
      throw shape_error(who + ": targets have shape " + (targets.defined() ? targets.shape().str() : std::string("(undefined)")) +
                        ", expected the ids' " + ids.shape().str());
    const std::vector<std::int32_t> host = targets.contiguous().to_vector();
    const std::size_t length = static_cast<std::size_t>(ids.size(1));
    for (std::size_t r = 0; r < last.size(); ++r) {
      std::vector<std::int64_t> counted;
      for (std::size_t i = 0; i < length; ++i)
        if (host[r * length + i] != ignore_index) counted.push_back(static_cast<std::int64_t>(i));
      const std::string expected = "; expected one label, at the row's last non-padding position " + std::to_string(last[r]) +
                                   ", and " + std::to_string(ignore_index) + " elsewhere";
      if (counted.size() != 1)
        throw value_error(who + ": row " + std::to_string(r) + " has " + std::to_string(counted.size()) + " counted targets" + expected);
      if (counted[0] != last[r])
        throw value_error(who + ": row " + std::to_string(r) + " has its target at position " + std::to_string(counted[0]) + expected);
      const std::int32_t label = host[r * length + static_cast<std::size_t>(last[r])];
      if (label < 0 || label >= num_labels())
        throw value_error(who + ": row " + std::to_string(r) + " has label " + std::to_string(label) + "; expected 0.." +
                          std::to_string(num_labels() - 1));
    }
  }

  Model backbone_;
  std::int32_t pad_token_id_;
  std::vector<std::string> labels_;
  V score_;
};

namespace score_head_detail {

// num_labels and the label names from config.json: id2label (keys "0".."n-1"), else num_labels.
inline std::vector<std::string> read_labels(const io::json::Value& root, const std::string& source) {
  std::vector<std::string> names;
  const io::json::Value* id2label = root.find("id2label");
  if (id2label && !id2label->is_null()) {
    const io::json::Object& entries = id2label->as_object();
    names.assign(entries.size(), std::string());
    std::vector<bool> seen(entries.size(), false);
    for (const auto& [key, value] : entries) {
      std::size_t index = entries.size();
      if (!key.empty() && key.size() < 10 && key.find_first_not_of("0123456789") == std::string::npos) index = std::stoul(key);
      if (index >= entries.size() || std::to_string(index) != key || seen[index])
        id2label->fail("key \"" + key + "\" is not a label index; expected the keys \"0\" .. \"" +
                       std::to_string(entries.size() - 1) + "\", once each");
      seen[index] = true;
      names[index] = value.as_string();
    }
  }
  const io::json::Value* num_labels = root.find("num_labels");
  if (num_labels && !num_labels->is_null()) {
    const std::int64_t n = num_labels->as_int64();
    if (n < 1) num_labels->fail("expected at least 1 label, got " + std::to_string(n));
    if (!names.empty() && n != static_cast<std::int64_t>(names.size()))
      num_labels->fail(std::to_string(n) + " disagrees with id2label, which names " + std::to_string(names.size()) + " labels");
    if (names.empty()) names = default_labels(n);
  }
  if (names.empty())
    throw io_error("mote: " + source + ": neither \"id2label\" nor \"num_labels\" is given; expected the score head's labels");
  return names;
}

}  // namespace score_head_detail

// Loads a LlamaForSequenceClassification checkpoint directory: config.json is checked against the
// compiled Config, needs pad_token_id and the labels (id2label or num_labels); model.safetensors (or an
// index and shards) must hold every model.* parameter and score.weight [num_labels, d_model] in
// F32/F64/F16/BF16. No lm_head is needed; with strict, any tensor that is not one of these (but HF's
// rotary buffers) is refused. Errors name the file and the field or tensor.
template <class Model>
SequenceClassifier<Model> load_classifier(const std::filesystem::path& dir, nn::LoadOptions options = {}) {
  using Classifier = SequenceClassifier<Model>;
  using T = typename Classifier::T;
  static_assert(std::is_same_v<typename Classifier::B, cpu>,
                "mote::eval::load_classifier: checkpoints load into CPU models; move the model to another backend afterwards");
  const std::filesystem::path cfg_path = nn::checkpoint_detail::config_path(dir);
  const std::string source = cfg_path.string();
  const io::json::Value root = io::json::parse_file(cfg_path);
  const io::HFConfig file = io::HFConfig::from_json(root);
  nn::check_config<Model::config>(file, source);
  const io::json::Value* pad = root.find("pad_token_id");
  if (!pad || pad->is_null())
    throw io_error("mote: " + source + ": \"pad_token_id\" is missing; a score head reads each row at its last non-padding "
                   "token, so it needs the padding id");
  const std::int64_t pad_id = pad->as_int64();
  if (pad_id < std::numeric_limits<std::int32_t>::min() || pad_id > std::numeric_limits<std::int32_t>::max()) pad->fail("expected a 32-bit token id, got " + std::to_string(pad_id));
  std::vector<std::string> labels = score_head_detail::read_labels(root, source);
  const auto num_labels = static_cast<std::int64_t>(labels.size());
  Classifier classifier(nn::checkpoint_detail::make_model<Model>(file, source), num_labels, static_cast<std::int32_t>(pad_id), 0,
                        std::move(labels));

  const auto ck = io::safetensors::Checkpoint::open(dir);
  std::set<std::string> used;
  classifier.for_each_parameter([&](const std::string& name, typename Classifier::V& p) {
    if (!ck.has(name))
      throw value_error("mote: load_classifier: checkpoint '" + dir.string() + "' has no tensor '" + name + "' (expected shape " +
                        p.shape().str() + ")");
    const io::safetensors::TensorInfo& info = ck.info(name);
    if (!io::safetensors::is_float_dtype(info.dtype) || info.dtype == io::safetensors::Dtype::F8_E4M3 ||
        info.dtype == io::safetensors::Dtype::F8_E5M2)
      throw io_error("mote: " + ck.file_of(name).source() + ": tensor '" + name + "' is " + io::safetensors::dtype_name(info.dtype) +
                     "; expected F32, F64, F16 or BF16");
    if (info.shape != std::vector<std::int64_t>(p.shape().begin(), p.shape().end()))
      throw shape_error("mote: " + ck.file_of(name).source() + ": tensor '" + name + "' has shape " +
                        score_head_detail::dims_string(info.shape) + ", expected " + p.shape().str() +
                        (name == "score.weight" ? " ([num_labels, hidden_size])" : ""));
    used.insert(name);
  });
  if (options.strict)
    for (const std::string& name : ck.names()) {
      const std::string buffer = ".rotary_emb.inv_freq";
      const bool is_buffer = name.size() >= buffer.size() && name.compare(name.size() - buffer.size(), buffer.size(), buffer) == 0;
      if (!used.count(name) && !is_buffer)
        throw value_error("mote: load_classifier: unexpected tensor '" + name + "' in checkpoint '" + dir.string() +
                          "' (strict load; a LlamaForSequenceClassification has model.* and score.weight only)");
    }
  // Copy only after every check passed.
  classifier.for_each_parameter(
      [&](const std::string& name, typename Classifier::V& p) { p.mutable_value().copy_from(ck.template tensor<T>(name)); });
  return classifier;
}

// One classification example: token ids and its label (0 .. num_labels - 1).
struct ClassificationExample {
  std::vector<std::int32_t> ids;
  std::int32_t label = 0;
};

// A train::Dataset of (token ids, label) examples for a SequenceClassifier. Each row is right-padded
// with pad_token_id; its target is the label at the row's last non-padding token (-100 elsewhere), and
// its target group is the label, so the Trainer reports evaluation loss per label. An example longer
// than max_seq (or than a fixed length) keeps its first tokens: the cut-off tail is not seen.
template <Real T, Backend B = cpu>
class ClassificationData {
 public:
  ClassificationData(std::vector<ClassificationExample> examples, ClassificationDataOptions options)
      : examples_(std::move(examples)), options_(std::move(options)) {
    const std::string who = "mote: eval::ClassificationData";
    score_head_detail::check_labels(options_.labels, who);
    if (options_.max_seq < 1) throw value_error(who + ": max_seq = " + std::to_string(options_.max_seq) + "; expected the model's context, >= 1");
    if (options_.length < 0 || options_.length > options_.max_seq)
      throw value_error(who + ": length = " + std::to_string(options_.length) + "; expected 0 (each batch's longest row) .. max_seq = " +
                        std::to_string(options_.max_seq));
    const std::int64_t keep = options_.length > 0 ? options_.length : options_.max_seq;
    const auto labels = static_cast<std::int32_t>(options_.labels.size());
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    const auto mix = [&](std::int64_t v) {
      for (int i = 0; i < 8; ++i) {
        hash ^= static_cast<std::uint64_t>(v >> (8 * i)) & 0xffu;
        hash *= 0x100000001b3ULL;
      }
    };
    for (std::size_t e = 0; e < examples_.size(); ++e) {
      ClassificationExample& ex = examples_[e];
      if (ex.label < 0 || ex.label >= labels)
        throw value_error(who + ": example " + std::to_string(e) + " has label " + std::to_string(ex.label) + "; expected 0.." +
                          std::to_string(labels - 1));
      if (static_cast<std::int64_t>(ex.ids.size()) > keep) {
        ex.ids.resize(static_cast<std::size_t>(keep));
        ++truncated_;
      }
      const std::int64_t last = score_head_detail::last_non_pad(ex.ids, options_.pad_token_id);
      if (last < 0)
        throw value_error(who + ": example " + std::to_string(e) + " has no token but padding (pad_token_id " +
                          std::to_string(options_.pad_token_id) + "); expected at least one token to classify");
      last_.push_back(last);
      mix(ex.label);
      mix(static_cast<std::int64_t>(ex.ids.size()));
      for (const std::int32_t id : ex.ids) mix(id);
    }
    std::string names;
    for (std::size_t i = 0; i < options_.labels.size(); ++i) names += (i ? ", " : "") + options_.labels[i];
    fingerprint_ = "eval::ClassificationData: " + std::to_string(examples_.size()) + " examples, labels [" + names + "], pad " +
                   std::to_string(options_.pad_token_id) + ", max_seq " + std::to_string(options_.max_seq) + ", length " +
                   std::to_string(options_.length) + ", content " + std::to_string(hash);
  }

  std::size_t size() const noexcept { return examples_.size(); }
  std::vector<std::string> group_names() const { return options_.labels; }
  std::string fingerprint() const { return fingerprint_; }
  // The examples as batches hold them (truncated where they were too long).
  const std::vector<ClassificationExample>& examples() const noexcept { return examples_; }
  std::size_t truncated() const noexcept { return truncated_; }

  train::Batch<T, B> batch(std::span<const std::size_t> indices, std::uint64_t /*epoch: nothing is redrawn*/) const {
    if (indices.empty()) throw value_error("mote: eval::ClassificationData::batch: no examples asked for");
    std::int64_t length = options_.length;
    for (const std::size_t i : indices) {
      if (i >= examples_.size())
        throw value_error("mote: eval::ClassificationData::batch: example " + std::to_string(i) + " of " +
                          std::to_string(examples_.size()) + " asked for");
      if (options_.length == 0) length = std::max(length, static_cast<std::int64_t>(examples_[i].ids.size()));
    }
    const auto rows = static_cast<std::int64_t>(indices.size());
    const auto cells = static_cast<std::size_t>(rows * length);
    std::vector<std::int32_t> ids(cells, options_.pad_token_id), targets(cells, -100);
    train::Batch<T, B> out;
    out.target_groups.assign(cells, -1);
    for (std::size_t r = 0; r < indices.size(); ++r) {
      const ClassificationExample& ex = examples_[indices[r]];
      const std::size_t row = r * static_cast<std::size_t>(length);
      std::copy(ex.ids.begin(), ex.ids.end(), ids.begin() + static_cast<std::ptrdiff_t>(row));
      const std::size_t at = row + static_cast<std::size_t>(last_[indices[r]]);
      targets[at] = ex.label;
      out.target_groups[at] = ex.label;
      out.tokens += static_cast<std::int64_t>(ex.ids.size());
    }
    out.ids = Tensor<std::int32_t, B>::from_vector({rows, length}, ids);
    out.targets = Tensor<std::int32_t, B>::from_vector({rows, length}, targets);
    out.examples = rows;
    return out;
  }

 private:
  std::vector<ClassificationExample> examples_;
  ClassificationDataOptions options_;
  std::vector<std::int64_t> last_;  // each example's last non-padding position
  std::size_t truncated_ = 0;
  std::string fingerprint_;
};

}  // namespace mote::eval
