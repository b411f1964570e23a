#!/usr/bin/env bash
# Compression's state survives checkpoints (train/compress_state.h), and compression composes
# with dynamic load balancing. From one seed checkpoint (as compress.sh makes it):
#   (a) same layout: int8 and PowerSGD at DP 2, and int8 under ZeRO 2, stopped at step 6 and
#       resumed equal a run that never stopped, bit for bit (every loss and gradient norm, and
#       model.safetensors at step 11): every rank's residual and PowerSGD's Q came back.
#   (b) another layout: PowerSGD's update does not depend on the number of ranks (P and Q are sums
#       of linear maps of each rank's gradient), so the DP 2 checkpoint resumed at DP 3, its
#       residuals summed and shared out over 3 ranks (the log says so), continues the DP 2 run's
#       losses within 1e-5 relative; at TP 2 the log says Q starts afresh.
#   (c) a checkpoint whose trainer.json lists residual.safetensors but lacks the file is refused.
#   (d) parallel.balance dynamic with int8 and PowerSGD (40 steps, rank 1 slowed from outside):
#       the replicas stay bit-identical (check_collectives after every step) while the shares
#       move.
#   (e) --sync local and DiLoCo with an int4 outer gradient, meeting every 4 steps, stopped at step
#       6 (between two meetings) and resumed: each worker's own parameters, moments and residual
#       and DiLoCo's outer state come back (train/worker_state.h), bit for bit.
source "$(dirname "$0")/lib.sh"
make_compress_seeds
run=("${compress_run[@]}" --parallel.check_collectives true --train.ckpt_every 5)
dp2=(--dp 2 --train.batch_size 6)
restored="each data-parallel rank's residual restored"  # what a resumed run's log must say
resume_pair() {  # resume_pair NAME NP SETTINGS...: NAME (straight) and NAME_stop (stopped at 6)
  local name=$1 np=$2; shift 2
  mpi "$np" "${run[@]}" "$@" --train.out_dir "$name" --resume seed/step-1 > "$name.log" 2>&1 ||
    fail "$name: $(tail -3 "$name.log")"
  mpi "$np" "${run[@]}" "$@" --train.out_dir "${name}_stop" --resume seed/step-1 --stop-at 6 \
    > "${name}_stop.log" 2>&1 || fail "${name}_stop: $(tail -3 "${name}_stop.log")"
  mpi "$np" "${run[@]}" "$@" --train.out_dir "${name}_stop" --resume auto \
    > "${name}_resumed.log" 2>&1 || fail "${name}_resumed: $(tail -3 "${name}_resumed.log")"
  grep -q "$restored" "${name}_resumed.log" ||
    fail "$name: no residual restored: $(head -3 "${name}_resumed.log")"
  cmp "$name/step-11/model.safetensors" "${name}_stop/step-11/model.safetensors" ||
    fail "$name: resumed model differs"
}
resume_pair int8 2 "${dp2[@]}" --parallel.compress int8
resume_pair psgd 2 "${dp2[@]}" --parallel.compress powersgd --parallel.powersgd_rank 2
grep -q "PowerSGD's Q restored" psgd_resumed.log || fail "psgd: Q not restored"
resume_pair zero2_int8 2 "${dp2[@]}" --zero 2 --parallel.compress int8
for f in residual.safetensors powersgd.safetensors; do
  [ -f psgd_stop/step-6/$f ] || fail "psgd: no $f in the checkpoint"
done
# (e) the workers' own state under local and diloco.
restored="each worker's own parameters and optimizer state restored"
resume_pair local 2 "${dp2[@]}" --sync local --local.period 4
restored="DiLoCo's outer parameters and momentum restored; outer gradient error feedback: each"
resume_pair diloco 2 "${dp2[@]}" --sync diloco --diloco.inner-steps 4 --diloco.compress int4
cmp diloco/step-11/workers.safetensors diloco_stop/step-11/workers.safetensors ||
  fail "diloco: the resumed workers' state differs"
