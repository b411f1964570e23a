#!/usr/bin/env bash
# The main job on a fresh machine: install, build, prepare the King James Bible, train kjv-small
# for a few minutes, then print a sample and the validation loss beside the unigram baseline.
# Extra arguments go to `parallama train` (e.g. --train.steps 100). Run again, it reuses the data
# and the finished run (or continues an interrupted one) and prints the same report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build
bin=./build/parallama
mkdir -p data
# The text of every verse, without its reference ("Ge1:1 ").
[ -s data/kjv.txt ] || bible -f gen1:1-rev22:21 | sed -E 's/^[^ ]+ //' > data/kjv.txt
prepared=yes
for f in meta.json tokenizer.model train.bin val.bin; do [ -s "data/kjv/$f" ] || prepared=no; done
[ $prepared = yes ] || $bin prepare --text data/kjv.txt --vocab 4096 --out data/kjv
# Run again, the demo continues its run where it stopped, or says that the run is finished and
# shows it again (a larger --train.steps trains it further).
$bin train --config configs/kjv-small.toml --resume auto "$@"
run=runs/kjv-small
ckpt=$run/$(cat $run/latest)
$bin plot $run
$bin report $run
echo
echo "== sample from $ckpt =="
$bin generate --ckpt "$ckpt" --prompt "And it came to pass" --max-tokens 120 --temperature 0.8 --seed 1
echo
/usr/bin/python3 - "$run/metrics.jsonl" data/kjv/meta.json <<'PY'
import json, sys
val = [json.loads(l)["val_loss"] for l in open(sys.argv[1]) if "val_loss" in l]
base = json.load(open(sys.argv[2]))["unigram_val_loss"]
print(f"validation loss {val[-1]:.3f} (unigram baseline {base:.3f}: {base - val[-1]:.3f} nats better)")
PY
