#!/usr/bin/env bash
# Installs the Debian packages parallama needs. Idempotent: does nothing when all are present.
set -euo pipefail
packages=(
  build-essential cmake g++ clang-format       # toolchain
  pkg-config                                   # CMake finds sentencepiece through it
  libopenmpi-dev openmpi-bin                   # communication between processes
  libdnnl-dev                                  # matrix multiplies (oneDNN)
  ocl-icd-opencl-dev                           # oneDNN's CMake package looks for OpenCL (only a Recommends)
  libsentencepiece-dev sentencepiece           # tokenizer
  libtomlplusplus-dev nlohmann-json3-dev libcli11-dev   # configs, JSON, command line
  libgtest-dev libgmock-dev libbenchmark-dev   # tests and micro-benchmarks
  python3 python3-torch python3-numpy          # the independent PyTorch reference and peer benchmark
  libopenblas0-pthread                         # BLAS for that PyTorch (else it falls back to the slow reference BLAS)
  bible-kjv                                    # the default corpus
  procps                                       # pgrep, for the failure tests (not in a minimal base)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
