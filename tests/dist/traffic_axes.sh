#!/usr/bin/env bash
# Bytes per step on each mesh axis, against what the layout must move (sent + received, n = 2 on
# every axis, so a ring all-reduce of b bytes moves b each way):
#   dp    2 (4·P + 16): the gradient all-reduce of the rank's P parameters, and the 8-byte sums of
#         the target count and the loss over the replicas
#   pp    2·K·(B·T·C + 4)·4 + 16 + 2·4·(V/tp)·C on either stage of two: K micro-batches of
#         activations out (in) and their gradients in (out), each message with a 4-float stamp;
#         the loss summed over the stages; the tied embedding's gradient summed over the stages
#   tp    2·K·4·(all-reduced floats of one micro-batch): per layer two row-parallel outputs and
#         two input gradients of B·T·C; the embedding's B·T·C on the first stage; on the last,
#         the head's input gradient B·T·C and the loss's row maxima and sums, 3·B·T
#   other the gradient norm's 8-byte sum over the replica (tp × pp ranks)
# at --dp 2 --tp 2 --pp 2 (tied head) and --tp 2, every step of metrics.jsonl and per step in
# summary.json; then `bench --dp 2 --json` (dp 2·4·P, nothing on the other axes), and with the
# embedding's gradient sent as its non-zero rows (the default): dp 2·4·(P − V·C + U·C) + 2·8·⌈V/64⌉
# for a union of U rows (a row mask of ⌈V/64⌉ words), at most the batches' 2·B·T tokens.
source "$(dirname "$0")/lib.sh"
prepare_tiny
B=2 T=16 K=2 V=400 C=48
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size $V --train.steps 3
     --train.val_every 0 --train.ckpt_every 0 --train.batch_size $B --train.seq_len $T
     --train.micro_batches $K)
mpi 8 "${run[@]}" --dp 2 --tp 2 --pp 2 --model.tie_embeddings true --train.out_dir d2t2p2 \
  > d2t2p2.log
mpi 2 "${run[@]}" --tp 2 --train.out_dir t2 > t2.log
grep -q "rank 7 (worker): .* by axis, sent + received: dp .* MB, tp .* MB, pp .* MB, other" \
  d2t2p2.log || fail "the end-of-run lines do not name the axes: $(tail -8 d2t2p2.log)"
/usr/bin/python3 - $B $T $K $V $C <<'PY' || fail "bytes per axis"
import json, sys
B, T, K, V, C = map(int, sys.argv[1:])
N = B * T

def check(out, dp, tp, pp, tied):
    summary = json.load(open(out + "/summary.json"))["ranks"]
    lines = [json.loads(l) for l in open(out + "/metrics.jsonl")]
    assert len(lines) == 3 and len(summary) == dp * tp * pp, (out, len(lines), len(summary))
    for r, s in enumerate(summary):
        stage = r // (dp * tp)
        layers = 2 // pp  # tiny: 2 layers, split evenly
        floats = 4 * N * C * layers
        if stage == 0:
            floats += N * C
        if stage == pp - 1:
            floats += N * C + 3 * N
        want = {
            "dp": 2 * (4 * s["params"] + 16) if dp > 1 else 0,
            "tp": 2 * K * 4 * floats if tp > 1 else 0,
            "pp": (2 * K * (N * C + 4) * 4 + 16 + (2 * 4 * (V // tp) * C if tied else 0))
            if pp > 1 else 0,
            "other": 2 * 2 * (tp * pp - 1) / (tp * pp) * 8,
        }
        for axis, w in want.items():
            for line in lines:
                got = line["bytes_per_rank"][r][axis]
                assert abs(got - w) <= 1e-9 * max(w, 1), (out, r, axis, got, w, line["step"])
            got = s["bytes_" + axis + "_per_step"]
            assert abs(got - w) <= 1e-9 * max(w, 1), (out, r, "summary", axis, got, w)
        assert s["params"] > 0, s
    for line in lines:  # rank 0's own fields
        for axis in ("dp", "tp", "pp", "other"):
            assert line["bytes_" + axis] == line["bytes_per_rank"][0][axis], (out, line)

check("d2t2p2", 2, 2, 2, True)
check("t2", 1, 2, 1, False)
PY
bench=(bench --config "$src/configs/tiny.toml" --model.vocab_size $V --train.batch_size $B
       --train.seq_len $T --bench.steps 2 --bench.warmup 1 --dp 2 --json)
mpi 2 "${bench[@]}" --parallel.sparse_embedding_grad false > bench.txt
mpi 2 "${bench[@]}" > bench_rows.txt
grep -q "bytes per step by axis" bench.txt || fail "bench does not print bytes per axis"
/usr/bin/python3 - $B $T $V $C <<'PY' || fail "bench bytes per axis: $(cat bench.txt bench_rows.txt)"
import json, sys
B, T, V, C = map(int, sys.argv[1:])
j = json.loads(open("bench.txt").read().strip().splitlines()[-1])
per = j["bytes_per_step"]
for r in range(2):
    assert per["dp"][r] == 2 * j["bytes_per_rank"]["parameters"][r], per
    assert per["tp"][r] == per["pp"][r] == per["other"][r] == 0, per
rows = json.loads(open("bench_rows.txt").read().strip().splitlines()[-1])["bytes_per_step"]
for r in range(2):
    extra = rows["dp"][r] - (per["dp"][r] - 2 * 4 * V * C) - 2 * 8 * ((V + 63) // 64)
    assert extra > 0 and extra % (2 * 4 * C) == 0, (rows, per)  # whole rows
    assert extra // (2 * 4 * C) <= 2 * B * T, (rows, per)       # at most the tokens' rows
    assert rows["tp"][r] == rows["pp"][r] == rows["other"][r] == 0, rows
PY
echo "traffic per axis: as the layouts must move"
