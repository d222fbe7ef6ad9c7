#!/usr/bin/env bash
# mote-demo --quick end to end: every stage writes its files in the right form, a second run resumes
# without duplicates, the report parses and draws its plots in headless Chromium (check_report.py),
# and a corrupted shipped checkpoint or a question file of the wrong form stops the demo with the
# file named and no report folder written.
# Usage: mote_demo_quick.sh PATH/TO/mote-demo PATH/TO/examples/world PATH/TO/check_report.py
set -euo pipefail
demo=$(realpath "${1:?usage: mote_demo_quick.sh DEMO WORLD CHECK_REPORT}")
world=$(realpath "${2:?}")
check_report=$(realpath "${3:?}")
work=$(mktemp -d "${TMPDIR:-/tmp}/mote_demo_quick.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
lines() { wc -l <"$1" | tr -d ' '; }

"$demo" --quick --out run >first.log 2>&1 || { cat first.log >&2; fail "mote-demo --quick exited $?"; }
for stage in "[1/6]" "[2/6]" "[3/6]" "[4/6]" "[5/6]" "[6/6]"; do
  grep -qF -- "$stage" first.log || fail "the output lacks stage $stage"
done
grep -q "harmless rate" first.log || fail "no results table"

# Stage files, each in its form.
[ "$(lines run/work/chains.jsonl)" = 24 ] || fail "chains.jsonl has $(lines run/work/chains.jsonl) lines, expected 24"
for f in answers_base.jsonl answers_mote.jsonl; do
  [ "$(lines run/work/$f)" = 24 ] || fail "$f has $(lines run/work/$f) lines, expected 24"
done
for f in mote_config.json aligncot.json stage_tokens; do
  [ -e "run/work/mote/adapters/$f" ] || fail "the adapters folder lacks $f"
done
python3 - run <<'PY' || fail "a stage file is not in its form"
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
for line in (run / "work/chains.jsonl").read_text().splitlines():
    c = json.loads(line)
    assert isinstance(c["question"], str) and c["question"], c
    assert isinstance(c["answer"], str) and c["answer"], c
    assert set(c["steps"]) <= {"analysis", "guidance"}, c
    assert c["provenance"]["settings"]["adaptive"] is True, c
for name in ("answers_base.jsonl", "answers_mote.jsonl"):
    for line in (run / "work" / name).read_text().splitlines():
        a = json.loads(line)
        assert a["kind"] in ("harmful", "benign", "lookalike") and isinstance(a["answer"], str), a
        assert isinstance(a["harmless"], bool) and isinstance(a["helpful"], bool), a
results = json.loads((run / "report/results.json").read_text())
assert results["format"] == "mote-eval-report", results.keys()
assert set(results["summaries"]) == {"base", "MoTE"}, results["summaries"].keys()
for s in results["summaries"].values():
    for metric in ("harmless_rate_pct", "helpfulness_pct", "help", "harm_help", "over_refusal_pct"):
        assert metric in s, (metric, s.keys())
assert results["loss_curves"], "no loss curves"
assert results["extra"]["chains"]["total"] == 24, results["extra"]["chains"]
PY
rendered=0
python3 "$check_report" run/report || rendered=$?
[ "$rendered" = 0 ] || [ "$rendered" = 77 ] || fail "check_report.py failed on the demo's report"

# A second run resumes: the chains are found, none written twice.
"$demo" --quick --out run >second.log 2>&1 || { cat second.log >&2; fail "the second mote-demo --quick exited $?"; }
grep -q "24 chains (24 from an earlier run)" second.log || { cat second.log >&2; fail "the second run did not resume the chains"; }
[ "$(lines run/work/chains.jsonl)" = 24 ] || fail "the second run wrote chains again"

# Bad input: a corrupted checkpoint, then a question file of the wrong form.
mkdir -p bad
cp -r "$world/base" "$world/data" bad/
printf 'Z' | dd of=bad/base/model.safetensors bs=1 seek=4096 conv=notrunc status=none
if "$demo" --quick --world bad --out badrun >bad.log 2>&1; then fail "a corrupted checkpoint was accepted"; fi
grep -q "model.safetensors" bad.log && grep -q "SHA-256" bad.log || { cat bad.log >&2; fail "the digest error does not name the file"; }
[ ! -e badrun/report ] || fail "a failed run left a report folder"
cp "$world/base/model.safetensors" bad/base/model.safetensors
echo '{"id": "x", "question": "How?", "kind": "dangerous"}' >bad/data/test.jsonl
if "$demo" --quick --world bad --out badrun >bad.log 2>&1; then fail "a question file of the wrong form was accepted"; fi
grep -q "test.jsonl" bad.log && grep -q "line 1" bad.log || { cat bad.log >&2; fail "the question-file error does not name the file and line"; }
[ ! -e badrun/report ] || fail "a failed run left a report folder"
if [ "$rendered" = 77 ]; then
  echo "mote-demo --quick: every check passed but the rendering (no Chromium); skipped"
  exit 77
fi
echo "mote-demo --quick: every check passed"
