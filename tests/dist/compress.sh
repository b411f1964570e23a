#!/usr/bin/env bash
# Compressed gradients on the wire (--parallel.compress bf16 | int8): from one seed checkpoint, 10
# steps at DP = 2 and 3, ZeRO 1 and 2 at DP = 3, and DP 2 × PP 2 with a tied embedding under
# ZeRO 1, against the same layout in fp32 (ZeRO against the plain all-reduce, which it equals in
# fp32). Every compressed run checks its collectives and, after every step, that the replicas
# hold bit-identical parameters (--parallel.check_collectives).
#   (a) losses. Step 2 starts from the same parameters: equal losses, and gradient norms that
#       differ (compression was used). AdamW's step is invariant to the gradient's scale, so to
#       first order each update, and the loss's change since the common start, moves by at most
#       the gradient's relative error: |L_c(k) - L_fp32(k)| <= e · max_{j<=k} |L_fp32(j) -
#       L_fp32(2)| (+ 1e-6 · L for the fp32 noise). bf16: one rounding is off by at most 2^-9, a
#       summed gradient carries two, e = 2^-8 (and the step-2 norm within it). int8 (blockwise,
#       error feedback): e = 2^-7. With compress_after 4, steps 2-4 equal fp32's exactly.
#   (b) bytes on the dp axis per step, every rank: bf16 about half of fp32's (exactly
#       (fp32 - 32) / 2 + 32 + 16 at DP = 2: the 8-byte sums of loss and target counts stay, and
#       the replicas' check gathers an 8-byte fingerprint), int8 at
#       most 0.3; under ZeRO, whose parameter all-gather stays fp32, about 3/4 and at most 0.7.
#   (c) int8 reports its residual's norm, positive, in metrics.jsonl.
#   PowerSGD (rank 2; also with tensor parallelism, which it leaves exact): its low-rank error is
#   not a rounding, so its losses are held to training as well as fp32 does, not to a bound: the
#   first compressed step's loss equal and its gradient norm not, the loss at step 11 down by at
#   least half of fp32's drop, a positive residual, at most 0.15 of fp32's dp bytes (0.6 under
#   ZeRO, whose parameter all-gather, half of its bytes, stays fp32).
#   DiLoCo's outer gradient (diloco.compress int8 and int4, 3 inner steps at DP 2): the steps
#   before the first outer step equal fp32 DiLoCo's, the replicas are bit-identical after every
#   outer step, the residual is reported there, the loss falls at least half as far as fp32
#   DiLoCo's, and the dp bytes of the run are at most 0.3 (int8) and 0.2 (int4) of fp32's.
# The reductions themselves, bit for bit, are tests/dist/test_comm.cpp's and
# test_reduce_bf16.cpp's (also that int8's error feedback loses nothing over steps). The
# checkpoint stores the setting (dp3_bf16 gives it by its older name, parallel.reduce_dtype);
# other strategies and unknown values are refused in one line.
source "$(dirname "$0")/lib.sh"
make_compress_seeds
run=("${compress_run[@]}")
tied=(--pp 2 --model.tie_embeddings true --zero 1 --train.micro_batches 2)
# The fp32 references send the embedding's gradient whole, as compression does.
dense=(--parallel.sparse_embedding_grad false)
check=(--parallel.check_collectives true)
bf16=(--parallel.compress bf16 "${check[@]}")
int8=(--parallel.compress int8 "${check[@]}")
psgd=(--parallel.compress powersgd --parallel.powersgd_rank 2 "${check[@]}")
diloco=(--sync diloco --diloco.inner-steps 3)
# name: ranks, then settings (always 12 sequences per step)
declare -A runs=(
  [dp2_fp32]="2 --dp 2 --train.batch_size 6 ${dense[*]}"
  [dp2_bf16]="2 --dp 2 --train.batch_size 6 ${bf16[*]}"
  [dp2_int8]="2 --dp 2 --train.batch_size 6 ${int8[*]}"
  [dp2_int8_after4]="2 --dp 2 --train.batch_size 6 ${int8[*]} --parallel.compress_after 4"
  [dp3_fp32]="3 --dp 3 --train.batch_size 4 ${dense[*]}"
  [dp3_bf16]="3 --dp 3 --train.batch_size 4 --parallel.reduce_dtype bf16 ${check[*]}"
  [dp3_int8]="3 --dp 3 --train.batch_size 4 ${int8[*]}"
  [dp3_zero1_bf16]="3 --dp 3 --train.batch_size 4 --zero 1 ${bf16[*]}"
  [dp3_zero2_bf16]="3 --dp 3 --train.batch_size 4 --zero 2 ${bf16[*]}"
  [dp3_zero1_int8]="3 --dp 3 --train.batch_size 4 --zero 1 ${int8[*]}"
  [dp3_zero2_int8]="3 --dp 3 --train.batch_size 4 --zero 2 ${int8[*]}"
  [dp2_pp2_fp32]="4 --dp 2 --train.batch_size 3 ${tied[*]}"
  [dp2_pp2_bf16]="4 --dp 2 --train.batch_size 3 ${tied[*]} ${bf16[*]}"
  [dp2_pp2_int8]="4 --dp 2 --train.batch_size 3 ${tied[*]} ${int8[*]}"
  [dp2_psgd]="2 --dp 2 --train.batch_size 6 ${psgd[*]}"
  [dp2_psgd_after4]="2 --dp 2 --train.batch_size 6 ${psgd[*]} --parallel.compress_after 4"
  [dp3_zero1_psgd]="3 --dp 3 --train.batch_size 4 --zero 1 ${psgd[*]}"
  [dp3_zero2_psgd]="3 --dp 3 --train.batch_size 4 --zero 2 ${psgd[*]}"
  [dp2_pp2_psgd]="4 --dp 2 --train.batch_size 3 ${tied[*]} ${psgd[*]}"
  [dp2_tp2_fp32]="4 --dp 2 --tp 2 --train.batch_size 6 ${dense[*]}"
  [dp2_tp2_psgd]="4 --dp 2 --tp 2 --train.batch_size 6 ${psgd[*]}"
  [diloco_fp32]="2 --dp 2 --train.batch_size 6 ${diloco[*]} ${check[*]}"
  [diloco_int8]="2 --dp 2 --train.batch_size 6 ${diloco[*]} ${check[*]} --diloco.compress int8"
  [diloco_int4]="2 --dp 2 --train.batch_size 6 ${diloco[*]} ${check[*]} --diloco.compress int4"
)
run_compress_layouts runs
stored_compress dp3_bf16/step-11 bf16
stored_compress dp3_int8/step-11 int8
/usr/bin/python3 - <<'PY' || fail "compressed against fp32"
import json

