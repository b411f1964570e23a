#!/usr/bin/env bash
# Nothing a user types or a machine does loses a run:
# - a run directory belongs to one run: a fresh start into another run's checkpoints is refused
#   (naming --resume and --force), a second process training into it is refused by a lock that a
#   crash cannot leave stale, and --resume RUN_DIR / --resume auto read `latest`;
# - names that look like other TOML types (out_dir "2024", a date-like data dir) round-trip
#   through trainer.json: eval, generate and --resume of such a run work;
# - trainer.json is checksummed; the tokenizer belongs to its data and its checkpoint;
# - a failed write (a full metrics.jsonl, a checkpoint over the file-size limit) is an error,
#   leaves the last checkpoint intact and no temporary directory behind;
# - under mpirun, an error is printed once, without MPI's abort banner.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --model.vocab_size 400 --train.steps 20
     --train.val_every 0 --train.ckpt_every 5)

# Names that look like a year and a date.
ln -s data 2024-01-01
"$bin" "${run[@]}" --data.dir 2024-01-01 --train.out_dir 2024 --stop-at 10 > /dev/null
grep -q '"out_dir": "2024"' 2024/step-10/trainer.json || fail "out_dir not stored as a string"
"$bin" "${run[@]}" --data.dir 2024-01-01 --train.out_dir 2024 --resume auto > resumed.log
grep -q "from step 10" resumed.log || fail "--resume auto did not read latest"
"$bin" eval --ckpt 2024/step-20 --data data/val.bin --batches 2 > /dev/null
"$bin" eval --ckpt 2024 --data data/val.bin --batches 2 > /dev/null  # a run directory: its latest
"$bin" generate --ckpt 2024/step-20 --prompt "In the beginning" --max-tokens 4 > /dev/null

# A fresh start into a run's directory is refused; --resume RUN_DIR and --force.
expect_error "holds the checkpoints of another run (latest step-20); continue it with --resume auto, or start over with --force" \
  "${run[@]}" --data.dir data --train.out_dir 2024
"$bin" "${run[@]}" --data.dir data --train.out_dir 2024 --train.steps 25 --resume 2024 > r.log
grep -q "from step 20" r.log || fail "--resume RUN_DIR did not read latest"
"$bin" "${run[@]}" --data.dir data --train.out_dir 2024 --force > f.log
grep -q "deleted" f.log && [ "$(cat 2024/latest)" = step-20 ] && [ ! -e 2024/step-25 ] ||
  fail "--force did not start over"
expect_error "neither a checkpoint" "${run[@]}" --data.dir data --train.out_dir x --resume data

# Two processes, one directory: the second is refused; a killed holder leaves no stale lock.
"$bin" "${run[@]}" --data.dir data --train.out_dir busy --train.steps 100000 \
  --train.ckpt_every 0 > /dev/null &
holder=$!
for _ in $(seq 300); do [ -s busy/metrics.jsonl ] && break; sleep 0.1; done
expect_error "another run is training into busy (process $holder@" \
  "${run[@]}" --data.dir data --train.out_dir busy --resume auto
kill -9 $holder; wait $holder 2> /dev/null || true
"$bin" "${run[@]}" --data.dir data --train.out_dir busy --train.steps 5 --force > /dev/null

# trainer.json: an edit is caught by its checksum, with one line.
cp -r 2024/step-20 edited
sed -i 's/"data_position": [0-9]*/"data_position": -100/' edited/trainer.json
expect_error "does not match the one recorded" "${run[@]}" --data.dir data --train.out_dir e1 \
  --resume edited
expect_error "does not match the one recorded" generate --ckpt edited --prompt x

# The tokenizer belongs to its data and its checkpoint.
make_corpus other.txt 1500
"$bin" prepare --text other.txt --vocab 380 --out other > /dev/null
cp -r 2024/step-20 swapped && cp other/tokenizer.model swapped/tokenizer.model
expect_error "is not the tokenizer that swapped was made with" generate --ckpt swapped --prompt x
cp -r data data2 && cp other/tokenizer.model data2/tokenizer.model
expect_error "data2/tokenizer.model (hash" "${run[@]}" --data.dir data2 --train.out_dir t2
expect_error "made with another tokenizer" eval --ckpt 2024/step-20 --data other/val.bin

# Failed writes. metrics.jsonl on a full disk:
mkdir -p full && ln -s /dev/full full/metrics.jsonl
expect_error "cannot write full/metrics.jsonl: No space left on device" \
  "${run[@]}" --data.dir data --train.out_dir full
# A checkpoint over the file-size limit (as a full disk): an error, step-5 intact, no litter.
"$bin" "${run[@]}" --data.dir data --train.out_dir small --stop-at 5 > /dev/null
set +e
(trap '' XFSZ; ulimit -f 200; exec "$bin" "${run[@]}" --data.dir data --train.out_dir small \
  --resume auto > /dev/null 2> err.txt)
rc=$?
set -e
[ $rc -eq 2 ] && [ "$(wc -l < err.txt)" -eq 1 ] || fail "checkpoint write failure: exit $rc: $(cat err.txt)"
grep -q "File too large" err.txt || fail "checkpoint write failure not named: $(cat err.txt)"
[ -z "$(ls -A small | grep '^\.step-')" ] || fail "temporary checkpoint left: $(ls -A small)"
[ "$(cat small/latest)" = step-5 ] || fail "latest moved"
"$bin" "${run[@]}" --data.dir data --train.out_dir small --resume auto > /dev/null

# Under mpirun: one line, no abort banner, whether every rank sees the error or only one does.
check_once "train.batch_size must be at least 1" "${run[@]}" --data.dir data --dp 2 \
  --train.out_dir m --train.batch_size 0
check_once "'abc' is not a whole number" "${run[@]}" --data.dir data --dp abc
check_once "does not match the one recorded" "${run[@]}" --data.dir data --dp 2 \
  --train.out_dir m2 --resume edited
# Only rank 0 fails (its metrics.jsonl is on a full disk) while rank 1 waits in a collective:
# rank 0 prints its line once and ends the job (with MPI's one notice that it did so).
set +e; mpi 2 "${run[@]}" --data.dir data --dp 2 --train.out_dir full > /dev/null 2> err.txt
rc=$?; set -e
[ $rc -ne 0 ] && [ "$(grep -c "cannot write full/metrics.jsonl" err.txt)" -eq 1 ] ||
  fail "one rank's error under mpirun: exit $rc: $(cat err.txt)"
echo "run directories, trainer.json, tokenizers, failed writes and errors under mpirun: all checked"
