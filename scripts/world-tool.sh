#!/usr/bin/env bash
# Builds one of the shipped world's tools (mote_demo, mote_ablation, mote_world) with -O3 -march=native,
# after installing what it needs, and runs it with the remaining arguments.
# Usage: scripts/world-tool.sh TARGET [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/world-tool.sh mote_demo|mote_ablation|mote_world [ARGS...]}
shift
bash scripts/setup-debian.sh
build=${MOTE_BUILD_DIR:-build/demo}
cmake -S . -B "$build" -G Ninja -DMOTE_BUILD_TESTS=OFF -DMOTE_BUILD_BENCHMARKS=OFF -DMOTE_BUILD_EXAMPLES=ON >/dev/null
echo "building ${target//_/-} (about a minute on 2 cores)"
cmake --build "$build" --target "$target" -j "$(nproc)"
OMP_WAIT_POLICY=PASSIVE "$build/examples/${target//_/-}" "$@"
