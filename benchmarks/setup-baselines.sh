#!/usr/bin/env bash
# Installs what the PyTorch baselines of benchmarks/compare.py need on Debian 12, only where missing:
# Debian's python3-torch (for /usr/bin/python3), and OpenBLAS for it. Debian's torch does its float products through
# libblas.so.3, which is the reference BLAS (a few GFLOP/s) unless an optimized one is installed;
# libopenblas0-pthread registers itself as the preferred libblas.so.3 alternative.
set -euo pipefail
need=()
/usr/bin/python3 -c "import torch" 2>/dev/null || need+=(python3-torch)
dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q "install ok installed" || need+=(libopenblas0-pthread)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Which library libblas.so.3 resolves to now (the baselines check it again at run time).
update-alternatives --query "libblas.so.3-$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)" 2>/dev/null \
  | grep -E '^(Value|Best):' || true
