#!/usr/bin/env bash
# Builds parallama and runs every test: unit, PyTorch reference, end to end; then the unit tests
# again in an AddressSanitizer + UndefinedBehaviorSanitizer build without MPI, and the fuzzers
# briefly.
#
# --quick: fast feedback while developing, with the packages already installed: the build, the
# unit and PyTorch reference tests and two multi-rank smoke tests (collectives on four ranks, and a
# checkpoint carried through four layouts, ZeRO included); no install, no sanitizers, no fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --quick ]; then
  bash scripts/build.sh build
  (cd build && ctest --output-on-failure -j 2 -L 'unit|reference' &&
    ctest --output-on-failure -R '^(dist\.comm\.np4|dist\.layout_chain)$')
  echo "quick tests passed (the whole suite: bash scripts/test.sh)"
  exit 0
elif [ $# -gt 0 ]; then
  echo "usage: bash scripts/test.sh [--quick]" >&2
  exit 2
fi
bash scripts/install-deps.sh
bash scripts/build.sh build
(cd build && ctest --output-on-failure -j 2)
# The sanitizer build is also the build without MPI (one process, comm's self backend): its unit
# tests pass there too.
bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPARALLAMA_SANITIZE=ON \
  -DPARALLAMA_MPI=OFF
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j 2 -L unit)
bash scripts/fuzz.sh  # libFuzzer harnesses of the file readers, a short run each
echo "all tests passed"
