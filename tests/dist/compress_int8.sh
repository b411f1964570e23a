#!/usr/bin/env bash
# Gradients in blockwise int8 on the wire (--parallel.compress int8), with error feedback: from one
# seed checkpoint, 10 steps at DP = 2 and 3, ZeRO 1 and 2 at DP = 3, DP 2 × PP 2 with a tied
# embedding under ZeRO 1, and DP 2 with compress_after 4, against the same layout in fp32:
#   (a) the replicas hold bit-identical parameters after every step (parallel.check_collectives
#       checks each step, and every collective's stamp);
#   (b) losses track fp32's: step 2 starts from the same parameters (equal losses, gradient norms
#       that differ: int8 was used); later |L_int8 - L_fp32| <= 2^-7 · the largest change of the
#       fp32 loss since step 2 (+ 1e-6 · L). With compress_after 4, steps 2-4 equal fp32's;
#   (c) bytes on the dp axis per step: at most 0.3 of fp32's for the all-reduce, and under ZeRO,
#       whose parameter all-gather stays fp32, at most 0.7;
#   (d) metrics.jsonl reports the residual's norm, positive; the checkpoint stores the setting;
#       other strategies are refused in one line.
# The reduction itself (blockwise values, what each rank drops, nothing lost over steps) is
# tests/dist/test_comm.cpp's and test_reduce_bf16.cpp's.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400 --train.steps 11
     --train.val_every 0 --train.ckpt_every 0 --optim.warmup_steps 3 --parallel.bucket_mb 0.01)
"$bin" "${run[@]}" --train.batch_size 12 --train.out_dir seed --stop-at 1 > /dev/null
"$bin" "${run[@]}" --train.batch_size 12 --model.tie_embeddings true --train.out_dir seed_tied \
  --stop-at 1 > /dev/null
tied=(--pp 2 --model.tie_embeddings true --zero 1 --train.micro_batches 2)
dense=(--parallel.sparse_embedding_grad false)
int8=(--parallel.compress int8 --parallel.check_collectives true)
declare -A runs=(
  [dp2_fp32]="2 --dp 2 --train.batch_size 6 ${dense[*]}"
  [dp2_int8]="2 --dp 2 --train.batch_size 6 ${int8[*]}"
  [dp2_int8_after4]="2 --dp 2 --train.batch_size 6 ${int8[*]} --parallel.compress_after 4"
  [dp3_fp32]="3 --dp 3 --train.batch_size 4 ${dense[*]}"
  [dp3_int8]="3 --dp 3 --train.batch_size 4 ${int8[*]}"
  [dp3_zero1_int8]="3 --dp 3 --train.batch_size 4 --zero 1 ${int8[*]}"
  [dp3_zero2_int8]="3 --dp 3 --train.batch_size 4 --zero 2 ${int8[*]}"
  [dp2_pp2_fp32]="4 --dp 2 --train.batch_size 3 ${tied[*]}"
  [dp2_pp2_int8]="4 --dp 2 --train.batch_size 3 ${tied[*]} ${int8[*]}"
)
for out in "${!runs[@]}"; do
  read -r np settings <<< "${runs[$out]}"
  seed=seed
  [[ $out == *pp2* ]] && seed=seed_tied
  # shellcheck disable=SC2086
  mpi "$np" "${run[@]}" $settings --train.out_dir "$out" --resume $seed/step-1 \
    > "$out.log" 2>&1 || fail "$out: exit $?: $(tail -3 "$out.log")"
  [ "$(wc -l < "$out/metrics.jsonl")" -eq 10 ] || fail "$out: not 10 metric lines"
done
/usr/bin/python3 -c 'import json, sys
assert json.load(open(sys.argv[1]))["config"]["parallel"]["compress"] == "int8"' \
  dp3_int8/step-11/trainer.json || fail "the checkpoint does not store parallel.compress"
/usr/bin/python3 - <<'PY' || fail "int8 against fp32"
import json

def lines(out):
    return {j["step"]: j for j in map(json.loads, open(out + "/metrics.jsonl"))}

def check(test, ref, ratio, exact_until=1):
    a, b = lines(test), lines(ref)
    assert sorted(a) == sorted(b) == list(range(2, 12)), (test, sorted(a))
    first = b[2]["loss"]
    for k in range(2, exact_until + 1):
        assert a[k]["loss"] == b[k]["loss"] and a[k]["grad_norm"] == b[k]["grad_norm"], (test, k)
    start = max(2, exact_until + 1)
    assert a[start]["loss"] == b[start]["loss"], (test, "first int8 step's loss", a[start], b[start])
    assert a[start]["grad_norm"] != b[start]["grad_norm"], (test, "int8 not used at", start)
    drop, worst = 0.0, (0.0, 0)
    for k in range(start + 1, 12):
        drop = max(drop, abs(b[k]["loss"] - first))
        tol = 2**-7 * drop + 1e-6 * abs(b[k]["loss"])
        err = abs(a[k]["loss"] - b[k]["loss"])
        assert err <= tol, (test, "step", k, a[k]["loss"], b[k]["loss"], err, tol)
        worst = max(worst, (err / tol, k))
    for k in range(start, 12):
        assert a[k].get("residual_norm", 0) > 0, (test, "residual_norm", k, a[k].get("residual_norm"))
        for ra, rb in zip(a[k]["bytes_per_rank"], b[k]["bytes_per_rank"]):
            assert ra["dp"] <= ratio * rb["dp"], (test, "dp bytes", k, ra["dp"], rb["dp"])
    got = a[11]["bytes_dp"] / b[11]["bytes_dp"]
    print(f"{test}: losses within {worst[0]:.2f} of the tolerance (worst at step {worst[1]}), "
          f"dp bytes per step {a[11]['bytes_dp']:.0f} vs {b[11]['bytes_dp']:.0f} ({got:.3f}), "
          f"residual norm {a[11]['residual_norm']:.2e}")

check("dp2_int8", "dp2_fp32", 0.3)
check("dp2_int8_after4", "dp2_fp32", 0.3, exact_until=4)
check("dp3_int8", "dp3_fp32", 0.3)
check("dp3_zero1_int8", "dp3_fp32", 0.7)
check("dp3_zero2_int8", "dp3_fp32", 0.7)
check("dp2_pp2_int8", "dp2_pp2_fp32", 0.7)
PY
expect_error 'parallel.compress = "int8" is for --sync allreduce (with or without --zero), not --sync diloco' \
  "${run[@]}" --sync diloco --parallel.compress int8
expect_error 'parallel.compress_after must be non-negative' \
  "${run[@]}" --parallel.compress int8 --parallel.compress_after -1
echo "compress int8: replicas identical, losses track fp32, a quarter of the dp bytes"
