#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds tests (warnings as errors, plus an
# ASan+UBSan twin of every suite), examples and benchmarks, then runs CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
build=${MOTE_BUILD_DIR:-build/test}
cmake -S . -B "$build" -G Ninja -DMOTE_BUILD_TESTS=ON -DMOTE_SANITIZERS=ON
cmake --build "$build" -j "$(nproc)"
cd "$build"
ctest --output-on-failure -j "$(nproc)"