def lines(out):
    return {j["step"]: j for j in map(json.loads, open(out + "/metrics.jsonl"))}

def check(test, ref, err_bound, bytes_bound, exact_until=1, exact_dp2=False):
    a, b = lines(test), lines(ref)
    assert sorted(a) == sorted(b) == list(range(2, 12)), (test, sorted(a))
    first = b[2]["loss"]
    for k in range(2, exact_until + 1):
        assert a[k]["loss"] == b[k]["loss"] and a[k]["grad_norm"] == b[k]["grad_norm"], (test, k)
    start = max(2, exact_until + 1)
    assert a[start]["loss"] == b[start]["loss"], (test, "first compressed step's loss", start)
    norm = abs(a[start]["grad_norm"] - b[start]["grad_norm"]) / b[start]["grad_norm"]
    assert 0 < norm <= err_bound, (test, "gradient norm at", start, a[start], b[start])
    drop, worst = 0.0, (0.0, 0)
    for k in range(start + 1, 12):
        drop = max(drop, abs(b[k]["loss"] - first))
        tol = err_bound * drop + 1e-6 * abs(b[k]["loss"])
        err = abs(a[k]["loss"] - b[k]["loss"])
        assert err <= tol, (test, "step", k, a[k]["loss"], b[k]["loss"], err, tol)
        worst = max(worst, (err / tol, k))
    for k in range(start, 12):
        if "int8" in test:
            assert a[k].get("residual_norm", 0) > 0, (test, "residual_norm", k)
        for ra, rb in zip(a[k]["bytes_per_rank"], b[k]["bytes_per_rank"]):
            got = ra["dp"] / rb["dp"]
            if isinstance(bytes_bound, tuple):  # (about, within 1%)
                assert abs(got - bytes_bound[0]) <= 0.01 * bytes_bound[0], (test, k, got)
            else:
                assert got <= bytes_bound, (test, "dp bytes", k, ra["dp"], rb["dp"])
            if exact_dp2:
                # + 16: the replicas' check gathers an 8-byte fingerprint
                assert abs(ra["dp"] - ((rb["dp"] - 32) / 2 + 32 + 16)) <= 1e-6, (test, ra, rb)
    print(f"{test}: losses within {worst[0]:.2f} of the tolerance (worst at step {worst[1]}), "
          f"gradient norm at step {start} off by {norm:.1e}, dp bytes per step "
          f"{a[11]['bytes_dp']:.0f} vs {b[11]['bytes_dp']:.0f} "
          f"({a[11]['bytes_dp'] / b[11]['bytes_dp']:.3f})"
          + (f", residual norm {a[11]['residual_norm']:.2e}" if "int8" in test else ""))

