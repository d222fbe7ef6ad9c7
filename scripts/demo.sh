#!/usr/bin/env bash
# The main demo: installs what it needs, builds the examples with -O3 -march=native, and
# trains a small model on built-in data, printing the loss as it falls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
build=${MOTE_BUILD_DIR:-build/demo}
cmake -S . -B "$build" -G Ninja -DMOTE_BUILD_TESTS=OFF -DMOTE_BUILD_BENCHMARKS=OFF -DMOTE_BUILD_EXAMPLES=ON
cmake --build "$build" --target tiny_lm -j "$(nproc)"
OMP_WAIT_POLICY=PASSIVE "$build/examples/tiny_lm" "$@"
