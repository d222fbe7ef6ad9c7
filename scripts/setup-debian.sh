#!/usr/bin/env bash
# Installs what building mote needs on Debian 12, only where something is missing.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
command -v ccache >/dev/null || need+=(ccache)
[ -f /usr/include/eigen3/Eigen/Core ] || need+=(libeigen3-dev)
[ -f /usr/include/boost/test/unit_test.hpp ] || need+=(libboost-test-dev)
# CLI11 parses the command-line tools' arguments (mote-aligncot, the examples).
[ -f /usr/include/CLI/CLI.hpp ] || need+=(libcli11-dev)
# clang++ and its libFuzzer runtime build the fuzz_safetensors tests (-fsanitize=fuzzer).
command -v clang++ >/dev/null || need+=(clang)
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a" >/dev/null || need+=(libclang-rt-dev)
# OpenMPI launches and connects the data-parallel ranks (dist::mpi, the dist_mpi test).
command -v mpicxx >/dev/null || need+=(libopenmpi-dev)
command -v mpirun >/dev/null || need+=(openmpi-bin)
# Chromium renders the eval report headless for the eval_report_render test (tests/tools/check_report.py).
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
