#!/usr/bin/env bash
# Memory freed under mpirun stays with the process (tensor/heap.h). bench15m's 98 MB of gradients
# go in 4 MB buckets, and Open MPI's non-blocking all-reduce takes a scratch block per bucket and
# step; with glibc's defaults each block went back to the kernel when freed, and every step
# faulted its pages in again (about 24,000 per rank and step here). Two ranks must now fault in
# fewer than 1,000 pages (4 MB) in the median of nine timed steps, each. A step may fault more
# where the heap grows once: on a loaded machine more buckets can be in flight at once late in the
# run than ever before, and each new peak takes one more 4 MB block (3,057 per step over three
# steps, and 1,056 in three of five steps on rank 0, were seen beside
# other jobs). Such peaks grow rarer as the run goes on; memory given back faults in every step.
source "$(dirname "$0")/lib.sh"
mpi 2 bench --config "$src/configs/bench15m.toml" --dp 2 --train.batch_size 1 --train.seq_len 64 \
  --bench.steps 9 --bench.warmup 3 --json > bench.log
grep -q "2 rank(s)" bench.log || fail "did not run on 2 ranks"
/usr/bin/python3 - bench.log <<'PY' || fail "page faults per step"
import json, sys
faults = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["page_faults_per_step"]
print(f"page faults per step, by rank: {faults}")
assert len(faults) == 2 and all(f < 1000 for f in faults), faults
PY
echo "dp heap: freed scratch memory kept between steps"
