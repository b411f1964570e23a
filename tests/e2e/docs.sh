#!/usr/bin/env bash
# docs/settings.md holds the table that `parallama settings` prints, line for line: a setting
# added, removed or changed in the program without the page fails here. (The program's table walks
# the same list of settings that reads a configuration and writes it into checkpoints.)
set -euo pipefail
bin=$1 src=$2 work=$3
source "$src/tests/e2e/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$bin" settings > table.md
grep -q '^| `parallel.sync` | one of `allreduce`, `ps`, `ps-async`, `local`, `diloco` |' table.md ||
  fail "no parallel.sync row: $(head -5 table.md)"
/usr/bin/python3 - table.md "$src/docs/settings.md" <<'PY' || fail "docs/settings.md is out of date (regenerate its table with: parallama settings)"
import sys
table = [l for l in open(sys.argv[1]).read().splitlines() if l.startswith("|")]
page = [l for l in open(sys.argv[2]).read().splitlines() if l.startswith("|")]
missing = [l for l in table if l not in page]
extra = [l for l in page if l not in table]
for l in missing: print("not in the page:", l)
for l in extra: print("not in the program:", l)
assert table == page, "order or content differs"
PY
echo "docs: the settings table is the program's ($(grep -c '^| `' table.md) settings)"
