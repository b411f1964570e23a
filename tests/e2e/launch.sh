#!/usr/bin/env bash
# `parallama launch` refuses, before it starts anything, in one line with exit 2: no hostfile, a
# hostfile that is missing, empty, unreadable in a line or names a host twice, --min-hosts above
# the hosts listed, a command that is not train or that train would refuse, and hosts that do
# not answer (an agent that reaches none of them). The supervisor's relaunches are tested across
# hosts (tests/cluster/elastic.sh).
# Usage: launch.sh PARALLAMA_BIN SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
source "$src/tests/e2e/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
train=(train --config "$src/configs/tiny.toml")
printf 'node1 slots=2\nnode2\n' > two
: > empty
printf '# hosts\nnode1\n\nnode2 slots=2\nnode1 slots=4\n' > twice
printf 'node1 slots=two\n' > badslots
expect_error "--hostfile is required" launch -- "${train[@]}"
expect_error "hostfile nope: cannot be read" launch --hostfile nope -- "${train[@]}"
expect_error "hostfile empty: no host in it" launch --hostfile empty -- "${train[@]}"
expect_error "hostfile twice line 5: host node1 is listed twice" launch --hostfile twice -- "${train[@]}"
expect_error "'slots=two' is not slots=N" launch --hostfile badslots -- "${train[@]}"
expect_error "--min-hosts 3 is more than the 2 hosts of two" launch --hostfile two --min-hosts 3 -- "${train[@]}"
expect_error "the command after -- must be train ARGS... (got 'bench')" launch --hostfile two -- bench
expect_error "train.steps" launch --hostfile two -- "${train[@]}" --train.steps -4
# Every host dead: the agent reaches none (it fails at once, as ssh to a host that is down).
SECONDS=0
expect_error "launch: no host of two answers" launch --hostfile two --agent false --probe-timeout 2 \
  -- "${train[@]}"
[ $SECONDS -le 10 ] || fail "the probe of dead hosts took $SECONDS s"
[ ! -e runs ] || fail "a refused launch made a run directory"
echo "launch: every refusal in one line, exit 2"
