#!/usr/bin/env bash
# Builds the CUDA test, benchmark and example binaries here (nvcc needs no GPU) and copies them into DIR, for
# `MOTE_PREBUILT=DIR scripts/gpu_check.sh` on a GPU machine that cannot build mote itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_bundle.sh DIR}
build=${MOTE_BUILD_DIR:-build/cuda}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOTE_ENABLE_CUDA=ON -DMOTE_BUILD_TESTS=ON \
  -DMOTE_BUILD_BENCHMARKS=ON -DMOTE_BUILD_EXAMPLES=ON -DMOTE_SANITIZERS=OFF >/dev/null
cmake --build "$build" --target mote_cuda_tests mote_gpu_bench gpu_experts
mkdir -p "$out"
cp "$build/tests/mote_cuda_tests" "$build/benchmarks/mote_gpu_bench" "$build/examples/gpu_experts" "$out/"
echo "gpu_bundle: $out holds $(ls "$out" | tr '\n' ' ')"
