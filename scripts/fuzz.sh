#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/) into build-fuzz with clang, coverage and AddressSanitizer
# + UndefinedBehaviorSanitizer, and runs each on a temporary copy of its seed corpus
# (fuzz/corpus/NAME, with the inputs that once crashed a reader, fuzz/corpus/crashes/NAME-*.gz)
# for RUNS executions: `bash scripts/fuzz.sh` (20000 each), `bash scripts/fuzz.sh 1000000` (a
# million each); `bash scripts/fuzz.sh RUNS NAME...` runs only the harnesses named (hf_config,
# prompts, ...). Prints each harness's executions and exec/s, and
# fails on any crash, sanitizer report, leak, timeout or broken round trip; the input that caused
# it is kept as build-fuzz/crashes/NAME-*, the log as build-fuzz/fuzz-NAME.log.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20000}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] ||
  names=(safetensors shard run_config trainer_json hf_config prompts classifier tokenizer_json)
for name in "${names[@]}"; do
  [ -f "fuzz/fuzz_$name.cpp" ] || { echo "fuzz: no harness $name" >&2; exit 2; }
done
start=$(date +%s.%N)
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPARALLAMA_FUZZ=ON -DPARALLAMA_TESTS=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target fuzzers >/dev/null
built=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }
echo "fuzz: built in $(elapsed "$start" "$built") s; $runs executions per harness"

# The corpus copies and the harnesses' scratch files (TMPDIR), in memory where possible.
work=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/tmp"
export TMPDIR=$work/tmp
mkdir -p build-fuzz/crashes
failed=0
printf '%-18s %12s %10s %8s\n' harness executions exec/s result
for name in "${names[@]}"; do
  mkdir -p "$work/$name"
  cp fuzz/corpus/$name/* "$work/$name/"
  # Inputs that once crashed a reader (kept compressed: they are large) join the seeds.
  for f in fuzz/corpus/crashes/"$name"-*.gz; do
    if [ -e "$f" ]; then zcat "$f" > "$work/$name/$(basename "$f" .gz)"; fi
  done
  dict=()
  [ -f fuzz/dict/$name.dict ] && dict=(-dict=fuzz/dict/$name.dict)
  log=build-fuzz/fuzz-$name.log
  t0=$(date +%s.%N)
  result=ok
  build-fuzz/fuzz/fuzz_$name -runs="$runs" -timeout=60 -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix=build-fuzz/crashes/$name- "$work/$name" >"$log" 2>&1 || result=FAILED
  t1=$(date +%s.%N)
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
  execs=${execs:-0}
  rate=$(awk -v n="$execs" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
  printf '%-18s %12s %10s %8s\n' "fuzz_$name" "$execs" "$rate" "$result"
  if [ "$result" != ok ]; then
    failed=1
    grep -E 'ERROR|fuzz harness:|SUMMARY|Test unit written|Seed:' "$log" | head -20 >&2 || true
    echo "fuzz: fuzz_$name failed; see $log" >&2
  fi
done
echo "fuzz: $(elapsed "$start" "$(date +%s.%N)") s in all"
exit $failed
