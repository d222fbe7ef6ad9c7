#!/usr/bin/env bash
# The main demo: installs what it needs, builds mote-demo with -O3 -march=native, and runs the MoTE
# loop on the shipped world: measure the base model, let it write its own AlignCoT chains, train MoTE
# on them, measure again, answer a few questions stage by stage, and write the report folder
# (mote-demo/report/report.html). Arguments go to mote-demo (--quick, --help, ...).
exec bash "$(dirname "$0")/world-tool.sh" mote_demo "$@"
