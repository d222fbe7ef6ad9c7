// SGD and AdamW against torch.optim trajectories (tests/reference/make_optim_fixtures.py),
// exact save/restore of their state, the typed errors of a bad state file, and a tiny fit.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "mote/mote.hpp"
#include "op_harness.hpp"

using namespace mote;
using testing::expect_error;
using optim::AdamW;
using optim::ParamGroup;
using optim::SGD;

namespace {

using Fixture = std::map<std::string, std::vector<double>>;

// Lines "key v1 v2 ..."; '#' starts a comment line.
Fixture read_fixture(const std::string& name) {
  const std::string path = std::string(MOTE_TEST_FIXTURES) + "/" + name;
  std::ifstream in(path);
  BOOST_REQUIRE_MESSAGE(in, "cannot open fixture " << path << "; run tests/reference/make_optim_fixtures.py");
  Fixture f;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string key;
    words >> key;
    std::vector<double> values;
    for (std::string w; words >> w;) values.push_back(std::stod(w));
    f[key] = std::move(values);
  }
  return f;
}

const std::vector<double>& entry(const Fixture& f, const std::string& key) {
  const auto it = f.find(key);
  BOOST_REQUIRE_MESSAGE(it != f.end(), "fixture lacks '" << key << "'");
  return it->second;
}

double hyper(const Fixture& f, const std::string& name) { return entry(f, "hyper:" + name).at(0); }

Shape fixture_shape(const Fixture& f, const std::string& param) {
  const auto& dims = entry(f, "shape:" + param);
  return Shape(dims.begin(), dims.end());
}

template <class T>
Tensor<T> fixture_tensor(const Fixture& f, const std::string& key, const Shape& shape) {
  const auto& v = entry(f, key);
  return Tensor<T>::from_vector(shape, std::vector<T>(v.begin(), v.end()));
}

// The fixture's two parameters in its two groups: "w" (optimizer defaults) and "b" (overrides).
template <class T>
struct FixtureModel {
  Var<T> w, b;
  std::vector<ParamGroup<T, cpu>> groups(const Fixture& f) const {
    return {{.name = "w", .params = {w}},
            {.name = "b",
             .params = {b},
             .lr_scale = static_cast<T>(entry(f, "group:b:lr_scale").at(0)),
             .weight_decay = static_cast<T>(entry(f, "group:b:weight_decay").at(0))}};
  }
};

template <class T>
FixtureModel<T> fixture_model(const Fixture& f) {
  return {Var<T>::parameter(fixture_tensor<T>(f, "init:w", fixture_shape(f, "w"))),
          Var<T>::parameter(fixture_tensor<T>(f, "init:b", fixture_shape(f, "b")))};
}

template <class T>
optim::SGDOptions<T> sgd_options(const Fixture& f) {
  return {.lr = static_cast<T>(hyper(f, "lr")),
          .momentum = static_cast<T>(hyper(f, "momentum")),
          .dampening = static_cast<T>(hyper(f, "dampening")),
          .nesterov = hyper(f, "nesterov") != 0,
          .weight_decay = static_cast<T>(hyper(f, "weight_decay"))};
}

template <class T>
optim::AdamWOptions<T> adamw_options(const Fixture& f) {
  return {.lr = static_cast<T>(hyper(f, "lr")),
          .beta1 = static_cast<T>(hyper(f, "beta1")),
          .beta2 = static_cast<T>(hyper(f, "beta2")),
          .eps = static_cast<T>(hyper(f, "eps")),
          .weight_decay = static_cast<T>(hyper(f, "weight_decay"))};
}

// Feeds the fixture's gradients step by step and compares the parameters after each step.
template <class T, class Opt>
void replay(const Fixture& f, FixtureModel<T>& model, Opt& opt, double tol) {
  const int steps = static_cast<int>(entry(f, "steps").at(0));
  for (int step = 1; step <= steps; ++step) {
    opt.zero_grad();
    for (auto* p : {&model.w, &model.b}) {
      const std::string name = p == &model.w ? "w" : "b";
      const std::string key = "grad:" + std::to_string(step) + ":" + name;
      if (f.count(key)) p->mutable_grad() = fixture_tensor<T>(f, key, p->shape());
    }
    opt.step();
    for (auto* p : {&model.w, &model.b}) {
      const std::string name = p == &model.w ? "w" : "b";
      const auto& expected = entry(f, "param:" + std::to_string(step) + ":" + name);
      const double err = testing::relative_error(testing::as_double(p->value().to_vector()), expected);
      BOOST_TEST(err < tol, "step " << step << ", parameter " << name << ": relative error " << err);
    }
  }
  BOOST_TEST(opt.step_count() == steps);
}

// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("mote_test_optim_" + std::to_string(rd()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Deterministic per-step gradients for the save/restore runs; b gets none on step 2.
template <class T>
void feed(FixtureModel<T>& m, int step) {
  m.w.zero_grad();
  m.b.zero_grad();
  std::vector<T> gw(6), gb(3);
  for (std::size_t i = 0; i < gw.size(); ++i) gw[i] = static_cast<T>(std::sin(0.7 * double(i) + 1.9 * step));
  for (std::size_t i = 0; i < gb.size(); ++i) gb[i] = static_cast<T>(std::cos(1.3 * double(i) - 0.4 * step));
  m.w.mutable_grad() = Tensor<T>::from_vector({2, 3}, gw);
  if (step != 2) m.b.mutable_grad() = Tensor<T>::from_vector({3}, gb);
}

template <class T>
FixtureModel<T> small_model() {
  return {Var<T>::parameter(Tensor<T>::from_vector({2, 3}, {T(0.5), T(-1), T(0.25), T(2), T(-0.75), T(1)})),
          Var<T>::parameter(Tensor<T>::from_vector({3}, {T(0.1), T(-0.2), T(0.3)}))};
}

template <class T>
std::vector<ParamGroup<T, cpu>> small_groups(const FixtureModel<T>& m) {
  return {{.name = "weights", .params = {m.w}},
          {.name = "biases", .params = {m.b}, .lr_scale = T(0.5), .weight_decay = T(0)}};
}

// 3 steps, save, 3 more; versus a fresh model and optimizer restored from the file: identical bits.
template <class Opt, class Options>
void check_save_restore(const Options& options, const std::string& file) {
  using T = double;
  TempDir dir;
  auto a = small_model<T>();
  Opt opt_a(small_groups(a), options);
  for (int s = 1; s <= 3; ++s) {
    feed(a, s);
    opt_a.step();
  }
  opt_a.save_state(dir / file);
  const auto w_mid = a.w.value().clone(), b_mid = a.b.value().clone();
  const auto memory_state = opt_a.state();
  for (int s = 4; s <= 6; ++s) {
    feed(a, s);
    opt_a.step();
  }

  for (int from_memory = 0; from_memory < 2; ++from_memory) {
    FixtureModel<T> b{Var<T>::parameter(w_mid.clone()), Var<T>::parameter(b_mid.clone())};
    Opt opt_b(small_groups(b), options);
    if (from_memory)
      opt_b.load_state(memory_state);
    else
      opt_b.load_state(dir / file);
    BOOST_TEST(opt_b.step_count() == 3);
    for (int s = 4; s <= 6; ++s) {
      feed(b, s);
      opt_b.step();
    }
    BOOST_TEST(a.w.value().to_vector() == b.w.value().to_vector(),
               "w differs after restore (from_memory " << from_memory << ")");
    BOOST_TEST(a.b.value().to_vector() == b.b.value().to_vector(),
               "b differs after restore (from_memory " << from_memory << ")");
    BOOST_TEST(opt_b.step_count() == 6);
  }
  // The temporary file of the atomic write is gone.
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path)) ++files;
  BOOST_TEST(files == 1);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_optim)

BOOST_AUTO_TEST_CASE(adamw_matches_torch) {
  for (const char* name : {"optim_adamw_default.txt", "optim_adamw_custom.txt"}) {
    BOOST_TEST_CONTEXT(name) {
      const auto f = read_fixture(name);
      auto m = fixture_model<double>(f);
      AdamW<double> opt(m.groups(f), adamw_options<double>(f));
      replay(f, m, opt, 1e-12);
      // The same run in float stays close to the float64 reference.
      auto mf = fixture_model<float>(f);
      AdamW<float> opt_f(mf.groups(f), adamw_options<float>(f));
      replay(f, mf, opt_f, 1e-5);
    }
  }
}

