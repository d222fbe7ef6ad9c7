// The score head: CausalLM::hidden_states, SequenceClassifier against the PyTorch fixture of a
// LlamaForSequenceClassification (scores, loss, every gradient), its files and their errors,
// ClassificationData's batches, training with Trainer + WholeModel, and ClassifierJudge.
#include "op_harness.hpp"
#include "test_files.hpp"
#include "tiny_tokenizer.hpp"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "mote/eval/eval.hpp"
#include "mote/io/json.hpp"
#include "mote/io/safetensors.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/nn/nn.hpp"
#include "mote/train/train.hpp"

using namespace mote;
using mote::testing::expect_error;
using mote::testing::TempDir;
namespace fs = std::filesystem;
namespace st = mote::io::safetensors;

namespace {

using Llama = nn::CausalLM<presets::tiny_llama, double>;
using Classifier = eval::SequenceClassifier<Llama>;
const std::string fixture_name = "score_head_tiny_llama";

fs::path fixture_dir() { return mote::testing::fixture_path(fixture_name); }

// A copy of the fixture's checkpoint directory, to damage.
void copy_fixture(const fs::path& dir) {
  for (const char* file : {"config.json", "model.safetensors"})
    fs::copy_file(fixture_dir() / file, dir / file, fs::copy_options::overwrite_existing);
}

// -100 everywhere but each row's label at its last position.
Tensor<std::int32_t> targets_for(const Tensor<std::int32_t>& ids, const std::vector<std::int64_t>& last, const std::vector<std::int32_t>& labels) {
  const std::int64_t length = ids.size(1);
  std::vector<std::int32_t> t(static_cast<std::size_t>(ids.numel()), -100);
  for (std::size_t r = 0; r < labels.size(); ++r) t[r * static_cast<std::size_t>(length) + static_cast<std::size_t>(last[r])] = labels[r];
  return Tensor<std::int32_t>::from_vector(ids.shape(), t);
}

std::vector<std::int32_t> int_values(const mote::testing::TextFixture& f, const std::string& name) {
  std::vector<std::int32_t> out;
  for (const double v : f.entry(name).values) out.push_back(static_cast<std::int32_t>(v));
  return out;
}

std::vector<double> softmax(std::vector<double> x) {
  double top = x[0], total = 0;
  for (const double v : x) top = std::max(top, v);
  for (double& v : x) total += v = std::exp(v - top);
  for (double& v : x) v /= total;
  return x;
}


eval::EvalItem item(const std::string& id, const std::string& question) {
  return eval::EvalItem{.id = id, .question = question, .kind = eval::ItemKind::benign, .category = "", .expected = {}};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_score_head)

BOOST_AUTO_TEST_CASE(hidden_states_are_the_logits_before_the_lm_head) {
  Llama model(3);
  const auto ids = Tensor<std::int32_t>::from_vector({2, 5}, {1, 7, 3, 63, 0, 12, 5, 5, 40, 2});
  const auto hidden = model.hidden_states(ids);
  BOOST_TEST(hidden.shape() == (Shape{2, 5, presets::tiny_llama.d_model}));
  Var<double> head;
  for (auto& [name, p] : model.named_parameters())
    if (name == "lm_head.weight") head = p;
  const auto expected = autograd::linear(hidden, head).value().to_vector();
  BOOST_TEST(mote::testing::relative_error(model.logits(ids).value().to_vector(), expected) < 1e-12);
  expect_error<value_error>([&] { model.hidden_states(ids, {.logits_to_keep = 1}); }, {"hidden_states", "logits_to_keep = 1"});
  expect_error<shape_error>([&] { model.hidden_states(Tensor<std::int32_t>::from_vector({3}, {1, 2, 3})); }, {"[batch, length]"});
}

BOOST_AUTO_TEST_CASE(matches_pytorch_scores_loss_and_gradients) {
  static_assert(train::CausalModel<Classifier>);
  const auto f = mote::testing::load_text_fixture(fixture_name);
  Classifier clf = eval::load_classifier<Llama>(fixture_dir());
  BOOST_TEST(clf.num_labels() == 3);
  BOOST_TEST(clf.pad_token_id() == 0);
  BOOST_TEST((clf.labels() == std::vector<std::string>{"safe", "unsafe", "unsure"}));

  const auto ids = f.tensor<std::int32_t>("ids");
  const std::vector<std::int64_t> last = clf.last_token_positions(ids);
  const std::vector<std::int32_t> fixture_last = int_values(f, "last");
  BOOST_TEST((last == std::vector<std::int64_t>(fixture_last.begin(), fixture_last.end())));

  const auto scores = clf.scores(ids);
  BOOST_TEST(scores.shape() == (Shape{3, 3}));
  BOOST_TEST(mote::testing::relative_error(scores.value().to_vector(), f.entry("scores").values) < 1e-10);
  // The per-position logits hold the same scores at each row's last token.
  const auto logits = clf.logits(ids).value().to_vector();
  for (std::size_t r = 0; r < 3; ++r)
    for (std::size_t k = 0; k < 3; ++k)
      BOOST_TEST(std::abs(logits[(r * 8 + static_cast<std::size_t>(last[r])) * 3 + k] - f.entry("scores").values[r * 3 + k]) < 1e-10);

  auto loss = clf.loss(ids, targets_for(ids, last, int_values(f, "labels")));
  const double expected_loss = f.entry("loss").values[0];
  BOOST_TEST(std::abs(loss.item() - expected_loss) < 1e-10 * expected_loss);
  loss.backward();
  std::set<std::string> names;
  clf.for_each_parameter([&](const std::string& name, Var<double>& p) {
    BOOST_TEST_CONTEXT("gradient of " << name) {
      BOOST_REQUIRE(p.grad().defined());
      BOOST_TEST(mote::testing::relative_error(p.grad().to_vector(), f.entry("grad." + name).values) < 1e-10);
    }
    names.insert(name);
  });
  std::set<std::string> expected_names;
  for (const auto& [name, e] : f.tensors)
    if (name.rfind("grad.", 0) == 0) expected_names.insert(name.substr(5));
  BOOST_TEST((names == expected_names));
  BOOST_TEST(!names.count("lm_head.weight"));
  BOOST_TEST(names.count("score.weight"));
}

BOOST_AUTO_TEST_CASE(save_and_load_round_trip) {
  TempDir d("score_head_save");
  Classifier made(Llama(4), 2, 5, 9, {"good", "bad"});
  made.save(d.path, st::Dtype::F64);
  const io::json::Value cfg = io::json::parse_file(d.path / "config.json");
  BOOST_TEST(cfg.at("architectures").at(std::size_t{0}).as_string() == "LlamaForSequenceClassification");
  BOOST_TEST(cfg.at("num_labels").as_int64() == 2);
  BOOST_TEST(cfg.at("id2label").at("1").as_string() == "bad");
  BOOST_TEST(cfg.at("label2id").at("good").as_int64() == 0);
  BOOST_TEST(cfg.at("pad_token_id").as_int64() == 5);
  BOOST_TEST(cfg.at("model_type").as_string() == "llama");
  const auto file = st::File::open(d.path / "model.safetensors");
  const std::vector<std::string> stored = file.names();
  BOOST_TEST((std::find(stored.begin(), stored.end(), "lm_head.weight") == stored.end()));
  BOOST_TEST((std::find(stored.begin(), stored.end(), "score.weight") != stored.end()));

  Classifier loaded = eval::load_classifier<Llama>(d.path);
  BOOST_TEST((loaded.labels() == made.labels()));
  BOOST_TEST(loaded.pad_token_id() == 5);
  const auto ids = Tensor<std::int32_t>::from_vector({2, 4}, {1, 2, 3, 5, 9, 5, 5, 5});
  BOOST_TEST((loaded.scores(ids).value().to_vector() == made.scores(ids).value().to_vector()));
  BOOST_TEST(loaded.num_parameters() == made.num_parameters());
  // The fixture saved and read back gives the fixture's scores.
  Classifier fixture = eval::load_classifier<Llama>(fixture_dir());
  TempDir again("score_head_again");
  fixture.save(again.path, st::Dtype::F64);
  const auto f = mote::testing::load_text_fixture(fixture_name);
  BOOST_TEST(mote::testing::relative_error(eval::load_classifier<Llama>(again.path).scores(f.tensor<std::int32_t>("ids")).value().to_vector(),
                                           f.entry("scores").values) < 1e-10);
}

BOOST_AUTO_TEST_CASE(bad_input_throws_typed_errors) {
  const Classifier clf = eval::load_classifier<Llama>(fixture_dir());
  const auto ids = Tensor<std::int32_t>::from_vector({2, 3}, {4, 5, 0, 0, 0, 0});
  expect_error<value_error>([&] { clf.scores(ids); }, {"row 1", "only padding"});
  const auto good = Tensor<std::int32_t>::from_vector({2, 3}, {4, 5, 0, 7, 0, 0});
  const auto targets = [](std::vector<std::int32_t> t) { return Tensor<std::int32_t>::from_vector({2, 3}, t); };
  expect_error<value_error>([&] { clf.loss(good, targets({-100, 5, -100, 1, -100, -100})); }, {"row 0", "label 5", "0..2"});
  expect_error<value_error>([&] { clf.loss(good, targets({2, -100, -100, 1, -100, -100})); },
                            {"row 0", "position 0", "last non-padding position 1"});
  expect_error<value_error>([&] { clf.loss(good, targets({-100, 1, -100, 1, 1, -100})); }, {"row 1", "2 counted targets"});
  expect_error<value_error>([&] { clf.loss(good, targets({-100, 1, -100, -100, -100, -100})); }, {"row 1", "0 counted targets"});
  expect_error<shape_error>([&] { clf.loss(good, Tensor<std::int32_t>::from_vector({6}, {0, 0, 0, 0, 0, 0})); }, {"targets", "[2, 3]"});
  expect_error<value_error>([] { Classifier(Llama(1), 0, 0); }, {"num_labels = 0"});
  expect_error<value_error>([] { Classifier(Llama(1), 2, 0, 0, {"a"}); }, {"1 label names", "num_labels = 2"});
  expect_error<value_error>([] { Classifier(Llama(1), 2, 0, 0, {"a", "a"}); }, {"\"a\"", "twice"});

  TempDir d("score_head_bad");
  const fs::path cfg_path = d.path / "config.json";
  const io::json::Value cfg = io::json::parse_file(fixture_dir() / "config.json");
  const auto with = [&](const char* key, io::json::Value v) {
    io::json::Value c = cfg;
    c.set(key, std::move(v));
    io::json::write_file(cfg_path, c);
  };
  copy_fixture(d.path);
  with("pad_token_id", nullptr);
  expect_error<io_error>([&] { eval::load_classifier<Llama>(d.path); }, {cfg_path.string(), "\"pad_token_id\" is missing"});
  with("id2label", io::json::Value::object({{"0", "a"}, {"2", "b"}}));
  expect_error<io_error>([&] { eval::load_classifier<Llama>(d.path); }, {"id2label", "key \"2\""});
  with("num_labels", 4);
  expect_error<io_error>([&] { eval::load_classifier<Llama>(d.path); }, {"num_labels", "id2label"});
  with("hidden_size", 64);
  expect_error<io_error>([&] { eval::load_classifier<Llama>(d.path); }, {cfg_path.string(), "hidden_size: 64 vs 32"});
  fs::remove(cfg_path);
  expect_error<io_error>([&] { eval::load_classifier<Llama>(d.path); }, {"no config.json"});

  // The weights: score.weight of the wrong shape, missing, and a stray tensor under strict.
  copy_fixture(d.path);
  const auto original = st::File::open(fixture_dir() / "model.safetensors");
  const auto rewrite = [&](const std::string& drop, const st::NamedTensors<double>& extra) {
    st::NamedTensors<double> tensors;
    for (const auto& name : original.names())
      if (name != drop) tensors.emplace_back(name, original.tensor<double>(name));
    for (const auto& t : extra) tensors.push_back(t);
    st::save<double>(d.path / "model.safetensors", tensors);
  };
  rewrite("score.weight", {{"score.weight", Tensor<double>::zeros({2, 32})}});
  expect_error<shape_error>([&] { eval::load_classifier<Llama>(d.path); }, {"model.safetensors", "'score.weight'", "[2, 32]", "[3, 32]"});
  rewrite("score.weight", {});
  expect_error<value_error>([&] { eval::load_classifier<Llama>(d.path); }, {d.path.string(), "no tensor 'score.weight'"});
  rewrite("", {{"lm_head.weight", Tensor<double>::zeros({64, 32})}});
  expect_error<value_error>([&] { eval::load_classifier<Llama>(d.path); }, {"unexpected tensor 'lm_head.weight'"});
  BOOST_TEST(eval::load_classifier<Llama>(d.path, {.strict = false}).num_labels() == 3);
}

BOOST_AUTO_TEST_CASE(classification_data_builds_targets_and_groups) {
  using Data = eval::ClassificationData<double>;
  static_assert(train::Dataset<Data, double>);
  eval::ClassificationDataOptions o{.pad_token_id = 0, .max_seq = 4, .labels = {"no", "yes"}, .length = 0};
  // The third example is cut to its first 4 tokens; the fourth ends in the pad id, which reads as padding.
  const Data data({{{5, 6}, 1}, {{7}, 0}, {{1, 2, 3, 4, 5, 6}, 1}, {{8, 9, 0}, 0}}, o);
  BOOST_TEST(data.size() == 4u);
  BOOST_TEST(data.truncated() == 1u);
  BOOST_TEST((data.group_names() == std::vector<std::string>{"no", "yes"}));
  BOOST_TEST(data.fingerprint().find("4 examples") != std::string::npos);
  BOOST_TEST(data.fingerprint().find("labels [no, yes]") != std::string::npos);

  const std::vector<std::size_t> all{0, 1, 2, 3};
  const auto b = data.batch(all, 0);
  BOOST_TEST(b.ids.shape() == (Shape{4, 4}));
  BOOST_TEST((b.ids.to_vector() == std::vector<std::int32_t>{5, 6, 0, 0, 7, 0, 0, 0, 1, 2, 3, 4, 8, 9, 0, 0}));
  BOOST_TEST((b.targets.to_vector() ==
              std::vector<std::int32_t>{-100, 1, -100, -100, 0, -100, -100, -100, -100, -100, -100, 1, -100, 0, -100, -100}));
  BOOST_TEST((b.target_groups == std::vector<std::int32_t>{-1, 1, -1, -1, 0, -1, -1, -1, -1, -1, -1, 1, -1, 0, -1, -1}));
  BOOST_TEST(b.examples == 4);
  BOOST_TEST(b.tokens == 2 + 1 + 4 + 3);
  // A batch pads to its own longest row; a fixed length pads every batch alike.
  const std::vector<std::size_t> short_ones{1, 0};
  BOOST_TEST(data.batch(short_ones, 0).ids.shape() == (Shape{2, 2}));
  o.length = 3;
  const Data fixed({{{5, 6}, 1}, {{1, 2, 3, 4, 5, 6}, 0}}, o);
  const std::vector<std::size_t> first{0};
  BOOST_TEST((fixed.batch(first, 0).ids.to_vector() == std::vector<std::int32_t>{5, 6, 0}));
  BOOST_TEST((fixed.examples()[1].ids == std::vector<std::int32_t>{1, 2, 3}));
  // The batches are what the classifier's loss accepts.
  const Classifier clf(Llama(2), 2, 0, 1, {"no", "yes"});
  BOOST_TEST(std::isfinite(clf.loss(b.ids, b.targets).item()));

  expect_error<value_error>([&] { Data({{{5}, 2}}, eval::ClassificationDataOptions{.pad_token_id = 0, .max_seq = 4, .labels = {"no", "yes"}, .length = 0}); },
                            {"example 0", "label 2", "0..1"});
  expect_error<value_error>([&] { Data({{{5}, 0}, {{0, 0}, 1}}, clf.data_options()); }, {"example 1", "padding"});
  expect_error<value_error>([&] { Data({}, eval::ClassificationDataOptions{.pad_token_id = 0, .max_seq = 4, .labels = {}, .length = 0}); },
                            {"no labels"});
}

BOOST_AUTO_TEST_CASE(trainer_with_whole_model_learns_a_separable_task) {
  // Label 1 when the sequence's tokens are large, 0 when they are small; lengths vary so padding matters.
  std::vector<eval::ClassificationExample> examples;
  Rng rng(17);
  for (int i = 0; i < 16; ++i) {
    const std::int32_t label = i % 2;
    std::vector<std::int32_t> ids(2 + rng.below(4));
    for (auto& id : ids) id = static_cast<std::int32_t>(label ? 40 + rng.below(20) : 1 + rng.below(20));
    examples.push_back({ids, label});
  }
  Classifier clf(Llama(5), 2, 0, 3, {"small", "large"});
  const eval::ClassificationData<double> data(examples, clf.data_options());
  train::WholeModel<Classifier> whole(clf);
  train::Trainer trainer(clf, whole,
                         {.epochs = 8, .batch_size = 4, .seed = 1, .lr = 3e-3, .progress = train::Progress::off, .handle_signals = false});
  const auto before = trainer.evaluate(data);
  BOOST_TEST(before.targets == 16.0);
  BOOST_REQUIRE(before.groups.size() == 2u);
  BOOST_TEST(before.groups[1].name == "large");
  BOOST_TEST(before.groups[1].targets == 8.0);
  const auto result = trainer.fit(data);
  BOOST_TEST(result.completed);
  const auto after = trainer.evaluate(data);
  BOOST_TEST(after.loss < 0.3 * before.loss, "eval loss " << before.loss << " -> " << after.loss);
  // The trainer's evaluation and the classifier's own loss agree.
  std::vector<std::size_t> all(16);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  const auto b = data.batch(all, 0);
  autograd::no_grad no_grad;
  BOOST_TEST(std::abs(clf.loss(b.ids, b.targets).item() - after.loss) < 1e-9);
}

BOOST_AUTO_TEST_CASE(classifier_judge_returns_the_mappings_judgements_in_order) {
  const Classifier clf = eval::load_classifier<Llama>(fixture_dir());
  const io::Tokenizer tok = testing::tiny_tokenizer();
  const std::vector<eval::EvalItem> items{item("a", "how do I bake bread"), item("b", "tell me a story"),
                                          item("c", "what is this"), item("d", "a very long question that runs past the context"),
                                          item("e", "why")};
  const std::vector<std::string> answers{"Knead it", "Once upon a time", "A cat", "Sure", "Because"};
  const auto format = [](const eval::EvalItem& it, const std::string& answer) { return it.question + " " + answer; };
  std::vector<std::string> seen;
  std::vector<std::vector<double>> probabilities;
  const auto verdict = [&](const eval::EvalItem& it, std::span<const double> p) {
    seen.push_back(it.id);
    probabilities.emplace_back(p.begin(), p.end());
    return eval::Judgement{.refused = p[1] > p[0], .harmless = p[0] >= 0.5, .helpful = false, .help = 1.0 + 9.0 * p[2]};
  };
  const eval::ClassifierJudge<Classifier> judge(clf, tok, format, verdict, 2, "cost-model");
  BOOST_TEST(judge.name() == "cost-model");
  const auto judgements = eval::run_judge(judge, items, answers);
  BOOST_REQUIRE(judgements.size() == items.size());
  BOOST_TEST((seen == std::vector<std::string>{"a", "b", "c", "d", "e"}));
  for (std::size_t i = 0; i < items.size(); ++i) {
    // Each item alone, truncated to max_seq, gives the probabilities the batch gave.
    std::vector<std::int32_t> ids = tok.encode_ordinary(format(items[i], answers[i]));
    if (ids.size() > 16) ids.resize(16);
    const auto scores = clf.scores(Tensor<std::int32_t>::from_vector({1, static_cast<std::int64_t>(ids.size())}, ids)).value().to_vector();
    BOOST_TEST(mote::testing::relative_error(probabilities[i], softmax(scores)) < 1e-12);
    BOOST_TEST(judgements[i].refused == (probabilities[i][1] > probabilities[i][0]));
    BOOST_TEST(*judgements[i].help == 1.0 + 9.0 * probabilities[i][2]);
  }
  // Text that encodes to nothing is named by its item.
  const std::vector<eval::EvalItem> empty_item{item("z", "x")};
  const std::vector<std::string> empty_answer{""};
  const eval::ClassifierJudge<Classifier> blank(clf, tok, [](const eval::EvalItem&, const std::string&) { return std::string(); }, verdict);
  expect_error<value_error>([&] { blank.judge(empty_item, empty_answer); }, {"item \"z\"", "padding"});
  expect_error<value_error>([&] { eval::ClassifierJudge<Classifier>(clf, tok, format, verdict, 0); }, {"batch_size = 0"});
}

BOOST_AUTO_TEST_SUITE_END()
