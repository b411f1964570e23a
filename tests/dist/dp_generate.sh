#!/usr/bin/env bash
# Data-parallel generation: `generate --prompts FILE --out FILE` under mpirun. The prompts (plain
# lines, or JSON Lines with ids and seeds) are generated in batches of different lengths, the
# batches shared by estimated cost; rank 0 writes one JSON line per prompt in input order. With
# a seed per prompt, 1, 2 and 4 processes (and 2 replicas of --tp 2) write the same results, and
# a prompt generated alone gives what it gives in its batch. Bad input gets one clear line.
source "$(dirname "$0")/lib.sh"
prepare_tiny
"$bin" train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400 \
  --model.max_seq_len 48 --train.steps 30 --train.out_dir run > /dev/null

# 13 prompts of 1 to 9 words, with blank lines between some.
awk 'NR % 97 == 5 && k < 13 { n = 1 + k % 9; s = $1; for (i = 2; i <= n && i <= NF; ++i) s = s " " $i;
     print s; if (k % 4 == 1) print ""; ++k }' text.txt > prompts.txt
[ "$(grep -c . prompts.txt)" -eq 13 ] || fail "the test needs 13 prompts"
gen=(generate --ckpt run --temperature 0.8 --max-tokens 10 --seed 7 --batch 3)
for np in 1 2 4; do
  mpi "$np" "${gen[@]}" --prompts prompts.txt --out "out$np.jsonl" > "gen$np.log" 2> "gen$np.err" ||
    fail "generate on $np ranks: $(cat "gen$np.err")"
done
mpi 4 "${gen[@]}" --tp 2 --prompts prompts.txt --out out_tp.jsonl > gen_tp.log
grep -q "^generate: .*prompts.*tokens/s, ETA" gen1.err || fail "no progress line"
for r in 0 1; do grep -q "^rank $r: .* prompts, .* tokens, busy .* s" gen2.log || fail "no busy time of rank $r"; done
grep -q "^busiest rank" gen4.log || fail "no imbalance line"

/usr/bin/python3 - <<'PY' || fail "results"
import json
prompts = [(i + 1, l.rstrip("\n")) for i, l in enumerate(open("prompts.txt")) if l.strip()]
def load(name):
    rows = [json.loads(l) for l in open(name)]
    for r in rows:
        assert set(r) == {"id", "prompt", "completion", "prompt_tokens", "completion_tokens", "seconds"}, r
        del r["seconds"]
    return rows
one = load("out1.jsonl")
assert [(r["id"], r["prompt"]) for r in one] == prompts, "not in input order, or ids are not line numbers"
assert all(1 <= r["completion_tokens"] <= 10 and r["completion"] for r in one)
assert len({r["completion"] for r in one}) == len(one), "completions repeat"
for n in ("out2.jsonl", "out4.jsonl"):
    assert load(n) == one, n + " differs from one process"
tp = load("out_tp.jsonl")
assert [(r["id"], r["prompt"]) for r in tp] == prompts and all(r["completion"] for r in tp)
print("13 prompts: 1, 2 and 4 ranks give the same results in input order")
PY

# A prompt alone, with the seed it had in the batch (--seed plus its index), continues the same.
first=$(sed -n 1p prompts.txt)
"$bin" generate --ckpt run --temperature 0.8 --max-tokens 10 --seed 7 --prompt "$first" > alone.txt
/usr/bin/python3 -c "
import json, sys
want = json.loads(open('out1.jsonl').readline())
got = open('alone.txt').read().rstrip('\n')
assert got == want['prompt'] + want['completion'], (got, want)" || fail "a prompt alone differs"

# JSON Lines: ids and seeds of their own; a prompt's result depends on its seed, not its place.
/usr/bin/python3 - <<'PY'
import json
lines = [l.strip() for l in open("prompts.txt") if l.strip()]
with open("prompts.jsonl", "w") as f:
    for i, l in enumerate(lines):
        f.write(json.dumps({"id": f"p{i}", "prompt": l, "seed": 1000 + i % 4}) + "\n")
with open("reversed.jsonl", "w") as f:
    for i, l in reversed(list(enumerate(lines))):
        f.write(json.dumps({"id": f"p{i}", "prompt": l, "seed": 1000 + i % 4}) + "\n")
PY
mpi 2 "${gen[@]}" --prompts prompts.jsonl --out j2.jsonl > /dev/null
"$bin" "${gen[@]}" --prompts reversed.jsonl --out r1.jsonl > /dev/null
/usr/bin/python3 - <<'PY' || fail "JSON Lines"
import json
a = [json.loads(l) for l in open("j2.jsonl")]
b = [json.loads(l) for l in open("r1.jsonl")][::-1]
assert [r["id"] for r in a] == [f"p{i}" for i in range(13)]
assert [(r["id"], r["completion"]) for r in a] == [(r["id"], r["completion"]) for r in b]
print("JSON Lines: ids kept, results follow the seeds")
PY

# Bad input: one line each, exit 2, no results file.
: > empty.txt
expect_error "no prompts" generate --ckpt run --prompts empty.txt --out e.jsonl
printf '\n  \n' > blank.txt
check_once "no prompts" generate --ckpt run --prompts blank.txt --out e.jsonl
for _ in $(seq 20); do printf 'and the LORD spake unto Moses saying '; done > long.txt
echo >> long.txt
# Too long for the context: refused by its bytes before it is encoded, or by its tokens (40
# snowmen: few bytes, but every byte a token of its own).
check_once "long.txt:1: prompt 1 has 740 bytes: at least .* tokens, and the model's context is 48" \
  generate --ckpt run --prompts long.txt --out e.jsonl
for _ in $(seq 40); do printf '☃'; done > snow.txt
echo >> snow.txt
check_once "snow.txt:1: prompt 1 has .* tokens (with <s>); the model's context is 48" \
  generate --ckpt run --prompts snow.txt --out e.jsonl
echo '{"id": 1}' > nojson.jsonl
expect_error 'nojson.jsonl:1: each line must be an object with a "prompt" string' \
  generate --ckpt run --prompts nojson.jsonl --out e.jsonl
printf '{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n' > twice.jsonl
expect_error "twice.jsonl:2: id 1 repeats" generate --ckpt run --prompts twice.jsonl --out e.jsonl
expect_error "needs --out" generate --ckpt run --prompts prompts.txt
expect_error "requires --prompts" generate --ckpt run --prompt "And" --out e.jsonl
expect_error "needs --prompt TEXT or --prompts FILE" generate --ckpt run --max-tokens 3
[ ! -e e.jsonl ] || fail "a failed run left results"
echo "dp generate: same results on any number of ranks, in input order; bad input refused"
