#!/usr/bin/env bash
# A verse classifier fine-tuned from a pretrained tiny model, data parallel:
# - finetune under mpirun -np 2 equals -np 1 (losses, accuracy, every weight of body and head)
#   within fp32 rounding: the gradients are all-reduced, weighted by example counts;
# - classify under -np 2 writes one prediction per line, in input order, equal to -np 1's;
# - a language-model checkpoint without a classification head, an empty text file and a bad
#   --task each give one clear line and exit 2 (under mpirun: said once, no abort banner).
source "$(dirname "$0")/lib.sh"
prepare_tiny
"$bin" train --config "$src/configs/tiny.toml" --model.vocab_size 400 --train.steps 8 \
  --train.val_every 0 --train.ckpt_every 8 --data.dir data --train.out_dir pre > /dev/null
bible -f gen1:1-rev22:21 | awk 'NR % 25 == 1' > verses.txt
"$bin" prepare-classify --task genre --verses verses.txt --out cls > /dev/null
[ "$(head -c 1 cls/train.jsonl)" = "{" ] && grep -q '"prophets"' cls/labels.json ||
  fail "prepare-classify wrote no data"

# -np 1 and -np 2 (a batch of 7: the ranks hold 4 and 3 examples).
ft=(finetune --task classify --init pre --data cls --steps 6 --batch 7 --seq-len 16 --lr 3e-3
    --log-every 1)
mpi 1 "${ft[@]}" --out np1 > np1.log
mpi 2 "${ft[@]}" --out np2 > np2.log
[ -s np1/results.json ] && [ -s np2/results.json ] && [ -s np2/confusion-finetuned.svg ] ||
  fail "finetune wrote no results"
/usr/bin/python3 - np1.log np2.log np1/results.json np2/results.json << 'EOF' || fail "np 1 != np 2"
import json, re, sys
def losses(path):
    return [float(m.group(1)) for m in re.finditer(r"step \d+/\d+ loss ([0-9.]+)", open(path).read())]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == 6 and len(b) == 6, (a, b)
assert all(abs(x - y) <= 1e-4 * abs(y) for x, y in zip(a, b)), (a, b)
assert a[-1] < a[0], f"the loss did not fall: {a}"
ra, rb = json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
assert ra["ranks"] == 1 and rb["ranks"] == 2
for k in ("finetuned", "naive_bayes", "majority"):
    assert ra[k]["confusion"] == rb[k]["confusion"], k
print("losses", a)
EOF
compare params np1/classifier/model.safetensors np2/classifier/model.safetensors --tol 1e-5 ||
  fail "np 1 and np 2 weights differ"

# Batch prediction: lines shared over 2 ranks, gathered in input order.
awk 'NR % 3 == 0 && ++n <= 40 { sub(/^[^ ]+ /, ""); print }' verses.txt > texts.txt
mpi 1 classify --ckpt np1 --text texts.txt --out pred1.jsonl > /dev/null
mpi 2 classify --ckpt np1/classifier --text texts.txt --out pred2.jsonl --batch 3 > /dev/null
/usr/bin/python3 - texts.txt pred1.jsonl pred2.jsonl << 'EOF' || fail "classify output"
import json, sys
texts = [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip()]
p1 = [json.loads(l) for l in open(sys.argv[2])]
p2 = [json.loads(l) for l in open(sys.argv[3])]
assert len(p1) == len(p2) == len(texts) == 40, (len(p1), len(p2), len(texts))
for i, (a, b) in enumerate(zip(p1, p2)):
    assert a["line"] == b["line"] == i + 1 and a["text"] == b["text"] == texts[i], i
    assert a["label"] == b["label"], i
    assert abs(sum(b["probabilities"].values()) - 1) < 1e-5
    assert max(b["probabilities"], key=b["probabilities"].get) == b["label"]
    assert all(abs(a["probabilities"][k] - b["probabilities"][k]) < 1e-5 for k in a["probabilities"])
EOF

# Clear errors: one line, exit 2, also under mpirun.
expect_error "without a classification head" classify --ckpt pre/step-8 --text texts.txt --out x
: > empty.txt
expect_error "empty" classify --ckpt np1 --text empty.txt --out x
expect_error "unknown finetune --task 'regress' (choose classify" "${ft[@]/classify/regress}" --out x
expect_error "choose testament or genre" prepare-classify --task books --verses verses.txt --out x
check_once "without a classification head" classify --ckpt pre/step-8 --text texts.txt --out x
[ ! -e x ] || fail "an error left an output file"
echo "classify: OK"