check("dp2_bf16", "dp2_fp32", 2**-8, (0.5,), exact_dp2=True)
check("dp3_bf16", "dp3_fp32", 2**-8, (0.5,))
check("dp3_zero1_bf16", "dp3_fp32", 2**-8, (0.75,))
check("dp3_zero2_bf16", "dp3_fp32", 2**-8, (0.75,))
check("dp2_pp2_bf16", "dp2_pp2_fp32", 2**-8, (0.75,))
check("dp2_int8", "dp2_fp32", 2**-7, 0.3)
check("dp2_int8_after4", "dp2_fp32", 2**-7, 0.3, exact_until=4)
check("dp3_int8", "dp3_fp32", 2**-7, 0.3)
check("dp3_zero1_int8", "dp3_fp32", 2**-7, 0.7)
check("dp3_zero2_int8", "dp3_fp32", 2**-7, 0.7)
check("dp2_pp2_int8", "dp2_pp2_fp32", 2**-7, 0.7)

def check_lowrank(test, ref, bytes_bound, exact_until=1):
    a, b = lines(test), lines(ref)
    assert sorted(a) == sorted(b) == list(range(2, 12)), (test, sorted(a))
    for k in range(2, exact_until + 1):
        assert a[k]["loss"] == b[k]["loss"] and a[k]["grad_norm"] == b[k]["grad_norm"], (test, k)
    start = max(2, exact_until + 1)
    assert a[start]["loss"] == b[start]["loss"], (test, "first compressed step's loss", start)
    assert a[start]["grad_norm"] != b[start]["grad_norm"], (test, "compression unused?")
    drop, ref_drop = a[2]["loss"] - a[11]["loss"], b[2]["loss"] - b[11]["loss"]
    assert ref_drop > 0 and drop >= 0.5 * ref_drop, (test, "loss drop", drop, ref_drop)
    for k in range(start, 12):
        assert a[k].get("residual_norm", 0) > 0, (test, "residual_norm", k)
        for ra, rb in zip(a[k]["bytes_per_rank"], b[k]["bytes_per_rank"]):
            assert ra["dp"] <= bytes_bound * rb["dp"], (test, "dp bytes", k, ra["dp"], rb["dp"])
    print(f"{test}: loss down {drop:.4f} (fp32 {ref_drop:.4f}), dp bytes per step "
          f"{a[11]['bytes_dp']:.0f} vs {b[11]['bytes_dp']:.0f} "
          f"({a[11]['bytes_dp'] / b[11]['bytes_dp']:.3f}), residual norm "
          f"{a[11]['residual_norm']:.2e}")

