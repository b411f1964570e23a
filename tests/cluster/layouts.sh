#!/usr/bin/env bash
# Every layout across hosts equals one process. Each case makes its own cluster (network
# namespaces, TCP between hosts, shared memory within one) and checks where the ranks ran:
#   dp       dp 2 over 2 hosts
#   dp_tp    dp 2 x tp 2 over 2 hosts, each tensor-parallel pair on one host
#   pp       pp 2, one stage per host
#   hybrid   dp 2 x tp 2 x pp 2 with --zero 1 over 4 hosts
#   sync     ps (2 workers, 1 server) over 3 hosts equals one process; local and diloco over 3
#            hosts equal the same runs on one host; ps-async over 3 hosts keeps its staleness
#            bound and converges
#   generate generate --prompts over 2 hosts writes what one process writes
# The same global batch of 8 sequences everywhere, the tolerances of the single-host tests:
# losses at every step and final parameters within 1e-5 relative.
source "$(dirname "$0")/lib.sh"
case_name=${4:?which case}
prepare_tiny
# As in hybrid_matrix.sh: clipping that bites, AdamW eps 1e-6 and lr 3e-3, several buckets.
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --model.n_layers 4 --train.steps 20 --train.val_every 10 --train.ckpt_every 0
     --optim.warmup_steps 3 --train.grad_clip 0.5 --optim.eps 1e-6 --optim.lr 3e-3
     --parallel.bucket_mb 0.05)
one() { "$bin" "${run[@]}" --train.batch_size 4 --train.micro_batches 2 --train.out_dir one > /dev/null; }
same() {  # same OUT REFERENCE
  [ "$(wc -l < "$1/metrics.jsonl")" -eq 20 ] || fail "$1: not 20 metric lines"
  compare metrics "$1/metrics.jsonl" "$2/metrics.jsonl" --norm || fail "$1 losses"
  compare params "$1/step-20/model.safetensors" "$2/step-20/model.safetensors" || fail "$1 params"
}
case $case_name in
  dp)
    cluster_up 2; one
    cmpi 2 "${run[@]}" --dp 2 --train.batch_size 2 --train.micro_batches 2 --train.out_dir c > c.log
    ranks_on_hosts c 0 1; same c one ;;
  dp_tp)
    cluster_up 2 --slots 2; one
    cmpi 4 "${run[@]}" --dp 2 --tp 2 --train.batch_size 2 --train.micro_batches 2 \
      --train.out_dir c > c.log
    ranks_on_hosts c 0 0 1 1; same c one ;;
  pp)
    cluster_up 2; one
    cmpi 2 "${run[@]}" --pp 2 --train.batch_size 2 --train.micro_batches 4 --train.out_dir c > c.log
    ranks_on_hosts c 0 1; same c one ;;
  hybrid)
    cluster_up 4 --slots 2; one
    cmpi 8 "${run[@]}" --dp 2 --tp 2 --pp 2 --zero 1 --train.batch_size 2 --train.micro_batches 2 \
      --train.out_dir c > c.log
    ranks_on_hosts c 0 0 1 1 2 2 3 3; same c one ;;
  sync)
    cluster_up 3; one
    cmpi 3 "${run[@]}" --dp 2 --sync ps --ps.servers 1 --train.batch_size 2 --train.micro_batches 2 \
      --train.out_dir ps > ps.log
    ranks_on_hosts ps 0 1 2; same ps one
    for s in local diloco; do
      sargs=(--dp 3 --sync $s --local.period 5 --diloco.inner-steps 5 --train.batch_size 2)
      cmpi 3 "${run[@]}" "${sargs[@]}" --train.out_dir $s > $s.log
      mpi 3 "${run[@]}" "${sargs[@]}" --train.out_dir ${s}_one_host > /dev/null
      ranks_on_hosts $s 0 1 2; same $s ${s}_one_host
    done
    cmpi 4 "${run[@]}" --dp 3 --sync ps-async --ps.servers 1 --ps.max-staleness 1 \
      --train.batch_size 2 --train.out_dir async > async.log
    /usr/bin/python3 - async/metrics.jsonl <<'PY' || fail "ps-async over 3 hosts"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 20 and max(r["lead_max"] for r in rows) <= 1, "a worker ran too far ahead"
assert rows[-1]["loss"] < rows[0]["loss"] - 0.5, (rows[0]["loss"], rows[-1]["loss"])
PY
    ;;
  generate)
    cluster_up 2
    "$bin" "${run[@]}" --train.out_dir model > /dev/null
    awk 'NR % 97 == 5 && k < 9 { print $1, $2, $3; ++k }' text.txt > prompts.txt
    gen=(generate --ckpt model --temperature 0.8 --max-tokens 8 --seed 7 --batch 2 --prompts prompts.txt)
    "$bin" "${gen[@]}" --out one.jsonl 2> /dev/null
    cmpi 2 "${gen[@]}" --out two.jsonl > gen.log 2> gen.err || fail "generate: $(cat gen.err)"
    for r in 0 1; do grep -q "^rank $r: .* prompts" gen.log || fail "rank $r generated nothing"; done
    /usr/bin/python3 - <<'PY' || fail "generate over 2 hosts differs from one process"
import json
def load(name):
    rows = [json.loads(l) for l in open(name)]
    for r in rows:
        del r["seconds"]
    return rows
one, two = load("one.jsonl"), load("two.jsonl")
assert len(one) == 9 and one == two, (one, two)
PY
    ;;
  *) fail "unknown case $case_name" ;;
esac
echo "cluster $case_name: equal to one process"
