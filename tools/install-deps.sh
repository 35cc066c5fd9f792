#!/usr/bin/env bash
# Installs the Debian packages FluxAttn builds with. Idempotent; uses sudo when not root.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config ccache git python3
  libabsl-dev libtomlplusplus-dev libboost-dev libboost-filesystem-dev libeigen3-dev
  libpcre2-dev libicu-dev nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-dev clang-format
  libcpp-httplib-dev libssl-dev python3-venv python3-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The cuDNN frontend headers (PyPI), where the CUDA toolkit has cuDNN.
"$(dirname "$0")/fetch-cudnn-frontend.sh"
