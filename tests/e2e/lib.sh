# Shared helpers for the end-to-end scripts.
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_error SUBSTRING ARGS...: parallama must exit 2 with exactly one line on stderr holding SUBSTRING.
expect_error() {
  local want=$1; shift
  set +e; "$bin" "$@" > /dev/null 2> err.txt; local rc=$?; set -e
  [ $rc -eq 2 ] || fail "exit $rc (expected 2) for: $* -- $(cat err.txt)"
  [ "$(wc -l < err.txt)" -eq 1 ] || fail "not one line for: $*: $(cat err.txt)"
  grep -q -- "$want" err.txt || fail "message for $* was: $(cat err.txt)"
}
# A small corpus: the first books of the King James Bible, without verse references.
make_corpus() {  # make_corpus FILE LINES
  bible -f gen1:1-rev22:21 | awk -v n="$2" 'NR <= n { sub(/^[^ ]+ /, ""); print }' > "$1"
  [ -s "$1" ] || fail "could not read the bible-kjv corpus"
}
