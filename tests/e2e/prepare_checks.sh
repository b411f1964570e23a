#!/usr/bin/env bash
# End-to-end checks of `prepare` as one set of four files: whatever fails (a bad --tokenizer, a
# binary or non-UTF-8 text, a directory, a vocabulary the text cannot give, a write that fails
# half-way) exits 2 with one line, and the old set in --out stays byte for byte with nothing left
# beside it; a killed prepare's temporary directories are swept; reusing --out's own tokenizer
# gives the same set. And `plot` refuses a loss.svg it cannot write.
# Usage: prepare_checks.sh PARALLAMA_BIN SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
source "$src/tests/e2e/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"

set_files=(tokenizer.model train.bin val.bin meta.json)
# unchanged: data/ holds exactly the set recorded in data.md5, and no temporary directory of a
# prepare is left beside it.
unchanged() {
  (cd data && md5sum --quiet -c ../data.md5) || fail "the old set in data/ changed ($1)"
  [ "$(cat data/notes.txt)" = "my notes" ] || fail "a user's file in data/ changed ($1)"
  no_litter "$1"
}
no_litter() {
  local left
  left=$(find . -maxdepth 1 -name '.data.tmp-*' -o -maxdepth 1 -name '.data.old-*')
  [ -z "$left" ] || fail "left behind ($1): $left"
}
# A pid that no process has: a child that has exited.
dead_pid() {
  bash -c 'exit 0' &
  local pid=$!
  wait "$pid"
  echo "$pid"
}

make_corpus text.txt 600
"$bin" prepare --text text.txt --vocab 400 --out data > /dev/null
echo "my notes" > data/notes.txt
(cd data && md5sum "${set_files[@]}" notes.txt) > data.md5

# A --tokenizer that is not a sentencepiece model is refused, naming the file, before anything
# is written: before, it replaced data/tokenizer.model beside the old shards.
printf 'In the beginning God created the heaven and the earth.\n' > not.model
expect_error "not.model is not a sentencepiece model" \
  prepare --text text.txt --tokenizer not.model --out data
unchanged "a text file as --tokenizer"
: > empty.model
expect_error "empty.model is empty, not a sentencepiece model" \
  prepare --text text.txt --tokenizer empty.model --out data
expect_error "'data' is a directory, not a tokenizer" \
  prepare --text text.txt --tokenizer data --out data
expect_error "cannot read tokenizer 'nothere.model'" \
  prepare --text text.txt --tokenizer nothere.model --out data
# A sentencepiece model whose special ids are not parallama's (bos 1 starts every document).
spm_train --input=text.txt --model_prefix=nobos --vocab_size=300 --bos_id=-1 --eos_id=-1 \
  --minloglevel=2 > /dev/null 2>&1 || fail "spm_train"
expect_error "nobos.model: this sentencepiece model has ids unk 0, bos -1, eos -1; parallama needs unk 0, bos 1, eos 2" \
  prepare --text text.txt --tokenizer nobos.model --out data
unchanged "a bad --tokenizer"

# Binary files and text that is not UTF-8: the file, line and byte offset of the first bad byte.
printf 'In the beginning\nGod created\0the heaven\n' > nul.txt
expect_error "nul.txt: line 2, byte offset 28 holds a NUL byte: a binary file, not UTF-8 text" \
  prepare --text nul.txt --vocab 400 --out data
printf 'In the beginning\n\xff\xfe and the earth\n' > latin.txt
expect_error "latin.txt: line 2, byte offset 17 holds byte 0xFF, which is not valid UTF-8" \
  prepare --text latin.txt --vocab 400 --out data
printf 'In the beginning\nGod caf\xc3\n' > cut.txt
expect_error "cut.txt: line 2, byte offset 24 holds byte 0xC3, which is not valid UTF-8" \
  prepare --text cut.txt --vocab 400 --out data
gzip -c text.txt > text.gz
expect_error "text.gz: line [0-9]*, byte offset [0-9]* holds .*binary file" \
  prepare --text text.gz --vocab 400 --out data
# The second of two files is checked as well, after the first was read.
expect_error "nul.txt: line 2" prepare --text text.txt --text nul.txt --vocab 400 --out data
expect_error "'data' is a directory, not a text file" prepare --text data --vocab 400 --out data
unchanged "binary text, a directory as --text"

