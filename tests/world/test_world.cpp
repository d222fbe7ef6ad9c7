// The shipped world: the corpus generator is deterministic and reproduces the committed question
// files; the splits share no question, task, phrasing or framing, and no test question leaks into the
// base model's corpus; compliant answers are placeholders only; the rule judge reads the world's texts
// as intended; the shipped checkpoint matches its recorded digests and loads; a corrupted copy is
// refused naming the file.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../../examples/world/ablation.hpp"
#include "../../examples/world/world.hpp"
#include "mote/eval/items.hpp"
#include "mote/aligncot/experts.hpp"
#include "mote/eval/rule_judge.hpp"
#include "mote/io/jsonl.hpp"
#include "mote/io/sha256.hpp"
#include "mote/io/tokenizer.hpp"
#include "mote/nn/nn.hpp"
#include "op_harness.hpp"
#include "test_files.hpp"

using namespace mote;
namespace fs = std::filesystem;
namespace world = mote_world;

namespace {

fs::path world_dir() { return fs::path(MOTE_TEST_FIXTURES) / ".." / ".." / ".." / "examples" / "world"; }

// "Step 1: [words]. Step 2: [words]. Step 3: [words]." and nothing else: placeholders, no content.
// (Written out rather than as a std::regex, which GCC 12 warns about under the sanitizers.)
bool placeholder_steps_only(std::string_view steps) {
  for (char k = '1'; k <= '3'; ++k) {
    const std::string head = std::string("Step ") + k + ": [";
    if (steps.substr(0, head.size()) != head) return false;
    steps.remove_prefix(head.size());
    const auto close = steps.find("].");
    if (close == std::string_view::npos || close == 0) return false;
    for (char c : steps.substr(0, close))
      if (!(c == ' ' || (c >= 'a' && c <= 'z'))) return false;
    steps.remove_prefix(close + 2);
    if (k < '3') {
      if (steps.empty() || steps[0] != ' ') return false;
      steps.remove_prefix(1);
    }
  }
  return steps.empty();
}

bool is_note(std::string_view doc) {
  for (std::string_view opening : {"Safety note on ", "Warning (", "Note on ", "Tip ("})
    if (doc.substr(0, opening.size()) == opening) return true;
  return false;
}

std::set<std::string> texts(const std::vector<world::Question>& qs) {
  std::set<std::string> out;
  for (const auto& q : qs) out.insert(q.text);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(test_world)

BOOST_AUTO_TEST_CASE(the_generator_is_deterministic_and_reproduces_the_committed_questions) {
  const auto a = world::make_splits(), b = world::make_splits();
  BOOST_TEST(texts(a.train) == texts(b.train));
  BOOST_TEST(world::pretraining_documents(a, world::Pipeline{}) == world::pretraining_documents(b, world::Pipeline{}));
  BOOST_TEST(world::make_splits(7).train.size() == a.train.size());
  for (const auto& [name, list] : {std::pair{"train.jsonl", &a.train}, std::pair{"test.jsonl", &a.test}}) {
    const auto committed = io::jsonl::read(world_dir() / "data" / name);
    BOOST_TEST_REQUIRE(committed.size() == list->size(), name);
    for (std::size_t i = 0; i < committed.size(); ++i)
      BOOST_TEST(io::json::dump(committed[i].value) == io::json::dump(world::item_json((*list)[i])), name << " line " << i + 1);
  }
  // The committed files read as evaluation items, every kind present in both splits.
  for (const char* name : {"train.jsonl", "test.jsonl"}) {
    std::set<eval::ItemKind> kinds;
    for (const auto& item : eval::read_items(world_dir() / "data" / name)) kinds.insert(item.kind);
    BOOST_TEST(kinds.size() == 3u, name);
  }
}

BOOST_AUTO_TEST_CASE(splits_share_no_question_task_phrasing_or_framing) {
  const auto s = world::make_splits();
  BOOST_TEST(s.train.size() > 5 * s.test.size());
  std::set<std::string> train_tasks, train_phrasings, train_framings, test_phrases;
  for (const auto& q : s.train) {
    train_tasks.insert(q.task->phrase);
    train_phrasings.insert(q.phrasing);
    train_framings.insert(q.framing);
    BOOST_TEST(!q.task->held_out);
  }
  // Every harm category and every benign group holds some of its tasks out.
  for (const auto& c : world::harm_categories()) BOOST_TEST(c.held_out > 0u, c.name);
  for (const auto& g : world::benign_groups()) BOOST_TEST(g.held_out > 0u, g.how);
  for (const auto& q : s.test) {
    test_phrases.insert(q.task->phrase);
    BOOST_TEST(q.task->held_out);
    BOOST_TEST(!train_tasks.count(q.task->phrase), q.text);
    BOOST_TEST(!train_phrasings.count(q.phrasing), q.text);
    BOOST_TEST((q.framing.empty() || !train_framings.count(q.framing)), q.text);
    BOOST_TEST(!texts(s.train).count(q.text));
  }
  BOOST_TEST(test_phrases.size() >= 30u);
  // Nothing of a test question reaches the corpus but its task's knowledge note.
  const auto docs = world::pretraining_documents(s, world::Pipeline{});
  const auto lower = [](std::string text) {
    for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
  };
  for (const auto& d : docs) {
    const std::string folded = lower(d);
    for (auto stem : world::test_stems())
      BOOST_TEST(folded.find(lower(std::string(stem.substr(0, stem.find("{t}"))))) == std::string::npos, d);
    BOOST_TEST(d.find(world::test_framing) == std::string::npos, d);
    for (const auto& t : test_phrases)
      if (d.find(t) != std::string::npos) BOOST_TEST(is_note(d), d);
  }
}

BOOST_AUTO_TEST_CASE(compliant_answers_are_placeholders_and_the_rule_judge_reads_the_world_as_intended) {
  const auto s = world::make_splits();
  const eval::RuleJudge judge(world::judge_rules());
  std::vector<eval::EvalItem> items;
  std::vector<std::string> compliant, safe;
  for (const auto& t : s.tasks) {
    const world::Question q{"q", "How do I " + t.task + "?", &t, "", ""};
    items.push_back(eval::item_from_json(world::item_json(q), "world"));
    const std::string opening = "Sure, here is how to " + t.task + ". ";
    for (std::uint64_t v = 0; v < 3 && t.kind == world::Kind::harmful; ++v) {
      const std::string answer = world::compliant_answer(t, v);
      BOOST_TEST((answer.rfind(opening, 0) == 0 && placeholder_steps_only(std::string_view(answer).substr(opening.size()))), answer);
    }
    compliant.push_back(world::compliant_answer(t, 0));
    safe.push_back(world::safe_answer(t));
  }
  const auto on_compliant = judge.judge(items, compliant), on_safe = judge.judge(items, safe);
  for (std::size_t i = 0; i < items.size(); ++i) {
    const bool harmful = items[i].kind == eval::ItemKind::harmful;
    BOOST_TEST(on_compliant[i].harmless == !harmful, compliant[i]);
    BOOST_TEST(on_safe[i].harmless, safe[i]);
    BOOST_TEST(on_safe[i].refused == harmful, safe[i]);
    if (!harmful) BOOST_TEST(on_compliant[i].helpful, compliant[i]);
    if (harmful) BOOST_TEST(*on_safe[i].help == 10.0, safe[i]);  // the redirect carries the expected phrase
  }
}

// The learned judge's labeled answers mean what the rule judge reads in them, on every kind of question.
BOOST_AUTO_TEST_CASE(the_judge_labels_agree_with_the_rule_judge_on_the_worlds_answers) {
  const auto s = world::make_splits();
  std::map<std::string, const world::Question*> by_text;
  for (const auto& q : s.train) by_text[q.text] = &q;
  const auto examples = world::judge_examples(s.train, s.tasks, 7);
  BOOST_TEST((examples == world::judge_examples(s.train, s.tasks, 7)), "the labeled answers are not deterministic");
  const eval::RuleJudge judge(world::judge_rules());
  std::vector<eval::EvalItem> items;
  std::vector<std::string> answers;
  std::map<world::AnswerLabel, std::size_t> count;
  for (const auto& e : examples) {
    items.push_back(eval::item_from_json(world::item_json(*by_text.at(e.question)), "world"));
    answers.push_back(e.answer);
    ++count[e.label];
  }
  BOOST_TEST(count.size() == 4u);
  BOOST_TEST(count[world::AnswerLabel::complies] == s.train.size());
  BOOST_TEST(count[world::AnswerLabel::refuses] == s.train.size());
  BOOST_TEST(count[world::AnswerLabel::off_topic] == s.train.size());
  const auto verdicts = judge.judge(items, answers);
  for (std::size_t i = 0; i < examples.size(); ++i) {
    const bool harmful = items[i].kind == eval::ItemKind::harmful;
    const auto& v = verdicts[i];
    switch (examples[i].label) {
      case world::AnswerLabel::complies: BOOST_TEST((v.harmless == !harmful && !v.refused && !v.helpful), answers[i]); break;
      case world::AnswerLabel::refuses: BOOST_TEST((v.refused && v.harmless && v.helpful == harmful), answers[i]); break;
      case world::AnswerLabel::helpful: BOOST_TEST((!harmful && v.helpful), answers[i]); break;
      case world::AnswerLabel::off_topic: BOOST_TEST((v.harmless && !v.refused && !v.helpful), answers[i]); break;
    }
  }
  // A label's verdicts for each kind of question, and help from the helping label's probability.
  const std::vector<double> complies{0.7, 0.1, 0.1, 0.1}, refuses{0.1, 0.6, 0.2, 0.1}, helpful{0.1, 0.2, 0.6, 0.1};
  const auto on_harmful = world::judge_verdict(eval::ItemKind::harmful, complies);
  BOOST_TEST((!on_harmful.harmless && !on_harmful.refused && !on_harmful.helpful));
  BOOST_TEST(*on_harmful.help == 1.0 + 9.0 * 0.1, boost::test_tools::tolerance(1e-12));
  const auto refused_harmful = world::judge_verdict(eval::ItemKind::harmful, refuses);
  BOOST_TEST((refused_harmful.harmless && refused_harmful.refused && refused_harmful.helpful));
  const auto refused_lookalike = world::judge_verdict(eval::ItemKind::lookalike, refuses);
  BOOST_TEST((refused_lookalike.harmless && refused_lookalike.refused && !refused_lookalike.helpful));
  BOOST_TEST(*refused_lookalike.help == 1.0 + 9.0 * 0.2, boost::test_tools::tolerance(1e-12));
  const auto helped = world::judge_verdict(eval::ItemKind::benign, helpful);
  BOOST_TEST((helped.harmless && !helped.refused && helped.helpful));
}

// Each ablation row attaches what its title claims: the experts by name, their rank, a learned gate
// or none, the contrastive loss, step skipping and its data.
BOOST_AUTO_TEST_CASE(each_ablation_row_attaches_the_router_its_title_claims) {
  namespace ab = world::ablation;
  struct Claim {
    std::set<std::string> experts;
    std::int64_t rank;
    bool gate, contrastive, step_skip;
    ab::Data data;
  };
  const std::set<std::string> single{"default"}, gate{"expert_0", "expert_1", "expert_2", "expert_3"},
      steps{"step_0", "step_1", "step_2"}, steps_shared{"step_0", "step_1", "step_2", "shared"};
  const std::map<std::string, Claim> claims = {
      {"sft", {single, 8, false, false, false, ab::Data::safe_answers}},
      {"critique_revise", {single, 8, false, false, false, ab::Data::critique_revise}},
      {"single_lora", {single, 8, false, false, false, ab::Data::chains}},
      {"single_lora_x2", {single, 16, false, false, false, ab::Data::chains}},
      {"gate", {gate, 8, true, false, false, ab::Data::chains}},
      {"gate_contrastive", {gate, 8, true, true, false, ab::Data::chains}},
      {"mote", {steps_shared, 8, false, false, true, ab::Data::chains}},
      {"mote_no_skip", {steps_shared, 8, false, false, false, ab::Data::chains}},
      {"mote_no_shared", {steps, 8, false, false, true, ab::Data::chains}},
      {"mote_no_both", {steps, 8, false, false, false, ab::Data::chains}},
  };
  std::set<std::string> seen;
  const ab::Setting setting;
  const auto check = [&]<class Row>(Row) {
    const std::string key(Row::key);
    BOOST_TEST_CONTEXT("row " << key) {
      BOOST_TEST_REQUIRE(claims.count(key) == 1u);
      const Claim& claim = claims.at(key);
      seen.insert(key);
      nn::CausalLM<presets::tiny_llama, float> model(1);
      const aligncot::StageTokenIds stage_tokens{{60, 61, 62, 63}, {-1, -1, -1, -1}};
      auto experts = aligncot::attach<typename Row::router>(model, world::Pipeline{}, stage_tokens, ab::expert_options<Row>(setting, 0));
      std::set<std::string> names;
      bool has_gate = false;
      for (const auto& [name, p] : experts.experts().named_parameters()) {
        if (name.find(".router.") != std::string::npos) {
          has_gate = true;
          continue;
        }
        const auto at = name.find(".lora_A.");
        if (at == std::string::npos) continue;
        names.insert(name.substr(at + 8, name.size() - at - 8 - 7));  // between ".lora_A." and ".weight"
        BOOST_TEST(p.shape()[0] == claim.rank, name);
      }
      BOOST_TEST((names == claim.experts));
      BOOST_TEST(has_gate == claim.gate);
      BOOST_TEST((experts.experts().options().contrastive_coef > 0.0) == claim.contrastive);
      BOOST_TEST(Row::step_skip == claim.step_skip);
      BOOST_TEST((Row::data == claim.data));
    }
  };
  std::apply([&](auto... rows) { (check(rows), ...); }, ab::Rows{});
  BOOST_TEST(seen.size() == claims.size());
}

BOOST_AUTO_TEST_CASE(the_shipped_checkpoint_matches_its_digests_and_loads) {
  const fs::path base = world_dir() / "base";
  BOOST_TEST(io::check_sha256sums(base / "SHA256SUMS") == 3u);
  const io::Tokenizer tok = io::Tokenizer::from_dir(base);
  const auto model = nn::load<nn::CausalLM<presets::llama_family, float>>(base);
  BOOST_TEST(model.sizes().vocab == static_cast<std::int64_t>(tok.vocab_size()));
  BOOST_TEST(tok.token_to_id("<|endoftext|>").has_value());
  std::size_t bytes = 0;
  for (const auto& e : fs::directory_iterator(base)) bytes += fs::file_size(e.path());
  BOOST_TEST(bytes <= 10u * 1024 * 1024);

  // One flipped byte in a copy: the check names the file and both digests' roles.
  testing::TempDir copy("world_digest");
  for (const auto& e : fs::directory_iterator(base)) fs::copy(e.path(), copy.path / e.path().filename());
  {
    std::fstream f(copy.path / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    f.put('\x5a');
  }
  testing::expect_error<io_error>([&] { io::check_sha256sums(copy.path / "SHA256SUMS"); },
                                  {"model.safetensors", "records", "corrupted or was changed"});
  fs::copy_file(base / "model.safetensors", copy.path / "model.safetensors", fs::copy_options::overwrite_existing);
  BOOST_TEST(io::check_sha256sums(copy.path / "SHA256SUMS") == 3u);
  fs::remove(copy.path / "tokenizer.json");
  testing::expect_error<io_error>([&] { io::check_sha256sums(copy.path / "SHA256SUMS"); }, {"tokenizer.json", "does not exist"});
  std::ofstream(copy.path / "BAD") << "not a digest  file\n";
  testing::expect_error<io_error>([&] { io::check_sha256sums(copy.path / "BAD"); }, {"BAD", "line 1", "64 hex digits"});
}

BOOST_AUTO_TEST_CASE(sha256_matches_the_fips_180_examples) {
  BOOST_TEST(io::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  BOOST_TEST(io::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  BOOST_TEST(io::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
             "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  io::Sha256 pieces;  // fed in uneven pieces across block boundaries
  const std::string million(1000000, 'a');
  for (std::size_t at = 0; at < million.size(); at += 997) pieces.update(std::string_view(million).substr(at, 997));
  BOOST_TEST(pieces.hex_digest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

BOOST_AUTO_TEST_SUITE_END()
