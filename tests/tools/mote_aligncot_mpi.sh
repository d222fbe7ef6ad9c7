#!/usr/bin/env bash
# mote-aligncot across two MPI ranks against one process: generate writes each question once, in
# question order and as one process would; train with --batch 2 on two ranks follows one process with
# --batch 4; eval writes every answer in question order; an interrupted generate resumes under mpirun;
# chat under mpirun is refused.
# Usage: mote_aligncot_mpi.sh PATH/TO/mote-aligncot MPIEXEC
set -euo pipefail
tool=$(realpath "${1:?usage: mote_aligncot_mpi.sh PATH/TO/mote-aligncot MPIEXEC}")
mpiexec=${2:?usage: mote_aligncot_mpi.sh PATH/TO/mote-aligncot MPIEXEC}
work=$(mktemp -d "${TMPDIR:-/tmp}/mote_aligncot_mpi.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MOTE_DIST_TIMEOUT_S=120

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
run_ok() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 || { cat "$log" >&2; fail "$* exited $?"; }
}
two_ranks() { timeout 300 "$mpiexec" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 -x MOTE_DIST_TIMEOUT_S "$tool" "$@"; }
ids() { grep -o '"id":"[^"]*"' "$1" | tr '\n' ' '; }

run_ok demo.log "$tool" demo-checkpoint --out gpt2 --family gpt2 --layers 2 --width 32 --heads 2 --context 256
for i in $(seq 1 7); do echo "{\"id\": \"q$i\", \"question\": \"Question number $i: how do I do thing $i?\"}"; done >questions.jsonl

# generate: two ranks write the same file as one process, each question once, no part files left.
gen=(generate --model gpt2 --questions questions.jsonl --batch 2 --max-stage-tokens 6 --stop '\n')
run_ok gen1.log "$tool" "${gen[@]}" --out one.jsonl
run_ok gen2.log two_ranks "${gen[@]}" --out two.jsonl
cmp one.jsonl two.jsonl || { diff one.jsonl two.jsonl | head >&2; fail "two ranks wrote other chains than one process"; }
if [[ -f one.jsonl.rejected.jsonl ]]; then cmp one.jsonl.rejected.jsonl two.jsonl.rejected.jsonl || fail "rejected files differ"; fi
compgen -G "two.jsonl.part-*" >/dev/null && fail "part files were left behind: $(ls two.jsonl.part-*)"
[[ $(grep -c "^chains:" gen2.log) == 1 ]] || { cat gen2.log >&2; fail "the report was not printed once (by rank 0)"; }

# A generate run cut short: its first three questions done, the rest are written by two ranks.
head -n 3 questions.jsonl >first3.jsonl
run_ok gen3.log "$tool" "${gen[@]/questions.jsonl/first3.jsonl}" --out resumed.jsonl
run_ok gen4.log two_ranks "${gen[@]}" --out resumed.jsonl
cmp one.jsonl resumed.jsonl || fail "a resumed two-rank run differs from one uninterrupted process"
grep -q "already done" gen4.log || { cat gen4.log >&2; fail "the resumed run did not count the questions done"; }

# train: two ranks of --batch 2 follow one process of --batch 4, step by step (float32, within rounding).
chains=one.jsonl
[[ $(wc -l <one.jsonl) -ge 4 ]] || { cat one.jsonl.rejected.jsonl one.jsonl; fail "too few chains to train on"; }
tr=(train --model gpt2 --chains "$chains" --epochs 2 --rank 2 --alpha 4 --lr 1e-3 --dropout 0)
run_ok train1.log "$tool" "${tr[@]}" --batch 4 --out ad1
run_ok train2.log two_ranks "${tr[@]}" --batch 2 --out ad2
grep -q "data parallel: 2 ranks (mpi), global batch 4" train2.log || { cat train2.log >&2; fail "train did not run on two ranks"; }
[[ -f ad2/train_settings.json && -d ad2/step_0 ]] || fail "two-rank train wrote no adapters"
python3 - ad1/run/metrics.jsonl ad2/run/metrics.jsonl <<'PY'
import json, sys
def losses(path):
    return [r["loss"] for r in map(json.loads, open(path)) if r.get("kind") == "train"]
one, two = losses(sys.argv[1]), losses(sys.argv[2])
assert len(one) == len(two) and one, f"steps differ: {len(one)} vs {len(two)}"
worst = max(abs(a - b) / max(abs(a), 1e-6) for a, b in zip(one, two))
assert worst < 1e-4, f"losses differ by {worst:.3g} relative: {one} vs {two}"
print(f"ok: {len(one)} steps, losses within {worst:.2g} relative")
PY

# eval: every answer, in question order, once; one question a batch on both sides, so greedy answers
# are computed alike and the files are the same bytes.
ev=(eval --model gpt2 --adapters ad1 --questions questions.jsonl --batch 1 --max-new-tokens 8)
run_ok eval1.log "$tool" "${ev[@]}" --out answers1.jsonl
run_ok eval2.log two_ranks "${ev[@]}" --out answers2.jsonl
[[ "$(ids answers1.jsonl)" == "$(ids answers2.jsonl)" ]] || fail "two-rank eval order: $(ids answers2.jsonl)"
[[ $(wc -l <answers2.jsonl) == 7 ]] || fail "two-rank eval wrote $(wc -l <answers2.jsonl) answers, expected 7"
cmp answers1.jsonl answers2.jsonl || fail "two-rank eval answered otherwise than one process"
# chat is one-process work: under a launcher it is refused, naming why.
if two_ranks chat --model gpt2 --adapters ad1 --question "hi" >chat.log 2>&1; then fail "chat ran on two ranks"; fi
grep -q "chat runs in one process, but a launcher started 2" chat.log || { cat chat.log >&2; fail "chat under mpirun: no clear refusal"; }
echo "ok: mote-aligncot on two ranks"
