// The aligncot room: stages and pipelines, the chain format, chain -> sequences (routes, targets,
// positions, step-skip masks checked exhaustively against masks built another way), packing, the
// expanded data against the single pass (losses and gradients through a MoTE model in double), the
// dataset's batches, stage-token registration, and bad input.
#include "op_harness.hpp"
#include "test_files.hpp"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <map>
#include <numeric>
#include <sstream>
#include <set>
#include <string>
#include <vector>

#include "mote/aligncot/aligncot.hpp"
#include "mote/dist/communicator.hpp"
#include "mote/io/jsonl.hpp"
#include "mote/lora/lora.hpp"
#include "mote/nn/nn.hpp"
#include "mote/train/train.hpp"

using namespace mote;
using mote::testing::expect_error;
using mote::testing::relative_error;
using mote::testing::TempDir;
namespace ac = mote::aligncot;
namespace fs = std::filesystem;

namespace {

using Chain3 = ac::Pipeline<ac::QuestionAnalysis, ac::AnswerGuidance, ac::SafeAnswer>;

// A stage of the user's own, on the expert the analysis would use.
struct Reflection {
  static constexpr std::string_view name = "reflection";
  static constexpr std::string_view label = "Reflection";
  static constexpr std::string_view start_token = "<|reflect|>";
  static constexpr std::string_view end_token = "<|/reflect|>";
  static constexpr ac::StageRole role = ac::StageRole::step;
  static constexpr int expert = 0;
  static constexpr std::string_view default_template = "Question: {question}\n{context}Reflect:";
};
using Custom = ac::Pipeline<Reflection, ac::OnExpert<ac::SafeAnswer, 1>, ac::SafetyCheck>;

// Byte-level tokenizer: ids 0..255 are the bytes, no merges.
io::Tokenizer byte_tokenizer() {
  std::vector<std::pair<std::string, io::bpe::token_id>> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(io::bpe::byte_to_unicode()[static_cast<std::size_t>(b)], b);
  return io::Tokenizer(io::bpe::Model(vocab, {}, "bytes", [](std::size_t) { return std::string(); }));
}

// A Llama-style model over those bytes with room for short chains.
constexpr nn::Config byte_llama{.vocab = 256, .d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 64,
                                .max_seq = 96, .norm = nn::Norm::RMSNorm, .eps = 1e-5, .activation = nn::Activation::SwiGLU,
                                .positions = nn::Positions::RoPE, .rope_theta = 10000.0, .bias = false,
                                .tied_embeddings = false};

// A chain written by hand: question of q tokens, then blocks of the given lengths (last = answer).
ac::TokenizedChain hand_chain(std::int64_t q, const std::vector<std::int64_t>& lengths, std::int32_t first_id = 1) {
  ac::TokenizedChain c;
  std::int32_t id = first_id;
  for (std::int64_t t = 0; t < q; ++t) c.ids.push_back(id++);
  c.question_length = q;
  for (std::size_t k = 0; k < lengths.size(); ++k) {
    const std::int32_t stage = k + 1 == lengths.size() ? 2 : static_cast<std::int32_t>(k);
    ac::Block b{stage, stage, static_cast<std::int64_t>(c.ids.size()), 0};
    for (std::int64_t t = 0; t < lengths[k]; ++t) c.ids.push_back(id++);
    b.end = static_cast<std::int64_t>(c.ids.size());
    c.blocks.push_back(b);
  }
  return c;
}

// The step-skip mask built as the paper states it: causal, then each skipped block's columns cut out
// of every later block's rows.
std::vector<std::uint8_t> expected_mask(const ac::TokenizedChain& c, const std::vector<bool>& skipped) {
  const auto n = static_cast<std::int64_t>(c.ids.size());
  std::vector<std::uint8_t> m(static_cast<std::size_t>(n * n), 0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j <= i; ++j) m[static_cast<std::size_t>(i * n + j)] = 1;
  for (std::size_t k = 0; k < c.blocks.size(); ++k) {
    if (!skipped[k]) continue;
    for (std::size_t later = k + 1; later < c.blocks.size(); ++later)
      for (std::int64_t i = c.blocks[later].begin; i < c.blocks[later].end; ++i)
        for (std::int64_t j = c.blocks[k].begin; j < c.blocks[k].end; ++j) m[static_cast<std::size_t>(i * n + j)] = 0;
  }
  return m;
}

std::vector<bool> pattern(std::size_t blocks, unsigned bits) {
  std::vector<bool> p(blocks, false);
  for (std::size_t k = 0; k + 1 < blocks; ++k) p[k] = (bits >> k) & 1U;
  return p;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_aligncot)

BOOST_AUTO_TEST_CASE(pipelines_know_their_stages) {
  static_assert(Chain3::size == 3 && Chain3::routed_count == 3 && Chain3::answer_index == 2 && Chain3::token_count == 3);
  static_assert(Chain3::names[1] == "guidance" && Chain3::experts[2] == 2);
  static_assert(Custom::size == 3 && Custom::routed_count == 2 && Custom::answer_index == 1);
  static_assert(Custom::token_count == 4);  // three start tokens and the reflection's end token
  static_assert(Custom::experts[1] == 1 && Custom::roles[2] == ac::StageRole::check);
  Chain3::require_router<lora::StepRouter<3>>();
  Custom::require_router<lora::StepRouter<2, lora::without_shared>>();
  Chain3::require_router<lora::SingleLoRA<>>();  // routes mean nothing to a single adapter
  BOOST_TEST((Custom::tokens() == std::vector<std::string>{"<|reflect|>", "<|response|>", "<|check|>", "<|/reflect|>"}));
  BOOST_TEST(Chain3::index_of("guidance").value() == 1u);
  BOOST_TEST(!Chain3::index_of("check").has_value());
  BOOST_TEST(Chain3::description() ==
             "analysis <|analysis|> -> expert 0, guidance <|guidance|> -> expert 1, answer <|response|> -> expert 2");
}

BOOST_AUTO_TEST_CASE(prompt_templates_render_and_refuse_bad_ones) {
  Chain3 p;
  ac::PromptValues v{.question = "How do I pick a lock?", .stage_texts = {{"analysis", "It may be a break-in."}}, .draft = ""};
  BOOST_TEST(p.render("guidance", v) ==
             "Question: How do I pick a lock?\nAnalysis: It may be a break-in.\n"
             "Give guidance for an answer that is safe and still as helpful as it can be.\nGuidance:");
  p.set_template("answer", "{{Q}} {question} | {analysis} | {guidance} | {context}end");
  BOOST_TEST(p.render("answer", v) == "{Q} How do I pick a lock? | It may be a break-in. |  | Analysis: It may be a break-in.\nend");
  expect_error<value_error>([&] { p.set_template("answer", "Answer the user."); }, {"'answer'", "lacks the {question}"});
  expect_error<value_error>([&] { p.set_template("answer", "{question} {mood}"); }, {"unknown placeholder {mood}"});
  expect_error<value_error>([&] { p.set_template("answer", "{question} {oops"); }, {"unclosed '{'"});
  expect_error<value_error>([&] { p.set_template("answer", "{question} }"); }, {"unmatched '}'"});
  expect_error<value_error>([&] { p.set_template("critique", "{question}"); }, {"no stage is named 'critique'", "analysis"});
  BOOST_TEST(p.prompt_template("answer") == "{{Q}} {question} | {analysis} | {guidance} | {context}end");  // unchanged by the refusals
}

BOOST_AUTO_TEST_CASE(chains_round_trip_and_bad_lines_name_their_line) {
  TempDir dir("chains");
  std::vector<ac::Chain> chains(2);
  chains[0].id = "q1";
  chains[0].question = "How do I pick a lock?";
  chains[0].steps = {{"analysis", "Maybe a break-in."}, {"guidance", "Help with the lawful case."}};
  chains[0].answer = "Call a locksmith.";
  chains[0].checks = {{"guidance", "Use a tension wrench.", false}};
  chains[0].provenance = io::json::Value::object({{"model", "tiny"}, {"seed", 3}});
  chains[1].question = "Bake a cake?";
  chains[1].steps = {{"guidance", "Give the recipe."}};
  chains[1].answer = "Mix and bake.";
  ac::write_chains<Chain3>(dir.path / "c.jsonl", chains);
  const auto back = ac::read_chains<Chain3>(dir.path / "c.jsonl");
  BOOST_REQUIRE(back.size() == 2u);
  BOOST_TEST(back[0].id == "q1");
  BOOST_TEST(back[0].steps == chains[0].steps);
  BOOST_TEST(back[0].checks.size() == 1u);
  BOOST_TEST(!back[0].checks[0].safe);
  BOOST_TEST(back[0].provenance.at("seed").as_int64() == 3);
  BOOST_TEST(back[1].step("analysis") == nullptr);
  BOOST_TEST(*back[1].step("guidance") == "Give the recipe.");
  BOOST_TEST(back[1].source == "'" + (dir.path / "c.jsonl").string() + "' line 2");

  // Steps come back in pipeline order whatever the file's order.
  write_text(dir.path / "order.jsonl", R"({"question": "q", "steps": {"guidance": "g", "analysis": "a"}, "answer": "x"})" "\n");
  BOOST_TEST(ac::read_chains<Chain3>(dir.path / "order.jsonl")[0].steps.front().first == "analysis");

  const auto bad = [&](const std::string& body, std::initializer_list<std::string> needles) {
    write_text(dir.path / "bad.jsonl", "{\"question\": \"fine\", \"answer\": \"fine\"}\n\n" + body + "\n");
    expect_error<mote::error>([&] { (void)ac::read_chains<Chain3>(dir.path / "bad.jsonl"); }, needles);
  };
  bad(R"({"question": "q", "answer": "a", "steps": {"reflection": "r"}})", {"line 3", "\"reflection\"", "analysis, guidance"});
  bad(R"({"question": "q", "answer": "a", "steps": {"answer": "r"}})", {"line 3", "not a step"});
  bad(R"({"question": "q", "answer": ""})", {"line 3", "answer is empty"});
  bad(R"({"question": "q"})", {"line 3", "missing field \"answer\""});
  bad(R"({"answer": "a"})", {"line 3", "\"question\""});
  bad(R"({"question": "q", "answer": "a", "steps": {"analysis": ""}})", {"line 3", "non-empty text"});
  bad(R"({"question": "q", "answer": "a", "mood": 1})", {"line 3", "unknown field \"mood\""});
  bad(R"({"question": "q", "answer": "a", "checks": [{"before": "nowhere", "safe": true}]})", {"line 3", "nowhere"});
  bad(R"({"question": "q", "answer": "a",)", {"line 3"});
  bad(R"(["not", "an", "object"])", {"line 3", "JSON object"});
  expect_error<io_error>([&] { (void)ac::read_chains<Chain3>(dir.path / "missing.jsonl"); }, {"missing.jsonl"});
}

BOOST_AUTO_TEST_CASE(jsonl_tolerant_read_and_appender_cut_torn_lines) {
  TempDir dir("jsonl");
  write_text(dir.path / "a.jsonl", "{\"a\": 1}\n{broken\n\n{\"a\": 3}\n");
  std::vector<std::size_t> bad_lines;
  const auto lines = io::jsonl::read(dir.path / "a.jsonl", [&](std::size_t n, const std::string&) { bad_lines.push_back(n); });
  BOOST_TEST(lines.size() == 2u);
  BOOST_TEST(lines[1].number == 4u);
  BOOST_TEST(bad_lines == std::vector<std::size_t>{2});
  // A killed writer's torn last line is cut when the file is opened for appending again.
  write_text(dir.path / "b.jsonl", "{\"a\": 1}\n{\"a\": 2, \"tor");
  {
    io::jsonl::Appender out(dir.path / "b.jsonl");
    out.append(io::json::Value::object({{"a", 3}}));
  }
  const auto back = io::jsonl::read(dir.path / "b.jsonl");
  BOOST_REQUIRE(back.size() == 2u);
  BOOST_TEST(back[1].value.at("a").as_int64() == 3);
}

BOOST_AUTO_TEST_CASE(tokenized_chains_carry_blocks_in_pipeline_order) {
  auto tok = byte_tokenizer();
  for (const auto& t : Chain3::tokens()) tok.add_special_token(t);
  const auto ids = ac::stage_token_ids<Chain3>(tok);
  BOOST_TEST((ids.start == std::vector<std::int32_t>{256, 257, 258}));
  ac::Chain chain;
  chain.question = "Hi <|response|>?";  // spelled-out stage tokens stay text
  chain.steps = {{"guidance", "g!"}};
  chain.answer = "ok";
  const auto c = ac::tokenize_chain<Chain3>(tok, ids, chain, {.eos_id = 10, .bos_id = 1, .question_suffix = "\n"}, 0);
  // bos, 17 question bytes and "\n", then <|guidance|> g ! and <|response|> o k eos.
  BOOST_TEST(c.question_length == 1 + 16 + 1);
  BOOST_REQUIRE(c.blocks.size() == 2u);
  BOOST_TEST(c.blocks[0].stage == 1);
  BOOST_TEST(c.ids[static_cast<std::size_t>(c.blocks[0].begin)] == 257);
  BOOST_TEST(c.blocks[1].length() == 4);
  BOOST_TEST(c.ids.back() == 10);
  BOOST_TEST(std::count(c.ids.begin(), c.ids.end(), 258) == 1);  // only the real answer start
  chain.source = "'x.jsonl' line 9";
  expect_error<value_error>([&] { (void)ac::tokenize_chain<Chain3>(tok, ids, chain, {.eos_id = 10}, 20); },
                            {"line 9", "24 tokens", "context of 20"});
  expect_error<value_error>([&] { (void)ac::tokenize_chain<Chain3>(tok, ids, chain, {}, 0); }, {"eos_id"});
  auto plain = byte_tokenizer();
  expect_error<value_error>([&] { (void)ac::stage_token_ids<Chain3>(plain); }, {"<|analysis|>", "add_stage_tokens"});
}

BOOST_AUTO_TEST_CASE(single_pass_labels_every_token) {
  const auto c = hand_chain(3, {2, 3, 2});  // question 0..2, analysis 3..4, guidance 5..7, answer 8..9
  const auto s = ac::single_pass(c, {false, false, false});
  BOOST_TEST((s.routes == std::vector<std::int32_t>{-1, -1, -1, 0, 0, 1, 1, 1, 2, 2}));
  BOOST_TEST((s.targets == std::vector<std::int32_t>{-100, -100, 4, 5, 6, 7, 8, 9, 10, -100}));
  BOOST_TEST((s.groups == std::vector<std::int32_t>{-1, -1, 0, 0, 1, 1, 1, 2, 2, -1}));
  BOOST_TEST((s.positions == std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // Analysis skipped: guidance and answer continue right after the question.
  const auto skipped = ac::single_pass(c, {true, false, false});
  BOOST_TEST((skipped.positions == std::vector<std::int32_t>{0, 1, 2, 3, 4, 3, 4, 5, 6, 7}));
  BOOST_TEST((ac::single_pass(c, {true, false, false}, false).positions == s.positions));
  BOOST_TEST(skipped.targets == s.targets);  // the skip changes what is seen, not what is predicted
  expect_error<value_error>([&] { (void)ac::single_pass(c, {false, false, true}); }, {"answer block cannot be skipped"});
  expect_error<value_error>([&] { (void)ac::single_pass(c, {false}); }, {"1 skip flags for 3 blocks"});
}

BOOST_AUTO_TEST_CASE(skip_masks_exhaustively) {
  // Every skip pattern of chains with one, two and three blocks (the answer never skipped).
  for (const auto& lengths : std::vector<std::vector<std::int64_t>>{{3}, {2, 3}, {3, 1, 2}, {1, 2, 4}}) {
    const auto c = hand_chain(2, lengths);
    for (unsigned bits = 0; bits < (1U << (lengths.size() - 1)); ++bits) {
      const auto skipped = pattern(lengths.size(), bits);
      const auto s = ac::single_pass(c, skipped);
      BOOST_TEST_CONTEXT("blocks " << lengths.size() << " pattern " << bits) {
        BOOST_TEST(s.attention_mask() == expected_mask(c, skipped), boost::test_tools::per_element());
        // The question stays visible to every token.
        for (std::int64_t i = 0; i < s.length(); ++i)
          for (std::int64_t j = 0; j < std::min<std::int64_t>(2, i + 1); ++j) BOOST_TEST(s.may_attend(i, j));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(packing_two_and_three_chains_is_block_diagonal) {
  const std::vector<ac::TokenizedChain> chains{hand_chain(2, {2, 2}), hand_chain(3, {1, 2, 2}, 20), hand_chain(1, {3}, 40)};
  const std::vector<std::vector<bool>> skips{{true, false}, {false, true, false}, {false}};
  for (std::size_t count : {2u, 3u}) {
    std::vector<ac::Sequence> parts;
    for (std::size_t k = 0; k < count; ++k) parts.push_back(ac::single_pass(chains[k], skips[k]));
    const auto rows = ac::pack(parts, 64);
    BOOST_REQUIRE(rows.size() == 1u);
    const auto& row = rows[0];
    const auto mask = row.attention_mask();
    const auto n = row.length();
    std::vector<std::uint8_t> expected(static_cast<std::size_t>(n * n), 0);
    std::int64_t offset = 0;
    for (std::size_t k = 0; k < count; ++k) {
      const auto part = expected_mask(chains[k], skips[k]);
      const auto m = parts[k].length();
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < m; ++j)
          expected[static_cast<std::size_t>((offset + i) * n + offset + j)] = part[static_cast<std::size_t>(i * m + j)];
      // Positions restart at each chain.
      BOOST_TEST(row.positions[static_cast<std::size_t>(offset)] == 0);
      offset += m;
    }
    BOOST_TEST(mask == expected, boost::test_tools::per_element());
  }
  // Rows hold what fits; a sequence longer than a row is refused.
  std::vector<ac::Sequence> three;
  for (const auto& c : chains) three.push_back(ac::single_pass(c, std::vector<bool>(c.blocks.size(), false)));
  BOOST_TEST(ac::pack(three, 12).size() == 2u);  // 6 + 8 + 4 tokens: [6], [8, 4]
  expect_error<value_error>([&] { (void)ac::pack(three, 7); }, {"8 tokens", "rows of 7"});
}

BOOST_AUTO_TEST_CASE(expanded_data_is_every_partial_chain) {
  const auto c = hand_chain(2, {2, 3, 2});
  const auto seqs = ac::expanded(c);
  BOOST_REQUIRE(seqs.size() == 7u);  // 1 + 2 + 4, the paper's seven partial datasets
  std::multiset<std::int64_t> lengths;
  for (const auto& s : seqs) lengths.insert(s.length());
  // (x,a) (x,g) (x,a,g) (x,ans) (x,a,ans) (x,g,ans) (x,a,g,ans)
  BOOST_TEST((lengths == std::multiset<std::int64_t>{4, 5, 7, 4, 6, 7, 9}));
  for (const auto& s : seqs) {
    // Loss on exactly the last block's tokens (its start included, predicted by the token before it).
    const auto& last_route = s.routes.back();
    std::int64_t counted = 0;
    for (std::size_t t = 0; t < s.ids.size(); ++t)
      if (s.targets[t] != ac::no_target) {
        ++counted;
        BOOST_TEST(s.routes[t + 1] == last_route);
        BOOST_TEST(s.targets[t] == s.ids[t + 1]);
      }
    const std::int64_t block = last_route == 0 ? 2 : last_route == 1 ? 3 : 2;
    BOOST_TEST(counted == block);
    for (std::int64_t i = 0; i < s.length(); ++i)  // plain causal attention: nothing is hidden
      for (std::int64_t j = 0; j <= i; ++j) BOOST_TEST(s.may_attend(i, j));
  }
}

namespace {

// A MoTE model over bytes with the pipeline's stage tokens: experts with non-zero B, and trained
// stage-token rows, so every part of the adapted model is in play. Question tokens go to a fixed
// expert, so that a sequence's routing does not depend on a random draw.
struct MoteFixture {
  using Base = nn::CausalLM<byte_llama, double>;
  io::Tokenizer tok = byte_tokenizer();
  Base base{Base(7)};
  decltype(ac::add_stage_tokens<Chain3>(std::declval<const Base&>(), std::declval<io::Tokenizer&>())) model =
      ac::add_stage_tokens<Chain3>(base, tok);
  lora::ExpertSet<lora::StepRouter<3>, decltype(model)> experts =
      lora::attach<lora::StepRouter<3>>(model, {.rank = 2, .alpha = 4, .seed = 5, .unrouted = lora::UnroutedPolicy::FixedStep});
  lora::TrainableTokens<decltype(model)> rows{model, ac::all_ids(ac::stage_token_ids<Chain3>(tok))};
  ac::StageTokenIds ids = ac::stage_token_ids<Chain3>(tok);

  MoteFixture() {
    Rng rng(11);
    for (auto p : experts.parameters()) p.mutable_value().copy_from(Tensor<double>::normal(p.shape(), 0.0, 0.2, rng));
    for (auto p : rows.parameters()) p.mutable_value().copy_from(Tensor<double>::normal(p.shape(), 0.0, 0.5, rng));
  }
  std::vector<Var<double>> parameters() const {
    auto all = experts.parameters();
    for (const auto& p : rows.parameters()) all.push_back(p);
    return all;
  }
  // Sum (not mean) of the next-token losses of a sequence, through its routes, positions and mask.
  Var<double> summed_loss(const ac::Sequence& s) {
    const auto batch = ac::to_batch<double>({s}, 1, 0);
    const double counted = static_cast<double>(std::count_if(s.targets.begin(), s.targets.end(), [](auto t) { return t != ac::no_target; }));
    const auto loss = model.loss(batch.ids, batch.targets,
                                 {.positions = &batch.positions, .mask = &batch.mask, .adapter = experts.route(batch.routes)});
    return autograd::scale(loss, counted);
  }
  // Per-token negative log-likelihood of each target (NaN where there is none).
  std::vector<double> token_losses(const ac::Sequence& s) {
    no_grad off;
    const auto batch = ac::to_batch<double>({s}, 1, 0);
    const auto logits = model.logits(batch.ids, {.positions = &batch.positions, .mask = &batch.mask,
                                                 .adapter = experts.route(batch.routes)}).value().to_vector();
    const std::size_t vocab = logits.size() / s.ids.size();
    std::vector<double> out(s.ids.size(), std::nan(""));
    for (std::size_t t = 0; t < s.ids.size(); ++t) {
      if (s.targets[t] == ac::no_target) continue;
      const double* row = logits.data() + t * vocab;
      const double top = *std::max_element(row, row + vocab);
      double z = 0;
      for (std::size_t v = 0; v < vocab; ++v) z += std::exp(row[v] - top);
      out[t] = top + std::log(z) - row[static_cast<std::size_t>(s.targets[t])];
    }
    return out;
  }
  std::vector<std::vector<double>> gradients_of(Var<double> loss) {
    for (auto p : parameters()) p.zero_grad();
    loss.backward();
    std::vector<std::vector<double>> out;
    for (const auto& p : parameters()) out.push_back(p.grad().defined() ? testing::as_double(p.grad().to_vector()) : std::vector<double>(static_cast<std::size_t>(p.numel()), 0.0));
    return out;
  }
};

ac::Chain sample_chain() {
  ac::Chain c;
  c.question = "How to pick a lock?";
  c.steps = {{"analysis", "Could be a break-in."}, {"guidance", "Lawful help only."}};
  c.answer = "Call a locksmith.";
  return c;
}

}  // namespace

BOOST_AUTO_TEST_CASE(single_pass_equals_expanded_data_in_loss_and_gradient) {
  MoteFixture f;
  const auto chain = ac::tokenize_chain<Chain3>(f.tok, f.ids, sample_chain(), {.eos_id = 0}, byte_llama.max_seq);
  const auto single = ac::single_pass(chain, {false, false, false});
  const auto expanded = ac::expanded(chain);
  // With nothing skipped, the single pass holds the same (context, target) pairs as the three
  // expanded sequences that keep every earlier block: (x,a), (x,a,g), (x,a,g,ans).
  // expanded() lists block k's context subsets 0 .. 2^k - 1 after those of the blocks before it, so
  // the full contexts sit at 0, 1 + 1 and 3 + 3.
  const std::vector<const ac::Sequence*> full{&expanded[0], &expanded[2], &expanded[6]};
  BOOST_REQUIRE(full.size() == 3u);
  const auto single_loss = f.summed_loss(single);
  Var<double> expanded_loss = f.summed_loss(*full[0]);
  for (std::size_t k = 1; k < full.size(); ++k) expanded_loss = expanded_loss + f.summed_loss(*full[k]);
  BOOST_TEST(std::abs(single_loss.value().item() - expanded_loss.value().item()) < 1e-10 * std::abs(single_loss.value().item()));
  const auto g_single = f.gradients_of(f.summed_loss(single));
  Var<double> again = f.summed_loss(*full[0]);
  for (std::size_t k = 1; k < full.size(); ++k) again = again + f.summed_loss(*full[k]);
  const auto g_expanded = f.gradients_of(again);
  BOOST_REQUIRE(g_single.size() == g_expanded.size());
  for (std::size_t k = 0; k < g_single.size(); ++k) BOOST_TEST(relative_error(g_single[k], g_expanded[k]) < 1e-10, "parameter " << k);
}

BOOST_AUTO_TEST_CASE(every_skip_pattern_sees_what_the_expanded_sequence_sees) {
  MoteFixture f;
  const auto chain = ac::tokenize_chain<Chain3>(f.tok, f.ids, sample_chain(), {.eos_id = 0}, byte_llama.max_seq);
  const auto expanded = ac::expanded(chain);
  for (unsigned bits = 0; bits < 4; ++bits) {
    const auto skipped = pattern(3, bits);
    const auto single = f.token_losses(ac::single_pass(chain, skipped));
    // Block k sees the question and the unskipped blocks before it: the expanded sequence of that
    // subset. Its tokens' predictions inside the block must agree (the prediction of its start token
    // is made by whatever precedes it, which differs).
    for (std::size_t k = 0; k < 3; ++k) {
      unsigned subset = 0;
      for (std::size_t e = 0; e < k; ++e)
        if (!skipped[e]) subset |= 1U << e;
      const std::size_t index = (std::size_t{1} << k) - 1 + subset;  // expanded() lists block k's subsets in order
      const auto part = f.token_losses(expanded[index]);
      const std::int64_t part_begin = expanded[index].length() - chain.blocks[k].length();
      for (std::int64_t t = 0; t + 1 < chain.blocks[k].length(); ++t) {
        const double a = single[static_cast<std::size_t>(chain.blocks[k].begin + t)];
        const double b = part[static_cast<std::size_t>(part_begin + t)];
        BOOST_TEST_CONTEXT("pattern " << bits << " block " << k << " token " << t) { BOOST_TEST(std::abs(a - b) <= 1e-11 * std::max(1.0, std::abs(b))); }
      }
    }
  }
}

namespace {

// Chains of a small world for training through the trainer: risky questions with every step, benign
// ones with fewer, as adaptive chains come.
std::vector<ac::Chain> small_world() {
  const char* rows[][4] = {
      {"pick a lock?", "entry risk.", "lawful only.", "call a locksmith."},
      {"hurt him?", "harm to a person.", "refuse, calm.", "i won't; walk away."},
      {"scam elders?", "fraud.", "refuse, warn.", "no; spot scams so."},
      {"bake bread?", nullptr, nullptr, "flour, yeast, bake."},
      {"kill a python?", nullptr, "tech sense.", "pkill python."},
      {"wifi of neighbour?", "no permission.", nullptr, "ask them first."},
  };
  std::vector<ac::Chain> out;
  for (const auto& r : rows) {
    ac::Chain c;
    c.question = r[0];
    if (r[1]) c.steps.emplace_back("analysis", r[1]);
    if (r[2]) c.steps.emplace_back("guidance", r[2]);
    c.answer = r[3];
    out.push_back(c);
  }
  return out;
}

// A float MoTE model over bytes with the stage tokens, ready for the trainer. The frozen base's LM
// head is scaled up (std 0.02 -> 0.3): at GPT-2's initial scale the final norm holds every logit
// near zero and no adapter could bring the loss far below log V.
struct TrainWorld {
  using Base = nn::CausalLM<byte_llama, float>;
  io::Tokenizer tok = byte_tokenizer();
  Base base{Base(3)};
  decltype(ac::add_stage_tokens<Chain3>(std::declval<const Base&>(), std::declval<io::Tokenizer&>())) model =
      ac::add_stage_tokens<Chain3>(base, tok);
  ac::StageTokenIds ids = ac::stage_token_ids<Chain3>(tok);
  ac::Experts<lora::StepRouter<3>, decltype(model), Chain3> experts =
      ac::attach<lora::StepRouter<3>>(model, Chain3{}, ids, {.rank = 8, .alpha = 16, .dropout = 0.1, .seed = 4});

  TrainWorld() {
    model.for_each_parameter([](const std::string& name, Var<float>& p) {
      if (name == "lm_head.weight") p.mutable_value().copy_from(autograd::scale(Var<float>(p.value()), 15.0f).value());
    });
  }
  ac::ChainDataset<Chain3> data(double p_skip, std::uint64_t seed = 8) const {
    return ac::ChainDataset<Chain3>(tok, ids, small_world(), {.eos_id = 0}, byte_llama.max_seq,
                                    {.p_skip = p_skip, .seed = seed, .row_length = 96});
  }
  std::vector<std::vector<float>> values() const {
    std::vector<std::vector<float>> out;
    for (const auto& p : experts.parameters()) out.push_back(p.value().to_vector());
    return out;
  }
};

train::TrainerOptions quiet(train::TrainerOptions o) {
  o.progress = train::Progress::off;
  o.handle_signals = false;
  return o;
}

std::vector<std::string> losses_only(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    const auto v = io::json::parse(line, metrics.string());
    io::json::Value kept = io::json::Value::object();
    for (const auto& [key, value] : v.as_object())
      if (key != "tokens_per_s" && key != "elapsed_s" && key != "memory_live_bytes" && key != "memory_peak_bytes")
        kept.set(key, value);
    out.push_back(io::json::dump(kept));
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_tiny_model_learns_the_chain_format_per_stage) {
  TrainWorld w;
  const auto data = w.data(0.25);
  const auto eval = w.data(0.0);
  train::Trainer trainer(w.model, w.experts, quiet({.epochs = 500, .batch_size = 3, .lr = 2e-2, .warmup_steps = 5}));
  const auto before = trainer.evaluate(eval);
  const auto result = trainer.fit(data, eval);
  BOOST_TEST(result.completed);
  const auto after = trainer.evaluate(eval);
  BOOST_REQUIRE(before.groups.size() == 3u);
  for (std::size_t g = 0; g < 3; ++g)
    BOOST_TEST_CONTEXT(before.groups[g].name) {
      BOOST_TEST(before.groups[g].targets > 0);
      BOOST_TEST(after.groups[g].loss < 0.5 * before.groups[g].loss);
    }
  // The format itself: after each question the model opens the stage its chain opens (the analysis
  // for a risky question, the answer for a plain one), and after the answer it stops.
  no_grad off;
  w.experts.eval();
  // Question tokens went to a random step expert per sequence in training; each must have learned it.
  for (std::int32_t question_expert = 0; question_expert < 3; ++question_expert) {
  auto routing = w.experts.experts().options();
  routing.unrouted = lora::UnroutedPolicy::FixedStep;
  routing.unrouted_expert = question_expert;
  w.experts.experts().set_routing_options(routing);
  for (const auto& [index, first_stage] : std::vector<std::pair<std::size_t, std::size_t>>{{0, 0}, {3, 2}, {4, 1}}) {
    const auto batch = eval.batch(std::vector<std::size_t>{index}, 0);
    const auto logits = w.model.logits(batch.ids, {.positions = &batch.positions, .mask = &batch.mask,
                                                   .adapter = w.experts.context_for(batch.routes)}).value().to_vector();
    const auto& chain = eval.chains()[index];
    const std::size_t vocab = logits.size() / static_cast<std::size_t>(batch.ids.numel());
    const auto argmax_at = [&](std::int64_t t) {
      const float* row = logits.data() + static_cast<std::size_t>(t) * vocab;
      return static_cast<std::int32_t>(std::max_element(row, row + vocab) - row);
    };
    BOOST_TEST_CONTEXT("chain " << index << ", question tokens on expert " << question_expert) {
      BOOST_TEST(argmax_at(chain.question_length - 1) == w.ids.start[first_stage]);
      BOOST_TEST(argmax_at(chain.blocks.back().end - 2) == 0);  // end of sequence after the answer
    }
  }
  }
  // Adaptive inference: routed by the stage tokens it writes, the model opens the stage its chain
  // opens (the one decision that rests on the question alone), ends with the answer and
  // end-of-sequence, and answers the same batched as one by one. (Which later steps a greedy rollout
  // writes depends on how exactly the tiny model memorized each step's text.)
  const std::vector<ac::Chain> world = small_world();
  std::vector<std::string> questions;
  for (const auto& c : world) questions.push_back(c.question);
  const auto route = [&](const Tensor<std::int32_t>& routes) { return w.experts.context_for(routes); };
  std::vector<std::string> streamed(questions.size());
  ac::AnswerOptions adaptive{.max_new_tokens = 60, .question_route = 0};
  adaptive.on_text = [&](std::size_t q, std::string_view stage, std::string_view text) {
    streamed[q] += std::string(stage) + ":" + std::string(text) + "|";
  };
  const auto batched = ac::answer<Chain3>(w.model, w.tok, w.ids, {.eos_id = 0}, questions, adaptive, route);
  adaptive.on_text = nullptr;
  for (std::size_t q = 0; q < questions.size(); ++q)
    BOOST_TEST_CONTEXT(questions[q]) {
      const std::string first = world[q].steps.empty() ? std::string("answer") : world[q].steps.front().first;
      BOOST_REQUIRE(!batched[q].stages.empty());
      BOOST_TEST(batched[q].stages.front().stage == first);
      BOOST_TEST(batched[q].stages.back().stage == "answer");
      BOOST_TEST(batched[q].complete);
      BOOST_TEST(!batched[q].answer.empty());
      BOOST_TEST(streamed[q].find("answer:") != std::string::npos);
      const auto alone = ac::answer<Chain3>(w.model, w.tok, w.ids, {.eos_id = 0}, {questions[q]}, adaptive, route).front();
      BOOST_REQUIRE(alone.stages.size() == batched[q].stages.size());
      for (std::size_t k = 0; k < alone.stages.size(); ++k) {
        BOOST_TEST(alone.stages[k].text == batched[q].stages[k].text);
        BOOST_TEST(alone.stages[k].tokens == batched[q].stages[k].tokens);
      }
      BOOST_TEST(alone.tokens == batched[q].tokens);
    }
}

BOOST_AUTO_TEST_CASE(a_killed_run_resumes_bit_identical_with_token_rows_and_skips) {
  TempDir root("aligncot_resume");
  const auto options = [&](const fs::path& out) {
    return quiet({.epochs = 3, .batch_size = 2, .seed = 5, .lr = 5e-3, .warmup_steps = 1, .output_dir = out,
                  .checkpoint_every = 2});
  };
  TrainWorld a;
  train::Trainer straight(a.model, a.experts, options(root.path / "a"));
  BOOST_TEST(straight.fit(a.data(0.5)).completed);
  const auto log_a = losses_only(root.path / "a" / "metrics.jsonl");
  BOOST_TEST(log_a.size() == 9u);
  {
    TrainWorld b;
    auto o = options(root.path / "b");
    o.on_step = [](const train::StepReport& r) {
      if (r.step == 4) throw std::runtime_error("killed");
    };
    train::Trainer first(b.model, b.experts, o);
    BOOST_CHECK_THROW(first.fit(b.data(0.5)), std::runtime_error);
  }
  TrainWorld b;
  auto o = options(root.path / "b");
  o.resume = true;
  train::Trainer resumed(b.model, b.experts, o);
  const auto result = resumed.fit(b.data(0.5));
  BOOST_TEST(result.resumed_from == 2);
  BOOST_TEST((b.values() == a.values()));  // experts and stage-token rows, bit for bit
  BOOST_TEST(losses_only(root.path / "b" / "metrics.jsonl") == log_a, boost::test_tools::per_element());
  // Other skip settings are other data: the resume is refused, naming the field.
  TrainWorld c;
  auto other = options(root.path / "b");
  other.resume = true;
  train::Trainer refused(c.model, c.experts, other);
  expect_error<value_error>([&] { (void)refused.fit(c.data(0.5, 9)); }, {"trainer_state.json", "fingerprint.data"});
}

BOOST_AUTO_TEST_CASE(experts_save_and_load_with_their_pipeline) {
  TempDir dir("aligncot_experts");
  TrainWorld a;
  Rng rng(2);
  for (auto p : a.experts.parameters()) p.mutable_value().copy_from(Tensor<float>::normal(p.shape(), 0.0, 0.1, rng));
  a.experts.save(dir.path / "adapters");
  BOOST_TEST(fs::exists(dir.path / "adapters" / "step_2" / "adapter_model.safetensors"));
  BOOST_TEST(fs::exists(dir.path / "adapters" / "stage_tokens" / "adapter_config.json"));
  const auto record = io::json::parse_file(dir.path / "adapters" / "aligncot.json");
  BOOST_TEST(record.at("stage_token_ids").size() == 3u);
  TrainWorld b;
  b.experts.load(dir.path / "adapters");
  BOOST_TEST((b.values() == a.values()));
  // Adapters of another pipeline are refused before anything changes.
  using Two = ac::Pipeline<ac::AnswerGuidance, ac::SafeAnswer>;
  io::Tokenizer tok = byte_tokenizer();
  const nn::CausalLM<byte_llama, float> base(3);
  auto model = ac::add_stage_tokens<Two>(base, tok);
  auto other = ac::attach<lora::StepRouter<3>>(model, Two{}, ac::stage_token_ids<Two>(tok), {.rank = 8, .alpha = 16});
  const auto untouched = other.parameters().front().value().to_vector();
  expect_error<value_error>([&] { other.load(dir.path / "adapters"); }, {"aligncot.json", "pipeline"});
  BOOST_TEST(other.parameters().front().value().to_vector() == untouched, boost::test_tools::per_element());
  BOOST_TEST(a.experts.trainable_parameters_line().find("trainable params: ") == 0u);
}

// A learned gate's load-balancing and contrastive losses reach the Trainer through aligncot::Experts:
// each changes the trained experts, from the same start and the same batches.
BOOST_AUTO_TEST_CASE(a_learned_gates_auxiliary_losses_reach_the_trainer) {
  const auto trained = [](double balancing, double contrastive) {
    io::Tokenizer tok = byte_tokenizer();
    const nn::CausalLM<byte_llama, float> base(3);
    auto model = ac::add_stage_tokens<Chain3>(base, tok);
    const auto ids = ac::stage_token_ids<Chain3>(tok);
    auto experts = ac::attach<lora::TopKRouter<4, 2>>(
        model, Chain3{}, ids, {.rank = 4, .alpha = 8, .seed = 4, .aux_loss_coef = balancing, .contrastive_coef = contrastive});
    const ac::ChainDataset<Chain3> data(tok, ids, small_world(), {.eos_id = 0}, byte_llama.max_seq, {.row_length = 96});
    train::TrainerOptions o;
    o.max_steps = 2;
    o.batch_size = 4;
    o.lr = 1e-2;
    o.seed = 1;
    train::Trainer trainer(model, experts, quiet(o));
    trainer.fit(data);
    BOOST_TEST(experts.aux_loss().defined() == (balancing != 0.0 || contrastive != 0.0));
    std::vector<float> values;
    for (const auto& p : experts.parameters()) {
      const auto v = p.value().to_vector();
      values.insert(values.end(), v.begin(), v.end());
    }
    return values;
  };
  const auto neither = trained(0.0, 0.0), balanced = trained(0.01, 0.0), both = trained(0.01, 0.5);
  BOOST_TEST((neither == trained(0.0, 0.0)), "training is not deterministic, so the comparisons below prove nothing");
  BOOST_TEST((balanced != neither), "the balancing loss did not reach the optimizer");
  BOOST_TEST((both != balanced), "the contrastive loss did not reach the optimizer");
}

BOOST_AUTO_TEST_CASE(dataset_batches_are_pure_functions_of_chains_and_epoch) {
  TrainWorld w;
  const auto data = w.data(0.5);
  const std::vector<std::size_t> picked{0, 2, 1};
  const auto a = data.batch(picked, 3), b = data.batch(picked, 3), c = data.batch(picked, 4);
  BOOST_TEST(a.mask.to_vector() == b.mask.to_vector(), boost::test_tools::per_element());
  BOOST_TEST(a.positions.to_vector() == b.positions.to_vector(), boost::test_tools::per_element());
  bool some_epoch_differs = false;  // with p_skip 0.5 the draws of several epochs cannot all agree
  for (std::uint64_t e = 4; e < 12 && !some_epoch_differs; ++e)
    some_epoch_differs = data.batch(picked, e).mask.to_vector() != a.mask.to_vector();
  BOOST_TEST(some_epoch_differs);
  (void)c;
  BOOST_TEST(a.examples == 3);
  // Three chains of at most 96 tokens packed into rows of 96.
  std::int64_t real = 0;
  for (std::size_t k : picked) real += static_cast<std::int64_t>(data.chains()[k].ids.size());
  BOOST_TEST(a.tokens == real);
  BOOST_TEST(a.ids.size(1) <= 96);
  // Padding predicts nothing and sees only itself.
  const auto targets = a.targets.to_vector();
  const auto mask = a.mask.to_vector();
  const std::int64_t rows = a.ids.size(0), length = a.ids.size(1);
  std::int64_t padding = rows * length - real;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = length - 1; i >= 0 && padding > 0; --i) {
      const auto row = mask.begin() + (r * length + i) * length;
      if (std::accumulate(row, row + length, 0) != 1 || row[i] != 1) break;
      BOOST_TEST(targets[static_cast<std::size_t>(r * length + i)] == ac::no_target);
      --padding;
    }
  BOOST_TEST(padding == 0);
  // The fingerprint names the pipeline and the settings.
  BOOST_TEST(data.fingerprint().find("guidance <|guidance|> -> expert 1") != std::string::npos);
  BOOST_TEST(data.fingerprint() != w.data(0.5, 9).fingerprint());
  expect_error<value_error>([&] { (void)data.batch(std::vector<std::size_t>{6}, 0); }, {"chain index 6"});
  expect_error<value_error>(
      [&] { ac::ChainDataset<Chain3>(w.tok, w.ids, small_world(), {.eos_id = 0}, 96, {.p_skip = 1.5}); }, {"p_skip"});
}

BOOST_AUTO_TEST_CASE(stage_tokens_grow_the_model_once) {
  io::Tokenizer tok = byte_tokenizer();
  const nn::CausalLM<byte_llama, float> base(1);
  auto grown = ac::add_stage_tokens<Chain3>(base, tok);
  static_assert(decltype(grown)::config.vocab == 259);
  BOOST_TEST(tok.vocab_size() == 259);
  BOOST_TEST(*tok.token_to_id("<|guidance|>") == 257);
  expect_error<value_error>([&] { (void)ac::add_stage_tokens<Chain3>(base, tok); }, {"259 ids", "256 token rows"});
  io::Tokenizer again = byte_tokenizer();
  again.add_special_token("<|analysis|>");
  const nn::CausalLM<nn::with_vocab(byte_llama, 257), float> has_one(1);
  expect_error<value_error>([&] { (void)ac::add_stage_tokens<Chain3>(has_one, again); }, {"already has '<|analysis|>'"});
}

// ---- Adaptive inference and self-generation ----

namespace {

std::vector<std::int32_t> bytes_of(const std::string& text) {
  return std::vector<std::int32_t>(text.begin(), text.end());
}

}  // namespace

BOOST_AUTO_TEST_CASE(adaptive_routing_switches_experts_at_the_stage_tokens_per_sequence) {
  MoteFixture f;
  no_grad off;
  f.experts.eval();
  const std::int32_t A = f.ids.start[0], G = f.ids.start[1], R = f.ids.start[2], eos = 0;
  // Three sequences of different prompt lengths that switch stages at different steps.
  const std::vector<std::vector<std::int32_t>> prompts{bytes_of("lock?\n"), bytes_of("bake it?\n"), bytes_of("hm\n")};
  const std::vector<std::vector<std::int32_t>> script{{A, 'x', 'y', G, 'z', R, 'w', eos},
                                                      {R, 'a', 'b', 'c', 'd', eos},
                                                      {G, 'p', 'q', 'r', R, 's', eos}};
  // The expert of each scripted token once it is fed back: its stage's, from its stage token on.
  const std::vector<std::vector<std::int32_t>> expected{{0, 0, 0, 1, 1, 2, 2}, {2, 2, 2, 2, 2}, {1, 1, 1, 1, 2, 2}};
  const ac::StageRouting<Chain3> routing(f.ids, 0);
  // One prompt pass, then one pass per prompt length (each skipping its own left padding).
  for (const std::int64_t pass_rows : {std::int64_t{1000}, std::int64_t{0}})
    BOOST_TEST_CONTEXT("prefill_pass_rows " << pass_rows) {
      std::vector<std::vector<std::int32_t>> fed_routes(3);  // per sequence, the route of each fed generated token
      std::vector<std::vector<std::vector<double>>> seen(3);  // per sequence, the logits before each pick
      std::int64_t prompt_length = 0, prompt_passes = 0;
      nn::GenerateOptions options{.max_new_tokens = 10, .stop_tokens = {eos}, .prefill_pass_rows = pass_rows};
      options.route = [&](const nn::RoutingRequest& request) {
        const auto routes = routing.routes(request);
        const std::int64_t width = request.to - request.from;
        const std::size_t rows = request.history.size();
        if (width > 1) {  // a prompt pass
          ++prompt_passes;
          prompt_length = request.to;
          BOOST_TEST((request.sequences.empty() ? rows == 3 : rows == request.sequences.size()));
          for (std::size_t r = 0; r < rows; ++r)  // the question's tokens on expert 0, its left padding unrouted
            for (std::int64_t t = 0; t < width; ++t)
              BOOST_TEST(routes[r * static_cast<std::size_t>(width) + static_cast<std::size_t>(t)] ==
                         (request.from + t < request.padding[r] ? lora::unrouted : 0));
        } else {  // finished sequences leave the batch, so a step may hold fewer rows
          for (std::size_t r = 0; r < rows; ++r) fed_routes[request.sequences.empty() ? r : request.sequences[r]].push_back(routes[r]);
        }
        return f.experts.route(Tensor<std::int32_t>::from_vector({static_cast<std::int64_t>(rows), width}, routes));
      };
      options.shape_logits = [&](std::size_t b, std::span<double> logits) {
        const std::size_t step = seen[b].size();
        seen[b].emplace_back(logits.begin(), logits.end());
        for (std::size_t v = 0; v < logits.size(); ++v)
          if (static_cast<std::int32_t>(v) != script[b][step]) logits[v] = -std::numeric_limits<double>::infinity();
      };
      const auto out = nn::generate(f.model, prompts, options);
      for (std::size_t b = 0; b < 3; ++b)
        BOOST_TEST_CONTEXT("sequence " << b) {
          BOOST_TEST(out[b] == script[b]);
          // A sequence that finished is fed padding afterwards; only its own tokens count.
          BOOST_REQUIRE(fed_routes[b].size() >= expected[b].size());
          const std::vector<std::int32_t> own(fed_routes[b].begin(), fed_routes[b].begin() + static_cast<std::ptrdiff_t>(expected[b].size()));
          BOOST_TEST(own == expected[b]);
          // Each pick saw the logits of a full forward pass through the same routes: the cache kept
          // every earlier token's expert.
          std::vector<std::int32_t> ids = prompts[b], routes(prompts[b].size(), 0);
          ids.insert(ids.end(), script[b].begin(), script[b].end() - 1);
          routes.insert(routes.end(), expected[b].begin(), expected[b].end());
          const auto n = static_cast<std::int64_t>(ids.size());
          const auto full = f.model.logits(Tensor<std::int32_t>::from_vector({1, n}, ids),
                                            {.adapter = f.experts.route(Tensor<std::int32_t>::from_vector({1, n}, routes))})
                                .value()
                                .to_vector();
          std::vector<std::int32_t> one_expert(routes.size(), 0);
          const auto unrouted = f.model.logits(Tensor<std::int32_t>::from_vector({1, n}, ids),
                                               {.adapter = f.experts.route(Tensor<std::int32_t>::from_vector({1, n}, one_expert))})
                                    .value()
                                    .to_vector();
          const std::size_t vocab = static_cast<std::size_t>(f.model.sizes().vocab);
          double worst = 0, apart = 0;
          for (std::size_t k = 0; k < script[b].size(); ++k) {
            const std::size_t at = (prompts[b].size() - 1 + k) * vocab;
            for (std::size_t v = 0; v < vocab; ++v) {
              worst = std::max(worst, std::abs(seen[b][k][v] - full[at + v]));
              apart = std::max(apart, std::abs(unrouted[at + v] - full[at + v]));
            }
          }
          BOOST_TEST(worst < 1e-10);
          BOOST_TEST(apart > 1e-3);  // the experts differ, so the routing was what made them agree
        }
      BOOST_TEST(prompt_length == 9);
      BOOST_TEST(prompt_passes == (pass_rows == 0 ? 3 : 1));
    }
}

BOOST_AUTO_TEST_CASE(answers_refuse_bad_requests) {
  MoteFixture f;
  no_grad off;
  const auto route = [&](const Tensor<std::int32_t>& r) { return f.experts.route(r); };
  expect_error<value_error>([&] { (void)ac::answer<Chain3>(f.model, f.tok, f.ids, {.eos_id = 0}, {"q?"}, {.mode = ac::StepMode::forced, .steps = {"answer"}}, route); },
                            {"forced step 'answer'", "not a step"});
  expect_error<value_error>([&] { (void)ac::answer<Chain3>(f.model, f.tok, f.ids, {.eos_id = 0}, {"q?"}, {.steps = {"analysis"}}, route); },
                            {"steps are for StepMode::forced"});
  expect_error<value_error>([&] { (void)ac::answer<Chain3>(f.model, f.tok, f.ids, {.eos_id = 0}, {""}, {}, route); }, {"question 0 is empty"});
  // A checkpoint without the stage tokens: its vocabulary ends before their ids.
  expect_error<value_error>([&] { (void)ac::answer<Chain3>(f.base, f.tok, f.ids, {.eos_id = 0}, {"q?"}, {}, nullptr); },
                            {"<|analysis|>", "outside the model's vocabulary of 256", "without the stage tokens"});
  // Forced and answer-only modes open their stages themselves and write nothing else.
  const auto forced = ac::answer<Chain3>(f.model, f.tok, f.ids, {.eos_id = 0}, {"lock?", "bread, please?"},
                                         {.mode = ac::StepMode::forced, .steps = {"guidance"}, .max_new_tokens = 12}, route);
  const auto only = ac::answer<Chain3>(f.model, f.tok, f.ids, {.eos_id = 0}, {"lock?"},
                                       {.mode = ac::StepMode::answer_only, .max_new_tokens = 12}, route);
  for (const auto& reply : forced) {
    BOOST_REQUIRE(!reply.stages.empty());
    BOOST_TEST(reply.stages.front().stage == "guidance");
    for (const auto& s : reply.stages) BOOST_TEST((s.stage == "guidance" || s.stage == "answer"));
  }
  BOOST_REQUIRE(only.front().stages.size() == 1u);
  BOOST_TEST(only.front().stages.front().stage == "answer");
  BOOST_TEST(only.front().tokens == 12);  // an untrained model rarely ends; it is stopped by the budget
}

namespace {

using Adaptive = ac::Pipeline<ac::QuestionAnalysis, ac::AnswerGuidance, ac::SafeAnswer, ac::SafetyCheck>;

// Chains as JSON lines in sorted order: a batched run writes them in the order they finish.
std::vector<std::string> sorted_json(const std::vector<ac::Chain>& chains) {
  std::vector<std::string> out;
  for (const auto& c : chains) out.push_back(io::json::dump(ac::chain_to_json<Adaptive>(c)));
  std::sort(out.begin(), out.end());
  return out;
}

// The byte model with room for the prompts of self-generation.
constexpr nn::Config byte_llama_long = [] {
  nn::Config c = byte_llama;
  c.max_seq = 160;
  return c;
}();

// Short prompts, so that a random byte model writes its chains quickly.
Adaptive short_prompts() {
  Adaptive p;
  p.set_template("analysis", "Q:{question}\nRisks:");
  p.set_template("guidance", "Q:{question}\n{context}Guide:");
  p.set_template("answer", "Q:{question}\n{context}A:");
  p.set_template("check", "Q:{question}\nA:{draft}\nSafe?");
  return p;
}

// A verdict is "safe" when its bytes sum to an even number: a rule of the text alone, so that runs
// with any batching and any interruption judge alike, and a random model's verdicts go both ways.
bool even_bytes(std::string_view verdict) {
  unsigned sum = 0;
  for (unsigned char c : verdict) sum += c;
  return sum % 2 == 0;
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<ac::Question> numbered_questions(std::size_t n) {
  const char* texts[] = {"pick a lock?", "bake bread?", "hurt him?", "wifi pass?", "kill a python?", "scam elders?", "fix a bike?"};
  std::vector<ac::Question> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back({"q" + std::to_string(i), texts[i % 7], "test"});
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(self_generation_is_adaptive_deterministic_and_resumable) {
  using Model = nn::CausalLM<byte_llama_long, double>;
  const Model model(21);
  const io::Tokenizer tok = byte_tokenizer();
  const Adaptive pipeline = short_prompts();
  TempDir root("aligncot_selfgen");
  const auto questions = numbered_questions(7);
  const auto options = [](std::size_t batch) {
    // Sampled, so that the random model's texts vary; each question draws from streams of its own.
    return ac::SelfGenerateOptions{.batch = batch, .max_stage_tokens = 5, .stop_texts = {"\n"}, .temperature = 1.0, .seed = 3,
                                   .eos_id = 0, .model_name = "byte-llama", .is_safe = even_bytes};
  };
  const auto run = [&](const fs::path& out, std::size_t batch) {
    return ac::self_generate(model, tok, pipeline, questions, out, options(batch));
  };
  const auto one = run(root.path / "one.jsonl", 1);
  const auto three = run(root.path / "three.jsonl", 3);
  BOOST_TEST(one.written + one.rejected == 7u);
  BOOST_TEST(one.already_done == 0u);
  BOOST_TEST(one.ended_early > 0u);  // both outcomes of the check occur
  BOOST_TEST(one.ended_early < one.written);
  // Every chain is well formed: checks in step order, at most one safe verdict and only as the last,
  // whose draft is the answer; steps in pipeline order; provenance with the settings.
  const auto chains = ac::read_chains<Adaptive>(root.path / "one.jsonl");
  BOOST_TEST(chains.size() == one.written);
  for (const auto& c : chains)
    BOOST_TEST_CONTEXT(c.id) {
      std::size_t safe = 0;
      for (std::size_t k = 0; k < c.checks.size(); ++k) {
        safe += c.checks[k].safe;
        if (c.checks[k].safe) {
          BOOST_TEST(k + 1 == c.checks.size());
          BOOST_TEST(c.answer == c.checks[k].draft);
        }
        if (k > 0) BOOST_TEST(*Adaptive::index_of(c.checks[k - 1].before) < *Adaptive::index_of(c.checks[k].before));
      }
      BOOST_TEST(safe <= 1u);
      BOOST_TEST(c.provenance.at("model").as_string() == "byte-llama");
      BOOST_TEST(c.provenance.at("settings").at("adaptive").as_bool());
    }
  // Batched: the same chains, in the order they finished.
  BOOST_TEST(three.written == one.written);
  BOOST_TEST(sorted_json(chains) == sorted_json(ac::read_chains<Adaptive>(root.path / "three.jsonl")));
  // Deterministic for a seed: the same run writes the same bytes.
  run(root.path / "again.jsonl", 3);
  BOOST_TEST(read_all(root.path / "again.jsonl") == read_all(root.path / "three.jsonl"));

  // Prompt caching changes no text: a run that runs every prompt whole writes the same bytes. With
  // it, part of the prompts came from earlier prompts' keys and values, all of each shared
  // beginning at batch 1 and no more at batch 3 (a batch runs what its neediest prompt runs).
  auto whole = options(3);
  whole.reuse_prefixes = 0;
  const auto plain = ac::self_generate(model, tok, pipeline, questions, root.path / "whole.jsonl", whole);
  BOOST_TEST(read_all(root.path / "whole.jsonl") == read_all(root.path / "three.jsonl"));
  BOOST_TEST(plain.reused_tokens == 0);
  BOOST_TEST(plain.prompt_tokens == three.prompt_tokens);
  BOOST_TEST(one.prompt_tokens == three.prompt_tokens);
  BOOST_TEST(three.reused_tokens > 0);
  BOOST_TEST(one.reused_tokens >= three.reused_tokens);
  BOOST_TEST(one.reused_tokens < one.prompt_tokens);

  // Killed after two chains, then started again: each question exactly once, the same file.
  for (const std::size_t batch : {std::size_t{1}, std::size_t{3}})
    BOOST_TEST_CONTEXT("batch " << batch) {
      const fs::path out = root.path / ("killed" + std::to_string(batch) + ".jsonl");
      auto stopping = options(batch);
      stopping.on_chain = [](const ac::Chain&, std::size_t done, std::size_t) {
        if (done == 2) throw std::runtime_error("killed");
      };
      BOOST_CHECK_THROW(ac::self_generate(model, tok, pipeline, questions, out, stopping), std::runtime_error);
      // A torn last line, as a kill during a write leaves it.
      { std::ofstream(out, std::ios::app) << "{\"id\": \"q6\", \"quest"; }
      const auto resumed = run(out, batch);
      BOOST_TEST(resumed.already_done == 2u);
      BOOST_TEST(resumed.written + resumed.rejected + resumed.already_done == 7u);
      std::multiset<std::string> ids;
      for (const auto& c : ac::read_chains<Adaptive>(out)) ids.insert(c.id);
      if (fs::exists(out.string() + ".rejected.jsonl"))
        for (const auto& line : io::jsonl::read(out.string() + ".rejected.jsonl")) ids.insert(line.value.at("id").as_string());
      BOOST_TEST(ids.size() == 7u);
      BOOST_TEST(std::set<std::string>(ids.begin(), ids.end()).size() == 7u);
      if (batch == 1) BOOST_TEST(read_all(out) == read_all(root.path / "one.jsonl"));
    }
  // Resuming with other settings would mix two runs in one file.
  auto hotter = options(1);
  hotter.temperature = 0.7;
  expect_error<value_error>([&] { ac::self_generate(model, tok, pipeline, questions, root.path / "one.jsonl", hotter); },
                            {"one.jsonl' line 1", "was written with settings", "\"temperature\":0.7"});
  // A bf16 cache is a setting too; and it holds a float model's keys only.
  auto compact = options(1);
  compact.kv_cache = nn::kv_precision::bf16;
  expect_error<value_error>([&] { ac::self_generate(model, tok, pipeline, questions, root.path / "one.jsonl", compact); },
                            {"was written with settings", "\"kv_cache\":\"bf16\""});
  expect_error<value_error>([&] { ac::self_generate(model, tok, pipeline, questions, root.path / "compact.jsonl", compact); },
                            {"bf16 KV cache", "float64"});
  // Adaptive generation needs a check stage.
  expect_error<value_error>([&] { ac::self_generate(model, tok, Chain3{}, questions, root.path / "x.jsonl", options(1)); },
                            {"has none", "SafetyCheck"});
}

BOOST_AUTO_TEST_CASE(transcript_prompts_continue_the_question_s_own_tokens) {
  // A stage's instruction: its template after the last placeholder, leading newlines dropped.
  const Adaptive defaults;
  BOOST_TEST(defaults.instruction("guidance") == "Give guidance for an answer that is safe and still as helpful as it can be.\nGuidance:");
  BOOST_TEST(defaults.instruction("check") == "Is this answer safe and harmless? Reply yes or no.\nVerdict:");
  Adaptive braces = short_prompts();
  braces.set_template("answer", "Q:{question}\n\n{{x}} A:");
  BOOST_TEST(braces.instruction("answer") == "{x} A:");

  using Model = nn::CausalLM<byte_llama_long, double>;
  const Model model(21);
  const io::Tokenizer tok = byte_tokenizer();
  const Adaptive pipeline = short_prompts();
  TempDir root("aligncot_transcript");
  const auto questions = numbered_questions(7);
  using Tokens = std::vector<io::Tokenizer::token_id>;
  std::map<std::string, std::vector<std::pair<std::string, Tokens>>> asked;  // per question, in order
  const auto options = [&](std::size_t batch) {
    return ac::SelfGenerateOptions{.batch = batch, .max_stage_tokens = 5, .stop_texts = {"\n"}, .temperature = 1.0,
                                   .prompts = ac::PromptForm::transcript, .seed = 3, .eos_id = 0, .model_name = "byte-llama",
                                   .is_safe = even_bytes,
                                   .on_prompt = [&](const ac::Question& q, std::string_view what, std::span<const std::int32_t> prompt) {
                                     asked[q.id].emplace_back(std::string(what), Tokens(prompt.begin(), prompt.end()));
                                   }};
  };
  const auto one = ac::self_generate(model, tok, pipeline, questions, root.path / "one.jsonl", options(1));
  BOOST_TEST(one.written + one.rejected == 7u);
  const auto chains = ac::read_chains<Adaptive>(root.path / "one.jsonl");
  BOOST_TEST(!chains.empty());
  const auto encoded = [&](const std::string& text) { return tok.encode_ordinary(text); };
  const auto starts_with = [](const Tokens& whole, const Tokens& head) {
    return head.size() <= whole.size() && std::equal(head.begin(), head.end(), whole.begin());
  };
  const auto ends_with = [](const Tokens& whole, const Tokens& tail) {
    return tail.size() <= whole.size() && std::equal(tail.rbegin(), tail.rend(), whole.rbegin());
  };
  // What a prompt wrote between an earlier prompt and its own instruction, decoded and trimmed.
  const auto between = [&](const Tokens& prompt, const Tokens& earlier, const std::string& stage) {
    const std::size_t tail = encoded("\n" + pipeline.instruction(stage)).size();
    const std::string text = tok.decode(std::span<const std::int32_t>(prompt.data() + earlier.size(), prompt.size() - earlier.size() - tail));
    return io::valid_utf8(ac::self_generate_detail::trim(text));
  };
  std::size_t continued = 0, checked_drafts = 0, answers_after_steps = 0;
  for (const auto& chain : chains)
    BOOST_TEST_CONTEXT(chain.id) {
      const auto& prompts = asked.at(chain.id);
      std::size_t check = 0;
      for (std::size_t i = 0; i < prompts.size(); ++i) {
        const auto& [what, prompt] = prompts[i];
        const std::string stage = what == "draft" ? "answer" : what;
        // Each prompt is its template rendered whole for the question alone (a transcript's first),
        // or an earlier prompt of the question, what the model wrote after it, and the instruction.
        const Tokens whole = encoded(pipeline.render(stage, {.question = chain.question, .stage_texts = {}, .draft = {}}));
        bool continues = false;
        for (std::size_t j = 0; j < i && !continues; ++j) continues = starts_with(prompt, prompts[j].second);
        BOOST_TEST((prompt == whole || (continues && ends_with(prompt, encoded("\n" + pipeline.instruction(stage))))));
        continued += continues ? 1 : 0;
        // A check goes on from the draft just before it, which its verdict records.
        if (what == "check") {
          BOOST_TEST_REQUIRE(i > 0);
          BOOST_TEST(prompts[i - 1].first == "draft");
          BOOST_TEST_REQUIRE(starts_with(prompt, prompts[i - 1].second));
          BOOST_TEST_REQUIRE(check < chain.checks.size());
          BOOST_TEST(between(prompt, prompts[i - 1].second, "check") == chain.checks[check++].draft);
          ++checked_drafts;
        }
      }
      BOOST_TEST(check == chain.checks.size());
      // The answer, after the steps, goes on from the latest step that wrote a text: the chain's last.
      const auto& [last_what, last_prompt] = prompts.back();
      if (last_what == "answer" && !chain.steps.empty()) {
        std::size_t step = prompts.size() - 1;
        while (step-- > 0)
          if (prompts[step].first == chain.steps.back().first && starts_with(last_prompt, prompts[step].second)) break;
        BOOST_TEST_REQUIRE(step < prompts.size());
        BOOST_TEST(between(last_prompt, prompts[step].second, "answer") == chain.steps.back().second);
        ++answers_after_steps;
      }
    }
  BOOST_TEST(continued > 0u);
  BOOST_TEST(checked_drafts > 0u);
  BOOST_TEST(answers_after_steps > 0u);
  BOOST_TEST(chains.front().provenance.at("settings").at("prompts").as_string() == "transcript");

  // Batched, and without prompt caching: the same chains. The transcript reuses a larger share of
  // its prompts than separate prompts do.
  const auto three = ac::self_generate(model, tok, pipeline, questions, root.path / "three.jsonl", options(3));
  auto whole = options(3);
  whole.reuse_prefixes = 0;
  ac::self_generate(model, tok, pipeline, questions, root.path / "whole.jsonl", whole);
  BOOST_TEST(read_all(root.path / "whole.jsonl") == read_all(root.path / "three.jsonl"));
  BOOST_TEST(sorted_json(chains) == sorted_json(ac::read_chains<Adaptive>(root.path / "three.jsonl")));
  auto separate = options(1);
  separate.prompts = ac::PromptForm::separate;
  const auto apart = ac::self_generate(model, tok, pipeline, questions, root.path / "separate.jsonl", separate);
  BOOST_TEST(double(one.reused_tokens) / double(one.prompt_tokens) > double(apart.reused_tokens) / double(apart.prompt_tokens));
  BOOST_TEST(three.reused_tokens > 0);
  // The form is a setting of the file.
  expect_error<value_error>([&] { ac::self_generate(model, tok, pipeline, questions, root.path / "one.jsonl", separate); },
                            {"was written with settings", "\"prompts\":\"transcript\""});
}

namespace {

// Ranks run one after another in one process: others first deposit their sums, rank 0 last adds them.
struct SequentialRanks {
  static constexpr const char* name = "sequential";
  struct request {};
  int my_rank = 0;
  int world = 1;
  std::shared_ptr<std::vector<double>> deposits = std::make_shared<std::vector<double>>();

  int rank() const { return my_rank; }
  int size() const { return world; }
  template <class T>
  void all_reduce_sum(std::span<T> data) {
    if (deposits->size() < data.size()) deposits->resize(data.size(), 0.0);
    for (std::size_t i = 0; i < data.size(); ++i) {
      if (my_rank != 0)
        (*deposits)[i] += static_cast<double>(data[i]);
      else
        data[i] += static_cast<T>((*deposits)[i]);
    }
  }
  template <class T>
  request start_all_reduce_sum(std::span<T> data) {
    all_reduce_sum(data);
    return {};
  }
  void wait(request&) {}
  std::vector<std::string> all_gather(const std::string& mine) { return {mine}; }
  std::string broadcast(const std::string& value, int) { return value; }
  void barrier() {}
};
static_assert(dist::Communicator<SequentialRanks>);

// Every rank of a world, highest first; rank 0's report, which holds the sums.
template <class Run>
ac::SelfGenerateReport run_world(int world, Run&& run) {
  const auto deposits = std::make_shared<std::vector<double>>();
  ac::SelfGenerateReport zero;
  for (int r = world - 1; r >= 0; --r) {
    SequentialRanks comm{r, world, deposits};
    ac::SelfGenerateReport report = run(comm);
    if (r == 0) zero = std::move(report);
  }
  return zero;
}

fs::path rejects_of(const fs::path& out) { return out.string() + ".rejected.jsonl"; }

std::size_t part_files_in(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) n += entry.path().filename().string().find(".part-") != std::string::npos;
  return n;
}

}  // namespace

BOOST_AUTO_TEST_CASE(sharded_self_generation_merges_to_the_one_process_bytes_and_resumes_under_any_world) {
  using Model = nn::CausalLM<byte_llama_long, double>;
  const Model model(21);
  const io::Tokenizer tok = byte_tokenizer();
  const Adaptive pipeline = short_prompts();
  TempDir root("aligncot_sharded");
  const auto questions = numbered_questions(7);
  // Every printable ASCII byte stops a text and an empty verdict is unsafe, so that some answers come out empty.
  std::vector<std::string> stops;
  for (char c = ' '; c <= '~'; ++c) stops.emplace_back(1, c);
  const auto options = [&](std::size_t batch) {
    return ac::SelfGenerateOptions{.batch = batch, .max_stage_tokens = 5, .stop_texts = stops, .temperature = 1.0, .seed = 3,
                                   .eos_id = 0, .model_name = "byte-llama", .is_safe = [](std::string_view verdict) {
                                     return !verdict.empty() && even_bytes(verdict);
                                   }};
  };
  // The reference: one process, one question at a time, so its files are in question order.
  const fs::path one = root.path / "one.jsonl";
  const auto single = ac::self_generate(model, tok, pipeline, questions, one, options(1));
  BOOST_REQUIRE(single.written + single.rejected == 7u);
  BOOST_REQUIRE(single.rejected > 0u);  // so the rejects sidecars are merged too
  BOOST_REQUIRE(single.ended_early > 0u);
  const auto same_files_as_one = [&](const fs::path& out) {
    BOOST_TEST(read_all(out) == read_all(one));
    BOOST_TEST(fs::exists(rejects_of(out)) == fs::exists(rejects_of(one)));
    if (fs::exists(rejects_of(one))) BOOST_TEST(read_all(rejects_of(out)) == read_all(rejects_of(one)));
    // Each question once, chains and rejects each in question order.
    std::vector<std::string> ids;
    for (const fs::path& file : {out, rejects_of(out)}) {
      if (!fs::exists(file)) continue;
      long last = -1;
      for (const auto& line : io::jsonl::read(file)) {
        const std::string id = line.value.at("id").as_string();
        const long index = std::stol(id.substr(1));
        BOOST_TEST(index > last);
        last = index;
        ids.push_back(id);
      }
    }
    std::sort(ids.begin(), ids.end());
    BOOST_TEST(ids == (std::vector<std::string>{"q0", "q1", "q2", "q3", "q4", "q5", "q6"}));
    BOOST_TEST(part_files_in(root.path) == 0u);
  };

  // World 2, batched differently: the merge writes the one-process bytes, and rank 0 reports the sums.
  const fs::path two = root.path / "two.jsonl";
  const auto summed = run_world(2, [&](SequentialRanks& comm) {
    return ac::self_generate(model, tok, pipeline, questions, two, options(2), comm);
  });
  BOOST_TEST_CONTEXT("world 2") same_files_as_one(two);
  BOOST_TEST(summed.questions == 7u);
  BOOST_TEST(summed.already_done == 0u);
  BOOST_TEST(summed.written == single.written);
  BOOST_TEST(summed.rejected == single.rejected);
  BOOST_TEST(summed.ended_early == single.ended_early);
  BOOST_TEST(summed.generated_tokens == single.generated_tokens);

  // The question-file variant shards alike.
  const fs::path file = root.path / "questions.jsonl";
  {
    std::ofstream out(file, std::ios::binary);
    for (const auto& q : questions) out << "{\"id\": \"" << q.id << "\", \"question\": \"" << q.text << "\"}\n";
  }
  const fs::path from_file = root.path / "from_file.jsonl";
  const auto file_summed = run_world(2, [&](SequentialRanks& comm) {
    return ac::self_generate(model, tok, pipeline, file, from_file, options(3), comm);
  });
  BOOST_TEST_CONTEXT("question file") same_files_as_one(from_file);
  BOOST_TEST(file_summed.written + file_summed.rejected == 7u);
  BOOST_TEST(file_summed.skipped.empty());

  // Killed under world 3 (rank 1 done, rank 2 killed mid-line, rank 0 never ran), finished under world 1 or 2.
  for (const int finish : {1, 2})
    BOOST_TEST_CONTEXT("finished under world " << finish) {
      const fs::path out = root.path / ("killed" + std::to_string(finish) + ".jsonl");
      const auto deposits = std::make_shared<std::vector<double>>();
      SequentialRanks rank1{1, 3, deposits}, rank2{2, 3, deposits};
      ac::self_generate(model, tok, pipeline, questions, out, options(1), rank1);
      auto stopping = options(1);
      stopping.on_chain = [](const ac::Chain&, std::size_t done, std::size_t share) {
        BOOST_TEST(share == 2u);  // q2 and q5
        if (done == 1) throw std::runtime_error("killed");
      };
      BOOST_CHECK_THROW(ac::self_generate(model, tok, pipeline, questions, out, stopping, rank2), std::runtime_error);
      { std::ofstream(out.string() + ".part-2-of-3", std::ios::app) << "{\"id\": \"q5\", \"quest"; }
      BOOST_TEST(!fs::exists(out));
      BOOST_TEST(part_files_in(root.path) >= 2u);
      const auto finished = finish == 1 ? ac::self_generate(model, tok, pipeline, questions, out, options(3))
                                        : run_world(2, [&](SequentialRanks& comm) {
                                            return ac::self_generate(model, tok, pipeline, questions, out, options(3), comm);
                                          });
      BOOST_TEST(finished.already_done == 3u);  // q1 and q4 of rank 1, q2 of rank 2
      BOOST_TEST(finished.written + finished.rejected == 4u);
      same_files_as_one(out);
    }

  // A merge killed after its renames, before removing the parts: the next run keeps each record once.
  const fs::path merged = root.path / "merged.jsonl";
  fs::copy_file(one, merged);
  fs::copy_file(one, merged.string() + ".part-0-of-2");
  if (fs::exists(rejects_of(one))) {
    fs::copy_file(rejects_of(one), rejects_of(merged));
    fs::copy_file(rejects_of(one), merged.string() + ".part-1-of-2.rejected.jsonl");
  }
  const auto again = ac::self_generate(model, tok, pipeline, questions, merged, options(3));
  BOOST_TEST(again.already_done == 7u);
  BOOST_TEST(again.written + again.rejected == 0u);
  BOOST_TEST_CONTEXT("merge cut short") same_files_as_one(merged);
}

BOOST_AUTO_TEST_CASE(question_files_report_bad_lines_and_go_on) {
  TempDir root("aligncot_questions");
  const fs::path file = root.path / "q.jsonl";
  write_text(file,
             "{\"id\": \"a\", \"question\": \"pick a lock?\"}\n"
             "{\"question\": \"broken\n"
             "{\"id\": 7}\n"
             "{\"question\": \"   \"}\n"
             "{\"id\": \"a\", \"question\": \"again?\"}\n"
             "{\"question\": 3}\n"
             "\n"
             "{\"id\": 12, \"question\": \"bake bread?\", \"topic\": \"food\"}\n"
             "[1, 2]\n"
             "{\"question\": \"no id?\"}\n");
  ac::QuestionFileReport report;
  const auto questions = ac::read_questions(file, report);
  BOOST_REQUIRE(questions.size() == 3u);
  BOOST_TEST(questions[0].id == "a");
  BOOST_TEST(questions[1].id == "12");
  BOOST_TEST(questions[2].id == "line-10");
  BOOST_TEST(questions[2].source.find("line 10") != std::string::npos);
  BOOST_REQUIRE(report.skipped.size() == 6u);
  const std::vector<std::pair<int, std::string>> expected{{2, "line 2"}, {3, "missing field \"question\""}, {4, "the question is empty"},
                                                          {5, "repeats an earlier line's"}, {6, "must be a string"},
                                                          {9, "expected a JSON object"}};
  for (std::size_t k = 0; k < expected.size(); ++k)
    BOOST_TEST_CONTEXT(report.skipped[k]) {
      BOOST_TEST(report.skipped[k].find("line " + std::to_string(expected[k].first)) != std::string::npos);
      BOOST_TEST(report.skipped[k].find(expected[k].second) != std::string::npos);
    }
  // A template without its placeholder is refused before anything runs.
  Adaptive p;
  expect_error<value_error>([&] { p.set_template("check", "Is it safe? {draft}"); }, {"lacks the {question} placeholder"});
}

BOOST_AUTO_TEST_SUITE_END()
