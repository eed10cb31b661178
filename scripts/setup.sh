#!/usr/bin/env bash
# Installs the Debian packages the build and tests need. Idempotent: installs only what is
# missing (after `apt-get update`). Run as root or with sudo available.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config libopenblas-dev libgtest-dev libgmock-dev
      libbenchmark-dev libcli11-dev nlohmann-json3-dev libfmt-dev libxxhash-dev
      python3 python3-pip gnuplot-nox python3.11-doc unzip
      clang libomp-dev libclang-rt-dev)  # clang: the sanitizer and fuzz build (make test-sanitize)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
