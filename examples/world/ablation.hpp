#pragma once
// The rows of the paper's ablation table (PAPER.md section 3) and its baselines, each a type: the
// router the row attaches, the data it trains on and whether it skips steps. mote-ablation runs
// every row at one setting; test_world checks that each row attaches what its title says.
#include <mote/mote.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace mote_world::ablation {

// What a row trains on: the self-generated chains, their safe answers alone (SFT), or the base
// model's own critiqued and revised answers (Critique-Revise).
enum class Data { chains, safe_answers, critique_revise };

// One row: router R's experts trained on `D`, with step skipping (MoTE's p_skip) or without, with
// the top-k gate's contrastive expert loss or without.
template <mote::lora::Router R, Data D, bool StepSkip, bool Contrastive = false>
struct Row {
  using router = R;
  static constexpr Data data = D;
  static constexpr bool step_skip = StepSkip;
  static constexpr bool contrastive = Contrastive;
};

namespace lora = mote::lora;
// The gate of the learned-gate rows: as many experts as MoTE's (three steps and the shared one), two per token.
using Gate = lora::TopKRouter<4, 2>;

struct SingleLoRARow : Row<lora::SingleLoRA<1>, Data::chains, false> {
  static constexpr std::string_view key = "single_lora", title = "single LoRA";
};
struct DoubleRankRow : Row<lora::SingleLoRA<2>, Data::chains, false> {
  static constexpr std::string_view key = "single_lora_x2", title = "single LoRA, rank x2";
};
struct GateRow : Row<Gate, Data::chains, false> {
  static constexpr std::string_view key = "gate", title = "learned top-2 gate (vanilla MoE)";
};
struct GateContrastiveRow : Row<Gate, Data::chains, false, true> {
  static constexpr std::string_view key = "gate_contrastive", title = "gate + contrastive expert loss";
};
struct MoTERow : Row<lora::StepRouter<3>, Data::chains, true> {
  static constexpr std::string_view key = "mote", title = "MoTE";
};
struct MoTENoSkipRow : Row<lora::StepRouter<3>, Data::chains, false> {
  static constexpr std::string_view key = "mote_no_skip", title = "MoTE without step skipping";
};
struct MoTENoSharedRow : Row<lora::StepRouter<3, lora::without_shared>, Data::chains, true> {
  static constexpr std::string_view key = "mote_no_shared", title = "MoTE without the shared expert";
};
struct MoTENoBothRow : Row<lora::StepRouter<3, lora::without_shared>, Data::chains, false> {
  static constexpr std::string_view key = "mote_no_both", title = "MoTE without both";
};
struct SFTRow : Row<lora::SingleLoRA<1>, Data::safe_answers, false> {
  static constexpr std::string_view key = "sft", title = "SFT on the safe answers";
};
struct CritiqueReviseRow : Row<lora::SingleLoRA<1>, Data::critique_revise, false> {
  static constexpr std::string_view key = "critique_revise", title = "Critique-Revise";
};

// Every row, in the order of the table: the baselines, then the paper's ablation.
using Rows = std::tuple<SFTRow, CritiqueReviseRow, SingleLoRARow, DoubleRankRow, GateRow, GateContrastiveRow, MoTERow, MoTENoSkipRow,
                        MoTENoSharedRow, MoTENoBothRow>;

// The one setting of every row, fixed before the runs (the demo's defaults).
struct Setting {
  std::size_t train_questions = 900;  // 300 of each kind
  std::int64_t epochs = 4, rank = 8, batch = 8;
  double lr = 2e-3, dropout = 0.05, p_skip = 0.1;
  double contrastive_coef = 0.1;  // the gate-contrastive row only
};

// The experts' options of row `Row` at `setting` and `seed`.
template <class RowType>
lora::Options expert_options(const Setting& setting, std::uint64_t seed) {
  lora::Options o;
  o.rank = setting.rank;
  o.alpha = 2.0 * static_cast<double>(setting.rank);
  o.dropout = setting.dropout;
  o.seed = seed;
  o.contrastive_coef = RowType::contrastive ? setting.contrastive_coef : 0.0;
  return o;
}

// The mean of per-seed figures with their sample standard deviation and range.
struct Spread {
  double mean = 0, sd = 0, low = 0, high = 0;
  std::size_t n = 0;
};

inline Spread spread(const std::vector<double>& xs) {
  Spread s;
  s.n = xs.size();
  if (xs.empty()) return s;
  s.low = s.high = xs.front();
  for (double x : xs) {
    s.mean += x;
    s.low = std::min(s.low, x);
    s.high = std::max(s.high, x);
  }
  s.mean /= static_cast<double>(xs.size());
  if (xs.size() > 1) {
    double ss = 0;
    for (double x : xs) ss += (x - s.mean) * (x - s.mean);
    s.sd = std::sqrt(ss / static_cast<double>(xs.size() - 1));
  }
  return s;
}

}  // namespace mote_world::ablation
