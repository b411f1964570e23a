#!/usr/bin/env bash
# The newer commands' guarantees, one case per defect class of the reliability sweep:
# - outputs are checked before any work and never touch inputs: an output that is an input, lies
#   inside a checkpoint or data directory read, exists (without --force) or cannot be written is
#   refused in one line, and prepare-classify keeps a directory's other files (also with --out .);
# - nothing diverges silently: finetune stops on a non-finite loss, classify refuses a damaged
#   classifier (non-finite weights: the unit tests), --log-every 0 is an error;
# - every reader is bounded: FIFOs, devices and directories are refused as inputs before they are
#   read, model dimensions have upper bounds, a prompt longer than the context is refused before
#   it is encoded, and floats beyond float32's range are refused.
# Usage: reliability.sh PARALLAMA_BIN SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
source "$src/tests/e2e/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
make_corpus text.txt 600
"$bin" prepare --text text.txt --vocab 400 --out data > /dev/null
tiny=(--config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400)
"$bin" train "${tiny[@]}" --train.steps 4 --train.val_every 0 --train.ckpt_every 4 \
  --train.out_dir run > /dev/null
ckpt=run/step-4
bible -f gen1:1-rev22:21 | awk 'NR % 30 == 1' > verses.txt
"$bin" prepare-classify --task testament --verses verses.txt --out cls > /dev/null
ft=(finetune --task classify --init "$ckpt" --data cls --batch 4 --seq-len 16)
"$bin" "${ft[@]}" --steps 2 --out clf > /dev/null
head -5 text.txt > lines.txt
printf 'In the beginning\nAnd God said\n' > prompts.txt
sum() { find "$@" -type f -exec md5sum {} + | sort; }
before=$(sum "$ckpt" data cls clf)

# 1. Outputs.
expect_error "is also an input" generate --ckpt "$ckpt" --prompts prompts.txt --out prompts.txt
expect_error "lies inside" generate --ckpt "$ckpt" --prompts prompts.txt --out "$ckpt/out.jsonl"
expect_error "lies inside" classify --ckpt clf --text lines.txt --out clf/classifier/x.jsonl
expect_error "is also an input" classify --ckpt clf --text lines.txt --out ./lines.txt
expect_error "lies inside" convert --from "$ckpt" --to "gguf:$ckpt/model.safetensors"
expect_error "lies inside" convert --from run --to "gguf:$ckpt/m.gguf"
ln -s "$ckpt" link
expect_error "lies inside" convert --from "$ckpt" --to gguf:link/model.safetensors
expect_error "lies inside" convert --from "$ckpt" --to "gguf:run/../$ckpt/./m.gguf"
expect_error "lies inside" convert --from "$ckpt" --to "hf:$ckpt/hf"
expect_error "lies inside" finetune --task classify --init "$ckpt" --data cls --out cls/res
expect_error "which this command reads" finetune --task classify --init "$ckpt" --data cls --out "$ckpt/"
expect_error "would destroy" prepare-classify --task testament --verses cls/train.jsonl --out cls
"$bin" generate --ckpt "$ckpt" --prompts prompts.txt --out gen.jsonl --max-tokens 3 > /dev/null
expect_error "exists; give --force" generate --ckpt "$ckpt" --prompts prompts.txt --out gen.jsonl
"$bin" generate --ckpt "$ckpt" --prompts prompts.txt --out gen.jsonl --max-tokens 3 --force > /dev/null
echo keep > m.gguf
expect_error "exists; give --force" convert --from "$ckpt" --to gguf:m.gguf
[ "$(cat m.gguf)" = keep ] || fail "a refused convert touched m.gguf"
expect_error "no directory" classify --ckpt clf --text lines.txt --out nodir/x.jsonl
expect_error "is a directory" classify --ckpt clf --text lines.txt --out cls
touch afile
expect_error "is not a directory" prepare-classify --task testament --verses verses.txt --out afile/x
[ "$(sum "$ckpt" data cls clf)" = "$before" ] || fail "a refused command changed an input"
# prepare-classify into a directory keeps its other files, also as --out .
mkdir here && echo mine > here/notes.txt
(cd here && "$bin" prepare-classify --task testament --verses ../verses.txt --out . > /dev/null)
[ "$(cat here/notes.txt)" = mine ] && [ -s here/train.jsonl ] && [ -s here/labels.json ] ||
  fail "prepare-classify --out . lost a file: $(ls here)"
[ -z "$(find . -name '*.tmp-*')" ] || fail "temporaries left: $(find . -name '*.tmp-*')"

# 2. Divergence.
expect_error "are out of range" "${ft[@]}" --steps 2 --out f0 --log-every 0
set +e; "$bin" "${ft[@]}" --out nan --lr 1e3 --steps 40 > nan.log 2> nan.err; rc=$?; set -e
[ $rc -eq 2 ] && grep -q "became" nan.err || fail "a diverging finetune: exit $rc, $(cat nan.err)"
[ ! -e nan/results.json ] || fail "a diverged finetune wrote results"
cp -r clf bad && /usr/bin/python3 - bad/classifier/model.safetensors <<'PY'
import json, struct, sys
path = sys.argv[1]
raw = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
start = 8 + n + header["score.bias"]["data_offsets"][0]
raw[start:start + 4] = struct.pack("<f", float("nan"))
open(path, "wb").write(raw)
PY
set +e; "$bin" classify --ckpt bad --text lines.txt --out bad.jsonl > /dev/null 2> bad.err; rc=$?; set -e
[ $rc -eq 2 ] && [ ! -e bad.jsonl ] || fail "classify with a damaged classifier: exit $rc, $(cat bad.err)"

# 4. Bounded readers.
mkfifo fifo
expect_error "is a FIFO" train --config fifo
expect_error "is a FIFO" tokenize --ckpt "$ckpt" --text fifo
expect_error "is a device" eval --ckpt "$ckpt" --text /dev/zero
expect_error "is a device" generate --ckpt "$ckpt" --prompts /dev/zero --out g2.jsonl
expect_error "is a FIFO" prepare --text text.txt --tokenizer fifo --out d2
expect_error "is a directory" classify --ckpt clf --text data --out c2.jsonl
mkdir fifo_run && mkfifo fifo_run/metrics.jsonl fifo_run/latest
expect_error "is a FIFO" plot fifo_run
expect_error "is not a complete checkpoint" eval --ckpt fifo_run --text lines.txt
expect_error "n_layers must be at most" plan "${tiny[@]}" --model.n_layers 1000000
expect_error "dim must be at most" info --model.preset tiny --model.dim 1000000000
expect_error "within the range of a 32-bit float" plan "${tiny[@]}" --optim.lr 1e39
/usr/bin/python3 -c "print('In the beginning ' * 2000000)" > long.txt
expect_error "bytes: at least" generate --ckpt "$ckpt" --prompt "$(head -c 100000 long.txt)"
expect_error "bytes: at least" generate --ckpt "$ckpt" --prompts long.txt --out g3.jsonl
echo "reliability: outputs, divergence and readers checked"
