# Shared by the multi-rank scripts: arguments BIN SOURCE_DIR WORK_DIR [COMM_FAULT_BIN].
set -euo pipefail
bin=$1 src=$2 work=$3 fault=${4:-}
source "$src/tests/e2e/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpi() {  # mpi NP ARGS...: parallama on NP ranks of this machine
  local np=$1; shift
  mpirun --oversubscribe -np "$np" "$bin" "$@"
}
compare() { /usr/bin/python3 "$src/tests/dist/compare.py" "$@"; }
rm -rf "$work" && mkdir -p "$work" && cd "$work"
# A prepared corpus for the tiny model.
prepare_tiny() {
  make_corpus text.txt 3000
  "$bin" prepare --text text.txt --vocab 400 --out data > /dev/null
}