# (b) DP 3 and TP 2 from the DP 2 checkpoint at step 6.
psgd=(--parallel.compress powersgd --parallel.powersgd_rank 2)
mpi 3 "${run[@]}" --dp 3 --train.batch_size 4 "${psgd[@]}" --train.out_dir psgd_dp3 \
  --resume psgd_stop/step-6 > psgd_dp3.log 2>&1 || fail "psgd_dp3: $(tail -3 psgd_dp3.log)"
grep -q "the residuals of 2 data-parallel ranks summed and shared out equally over 3" psgd_dp3.log ||
  fail "psgd_dp3: $(head -2 psgd_dp3.log)"
mpi 4 "${run[@]}" --dp 2 --tp 2 --train.batch_size 6 "${psgd[@]}" --train.out_dir psgd_tp2 \
  --resume psgd_stop/step-6 > psgd_tp2.log 2>&1 || fail "psgd_tp2: $(tail -3 psgd_tp2.log)"
grep -q "PowerSGD starts from a fresh Q" psgd_tp2.log || fail "psgd_tp2: $(head -2 psgd_tp2.log)"
# (c) the residuals listed but missing.
cp -r psgd_stop/step-6 missing && rm missing/residual.safetensors
set +e; mpi 2 "${run[@]}" "${dp2[@]}" "${psgd[@]}" --train.out_dir m --resume missing > m.log 2>&1
rc=$?; set -e
[ $rc -ne 0 ] && grep -q "residual.safetensors: missing from the checkpoint" m.log ||
  fail "a missing residual file: exit $rc: $(tail -3 m.log)"
# (d) dynamic shares, rank 1 slowed from outside (as balance.sh does) so that they move.
# 40 steps after the seed's, re-planned every 2 (a slowdown must be seen before a short run ends).
dyn=(--parallel.balance dynamic --parallel.balance_every 2 --train.micro_batches 3
     --train.steps 41 --train.ckpt_every 0)
for c in int8 powersgd; do
  mpi 2 "${run[@]}" "${dp2[@]}" "${dyn[@]}" --parallel.compress $c --train.out_dir dyn_$c \
    --resume seed/step-1 > dyn_$c.log 2>&1 &
  job=$!
  slow_rank 1 0.03 0.01
  wait $job || fail "dyn_$c: $(tail -3 dyn_$c.log)"
done
/usr/bin/python3 - <<'PY' || fail "resumed against straight"
import json

def lines(out):
    return {j["step"]: j for j in map(json.loads, open(out + "/metrics.jsonl"))}

for name in ["int8", "psgd", "zero2_int8", "local", "diloco"]:
    a, b = lines(name), lines(name + "_stop")  # steps 2-6, then the resumed run's 7-11
    assert sorted(a) == sorted(b) == list(range(2, 12)), (name, sorted(b))
    for k in a:
        assert (a[k]["loss"], a[k]["grad_norm"]) == (b[k]["loss"], b[k]["grad_norm"]), (name, k)
    print(f"{name}: resumed at step 6, steps 7-11 bit-identical (loss at 11 {a[11]['loss']:.6f})")
a, c = lines("psgd"), lines("psgd_dp3")
for k in range(7, 12):
    assert abs(a[k]["loss"] - c[k]["loss"]) <= 1e-5 * a[k]["loss"], ("dp3", k, a[k], c[k])
print("psgd at DP 3 from DP 2's step 6: losses 7-11 within 1e-5 of DP 2's "
      f"(worst {max(abs(a[k]['loss'] - c[k]['loss']) / a[k]['loss'] for k in range(7, 12)):.1e})")
for c in ["int8", "powersgd"]:
    d = lines("dyn_" + c)
    assert sorted(d) == list(range(2, 42)), (c, sorted(d))
    assert all(d[k].get("residual_norm", 0) > 0 for k in d), (c, "residual_norm")
    shares = sorted({tuple(d[k]["shares"]) for k in d})
    assert len(shares) > 1, (c, "the shares never moved", shares)
    print(f"dyn_{c}: 40 steps under dynamic balance (shares {shares}), replicas identical after each")
PY
echo "compress_resume: residuals and Q kept by checkpoints; any-layout resume keeps the residuals' sum"