# A vocabulary the text cannot give: parallama's own advice, not sentencepiece's.
expect_error "--vocab 100000 is more than this text can give: sentencepiece found at most [0-9]* pieces; try --vocab [0-9]* or less" \
  prepare --text text.txt --vocab 100000 --out data
! grep -q -e vocab_size -e hard_vocab_limit -e 'Please set' -e '\.cc(' err.txt ||
  fail "sentencepiece's advice: $(cat err.txt)"
most=$(sed 's/.*try --vocab \([0-9]*\) or less.*/\1/' err.txt)
/usr/bin/python3 -c '
import random
random.seed(1)
for _ in range(300):
    print("".join(chr(random.randint(0x4E00, 0x9FFF)) for _ in range(30)))' > han.txt
expect_error "--vocab 400 is too small for this text: .* need [0-9]*; try --vocab [0-9]* or more" \
  prepare --text han.txt --vocab 400 --out data
least=$(sed 's/.*try --vocab \([0-9]*\) or more.*/\1/' err.txt)
unchanged "an unusable --vocab"
# The advice holds: those sizes work.
"$bin" prepare --text text.txt --vocab "$most" --out most > /dev/null || fail "--vocab $most"
"$bin" prepare --text han.txt --vocab "$least" --out least > /dev/null || fail "--vocab $least"

# A write that fails half-way (train.bin is larger than the 16 KiB a file may have here).
[ "$(stat -c %s data/train.bin)" -gt 16384 ] || fail "train.bin too small for this check"
(
  trap '' XFSZ
  ulimit -f 16
  expect_error "cannot write .*train.bin" prepare --text text.txt --vocab 420 --out data
)
unchanged "a failed write"

# A killed prepare's temporary directories are swept when their process is gone; those of a
# live process stay. A swap that was cut short (the old set set aside, the new one not yet in
# place) gets the old set back, even when this run fails.
dead=$(dead_pid)
mkdir ".data.tmp-$dead" ".data.tmp-$$"
echo partial > ".data.tmp-$dead/train.bin"
mv data ".data.old-$dead"
expect_error "is more than this text can give" prepare --text text.txt --vocab 100000 --out data
[ -d ".data.tmp-$$" ] || fail "the temporary directory of a live process was removed"
rmdir ".data.tmp-$$"
unchanged "a swap cut short"

# Reusing --out's own tokenizer gives the same set, byte for byte (--out with a slash too), and
# keeps the user's files.
"$bin" prepare --text text.txt --tokenizer data/tokenizer.model --out data/ > /dev/null
unchanged "--tokenizer data/tokenizer.model --out data"

# A new set replaces the old one as a whole: its tokenizer, shards and meta.json agree.
mkdir data/runs && echo kept > data/runs/a.txt
"$bin" prepare --text text.txt --vocab 420 --out data > /dev/null
no_litter "a new set"
(cd data && ! md5sum --quiet -c ../data.md5 > /dev/null 2>&1) || fail "the set was not replaced"
[ "$(cat data/notes.txt data/runs/a.txt)" = "my notes
kept" ] || fail "a user's files did not move over to the new set"
/usr/bin/python3 - data << 'EOF' || fail "the new set does not agree with itself"
import json, struct, sys
d = sys.argv[1]
meta = json.load(open(d + "/meta.json"))
assert meta["vocab_size"] == 420, meta
for name in ("train.bin", "val.bin"):
    head = open(d + "/" + name, "rb").read(64)
    vocab, h = struct.unpack_from("<QQ", head, 24)
    assert vocab == 420 and "%016x" % h == meta["tokenizer_hash"], (name, vocab, h, meta)
EOF

# plot: a loss.svg it cannot write is an error, not "wrote loss.svg".
mkdir run
printf '{"step": 1, "loss": 5.5}\n{"step": 2, "loss": 4.25, "val_loss": 4.5}\n' > run/metrics.jsonl
ln -s /dev/full run/loss.svg
expect_error "cannot write run/loss.svg: No space left on device" plot run
rm run/loss.svg
(
  trap '' XFSZ
  ulimit -f 1
  expect_error "cannot write run/loss.svg: File too large" plot run
)
mkdir run/loss.svg
expect_error "cannot write run/loss.svg: Is a directory" plot run
rmdir run/loss.svg
[ "$(ls -A run)" = "metrics.jsonl" ] || fail "plot left files behind: $(ls -A run)"
"$bin" plot run | grep -q "wrote run/loss.svg" && grep -q "<polyline" run/loss.svg || fail "plot"
echo "e2e prepare_checks: all checks passed"
