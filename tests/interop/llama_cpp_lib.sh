# Shared by the llama.cpp tests: node-llama-cpp's presence, and check(), which trains a tiny
# model, exports it to GGUF (f32, f16, q8_0), and holds llama.cpp (llama_cpp_check.mjs) to
# parallama on the f32 file: the same token ids for the texts, the same greedy continuations, the
# same perplexity on held-out text within 1e-3 relative; f16 and q8_0 within 1% and 3%.
# Needs: bin, src (and tests/e2e/lib.sh sourced). Sets node_dir and version.
node_dir=${PARALLAMA_NODE_DIR:-/opt/parallama-node}
version=$(sed -n 's/^node_llama_cpp_version=\([0-9.]*\).*/\1/p' "$src/scripts/install-deps.sh")
[ -n "$version" ] || fail "no node_llama_cpp_version in scripts/install-deps.sh"
command -v node > /dev/null || fail "node (Node.js) is missing: run scripts/install-deps.sh"
# node-llama-cpp needs Node.js 20 (Debian 12's own is 18): without it the test is reported as
# skipped (exit 77), never as passed.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "skipped: Node.js $(node --version) is older than node-llama-cpp's minimum (20)"
  exit 77
fi
have=$(node -p "require('$node_dir/node_modules/node-llama-cpp/package.json').version" 2> /dev/null) ||
  fail "node-llama-cpp is missing from $node_dir: run scripts/install-deps.sh"
[ "$have" = "$version" ] ||
  fail "node-llama-cpp $have in $node_dir, the tests need $version: run scripts/install-deps.sh"

# check RUN [TRAIN_ARGS...]: train RUN on data set $data (vocabulary $vocab), export it, and hold
# llama.cpp to parallama on it: the texts of $texts (a JSON array; special-token strings in them
# read as those tokens when $special is true), the prompts of the array `prompts`, and the
# held-out lines of heldout.txt.
check() {
  local run=$1; shift
  "$bin" train --config "$src/configs/tiny.toml" --data.dir "$data" --model.vocab_size "$vocab" \
    --model.dim 64 --model.n_heads 4 --model.n_kv_heads 2 --model.ffn_dim 96 \
    --model.max_seq_len 128 --model.tie_embeddings true --train.seq_len $seq_len \
    --train.batch_size 16 --train.steps "${steps:-400}" --train.val_every 1000 \
    --train.ckpt_every 1000 --optim.lr 1e-2 --optim.warmup_steps 20 --train.threads 1 \
    --train.out_dir $run "$@" > $run.log
  for t in f32 f16 q8_0; do
    "$bin" convert --from $run --to gguf:$run-$t.gguf --dtype $t | tee -a convert.log
  done
  "$bin" tokenize --ckpt $run --text "$texts" --json > $run-texts.json
  "$bin" tokenize --ckpt $run --text heldout.txt > $run-heldout.json
  local eval_out
  eval_out=$("$bin" eval --ckpt $run --text heldout.txt)
  echo "parallama eval --ckpt $run --text heldout.txt: $eval_out"
  : > $run-greedy.txt
  for p in "${prompts[@]}"; do
    "$bin" generate --ckpt $run --prompt "$p" --temperature 0 --max-tokens 20 --ids |
      tail -n 1 >> $run-greedy.txt
  done
  /usr/bin/python3 - "$node_dir" "$version" "$run" "$seq_len" "$eval_out" "$texts" \
    "${special:-false}" "${prompts[@]}" > $run-spec.json <<'PY'
import json, re, sys
node_dir, version, run, seq_len, eval_out, texts, special, *prompts = sys.argv[1:]
m = re.match(r"loss ([0-9.]+) perplexity [0-9.]+ over ([0-9]+) tokens", eval_out)
held = json.load(open(run + "-heldout.json"))
ids = json.load(open(run + "-texts.json"))
stream = [t for line in held["lines"] for t in [held["bos"]] + line]
json.dump({
    "node_modules": node_dir + "/node_modules", "version": version,
    "f32": run + "-f32.gguf",
    "load": [{"file": run + "-f16.gguf", "max_rel": 1e-2}, {"file": run + "-q8_0.gguf", "max_rel": 3e-2}],
    "verses": json.load(open(texts, encoding="utf-8")), "parallama_ids": ids["lines"],
    "bos": ids["bos"], "eos": ids["eos"], "special_tokens": special == "true",
    "prompts": prompts, "max_tokens": 20,
    "greedy_ids": [json.loads(l) for l in open(run + "-greedy.txt")],
    "stream": stream, "seq_len": int(seq_len),
    "parallama_loss": float(m.group(1)), "parallama_tokens": int(m.group(2)), "max_rel": 1e-3,
}, sys.stdout)
PY
  node "$src/tests/interop/llama_cpp_check.mjs" $run-spec.json ||
    fail "llama.cpp and parallama disagree on $run"
}
