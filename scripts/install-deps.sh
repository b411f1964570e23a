#!/usr/bin/env bash
# Installs the Debian packages parallama needs, and llama.cpp for the GGUF test (the npm package
# node-llama-cpp at an exact version, with its prebuilt CPU library, in $PARALLAMA_NODE_DIR,
# default /opt/parallama-node). Idempotent: does nothing when all are present.
set -euo pipefail
node_llama_cpp_version=3.22.1   # tests/interop/gguf_llama_cpp.sh checks for this version
node_dir=${PARALLAMA_NODE_DIR:-/opt/parallama-node}
packages=(
  build-essential cmake g++ clang-format       # toolchain
  clang libclang-rt-14-dev libomp-dev          # the fuzz build: clang, its libFuzzer runtime, OpenMP
  pkg-config                                   # CMake finds sentencepiece through it
  libopenmpi-dev openmpi-bin                   # communication between processes
  libdnnl-dev                                  # matrix multiplies (oneDNN)
  ocl-icd-opencl-dev                           # oneDNN's CMake package looks for OpenCL (only a Recommends)
  libsentencepiece-dev sentencepiece           # tokenizer
  libpcre2-dev                                 # Unicode patterns of the byte-level BPE (Llama 3)
  libtomlplusplus-dev nlohmann-json3-dev libcli11-dev   # configs, JSON, command line
  libgtest-dev libgmock-dev libbenchmark-dev   # tests and micro-benchmarks
  python3 python3-torch python3-numpy          # the independent PyTorch reference and peer benchmark
  libopenblas0-pthread                         # BLAS for that PyTorch (else it falls back to the slow reference BLAS)
  bible-kjv                                    # the default corpus
  procps                                       # pgrep, for the failure tests (not in a minimal base)
  iproute2 util-linux                          # ip and tc, nsenter and unshare: scripts/cluster.sh
  chromium                                     # headless, opens the run report in tests/dist/report.sh
)
# Node.js and npm, for node-llama-cpp (llama.cpp) in the GGUF test: Debian's, unless a node and
# an npm (e.g. NodeSource's nodejs, which bundles npm and conflicts with Debian's) are present.
# node-llama-cpp needs Node.js 20 or newer (Debian 12's nodejs is 18).
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-deps: done"
fi

# node-llama-cpp: its JavaScript and the one prebuilt binary package of this platform, nothing
# optional (no CUDA or Vulkan builds), and no install scripts: it never builds llama.cpp from
# source and never downloads a model; the test loads the prebuilt library with build "never".
case "$(uname -m)" in
  x86_64) binary=@node-llama-cpp/linux-x64 ;;
  aarch64) binary=@node-llama-cpp/linux-arm64 ;;
  *) echo "install-deps: no prebuilt node-llama-cpp for $(uname -m); the GGUF test will fail"; exit 0 ;;
esac
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "install-deps: Node.js $(node --version 2>/dev/null) is older than node-llama-cpp's minimum" \
    "(20): the llama.cpp test (interop.gguf_llama_cpp) will be skipped; install Node.js 20 or" \
    "newer (e.g. NodeSource's nodejs) and run this script again to have it"
  exit 0
fi
installed() {  # installed PACKAGE: its version under $node_dir, or nothing
  node -p "require('$node_dir/node_modules/$1/package.json').version" 2>/dev/null || true
}
if [ "$(installed node-llama-cpp)" = "$node_llama_cpp_version" ] &&
   [ "$(installed $binary)" = "$node_llama_cpp_version" ]; then
  echo "install-deps: node-llama-cpp $node_llama_cpp_version present in $node_dir"
  exit 0
fi
echo "install-deps: installing node-llama-cpp $node_llama_cpp_version into $node_dir"
target=$node_dir
[ -e "$target" ] || target=$(dirname "$node_dir")
[ -w "$target" ] && SUDO=""  # sudo only where the directory needs it
$SUDO mkdir -p "$node_dir"
[ -f "$node_dir/package.json" ] ||
  echo '{ "name": "parallama-node", "private": true }' | $SUDO tee "$node_dir/package.json" >/dev/null
$SUDO npm install --prefix "$node_dir" --no-audit --no-fund --ignore-scripts --omit=optional \
  --save-exact --loglevel=error "node-llama-cpp@$node_llama_cpp_version" \
  "$binary@$node_llama_cpp_version" >/dev/null
echo "install-deps: done"
