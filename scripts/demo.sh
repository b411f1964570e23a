#!/usr/bin/env bash
# The main job on a fresh machine: install, build, then train kjv-small on the King James Bible.
# Extra arguments are passed to `parallama train` (e.g. --train.steps 100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build
mkdir -p data
[ -s data/kjv.txt ] || bible -f gen1:1-rev22:21 > data/kjv.txt
./build/parallama train --config configs/kjv-small.toml "$@"
