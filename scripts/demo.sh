#!/usr/bin/env bash
# The main demo: installs what it needs, builds mote-demo with -O3 -march=native, and runs the MoTE
# loop on the shipped world: measure the base model, let it write its own AlignCoT chains, train MoTE
# on them, measure again, answer a few questions stage by stage, and write the report folder
# (mote-demo/report/report.html). Arguments go to mote-demo (--quick, --help, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
build=${MOTE_BUILD_DIR:-build/demo}
cmake -S . -B "$build" -G Ninja -DMOTE_BUILD_TESTS=OFF -DMOTE_BUILD_BENCHMARKS=OFF -DMOTE_BUILD_EXAMPLES=ON >/dev/null
echo "building mote-demo (about a minute on 2 cores)"
cmake --build "$build" --target mote_demo -j "$(nproc)"
OMP_WAIT_POLICY=PASSIVE "$build/examples/mote-demo" "$@"
