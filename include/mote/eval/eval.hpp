#pragma once
// The eval room: eval items and answers, the Judge interface, the rule judge, scores from an external
// judge, the paper's metrics with bootstrap intervals, and the report folder (results.json and a
// self-contained HTML page). It depends on core/ and io/ only.
#include "mote/eval/items.hpp"
#include "mote/eval/judge.hpp"
#include "mote/eval/rule_judge.hpp"
#include "mote/eval/external_judge.hpp"
#include "mote/eval/metrics.hpp"
#include "mote/eval/report.hpp"
