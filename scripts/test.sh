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
# CTest lists skipped tests after its summary; repeat the summary so that it is the last line.
set +e
ctest --output-on-failure -j "$(nproc)" 2>&1 | tee ctest.log
status=${PIPESTATUS[0]}
set -e
grep -E '^[0-9]+% tests passed' ctest.log | tail -n 1
exit "$status"
