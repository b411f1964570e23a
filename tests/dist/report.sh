#!/usr/bin/env bash
# A user's second hour. Under mpirun, --dp comes from the number of processes (over tp × pp); one
# that disagrees is still an error naming the numbers. `train --report-every N` rewrites
# RUN_DIR/report.html during the run (each version whole); headless Chromium opens the final
# report at a desktop and a phone size, draws every chart without a script error or a request
# to the network, and the screenshots are not blank. Resuming the finished run says so in one
# line and exits 0 with every file as it was; a larger --train.steps continues it. `report` on a
# missing, empty or corrupt metrics.jsonl says one line and exits 2; a torn last line is named
# in the page.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --train.batch_size 32 --train.val_every 20 --train.ckpt_every 0)

# --dp inferred: 4 processes with --pp 2 are 2 replicas.
mpi 4 "${run[@]}" --pp 2 --train.steps 60 --train.out_dir live --report-every 20 \
  --parallel.pp_trace live/pipeline_trace.json > live.log &
job=$!
# Every version of the report seen while the run goes on: whole pages, and at least one
# written before the end (fewer steps than the run's 60).
/usr/bin/python3 - live/report.html $job <<'PY' > versions.txt || fail "live report"
import os, re, sys, time
path, job = sys.argv[1], int(sys.argv[2])
seen = {}
deadline = time.time() + 300
while time.time() < deadline:
    try:
        text = open(path).read()
        assert text.endswith("</html>\n"), "a report read half-written"
        m = re.search(r'"name":"train","x":\[([^\]]*)\]', text)
        seen[int(float(m.group(1).split(",")[-1]))] = True
    except FileNotFoundError:
        pass
    try:
        os.kill(job, 0)
    except ProcessLookupError:
        break
    time.sleep(0.005)
print(sorted(seen))
PY
wait $job || fail "training: $(tail -3 live.log)"
grep -q "mesh dp 2 x tp 1 x pp 2" live.log || fail "dp not inferred: $(grep mesh live.log)"
echo "report versions seen (last step in each): $(cat versions.txt)"
/usr/bin/python3 -c "
import ast, sys
v = ast.literal_eval(open('versions.txt').read())
assert v and min(v) < 60, v" || fail "no report seen before the end of the run: $(cat versions.txt)"

# The final report in a real browser, at two window sizes.
/usr/bin/python3 "$src/tests/e2e/browser.py" live/report.html shot 1280x900 390x844 ||
  fail "the report in the browser"
[ "$(grep -o '<figure class="chart"' live/report.html | wc -l)" -ge 10 ] || fail "too few charts"
for part in "Pipeline timeline" "Traffic per rank" "[parallel]" "dp 2 × tp 1 × pp 2"; do
  grep -qF "$part" live/report.html || fail "the report lacks $part"
done

# bench infers it too.
mpi 2 bench --config "$src/configs/tiny.toml" --model.vocab_size 400 --train.seq_len 16 \
  --bench.steps 1 --bench.warmup 0 > bench.log
grep -q "2 rank(s) (dp 2 x tp 1 x pp 1)" bench.log || fail "bench: $(head -2 bench.log)"

# Explicit --dp that disagrees, and a count that makes no whole replicas.
check_once "--dp 3 need 3 processes but 2 started" "${run[@]}" --dp 3 --train.out_dir x
check_once "2 processes do not make whole replicas of --tp 2 × --pp 2" "${run[@]}" --tp 2 \
  --pp 2 --train.out_dir x

# Resuming the finished run: one line, exit 0, nothing rewritten.
sum() { find live -type f ! -name .lock -exec md5sum {} + | sort; }
before=$(sum)
mpi 4 "${run[@]}" --pp 2 --train.steps 60 --train.out_dir live --resume auto > again.log \
  2> again.err || fail "resume of a finished run: $(cat again.err)"
[ "$(wc -l < again.log)" -eq 1 ] && grep -q "is at step 60, and train.steps is 60: the run is finished" \
  again.log || fail "finished run: $(cat again.log)"
[ ! -s again.err ] || fail "stderr: $(cat again.err)"
[ "$(sum)" = "$before" ] || fail "resuming a finished run changed its files"
mpi 4 "${run[@]}" --pp 2 --train.steps 70 --train.out_dir live --resume auto > more.log
grep -q "resuming" more.log && [ "$(cat live/latest)" = "step-70" ] || fail "did not continue"

# report: bad run directories, one line and exit 2; a torn last line, named in the page.
expect_error "cannot read nothing/metrics.jsonl" report nothing
mkdir empty && : > empty/metrics.jsonl
expect_error "empty/metrics.jsonl: no steps recorded yet" report empty
mkdir corrupt && { head -3 live/metrics.jsonl; echo "{\"step\": 4, \"lo"; tail -2 live/metrics.jsonl; } \
  > corrupt/metrics.jsonl
expect_error "corrupt/metrics.jsonl:4: not a metrics line" report corrupt
mkdir torn && { head -5 live/metrics.jsonl; echo -n "{\"step\": 6, \"lo"; } > torn/metrics.jsonl
"$bin" report torn > torn.log || fail "torn: $(cat torn.log)"
grep -q "torn/metrics.jsonl:6: the last line is incomplete" torn/report.html || fail "torn line not named"
/usr/bin/python3 "$src/tests/e2e/browser.py" torn/report.html torn 1024x768 || fail "torn report"
# --out: an existing file only with --force; never an input.
echo mine > mine.html
expect_error "--out 'mine.html' exists" report live --out mine.html
[ "$(cat mine.html)" = mine ] || fail "mine.html overwritten"
"$bin" report live --out mine.html --force > /dev/null && grep -q "<!doctype html>" mine.html ||
  fail "--force"
expect_error "--out" report live --out live/metrics.jsonl --force
echo "report: dp inferred, live report, browser at two sizes, finished resume, bad input"
