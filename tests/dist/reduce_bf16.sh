#!/usr/bin/env bash
# Gradients in bf16 on the wire (--parallel.compress bf16): from one seed checkpoint, 10 steps
# at DP = 2 and 3 (and ZeRO 1 and 2 at DP = 3, and DP 2 × PP 2 with a tied embedding under ZeRO 1)
# against the same layout in fp32 (ZeRO against the plain all-reduce, which it equals in fp32):
#   (a) losses. bf16 keeps 8 significant bits: one rounding is off by at most 2^-9 relative. A
#       summed gradient carries two roundings (the other ranks' inputs, then the sum), so it
#       differs from fp32's by at most about 2^-8 relative. AdamW's step is invariant to the
#       gradient's scale, so to first order each update, and the loss's change since the common
#       start, move by at most that fraction: |L_bf16(k) - L_fp32(k)| <= 2^-8 · max_{j<=k}
#       |L_fp32(j) - L_fp32(2)| (+ 1e-6 · L for the fp32 noise). Step 2 starts from the same
#       parameters: equal losses, gradient norms within 2^-8 and not equal (bf16 was used).
#   (b) bytes on the dp axis per step, every rank: about half of fp32's (the reduce-scatter and
#       the all-gather each move half the bytes; the 8-byte sums of loss and target counts stay);
#       exactly (fp32 - 32) / 2 + 32 at DP = 2. ZeRO all-gathers fp32 parameters: about 3/4.
#   (c) the reduction itself, bit for bit, is tests/dist/test_reduce_bf16.cpp's.
# Collectives are checked (--parallel.check_collectives) in the bf16 runs, and so are the replicas'
# parameters after every step. The checkpoint stores the setting (dp3_bf16 gives it by its older
# name, parallel.reduce_dtype); other strategies and unknown values are refused in one line.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400 --train.steps 11
     --train.val_every 0 --train.ckpt_every 0 --optim.warmup_steps 3 --parallel.bucket_mb 0.01)
"$bin" "${run[@]}" --train.batch_size 12 --train.out_dir seed --stop-at 1 > /dev/null
"$bin" "${run[@]}" --train.batch_size 12 --model.tie_embeddings true --train.out_dir seed_tied \
  --stop-at 1 > /dev/null
tied=(--pp 2 --model.tie_embeddings true --zero 1 --train.micro_batches 2)
# The fp32 references send the embedding's gradient whole, as bf16 does.
dense=(--parallel.sparse_embedding_grad false)
# name: ranks, then settings (always 12 sequences per step)
declare -A runs=(
  [dp2_fp32]="2 --dp 2 --train.batch_size 6 ${dense[*]}"
  [dp2_bf16]="2 --dp 2 --train.batch_size 6 --parallel.compress bf16"
  [dp3_fp32]="3 --dp 3 --train.batch_size 4 ${dense[*]}"
  [dp3_bf16]="3 --dp 3 --train.batch_size 4 --parallel.reduce_dtype bf16"  # the older name
  [dp3_zero1_bf16]="3 --dp 3 --train.batch_size 4 --zero 1 --parallel.compress bf16"
  [dp3_zero2_bf16]="3 --dp 3 --train.batch_size 4 --zero 2 --parallel.compress bf16"
  [dp2_pp2_fp32]="4 --dp 2 --train.batch_size 3 ${tied[*]}"
  [dp2_pp2_bf16]="4 --dp 2 --train.batch_size 3 ${tied[*]} --parallel.compress bf16"
)
for out in "${!runs[@]}"; do
  read -r np settings <<< "${runs[$out]}"
  check=() seed=seed
  [[ $out == *bf16 ]] && check=(--parallel.check_collectives true)
  [[ $out == *pp2* ]] && seed=seed_tied
  # shellcheck disable=SC2086
  mpi "$np" "${run[@]}" $settings "${check[@]}" --train.out_dir "$out" --resume $seed/step-1 \
    > "$out.log" || fail "$out: exit $?: $(tail -3 "$out.log")"
  [ "$(wc -l < "$out/metrics.jsonl")" -eq 10 ] || fail "$out: not 10 metric lines"
done
/usr/bin/python3 -c 'import json, sys
assert json.load(open(sys.argv[1]))["config"]["parallel"]["compress"] == "bf16"' \
  dp3_bf16/step-11/trainer.json || fail "the checkpoint does not store parallel.compress"
/usr/bin/python3 - <<'PY' || fail "bf16 against fp32"
import json

def lines(out):
    return {j["step"]: j for j in map(json.loads, open(out + "/metrics.jsonl"))}

def check(test, ref, ratio, exact_dp2=False):
    a, b = lines(test), lines(ref)
    assert sorted(a) == sorted(b) == list(range(2, 12)), (test, sorted(a))
    first = b[2]["loss"]
    assert a[2]["loss"] == first, (test, "step 2 loss", a[2]["loss"], first)
    norm = abs(a[2]["grad_norm"] - b[2]["grad_norm"]) / b[2]["grad_norm"]
    assert 0 < norm <= 2**-8, (test, "step 2 gradient norm", a[2]["grad_norm"], b[2]["grad_norm"])
    drop, worst = 0.0, (0.0, 0)
    for k in range(3, 12):
        drop = max(drop, abs(b[k]["loss"] - first))
        tol = 2**-8 * drop + 1e-6 * abs(b[k]["loss"])
        err = abs(a[k]["loss"] - b[k]["loss"])
        assert err <= tol, (test, "step", k, a[k]["loss"], b[k]["loss"], err, tol)
        worst = max(worst, (err / tol, k))
    for k in a:
        for ra, rb in zip(a[k]["bytes_per_rank"], b[k]["bytes_per_rank"]):
            got = ra["dp"] / rb["dp"]
            assert abs(got - ratio) <= 0.01 * ratio, (test, "dp bytes", k, ra["dp"], rb["dp"])
            if exact_dp2:
                assert abs(ra["dp"] - ((rb["dp"] - 32) / 2 + 32)) <= 1e-6, (test, ra["dp"], rb["dp"])
    print(f"{test}: losses within {worst[0]:.2f} of the tolerance (worst at step {worst[1]}), "
          f"gradient norm at step 2 off by {norm:.1e}, dp bytes per step "
          f"{a[2]['bytes_dp']:.0f} vs {b[2]['bytes_dp']:.0f}")

check("dp2_bf16", "dp2_fp32", 0.5, exact_dp2=True)
check("dp3_bf16", "dp3_fp32", 0.5)
check("dp3_zero1_bf16", "dp3_fp32", 0.75)
check("dp3_zero2_bf16", "dp3_fp32", 0.75)
check("dp2_pp2_bf16", "dp2_pp2_fp32", 0.75)
PY
expect_error 'parallel.compress = "bf16" is for --sync allreduce (with or without --zero), not --sync local' \
  "${run[@]}" --sync local --parallel.compress bf16
expect_error 'parallel.compress must be "none", "bf16" or "int8", not "fp16"' \
  "${run[@]}" --parallel.compress fp16
expect_error 'parallel.reduce_dtype must be "fp32" or "bf16", not "fp16"' \
  "${run[@]}" --parallel.reduce_dtype fp16
expect_error 'parallel.reduce_dtype = "bf16" and parallel.compress = "int8" disagree' \
  "${run[@]}" --parallel.reduce_dtype bf16 --parallel.compress int8
echo "reduce bf16: losses track fp32, half the dp bytes"