check_lowrank("dp2_psgd", "dp2_fp32", 0.15)
check_lowrank("dp2_psgd_after4", "dp2_fp32", 0.15, exact_until=4)
check_lowrank("dp3_zero1_psgd", "dp3_fp32", 0.6)
check_lowrank("dp3_zero2_psgd", "dp3_fp32", 0.6)
check_lowrank("dp2_pp2_psgd", "dp2_pp2_fp32", 0.6)
check_lowrank("dp2_tp2_psgd", "dp2_tp2_fp32", 0.15)

def check_outer(test, ref, bytes_bound):
    a, b = lines(test), lines(ref)
    assert sorted(a) == sorted(b) == list(range(2, 12)), (test, sorted(a))
    synced = [k for k in a if a[k].get("synced")]
    assert synced == [k for k in b if b[k].get("synced")] == [3, 6, 9], (test, synced)
    for k in (2, 3):  # before the first outer step's effect
        assert a[k]["loss"] == b[k]["loss"], (test, k)
    assert a[4]["loss"] != b[4]["loss"], (test, "compression unused?")
    assert all(a[k].get("residual_norm", 0) > 0 for k in synced), (test, "residual_norm")
    drop, ref_drop = a[2]["loss"] - a[11]["loss"], b[2]["loss"] - b[11]["loss"]
    assert ref_drop > 0 and drop >= 0.5 * ref_drop, (test, "loss drop", drop, ref_drop)
    sa, sb = sum(a[k]["bytes_dp"] for k in a), sum(b[k]["bytes_dp"] for k in b)
    assert sa <= bytes_bound * sb, (test, "dp bytes", sa, sb)
    print(f"{test}: loss down {drop:.4f} (fp32 DiLoCo {ref_drop:.4f}), dp bytes of the run "
          f"{sa:.0f} vs {sb:.0f} ({sa / sb:.3f})")

check_outer("diloco_int8", "diloco_fp32", 0.3)
check_outer("diloco_int4", "diloco_fp32", 0.2)
PY
expect_error 'parallel.compress = "bf16" is for --sync allreduce (with or without --zero), not --sync local' \
  "${run[@]}" --sync local --parallel.compress bf16
expect_error 'parallel.compress = "int8" is for --sync allreduce (with or without --zero), not --sync diloco (its outer gradient: diloco.compress)' \
  "${run[@]}" --sync diloco --parallel.compress int8
expect_error 'diloco.compress = "int4" is for --sync diloco, not --sync allreduce' \
  "${run[@]}" --diloco.compress int4
expect_error 'diloco.compress must be "none", "int8" or "int4", not "int2"' \
  "${run[@]}" --sync diloco --diloco.compress int2
expect_error 'parallel.compress must be "none", "bf16", "int8" or "powersgd", not "fp16"' \
  "${run[@]}" --parallel.compress fp16
expect_error 'parallel.powersgd_rank must be between 1 and 256' \
  "${run[@]}" --parallel.compress powersgd --parallel.powersgd_rank 0
expect_error 'parallel.compress_after must be non-negative' \
  "${run[@]}" --parallel.compress int8 --parallel.compress_after -1
expect_error 'parallel.reduce_dtype must be "fp32" or "bf16", not "fp16"' \
  "${run[@]}" --parallel.reduce_dtype fp16
expect_error 'parallel.reduce_dtype = "bf16" and parallel.compress = "int8" disagree' \
  "${run[@]}" --parallel.reduce_dtype bf16 --parallel.compress int8
echo "compress: replicas identical; losses track fp32; bf16 half, int8 a quarter of the dp bytes;" \
  "powersgd trains with a small share of them"
