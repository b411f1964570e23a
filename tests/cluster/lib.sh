# Shared by the cluster tests (arguments BIN SOURCE_DIR WORK_DIR [CASE]): the multi-rank
# helpers, and a cluster of this test's own (scripts/cluster.sh) that goes when the test ends,
# however it ends. Without root or network namespaces the test exits 77: ctest says skipped.
source "$(dirname "$0")/../dist/lib.sh"
cluster_dir=$work/cluster
cl() { bash "$src/scripts/cluster.sh" "$1" --dir "$cluster_dir" "${@:2}"; }
cluster_up() {  # cluster_up N [ARGS]: N hosts
  set +e; bash "$src/scripts/cluster.sh" up "$@" --dir "$cluster_dir" --owner $$ > cluster.txt 2>&1
  local rc=$?; set -e
  [ $rc -ne 77 ] || { cat cluster.txt; exit 77; }
  [ $rc -eq 0 ] || fail "cluster up $*: $(cat cluster.txt)"
  trap 'bash "$src/scripts/cluster.sh" down --dir "$cluster_dir"' EXIT
}
# cmpi NP ARGS...: parallama on NP ranks across the cluster, filling each host's slots in turn
# (with HOSTS="0 1", on those hosts alone).
cmpi() {
  local np=$1 only=() h list=""; shift
  for h in ${HOSTS:-}; do list=$list${list:+,}$(cl host "$h"); done
  [ -z "$list" ] || only=(--host "$list")
  cl mpirun -- --oversubscribe "${only[@]}" -np "$np" "$bin" "$@"
}
# ranks_on_hosts RUN_DIR H0 H1 ...: summary.json puts world rank r on host index H_r.
ranks_on_hosts() {
  local run=$1; shift
  /usr/bin/python3 - "$run/summary.json" "$(cl host 0 | sed 's/-h0$//')" "$@" <<'PY' ||
import json, sys
ranks = json.load(open(sys.argv[1]))["ranks"]
want = [sys.argv[2] + "-h" + h for h in sys.argv[3:]]
got = [r["host"] for r in ranks]
assert got == want, (got, want)
PY
    fail "$run: ranks not on the hosts expected"
}