BOOST_AUTO_TEST_CASE(sgd_matches_torch) {
  for (const char* name : {"optim_sgd_plain.txt", "optim_sgd_momentum.txt", "optim_sgd_nesterov.txt"}) {
    BOOST_TEST_CONTEXT(name) {
      const auto f = read_fixture(name);
      auto m = fixture_model<double>(f);
      SGD<double> opt(m.groups(f), sgd_options<double>(f));
      replay(f, m, opt, 1e-12);
      auto mf = fixture_model<float>(f);
      SGD<float> opt_f(mf.groups(f), sgd_options<float>(f));
      replay(f, mf, opt_f, 1e-5);
    }
  }
}

BOOST_AUTO_TEST_CASE(adamw_defaults_are_torchs) {
  const optim::AdamWOptions<double> o;
  BOOST_TEST(o.beta1 == 0.9);
  BOOST_TEST(o.beta2 == 0.999);
  BOOST_TEST(o.eps == 1e-8);
  BOOST_TEST(o.weight_decay == 0.01);
}

BOOST_AUTO_TEST_CASE(step_skips_parameters_without_gradient) {
  auto m = small_model<double>();
  AdamW<double> opt(small_groups(m));
  const auto w0 = m.w.value().to_vector(), b0 = m.b.value().to_vector();
  m.w.mutable_grad().fill(1.0);
  opt.step();
  BOOST_TEST((m.w.value().to_vector() != w0));
  BOOST_TEST(m.b.value().to_vector() == b0);
  const auto state = opt.state();
  BOOST_TEST(state.params[0].step == 1);
  BOOST_TEST(state.params[1].step == 0);
  BOOST_TEST(!state.params[1].buffers[0].has_value());
  BOOST_TEST(opt.step_count() == 1);

  opt.zero_grad();
  BOOST_TEST(!m.w.grad().defined());
  BOOST_TEST(!m.b.grad().defined());
  const auto w1 = m.w.value().to_vector();
  opt.step();  // nothing has a gradient: nothing moves
  BOOST_TEST(m.w.value().to_vector() == w1);
  BOOST_TEST(opt.step_count() == 2);
}

BOOST_AUTO_TEST_CASE(groups_lr_schedule_and_names) {
  auto m = small_model<double>();
  SGD<double> opt(small_groups(m), {.lr = 0.1, .weight_decay = 0.01});
  BOOST_TEST(opt.group_lr(0) == 0.1);
  BOOST_TEST(opt.group_lr(1) == 0.05);
  BOOST_TEST(opt.group_weight_decay(0) == 0.01);
  BOOST_TEST(opt.group_weight_decay(1) == 0.0);
  opt.set_lr(0.2);
  BOOST_TEST(opt.lr() == 0.2);
  BOOST_TEST(opt.group_lr(1) == 0.1);
  BOOST_CHECK_THROW(opt.set_lr(-1.0), value_error);
  BOOST_CHECK_THROW(opt.group_lr(2), value_error);

  const auto named = opt.named_parameters();
  BOOST_REQUIRE(named.size() == 2u);
  BOOST_TEST(named[0].name == "weights.0");
  BOOST_TEST(named[1].name == "biases.0");
  BOOST_TEST(named[1].param.node() == m.b.node());

  // Plain SGD with the schedule's lr: p -= lr * (g + wd * p), the biases at half the lr and no decay.
  m.w.mutable_grad().fill(1.0);
  m.b.mutable_grad().fill(1.0);
  const double w0 = m.w.value().at({0, 0}), b0 = m.b.value().at({0});
  opt.step();
  BOOST_TEST(m.w.value().at({0, 0}) == w0 - 0.2 * (1.0 + 0.01 * w0), boost::test_tools::tolerance(1e-15));
  BOOST_TEST(m.b.value().at({0}) == b0 - 0.1 * 1.0, boost::test_tools::tolerance(1e-15));

  // A one-group optimizer from a plain parameter list.
  AdamW<double> single(std::vector<Var<double>>{m.w, m.b});
  BOOST_TEST(single.named_parameters()[1].name == "params.1");
}

