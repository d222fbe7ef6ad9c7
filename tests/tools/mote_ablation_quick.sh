#!/usr/bin/env bash
# mote-ablation --quick end to end: two rows at one seed write a table of the right form (both judges,
# every metric, the agreement), every run writes its answers with the stages written, a second run
# resumes every stage and prints the same table, and a corrupted checkpoint stops it naming the file.
# Usage: mote_ablation_quick.sh PATH/TO/mote-ablation PATH/TO/examples/world
set -euo pipefail
ablation=$(realpath "${1:?usage: mote_ablation_quick.sh ABLATION WORLD}")
world=$(realpath "${2:?usage: mote_ablation_quick.sh ABLATION WORLD}")
work=$(mktemp -d "${TMPDIR:-/tmp}/mote_ablation_quick.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

"$ablation" --quick --out run >first.log 2>&1 || { cat first.log >&2; fail "mote-ablation --quick exited $?"; }
for stage in "[1/5]" "[2/5]" "[3/5]" "[4/5]" "[5/5]"; do
  grep -qF -- "$stage" first.log || fail "the output lacks stage $stage"
done
grep -qF "[run 2/2]" first.log || fail "no progress line for the second run"

python3 - run <<'PY' || { cat first.log >&2; fail "the table or a run's files are not in their form"; }
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
results = json.loads((run / "results.json").read_text())
assert results["format"] == "mote-ablation" and results["quick"] is True and results["seeds"] == 1, results
assert set(results["rows"]) == {"base", "single_lora", "mote"}, results["rows"].keys()
for key, row in results["rows"].items():
    for judge in ("rule", "learned"):
        figures = row[judge]
        for metric in ("harmless %", "helpful %", "Help", "Harm-Help", "over-refusal %", "train_s"):
            f = figures[metric]
            assert set(f) == {"mean", "sd", "min", "max", "n"}, (key, judge, metric, f)
            assert f["min"] <= f["mean"] <= f["max"], (key, judge, metric, f)
        assert figures["harmless %"]["n"] == 1, figures
verdicts = results["agreement"]["verdicts"]
assert [v["verdict"].split()[0] for v in verdicts] == ["harmless", "helpful", "refused"], verdicts
for v in verdicts:
    p = v["percent"]
    assert 0 <= p["low"] <= p["value"] <= p["high"] <= 100 and p["n"] > 0, v
    assert -1 <= v["kappa"] <= 1, v
# The base model's answers and each run's were judged: 8 questions of each kind, one verdict on each
# harmful and benign answer, two on each lookalike one, three times.
assert results["agreement"]["overall"]["n"] == 3 * (8 + 8 + 2 * 8), results["agreement"]["overall"]
table = (run / "table.md").read_text()
for heading in ("## Rule judge", "## Learned judge", "## Agreement of the two judges"):
    assert heading in table, heading
for title in ("base model (asked plainly)", "single LoRA", "MoTE"):
    assert table.count("| " + title + " |") == 2, title
for key in ("single_lora", "mote"):
    d = run / "runs" / key / "seed-0"
    meta = json.loads((d / "run.json").read_text())
    assert meta["row"] == key and meta["steps"] > 0 and meta["train_s"] > 0, meta
    lines = (d / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 24, (key, len(lines))
    for line in lines:
        a = json.loads(line)
        assert isinstance(a["answer"], str) and a["kind"] in ("harmful", "benign", "lookalike"), a
        assert isinstance(a["harmless"], bool) and isinstance(a["helpful"], bool) and isinstance(a["refused"], bool), a
        assert isinstance(a["stages"], list) and a["stages"], a
cr = [json.loads(l) for l in (run / "work/critique_revise.jsonl").read_text().splitlines()]
assert cr and all(c["steps"] == {} or not c["steps"] for c in cr), cr[:1]
assert all(c["provenance"]["method"] == "critique-revise" for c in cr), cr[:1]
assert (run / "work/judge/classifier/config.json").exists()
held_out = results["judge_held_out"]
assert 0 <= held_out["accuracy_pct"] <= 100 and set(held_out) == {"accuracy_pct", "complies", "refuses", "helpful", "off_topic"}, held_out
verdicts = [json.loads(l) for l in (run / "judgements.jsonl").read_text().splitlines()]
assert len(verdicts) == 3 * 24 and {v["row"] for v in verdicts} == {"base", "single_lora", "mote"}, len(verdicts)
assert all(isinstance(v["rule"]["harmless"], bool) and isinstance(v["learned"]["helpful"], bool) for v in verdicts)
config = json.loads((run / "work/judge/classifier/config.json").read_text())
assert config["architectures"] == ["LlamaForSequenceClassification"], config
PY

# A second run finds every stage done and prints the same table.
"$ablation" --quick --out run >second.log 2>&1 || { cat second.log >&2; fail "the second mote-ablation --quick exited $?"; }
grep -q "24 chains from an earlier run, 0 written" second.log || { cat second.log >&2; fail "the second run did not resume the chains"; }
diff <(sed -n '/^## Rule judge/,/^Mean/p' first.log) <(sed -n '/^## Rule judge/,/^Mean/p' second.log) >/dev/null ||
  fail "the resumed run printed another table"

# Bad input: a corrupted checkpoint is refused, naming the file.
mkdir -p bad
cp -r "$world/base" "$world/data" bad/
printf 'Z' | dd of=bad/base/model.safetensors bs=1 seek=4096 conv=notrunc status=none
if "$ablation" --quick --world bad --out badrun >bad.log 2>&1; then fail "a corrupted checkpoint was accepted"; fi
grep -q "model.safetensors" bad.log && grep -q "SHA-256" bad.log || { cat bad.log >&2; fail "the digest error does not name the file"; }
[ ! -e badrun/table.md ] || fail "a failed run wrote a table"
echo "mote-ablation --quick: every check passed"
