#pragma once
// The eval room: eval items and answers, the Judge interface, the rule judge, scores from an external
// judge, the paper's metrics with bootstrap intervals, two judges' agreement, the report folder (results.json and a
// self-contained HTML page), and the learned judge: a score head on a CausalLM and the Judge that runs
// it. The rule and file judges, metrics and report depend on core/ and io/ only; the learned judge
// (score_head.hpp, model_judge.hpp) reaches down to nn/ and train/batch.hpp as well.
#include "mote/eval/items.hpp"
#include "mote/eval/judge.hpp"
#include "mote/eval/rule_judge.hpp"
#include "mote/eval/external_judge.hpp"
#include "mote/eval/metrics.hpp"
#include "mote/eval/agreement.hpp"
#include "mote/eval/report.hpp"
#include "mote/eval/score_head.hpp"
#include "mote/eval/model_judge.hpp"