BOOST_AUTO_TEST_CASE(bad_construction_throws_value_error) {
  auto m = small_model<double>();
  using Groups = std::vector<ParamGroup<double, cpu>>;
  expect_error<value_error>([&] { SGD<double> o(Groups{}); }, {"no parameter groups"});
  expect_error<value_error>(
      [&] {
        SGD<double> o(Groups{{.name = "a", .params = {m.w}}, {.name = "a", .params = {m.b}}});
      },
      {"'a'", "unique"});
  expect_error<value_error>(
      [&] {
        SGD<double> o(Groups{{.name = "a", .params = {m.w}}, {.name = "b", .params = {m.w}}});
      },
      {"b.0", "already"});
  expect_error<value_error>([&] { SGD<double> o(Groups{{.name = "", .params = {m.w}}}); }, {"empty name"});
  expect_error<value_error>([&] { SGD<double> o(Groups{{.name = "a", .params = {Var<double>()}}}); },
                            {"a.0", "empty Var"});
  // A Var over an undefined tensor is refused before it can reach an optimizer.
  expect_error<value_error>([&] { Var<double> undefined_value{Tensor<double>()}; }, {"Var", "undefined"});
  const auto y = m.w + m.w;
  expect_error<value_error>([&] { SGD<double> o(Groups{{.name = "a", .params = {y}}}); }, {"a.0", "'add'", "leaf"});
  expect_error<value_error>([&] { SGD<double> o({m.w}, {.lr = -0.1}); }, {"lr"});
  expect_error<value_error>([&] { SGD<double> o({m.w}, {.lr = 0.1, .nesterov = true}); }, {"nesterov"});
  expect_error<value_error>([&] { AdamW<double> o({m.w}, {.beta1 = 1.0}); }, {"beta1"});
  expect_error<value_error>([&] { AdamW<double> o({m.w}, {.beta2 = -0.5}); }, {"beta2"});
  expect_error<value_error>([&] { AdamW<double> o({m.w}, {.eps = std::nan("")}); }, {"eps"});
  expect_error<value_error>([&] { AdamW<double> o(Groups{{.name = "a", .params = {m.w}, .weight_decay = -1.0}}); },
                            {"a.weight_decay"});
}

BOOST_AUTO_TEST_CASE(shape_changes_behind_the_optimizer_throw) {
  auto m = small_model<double>();
  SGD<double> opt({m.w});
  m.w.mutable_grad() = Tensor<double>::zeros({3, 2});
  expect_error<shape_error>([&] { opt.step(); }, {"params.0", "[3, 2]", "[2, 3]"});

  // A value reassigned with another shape no longer fits the moment buffers.
  AdamW<double> adam({m.b});
  m.b.mutable_grad().fill(1.0);
  adam.step();
  m.b.mutable_value() = Tensor<double>::zeros({4});
  m.b.mutable_grad() = Tensor<double>::zeros({4});
  expect_error<shape_error>([&] { adam.step(); }, {"params.0", "[4]", "[3]"});
}

BOOST_AUTO_TEST_CASE(adamw_save_restore_is_exact) {
  check_save_restore<AdamW<double>>(optim::AdamWOptions<double>{.lr = 0.05, .weight_decay = 0.1}, "adamw.state");
}

BOOST_AUTO_TEST_CASE(sgd_save_restore_is_exact) {
  check_save_restore<SGD<double>>(
      optim::SGDOptions<double>{.lr = 0.05, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01}, "sgd.state");
  check_save_restore<SGD<double>>(optim::SGDOptions<double>{.lr = 0.05}, "plain.state");
}

