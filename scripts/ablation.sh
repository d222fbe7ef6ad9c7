#!/usr/bin/env bash
# The paper's ablation table on the shipped world: installs what it needs, builds mote-ablation with
# -O3 -march=native and runs every row at three seeds, scored by the rule judge and the learned judge
# (mote-ablation/table.md and results.json). Resumable: run it again after a stop. Arguments go to
# mote-ablation (--quick, --seeds, --rows, --help, ...).
exec bash "$(dirname "$0")/world-tool.sh" mote_ablation "$@"
