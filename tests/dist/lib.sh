# Shared by the multi-rank scripts: arguments BIN SOURCE_DIR WORK_DIR [COMM_FAULT_BIN].
set -euo pipefail
bin=$1 src=$2 work=$3 fault=${4:-}
source "$src/tests/e2e/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpi() {  # mpi NP ARGS...: parallama on NP ranks of this machine
  local np=$1; shift
  mpirun --oversubscribe -np "$np" "$bin" "$@"
}
compare() { /usr/bin/python3 "$src/tests/dist/compare.py" "$@"; }
# check_once WANT ARGS...: mpirun -np 2 parallama ARGS fails, its error (WANT) said once, with no
# abort banner.
check_once() {
  local want=$1; shift
  set +e; mpi 2 "$@" > /dev/null 2> err.txt; local rc=$?; set -e
  [ $rc -ne 0 ] || fail "mpirun $*: exit 0"
  [ "$(grep -c -- "$want" err.txt)" -eq 1 ] || fail "mpirun $*: not once: $(cat err.txt)"
  ! grep -q "MPI_ABORT\|rank 1:" err.txt || fail "mpirun $*: abort banner or second line: $(cat err.txt)"
}
rm -rf "$work" && mkdir -p "$work" && cd "$work"
# A prepared corpus for the tiny model.
prepare_tiny() {
  make_corpus text.txt 3000
  "$bin" prepare --text text.txt --vocab 400 --out data > /dev/null
}
# The compression test (compress.sh): the tiny model's training command
# (11 steps, buckets of 10 KB), its seed checkpoints after one step (seed/, and seed_tied/ with a
# tied embedding), and each layout of the associative array named $1 (name -> "ranks
# settings..."; names with pp2 start from seed_tied) resumed from them for 10 steps into a
# directory of its name.
compress_run=(train --data.dir data --model.vocab_size 400 --train.steps 11 --train.val_every 0
              --train.ckpt_every 0 --optim.warmup_steps 3 --parallel.bucket_mb 0.01)
make_compress_seeds() {
  prepare_tiny
  compress_run=("${compress_run[0]}" --config "$src/configs/tiny.toml" "${compress_run[@]:1}")
  "$bin" "${compress_run[@]}" --train.batch_size 12 --train.out_dir seed --stop-at 1 > /dev/null
  "$bin" "${compress_run[@]}" --train.batch_size 12 --model.tie_embeddings true \
    --train.out_dir seed_tied --stop-at 1 > /dev/null
}
run_compress_layouts() {
  local -n layouts=$1
  local out np settings seed
  for out in "${!layouts[@]}"; do
    read -r np settings <<< "${layouts[$out]}"
    seed=seed
    [[ $out == *pp2* ]] && seed=seed_tied
    # shellcheck disable=SC2086
    mpi "$np" "${compress_run[@]}" $settings --train.out_dir "$out" --resume $seed/step-1 \
      > "$out.log" 2>&1 || fail "$out: exit $?: $(tail -3 "$out.log")"
    [ "$(wc -l < "$out/metrics.jsonl")" -eq 10 ] || fail "$out: not 10 metric lines"
  done
}
# stored_compress DIR VALUE: the checkpoint DIR's trainer.json holds parallel.compress = VALUE.
stored_compress() {
  /usr/bin/python3 -c 'import json, sys
assert json.load(open(sys.argv[1]))["config"]["parallel"]["compress"] == sys.argv[2]' \
    "$1/trainer.json" "$2" || fail "$1 does not store parallel.compress = $2"
}
# rank_pid R: the process of world rank R of the job running in this test's directory (other
# tests may run jobs beside it); waits up to 15 s for it to start, fails the test without it.
rank_pid() {
  for _ in $(seq 300); do
    for p in $(pgrep -x parallama); do
      [ "$(readlink "/proc/$p/cwd" 2> /dev/null)" = "$PWD" ] || continue
      if tr '\0' '\n' < /proc/$p/environ 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then
        echo "$p"
        return
      fi
    done
    sleep 0.05
  done
  fail "no process of rank $1 in $PWD"
}
# slow_rank R [STOP_S RUN_S]: slows world rank R of the running job from outside the program, as
# a busy neighbour would: stopped for STOP_S (0.01) of every STOP_S + RUN_S (0.02) seconds until
# it exits. Returns at once.
slow_rank() {
  local pid stop=${2:-0.01} run=${3:-0.01}
  pid=$(rank_pid "$1")
  (while kill -STOP "$pid" 2> /dev/null; do
    sleep "$stop"
    kill -CONT "$pid" 2> /dev/null || break
    sleep "$run"
  done) &
}
