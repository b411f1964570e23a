#!/usr/bin/env bash
# Builds parallama and runs every test: unit, PyTorch reference, end to end; then the unit tests
# again in an AddressSanitizer + UndefinedBehaviorSanitizer build, and the fuzzers briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build
(cd build && ctest --output-on-failure -j 2)
bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPARALLAMA_SANITIZE=ON
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j 2 -L unit)
bash scripts/fuzz.sh  # libFuzzer harnesses of the file readers, a short run each
echo "all tests passed"