BOOST_AUTO_TEST_CASE(bad_state_files_throw_typed_errors) {
  TempDir dir;
  auto m = small_model<double>();
  AdamW<double> opt(small_groups(m));
  for (int s = 1; s <= 2; ++s) {
    feed(m, s);
    opt.step();
  }
  const auto good = dir / "good.state";
  opt.save_state(good);
  const std::string bytes = read_bytes(good);
  auto keep = small_model<double>();
  const auto fresh = [&] { return AdamW<double>(small_groups(keep)); };

  expect_error<io_error>([&] { fresh().load_state(dir / "missing.state"); }, {"missing.state", "cannot open"});

  const auto truncated = dir / "truncated.state";
  write_bytes(truncated, bytes.substr(0, bytes.size() / 2));
  expect_error<io_error>([&] { fresh().load_state(truncated); }, {"truncated.state"});
  write_bytes(truncated, bytes.substr(0, 6));
  expect_error<io_error>([&] { fresh().load_state(truncated); }, {"truncated.state", "truncated"});
  write_bytes(truncated, bytes.substr(0, bytes.size() - 1));
  expect_error<io_error>([&] { fresh().load_state(truncated); }, {"truncated.state"});

  const auto corrupt = dir / "corrupt.state";
  std::string flipped = bytes;
  flipped[flipped.size() - 20] = static_cast<char>(flipped[flipped.size() - 20] ^ 0x10);
  write_bytes(corrupt, flipped);
  expect_error<io_error>([&] { fresh().load_state(corrupt); }, {"corrupt.state", "checksum"});

  std::string bad_magic = bytes;
  bad_magic[0] = 'X';
  write_bytes(corrupt, bad_magic);
  expect_error<io_error>([&] { fresh().load_state(corrupt); }, {"corrupt.state", "magic"});

  std::string bad_version = bytes;
  bad_version[8] = 99;
  write_bytes(corrupt, bad_version);
  expect_error<io_error>([&] { fresh().load_state(corrupt); }, {"corrupt.state", "version 99"});

  // float32 state into a float64 optimizer.
  auto mf = small_model<float>();
  AdamW<float> opt_f(small_groups(mf));
  const auto float_file = dir / "float.state";
  opt_f.save_state(float_file);
  expect_error<io_error>([&] { fresh().load_state(float_file); }, {"float.state", "float32", "float64"});

  // SGD state into AdamW.
  SGD<double> sgd(small_groups(m), {.lr = 0.1, .momentum = 0.9});
  const auto sgd_file = dir / "sgd.state";
  sgd.save_state(sgd_file);
  expect_error<io_error>([&] { fresh().load_state(sgd_file); }, {"sgd.state", "'sgd'", "'adamw'"});

  // Same names, another shape.
  FixtureModel<double> other{Var<double>::parameter(Tensor<double>::zeros({3, 2})),
                             Var<double>::parameter(Tensor<double>::zeros({3}))};
  AdamW<double> reshaped(small_groups(other));
  expect_error<shape_error>([&] { reshaped.load_state(good); }, {"good.state", "weights.0", "[2, 3]", "[3, 2]"});

  // Other group names, and another parameter count.
  AdamW<double> renamed(
      std::vector<ParamGroup<double, cpu>>{{.name = "weights", .params = {m.w}}, {.name = "bias", .params = {m.b}}});
  expect_error<io_error>([&] { renamed.load_state(good); }, {"good.state", "biases.0", "bias.0"});
  AdamW<double> fewer(std::vector<ParamGroup<double, cpu>>{{.name = "weights", .params = {m.w}}});
  expect_error<io_error>([&] { fewer.load_state(good); }, {"good.state", "2 parameters"});

  // A failed load leaves the optimizer as it was.
  BOOST_TEST(reshaped.step_count() == 0);
  BOOST_TEST(!reshaped.state().params[0].buffers[0].has_value());

  // An in-memory state whose buffer length disagrees with its shape.
  auto state = opt.state();
  state.params[0].buffers[0]->pop_back();
  expect_error<shape_error>([&] { fresh().load_state(state); }, {"weights.0", "5 values"});

  // A directory that does not exist.
  expect_error<io_error>([&] { opt.save_state(dir / "no" / "such" / "dir.state"); }, {"dir.state"});
}

BOOST_AUTO_TEST_CASE(adamw_fits_a_tiny_linear_model) {
  // y = x W + c for a fixed W*, c*; AdamW drives the mean squared error down.
  Rng rng(7);
  const auto x = Var<double>(Tensor<double>::uniform({16, 3}, -1, 1, rng));
  const auto w_true = Var<double>(Tensor<double>::from_vector({3, 2}, {1.5, -2.0, 0.5, 1.0, -1.0, 0.25}));
  const auto c_true = Var<double>(Tensor<double>::from_vector({2}, {0.3, -0.7}));
  Var<double> y;
  {
    no_grad off;
    y = matmul(x, w_true) + c_true;
  }
  auto w = Var<double>::parameter(Tensor<double>::zeros({3, 2}));
  auto c = Var<double>::parameter(Tensor<double>::zeros({2}));
  AdamW<double> opt({{.name = "weights", .params = {w}}, {.name = "biases", .params = {c}, .weight_decay = 0.0}},
                    {.lr = 0.05, .weight_decay = 0.0});
  std::vector<double> losses;
  for (int it = 0; it < 200; ++it) {
    opt.zero_grad();
    const auto err = matmul(x, w) + c - y;
    auto loss = mean(err * err);
    losses.push_back(loss.item());
    loss.backward();
    opt.step();
  }
  BOOST_TEST(losses.back() < 0.01 * losses.front(), "loss " << losses.front() << " -> " << losses.back());
  BOOST_TEST(losses[50] < losses[0]);
}

BOOST_AUTO_TEST_SUITE_END()
